"""The router: ingest.* → decode, validate, dedupe → policy per audience → deliver.* + hub.audit,
all in one Kafka transaction per batch, with the input offsets.

``Router.process`` is the per-record logic (no Kafka): it turns one input record into the records
to produce (deliveries, retractions, DLQ, audit entries). ``Router.run`` is the loop around a
``TransactionalBus``. Anything that cannot be decoded, validated or routed goes to the agency's DLQ
with the reason in its headers and a ``rejected`` audit entry, inside the same transaction.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from hub.audit.entry import SHORT_MAX, TEXT_MAX, AuditEntry, make_entry_id, payload_hash
from hub.crypto import FieldCrypto
from hub.domain.errors import Fenced, HubError, SerdeError, TransactionAborted, ValidationError
from hub.identity import (
    HUB_ONLY,
    candidate_outputs,
    event_unlink_outputs,
    hub_envelope,
    merge_outputs,
    unlink_outputs,
)
from hub.policy import AgreementSet, Decision, PolicyState, PseudonymKeys, apply, evaluate
from hub.policy.transform import PSEUDONYM_SCHEME
from hub.ports import InRecord, OutRecord
from hub.serde.codec import AvroCodec
from hub.serde.events import check_event
from hub.topics import Topics

log = structlog.get_logger(__name__)

# The largest DLQ record (value, key and headers) the router writes as a copy: below the
# router producer's message.max.bytes (librdkafka's default, 1,000,000) and the broker's.
DLQ_RECORD_MAX = 900_000
# What librdkafka adds to value, key and headers when it checks a record against
# message.max.bytes (record framing and varints; generously rounded up).
RECORD_OVERHEAD = 256
RETRACTION_NAMESPACE = uuid.UUID("0b7f0a53-6f7e-4d0e-9d7c-1f3c2a9e5b11")


# -- what the loop needs from Kafka and the database (implemented in hub.adapters) -------------


class Bus(Protocol):
    def poll(self, max_records: int, timeout: float) -> Sequence[Any]: ...

    def begin(self) -> None: ...

    def send(self, record: Any) -> None: ...

    def commit(self, records: Sequence[InRecord]) -> None: ...

    def abort(self, why: str) -> None: ...

    def pause(self, topic: str, partition: int) -> None: ...


class SeenEvents(Protocol):
    """Which event ids the router has routed, with the content hash and where they came from."""

    def get(self, event_id: str) -> tuple[str, str, int, int] | None: ...

    def put(
        self, event_id: str, content_hash: str, topic: str, partition: int, offset: int
    ) -> None: ...


# -- outcomes --------------------------------------------------------------------------------


@dataclass
class RouterStats:
    received: int = 0
    routed: int = 0
    delivered: int = 0
    denied: int = 0
    retracted: int = 0
    rejected: int = 0
    duplicates: int = 0
    batches: int = 0
    aborted: int = 0
    storms: int = 0
    undeliverable: int = 0  # deliveries too large to produce, sent to the DLQ instead
    reasons: dict[str, int] = field(default_factory=dict)


class DlqStorm(HubError):
    """Too many consecutive bad records on one partition: pause it instead of flooding the DLQ."""

    def __init__(self, topic: str, partition: int, count: int) -> None:
        super().__init__(f"{topic}[{partition}]: {count} consecutive records rejected; paused")
        self.topic = topic
        self.partition = partition
        self.count = count


class Rejected(HubError):
    """A record the router refuses, with a stable reason code for the DLQ headers."""

    def __init__(self, reason: str, message: str, schema_id: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.schema_id = schema_id


@dataclass(frozen=True)
class RouterConfig:
    slot: int = 0
    batch_size: int = 500
    poll_timeout_s: float = 0.2
    storm_threshold: int = 100
    max_future_skew: dt.timedelta = dt.timedelta(hours=1)
    # the router producer's message.max.bytes: a larger record would abort every attempt
    max_record_bytes: int = 1_000_000


class Router:
    def __init__(
        self,
        *,
        topics: Topics,
        codec: AvroCodec,
        agreements: AgreementSet,
        state: PolicyState,
        keys: PseudonymKeys,
        seen: SeenEvents,
        config: RouterConfig | None = None,
        state_transaction: Callable[[], AbstractContextManager[Any]] | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        fields: FieldCrypto | None = None,
    ) -> None:
        self.topics = topics
        self.codec = codec
        self.catalogue = codec.catalogue
        self.agreements = agreements
        self.state = state
        self.keys = keys
        self.seen = seen
        self.config = config or RouterConfig()
        self.actor = f"hub-router-{self.config.slot}"  # who the audit entries name
        self.state_transaction = state_transaction
        self.clock = clock
        self.fields = fields  # hub.crypto: open at decode, seal again per audience
        self.stats = RouterStats()
        self.audiences = list(agreements.audiences())
        self._consecutive_bad: dict[tuple[str, int], int] = {}
        self._issued: set[tuple[str, str]] = set()  # (agency, pseudonym) recorded in the state
        self.attempt = ""
        self._record: Any = None  # the input record being processed (for DLQ headers)

    # -- the loop --------------------------------------------------------------------------
    def startup_entries(self) -> list[OutRecord]:
        """The ``policy_loaded`` audit entry for the agreements this router enforces."""
        digest = self.agreements.digest
        entry = AuditEntry(
            entry_id=make_entry_id("policy_loaded", digest),
            kind="policy_loaded",
            at=self.clock(),
            component="router",
            outcome="ok",
            actor=self.actor,
            details={"digest": digest, "agreements": str(len(list(self.agreements.agreements())))},
        )
        return [self._audit_record(entry)]

    def run(self, bus: Bus, should_stop: Callable[[], bool]) -> None:
        """Route until ``should_stop()``; each batch is one transaction.

        A batch that fails (a policy-engine bug, a broker error) is aborted and the consumer is
        rewound to the committed offsets, so the batch is processed again; nothing is skipped.
        """
        pending_startup = self.startup_entries()
        while not should_stop():
            records = bus.poll(self.config.batch_size, self.config.poll_timeout_s)
            if not records and not pending_startup:
                continue
            try:
                self.run_batch(bus, records, extra=pending_startup)
            except TransactionAborted:
                self.stats.aborted += 1
                continue
            pending_startup = []

    def run_batch(
        self, bus: Bus, records: Sequence[InRecord], extra: Sequence[OutRecord] = ()
    ) -> None:
        """Process ``records`` and commit the outputs and offsets in one transaction."""
        self.attempt = f"{self.config.slot}:{uuid.uuid4().hex}"
        bus.begin()
        for out in extra:
            bus.send(out)
        done: list[InRecord] = []
        paused: set[tuple[str, int]] = set()
        consecutive_bad = dict(self._consecutive_bad)
        try:
            try:
                with self._state_transaction():
                    self._process_batch(bus, records, done, paused)
            except (Fenced, KeyboardInterrupt):
                raise
            except Exception as exc:  # noqa: BLE001 - the top of the loop: abort and reprocess
                log.exception("batch_failed", records=len(records))
                self._issued.clear()  # the state's transaction rolled back
                bus.abort(f"batch failed: {type(exc).__name__}: {exc}")
            bus.commit(done)
        except TransactionAborted:
            # the batch will be read again: its rejections must not count twice towards a storm
            self._consecutive_bad = consecutive_bad
            raise
        self.stats.batches += 1

    def _process_batch(
        self, bus: Bus, records: Sequence[InRecord], done: list[InRecord],
        paused: set[tuple[str, int]],
    ) -> None:  # fmt: skip
        for record in records:
            if (record.topic, record.partition) in paused:
                continue
            try:
                outputs = self.process(record)
            except DlqStorm as storm:
                paused.add((record.topic, record.partition))
                bus.pause(record.topic, record.partition)
                bus.send(self._storm_entry(storm))
                log.error("dlq_storm_paused", topic=storm.topic, partition=storm.partition)
                continue
            for out in outputs:
                bus.send(out)
            done.append(record)

    def _state_transaction(self) -> AbstractContextManager[Any]:
        if self.state_transaction is None:
            import contextlib

            return contextlib.nullcontext()
        return self.state_transaction()

    # -- one record ------------------------------------------------------------------------
    def process(self, record: Any) -> list[OutRecord]:
        self.stats.received += 1
        self._record = record
        agency = self.topics.agency_of_ingest(record.topic)
        position = (record.topic, record.partition)
        try:
            if agency is None:
                raise Rejected("not_an_ingest_topic", f"{record.topic} is not an ingest topic")
            name, event = self._decode(record, agency)
            outputs = self._route(record, name, event, agency)
        except Rejected as rejected:
            bad = self._consecutive_bad.get(position, 0) + 1
            if bad > self.config.storm_threshold:
                self.stats.storms += 1
                raise DlqStorm(record.topic, record.partition, bad) from rejected
            self._consecutive_bad[position] = bad
            return self._reject(record, agency, rejected)
        self._consecutive_bad[position] = 0
        return outputs

    def _decode(self, record: Any, agency: str) -> tuple[str, dict[str, Any]]:
        where = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
        try:
            name, event = self.codec.decode(record.value, **where)
            if self.fields is not None:  # a DecryptError is a SerdeError: to the DLQ, with reason
                event = self.fields.open(event, record.headers)
            check_event(self.catalogue, name, event)
        except SerdeError as exc:
            raise Rejected(exc.reason, str(exc), exc.schema_id) from exc
        except ValidationError as exc:
            raise Rejected(exc.reason, str(exc)) from exc
        envelope = event["envelope"]
        if envelope["source_agency"] != agency:
            raise Rejected(
                "source_mismatch",
                f"envelope.source_agency {envelope['source_agency']!r} on the ingest topic of "
                f"{agency!r}: an agency may publish only as itself",
            )
        if not self.agreements.has_agency(agency):
            raise Rejected("unknown_agency", f"{agency!r} is not in policies/agencies.yaml")
        expected = self.agreements.agency(agency).jurisdiction
        if envelope["jurisdiction"] != expected:
            raise Rejected(
                "jurisdiction_mismatch",
                f"envelope.jurisdiction {envelope['jurisdiction']!r} is not the jurisdiction of "
                f"{agency} ({expected})",
            )
        source_system = envelope["source_system"]
        if len(source_system) > SHORT_MAX or "\x00" in source_system:
            raise Rejected(
                "invalid_envelope",
                f"envelope.source_system must be at most {SHORT_MAX} characters without NUL "
                "(it is the actor of the audit entry)",
            )
        if event.get("disclosure") is not None:
            raise Rejected("forged_disclosure", "disclosure is set by the hub, never by a partner")
        if envelope["event_type"] in HUB_ONLY:
            raise Rejected(
                "reserved_event_type", f"{envelope['event_type']} is written by the hub only"
            )
        if envelope["occurred_at"] > self.clock() + self.config.max_future_skew:
            raise Rejected(
                "future_event",
                f"occurred_at {envelope['occurred_at'].isoformat()} is in the future",
            )
        return name, event

    def _route(self, record: Any, name: str, event: dict[str, Any], agency: str) -> list[OutRecord]:
        envelope = event["envelope"]
        event_id = envelope["event_id"]
        content = (
            self.fields.content_hash(record.value, event, record.headers)
            if self.fields is not None
            else hashlib.sha256(record.value).hexdigest()
        )
        prior = self.seen.get(event_id)
        if prior is not None and prior[1:] != (record.topic, record.partition, record.offset):
            if prior[0] == content:
                self.stats.duplicates += 1
                return []
            raise Rejected(
                "conflicting_duplicate",
                f"event_id {event_id} was already routed from {prior[1]}[{prior[2]}]@{prior[3]} "
                "with different content; a correction needs a new event_id and supersedes_event_id",
            )
        supersedes = envelope.get("supersedes_event_id")
        original = self.seen.get(supersedes) if supersedes else None
        if original is not None and self.topics.agency_of_ingest(original[1]) != agency:
            # a correction voids the facts of the original in the policy state and retracts
            # its deliveries: only the agency that published the original may do that
            raise Rejected(
                "forged_correction",
                f"supersedes_event_id {supersedes} was published on {original[1]}, not by "
                f"{agency}: an agency may correct only its own events",
            )
        mislinked = (
            event.get("retracted_event_id")
            if envelope["event_type"] == "record.link_retracted"
            else None
        )
        linked = self.seen.get(mislinked) if mislinked else None
        if linked is not None and self.topics.agency_of_ingest(linked[1]) != agency:
            raise Rejected(
                "forged_correction",
                f"retracted_event_id {mislinked} was published on {linked[1]}, not by {agency}: "
                "an agency may retract only its own events",
            )
        # Is the event routable at all? (Rule 1 of the engine: the same answer for every
        # audience and any state; an unknown audience stops evaluate() right after it.) Asked
        # before the state changes: an event sent to the DLQ must have no effect on decisions.
        refused = evaluate(event, "", self.state, self.agreements)
        if refused.effect == "reject":
            raise Rejected("compartment", refused.reason)
        # State first, then decisions: a replay after an abort sees the same state (apply_event
        # is idempotent by event_id), so it makes the same decisions.
        self.state.apply_event(event)
        merges, unlinks = self.state.take_merges(), self.state.take_unlinks()
        decisions = [
            evaluate(event, audience, self.state, self.agreements) for audience in self.audiences
        ]
        refused_late = [d for d in decisions if d.effect == "reject"]
        if refused_late:  # cannot happen (see above); never deliver such an event
            raise Rejected("compartment", refused_late[0].reason)
        self.seen.put(event_id, content, record.topic, record.partition, record.offset)
        subject = self.state.subject_of(event)
        if self.fields is not None:
            self.fields.link(event, subject)
        subject_ref = self.keys.pseudonym("audit", subject)
        # One `decided` entry per audience that some clause names for this event type and
        # source; the default denials of audiences no agreement mentions are counted in the
        # `published` entry instead of being written out one by one.
        considered = [
            d for d in decisions
            if d.effect == "permit"
            or self.agreements.candidates(envelope["event_type"], agency, d.audience)
        ]  # fmt: skip
        outputs = [
            self._published_entry(event, subject_ref, content, len(decisions) - len(considered))
        ]
        permitted: set[str] = set()
        for decision in considered:
            outputs.append(self._decided_entry(event, decision, subject_ref))
            if decision.effect != "permit":
                self.stats.denied += 1
                continue
            permitted.add(decision.audience)
            outputs += self._deliver(event, decision, subject, subject_ref)
        supersedes = envelope.get("supersedes_event_id")
        if supersedes:
            outputs += self._correct(event, supersedes, permitted, subject, subject_ref)
        if envelope["event_type"] == "consent.withdrawn":
            outputs += self._retract_consented(event, subject, subject_ref)
        # identity (hub.identity): views follow merges and unlinks; similar people are proposed
        outputs += merge_outputs(self, event, merges, subject_ref)
        outputs += unlink_outputs(self, event, unlinks, subject_ref)
        if mislinked:
            outputs += event_unlink_outputs(self, event, mislinked, subject, subject_ref)
        if envelope["event_type"] == "person.registered":
            outputs += candidate_outputs(self, event, self.state.candidates_for(event))
        self.stats.routed += 1
        return outputs

    # -- deliveries ------------------------------------------------------------------------
    def _deliver(
        self, event: Mapping[str, Any], decision: Decision, subject: str, subject_ref: str
    ) -> list[OutRecord]:
        delivered = apply(event, decision, self.keys, self.state)
        sealed: list[tuple[str, bytes]] = []
        if self.fields is not None:  # each permitted sensitive value, under the audience's key
            delivered, sealed = self.fields.seal(delivered)
            self.fields.link(delivered, subject)
        shown = delivered["envelope"]["subject"]
        if shown["local_id_scheme"] == "hub_pseudonym" and decision.person_level:
            # remember the pseudonym issued, so that the agency may echo it back (MALS)
            issued = (self.agreements.agency_of_audience(decision.audience), shown["local_id"])
            if issued not in self._issued:
                self.state.record_pseudonym(*issued, subject)
                self._issued.add(issued)
        value = self.codec.encode_derived(delivered, event)
        envelope = event["envelope"]
        out = OutRecord(
            topic=self.topics.deliver(decision.audience),
            key=delivered["envelope"]["subject"]["local_id"].encode(),
            value=value,
            headers=(*self._headers(envelope["event_type"]), *sealed),
        )
        if _wire_size(out) > self.config.max_record_bytes:
            return self._undeliverable(event, decision, out, subject_ref)
        clause = decision.clause_ids[0] if decision.clause_ids else ""
        self.state.record_delivery(
            envelope["event_id"], decision.audience, subject, clause,
            decision.consent_based, decision.consent_scope,
        )  # fmt: skip
        self.stats.delivered += 1
        entry = AuditEntry(
            entry_id=make_entry_id("delivered", envelope["event_id"], decision.audience),
            kind="delivered",
            at=self.clock(),
            component="router",
            outcome="ok",
            actor=self.actor,
            subject_ref=subject_ref,
            event_id=envelope["event_id"],
            event_type=envelope["event_type"],
            source_agency=envelope["source_agency"],
            audience=decision.audience,
            agreement_id=decision.agreement_id,
            agreement_version=decision.agreement_version,
            clause_ids=tuple(decision.clause_ids),
            fields=_treatments(decision),
            purpose=decision.purpose,
            payload_hash=payload_hash(value),
            details={"topic": out.topic, "legal_basis": decision.legal_basis or ""},
        )
        return [out, self._audit_record(entry)]

    def _correct(
        self, event: Mapping[str, Any], original: str, permitted: set[str], subject: str,
        subject_ref: str,
    ) -> list[OutRecord]:  # fmt: skip
        """A correction reaches everyone who got the original; who may no longer see it gets a
        retraction of the original instead."""
        outputs: list[OutRecord] = []
        for audience in sorted(set(self.state.deliveries_of(original)) - permitted):
            outputs += self._retraction(event, original, audience, None, "superseded", subject,
                                        subject_ref)  # fmt: skip
        envelope = event["envelope"]
        entry = AuditEntry(
            entry_id=make_entry_id("corrected", envelope["event_id"], original),
            kind="corrected",
            at=self.clock(),
            component="router",
            actor=self.actor,
            outcome="ok",
            subject_ref=subject_ref,
            event_id=envelope["event_id"],
            event_type=envelope["event_type"],
            source_agency=envelope["source_agency"],
            reason=_audit_text(str(envelope.get("correction_reason") or "correction")),
            # a details value may not be empty: a correction nobody may receive says so
            details={"supersedes": original, "recipients": ",".join(sorted(permitted)) or "-"},
        )
        return [*outputs, self._audit_record(entry)]

    def _retract_consented(
        self, event: Mapping[str, Any], subject: str, subject_ref: str
    ) -> list[OutRecord]:
        scopes = list(event.get("scopes") or [])
        outputs: list[OutRecord] = []
        for event_id, audience, clause in self.state.consent_based_deliveries(subject, scopes):
            outputs += self._retraction(
                event, event_id, audience, clause, "consent_withdrawn", subject, subject_ref
            )
        return outputs

    def _retraction(
        self, cause: Mapping[str, Any], retracted: str, audience: str, clause: str | None,
        reason: str, subject: str, subject_ref: str,
    ) -> list[OutRecord]:  # fmt: skip
        envelope = cause["envelope"]
        agency = self.agreements.agency_of_audience(audience)
        local = self.state.local_identifier_for(subject, agency)
        record = {
            "envelope": hub_envelope(
                str(uuid.uuid5(RETRACTION_NAMESPACE, f"{retracted}|{audience}|{reason}")),
                "delivery.retracted", occurred_at=envelope["occurred_at"],
                recorded_at=envelope["recorded_at"], jurisdiction=envelope["jurisdiction"],
                subject=local or (PSEUDONYM_SCHEME, self.keys.pseudonym(audience, subject)),
            ),  # fmt: skip
            "retracted_event_id": retracted,
            "reason": reason,
            "clause_id": clause,
            "cause_event_id": envelope["event_id"],
            "disclosure": None,
        }
        value = self.codec.encode(record)
        self.state.mark_retracted(retracted, audience)
        self.stats.retracted += 1
        out = OutRecord(
            topic=self.topics.deliver(audience),
            key=record["envelope"]["subject"]["local_id"].encode(),
            value=value,
            headers=self._headers("delivery.retracted"),
        )
        entry = AuditEntry(
            entry_id=make_entry_id("retracted", retracted, audience, reason),
            kind="retracted",
            at=self.clock(),
            component="router",
            actor=self.actor,
            outcome="ok",
            subject_ref=subject_ref,
            event_id=retracted,
            event_type="delivery.retracted",
            source_agency=envelope["source_agency"],
            audience=audience,
            clause_ids=(clause,) if clause else (),
            reason=reason,
            payload_hash=payload_hash(value),
            details={"cause_event_id": envelope["event_id"]},
        )
        return [out, self._audit_record(entry)]

    # -- rejections ------------------------------------------------------------------------
    def _reject(self, record: Any, agency: str | None, rejected: Rejected) -> list[OutRecord]:
        self.stats.rejected += 1
        self.stats.reasons[rejected.reason] = self.stats.reasons.get(rejected.reason, 0) + 1
        log.warning(
            "event_rejected", topic=record.topic, partition=record.partition,
            offset=record.offset, reason=rejected.reason,
        )  # fmt: skip
        headers = [
            *record.headers,
            ("hub.error.reason", rejected.reason.encode()),
            ("hub.error.class", type(rejected.__cause__ or rejected).__name__.encode()),
            ("hub.error.message", str(rejected)[:1000].encode()),
            ("hub.error.topic", record.topic.encode()),
            ("hub.error.partition", str(record.partition).encode()),
            ("hub.error.offset", str(record.offset).encode()),
            *self._headers(None),
        ]
        if rejected.schema_id is not None:
            headers.append(("hub.error.schema_id", str(rejected.schema_id).encode()))
        dlq_topic = self.topics.dlq(agency) if agency else f"{self.topics.prefix}hub.unroutable.dlq"
        value = record.value if record.value is not None else b""
        original_hash = payload_hash(value)
        key = record.key
        size = len(value) + len(key or b"") + sum(len(k) + len(v) for k, v in headers)
        if size > DLQ_RECORD_MAX or size + RECORD_OVERHEAD > self.config.max_record_bytes:
            # Too big to copy: the producer (and the broker) would refuse it, and the batch would
            # abort and be re-read forever. The DLQ record names the original instead, which
            # stays on the ingest topic at hub.error.topic/partition/offset.
            headers = [
                *headers[len(record.headers) :],
                ("hub.error.value_bytes", str(len(value)).encode()),
                ("hub.error.value_sha256", original_hash.encode()),
            ]
            value = b""
            key = key if key is None or len(key) <= 1024 else None
        entry = AuditEntry(
            entry_id=make_entry_id("rejected", record.topic, record.partition, record.offset),
            kind="rejected",
            at=self.clock(),
            component="router",
            outcome="error",
            actor=self.actor,
            source_agency=agency,
            reason=rejected.reason,
            payload_hash=original_hash,
            details={
                "topic": record.topic,
                "partition": str(record.partition),
                "offset": str(record.offset),
                "dlq": dlq_topic,
            },
        )
        return [
            OutRecord(dlq_topic, key, value, tuple(headers)),
            self._audit_record(entry),
        ]

    def _undeliverable(
        self, event: Mapping[str, Any], decision: Decision, out: OutRecord, subject_ref: str
    ) -> list[OutRecord]:
        """A permitted delivery too large for the producer (a transform can enlarge an event:
        pseudonyms are 64 characters): the producer would refuse it, and every attempt of the
        batch would abort and be read again. It goes to the source agency's DLQ instead, named
        by its size and hash (its bytes are not copied), with a ``rejected`` audit entry; the
        event's other deliveries go ahead, and nothing records it as delivered."""
        envelope = event["envelope"]
        record = self._record
        size, digest = _wire_size(out), payload_hash(out.value)
        reason = "delivery_oversize"
        message = (
            f"the delivery of {envelope['event_id']} to {decision.audience} is {size} bytes, "
            f"over the router producer's limit of {self.config.max_record_bytes}"
        )
        self.stats.undeliverable += 1
        self.stats.reasons[reason] = self.stats.reasons.get(reason, 0) + 1
        log.error(
            "delivery_oversize", topic=record.topic, partition=record.partition,
            offset=record.offset, audience=decision.audience, size=size,
        )  # fmt: skip
        dlq_topic = self.topics.dlq(envelope["source_agency"])
        headers = (
            ("hub.error.reason", reason.encode()),
            ("hub.error.class", b"Rejected"),
            ("hub.error.message", message.encode()),
            ("hub.error.topic", record.topic.encode()),
            ("hub.error.partition", str(record.partition).encode()),
            ("hub.error.offset", str(record.offset).encode()),
            ("hub.error.event_id", envelope["event_id"].encode()),
            ("hub.error.audience", decision.audience.encode()),
            ("hub.error.value_bytes", str(size).encode()),
            ("hub.error.value_sha256", digest.encode()),
            *self._headers(None),
        )
        key = record.key if record.key is None or len(record.key) <= 1024 else None
        entry = AuditEntry(
            entry_id=make_entry_id("rejected", envelope["event_id"], decision.audience, reason),
            kind="rejected",
            at=self.clock(),
            component="router",
            outcome="error",
            actor=self.actor,
            subject_ref=subject_ref,
            event_id=envelope["event_id"],
            event_type=envelope["event_type"],
            source_agency=envelope["source_agency"],
            audience=decision.audience,
            agreement_id=decision.agreement_id,
            agreement_version=decision.agreement_version,
            clause_ids=tuple(decision.clause_ids),
            reason=reason,
            payload_hash=digest,
            details={
                "topic": record.topic,
                "partition": str(record.partition),
                "offset": str(record.offset),
                "dlq": dlq_topic,
                "bytes": str(size),
            },
        )
        return [OutRecord(dlq_topic, key, b"", headers), self._audit_record(entry)]

    def _storm_entry(self, storm: DlqStorm) -> OutRecord:
        entry = AuditEntry(
            entry_id=make_entry_id("dlq_storm", storm.topic, storm.partition, self.attempt),
            kind="dlq_storm",
            at=self.clock(),
            component="router",
            outcome="error",
            actor=self.actor,
            reason=str(storm),
            details={"topic": storm.topic, "partition": str(storm.partition)},
        )
        return self._audit_record(entry)

    # -- audit -----------------------------------------------------------------------------
    def _published_entry(
        self, event: Mapping[str, Any], subject_ref: str, content_hash: str, default_denied: int
    ) -> OutRecord:
        envelope = event["envelope"]
        return self._audit_record(
            AuditEntry(
                entry_id=make_entry_id("published", envelope["event_id"]),
                kind="published",
                at=self.clock(),
                component="router",
                outcome="ok",
                actor=envelope["source_system"],
                subject_ref=subject_ref,
                event_id=envelope["event_id"],
                event_type=envelope["event_type"],
                source_agency=envelope["source_agency"],
                payload_hash=content_hash,
                details={"default_denied_audiences": str(default_denied)},
            )
        )

    def _decided_entry(
        self, event: Mapping[str, Any], decision: Decision, subject_ref: str
    ) -> OutRecord:
        envelope = event["envelope"]
        details = {"errors": "; ".join(decision.errors)[:500]} if decision.errors else {}
        return self._audit_record(
            AuditEntry(
                entry_id=make_entry_id("decided", envelope["event_id"], decision.audience),
                kind="decided",
                at=self.clock(),
                component="router",
                outcome=decision.effect,
                actor=self.actor,
                subject_ref=subject_ref,
                event_id=envelope["event_id"],
                event_type=envelope["event_type"],
                source_agency=envelope["source_agency"],
                audience=decision.audience,
                agreement_id=decision.agreement_id,
                agreement_version=decision.agreement_version,
                clause_ids=tuple(decision.clause_ids),
                fields=_treatments(decision) if decision.effect == "permit" else {},
                reason=decision.reason[:1000] if decision.reason else None,
                purpose=decision.purpose,
                details=details,
            )
        )

    def _audit_record(self, entry: AuditEntry) -> OutRecord:
        return OutRecord(
            topic=self.topics.audit,
            key=entry.entry_id.encode(),
            value=entry.to_json_bytes(),
            headers=self._headers(None),
        )

    def _headers(self, event_type: str | None) -> tuple[tuple[str, bytes], ...]:
        headers: list[tuple[str, bytes]] = [("x-hub-attempt", self.attempt.encode())]
        if event_type:
            headers.append(("event_type", event_type.encode()))
        return tuple(headers)


def _audit_text(text: str, limit: int = TEXT_MAX) -> str:
    """Partner free text (a correction reason) made acceptable to an audit entry: no NUL, at
    most ``limit`` characters."""
    return text.replace("\x00", "\\x00")[:limit]


def _wire_size(record: OutRecord) -> int:
    """The size librdkafka checks against message.max.bytes, at most."""
    headers = sum(len(k) + len(v) for k, v in record.headers)
    return len(record.value) + len(record.key or b"") + headers + RECORD_OVERHEAD


def _treatments(decision: Decision) -> dict[str, str]:
    return {
        name: ("withheld" if rule == "drop" else rule) for name, rule in decision.fields.items()
    }
