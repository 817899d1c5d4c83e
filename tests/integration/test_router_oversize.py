"""A delivery larger than the router producer's message.max.bytes, through the real broker.

A transform can make a delivery larger than the event it comes from (a pseudonym is 64
characters). Such a record is refused by the producer, so the batch aborted and was read again
forever: its partition was stuck. Here the router's producer is given a small message.max.bytes
(``HUB_ROUTER__MAX_RECORD_BYTES``, which sets it) and an event whose address alone is over it:
the audiences that would receive the address get a DLQ record and a ``rejected`` entry instead,
the others get the event, the event after it on the same partition is routed, no batch aborts
and the router's group commits everything.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.golden.policy.builder import EventBuilder
from tests.hubtest import run_router_until_idle
from tests.integration.test_router_harness import Hub, Outputs
from tests.unit.test_router_delivery import PEOPLE
from tests.unit.test_router_process import JURISDICTIONS

pytestmark = pytest.mark.kafka
LIMIT = 8_192


def _events(codec: Any) -> list[dict[str, Any]]:
    builder = EventBuilder(codec.catalogue, JURISDICTIONS, PEOPLE, namespace="oversize")

    def release(name: str, line1: str, at: str) -> dict[str, Any]:
        address = {"line1": line1, "town": "Kirkby", "postcode": "L32 1XY", "area": "Knowsley",
                   "country": "GB", "kind": "home"}  # fmt: skip
        return builder.build(name, {
            "type": "custody.released", "from": "hmp_liverpool", "subject": "kim", "at": at,
            "payload": {"released_at": at, "release_type": "on_licence", "at_liberty": True,
                        "establishment": "HMP Liverpool", "supervising_body": "probation_crc",
                        "destination_address": address},
        })  # fmt: skip

    cohort = builder.build("cohort", {
        "type": "iom.cohort_entered", "from": "police", "subject": "kim",
        "at": "2015-01-05T10:00:00Z",
        "payload": {"cohort": "knowsley_iom", "borough": "Knowsley",
                    "selection_method": "matrix_score", "entry_date": "2015-01-05"},
    })  # fmt: skip
    return [
        cohort,
        release("big", "x" * (LIMIT + 1_000), "2015-02-05T10:00:00Z"),
        release("after", "1 Ash Road", "2015-02-06T10:00:00Z"),
    ]


def test_an_oversize_delivery_goes_to_the_dlq_and_its_partition_moves_on(
    kafka_bootstrap, registry_url, topics, codec, tmp_path
) -> None:
    hub = Hub(kafka_bootstrap, registry_url, topics, codec, tmp_path, max_record_bytes=LIMIT)
    cohort, big, after = _events(codec)
    hub.publish([cohort])  # routed first: kmbc and police.iom see cohort members' releases
    run_router_until_idle(hub.settings, idle_s=1.0)
    hub.publish([big, after])
    stats = run_router_until_idle(hub.settings, idle_s=2.0)
    got = Outputs.read(hub)

    assert stats.aborted == 0, "a batch aborted: the oversize delivery reached the producer"
    assert not [k for k, lag in hub.router_lag().items() if lag], hub.router_lag()
    big_id, after_id = big["envelope"]["event_id"], after["envelope"]["event_id"]
    too_big = {"police", "police.iom", "probation_crc"}  # the audiences that get the address
    dlq = [dict(m.headers()) for m in got.dlq]
    assert sorted(h["hub.error.audience"].decode() for h in dlq) == sorted(too_big)
    for headers in dlq:
        assert headers["hub.error.reason"] == b"delivery_oversize"
        assert headers["hub.error.event_id"].decode() == big_id
        assert headers["hub.error.topic"].decode() == topics.ingest("hmp_liverpool")
        assert int(headers["hub.error.value_bytes"]) > LIMIT
    rejected = {(e["event_id"], e["audience"], e["reason"]) for e in got.entries("rejected")}
    assert rejected == {(big_id, a, "delivery_oversize") for a in too_big}
    assert {a for (e, a) in got.deliveries if e == big_id} == {"kmbc"}
    assert {e["audience"] for e in got.entries("delivered") if e["event_id"] == big_id} == {"kmbc"}
    assert {a for (e, a) in got.deliveries if e == after_id} == too_big | {"kmbc"}
    assert all(len(messages) == 1 for messages in got.deliveries.values())
