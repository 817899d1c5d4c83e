"""Golden decision cases: tests/golden/policy/*.yaml, one per acceptance scenario of
REQUIREMENTS §7. Each `check` step is a test: the state is rebuilt from the file's steps up to
it (the event under test is applied first, as the router does), then the decision and the
delivered record are compared with what the scenario says each audience must and must not see.

A check's ``expect`` may hold:
  effect        permit | deny | reject
  clause        the deciding clause (clause_ids[0]); ``clauses``: all of clause_ids
  reason        fragments the decision's reason contains
  kept          paths delivered unchanged (and not null)
  withheld      paths delivered as null (listed in disclosure.withheld when they are fields)
  transformed   path -> rule of the decision
  values        path -> expected delivered value (``a.0.b`` indexes lists; null = none)
  absent        strings that appear nowhere in the delivered record or its Avro bytes
  present       strings that do appear in it
  subject       expected delivered subject: {scheme, local_id} or "pseudonym"
  consent_based whether the deciding clause is consent-based
"""

from __future__ import annotations

import datetime as dt
import decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from hub.policy import MemoryState, PseudonymKeys, apply, evaluate, load_agreements
from hub.serde import wire
from tests.golden.policy.builder import EventBuilder, value_at

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "policy"
KEYS = PseudonymKeys(b"golden-master-secret-0123456789")


def _cases() -> list[Any]:
    params = []
    for path in sorted(GOLDEN.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        for index, step in enumerate(doc["steps"]):
            if "check" not in step:
                continue
            audiences = step.get("audiences") or [step["audience"]]
            name = step.get("name") or f"{step['check']}->{','.join(audiences)}"
            params.append(pytest.param(path, index, id=f"{doc['scenario']}:{index}:{name}"))
    return params


@pytest.fixture(scope="module")
def agreements(catalogue):  # type: ignore[no-untyped-def]
    return load_agreements(catalogue=catalogue)


_DOCS: dict[Path, Any] = {}


def _scenario(path: Path, catalogue: Any, agreements: Any) -> tuple[dict, dict[str, Any]]:
    if path not in _DOCS:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        jurisdictions = {a.id: a.jurisdiction for a in agreements.agencies()}
        builder = EventBuilder(catalogue, jurisdictions, doc.get("people"), namespace=path.stem)
        events = {name: builder.build(name, spec) for name, spec in doc["events"].items()}
        _DOCS[path] = (doc, events)
    return _DOCS[path]


def _norm(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, list):
        return [_norm(v) for v in value]
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in value.items()}
    return value


def _schema_path(path: str) -> str:
    return ".".join(p for p in path.split(".") if not p.isdigit())


@pytest.mark.parametrize(("path", "index"), _cases())
def test_golden_decision(path: Path, index: int, catalogue, agreements) -> None:  # type: ignore[no-untyped-def]
    doc, events = _scenario(path, catalogue, agreements)
    state = MemoryState(catalogue)
    for step in doc["steps"][: index + 1]:
        for name in step.get("apply", []):
            state.apply_event(events[name])
        if "check" in step:
            state.apply_event(events[step["check"]])
    step = doc["steps"][index]
    event = events[step["check"]]
    expect = step["expect"]
    for audience in step.get("audiences") or [step["audience"]]:
        decision = evaluate(event, audience, state, agreements)
        where = f"{step['check']} -> {audience}: {decision.reason}"
        assert decision.effect == expect["effect"], where
        if "clause" in expect:
            assert decision.clause_id == expect["clause"], where
        if "clauses" in expect:
            assert list(decision.clause_ids) == expect["clauses"], where
        for fragment in expect.get("reason", []):
            assert fragment in decision.reason, where
        if "consent_based" in expect:
            assert decision.consent_based is expect["consent_based"], where
        if decision.permitted:
            _check_delivery(event, decision, expect, state, catalogue, where)
        else:
            assert not decision.fields, where


def _check_delivery(event, decision, expect, state, catalogue, where) -> None:  # type: ignore[no-untyped-def]
    out = apply(event, decision, KEYS, state)
    name = catalogue.name_for(event["envelope"]["event_type"])
    wire.validate(catalogue.parsed(name), out)
    encoded = wire.encode_body(catalogue.parsed(name), out)
    text = repr(out)
    disclosure = out["disclosure"]
    assert disclosure["clause_id"] == decision.clause_id
    assert disclosure["agreement_id"] and disclosure["purpose"] and disclosure["legal_basis"]
    assert out["envelope"]["subject"]["hub_subject_id"] is None
    for path in expect.get("kept", []):
        original = value_at(event, path)
        assert original is not None, f"{where}: golden event has no {path}"
        assert value_at(out, path) == original, f"{where}: {path} not kept"
    for path in expect.get("withheld", []):
        assert value_at(out, path) is None, f"{where}: {path} delivered"
        field = _schema_path(path)
        assert decision.fields.get(field, "drop") == "drop", where
        if field in decision.fields:
            assert field in disclosure["withheld"] or "." in field, where
    for path, rule in (expect.get("transformed") or {}).items():
        assert decision.fields.get(path) == rule, f"{where}: {path} is {decision.fields.get(path)}"
        assert {"field": path, "rule": rule, "clause_id": decision.clause_id} in (
            disclosure["transformed"]
        ), where
    for path, value in (expect.get("values") or {}).items():
        assert _norm(value_at(out, path)) == _norm(value), f"{where}: {path}"
    for canary in expect.get("absent", []):
        assert canary not in text, f"{where}: {canary!r} delivered"
        assert canary.encode() not in encoded, f"{where}: {canary!r} in the bytes"
    for wanted in expect.get("present", []):
        assert wanted in text, f"{where}: {wanted!r} missing"
    subject = out["envelope"]["subject"]
    expected_subject = expect.get("subject")
    if expected_subject == "pseudonym":
        assert subject["local_id_scheme"] == "hub_pseudonym", where
        assert subject["local_id"] == KEYS.pseudonym(decision.audience, decision.subject)
    elif expected_subject:
        assert subject["local_id_scheme"] == expected_subject["scheme"], where
        assert subject["local_id"] == expected_subject["local_id"], where
    source = event["envelope"]["subject"]
    if decision.audience_agency != event["envelope"]["source_agency"] and decision.person_level:
        assert source["local_id"] not in text or source["local_id"] == subject["local_id"], where
    granted = set(decision.grants_identifiers)
    for identifier in source["identifiers"]:
        if identifier["scheme"] not in granted:
            assert identifier["value"].encode() not in encoded, f"{where}: identifier leaked"


def test_every_scenario_the_issue_names_has_golden_cases() -> None:
    scenarios = {
        yaml.safe_load(p.read_text(encoding="utf-8"))["scenario"] for p in GOLDEN.glob("*.yaml")
    }
    assert {"S1", "S2", "S3", "S5", "S6", "S7", "S13", "S16", "S19"} <= scenarios
