"""The golden policy scenarios (tests/golden/policy/*.yaml) end to end through the real broker.

Each scenario's events are published with the Publisher, step by step, to their agencies'
ingest topics; one router runs for the whole scenario; after each step the delivery topics are
read with read_committed and every `check` is asserted on what was really delivered: who got the
event, under which clause, which fields arrived, which never did (in the bytes on the topic), the
subject's id, and for `reject` the DLQ record with its reason.

For S1 and S7 the audit materialiser then appends `hub.audit` to the hash chain, and each
person's disclosure report must list exactly the deliveries and withheld fields that the policy
engine decided (tests/integration/audit_oracle.py), agree with every `check` of the scenario, and
pass `hub audit verify`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from hub import bootstrap
from hub.adapters.audit_consumer import run_materialiser
from hub.adapters.audit_store import open_audit_store
from hub.audit import reports
from hub.audit.checkpoint import load_signer
from hub.audit.commands import default_public_key, verify_trail
from hub.policy import PseudonymKeys
from tests.golden.policy.builder import EventBuilder, value_at
from tests.hubtest import LiveRouter, TopicTail, hub_settings, publish, read_all
from tests.integration.audit_oracle import disclosure_oracle, entry_content_problems, reported
from tests.unit.test_policy_golden import _norm

pytestmark = pytest.mark.kafka
GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "policy"
DISCLOSURE_REPORTED = ("s01_short_sentence_release", "s07_consent_withdrawn")


def _scenarios() -> list[Any]:
    return [pytest.param(p, id=p.stem) for p in sorted(GOLDEN.glob("*.yaml"))]


@pytest.mark.parametrize("path", _scenarios())
def test_scenario_through_the_broker(path: Path, kafka_bootstrap, registry_url, topics, codec,
                                     tmp_path) -> None:  # fmt: skip
    settings = hub_settings(kafka_bootstrap, registry_url, topics.prefix, tmp_path / "home")
    bootstrap.init(settings)
    agreements = bootstrap.agreements(codec.catalogue)
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    jurisdictions = {a.id: a.jurisdiction for a in agreements.agencies()}
    builder = EventBuilder(codec.catalogue, jurisdictions, doc.get("people"), namespace=path.stem)
    events = {name: builder.build(name, spec) for name, spec in doc["events"].items()}
    published: set[str] = set()
    order: list[str] = []
    tails: dict[str, TopicTail] = {}
    with LiveRouter(settings) as live:
        for step in doc["steps"]:
            names = [*step.get("apply", []), *([step["check"]] if "check" in step else [])]
            for name in (n for n in names if n not in published):
                # one at a time, as they happen: events of different agencies travel on
                # different topics, and a scenario's order is part of its meaning
                publish(settings, codec, [events[name]])
                published.add(name)
                order.append(name)
                live.wait(len(published))
            if "check" in step:
                _check(step, events[step["check"]], settings, codec, tails)
    for tail in tails.values():
        tail.close()
    if path.stem in DISCLOSURE_REPORTED:
        _check_disclosure_reports(doc, events, order, settings, codec, agreements)


def _check_disclosure_reports(doc, events, order, settings, codec, agreements) -> None:  # type: ignore[no-untyped-def]
    """The issue's end-to-end audit test: materialise the trail, then each person's disclosure
    report lists exactly what the policy engine delivered and withheld, and every `check`."""
    store = open_audit_store(settings.hub_database_url)
    run_materialiser(
        bootstrap=settings.bootstrap_servers, topic=bootstrap.topics(settings).audit, store=store,
        signer=load_signer(bootstrap.keys_dir(settings)), should_stop=lambda: False,
        idle_stop_s=1.0,
    )  # fmt: skip
    keys = PseudonymKeys(bootstrap.pseudonym_master(settings))
    expected = disclosure_oracle([events[n] for n in order], codec.catalogue, agreements, keys)
    assert expected, "the scenario delivered nothing"
    got = {ref: reported(reports.disclosure_report(store, ref)) for ref in expected}
    assert got == expected
    delivered = {key: fields for per_subject in got.values() for key, fields in per_subject.items()}
    for step in doc["steps"]:
        if "check" not in step:
            continue
        event_id = events[step["check"]]["envelope"]["event_id"]
        for audience in step.get("audiences") or [step["audience"]]:
            where = f"{step['check']} -> {audience}"
            if step["expect"]["effect"] != "permit":
                assert (event_id, audience) not in delivered, f"{where}: in the report"
                continue
            assert (event_id, audience) in delivered, f"{where}: not in the report"
            shared, withheld = delivered[(event_id, audience)]
            assert set(step["expect"].get("withheld", [])) <= withheld, where
            assert not set(step["expect"].get("kept", [])) & withheld, where
    report = verify_trail(store, [default_public_key(settings.home)])
    assert report.ok and report.size == store.head()[0], report
    entries = list(store.iter_entries())
    assert entry_content_problems(entries) == []  # AU-8, retractions included
    assert any(s.entry.kind == "retracted" for s in entries) == (doc["scenario"] == "S7")
    store.close()


def _delivered(
    settings: Any, codec: Any, audience: str, tails: dict[str, TopicTail]
) -> list[tuple[bytes, dict[str, Any]]]:
    if audience not in tails:
        topic = bootstrap.topics(settings).deliver(audience)
        tails[audience] = TopicTail(settings.bootstrap_servers, topic)
    out = []
    for message in tails[audience].read():
        _, record = codec.decode(message.value(), message.topic(), message.partition(),
                                 message.offset())  # fmt: skip
        out.append((message.value(), record))
    return out


def _check(step, event, settings, codec, tails) -> None:  # type: ignore[no-untyped-def]
    expect = step["expect"]
    event_id = event["envelope"]["event_id"]
    if expect["effect"] == "reject":
        agency = event["envelope"]["source_agency"]
        dlq = read_all(settings.bootstrap_servers, bootstrap.topics(settings).dlq(agency))
        assert any(dict(m.headers()).get("hub.error.reason") == b"compartment" for m in dlq), (
            f"{step['check']}: not in the DLQ"
        )
    for audience in step.get("audiences") or [step["audience"]]:
        where = f"{step['check']} -> {audience}"
        # A commit returns before the broker has written its markers to every partition, and
        # until then a read_committed reader sees the partition end before the delivery; so an
        # expected delivery is waited for (a few seconds at most), never assumed absent.
        deadline = time.monotonic() + (15.0 if expect["effect"] == "permit" else 0.0)
        while True:
            records = _delivered(settings, codec, audience, tails)
            got = [(raw, r) for raw, r in records if r["envelope"]["event_id"] == event_id]
            if got or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        retracted = any(
            r.get("retracted_event_id") == event_id for _, r in records
            if r["envelope"]["event_type"] == "delivery.retracted"
        )  # fmt: skip
        if expect["effect"] != "permit":
            assert not got or retracted, f"{where}: delivered although the decision is deny"
            continue
        assert len(got) == 1, f"{where}: {len(got)} deliveries, expected exactly one"
        raw, out = got[0]
        disclosure = out["disclosure"]
        assert disclosure["audience"] == audience
        if "clause" in expect:
            assert disclosure["clause_id"] == expect["clause"], where
        for path in expect.get("kept", []):
            assert value_at(out, path) is not None, f"{where}: {path} missing"
            assert value_at(out, path) == value_at(event, path), f"{where}: {path} not kept"
        for path in expect.get("withheld", []):
            assert value_at(out, path) is None, f"{where}: {path} delivered"
        for path, value in (expect.get("values") or {}).items():
            assert _norm(value_at(out, path)) == _norm(value), f"{where}: {path}"
        for canary in expect.get("absent", []):
            assert canary.encode() not in raw, f"{where}: {canary!r} is in the delivered bytes"
        for wanted in expect.get("present", []):
            assert wanted.encode() in raw, f"{where}: {wanted!r} missing"
        subject = out["envelope"]["subject"]
        expected_subject = expect.get("subject")
        if expected_subject == "pseudonym":
            assert subject["local_id_scheme"] == "hub_pseudonym", where
        elif expected_subject:
            assert subject["local_id_scheme"] == expected_subject["scheme"], where
            assert subject["local_id"] == expected_subject["local_id"], where
