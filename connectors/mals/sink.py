"""The MALS sink connector: referrals the hub delivers to MALS, written into MALS' own
``referrals`` table, exactly once.

It consumes ``deliver.mals`` (group ``<prefix>mals-sink``, ``read_committed``, no offsets committed
to Kafka). On assignment each partition is sought to the next offset stored in MALS' database
(``hub_sink_offsets``); each batch is applied with its offsets in one database transaction, so a
process killed anywhere resumes where its last transaction ended and writes nothing twice.

What each delivered record does (idempotent by ``event_id``: ``hub_inbox`` remembers every one):

- ``referral.created``: a row in ``referrals`` holding only what the delivered record carries
  (the agreed minimum dataset of clause ``mals-1``; a withheld field stays NULL, nothing is
  invented), with status ``New``. The subject is MALS' client id when the hub knows it
  (``mals_client_id``); otherwise the hub's pseudonym for MALS (``hub_pseudonym``), looked up in
  ``hub_id_map``: a pseudonym seen for the first time gets a new client row (``MALS-0108``: only
  the id, MALS staff fill in the rest when they meet the person) and a mapping row.
- a correction (``envelope.supersedes_event_id``): replaces the referral's delivered columns in
  place (the status MALS set is kept); the superseded event is marked ``superseded``.
- ``delivery.retracted``: deletes the referral the retracted event created (MALS is no longer
  entitled to it), and the client row the sink created for it when MALS holds nothing else about
  that client. A retraction that arrives before its event leaves a tombstone, so the event is
  never applied afterwards.
- MALS' own events coming back (clause ``mals-0``) are recorded and ignored: MALS has them.
- ``identity.subject_merged`` (the hub found two subjects to be one person): when MALS knew the
  merged subject by a pseudonym and the hub now uses another, ``hub_id_map`` follows, so MALS
  keeps echoing the pseudonym the hub addresses it with; a retraction of the merge (a wrong link)
  puts the mapping back. Two MALS clients for one person are left for MALS staff.
- any other event type: its delivered fields are kept as JSON in ``hub_inbox.payload`` for MALS
  staff (corrections replace, retractions delete the payload).
- a record that cannot be decoded, or names a subject scheme MALS cannot hold, goes to
  ``hub_sink_rejects`` with the reason, in the same transaction; the sink moves on.

``python -m connectors.mals.sink --db URL [--bootstrap ...] [--registry-url ...]
[--topic-prefix ...] [--once]``; ``--once`` stops when the topic is read to its end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import decimal
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from sqlalchemy import Connection, Engine, delete, exists, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from connectors.mals import codes
from connectors.mals.entry import add_connection_args, connection, stop_on_signals
from connectors.mals.schema import (
    clients,
    consent,
    create_schema,
    hub_id_map,
    hub_inbox,
    hub_sink_offsets,
    hub_sink_rejects,
    lcp_attendance,
    mals_engine,
    next_client_id,
    outcomes,
    referrals,
    sessions,
)
from hub.domain.errors import HubError, InfraError, SerdeError
from hub.logsetup import configure
from hub.serde.codec import AvroCodec
from hub.topics import Topics

log = structlog.get_logger(__name__)

AUDIENCE = "mals"
CREATED_BY = "hub referral"  # clients.created_by of a client the sink created
BATCH_SIZE = 500
POLL_TIMEOUT_S = 0.5
APPLY_ATTEMPTS = 5


MERGED = "identity.subject_merged"


def group_id(topics: Topics) -> str:
    return f"{topics.prefix}mals-sink"


@dataclass(frozen=True)
class Delivered:
    topic: str
    partition: int
    offset: int
    record: dict[str, Any] | None  # None: undecodable
    reason: str = ""
    message: str = ""


@dataclass
class SinkStats:
    batches: int = 0
    records: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)

    def add(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


class Unaddressable(ValueError):
    """The delivered subject is under a scheme MALS cannot hold."""


# -- applying one record ------------------------------------------------------------------------


def referral_values(record: Mapping[str, Any]) -> dict[str, Any]:
    """MALS' referral columns from a delivered ``referral.created``: only what it carries."""
    referrer = record.get("referrer") or {}
    om = record.get("offender_manager") or {}
    pathways = [codes.PATHWAYS_IN.get(p, p) for p in record.get("pathways") or ()]
    programme, risk = record.get("programme"), record.get("risk_level")
    return {
        "referrer_org": record.get("referrer_org"),
        "referrer_ref": record.get("referral_id"),
        "referrer_name": referrer.get("name"),
        "referrer_role": referrer.get("role"),
        "referrer_phone": referrer.get("phone"),
        "referrer_email": referrer.get("email"),
        "received_on": record.get("referred_on"),
        "programme": codes.PROGRAMMES_IN.get(programme, programme) if programme else None,
        "pathways": codes.join_labels(pathways) or None,
        "reason": record.get("reason"),
        "release_date": record.get("release_date"),
        "risk_level": codes.RISK_LEVELS_IN.get(risk, risk) if risk else None,
        "om_org": om.get("organisation"),
        "om_name": om.get("name"),
        "om_phone": om.get("phone"),
        "om_email": om.get("email"),
        "safety_information": record.get("safety_information"),
    }


class MalsApplier:
    """Applies delivered records to MALS' database inside the caller's transaction."""

    def __init__(self, stats: SinkStats | None = None) -> None:
        self.stats = stats or SinkStats()

    def apply_batch(self, conn: Connection, batch: Sequence[Delivered]) -> None:
        ends: dict[tuple[str, int], int] = {}
        for item in batch:
            outcome = self.apply(conn, item)
            self.stats.add(outcome)
            key = (item.topic, item.partition)
            ends[key] = max(ends.get(key, 0), item.offset + 1)
        for (topic, partition), next_offset in ends.items():
            _store_offset(conn, topic, partition, next_offset)

    def apply(self, conn: Connection, item: Delivered) -> str:
        if item.record is None:
            return self._reject(conn, item, item.reason, item.message)
        record = item.record
        envelope = record["envelope"]
        event_id = envelope["event_id"]
        if _inbox(conn, event_id) is not None:
            return "duplicate"  # applied before, or tombstoned by a retraction or a correction
        event_type = envelope["event_type"]
        if event_type == "delivery.retracted" and not record.get("retracted_event_id"):
            self._inbox_row(conn, item, "rejected", None, None, None)
            return self._reject(conn, item, "invalid_record", "retracted_event_id is missing")
        try:
            if event_type == "delivery.retracted":
                self._retract(conn, record)
                outcome, client_id, referral_id, payload = "applied", None, None, None
            elif event_type == MERGED:
                client_id, payload = self._merged(conn, record)
                outcome, referral_id = "applied", None
            elif envelope["source_agency"] == AUDIENCE:
                outcome, client_id, referral_id, payload = "own", None, None, None
            elif event_type == "referral.created":
                client_id = client_for(conn, envelope["subject"], event_id)
                referral_id = self._referral(conn, record, client_id)
                outcome, payload = "applied", None
            else:
                client_id = known_client(conn, envelope["subject"])
                self._supersede(conn, envelope.get("supersedes_event_id"))
                outcome, referral_id, payload = "stored", None, _payload_json(record)
        except Unaddressable as exc:
            self._inbox_row(conn, item, "rejected", None, None, None)
            return self._reject(conn, item, "unaddressable", str(exc))
        self._inbox_row(conn, item, outcome, client_id, referral_id, payload)
        return outcome

    # -- referrals -----------------------------------------------------------------------------
    def _referral(self, conn: Connection, record: Mapping[str, Any], client_id: str) -> int:
        values = {"client_id": client_id, **referral_values(record)}
        original = record["envelope"].get("supersedes_event_id")
        if original:
            prior = _inbox(conn, original)
            if prior is not None and prior.referral_id is not None:
                conn.execute(
                    update(referrals)
                    .where(referrals.c.referral_id == prior.referral_id)
                    .values(**values)
                )
                self._supersede(conn, original)
                if prior.client_id and prior.client_id != client_id:  # it was the wrong person
                    _drop_client_if_unused(conn, prior.client_id)
                return int(prior.referral_id)
            self._supersede(conn, original)
        result = conn.execute(
            insert(referrals).values(**values, status="New").returning(referrals.c.referral_id)
        )
        return int(result.scalar_one())

    def _supersede(self, conn: Connection, original: str | None) -> None:
        """The corrected event's own content is replaced: its payload goes, its row says so."""
        if not original:
            return
        if _inbox(conn, original) is None:
            _tombstone(conn, original, "superseded")
            return
        conn.execute(
            update(hub_inbox)
            .where(hub_inbox.c.event_id == original)
            .values(state="superseded", payload=None, referral_id=None)
        )

    def _merged(self, conn: Connection, record: Mapping[str, Any]) -> tuple[str | None, str]:
        """The hub found two subjects to be one person. When MALS knew the merged one by a
        pseudonym and the hub now addresses the person by another, the mapping follows (MALS
        keeps echoing the pseudonym the hub uses). Two MALS client rows for one person are left
        for MALS staff: the inbox row says so."""
        subject = record["envelope"]["subject"]
        old = {"local_id_scheme": record["merged_local_id_scheme"],
               "local_id": record["merged_local_id"]}  # fmt: skip
        merged_client = known_client(conn, old)
        client_id = known_client(conn, subject)
        rekeyed = (
            merged_client is not None
            and client_id is None
            and old["local_id_scheme"] == subject["local_id_scheme"] == "hub_pseudonym"
        )
        if rekeyed:
            conn.execute(
                update(hub_id_map)
                .where(hub_id_map.c.pseudonym == old["local_id"])
                .values(pseudonym=subject["local_id"])
            )
            client_id = merged_client
        note = {"merged_local_id": old["local_id"], "merged_client_id": merged_client,
                "client_id": client_id, "rekeyed": rekeyed}  # fmt: skip
        return client_id, json.dumps(note, sort_keys=True)

    def _unmerged(self, conn: Connection, target: Any) -> None:
        """A merge the hub retracted (the link was wrong): the mapping goes back."""
        note = json.loads(target.payload or "{}")
        if note.get("rekeyed"):
            conn.execute(
                update(hub_id_map)
                .where(hub_id_map.c.pseudonym == target.subject_id)
                .values(pseudonym=note["merged_local_id"])
            )

    def _retract(self, conn: Connection, record: Mapping[str, Any]) -> None:
        retracted = record["retracted_event_id"]
        target = _inbox(conn, retracted)
        if target is None:
            _tombstone(conn, retracted, "retracted")
            return
        if target.event_type == MERGED and target.state == "applied":
            self._unmerged(conn, target)
        if target.referral_id is not None:
            conn.execute(delete(referrals).where(referrals.c.referral_id == target.referral_id))
            if target.client_id:
                _drop_client_if_unused(conn, target.client_id)
        conn.execute(
            update(hub_inbox)
            .where(hub_inbox.c.event_id == retracted)
            .values(state="retracted", payload=None, referral_id=None)
        )
        log.info(
            "referral_retracted" if target.referral_id is not None else "delivery_retracted",
            event_id=retracted,
            reason=record.get("reason"),
        )

    # -- bookkeeping ---------------------------------------------------------------------------
    def _inbox_row(
        self,
        conn: Connection,
        item: Delivered,
        state: str,
        client_id: str | None,
        referral_id: int | None,
        payload: str | None,
    ) -> None:
        assert item.record is not None
        envelope = item.record["envelope"]
        disclosure = item.record.get("disclosure") or {}
        conn.execute(
            insert(hub_inbox).values(
                event_id=envelope["event_id"],
                event_type=envelope["event_type"],
                source_agency=envelope["source_agency"],
                state=state,
                client_id=client_id,
                subject_scheme=envelope["subject"]["local_id_scheme"],
                subject_id=envelope["subject"]["local_id"],
                referral_id=referral_id,
                clause_id=disclosure.get("clause_id"),
                retention_until=disclosure.get("retention_until"),
                payload=payload,
                topic=item.topic,
                partition=item.partition,
                offset=item.offset,
            )
        )

    def _reject(self, conn: Connection, item: Delivered, reason: str, message: str) -> str:
        position = (
            (hub_sink_rejects.c.topic == item.topic)
            & (hub_sink_rejects.c.partition == item.partition)
            & (hub_sink_rejects.c.offset == item.offset)
        )
        if conn.execute(select(exists().where(position))).scalar():
            return "rejected"
        conn.execute(
            insert(hub_sink_rejects).values(
                topic=item.topic,
                partition=item.partition,
                offset=item.offset,
                reason=reason,
                message=message[:1000],
            )
        )
        log.warning(
            "delivery_rejected",
            topic=item.topic,
            partition=item.partition,
            offset=item.offset,
            reason=reason,
        )
        return "rejected"


def known_client(conn: Connection, subject: Mapping[str, Any]) -> str | None:
    """MALS' client id for a delivered subject, if MALS has one."""
    scheme, local_id = subject["local_id_scheme"], subject["local_id"]
    if scheme == "mals_client_id":
        return str(local_id)
    if scheme != "hub_pseudonym":
        raise Unaddressable(f"subject scheme {scheme!r} (expected mals_client_id or hub_pseudonym)")
    mapped = conn.execute(
        select(hub_id_map.c.client_id).where(hub_id_map.c.pseudonym == local_id)
    ).scalar()
    return None if mapped is None else str(mapped)


def client_for(conn: Connection, subject: Mapping[str, Any], event_id: str) -> str:
    """MALS' client id for a delivered subject, creating the client when the hub addresses a
    person by pseudonym for the first time (or names a MALS client id MALS no longer holds)."""
    client_id = known_client(conn, subject)
    if client_id is not None:
        exists_ = select(exists().where(clients.c.client_id == client_id))
        if not conn.execute(exists_).scalar():
            conn.execute(insert(clients).values(client_id=client_id, created_by=CREATED_BY))
        return client_id
    client_id = next_client_id(conn)
    conn.execute(insert(clients).values(client_id=client_id, created_by=CREATED_BY))
    conn.execute(
        insert(hub_id_map).values(
            pseudonym=subject["local_id"], client_id=client_id, event_id=event_id
        )
    )
    log.info("client_created", client_id=client_id, event_id=event_id)
    return client_id


def _drop_client_if_unused(conn: Connection, client_id: str) -> None:
    created_by = conn.execute(
        select(clients.c.created_by).where(clients.c.client_id == client_id)
    ).scalar()
    if created_by != CREATED_BY:
        return
    for table in (referrals, sessions, lcp_attendance, outcomes, consent):
        if conn.execute(select(exists().where(table.c.client_id == client_id))).scalar():
            return
    conn.execute(delete(hub_id_map).where(hub_id_map.c.client_id == client_id))
    conn.execute(delete(clients).where(clients.c.client_id == client_id))
    log.info("client_removed", client_id=client_id)


def _inbox(conn: Connection, event_id: str) -> Any:
    return conn.execute(select(hub_inbox).where(hub_inbox.c.event_id == event_id)).first()


def _tombstone(conn: Connection, event_id: str, state: str) -> None:
    conn.execute(insert(hub_inbox).values(event_id=event_id, state=state))


def _store_offset(conn: Connection, topic: str, partition: int, next_offset: int) -> None:
    where = (hub_sink_offsets.c.topic == topic) & (hub_sink_offsets.c.partition == partition)
    done = conn.execute(
        update(hub_sink_offsets).where(where).values(next_offset=next_offset)
    ).rowcount
    if not done:
        conn.execute(
            insert(hub_sink_offsets).values(
                topic=topic, partition=partition, next_offset=next_offset
            )
        )


def stored_offsets(engine: Engine, topic: str) -> dict[int, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(hub_sink_offsets.c.partition, hub_sink_offsets.c.next_offset).where(
                hub_sink_offsets.c.topic == topic
            )
        )
        return {int(row.partition): int(row.next_offset) for row in rows}


def _payload_json(record: Mapping[str, Any]) -> str:
    fields = {
        k: v for k, v in record.items() if k not in ("envelope", "disclosure") and v is not None
    }
    return json.dumps(fields, sort_keys=True, default=_json_value)


def _json_value(value: Any) -> Any:
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# -- the consumer loop --------------------------------------------------------------------------


def decode(codec: AvroCodec, message: Message, fields: Any = None) -> Delivered:
    """The delivered record; with ``fields`` (a ``hub.crypto.FieldCrypto``) its encrypted
    sensitive values opened (a record whose subject was erased is refused: ``key_erased``)."""
    topic, partition, offset = (
        str(message.topic()),
        int(message.partition() or 0),
        int(message.offset() or 0),
    )
    try:
        _, record = codec.decode(message.value(), topic, partition, offset)
        if fields is not None:
            record = fields.open(record, message.headers())
    except SerdeError as exc:
        return Delivered(topic, partition, offset, None, exc.reason, str(exc))
    return Delivered(topic, partition, offset, record)


class MalsSink:
    """One sink process: ``deliver.mals`` into MALS' database."""

    def __init__(
        self,
        *,
        engine: Engine,
        codec: AvroCodec,
        bootstrap: str,
        topics: Topics,
        batch_size: int = BATCH_SIZE,
        consumer_extra: Mapping[str, Any] | None = None,
        fields: Any = None,
    ) -> None:
        from hub.adapters.kafka import consumer_config

        self.engine = engine
        self.codec = codec
        self.fields = fields
        self.topic = topics.deliver(AUDIENCE)
        self.batch_size = batch_size
        self.stats = SinkStats()
        self.applier = MalsApplier(self.stats)
        extra: dict[str, Any] = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}
        extra.update(consumer_extra or {})
        try:
            self.consumer = Consumer(consumer_config(bootstrap, group_id(topics), **extra))
        except KafkaException as exc:
            raise InfraError(f"invalid consumer configuration: {exc}") from exc

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        stored = stored_offsets(self.engine, self.topic)
        for tp in partitions:
            tp.offset = stored.get(tp.partition, OFFSET_BEGINNING)
        consumer.assign(partitions)
        log.info(
            "sink_partitions_assigned",
            positions={str(tp.partition): tp.offset for tp in partitions},
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        consumer.unassign()

    def _poll(self) -> list[Message]:
        messages = []
        for message in self.consumer.consume(self.batch_size, POLL_TIMEOUT_S):
            error = message.error()
            if error is None:
                messages.append(message)
            elif error.fatal():
                raise InfraError(f"{self.topic}: consumer failed: {error.str()}")
            elif error.code() != KafkaError._PARTITION_EOF:
                log.warning("sink_consumer_error", topic=self.topic, error=error.str())
        return messages

    def apply(self, messages: Sequence[Message]) -> None:
        """Decode and apply one batch with its offsets in one transaction; a database failure
        is retried with the same batch (the transaction rolled back, so that is safe)."""
        batch = [decode(self.codec, m, self.fields) for m in messages]
        for attempt in range(1, APPLY_ATTEMPTS + 1):
            try:
                with self.engine.begin() as conn:
                    self.applier.apply_batch(conn, batch)
                break
            except SQLAlchemyError as exc:
                if attempt == APPLY_ATTEMPTS:
                    raise InfraError(f"cannot write to MALS' database: {exc}") from exc
                log.warning("sink_batch_failed", attempt=attempt, error=type(exc).__name__)
                time.sleep(min(0.5 * 2**attempt, 10.0))
        self.stats.batches += 1
        self.stats.records += len(batch)
        log.info("sink_batch_applied", records=len(batch))

    def run(self, should_stop: Callable[[], bool]) -> SinkStats:
        self.consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        log.info("mals_sink_started", topic=self.topic)
        try:
            while not should_stop():
                messages = self._poll()
                if messages:
                    self.apply(messages)
        finally:
            try:
                self.consumer.close()
            except (KafkaException, RuntimeError) as exc:
                log.warning("sink_consumer_close_failed", error=str(exc))
        log.info("mals_sink_stopped", batches=self.stats.batches, records=self.stats.records)
        return self.stats

    def end_offsets(self, timeout: float = 30.0) -> dict[int, int]:
        """The end (last stable offset) of each partition now."""
        try:
            metadata = self.consumer.list_topics(self.topic, timeout=timeout).topics[self.topic]
            if metadata.error is not None:
                return {}
            return {
                p: int(
                    self.consumer.get_watermark_offsets(
                        TopicPartition(self.topic, p), timeout, False
                    )[1]
                )
                for p in sorted(metadata.partitions)
            }
        except KafkaException as exc:
            raise InfraError(f"{self.topic}: cannot read end offsets: {exc}") from exc

    def catch_up(self, timeout: float = 120.0) -> SinkStats:
        """Apply everything delivered so far, then stop."""
        ends = {p: e for p, e in self.end_offsets().items() if e > 0}
        deadline = time.monotonic() + timeout

        def done() -> bool:
            # A partition is done when its stored offset, or the consumer's position (which
            # moves past the transaction markers after the last record), reached its end.
            reached = stored_offsets(self.engine, self.topic)
            assignment = self.consumer.assignment()
            for tp in self.consumer.position(assignment) if assignment else ():
                reached[tp.partition] = max(reached.get(tp.partition, 0), tp.offset)
            if all(reached.get(p, 0) >= end for p, end in ends.items()):
                return True
            if time.monotonic() > deadline:
                raise InfraError(f"{self.topic}: not read to its end in {timeout:.0f}s")
            return False

        return self.run(done)


def run_sink(
    db_url: str,
    bootstrap: str,
    registry_url: str,
    topic_prefix: str = "",
    *,
    once: bool = False,
    batch_size: int = BATCH_SIZE,
    should_stop: Callable[[], bool] | None = None,
    fields: Any = None,
) -> SinkStats:
    """``hub connector run mals-sink``: keep MALS' database current from ``deliver.mals`` until
    SIGTERM/SIGINT (or ``should_stop()``); with ``once``, until the topic is read to its end."""
    from hub.adapters.schema_registry import HttpSchemaRegistry
    from hub.serde.catalogue import Catalogue

    engine = mals_engine(db_url)
    try:
        create_schema(engine)  # the connector's own tables beside MALS' (idempotent)
        codec = AvroCodec(Catalogue.load(), HttpSchemaRegistry(registry_url))
        sink = MalsSink(
            engine=engine,
            codec=codec,
            bootstrap=bootstrap,
            topics=Topics(topic_prefix),
            batch_size=batch_size,
            fields=fields,
        )
        return sink.catch_up() if once else sink.run(should_stop or stop_on_signals())
    finally:
        engine.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m connectors.mals.sink", description="Write deliver.mals into MALS' database."
    )
    add_connection_args(parser)
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--once", action="store_true", help="stop at the end of the topic")
    args = parser.parse_args(argv)
    stop = stop_on_signals()
    try:
        c = connection(args)
        configure(c.log_level)
        run_sink(
            args.db,
            c.bootstrap,
            c.registry_url,
            c.topic_prefix,
            once=args.once,
            batch_size=args.batch_size,
            should_stop=stop,
        )
    except HubError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
