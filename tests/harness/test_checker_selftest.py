"""The checker checks itself: each counter of RELIABILITY.md B.0 fires on the fault it names, and a
clean run passes (no broker; synthetic output topics)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from hub.topics import Topics
from tests.harness.checker import Delivery, Expected, _digest, compare
from tests.harness.workload import Rec

T = Topics(prefix="p.")
INGEST = T.ingest("hmp_liverpool")
DEFECT_AT = (INGEST, 0, 5)


def _expected() -> Expected:
    e = Expected()
    e.published = {"A"}
    e.decided = {("A", "police"), ("A", "probation_crc"), ("A", "kmbc")}
    e.deliveries = {("A", "police"), ("A", "probation_crc")}
    e.dlq = {DEFECT_AT: ("defect-1", "bad_magic", T.dlq("hmp_liverpool"))}
    e.items = {
        "A": {
            ("published", "A"),
            *(("decided", "A", a) for a in ("police", "probation_crc", "kmbc")),
            *(("delivered", "A", a) for a in ("police", "probation_crc")),
            *(("delivery", "A", a) for a in ("police", "probation_crc")),
        },
        "defect-1": {("dlq", INGEST, "0", "5"), ("rejected", INGEST, "0", "5")},
    }
    return e


class Log:
    """Output topics being written: records with offsets per partition and attempt headers."""

    def __init__(self) -> None:
        self.records: list[Rec] = []
        self._next: dict[tuple[str, int], int] = {}

    def add(self, topic: str, value: bytes, attempt: str = "ok", headers=()) -> Rec:  # type: ignore[no-untyped-def]
        offset = self._next.get((topic, 0), 0)
        self._next[(topic, 0)] = offset + 2  # room for a control record
        rec = Rec(topic, 0, offset, None, value, (("x-hub-attempt", attempt.encode()), *headers))
        self.records.append(rec)
        return rec

    def audit(self, kind: str, attempt: str = "ok", **fields: object) -> Rec:
        return self.add(T.audit, json.dumps({"kind": kind, **fields}).encode(), attempt)

    def deliver(self, event_id: str, audience: str, attempt: str = "ok") -> Rec:
        value = json.dumps({"event_id": event_id, "to": audience}).encode()
        return self.add(T.deliver(audience), value, attempt)

    def clean(self) -> Log:
        self.audit("policy_loaded")
        self.audit("published", event_id="A")
        for audience in ("police", "probation_crc", "kmbc"):
            self.audit("decided", event_id="A", audience=audience)
        for audience in ("police", "probation_crc"):
            self.deliver("A", audience)
            self.audit("delivered", event_id="A", audience=audience)
        self.dlq("bad_magic")
        self.audit("rejected", details={"topic": INGEST, "partition": "0", "offset": "5"})
        return self

    def dlq(self, reason: str, attempt: str = "ok") -> Rec:
        headers = (
            ("hub.error.reason", reason.encode()),
            ("hub.error.topic", INGEST.encode()),
            ("hub.error.partition", b"0"),
            ("hub.error.offset", b"5"),
        )
        return self.add(T.dlq("hmp_liverpool"), b"\x07junk", attempt, headers)


def _decode(rec: Rec) -> Delivery:
    body = json.loads(rec.value or b"{}")
    return Delivery(body["event_id"], "custody.released", body["to"])


def _run(committed: list[Rec], uncommitted: list[Rec] | None = None, live=None):  # type: ignore[no-untyped-def]
    return compare(committed, uncommitted or committed, _expected(), T, _decode, live)


def test_a_clean_run_passes() -> None:
    log = Log().clean()
    report = _run(log.records)
    assert report.ok, report
    assert report.deliveries == 2 and report.dlq_records == 1 and report.policy_loaded == 1


def test_a_lost_delivery_is_missing_and_torn() -> None:
    log = Log().clean()
    records = [r for r in log.records if r.topic != T.deliver("probation_crc")]
    report = _run(records)
    assert report.missing == 1 and report.torn == 1, report
    assert report.audit_mismatch == 0 and report.duplicated == 0


def test_a_second_copy_is_a_duplicate() -> None:
    log = Log().clean()
    log.deliver("A", "police", attempt="again")
    report = _run(log.records)
    assert {k: v for k, v in report.counters.items() if v} == {"duplicated": 1}, report


def test_a_record_of_an_aborted_attempt_seen_by_read_committed_is_an_aborted_read() -> None:
    log = Log().clean()
    visible = log.deliver("B", "police", attempt="dead")
    hidden = log.audit("delivered", attempt="dead", event_id="B", audience="police")
    committed = [r for r in log.records if r is not hidden]
    report = _run(committed, log.records)
    assert report.aborted_reads == 1, report
    assert report.attempts_aborted == 1
    # an attempt that aborted whole, and nobody read, is fine
    clean = [r for r in log.records if r not in (visible, hidden)]
    report = _run(clean, log.records)
    assert report.aborted_reads == 0 and report.attempts_aborted == 1 and report.ok, report


def test_the_live_reader_seeing_an_aborted_record_or_other_bytes() -> None:
    log = Log().clean()
    first = log.records[1]
    live = {(r.topic, r.partition, r.offset): _digest(r.key, r.value, r.headers)
            for r in log.records}  # fmt: skip
    live[(first.topic, first.partition, first.offset)] = "something else"
    live[(T.audit, 0, 999)] = "an aborted record"
    report = _run(log.records, live=live)
    assert report.inconsistent_offsets == 1 and report.aborted_reads == 1, report


def test_two_reads_disagreeing_on_an_offset_are_inconsistent() -> None:
    log = Log().clean()
    other = [replace(r, value=b"other") if r.topic == T.audit and r.offset == 0 else r
             for r in log.records]  # fmt: skip
    assert _run(log.records, other).inconsistent_offsets == 1


@pytest.mark.parametrize(
    ("change", "counter"),
    [
        ("wrong_reason", "dlq_mismatch"),
        ("no_dlq", "dlq_mismatch"),
        ("extra_decided", "audit_mismatch"),
        ("no_decided", "audit_mismatch"),
        ("unexpected_delivery", "unexpected"),
    ],
)
def test_dlq_audit_and_unexpected(change: str, counter: str) -> None:
    log = Log()
    log.audit("published", event_id="A")
    for audience in ("police", "probation_crc", "kmbc"):
        if change == "no_decided" and audience == "kmbc":
            continue
        log.audit("decided", event_id="A", audience=audience)
    if change == "extra_decided":
        log.audit("decided", event_id="A", audience="mals")
    for audience in ("police", "probation_crc"):
        log.deliver("A", audience)
        log.audit("delivered", event_id="A", audience=audience)
    if change == "unexpected_delivery":
        log.deliver("A", "mals")
    if change != "no_dlq":
        log.dlq("truncated" if change == "wrong_reason" else "bad_magic")
    log.audit("rejected", details={"topic": INGEST, "partition": "0", "offset": "5"})
    report = _run(log.records)
    assert getattr(report, counter) >= 1, report
    assert not report.ok
