"""The harness the router-through-the-broker tests share (RELIABILITY.md B.0), and its own tests.

- ``Hub``: one hub (settings, ``hub init``, codec, agreements, keys) on the session broker under
  a fresh topic prefix, with readers for every output topic and the router group's lag.
- ``Injector``: raw records produced with a plain ``confluent_kafka.Producer`` (malformed values
  a partner's own client could send), with the partition and offset each one landed at.
- ``malformed``: one malformed value per defect kind, with the reason code the router must give.
- ``Oracle``: the expected outputs, computed from the pure policy function (``evaluate``) and
  ``apply`` over a ``MemoryState``, replaying the events in the order the router routed them
  (the ``published`` audit entries on the single-partition ``hub.audit``).
- ``Outputs``: what the router really wrote (deliveries, retractions, DLQ, audit), read with
  read_committed, and ``check_against``: the checker (missing, duplicated, unexpected, field
  differences, DLQ and audit mismatches: all must be empty).
- ``segment_bytes``: the broker's log segments of a set of topics, record batches decompressed
  (the router's producer uses lz4, so a raw byte scan would see nothing), for the PR-2 byte scan.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import random
import struct
import time
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from hub import bootstrap
from hub.identity import HUB_ONLY
from hub.policy import MemoryState, PseudonymKeys, apply, evaluate
from hub.serde import wire
from hub.settings import Settings
from hub.topics import Topics
from tests.factory import EventFactory
from tests.hubtest import hub_settings, publish, read_all

RETRACTED = "delivery.retracted"


# -- one hub on the session broker ---------------------------------------------------------------


class Hub:
    def __init__(self, kafka_bootstrap: str, registry_url: str, topics: Topics, codec: Any,
                 home: Path, **router: Any) -> None:  # fmt: skip
        settings = hub_settings(kafka_bootstrap, registry_url, topics.prefix, home)
        if router:
            settings = settings.model_copy(
                update={"router": settings.router.model_copy(update=router)}
            )
        self.settings: Settings = settings
        bootstrap.init(settings)
        self.topics = topics
        self.codec = codec
        self.catalogue = codec.catalogue
        self.agreements = bootstrap.agreements(codec.catalogue)
        self.keys = PseudonymKeys(bootstrap.pseudonym_master(settings))
        self.jurisdiction = {a.id: a.jurisdiction for a in self.agreements.agencies()}

    @property
    def bootstrap_servers(self) -> str:
        return self.settings.bootstrap_servers

    def env(self) -> dict[str, str]:
        """The environment of a ``hub router run`` subprocess for this hub."""
        s = self.settings
        return {
            **os.environ,
            "HUB_HOME": str(s.home),
            "HUB_KAFKA_BOOTSTRAP": s.bootstrap_servers,
            "HUB_REGISTRY_URL": s.schema_registry_url,
            "HUB_TOPIC_PREFIX": s.topic_prefix,
            "HUB_ROUTER__TRANSACTION_TIMEOUT_MS": str(s.router.transaction_timeout_ms),
            "HUB_ROUTER__SESSION_TIMEOUT_MS": str(s.router.session_timeout_ms),
            "HUB_ROUTER__STORM_THRESHOLD": str(s.router.storm_threshold),
            "HUB_ROUTER__BATCH_SIZE": str(s.router.batch_size),
            "HUB_LOG_LEVEL": "WARNING",
        }

    def publish(self, events: Iterable[Mapping[str, Any]]) -> list[str]:
        return publish(self.settings, self.codec, events)

    def ingest_topics(self) -> list[str]:
        return [self.topics.ingest(a.id) for a in self.agreements.agencies()]

    def deliver_topics(self) -> list[str]:
        return [self.topics.deliver(a) for a in self.agreements.audiences()]

    def dlq_topics(self) -> list[str]:
        return [self.topics.dlq(a.id) for a in self.agreements.agencies()]

    def read(self, topic: str) -> list[Any]:
        return read_all(self.bootstrap_servers, topic)

    def read_many(self, topics: Sequence[str], timeout_s: float = 60.0,
                  isolation: str = "read_committed") -> dict[str, list[Any]]:  # fmt: skip
        """Every committed record of each topic from offset 0 (read_committed), with one consumer
        (``read_all`` per topic costs a consumer each: seconds over 50 topics); with
        ``isolation="read_uncommitted"`` the records of aborted transactions too."""
        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers})
        metadata = admin.list_topics(timeout=10).topics
        partitions = [
            TopicPartition(t, p, 0) for t in topics for p in sorted(metadata[t].partitions)
        ]
        consumer = Consumer({"bootstrap.servers": self.bootstrap_servers,
                             "group.id": f"{self.topics.prefix}reader", "enable.auto.commit": False,
                             "isolation.level": isolation})  # fmt: skip
        out: dict[str, list[Any]] = {t: [] for t in topics}
        try:
            ends = {}
            for tp in partitions:  # the last stable offset, as read_committed sees it
                _, high = consumer.get_watermark_offsets(tp, timeout=10)
                ends[(tp.topic, tp.partition)] = high
            pending = {k for k, end in ends.items() if end > 0}
            consumer.assign([tp for tp in partitions if (tp.topic, tp.partition) in pending])
            deadline = time.monotonic() + timeout_s
            while pending:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"could not read {sorted(pending)[:3]} to the end")
                for m in consumer.consume(5000, 0.2):
                    if m.error() is None:
                        out[m.topic()].append(m)
                for tp in consumer.position(
                    [TopicPartition(t, p) for t, p in pending]
                ):  # past the control records of committed transactions
                    if tp.offset >= ends[(tp.topic, tp.partition)]:
                        pending.discard((tp.topic, tp.partition))
        finally:
            consumer.close()
        return out

    def audit(self) -> list[dict[str, Any]]:
        return [json.loads(m.value()) for m in self.read(self.topics.audit)]

    def router_lag(self) -> dict[tuple[str, int], int]:
        """Per ingest partition: high watermark minus the router group's committed offset."""
        consumer = Consumer({"bootstrap.servers": self.bootstrap_servers,
                             "group.id": f"{self.topics.prefix}hub-router"})  # fmt: skip
        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers})
        try:
            partitions = []
            for topic in self.ingest_topics():
                meta = admin.list_topics(topic, timeout=10).topics[topic]
                partitions += [TopicPartition(topic, p) for p in sorted(meta.partitions)]
            lag = {}
            for tp in consumer.committed(partitions, timeout=30):
                _, high = consumer.get_watermark_offsets(tp, timeout=10)
                committed = tp.offset if tp.offset >= 0 else 0
                lag[(tp.topic, tp.partition)] = high - committed
            return lag
        finally:
            consumer.close()

    def build(
        self, event_type: str, agency: str, key: str, local_id: str,
        payload: Mapping[str, Any], at: dt.datetime, **envelope: Any,
    ) -> dict[str, Any]:  # fmt: skip
        """A valid event built (and checked) with the real Publisher."""
        from hub.publisher import Publisher, subject

        publisher = Publisher(
            agency=agency, source_system=f"{agency}-system", jurisdiction=self.jurisdiction[agency],
            codec=self.codec, sink=None,  # type: ignore[arg-type]
        )  # fmt: skip
        record = publisher.build(
            event_type, source_key=key, occurred_at=at, payload=payload,
            subject=subject(local_id, "police_nominal_id", pnc_id=f"PNC-{local_id}"), **envelope,
        )  # fmt: skip
        publisher.validate(record)
        return record


# -- events -------------------------------------------------------------------------------------


class Canaries:
    """A unique canary in every free-text payload field (not reference codes: those must stay
    valid codes)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.all: set[bytes] = set()
        self.events = 0

    def plant(self, event: dict[str, Any]) -> None:
        self.events += 1
        name = self.hub.catalogue.name_for(event["envelope"]["event_type"])
        references = set(self.hub.catalogue.reference_fields(name))
        count = [0]

        def walk(value: Any, path: str) -> Any:
            if isinstance(value, dict):
                return {k: walk(v, f"{path}.{k}" if path else k) for k, v in value.items()}
            if isinstance(value, list):
                return [walk(v, path) for v in value]
            if isinstance(value, str) and path not in references:
                count[0] += 1
                canary = f"CNRY{self.events:05d}F{count[0]:03d}Z"
                self.all.add(canary.encode())
                return canary
            return value

        for key in list(event):
            if key not in ("envelope", "disclosure"):
                event[key] = walk(event[key], key)


def random_events(
    hub: Hub, n: int, seed: int, canaries: Canaries | None = None, subjects: int = 40
) -> list[dict[str, Any]]:
    """``n`` valid events of (event type, source) pairs the agreements name, of ``subjects``
    people."""
    rng = random.Random(seed)
    factory = EventFactory(hub.catalogue, seed=seed)
    entries = hub.agreements.entries()
    pairs = sorted({(et, src) for (et, src, _a), _c in entries if et not in HUB_ONLY})
    base = dt.datetime(2014, 7, 1, tzinfo=dt.UTC)
    events = []
    for i in range(n):
        event_type, agency = rng.choice(pairs)
        payload = factory.payload(event_type)
        at = base + dt.timedelta(minutes=rng.randrange(0, 2 * 365 * 24 * 60))
        local_id = f"S{rng.randrange(subjects)}"
        event = hub.build(event_type, agency, f"r{seed}-{i}", local_id, payload, at)
        if canaries is not None:
            canaries.plant(event)
        hub.codec.validate(event)
        events.append(event)
    return events


# -- raw records --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Landed:
    topic: str
    partition: int
    offset: int


class Injector:
    """Produce raw records (no Publisher, no checks) and learn where each one landed."""

    def __init__(self, bootstrap_servers: str, **extra: Any) -> None:
        self.producer = Producer({"bootstrap.servers": bootstrap_servers, "linger.ms": 5,
                                  "enable.idempotence": True, "acks": "all", **extra})  # fmt: skip

    def send(
        self, items: Sequence[tuple[str, bytes | None, bytes | None]],
        headers: Sequence[tuple[str, bytes]] = (), partition: int = -1,
    ) -> list[Landed]:  # fmt: skip
        landed: list[Landed | None] = [None] * len(items)
        errors: list[str] = []

        def report(index: int):  # type: ignore[no-untyped-def]
            def callback(err, msg) -> None:  # type: ignore[no-untyped-def]
                if err is not None:
                    errors.append(f"{index}: {err}")
                else:
                    landed[index] = Landed(msg.topic(), msg.partition(), msg.offset())

            return callback

        for index, (topic, key, value) in enumerate(items):
            while True:
                try:
                    self.producer.produce(
                        topic, value=value, key=key, headers=list(headers),
                        partition=partition, on_delivery=report(index),
                    )  # fmt: skip
                    break
                except BufferError:
                    self.producer.poll(0.1)
            self.producer.poll(0)
        self.producer.flush(60)
        assert not errors, f"raw produce failed: {errors[:5]}"
        assert all(landed), "some raw records were not acknowledged"
        return landed  # type: ignore[return-value]


def malformed(hub: Hub, kind: str, event: dict[str, Any]) -> tuple[str, bytes, bytes | None, str]:
    """(topic, key, value, expected reason) of one malformed record built from a valid ``event``
    of agency A; every kind gives its own reason code."""
    codec = hub.codec
    agency = event["envelope"]["source_agency"]
    topic = hub.topics.ingest(agency)
    key = event["envelope"]["subject"]["local_id"].encode()
    good = codec.encode(event)

    def variant(**changes: Any) -> bytes:
        """``event`` with envelope/payload changes, encoded without the Publisher's checks."""
        changed = json_copy(event)
        for path, value in changes.items():
            head, _, rest = path.partition("__")
            if rest:
                changed[head][rest] = value
            else:
                changed[head] = value
        name = codec.catalogue.name_for(changed["envelope"]["event_type"])
        return wire.frame(
            codec.schema_id(name), wire.encode_body(codec.catalogue.parsed(name), changed)
        )

    if kind == "bad_magic":
        return topic, key, b"\x01" + good[1:], "bad_magic"
    if kind == "unknown_schema":
        return topic, key, b"\x00" + struct.pack(">I", 987_654_321) + good[5:], "unknown_schema"
    if kind == "empty_value":
        return topic, key, b"", "empty_value"
    if kind == "null_value":
        return topic, key, None, "null_value"
    if kind == "oversize":
        return topic, key, b"\x00" + b"\x01" * wire.MAX_VALUE_BYTES, "oversize"
    if kind == "truncated":  # the last byte (the disclosure's union index) missing
        return topic, key, good[:-1], "truncated"
    if kind == "trailing_bytes":
        return topic, key, good + b"\x00garbage", "trailing_bytes"
    if kind == "invalid_avro":  # a string whose bytes are not UTF-8
        at = good.index(event["envelope"]["source_system"].encode())
        return topic, key, good[:at] + b"\xff" + good[at + 1 :], "invalid_avro"
    if kind == "source_mismatch":  # a valid event of agency A on another agency's topic
        other = next(a.id for a in hub.agreements.agencies()
                     if a.id != agency and a.jurisdiction == hub.jurisdiction[agency])  # fmt: skip
        return hub.topics.ingest(other), key, good, "source_mismatch"
    if kind == "forged_disclosure":
        disclosure = {
            "audience": "police", "agreement_id": "kiom-isp", "agreement_version": "1",
            "clause_id": "kiom-1", "purpose": "forged", "legal_basis": "forged",
            "consent_based": False, "withheld": [], "transformed": [], "retention_until": None,
        }  # fmt: skip
        return topic, key, variant(disclosure=disclosure), "forged_disclosure"
    if kind == "future_event":
        future = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=2)
        return topic, key, variant(envelope__occurred_at=future), "future_event"
    if kind == "bad_event_id":
        return topic, key, variant(envelope__event_id="not-a-uuid"), "bad_event_id"
    if kind == "unknown_code":
        return topic, key, variant(envelope__sensitivity="not-a-code"), "unknown_code"
    if kind == "jurisdiction_mismatch":
        other = "NL" if hub.jurisdiction[agency] != "NL" else "IT"
        return topic, key, variant(envelope__jurisdiction=other), "jurisdiction_mismatch"
    if kind == "conflicting_duplicate":  # same event_id, other bytes: after the original
        return topic, key, variant(envelope__source_system="other-system"), "conflicting_duplicate"
    if kind == "forged_correction":  # another agency "corrects" this one's (routed) event
        event_type, forger = next(
            (et, src) for (et, src, _), _c in hub.agreements.entries()
            if src != agency and hub.jurisdiction[src] == hub.jurisdiction[agency]
            and et not in HUB_ONLY
        )  # fmt: skip
        forged = hub.build(
            event_type, forger, f"forged-{event['envelope']['event_id']}", "F1",
            EventFactory(hub.catalogue, seed=9).payload(event_type),
            event["envelope"]["occurred_at"],
            supersedes_event_id=event["envelope"]["event_id"], correction_reason="forged",
        )  # fmt: skip
        return hub.topics.ingest(forger), b"F1", codec.encode(forged), "forged_correction"
    raise ValueError(kind)


MALFORMED_KINDS = (
    "bad_magic", "unknown_schema", "empty_value", "null_value", "oversize", "truncated",
    "trailing_bytes", "invalid_avro", "source_mismatch", "forged_disclosure", "future_event",
    "bad_event_id", "unknown_code", "jurisdiction_mismatch",
)  # fmt: skip  (conflicting_duplicate needs its original routed first)


def json_copy(value: Any) -> Any:
    """A deep copy of an event (dicts and lists; leaves shared)."""
    if isinstance(value, dict):
        return {k: json_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_copy(v) for v in value]
    return value


# -- the oracle --------------------------------------------------------------------------------


@dataclass
class Expected:
    deliveries: dict[tuple[str, str], bytes] = field(default_factory=dict)  # (event, aud) → value
    decisions: dict[tuple[str, str], Any] = field(default_factory=dict)  # written `decided`
    retractions: dict[tuple[str, str, str], str] = field(default_factory=dict)  # → cause event
    corrections: set[str] = field(default_factory=set)
    routed: list[str] = field(default_factory=list)


class Oracle:
    """Expected deliveries and decisions from the pure policy function, replaying ``events`` in
    the router's order over a fresh ``MemoryState``, as the router does (state first, then one
    decision per audience, deliveries recorded for corrections and consent withdrawals)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.state = MemoryState(hub.catalogue)

    def replay(self, order: Sequence[str], events: Mapping[str, dict[str, Any]]) -> Expected:
        hub, state, agreements = self.hub, self.state, self.hub.agreements
        audiences = list(agreements.audiences())
        out = Expected(routed=list(order))
        for event_id in order:
            event = events[event_id]
            envelope = event["envelope"]
            assert evaluate(event, "", state, agreements).effect != "reject", event_id
            state.apply_event(event)
            decisions = [evaluate(event, a, state, agreements) for a in audiences]
            subject = state.subject_of(event)
            permitted = set()
            for d in decisions:
                named = agreements.candidates(envelope["event_type"], envelope["source_agency"],
                                              d.audience)  # fmt: skip
                if d.effect == "permit" or named:
                    out.decisions[(event_id, d.audience)] = d
                if d.effect != "permit":
                    continue
                permitted.add(d.audience)
                value = hub.codec.encode(apply(event, d, hub.keys, state))
                out.deliveries[(event_id, d.audience)] = value
                state.record_delivery(event_id, d.audience, subject, d.clause_id or "",
                                      d.consent_based, d.consent_scope)  # fmt: skip
            original = envelope.get("supersedes_event_id")
            if original:
                out.corrections.add(event_id)
                for audience in sorted(set(state.deliveries_of(original)) - permitted):
                    out.retractions[(original, audience, "superseded")] = event_id
                    state.mark_retracted(original, audience)
            if envelope["event_type"] == "consent.withdrawn":
                scopes = list(event.get("scopes") or [])
                for retracted, audience, _ in state.consent_based_deliveries(subject, scopes):
                    out.retractions[(retracted, audience, "consent_withdrawn")] = event_id
                    state.mark_retracted(retracted, audience)
        return out

    def refused(self, event: Mapping[str, Any]) -> bool:
        """Would the router refuse this (schema-valid) event as unroutable?"""
        return evaluate(event, "", self.state, self.hub.agreements).effect == "reject"


# -- what the router wrote -----------------------------------------------------------------


@dataclass
class Outputs:
    deliveries: dict[tuple[str, str], list[Any]]  # (event_id, audience) → messages
    retractions: dict[tuple[str, str, str], list[dict[str, Any]]]
    decoded: dict[tuple[str, str], dict[str, Any]]
    dlq: list[Any]
    audit: list[dict[str, Any]]
    deliver_bytes: dict[str, bytes]  # audience topic → all values concatenated

    @classmethod
    def read(cls, hub: Hub) -> Outputs:
        deliveries: dict[tuple[str, str], list[Any]] = {}
        retractions: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        decoded: dict[tuple[str, str], dict[str, Any]] = {}
        deliver_bytes: dict[str, bytes] = {}
        everything = hub.read_many([*hub.deliver_topics(), *hub.dlq_topics(), hub.topics.audit])
        for audience in hub.agreements.audiences():
            topic = hub.topics.deliver(audience)
            chunks = []
            for m in everything[topic]:
                chunks.append(m.value())
                _, record = hub.codec.decode(m.value(), m.topic(), m.partition(), m.offset())
                if record["envelope"]["event_type"] == RETRACTED:
                    key3 = (record["retracted_event_id"], audience, record["reason"])
                    retractions.setdefault(key3, []).append(record)
                    continue
                key = (record["envelope"]["event_id"], audience)
                deliveries.setdefault(key, []).append(m)
                decoded[key] = record
            deliver_bytes[topic] = b"\x1e".join(chunks)
        dlq = [m for topic in hub.dlq_topics() for m in everything[topic]]
        audit = [json.loads(m.value()) for m in everything[hub.topics.audit]]
        return cls(deliveries, retractions, decoded, dlq, audit, deliver_bytes)

    def entries(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.audit if e["kind"] == kind]

    def routed_order(self) -> list[str]:
        return [e["event_id"] for e in self.entries("published")]

    def dlq_by_origin(self) -> dict[tuple[str, int, int], Any]:
        found: dict[tuple[str, int, int], Any] = {}
        for m in self.dlq:
            h = dict(m.headers())
            origin = (h["hub.error.topic"].decode(), int(h["hub.error.partition"]),
                      int(h["hub.error.offset"]))  # fmt: skip
            assert origin not in found, f"two DLQ records for {origin}"
            found[origin] = m
        return found


def check_against(expected: Expected, got: Outputs, hub: Hub) -> dict[str, list[Any]]:
    """The checker: every list in the result must be empty."""
    problems: dict[str, list[Any]] = {
        "missing": [], "duplicated": [], "unexpected": [], "different": [],
        "retractions": [], "audit": [],
    }  # fmt: skip
    for key, value in expected.deliveries.items():
        messages = got.deliveries.get(key, [])
        if not messages:
            problems["missing"].append(key)
        elif len(messages) > 1:
            problems["duplicated"].append(key)
        elif messages[0].value() != value:
            problems["different"].append((key, _diff(hub, value, messages[0].value())))
    problems["unexpected"] = sorted(set(got.deliveries) - set(expected.deliveries))
    wanted = set(expected.retractions)
    for key, records in got.retractions.items():
        if key not in wanted or len(records) != 1:
            problems["retractions"].append(("unexpected or duplicated", key, len(records)))
        elif records[0]["cause_event_id"] != expected.retractions[key]:
            problems["retractions"].append(("cause", key))
    problems["retractions"] += [("missing", k) for k in wanted - set(got.retractions)]
    audit = problems["audit"]
    kinds = Counter(e["kind"] for e in got.audit)
    ids = Counter(e["entry_id"] for e in got.audit)
    audit += [("entry written twice", i) for i, n in ids.items() if n > 1]
    published = got.routed_order()
    if Counter(published) != Counter(expected.routed) or len(set(published)) != len(published):
        audit.append(("published", len(published), len(expected.routed)))
    decided = {(e["event_id"], e["audience"]): e for e in got.entries("decided")}
    if kinds["decided"] != len(decided) or set(decided) != set(expected.decisions):
        audit.append(("decided", kinds["decided"], len(expected.decisions),
                      sorted(set(decided) ^ set(expected.decisions))[:5]))  # fmt: skip
    for key, entry in decided.items():
        d = expected.decisions.get(key)
        if d is not None and (entry["outcome"], tuple(entry["clause_ids"])) != (
            d.effect, tuple(d.clause_ids)
        ):
            audit.append(("decided outcome", key, entry["outcome"], d.effect))
    delivered = {(e["event_id"], e["audience"]): e for e in got.entries("delivered")}
    if kinds["delivered"] != len(delivered) or set(delivered) != set(expected.deliveries):
        audit.append(("delivered", kinds["delivered"], len(expected.deliveries)))
    for key, entry in delivered.items():
        messages = got.deliveries.get(key)
        if messages and entry["payload_hash"] != hashlib.sha256(messages[0].value()).hexdigest():
            audit.append(("delivered payload_hash", key))
    if kinds["retracted"] != len(expected.retractions):
        audit.append(("retracted", kinds["retracted"], len(expected.retractions)))
    if kinds["corrected"] != len(expected.corrections):
        audit.append(("corrected", kinds["corrected"], len(expected.corrections)))
    rejected = {(e["details"]["topic"], int(e["details"]["partition"]),
                 int(e["details"]["offset"])): e for e in got.entries("rejected")}  # fmt: skip
    dlq = got.dlq_by_origin()
    if kinds["rejected"] != len(rejected) or set(rejected) != set(dlq):
        audit.append(("rejected", kinds["rejected"], len(dlq)))
    for origin, entry in rejected.items():
        m = dlq.get(origin)
        if m is not None and entry["reason"] != dict(m.headers())["hub.error.reason"].decode():
            audit.append(("rejected reason", origin))
    return {k: v for k, v in problems.items() if v}


def _diff(hub: Hub, want: bytes, got: bytes) -> list[str]:
    _, a = hub.codec.decode(want)
    _, b = hub.codec.decode(got)
    return [f"{k}: {a.get(k)!r} != {b.get(k)!r}"[:300] for k in a if a.get(k) != b.get(k)]


# -- the broker's log segments (PR-2) -------------------------------------------------------


def broker_data_dir(tmp_path_factory: Any) -> Path | None:
    """The session broker's data directory: the LocalBroker the conftest starts lives under a
    ``hub-home*`` of this session's temporary root; ``HUB_TEST_BROKER_DATA_DIR`` names the one
    of an external broker (``HUB_KAFKA_BOOTSTRAP``) when it runs on this machine."""
    named = os.environ.get("HUB_TEST_BROKER_DATA_DIR")
    if named:
        return Path(named)
    if os.environ.get("HUB_KAFKA_BOOTSTRAP"):
        return None
    found = sorted(Path(tmp_path_factory.getbasetemp()).glob("hub-home*/kafka/data"))
    return found[0] if found else None


def segment_bytes(data_dir: Path, topics: Iterable[str]) -> dict[str, bytes]:
    """topic → the records of every batch in its partitions' ``.log`` files, decompressed (aborted
    batches included: they are on disk too)."""
    out: dict[str, bytes] = {}
    for topic in topics:
        chunks: list[bytes] = []
        dirs = sorted(data_dir.glob(f"{topic}-[0-9]*"))
        assert dirs, f"no partition directories for {topic} under {data_dir}"
        for part in dirs:
            for log in sorted(part.glob("*.log")):
                chunks += [records for records, _ in record_batches(log.read_bytes())]
        out[topic] = b"\x1e".join(chunks)
    return out


def record_batches(data: bytes) -> Iterable[tuple[bytes, int]]:
    """(records section, decompressed, and the batch's record count) of each v2 record batch."""
    at = 0
    while at + 61 <= len(data):
        (length,) = struct.unpack_from(">i", data, at + 8)
        end = at + 12 + length
        if length <= 0 or end > len(data):
            break  # the preallocated or half-written tail
        magic = data[at + 16]
        assert magic == 2, f"record batch magic {magic} at {at}"
        (attributes,) = struct.unpack_from(">h", data, at + 21)
        (count,) = struct.unpack_from(">i", data, at + 57)
        body = data[at + 61 : end]
        codec = attributes & 0x7
        if codec == 0:
            records = body
        elif codec == 1:
            records = zlib.decompress(body, 16 + zlib.MAX_WBITS)
        elif codec == 3:
            records = lz4_frame_decompress(body)
        else:
            raise AssertionError(f"record batch compression {codec} is not supported here")
        yield records, count
        at = end


def lz4_frame_decompress(data: bytes) -> bytes:
    """The LZ4 frame format (what Kafka's lz4 batches hold), in plain Python."""
    if data[:4] != b"\x04\x22\x4d\x18":
        raise ValueError("not an LZ4 frame")
    flags = data[4]
    at = 6 + (8 if flags & 0x08 else 0) + (4 if flags & 0x01 else 0) + 1  # FLG BD [size] [dict] HC
    out = bytearray()
    while True:
        (size,) = struct.unpack_from("<I", data, at)
        at += 4
        if size == 0:
            break
        raw, size = bool(size & 0x80000000), size & 0x7FFFFFFF
        block = data[at : at + size]
        at += size + (4 if flags & 0x10 else 0)
        if raw:
            out += block
        else:
            _lz4_block(block, out)
    return bytes(out)


def _lz4_block(src: bytes, out: bytearray) -> None:
    i, n = 0, len(src)
    while i < n:
        token = src[i]
        i += 1
        literal = token >> 4
        if literal == 15:
            while True:
                extra = src[i]
                i += 1
                literal += extra
                if extra != 255:
                    break
        out += src[i : i + literal]
        i += literal
        if i >= n:
            return  # the last sequence has literals only
        offset = src[i] | (src[i + 1] << 8)
        i += 2
        length = token & 15
        if length == 15:
            while True:
                extra = src[i]
                i += 1
                length += extra
                if extra != 255:
                    break
        length += 4
        start = len(out) - offset
        if offset >= length:
            out += out[start : start + length]
        else:  # overlapping copy: repeat the pattern
            pattern = bytes(out[start:])
            out += (pattern * (length // offset + 1))[:length]


def wait_until(condition: Any, timeout_s: float, what: str, step: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


# -- the harness's own tests ------------------------------------------------------------------


def test_lz4_frame_decoder_reads_literals_matches_overlaps_and_raw_blocks() -> None:
    # "abcabcabcabcX": literals "abc", then a 9-byte overlapping match at offset 3, then "X"
    block = bytes([0x35]) + b"abc" + b"\x03\x00" + bytes([0x10]) + b"X"
    frame = b"\x04\x22\x4d\x18" + bytes([0x60, 0x40, 0x82])
    frame += struct.pack("<I", len(block)) + block
    frame += struct.pack("<I", 0x80000000 | 4) + b"RAW!" + struct.pack("<I", 0)
    assert lz4_frame_decompress(frame) == b"abcabcabcabcX" + b"RAW!"
    # a long literal run and a long match (length extension bytes), the block ending on a match
    block = bytes([0xFF]) + bytes([255, 0]) + b"x" * 270 + b"\x01\x00" + bytes([255, 10])
    frame = b"\x04\x22\x4d\x18" + bytes([0x60, 0x40, 0x82]) + struct.pack("<I", len(block))
    frame += block + struct.pack("<I", 0)
    assert lz4_frame_decompress(frame) == b"x" * (270 + 15 + 255 + 10 + 4)
