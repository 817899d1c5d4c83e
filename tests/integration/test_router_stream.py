"""The router through the real broker: a mixed stream in, exactly the right outputs out.

The stream: every event of the golden scenarios (tests/golden/policy, S1-S19: consent given and
withdrawn, referrals, supervision, a restricted programme, ...) plus random events of the
agreements' (event type, source) pairs from many agencies of the three jurisdictions, with a
unique canary string in every free-text field; a few exact re-sends; and malformed records of
every kind, interleaved on the same ingest topics. One router routes it all.

Checked against the oracle (tests/integration/test_router_harness.py: the pure ``evaluate`` and
``apply`` over a ``MemoryState``, in the router's order):
- every (event, audience) the policy permits is delivered exactly once, byte for byte the record
  ``apply`` builds; nothing else is delivered; retractions exactly as the state says;
- the DLQ holds exactly the malformed and the unroutable records, each with its reason and the
  ``hub.error.*`` headers;
- hub.audit: one ``decided`` per (event, audience) some clause names or that is permitted, one
  ``delivered`` per delivery (its payload_hash the delivered bytes'), one ``rejected`` per DLQ
  record, one ``published`` per routed event;
- PR-1: every delivery carries agreement, version, clause, purpose, legal basis and retention
  (in its ``disclosure`` and in its ``delivered`` entry);
- PR-2: no canary of a field a decision drops (or of an event an audience may not see) is in
  that audience's deliver.* records, on the topic or in the broker's log segment files.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.golden.policy.builder import EventBuilder
from tests.hubtest import run_router_until_idle
from tests.integration.test_router_harness import (
    MALFORMED_KINDS,
    Canaries,
    Hub,
    Injector,
    Oracle,
    Outputs,
    broker_data_dir,
    check_against,
    malformed,
    random_events,
    segment_bytes,
)

pytestmark = pytest.mark.kafka
GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "policy"
CANARY = re.compile(rb"CNRY\d{5}F\d{3}Z")
DLQ_HEADERS = ("hub.error.reason", "hub.error.class", "hub.error.message", "hub.error.topic",
               "hub.error.partition", "hub.error.offset")  # fmt: skip


def golden_events(hub: Hub) -> list[dict[str, Any]]:
    events = []
    for path in sorted(GOLDEN.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        builder = EventBuilder(hub.catalogue, hub.jurisdiction, doc.get("people"),
                               namespace=f"stream-{path.stem}")  # fmt: skip
        events += [builder.build(name, spec) for name, spec in doc["events"].items()]
    return events


def test_mixed_stream_right_audiences_right_fields_dlq_and_audit(
    kafka_bootstrap, registry_url, topics, codec, tmp_path, tmp_path_factory
) -> None:
    hub = Hub(kafka_bootstrap, registry_url, topics, codec, tmp_path / "home")
    canaries = Canaries(hub)
    valid = golden_events(hub) + random_events(hub, 300, seed=41, canaries=canaries)
    oracle = Oracle(hub)
    refused = {e["envelope"]["event_id"] for e in valid if oracle.refused(e)}
    assert refused, "the golden S19 restricted-programme events are refused as unroutable"
    resent = [valid[i] for i in (5, 50, 200)]  # exact duplicates: same id, same bytes
    rng = random.Random(5)
    bad_from = [e for e in valid[100:] if e["envelope"]["event_id"] not in refused]
    kinds = [k for k in MALFORMED_KINDS if k != "oversize"] * 2  # oversize: IN-3
    bad = [malformed(hub, kind, rng.choice(bad_from)) for kind in kinds]
    # conflicting duplicates of events routed in the first half (same key: same partition,
    # after the original)
    bad += [malformed(hub, "conflicting_duplicate", e) for e in (valid[60], valid[61])]

    injector = Injector(hub.bootstrap_servers)
    half = len(valid) // 2
    hub.publish(valid[:half])
    landed = injector.send([(t, k, v) for t, k, v, _ in bad[: len(bad) // 2]])
    hub.publish(valid[half:] + resent)
    landed += injector.send([(t, k, v) for t, k, v, _ in bad[len(bad) // 2 :]])
    expected_dlq = {(p.topic, p.partition, p.offset): reason
                    for p, (_, _, _, reason) in zip(landed, bad, strict=True)}  # fmt: skip

    stats = run_router_until_idle(hub.settings, idle_s=2.0)
    got = Outputs.read(hub)

    # -- the DLQ: exactly the bad and the unroutable records, each with its reason -----------
    dlq = got.dlq_by_origin()
    injected = {origin: dict(dlq[origin].headers()) for origin in expected_dlq if origin in dlq}
    assert set(injected) == set(expected_dlq), "an injected bad record is not in the DLQ"
    wrong = {o: (h["hub.error.reason"], expected_dlq[o]) for o, h in injected.items()
             if h["hub.error.reason"].decode() != expected_dlq[o]}  # fmt: skip
    assert not wrong, f"DLQ reasons: {wrong}"
    for message in got.dlq:
        headers = dict(message.headers())
        assert all(h in headers for h in DLQ_HEADERS), headers.keys()
        agency = hub.topics.agency_of_ingest(headers["hub.error.topic"].decode())
        assert message.topic() == hub.topics.dlq(agency)
    unroutable = [m for o, m in dlq.items() if o not in expected_dlq]
    refused_values = {codec.encode(e) for e in valid if e["envelope"]["event_id"] in refused}
    assert sorted(m.value() for m in unroutable) == sorted(refused_values)
    assert all(dict(m.headers())["hub.error.reason"] == b"compartment" for m in unroutable)
    assert stats.rejected == len(got.dlq) == len(bad) + len(refused)
    assert stats.duplicates == len(resent)

    # -- deliveries and audit against the oracle ---------------------------------------------
    events = {}
    for event in valid:
        _, decoded = codec.decode(codec.encode(event))
        events[event["envelope"]["event_id"]] = decoded
    order = got.routed_order()
    assert set(order) == set(events) - refused
    # the router's order keeps each partition's order: events with one key, in publish order
    position = {event_id: i for i, event_id in enumerate(order)}
    by_key: dict[tuple[str, str], list[int]] = {}
    for event in valid:
        envelope = event["envelope"]
        if envelope["event_id"] in position:
            key = (envelope["source_agency"], envelope["subject"]["local_id"])
            by_key.setdefault(key, []).append(position[envelope["event_id"]])
    assert all(seq == sorted(seq) for seq in by_key.values()), "routed out of partition order"
    expected = oracle.replay(order, events)
    problems = check_against(expected, got, hub)
    assert not problems, problems
    assert len(expected.deliveries) > 200 and expected.retractions, "a thin stream proves little"
    assert len(got.entries("policy_loaded")) == 1

    # -- PR-1: purpose limitation -------------------------------------------------------------
    delivered = {(e["event_id"], e["audience"]): e for e in got.entries("delivered")}
    for key, record in got.decoded.items():
        d = record["disclosure"]
        assert d and d["audience"] == key[1]
        for name in ("agreement_id", "agreement_version", "clause_id", "purpose", "legal_basis"):
            assert d[name], f"{key}: disclosure.{name} is empty"
        _, clause = hub.agreements.clause(d["clause_id"])
        assert d["retention_until"] is not None or clause.retention is None, key
        entry = delivered[key]
        assert (entry["agreement_id"], entry["agreement_version"]) == (
            d["agreement_id"], d["agreement_version"],
        )  # fmt: skip
        assert entry["clause_ids"][0] == d["clause_id"] and entry["purpose"] == d["purpose"]
        assert entry["details"]["legal_basis"] == d["legal_basis"]

    # -- PR-2: minimisation at byte level -----------------------------------------------------
    allowed = {hub.topics.deliver(a): set() for a in hub.agreements.audiences()}
    for (_, audience), value in expected.deliveries.items():
        allowed[hub.topics.deliver(audience)] |= set(CANARY.findall(value))
    assert set().union(*allowed.values()), "no canary is meant to be delivered: scan unproven"
    never = canaries.all - set().union(*allowed.values())
    assert never, "every canary is delivered somewhere: nothing is withheld"
    for topic, data in got.deliver_bytes.items():
        found = set(CANARY.findall(data))
        leaked = sorted(found - allowed[topic])
        assert not leaked, f"{topic}: withheld canaries delivered: {leaked[:5]}"
        assert found == allowed[topic]
    data_dir = broker_data_dir(tmp_path_factory)
    if data_dir is None:
        print("PR-2: broker data dir not reachable (external broker); scanned topic bytes only")
        return
    on_disk = segment_bytes(data_dir, allowed)
    for topic, data in on_disk.items():
        found = set(CANARY.findall(data))
        assert found <= allowed[topic], f"{topic} segments: {sorted(found - allowed[topic])[:5]}"
        assert found == allowed[topic], f"{topic}: the segment scan misses delivered canaries"
    print(f"PR-2: scanned {sum(map(len, on_disk.values()))} decompressed segment bytes of "
          f"{len(on_disk)} deliver topics under {data_dir}")  # fmt: skip
