"""Router.process and Router.run_batch without Kafka, for the bugs the IN-1..IN-6 work found:

- records that escaped as exceptions, so the batch aborted and was read again forever (a stuck
  partition): a body framed with another event type's schema id (found by the IN-1 fuzz), a
  source_system with a NUL (fuzz), a correction nobody may receive, a correction reason too long
  or with a NUL (the audit entry's rules);
- records that changed the policy state although they went to the DLQ (unroutable events), and
  a jurisdiction mismatch reported as ``compartment``;
- a "correction" by one agency of another agency's event, which voided the other's facts;
- an aborted batch whose rejections counted twice towards a DLQ storm.
"""

from __future__ import annotations

import datetime as dt
import json
import struct
import uuid
from typing import Any

import pytest

from hub.domain.errors import SerdeError
from hub.policy import MemoryState, PseudonymKeys, load_agreements
from hub.ports import InRecord
from hub.router import Router, RouterConfig
from hub.serde.catalogue import Catalogue
from hub.serde.codec import AvroCodec
from hub.topics import Topics
from tests.factory import EventFactory
from tests.golden.policy.builder import EventBuilder

CATALOGUE = Catalogue.load()
AGREEMENTS = load_agreements(None, CATALOGUE)
JURISDICTIONS = {a.id: a.jurisdiction for a in AGREEMENTS.agencies()}
PEOPLE = {
    "dana": {
        "identifiers": {"pnc_id": "12/0000001D"},
        "local_ids": {
            "police": {"police_nominal_id": "MP-1"},
            "probation_nps": {"probation_case_ref": "NPS-1"},
            "mals": {"mals_client_id": "MALS-1"},
        },
    }
}


class MemoryRegistry:
    def __init__(self) -> None:
        self.by_id: dict[int, str] = {}

    def register(self, subject: str, schema: str) -> int:
        for schema_id, text in self.by_id.items():
            if text == schema:
                return schema_id
        self.by_id[len(self.by_id) + 1] = schema
        return len(self.by_id)

    def schema_by_id(self, schema_id: int) -> str:
        if schema_id not in self.by_id:
            raise SerdeError(f"unknown schema id {schema_id}", reason="unknown_schema")
        return self.by_id[schema_id]


class DictSeen:
    def __init__(self) -> None:
        self.rows: dict[str, tuple[str, str, int, int]] = {}

    def get(self, event_id: str) -> tuple[str, str, int, int] | None:
        return self.rows.get(event_id)

    def put(self, event_id: str, content_hash: str, topic: str, partition: int,
            offset: int) -> None:  # fmt: skip
        self.rows[event_id] = (content_hash, topic, partition, offset)


@pytest.fixture
def codec() -> AvroCodec:
    codec = AvroCodec(CATALOGUE, MemoryRegistry())
    codec.register_all()
    return codec


@pytest.fixture
def router(codec: AvroCodec) -> Router:
    return Router(
        topics=Topics(), codec=codec, agreements=AGREEMENTS, state=MemoryState(CATALOGUE),
        keys=PseudonymKeys(b"unit-test-master-key-0123456789"), seen=DictSeen(),
        config=RouterConfig(storm_threshold=1000),
    )  # fmt: skip


def _build(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A valid event: ``spec`` in the golden cases' form, its payload completed with sample
    values for the fields it does not give (required ones included)."""
    payload = {**EventFactory(CATALOGUE, seed=5).payload(spec["type"]), **spec.get("payload", {})}
    builder = EventBuilder(CATALOGUE, JURISDICTIONS, PEOPLE, namespace="unit")
    return builder.build(name, {**spec, "payload": payload})


_offsets = iter(range(10**9))


def _process(router: Router, codec: AvroCodec, event: dict[str, Any], agency: str | None = None,
             value: bytes | None = None) -> list[Any]:  # fmt: skip
    """Route one event as read from its agency's ingest topic (no Publisher checks: a partner's
    client need not run them)."""
    agency = agency or event["envelope"]["source_agency"]
    if value is None:
        value = codec.encode(event)
    record = InRecord(Topics().ingest(agency), 0, next(_offsets), b"k", value)
    return router.process(record)


def _dlq_reason(outputs: list[Any]) -> str | None:
    for out in outputs:
        if out.topic.endswith(".dlq"):
            return dict(out.headers)["hub.error.reason"].decode()
    return None


def _audit(outputs: list[Any], kind: str) -> list[dict[str, Any]]:
    entries = [json.loads(o.value) for o in outputs if o.topic == Topics().audit]
    return [e for e in entries if e["kind"] == kind]


def _unshared_type(agency: str) -> str:
    """An event type ``agency`` publishes that no clause shares with anyone."""
    for event_type in CATALOGUE.event_types():
        if event_type == "delivery.retracted":
            continue
        if not any(AGREEMENTS.candidates(event_type, agency, a) for a in AGREEMENTS.audiences()):
            return event_type
    raise AssertionError(f"every event type of {agency} is shared")


def test_a_correction_nobody_may_receive_is_routed_not_a_poison_pill(router, codec) -> None:
    """Was: the ``corrected`` entry had ``recipients: ""``, which an audit entry refuses, so the
    batch aborted and was re-read forever."""
    event_type = _unshared_type("police")
    spec = {"type": event_type, "from": "police", "subject": "dana", "at": "2015-01-05T10:00:00Z"}
    original = _build("original", spec)
    correction = _build("correction", {**spec, "supersedes": original["envelope"]["event_id"],
                                       "correction_reason": "typo"})  # fmt: skip
    assert _dlq_reason(_process(router, codec, original)) is None
    outputs = _process(router, codec, correction)
    assert _dlq_reason(outputs) is None
    (corrected,) = _audit(outputs, "corrected")
    assert corrected["details"]["recipients"] == "-"
    assert len(_audit(outputs, "published")) == 1


@pytest.mark.parametrize("why", ["typo\x00", "x" * 2500])
def test_a_correction_reason_the_audit_trail_cannot_hold_is_written_escaped(
    router, codec, why: str
) -> None:
    """The correction reason is partner free text; it becomes the ``reason`` of the
    ``corrected`` entry, which refuses NUL and more than 2,000 characters. Was: a batch that
    aborted and was re-read forever."""
    spec = {"type": "iom.cohort_entered", "from": "police", "subject": "dana",
            "at": "2015-01-05T10:00:00Z"}  # fmt: skip
    original = _build("original", spec)
    correction = _build("correction", {**spec, "supersedes": original["envelope"]["event_id"],
                                       "correction_reason": why})  # fmt: skip
    assert _dlq_reason(_process(router, codec, original)) is None
    outputs = _process(router, codec, correction)
    assert _dlq_reason(outputs) is None
    (corrected,) = _audit(outputs, "corrected")
    assert "\x00" not in corrected["reason"] and len(corrected["reason"]) <= 2000


@pytest.mark.parametrize("source_system", ["sys\x00tem", "s" * 201])
def test_a_source_system_the_audit_trail_cannot_hold_goes_to_the_dlq(
    router, codec, source_system: str
) -> None:
    """The source system is the actor of the ``published`` entry (at most 200 characters, no
    NUL): an event whose source system breaks that is rejected, not a batch that never commits."""
    event = _build("cohort", {
        "type": "iom.cohort_entered", "from": "police", "subject": "dana",
        "at": "2015-01-05T10:00:00Z",
        "payload": {"cohort": "knowsley_iom", "borough": "Knowsley",
                    "selection_method": "matrix_score", "entry_date": "2015-01-05"},
    })  # fmt: skip
    event["envelope"]["source_system"] = source_system
    assert _dlq_reason(_process(router, codec, event)) == "invalid_envelope"
    assert router.state.position(event["envelope"]["event_id"]) is None


def test_a_jurisdiction_mismatch_has_its_own_reason_and_no_effect_on_state(router, codec) -> None:
    """Was: rejected as ``compartment`` after the event had already been applied to the policy
    state, so an event in the DLQ still put its subject into a cohort."""
    spec = {
        "type": "iom.cohort_entered", "from": "police", "subject": "dana",
        "at": "2015-01-05T10:00:00Z",
        "payload": {"cohort": "knowsley_iom", "borough": "Knowsley",
                    "selection_method": "matrix_score", "entry_date": "2015-01-05"},
    }  # fmt: skip
    event = _build("cohort", {**spec, "jurisdiction": "NL"})
    assert _dlq_reason(_process(router, codec, event)) == "jurisdiction_mismatch"
    assert router.state.position(event["envelope"]["event_id"]) is None


def test_an_unroutable_compartment_event_has_no_effect_on_state(router, codec) -> None:
    event = _build("cohort", {
        "type": "iom.cohort_entered", "from": "police", "subject": "dana",
        "at": "2015-01-05T10:00:00Z", "sensitivity": "restricted-programme",
        "payload": {"cohort": "knowsley_iom", "borough": "Knowsley",
                    "selection_method": "matrix_score", "entry_date": "2015-01-05"},
    })  # fmt: skip
    outputs = _process(router, codec, event)
    assert _dlq_reason(outputs) == "compartment"
    assert router.state.position(event["envelope"]["event_id"]) is None
    subject = router.state.subject_of(event)
    at = dt.datetime(2015, 2, 1, tzinfo=dt.UTC)
    assert not router.state.in_cohort(subject, at)


def test_a_body_framed_with_another_event_types_schema_id_is_refused(router, codec) -> None:
    """Type confusion: a referral.declined body decodes under LcpWithdrawn's schema (found by
    the fuzz); its envelope then names a type whose fields the record lacks, and the policy
    engine raised KeyError. Now every such frame is a SerdeError, most as event_type_mismatch."""
    event = _build("declined", {
        "type": "referral.declined", "from": "mals", "subject": "dana",
        "at": "2015-01-05T10:00:00Z",
        "payload": {"referral_id": "R-1", "declined_on": "2015-01-05", "reason": "other"},
    })  # fmt: skip
    value = codec.encode(event)
    reasons: dict[str, int] = {}
    for name in CATALOGUE.names():
        if name == "hub.events.ReferralDeclined":
            continue
        framed = value[:1] + struct.pack(">I", codec.schema_id(name)) + value[5:]
        with pytest.raises(SerdeError) as caught:
            codec.decode(framed, "ingest.mals", 0, 1)
        reasons[caught.value.reason] = reasons.get(caught.value.reason, 0) + 1
        outputs = _process(router, codec, event, value=framed)
        assert _dlq_reason(outputs) == caught.value.reason
    assert reasons.get("event_type_mismatch", 0) >= 1, reasons


def test_every_rejection_leaves_the_seen_store_alone_so_a_fixed_resend_is_routed(
    router, codec
) -> None:
    """A rejected event_id is not remembered: the partner's corrected re-send (same id, other
    bytes) is routed, not refused as a conflicting duplicate."""
    spec = {
        "type": "iom.cohort_entered", "from": "police", "subject": "dana",
        "at": "2015-01-05T10:00:00Z",
        "payload": {"cohort": "knowsley_iom", "borough": "Knowsley",
                    "selection_method": "matrix_score", "entry_date": "2015-01-05"},
    }  # fmt: skip
    bad = _build("cohort", {**spec, "jurisdiction": "NL"})
    good = _build("cohort", spec)
    assert bad["envelope"]["event_id"] == good["envelope"]["event_id"]
    assert _dlq_reason(_process(router, codec, bad)) == "jurisdiction_mismatch"
    assert _dlq_reason(_process(router, codec, good)) is None
    assert router.state.position(good["envelope"]["event_id"]) is not None
    assert uuid.UUID(good["envelope"]["event_id"])


class FlakyBus:
    """A bus whose first ``commit`` is aborted (as a commit that needs an abort is): the batch
    is then read again from the committed offsets."""

    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.commits = 0
        self.paused: list[tuple[str, int]] = []

    def begin(self) -> None:
        self.pending: list[Any] = []

    def send(self, record: Any) -> None:
        self.pending.append(record)

    def commit(self, records: Any) -> None:
        self.commits += 1
        if self.commits == 1:
            self.abort("first commit fails")
        self.sent += self.pending

    def abort(self, why: str) -> None:
        from hub.domain.errors import TransactionAborted

        raise TransactionAborted(why)

    def pause(self, topic: str, partition: int) -> None:
        self.paused.append((topic, partition))


def test_an_aborted_batch_does_not_count_its_rejections_twice_towards_a_storm(codec) -> None:
    """Was: the consecutive-rejection counters kept the aborted attempt's counts, so re-reading
    a batch of 30 bad records with a threshold of 50 paused the partition as a DLQ storm."""
    from hub.domain.errors import TransactionAborted

    router = Router(
        topics=Topics(), codec=codec, agreements=AGREEMENTS, state=MemoryState(CATALOGUE),
        keys=PseudonymKeys(b"unit-test-master-key-0123456789"), seen=DictSeen(),
        config=RouterConfig(storm_threshold=50),
    )  # fmt: skip
    records = [InRecord(Topics().ingest("police"), 0, i, b"k", b"\x07bad") for i in range(30)]
    bus = FlakyBus()
    with pytest.raises(TransactionAborted):
        router.run_batch(bus, records)
    router.run_batch(bus, records)  # the replay after the rewind
    assert not bus.paused and router.stats.storms == 0
    assert len([r for r in bus.sent if r.topic.endswith(".dlq")]) == 30


def test_a_correction_of_another_agencys_event_is_refused(router, codec) -> None:
    """Was: a police event naming a MALS consent.given as the event it supersedes voided that
    consent in the policy state (and would retract what was delivered under it): one partner
    could withdraw another's facts."""
    consent = _build("consent", {
        "type": "consent.given", "from": "mals", "subject": "dana", "at": "2015-01-05T10:00:00Z",
        "payload": {"consent_id": "C1", "scopes": ["share_progress_with_om"],
                    "given_on": "2015-01-05", "captured_by": "x", "method": "written"},
    })  # fmt: skip
    assert _dlq_reason(_process(router, codec, consent)) is None
    subject = router.state.subject_of(consent)
    at = dt.datetime(2015, 2, 1, tzinfo=dt.UTC)
    assert router.state.consent_in_force(subject, "share_progress_with_om", at)
    forged = _build("forged", {
        "type": "iom.cohort_entered", "from": "police", "subject": "dana",
        "at": "2015-01-06T10:00:00Z", "supersedes": consent["envelope"]["event_id"],
        "correction_reason": "not really",
    })  # fmt: skip
    assert _dlq_reason(_process(router, codec, forged)) == "forged_correction"
    assert router.state.consent_in_force(subject, "share_progress_with_om", at)
    # the agency's own correction is routed
    own = _build("own", {
        "type": "consent.given", "from": "mals", "subject": "dana", "at": "2015-01-05T10:00:00Z",
        "supersedes": consent["envelope"]["event_id"], "correction_reason": "typo in scopes",
        "payload": {"consent_id": "C1", "scopes": ["share_progress_with_iom"],
                    "given_on": "2015-01-05", "captured_by": "x", "method": "written"},
    })  # fmt: skip
    assert _dlq_reason(_process(router, codec, own)) is None
    assert not router.state.consent_in_force(subject, "share_progress_with_om", at)
