"""The exactly-once oracle and checker of RELIABILITY.md B.0.

**Oracle.** From the inputs the harness published (``workload.Input``: input id, type, subject,
injected defect or none) and where each one landed (per ingest partition, in offset order), it
computes with the *pure* policy function what the router must have produced:

- one delivery per ``(event_id, audience)`` whose decision is ``permit``;
- a ``published`` audit entry per routed event, a ``decided`` entry per audience that is permitted
  or that some clause names for the event's type and source (the router leaves the default
  denials of audiences no agreement mentions out, counting them in ``published``), a
  ``delivered`` entry per delivery;
- a DLQ record and a ``rejected`` audit entry per defective input (and per compartment refusal),
  with the reason code the defect must produce.

Each partition is replayed in offset order into one ``MemoryState``, applying each event before
evaluating it, exactly as the router does. An event id seen before at another position is a
duplicate and produces nothing. (The workload's subjects never cross partitions, so the
interleaving of partitions does not change any decision.)

**Checker.** After the run it reads every output topic (``deliver.*``, the DLQs, ``hub.audit``)
from offset 0, once with ``read_committed`` and once with ``read_uncommitted``, and counts:

- ``missing``: expected deliveries with no copy;
- ``duplicated``: extra copies of a delivery (count - 1 each);
- ``unexpected``: deliveries the oracle does not expect (wrong audience, retractions, ...);
- ``aborted_reads``: committed records stamped with an ``x-hub-attempt`` the harness knows
  aborted: an attempt is known aborted when some of its records are in the log
  (read_uncommitted) but not visible to read_committed: a committed transaction is visible
  whole, so any of its records seen by read_committed is a read of an aborted transaction;
  also records the concurrent reader saw that are not in the final committed read;
- ``torn``: an input with some but not all of its outputs (deliveries, audit entries, DLQ
  record);
- ``inconsistent_offsets``: two readers (the final read_committed, the concurrent reader, the
  read_uncommitted pass) disagree on the record at a partition/offset;
- ``dlq_mismatch``: DLQ records that are missing, duplicated, unexpected or with a wrong reason;
- ``audit_mismatch``: ``published``/``decided``/``delivered``/``rejected`` entries that are
  missing, duplicated or unexpected (``policy_loaded`` entries, one per router start, are not
  counted).

Pass means every counter is 0.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from hub.policy import AgreementSet, MemoryState, evaluate
from hub.serde.codec import AvroCodec
from hub.topics import Topics
from tests.harness.workload import MIX, Rec, Workload, partitions_of, read_topics, retrying

Key = tuple[str, str]  # (event_id, audience)
Position = tuple[str, int, int]


# -- the oracle ----------------------------------------------------------------------------------


@dataclass
class Expected:
    deliveries: set[Key] = field(default_factory=set)
    decided: set[Key] = field(default_factory=set)
    published: set[str] = field(default_factory=set)
    # input position -> (input id, reason, dlq topic)
    dlq: dict[Position, tuple[str, str, str]] = field(default_factory=dict)
    # input id -> the output items it must have (see Checker._items)
    items: dict[str, set[tuple[str, ...]]] = field(default_factory=dict)
    duplicates: int = 0  # inputs that repeat an event id seen at another position
    unknown_inputs: int = 0  # records on ingest topics the harness did not publish


def oracle(
    workload: Workload,
    ingest_log: Mapping[tuple[str, int], Sequence[tuple[int, str]]],
    codec: AvroCodec,
    agreements: AgreementSet,
    topics: Topics,
) -> Expected:
    """What the router must produce for ``workload`` as it landed (see the module docs)."""
    state = MemoryState(codec.catalogue)
    audiences = list(agreements.audiences())
    expected = Expected()
    seen: dict[str, Position] = {}
    for (topic, partition), entries in sorted(ingest_log.items()):
        agency = topics.agency_of_ingest(topic)
        assert agency is not None, topic
        for offset, input_id in entries:
            item = workload.by_id.get(input_id)
            if item is None:
                expected.unknown_inputs += 1
                continue
            position = (topic, partition, offset)
            if item.defect is not None:
                expected.dlq[position] = (input_id, str(item.expected_reason), topics.dlq(agency))
                expected.items.setdefault(input_id, set()).update(
                    {("dlq", *map(str, position)), ("rejected", *map(str, position))}
                )
                continue
            _, event = codec.decode(item.value, topic, partition, offset)
            envelope = event["envelope"]
            event_id = envelope["event_id"]
            if event_id in seen:
                expected.duplicates += 1
                continue
            seen[event_id] = position
            state.apply_event(event)
            decisions = [evaluate(event, a, state, agreements) for a in audiences]
            if any(d.effect == "reject" for d in decisions):
                expected.dlq[position] = (input_id, "compartment", topics.dlq(agency))
                expected.items.setdefault(input_id, set()).update(
                    {("dlq", *map(str, position)), ("rejected", *map(str, position))}
                )
                continue
            items = expected.items.setdefault(input_id, set())
            expected.published.add(event_id)
            items.add(("published", event_id))
            for decision in decisions:
                audience = decision.audience
                named = agreements.candidates(envelope["event_type"], agency, audience)
                if decision.effect != "permit" and not named:
                    continue
                expected.decided.add((event_id, audience))
                items.add(("decided", event_id, audience))
                if decision.effect == "permit":
                    expected.deliveries.add((event_id, audience))
                    items.update({("delivered", event_id, audience),
                                  ("delivery", event_id, audience)})  # fmt: skip
    return expected


# -- the concurrent reader -----------------------------------------------------------------------


def output_topics(topics: Topics, agreements: AgreementSet) -> list[str]:
    names = [topics.deliver(a) for a in agreements.audiences()]
    names += [topics.dlq(a.id) for a in agreements.agencies()]
    names += [topics.audit, f"{topics.prefix}hub.unroutable.dlq"]
    return names


def _digest(key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]]) -> str:
    h = hashlib.sha256()
    for part in (key or b"", value or b"", repr(sorted(headers)).encode()):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()


class LiveReader:
    """A read_committed consumer of every output topic that runs *during* the faults (as Kafka's
    ``transactions_test.py`` does), recording what it saw at each partition/offset."""

    def __init__(self, bootstrap: str, topic_names: Sequence[str]) -> None:
        self.bootstrap = bootstrap
        self.parts = partitions_of(bootstrap, topic_names)
        self.seen: dict[Position, str] = {}
        self.policy_loaded = 0
        self.errors: list[str] = []
        self._positions: dict[tuple[str, int], int] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._audit_topic = next((tp.topic for tp in self.parts
                                  if tp.topic.endswith("hub.audit")), "")  # fmt: skip
        self._thread = threading.Thread(target=self._run, name="eo-live-reader", daemon=True)

    def __enter__(self) -> LiveReader:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": "hub-eo-live",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": 100,
            }
        )
        consumer.assign([TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING)
                         for tp in self.parts])  # fmt: skip
        assignment = [TopicPartition(tp.topic, tp.partition) for tp in self.parts]
        try:
            while not self._stop.is_set():
                # the position moves past aborted records and control records, which are never
                # returned: it says how far this reader got even where the log ends with them
                for tp in consumer.position(assignment):
                    if tp.offset >= 0:
                        with self._lock:
                            where = (tp.topic, tp.partition)
                            self._positions[where] = max(self._positions.get(where, 0), tp.offset)
                for message in consumer.consume(2000, 0.2):
                    error = message.error()
                    if error is not None:
                        if error.code() != KafkaError._PARTITION_EOF:
                            self.errors.append(error.str())
                        continue
                    where = (message.topic(), message.partition(), message.offset())
                    digest = _digest(message.key(), message.value(), message.headers() or ())
                    with self._lock:
                        self.seen[where] = digest
                        self._positions[where[:2]] = where[2] + 1
                        if where[0] == self._audit_topic and b'"policy_loaded"' in (
                            message.value() or b""
                        ):
                            self.policy_loaded += 1
        finally:
            consumer.close()

    def count(self) -> int:
        with self._lock:
            return len(self.seen)

    def caught_up(self, ends: Mapping[tuple[str, int], int]) -> bool:
        with self._lock:
            return all(self._positions.get(k, 0) >= end for k, end in ends.items() if end)

    def wait_caught_up(self, timeout_s: float = 60.0) -> None:
        """Wait until it has read past every record that exists now (run after the faults).
        The final comparison only uses what it did see."""
        probe = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "hub-eo-probe"})
        try:
            ends = {
                (tp.topic, tp.partition): retrying(
                    lambda tp=tp: probe.get_watermark_offsets(tp, timeout=15)
                )[1]
                for tp in self.parts
            }
        finally:
            probe.close()
        deadline = time.monotonic() + timeout_s
        while not self.caught_up(ends):
            if time.monotonic() > deadline:
                raise AssertionError(f"the live reader did not catch up in {timeout_s}s")
            time.sleep(0.2)


# -- the checker ---------------------------------------------------------------------------------


COUNTERS = (
    "missing",
    "duplicated",
    "unexpected",
    "aborted_reads",
    "torn",
    "inconsistent_offsets",
    "dlq_mismatch",
    "audit_mismatch",
)


@dataclass
class Report:
    missing: int = 0
    duplicated: int = 0
    unexpected: int = 0
    aborted_reads: int = 0
    torn: int = 0
    inconsistent_offsets: int = 0
    dlq_mismatch: int = 0
    audit_mismatch: int = 0
    # figures, not counters
    expected_deliveries: int = 0
    deliveries: int = 0
    dlq_records: int = 0
    audit_entries: int = 0
    policy_loaded: int = 0
    attempts_committed: int = 0
    attempts_aborted: int = 0
    aborted_records: int = 0
    live_records: int = 0
    examples: dict[str, list[Any]] = field(default_factory=lambda: defaultdict(list))

    @property
    def counters(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in COUNTERS}

    @property
    def ok(self) -> bool:
        return not any(self.counters.values())

    def note(self, counter: str, example: Any, n: int = 1) -> None:
        setattr(self, counter, getattr(self, counter) + n)
        if len(self.examples[counter]) < 5:
            self.examples[counter].append(example)

    def __str__(self) -> str:
        figures = (
            f"expected deliveries {self.expected_deliveries}, deliveries {self.deliveries}, "
            f"dlq {self.dlq_records}, audit {self.audit_entries} "
            f"(policy_loaded {self.policy_loaded}), attempts committed {self.attempts_committed} "
            f"/ aborted {self.attempts_aborted} ({self.aborted_records} aborted records), "
            f"live reader {self.live_records}"
        )
        counters = ", ".join(f"{k}={v}" for k, v in self.counters.items())
        examples = "; ".join(f"{k}: {v}" for k, v in self.examples.items() if v)
        return f"[{counters}] {figures}" + (f" examples: {examples}" if examples else "")


def check(
    bootstrap: str,
    topics: Topics,
    codec: AvroCodec,
    agreements: AgreementSet,
    expected: Expected,
    live: LiveReader | None = None,
) -> Report:
    """Read every output topic from offset 0 and compare with ``expected``."""
    names = output_topics(topics, agreements)
    committed = read_topics(bootstrap, names, "read_committed")
    uncommitted = read_topics(bootstrap, names, "read_uncommitted")

    def decode(rec: Rec) -> Delivery:
        _, record = codec.decode(rec.value, rec.topic, rec.partition, rec.offset)
        envelope = record["envelope"]
        return Delivery(
            event_id=envelope["event_id"],
            event_type=envelope["event_type"],
            disclosed_to=(record.get("disclosure") or {}).get("audience"),
            retracted=record.get("retracted_event_id"),
        )

    return compare(committed, uncommitted, expected, topics, decode,
                   live.seen if live is not None else None)  # fmt: skip


@dataclass(frozen=True)
class Delivery:
    """What the checker needs of a delivered record."""

    event_id: str
    event_type: str
    disclosed_to: str | None
    retracted: str | None = None


def compare(
    committed: Sequence[Rec],
    uncommitted: Sequence[Rec],
    expected: Expected,
    topics: Topics,
    decode: Callable[[Rec], Delivery],
    live_seen: Mapping[Position, str] | None = None,
) -> Report:
    """The checker proper: what the output topics hold (``committed``: read_committed from
    offset 0; ``uncommitted``: read_uncommitted; ``live_seen``: what the concurrent reader saw,
    as position -> digest) against ``expected``."""
    report = Report(expected_deliveries=len(expected.deliveries))
    if expected.unknown_inputs:
        report.note("unexpected", f"{expected.unknown_inputs} unknown ingest records",
                    expected.unknown_inputs)  # fmt: skip

    # -- attempts and offsets ----------------------------------------------------------------
    by_position = {(r.topic, r.partition, r.offset): r for r in committed}
    all_by_attempt: dict[str, set[Position]] = defaultdict(set)
    for rec in uncommitted:
        where = (rec.topic, rec.partition, rec.offset)
        if rec.attempt:
            all_by_attempt[rec.attempt].add(where)
        seen = by_position.get(where)
        if seen is not None and _digest(seen.key, seen.value, seen.headers) != _digest(
            rec.key, rec.value, rec.headers
        ):
            report.note("inconsistent_offsets", ("uncommitted", where))
    uncommitted_positions = {(r.topic, r.partition, r.offset) for r in uncommitted}
    for where in by_position.keys() - uncommitted_positions:
        report.note("inconsistent_offsets", ("committed only", where))
    committed_by_attempt: dict[str, set[Position]] = defaultdict(set)
    for rec in committed:
        if rec.attempt:
            committed_by_attempt[rec.attempt].add((rec.topic, rec.partition, rec.offset))
    aborted = {
        attempt
        for attempt, where in all_by_attempt.items()
        if where - committed_by_attempt.get(attempt, set())
    }
    report.attempts_aborted = len(aborted)
    report.attempts_committed = len(committed_by_attempt.keys() - aborted)
    report.aborted_records = sum(
        len(all_by_attempt[a] - committed_by_attempt.get(a, set())) for a in aborted
    )
    for attempt in aborted:
        visible = committed_by_attempt.get(attempt, set())
        if visible:
            report.note("aborted_reads", (attempt, sorted(visible)[:3]), len(visible))
    if live_seen is not None:
        report.live_records = len(live_seen)
        for where, digest in live_seen.items():
            rec = by_position.get(where)
            if rec is None:
                report.note("aborted_reads", ("live reader saw", where))
            elif _digest(rec.key, rec.value, rec.headers) != digest:
                report.note("inconsistent_offsets", ("live", where))

    # -- what was produced, per input item -----------------------------------------------------
    present: Counter[tuple[str, ...]] = Counter()
    deliveries: Counter[Key] = Counter()
    dlq_seen: Counter[Position] = Counter()
    audit_kinds = {"published", "decided", "delivered", "rejected"}
    audit_topic = topics.audit
    for rec in committed:
        if rec.topic == audit_topic:
            report.audit_entries += 1
            entry = json.loads(rec.value or b"{}")
            kind = entry.get("kind")
            if kind == "policy_loaded":
                report.policy_loaded += 1
                continue
            if kind not in audit_kinds:
                report.note("audit_mismatch", ("unexpected kind", kind))
                continue
            if kind == "rejected":
                details = entry.get("details") or {}
                item = ("rejected", details.get("topic", ""), str(details.get("partition")),
                        str(details.get("offset")))  # fmt: skip
            elif kind == "published":
                item = ("published", entry.get("event_id", ""))
            else:
                item = (kind, entry.get("event_id", ""), entry.get("audience", ""))
            present[item] += 1
        elif rec.topic.startswith(f"{topics.prefix}deliver."):
            audience = rec.topic.removeprefix(f"{topics.prefix}deliver.")
            delivery = decode(rec)
            if delivery.event_type == "delivery.retracted":
                report.note("unexpected", ("retraction", delivery.retracted, audience))
                continue
            key = (delivery.event_id, audience)
            deliveries[key] += 1
            present[("delivery", *key)] += 1
            if delivery.disclosed_to != audience:
                report.note("unexpected", ("disclosure audience", key, delivery.disclosed_to))
        elif rec.topic.endswith(".dlq"):
            report.dlq_records += 1
            position = (rec.header("hub.error.topic") or "",
                        int(rec.header("hub.error.partition") or -1),
                        int(rec.header("hub.error.offset") or -1))  # fmt: skip
            dlq_seen[position] += 1
            present[("dlq", *map(str, position))] += 1
            want = expected.dlq.get(position)
            if want is None:
                report.note("dlq_mismatch", ("unexpected dlq record", position,
                                             rec.header("hub.error.reason")))  # fmt: skip
            elif want[1] != rec.header("hub.error.reason") or want[2] != rec.topic:
                got = (rec.header("hub.error.reason"), rec.topic)
                report.note("dlq_mismatch", ("wrong reason or topic", position, want, got))
    report.deliveries = sum(deliveries.values())

    # -- compare ------------------------------------------------------------------------------
    for key in expected.deliveries:
        if deliveries[key] == 0:
            report.note("missing", key)
        elif deliveries[key] > 1:
            report.note("duplicated", (key, deliveries[key]), deliveries[key] - 1)
    for key in deliveries.keys() - expected.deliveries:
        report.note("unexpected", ("delivery", key), deliveries[key])
    for position in expected.dlq:
        if dlq_seen[position] == 0:
            report.note("dlq_mismatch", ("missing dlq record", position, expected.dlq[position]))
        elif dlq_seen[position] > 1:
            report.note("dlq_mismatch", ("duplicate dlq record", position), dlq_seen[position] - 1)
    wanted_audit: set[tuple[str, ...]] = set()
    for items in expected.items.values():
        wanted_audit |= {i for i in items if i[0] in audit_kinds}
    for item in wanted_audit:
        if present[item] != 1:
            report.note("audit_mismatch", (item, present[item]), max(1, abs(present[item] - 1)))
    for item, count in present.items():
        if item[0] in audit_kinds and item not in wanted_audit:
            report.note("audit_mismatch", ("unexpected", item), count)
    for input_id, items in expected.items.items():
        got = sum(1 for i in items if present[i] > 0)
        if 0 < got < len(items):
            report.note("torn", (input_id, f"{got}/{len(items)}",
                                 sorted(i for i in items if not present[i])[:3]))  # fmt: skip
    return report


def audiences_of_mix(agreements: AgreementSet) -> list[str]:
    """The audiences some clause names for the workload's event types and sources."""
    out = set()
    for (event_type, source, audience), _ in agreements.entries():
        if source in MIX and event_type in MIX[source]:
            out.add(audience)
    return sorted(out)
