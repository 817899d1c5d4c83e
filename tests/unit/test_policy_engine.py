"""The engine's semantics on small, purpose-written agreements: default deny, forbid beats
permit, errors, the choice between permits, compartments, dates, jurisdictions."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from hub.domain.errors import PolicyError
from hub.policy import MemoryState, PseudonymKeys, apply, evaluate, load_agreements
from tests.golden.policy.builder import EventBuilder

AGENCIES = """
version: 1
agencies:
  police:
    name: Police
    jurisdiction: UK-ENG
    kind: statutory
    audiences: {police: force, police.iom: IOM}
  mals:
    name: MALS
    jurisdiction: UK-ENG
    kind: associate
    audiences: {mals: staff, mals.mentor: mentors}
  probation_trust:
    name: Trust
    jurisdiction: UK-ENG
    kind: statutory
    audiences: {probation_trust: OMs}
    valid_to: 2014-05-31
    superseded_by: [probation_crc]
  probation_crc:
    name: CRC
    jurisdiction: UK-ENG
    kind: statutory
    audiences: {probation_crc: OMs}
    valid_from: 2014-06-01
  safety_house:
    name: Safety House
    jurisdiction: NL
    kind: voluntary
    audiences: {safety_house: process managers}
  nl_police:
    name: NL police
    jurisdiction: NL
    kind: statutory
    audiences: {nl_police: officers}
"""
HEAD = """
id: {id}
title: test agreement
version: "7"
jurisdiction: {jurisdiction}
owner: {owner}
parties: {parties}
legal_basis: test basis
purpose: test purpose
valid_from: {valid_from}
{valid_to}
retention: P2Y
clauses:
"""
UK = "[police, mals, probation_trust, probation_crc]"
PEOPLE = {
    "jo": {
        "identifiers": {"pnc_id": "14/0000001J"},
        "local_ids": {
            "police": {"police_nominal_id": "MP-1"},
            "mals": {"mals_client_id": "MALS-1"},
            "probation_trust": {"probation_case_ref": "MPT-1"},
            "probation_crc": {"probation_case_ref": "CRC-1"},
        },
    },
    "nl": {"local_ids": {"safety_house": {"sh_file_id": "SH-1"}}},
}
KEYS = PseudonymKeys(b"unit-test-master-secret-000000")


def policies(tmp_path: Path, catalogue: Any, *agreements: tuple[str, str], **head: str) -> Any:
    root = tmp_path / "policies"
    root.mkdir(exist_ok=True)
    (root / "agencies.yaml").write_text(AGENCIES)
    for index, (clauses, parties) in enumerate(agreements):
        agreement_id = f"t{index}"
        jurisdiction = "NL" if "safety_house" in parties else "UK-ENG"
        text = (
            HEAD.format(
                id=agreement_id,
                jurisdiction=jurisdiction,
                owner=parties.strip("[]").split(",")[0].strip(),
                parties=parties,
                valid_from=head.get("valid_from", "2010-01-01"),
                valid_to=f"valid_to: {head['valid_to']}" if "valid_to" in head else "",
            )
            + clauses
        )
        (root / f"{agreement_id}.yaml").write_text(text)
    return load_agreements(root, catalogue)


def clause(
    cid: str,
    *,
    effect: str = "permit",
    types: str = "[police.arrest]",
    source: str = "[police]",
    to: str = "[mals]",
    fields: str = "{offence_type: keep}",
    extra: str = "",
) -> str:
    lines = [
        f"- id: {cid}",
        f"  description: clause {cid}",
        f"  effect: {effect}",
        f"  event_types: {types}",
        f"  from_agencies: {source}",
        f"  to_audiences: {to}",
    ]
    if fields:
        lines.append(f"  fields: {fields}")
    lines += [f"  {line}" for line in extra.strip().splitlines()]
    return "\n".join(lines) + "\n"


@pytest.fixture
def build(catalogue: Any) -> Any:
    builder = EventBuilder(
        catalogue,
        {
            "police": "UK-ENG",
            "mals": "UK-ENG",
            "probation_trust": "UK-ENG",
            "probation_crc": "UK-ENG",
            "safety_house": "NL",
        },
        PEOPLE,
        namespace="unit",
    )
    counter = iter(range(10**6))

    def make(
        event_type: str = "police.arrest",
        agency: str = "police",
        who: Any = "jo",
        when: str = "2015-01-10T10:00:00Z",
        payload: dict | None = None,
        **envelope: Any,
    ) -> dict:
        if payload is None:
            payload = {
                "arrested_at": when,
                "force": "police",
                "offence_type": "burglary",
                "area": "Huyton",
                "circumstances": "CANARY-CIRCUMSTANCES",
            }
        spec = {
            "type": event_type,
            "from": agency,
            "subject": who,
            "at": when,
            "payload": payload,
            **envelope,
        }
        return builder.build(f"e{next(counter)}", spec)

    return make


def decide(event: dict, audience: str, agreements: Any, state: Any = None) -> Any:
    state = state or MemoryState()
    state.apply_event(event)
    return evaluate(event, audience, state, agreements)


def test_without_agreements_everything_is_denied(
    tmp_path: Path, catalogue: Any, build: Any
) -> None:
    agreements = policies(tmp_path, catalogue)
    event = build()
    for audience in agreements.audiences():
        decision = decide(event, audience, agreements)
        assert decision.effect in ("deny",)
        assert not decision.fields and decision.clause_ids == ()
    decision = decide(event, "mals", agreements)
    assert decision.reason == "no clause of any agreement in force permits police.arrest to mals"


def test_a_permit_shares_only_the_fields_it_names(
    tmp_path: Path, catalogue: Any, build: Any
) -> None:
    agreements = policies(tmp_path, catalogue, (clause("c1"), UK))
    event = build()
    decision = decide(event, "mals", agreements)
    assert decision.effect == "permit" and decision.clause_ids == ("c1",)
    assert decision.agreement_id == "t0" and decision.agreement_version == "7"
    assert decision.purpose == "test purpose" and decision.legal_basis == "test basis"
    assert decision.retention_until == dt.date(2017, 1, 10)
    assert decision.fields["offence_type"] == "keep"
    assert decision.fields["circumstances"] == "drop"
    out = apply(event, decision, KEYS, MemoryState())
    assert out["offence_type"] == "burglary"
    assert out["circumstances"] is None and "CANARY" not in repr(out)
    assert "circumstances" in out["disclosure"]["withheld"]
    assert decide(event, "mals.mentor", agreements).effect == "deny"


def test_forbid_beats_permit(tmp_path: Path, catalogue: Any, build: Any) -> None:
    agreements = policies(
        tmp_path,
        catalogue,
        (clause("c1") + clause("c2", effect="forbid", fields=""), UK),
    )
    decision = decide(build(), "mals", agreements)
    assert decision.effect == "deny"
    assert decision.clause_ids == ("c2",)
    assert decision.reason == "forbid clause c2 (clause c2)"


def test_a_forbid_in_another_agreement_still_applies(
    tmp_path: Path, catalogue: Any, build: Any
) -> None:
    agreements = policies(
        tmp_path, catalogue, (clause("c1"), UK), (clause("c2", effect="forbid", fields=""), UK)
    )
    assert decide(build(), "mals", agreements).clause_ids == ("c2",)


class _BrokenState(MemoryState):
    def in_cohort(self, subject: str, at: Any, seq: int | None = None) -> bool:
        raise PolicyError("cohort table unreadable")


def test_a_permit_that_errors_is_skipped(tmp_path: Path, catalogue: Any, build: Any) -> None:
    agreements = policies(
        tmp_path,
        catalogue,
        (
            clause(
                "c1",
                fields="{offence_type: keep, area: keep}",
                extra="conditions: {in_cohort: true}",
            )
            + clause("c2"),
            UK,
        ),
    )
    state = _BrokenState(catalogue)
    decision = decide(build(), "mals", agreements, state)
    assert decision.effect == "permit" and decision.clause_ids == ("c2",)
    assert decision.errors == ("c1: cohort lookup failed: cohort table unreadable",)


def test_a_permit_that_errors_never_widens(tmp_path: Path, catalogue: Any, build: Any) -> None:
    agreements = policies(
        tmp_path, catalogue, (clause("c1", extra="conditions: {in_cohort: true}"), UK)
    )
    decision = decide(build(), "mals", agreements, _BrokenState(catalogue))
    assert decision.effect == "deny"
    assert "cohort table unreadable" in decision.reason
    assert decision.errors


def test_a_forbid_that_errors_denies(tmp_path: Path, catalogue: Any, build: Any) -> None:
    agreements = policies(
        tmp_path,
        catalogue,
        (
            clause("c1")
            + clause("c2", effect="forbid", fields="", extra="conditions: {in_cohort: true}"),
            UK,
        ),
    )
    decision = decide(build(), "mals", agreements, _BrokenState(catalogue))
    assert decision.effect == "deny" and decision.clause_ids == ("c2",)
    assert "a forbid that errors denies" in decision.reason
    # ...and a forbid whose condition does not hold does not deny
    assert decide(build(), "mals", agreements).effect == "permit"


def test_the_permit_sharing_most_fields_wins_then_statutory_then_clause_id(
    tmp_path: Path, catalogue: Any, build: Any
) -> None:
    wide = "{offence_type: keep, area: keep}"
    consent = "consent_based: true\nconsent_scope: research"
    agreements = policies(
        tmp_path,
        catalogue,
        (clause("c3") + clause("c2", fields=wide, extra=consent) + clause("c1", fields=wide), UK),
    )
    state = MemoryState(catalogue)
    state.apply_event(
        build(
            "consent.given",
            "mals",
            when="2015-01-01T00:00:00Z",
            payload={
                "consent_id": "X",
                "scopes": ["research"],
                "given_on": "2015-01-01",
                "captured_by": "m",
            },
        )
    )
    decision = decide(build(), "mals", agreements, state)
    assert decision.clause_ids == ("c1",)
    assert decision.consent_based is False
    assert "also matched: c3, c2" in decision.reason or "also matched: c2, c3" in decision.reason


def test_consent_based_clauses_need_consent_when_it_happened_and_when_recorded(
    tmp_path: Path, catalogue: Any, build: Any
) -> None:
    agreements = policies(
        tmp_path,
        catalogue,
        (clause("c1", extra="consent_based: true\nconsent_scope: research"), UK),
    )
    state = MemoryState(catalogue)
    assert decide(build(), "mals", agreements, state).effect == "deny"
    state.apply_event(
        build(
            "consent.given",
            "mals",
            when="2015-01-01T00:00:00Z",
            payload={
                "consent_id": "X",
                "scopes": ["research"],
                "given_on": "2015-01-01",
                "captured_by": "m",
            },
        )
    )
    assert decide(build(), "mals", agreements, state).consent_based is True
    state.apply_event(
        build(
            "consent.withdrawn",
            "mals",
            when="2015-02-01T00:00:00Z",
            payload={
                "consent_id": "X",
                "scopes": ["research"],
                "withdrawn_on": "2015-02-01",
                "captured_by": "m",
            },
        )
    )
    late = build(when="2015-01-20T10:00:00Z", recorded_at="2015-02-03T10:00:00Z")
    decision = decide(late, "mals", agreements, state)
    assert decision.effect == "deny"
    assert "no longer in force when the event was recorded" in decision.reason


def test_compartments(tmp_path: Path, catalogue: Any, build: Any) -> None:
    sh = "[safety_house, nl_police]"
    open_clause = clause(
        "c1",
        types="[sh.case_reported]",
        source="[safety_house]",
        to="[safety_house, nl_police]",
        fields="{case_id: keep}",
    )
    isa = clause(
        "c2",
        types="[sh.case_reported]",
        source="[safety_house]",
        to="[nl_police]",
        fields="{case_id: keep}",
        extra="compartment: isa",
    )
    agreements = policies(tmp_path, catalogue, (open_clause + isa, sh))
    payload = {
        "case_id": "SH-1",
        "reported_on": "2015-01-10",
        "reported_by_org": "nl_police",
        "reason": "x",
    }
    plain = build("sh.case_reported", "safety_house", "nl", payload=payload)
    tagged = build(
        "sh.case_reported",
        "safety_house",
        "nl",
        payload=payload,
        sensitivity="restricted-programme",
        compartment="isa",
    )
    other = build(
        "sh.case_reported",
        "safety_house",
        "nl",
        payload=payload,
        sensitivity="restricted-programme",
        compartment="extremism",
    )
    assert decide(plain, "safety_house", agreements).clause_ids == ("c1",)
    assert decide(tagged, "nl_police", agreements).clause_ids == ("c2",)
    assert decide(tagged, "safety_house", agreements).effect == "deny"
    for audience in agreements.audiences():
        decision = decide(other, audience, agreements)
        assert decision.effect == "reject"
        assert "'extremism' is named by no agreement" in decision.reason


def test_agreements_and_agencies_are_effective_dated(
    tmp_path: Path, catalogue: Any, build: Any
) -> None:
    trust = clause(
        "c1",
        source="[probation_trust, probation_crc]",
        to="[mals, probation_trust]",
        types="[supervision.recall]",
        fields="{recalled_on: keep}",
    )
    agreements = policies(
        tmp_path, catalogue, (trust, UK), valid_from="2013-01-01", valid_to="2015-12-31"
    )
    payload = {"recalled_on": "2014-05-30", "recall_type": "standard"}
    before = build(
        "supervision.recall", "probation_trust", when="2014-05-30T10:00:00Z", payload=payload
    )
    after = build(
        "supervision.recall", "probation_trust", when="2014-06-02T10:00:00Z", payload=payload
    )
    crc = build("supervision.recall", "probation_crc", when="2014-06-02T10:00:00Z", payload=payload)
    early = build(
        "supervision.recall", "probation_trust", when="2012-06-02T10:00:00Z", payload=payload
    )
    late = build(
        "supervision.recall", "probation_crc", when="2016-01-02T10:00:00Z", payload=payload
    )
    assert decide(before, "mals", agreements).effect == "permit"
    decision = decide(after, "mals", agreements)
    assert decision.effect == "deny"
    assert decision.reason == (
        "source agency probation_trust is not in force on 2014-06-02 "
        "(superseded by probation_crc after 2014-05-31)"
    )
    decision = decide(crc, "probation_trust", agreements)
    assert decision.reason.startswith("audience agency probation_trust is not in force")
    assert decide(crc, "mals", agreements).effect == "permit"
    ahead = build(
        "supervision.recall",
        "probation_trust",
        when="2014-05-30T10:00:00Z",
        payload=payload,
        effective_date="2014-06-01",
    )
    assert decide(ahead, "probation_crc", agreements).effect == "deny"  # no clause, but in force
    assert "not in force" not in decide(ahead, "probation_crc", agreements).reason
    assert "not in force" in decide(before, "probation_crc", agreements).reason
    assert "agreement t0 not in force on 2012-06-02" in decide(early, "mals", agreements).reason
    assert decide(late, "mals", agreements).effect == "deny"


def test_no_event_crosses_jurisdictions(tmp_path: Path, catalogue: Any, build: Any) -> None:
    agreements = policies(tmp_path, catalogue, (clause("c1", to="[mals, police]"), UK))
    event = build()
    decision = decide(
        build(
            "sh.case_reported",
            "safety_house",
            "nl",
            payload={
                "case_id": "SH-1",
                "reported_on": "2015-01-10",
                "reported_by_org": "nl_police",
                "reason": "x",
            },
        ),
        "mals",
        agreements,
    )
    assert decision.effect == "deny" and "crosses jurisdictions" in decision.reason
    forged = build(jurisdiction="NL")
    assert decide(forged, "mals", agreements).effect == "reject"
    assert decide(event, "safety_house", agreements).effect == "deny"


def test_unknown_source_and_audience(tmp_path: Path, catalogue: Any, build: Any) -> None:
    agreements = policies(tmp_path, catalogue, (clause("c1"), UK))
    event = build()
    event["envelope"]["source_agency"] = "cab"
    assert decide(event, "mals", agreements).effect == "reject"
    decision = decide(build(), "mals.volunteer", agreements)
    assert decision.effect == "deny" and "unknown audience" in decision.reason
    broken = build()
    del broken["envelope"]["occurred_at"]
    assert evaluate(broken, "mals", MemoryState(), agreements).effect == "reject"


def test_a_field_level_forbid_withholds_fields_from_any_permit(
    tmp_path: Path, catalogue: Any, build: Any
) -> None:
    permit = clause(
        "c1",
        types="[licence.conditions_set]",
        source="[probation_crc]",
        fields="{conditions: keep, licence_start: keep}",
    )
    forbid = clause(
        "c2",
        effect="forbid",
        types="[licence.conditions_set]",
        source="['*']",
        fields="{conditions.named_associates: drop, licence_start: drop}",
    )
    agreements = policies(tmp_path, catalogue, (permit + forbid, UK))
    event = build(
        "licence.conditions_set",
        "probation_crc",
        payload={
            "licence_start": "2015-01-10",
            "conditions": [
                {
                    "condition_type": "non_association",
                    "summary": "see OM",
                    "named_associates": ["CANARY-NAME"],
                }
            ],
        },
    )
    decision = decide(event, "mals", agreements)
    assert decision.effect == "permit" and decision.clause_ids == ("c1", "c2")
    assert decision.fields["conditions.named_associates"] == "drop"
    assert decision.fields["conditions.summary"] == "keep"
    out = apply(event, decision, KEYS, MemoryState())
    assert out["conditions"][0]["summary"] == "see OM"
    assert out["licence_start"] is None and "CANARY-NAME" not in repr(out)
    assert "conditions.named_associates" in out["disclosure"]["withheld"]


def test_summaries_filter_list_items_per_audience(
    tmp_path: Path, catalogue: Any, build: Any
) -> None:
    sh = "[safety_house, nl_police]"
    plan = clause(
        "c1",
        types="[sh.action_plan_agreed]",
        source="[safety_house]",
        to="[nl_police]",
        fields="{tasks: summarise, lead_org: keep}",
        extra="summaries: {tasks: {where: {organisation: [$agency]}, "
        "keep: [organisation, description]}}",
    )
    agreements = policies(tmp_path, catalogue, (plan, sh))
    event = build(
        "sh.action_plan_agreed",
        "safety_house",
        "nl",
        payload={
            "plan_id": "P1",
            "case_id": "SH-1",
            "agreed_on": "2015-01-10",
            "approach": "treatment",
            "lead_org": "nl_health",
            "tasks": [
                {
                    "task_id": "T1",
                    "organisation": "nl_police",
                    "description": "area ban",
                    "status": "planned",
                },
                {"task_id": "T2", "organisation": "nl_health", "description": "CANARY-CLINIC"},
            ],
        },
    )
    decision = decide(event, "nl_police", agreements)
    out = apply(event, decision, KEYS, MemoryState())
    assert out["tasks"] == [
        {
            "task_id": None,
            "organisation": "nl_police",
            "description": "area ban",
            "due_date": None,
            "status": None,
        }
    ]
    assert "CANARY-CLINIC" not in repr(out)
    assert {"field": "tasks", "rule": "summarise", "clause_id": "c1"} in (
        out["disclosure"]["transformed"]
    )


def test_apply_refuses_a_deny(tmp_path: Path, catalogue: Any, build: Any) -> None:
    agreements = policies(tmp_path, catalogue)
    event = build()
    with pytest.raises(PolicyError, match="cannot apply a deny decision"):
        apply(event, decide(event, "mals", agreements), KEYS, MemoryState())


def test_the_subject_is_the_audiences_own_id_or_its_pseudonym(
    tmp_path: Path, catalogue: Any, build: Any
) -> None:
    agreements = policies(
        tmp_path,
        catalogue,
        (
            clause(
                "c1", to="[mals, probation_crc, police.iom]", extra="grants_identifiers: [pnc_id]"
            ),
            UK,
        ),
    )
    state = MemoryState(catalogue)
    state.apply_event(
        build(
            "consent.given",
            "mals",
            when="2015-01-01T00:00:00Z",
            payload={
                "consent_id": "X",
                "scopes": ["research"],
                "given_on": "2015-01-01",
                "captured_by": "m",
            },
        )
    )
    event = build()
    mals = decide(event, "mals", agreements, state)
    out = apply(event, mals, KEYS, state)
    assert out["envelope"]["subject"]["local_id"] == "MALS-1"
    assert out["envelope"]["subject"]["identifiers"] == [
        {"scheme": "pnc_id", "value": "14/0000001J"}
    ]
    crc = decide(event, "probation_crc", agreements, state)
    subject = apply(event, crc, KEYS, state)["envelope"]["subject"]
    assert subject["local_id_scheme"] == "hub_pseudonym"
    assert subject["local_id"] == KEYS.pseudonym("probation_crc", crc.subject)
    assert subject["local_id"] != KEYS.pseudonym("police.iom", crc.subject)
    iom = apply(event, decide(event, "police.iom", agreements, state), KEYS, state)
    assert iom["envelope"]["subject"]["local_id"] == "MP-1"  # police's own id


def test_identifiers_are_withheld_unless_granted(
    tmp_path: Path, catalogue: Any, build: Any
) -> None:
    agreements = policies(tmp_path, catalogue, (clause("c1"), UK))
    event = build()
    out = apply(event, decide(event, "mals", agreements), KEYS, MemoryState())
    assert out["envelope"]["subject"]["identifiers"] == []
    assert "14/0000001J" not in repr(out) and "MP-1" not in repr(out)
