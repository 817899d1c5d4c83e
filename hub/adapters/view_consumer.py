"""The audience view consumer: ``deliver.<audience>`` into that audience's database, exactly once.

- ``run_view``: a consumer in group ``hub-view-<audience>`` (``read_committed``, no auto commit)
  whose ``on_assign`` seeks every partition to the next offset stored in the view database (or the
  beginning). Each ``consume()`` batch (up to ``batch_size`` records) is decoded and applied with
  its offsets in one database transaction (:meth:`SqlViewStore.apply_batch`). Offsets are never
  committed to Kafka: the database is the only source of truth, so a process killed anywhere
  resumes where its last committed transaction ended.
- A record that cannot be decoded is stored in ``view_rejects`` (position, reason) in the same
  transaction, and the view moves on: never dropped silently, never retried forever.
- ``rebuild``: empty the tables, then replay every partition from the beginning until its end
  offset (the last stable offset under ``read_committed``) as it was when the rebuild started. The
  result is byte-identical to the incrementally kept view (the projection depends only on the set
  of records read); a rebuild killed half-way is finished by ``run_view``.

``python -m hub.adapters.view_consumer run|rebuild --audience X --db URL`` runs either with the
hub's settings from the environment (``HUB_KAFKA_BOOTSTRAP``, ``HUB_REGISTRY_URL``,
``HUB_TOPIC_PREFIX``...).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
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

from hub.adapters.kafka import consumer_config
from hub.adapters.key_store import field_crypto_for
from hub.adapters.view_store import SqlViewStore, open_view_store
from hub.crypto import FieldCrypto
from hub.domain.errors import HubError, InfraError, SerdeError
from hub.logsetup import configure
from hub.serde.codec import AvroCodec
from hub.settings import Settings
from hub.topics import Topics, check_name
from hub.views.projection import BatchStats, Decoded, Entry, Undecodable

log = structlog.get_logger(__name__)

BATCH_SIZE = 1000
REBUILD_BATCH_SIZE = 5000  # a replay is all catch-up: bigger transactions, fewer per-subject writes
POLL_TIMEOUT_S = 0.5
APPLY_ATTEMPTS = 5


def group_id(topics: Topics, audience: str) -> str:
    return f"{topics.prefix}hub-view-{audience}"


@dataclass
class ViewRunStats:
    batches: int = 0
    records: int = 0
    retries: int = 0
    view: BatchStats = field(default_factory=BatchStats)


def decode_entries(
    codec: AvroCodec, messages: Sequence[Message], fields: FieldCrypto | None = None
) -> list[Entry]:
    """Messages to entries; an undecodable value becomes an ``Undecodable`` (a reject), and so
    does a record whose encrypted fields do not open (its subject's key erased: ``key_erased``)."""
    entries: list[Entry] = []
    for message in messages:
        position = (str(message.topic()), int(message.partition() or 0), int(message.offset() or 0))
        try:
            _, record = codec.decode(message.value(), *position)
            if fields is not None:
                record = fields.open(record, message.headers())
        except SerdeError as exc:
            entries.append(Undecodable(position, exc.reason, str(exc)))
        else:
            entries.append(Decoded(position, record))
    return entries


def poll(consumer: Consumer, topic: str, batch_size: int, timeout: float) -> list[Message]:
    """Up to ``batch_size`` records; end-of-partition events are skipped, a fatal error raised."""
    messages: list[Message] = []
    for message in consumer.consume(batch_size, timeout):
        error = message.error()
        if error is None:
            messages.append(message)
        elif error.code() == KafkaError._PARTITION_EOF:
            continue
        elif error.fatal():
            raise InfraError(f"{topic}: consumer failed: {error.str()}")
        else:
            log.warning("view_consumer_error", topic=topic, error=error.str())
    return messages


class BatchApplier:
    """Decode a batch and apply it with its offsets in one database transaction."""

    def __init__(
        self, store: SqlViewStore, codec: AvroCodec, stats: ViewRunStats,
        fields: FieldCrypto | None = None,
    ) -> None:  # fmt: skip
        self.store = store
        self.codec = codec
        self.stats = stats
        self.fields = fields

    def apply(self, messages: Sequence[Message]) -> BatchStats:
        """A failure of the database (or the registry) is retried with the same batch, which is
        idempotent; after ``APPLY_ATTEMPTS`` it is raised and the process exits."""
        started = time.perf_counter()
        for attempt in range(1, APPLY_ATTEMPTS + 1):
            try:
                stats = self.store.apply_batch(decode_entries(self.codec, messages, self.fields))
                break
            except InfraError as exc:
                if attempt == APPLY_ATTEMPTS:
                    raise
                self.stats.retries += 1
                log.warning("view_batch_failed", audience=self.store.audience, attempt=attempt,
                            error=str(exc))  # fmt: skip
                time.sleep(min(0.5 * 2**attempt, 10.0))
        self.stats.batches += 1
        self.stats.records += len(messages)
        self.stats.view.add(stats)
        log.info("view_batch_applied", audience=self.store.audience, records=len(messages),
                 ms=round((time.perf_counter() - started) * 1000, 1), **asdict(stats))  # fmt: skip
        return stats


class ViewConsumer:
    """The loop of one view consumer process (one member of ``hub-view-<audience>``)."""

    def __init__(
        self,
        *,
        bootstrap: str,
        topics: Topics,
        audience: str,
        store: SqlViewStore,
        codec: AvroCodec,
        instance_id: str | None = None,
        batch_size: int = BATCH_SIZE,
        poll_timeout: float = POLL_TIMEOUT_S,
        consumer_extra: Mapping[str, Any] | None = None,
        fields: FieldCrypto | None = None,
    ) -> None:
        self.topic = topics.deliver(check_name("audience", audience))
        self.audience = audience
        self.store = store
        self.batch_size = batch_size
        self.poll_timeout = poll_timeout
        self.stats = ViewRunStats()
        self.applier = BatchApplier(store, codec, self.stats, fields)
        extra: dict[str, Any] = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}
        if instance_id:
            extra["group.instance.id"] = instance_id  # static membership: fast restarts
        extra.update(consumer_extra or {})
        try:
            self.consumer = Consumer(
                consumer_config(bootstrap, group_id(topics, audience), **extra)
            )
        except KafkaException as exc:
            raise InfraError(f"invalid consumer configuration: {exc}") from exc

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Seek each assigned partition to the next offset stored with the view's rows."""
        stored = self.store.offsets(self.topic)
        for tp in partitions:
            tp.offset = stored.get(tp.partition, OFFSET_BEGINNING)
        consumer.assign(partitions)
        log.info(
            "view_partitions_assigned",
            audience=self.audience,
            positions={str(tp.partition): tp.offset for tp in partitions},
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        consumer.unassign()
        log.info("view_partitions_revoked", partitions=[tp.partition for tp in partitions])

    def run(self, should_stop: Callable[[], bool]) -> ViewRunStats:
        self.consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        log.info("view_consumer_started", audience=self.audience, topic=self.topic)
        try:
            while not should_stop():
                messages = poll(self.consumer, self.topic, self.batch_size, self.poll_timeout)
                if messages:
                    self.applier.apply(messages)
        finally:
            try:
                self.consumer.close()
            except (KafkaException, RuntimeError) as exc:
                log.warning("view_consumer_close_failed", error=str(exc))
        log.info("view_consumer_stopped", audience=self.audience, **_flat(self.stats))
        return self.stats


def run_view(
    bootstrap: str,
    topics: Topics,
    audience: str,
    db_url: str,
    codec: AvroCodec,
    should_stop: Callable[[], bool],
    *,
    instance_id: str | None = None,
    batch_size: int = BATCH_SIZE,
    consumer_extra: Mapping[str, Any] | None = None,
    fields: FieldCrypto | None = None,
) -> ViewRunStats:
    """Keep ``db_url`` current from ``deliver.<audience>`` until ``should_stop()``."""
    check_name("audience", audience)
    store = open_view_store(db_url, audience)
    try:
        consumer = ViewConsumer(
            bootstrap=bootstrap, topics=topics, audience=audience, store=store, codec=codec,
            instance_id=instance_id, batch_size=batch_size, consumer_extra=consumer_extra,
            fields=fields,
        )  # fmt: skip
        return consumer.run(should_stop)
    finally:
        store.dispose()


def rebuild(
    bootstrap: str,
    topics: Topics,
    audience: str,
    db_url: str,
    codec: AvroCodec,
    *,
    batch_size: int = REBUILD_BATCH_SIZE,
    idle_timeout: float = 60.0,
    consumer_extra: Mapping[str, Any] | None = None,
    fields: FieldCrypto | None = None,
) -> ViewRunStats:
    """Empty the view and replay ``deliver.<audience>`` from the beginning up to its end offsets
    as they are now. Stop ``run_view`` for this database first."""
    topic = topics.deliver(check_name("audience", audience))
    store = open_view_store(db_url, audience)
    stats = ViewRunStats()
    extra = dict(consumer_extra or {})
    try:
        consumer = Consumer(
            consumer_config(bootstrap, f"{group_id(topics, audience)}-rebuild", **extra)
        )
    except KafkaException as exc:
        store.dispose()
        raise InfraError(f"invalid consumer configuration: {exc}") from exc
    try:
        ends = _end_offsets(consumer, topic)
        store.reset()
        log.info(
            "view_rebuild_started", audience=audience, ends={str(p): e for p, e in ends.items()}
        )
        applier = BatchApplier(store, codec, stats, fields)
        pending = {p for p, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(pending)])
        last_progress = time.monotonic()
        while pending:
            messages = poll(consumer, topic, batch_size, POLL_TIMEOUT_S)
            if messages:
                applier.apply(messages)
                last_progress = time.monotonic()
            positions = consumer.position([TopicPartition(topic, p) for p in sorted(pending)])
            pending -= {tp.partition for tp in positions if tp.offset >= ends[tp.partition]}
            if pending and time.monotonic() - last_progress > idle_timeout:
                raise InfraError(
                    f"{topic}: rebuild made no progress for {idle_timeout:.0f}s on partitions "
                    f"{sorted(pending)} (is a transaction open?)"
                )
    finally:
        try:
            consumer.close()
        finally:
            store.dispose()
    log.info("view_rebuilt", audience=audience, **_flat(stats))
    return stats


def _end_offsets(consumer: Consumer, topic: str, timeout: float = 30.0) -> dict[int, int]:
    try:
        metadata = consumer.list_topics(topic, timeout=timeout).topics[topic]
        if metadata.error is not None:
            raise InfraError(f"{topic}: {metadata.error.str()}")
        return {
            p: int(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout, False)[1])
            for p in sorted(metadata.partitions)
        }
    except KafkaException as exc:
        raise InfraError(f"{topic}: cannot read end offsets: {exc}") from exc


def _flat(stats: ViewRunStats) -> dict[str, int]:
    return {
        "batches": stats.batches,
        "records": stats.records,
        "retries": stats.retries,
        **asdict(stats.view),
    }


# -- entry points (the CLI wires these) ---------------------------------------------------------


def codec_for(settings: Settings) -> AvroCodec:
    from hub.adapters.schema_registry import HttpSchemaRegistry
    from hub.serde.catalogue import Catalogue

    return AvroCodec(Catalogue.load(), HttpSchemaRegistry(settings.schema_registry_url))


def main_run(
    settings: Settings,
    audience: str,
    db_url: str,
    *,
    instance_id: str | None = None,
    batch_size: int = BATCH_SIZE,
    should_stop: Callable[[], bool] | None = None,
) -> ViewRunStats:
    """``hub view run``: until SIGTERM or SIGINT (or ``should_stop()``)."""
    stop = should_stop or _stop_on_signals()
    return run_view(
        settings.bootstrap_servers, Topics(prefix=settings.topic_prefix), audience, db_url,
        codec_for(settings), stop, instance_id=instance_id, batch_size=batch_size,
        fields=field_crypto_for(settings),
    )  # fmt: skip


def main_rebuild(
    settings: Settings, audience: str, db_url: str, *, batch_size: int = REBUILD_BATCH_SIZE
) -> ViewRunStats:
    """``hub view rebuild``."""
    return rebuild(
        settings.bootstrap_servers, Topics(prefix=settings.topic_prefix), audience, db_url,
        codec_for(settings), batch_size=batch_size, fields=field_crypto_for(settings),
    )  # fmt: skip


def _stop_on_signals() -> Callable[[], bool]:
    stopping: list[int] = []

    def handler(signum: int, _frame: Any) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return lambda: bool(stopping)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hub.adapters.view_consumer")
    parser.add_argument("command", choices=("run", "rebuild"))
    parser.add_argument("--audience", required=True)
    parser.add_argument("--db", required=True, help="SQLAlchemy URL of the view database")
    parser.add_argument("--instance-id", default=None, help="static group membership id")
    parser.add_argument("--batch-size", type=int, default=None)
    args = parser.parse_args(argv)
    settings = Settings()
    configure(settings.log_level)
    try:
        if args.command == "run":
            main_run(settings, args.audience, args.db, instance_id=args.instance_id,
                     batch_size=args.batch_size or BATCH_SIZE)  # fmt: skip
        else:
            main_rebuild(settings, args.audience, args.db,
                         batch_size=args.batch_size or REBUILD_BATCH_SIZE)  # fmt: skip
    except HubError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
