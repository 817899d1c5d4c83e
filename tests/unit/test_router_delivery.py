"""How the router encodes and produces deliveries, without Kafka:

- a delivery is encoded with ``AvroCodec.encode_derived``, which validates only what differs
  from the decoded (so already validated) event: the bytes are the ones the fully validating
  ``encode`` gives, and a transform that produces an invalid value is still refused, naming the
  field;
- a delivery larger than the router producer's ``message.max.bytes`` (a transform can enlarge
  an event) goes to the source agency's DLQ with a ``rejected`` audit entry, instead of
  aborting its batch on every attempt (a stuck partition); the event's other deliveries go ahead.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from typing import Any

import pytest

import hub.router
from hub.domain.errors import ValidationError
from hub.policy import MemoryState, PseudonymKeys
from hub.ports import InRecord, OutRecord
from hub.router import Router, RouterConfig
from hub.serde.codec import AvroCodec
from hub.topics import Topics
from tests.factory import EventFactory
from tests.golden.policy.builder import EventBuilder
from tests.unit.test_router_process import (
    AGREEMENTS,
    CATALOGUE,
    JURISDICTIONS,
    DictSeen,
    MemoryRegistry,
)

PEOPLE = {
    "kim": {
        "identifiers": {"pnc_id": "13/0000007K"},
        "local_ids": {
            "police": {"police_nominal_id": "MP-7"},
            "hmp_liverpool": {"prison_number": "A0007KM"},
            "probation_crc": {"probation_case_ref": "CRC-7"},
        },
    }
}
TOPICS = Topics()


@pytest.fixture(scope="module")
def codec() -> AvroCodec:
    codec = AvroCodec(CATALOGUE, MemoryRegistry())
    codec.register_all()
    return codec


def _router(codec: AvroCodec, **config: Any) -> Router:
    return Router(
        topics=TOPICS, codec=codec, agreements=AGREEMENTS, state=MemoryState(CATALOGUE),
        keys=PseudonymKeys(b"unit-test-master-key-0123456789"), seen=DictSeen(),
        config=RouterConfig(**config),
    )  # fmt: skip


def _build(codec: AvroCodec, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    payload = {**EventFactory(CATALOGUE, seed=7).payload(spec["type"]), **spec.get("payload", {})}
    builder = EventBuilder(CATALOGUE, JURISDICTIONS, PEOPLE, namespace="delivery")
    return builder.build(name, {**spec, "payload": payload})


def _release(codec: AvroCodec, name: str, line1: str) -> dict[str, Any]:
    """A release from HMP Liverpool that police, police.iom, probation_crc and (as a cohort
    member) kmbc receive; only police, police.iom and probation_crc receive the address."""
    address = {"line1": line1, "line2": None, "town": "Kirkby", "postcode": "L32 1XY",
               "area": "Knowsley", "country": "GB", "kind": "home"}  # fmt: skip
    return _build(codec, name, {
        "type": "custody.released", "from": "hmp_liverpool", "subject": "kim",
        "at": "2015-02-05T10:00:00Z",
        "payload": {"supervising_body": "probation_crc", "destination_address": address},
    })  # fmt: skip


def _cohort(codec: AvroCodec) -> dict[str, Any]:
    return _build(codec, "cohort", {
        "type": "iom.cohort_entered", "from": "police", "subject": "kim",
        "at": "2015-01-05T10:00:00Z",
        "payload": {"cohort": "knowsley_iom", "entry_date": "2015-01-05"},
    })  # fmt: skip


def _route(router: Router, codec: AvroCodec, events: list[dict[str, Any]]) -> list[OutRecord]:
    outputs: list[OutRecord] = []
    for offset, event in enumerate(events):
        topic = TOPICS.ingest(event["envelope"]["source_agency"])
        outputs += router.process(InRecord(topic, 0, offset, b"k", codec.encode(event)))
    return outputs


def _entries(outputs: list[OutRecord], kind: str) -> list[dict[str, Any]]:
    found = [json.loads(o.value) for o in outputs if o.topic == TOPICS.audit]
    return [e for e in found if e["kind"] == kind]


# -- encode_derived -----------------------------------------------------------------------------


def test_deliveries_are_the_bytes_the_fully_validating_encoder_gives(codec) -> None:
    router = _router(codec)
    outputs = _route(router, codec, [_cohort(codec), _release(codec, "release", "1 Ash Road")])
    deliveries = [o for o in outputs if o.topic.startswith("deliver.")]
    topics = {o.topic for o in deliveries}
    assert {"deliver.kmbc", "deliver.police", "deliver.probation_crc"} <= topics
    for out in deliveries:
        _, record = codec.decode(out.value)
        assert codec.encode(record) == out.value


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda r: r.update(released_at="2015-02"), "released_at"),  # a generalise bug
        (lambda r: r["envelope"]["subject"].update(local_id=None), "envelope.subject.local_id"),
        (lambda r: r["destination_address"].update(area=7), "destination_address.area"),
        (lambda r: r["envelope"]["subject"]["identifiers"].append({"scheme": "pnc_id"}),
         "envelope.subject.identifiers[1].value"),
        (lambda r: r.update(unexpected="x"), "unexpected"),
        (lambda r: r["envelope"].pop("source_system"), "envelope.source_system"),
    ],
)  # fmt: skip
def test_a_changed_field_is_validated_and_named(codec, change: Any, field: str) -> None:
    _, source = codec.decode(codec.encode(_release(codec, "source", "1 Ash Road")))
    derived = copy.deepcopy(source)
    change(derived)
    with pytest.raises(ValidationError) as raised:
        codec.encode_derived(derived, source)
    assert raised.value.field == field, str(raised.value)


def test_an_invalid_transform_is_still_refused_by_the_router(codec, monkeypatch) -> None:
    """A transform that produced an invalid value (a date turned into text) never reaches a
    deliver topic: encoding the delivery raises, naming the field."""
    applied = hub.router.apply

    def broken(event: Any, decision: Any, keys: Any, state: Any) -> dict[str, Any]:
        record = applied(event, decision, keys, state)
        if record.get("released_at") is not None:
            record["released_at"] = dt.date(2015, 2, 1).isoformat()
        return record

    monkeypatch.setattr(hub.router, "apply", broken)
    router = _router(codec)
    _route(router, codec, [_cohort(codec)])
    with pytest.raises(ValidationError, match="released_at"):
        _route(router, codec, [_release(codec, "release", "1 Ash Road")])


# -- oversize deliveries ------------------------------------------------------------------------


def test_a_delivery_too_large_for_the_producer_goes_to_the_dlq_and_the_rest_are_delivered(
    codec,
) -> None:
    limit = 8_000
    router = _router(codec, max_record_bytes=limit)
    big = _release(codec, "big", "x" * 9_000)
    outputs = _route(router, codec, [_cohort(codec), big])
    event_id = big["envelope"]["event_id"]
    dlq = [o for o in outputs if o.topic == TOPICS.dlq("hmp_liverpool")]
    too_big = {"police", "police.iom", "probation_crc"}  # the ones that receive the address
    assert {dict(o.headers)["hub.error.audience"].decode() for o in dlq} == too_big
    for out in dlq:
        headers = dict(out.headers)
        assert headers["hub.error.reason"] == b"delivery_oversize"
        assert headers["hub.error.event_id"].decode() == event_id
        assert headers["hub.error.topic"].decode() == TOPICS.ingest("hmp_liverpool")
        assert int(headers["hub.error.value_bytes"]) > limit
        assert out.value == b""  # not copied: the producer would refuse it as well
    rejected = _entries(outputs, "rejected")
    assert {(e["event_id"], e["audience"], e["reason"]) for e in rejected} == {
        (event_id, a, "delivery_oversize") for a in too_big
    }
    delivered = {e["audience"] for e in _entries(outputs, "delivered") if e["event_id"] == event_id}
    assert delivered == {"kmbc"}
    assert router.state.deliveries_of(event_id) == ["kmbc"]  # nothing to retract elsewhere
    assert all(len(o.value) + len(o.key or b"") < limit for o in outputs)
    assert router.stats.undeliverable == 3 and router.stats.rejected == 0
