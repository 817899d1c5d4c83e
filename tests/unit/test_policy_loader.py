"""The agreement loader refuses what it does not understand, with one line naming file and path."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from hub.domain.errors import PolicyError
from hub.policy import collect, load_agreements

AGENCIES = """
version: 1
agencies:
  police:
    name: Merseyside Police
    jurisdiction: UK-ENG
    kind: statutory
    audiences: {police: force, police.iom: IOM officers}
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
  eri:
    name: ERI
    jurisdiction: IT
    kind: voluntary
    audiences: {eri: staff}
"""

CLAUSE = """
  - id: m-1
    description: contacts to the OM
    effect: permit
    event_types: [mentoring.contact]
    from_agencies: [mals]
    to_audiences: [probation_crc]
    fields: {contact_at: keep}
"""


def agreement(clauses: str = CLAUSE, head: str = "") -> str:
    return textwrap.dedent(
        f"""
        id: mals
        title: MALS agreement
        version: "1"
        jurisdiction: UK-ENG
        owner: mals
        parties: [mals, police, probation_trust, probation_crc]
        legal_basis: consent
        purpose: mentoring
        valid_from: 2012-01-01
        retention: P1Y
        {head}
        clauses:
        """
    ) + textwrap.dedent(clauses)


def write(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "policies"
    root.mkdir()
    for name, text in files.items():
        (root / name).write_text(text, encoding="utf-8")
    return root


def problems(tmp_path: Path, catalogue: Any, files: dict[str, str]) -> list[str]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    root = write(tmp_path, {"agencies.yaml": AGENCIES, **files})
    return collect(root, catalogue)[1]


def test_the_repository_policies_load(catalogue: Any) -> None:
    agreements = load_agreements(catalogue=catalogue)
    assert len(agreements.digest) == 64
    assert {
        "police",
        "police.iom",
        "mals",
        "mals.mentor",
        "probation_crc",
        "probation_nps",
        "probation_trust",
        "hmp_liverpool",
        "kmbc",
        "gmp",
        "victim_liaison",
        "ljmu",
        "safety_house",
        "eri",
    } <= set(agreements.audiences())
    assert agreements.agency_of_audience("mals.mentor") == "mals"
    assert agreements.agency("probation_trust").superseded_by == ("probation_crc", "probation_nps")
    assert {a.id for a in agreements.agreements()} >= {
        "kiom-isp",
        "mals-referral-progress",
        "merseyside-gm-cross-border",
        "victim-liaison",
        "safety-house-cooperation",
        "eri-contracts",
        "ljmu-research",
    }


def test_every_agreement_keeps_its_parties_in_one_jurisdiction(catalogue: Any) -> None:
    agreements = load_agreements(catalogue=catalogue)
    for agreement in agreements.agreements():
        assert {agreements.agency(p).jurisdiction for p in agreement.parties} == {
            agreement.jurisdiction
        }


def test_the_digest_changes_with_the_agreements(tmp_path: Path, catalogue: Any) -> None:
    root = write(tmp_path, {"agencies.yaml": AGENCIES, "mals.yaml": agreement()})
    first = load_agreements(root, catalogue).digest
    assert load_agreements(root, catalogue).digest == first
    (root / "mals.yaml").write_text(
        agreement(CLAUSE.replace("contact_at: keep", "contact_at: drop"))
    )
    assert load_agreements(root, catalogue).digest != first


def test_an_unknown_rule_names_file_path_and_what_is_accepted(
    tmp_path: Path, catalogue: Any
) -> None:
    clauses = (
        CLAUSE
        + CLAUSE.replace("m-1", "m-2")
        + CLAUSE.replace("m-1", "m-3").replace("{contact_at: keep}", "{notes: redcat}")
    )
    found = problems(tmp_path, catalogue, {"mals.yaml": agreement(clauses)})
    assert found == [
        "policies/mals.yaml: clauses[2].fields.notes: unknown rule 'redcat' (expected keep, drop, "
        "mask, generalise, pseudonymise, summarise)"
    ]
    root = tmp_path / "policies"
    with pytest.raises(PolicyError, match=r"^policies/mals.yaml: clauses\[2\].fields.notes"):
        load_agreements(root, catalogue)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("contact_at: keep", "contact_at: keep, colour: drop"),
            "clauses[0].fields.colour: unknown field 'colour'",
        ),
        (
            ("contact_at: keep", "pathways.x: keep"),
            "clauses[0].fields.pathways.x: unknown field 'pathways.x'",
        ),
        (
            ("contact_at: keep", "contact_at: mask"),
            "clauses[0].fields.contact_at: mentoring.contact: mask applies to text fields only",
        ),
        (
            ("contact_at: keep", "notes: summarise"),
            "clauses[0].fields.notes: mentoring.contact: summarise of notes needs "
            "summaries.notes.text",
        ),
        (
            ("[mentoring.contact]", "[mentoring.chat]"),
            "clauses[0].event_types[0]: unknown event type 'mentoring.chat'",
        ),
        (("[mentoring.contact]", '["mentoring.*"]'), None),
        (
            ("from_agencies: [mals]", "from_agencies: [cab]"),
            "clauses[0].from_agencies[0]: unknown agency 'cab'",
        ),
        (
            ("to_audiences: [probation_crc]", "to_audiences: [mals.volunteer]"),
            "clauses[0].to_audiences[0]: unknown audience 'mals.volunteer'",
        ),
        (
            ("to_audiences: [probation_crc]", "to_audiences: [eri]"),
            "clauses[0].to_audiences[0]: the agency of eri (eri) is not a party to mals",
        ),
        (
            ("effect: permit", "effect: allow"),
            "clauses[0].effect: unknown effect 'allow' (expected permit or forbid)",
        ),
        (
            ("effect: permit", "effect: permit\n    colour: red"),
            "clauses[0].colour: unknown key 'colour'",
        ),
        (
            ("effect: permit", "effect: permit\n    consent_based: true"),
            "clauses[0].consent_scope: a consent-based clause names its consent scope",
        ),
        (
            (
                "effect: permit",
                "effect: permit\n    consent_based: true\n    consent_scope: gossip",
            ),
            "clauses[0].consent_scope: unknown consent scope 'gossip'",
        ),
        (
            (
                "effect: permit",
                "effect: permit\n    consent_based: true\n    consent_scope: share_with_uepe",
            ),
            "clauses[0].consent_scope: share_with_uepe is a IT scope, the agreement is UK-ENG",
        ),
        (
            ("effect: permit", "effect: permit\n    conditions: {in_cohort: yes}"),
            "clauses[0].conditions.in_cohort: expected true or false, found 'yes'",
        ),
        (
            ("effect: permit", "effect: permit\n    conditions: {cohort: true}"),
            "clauses[0].conditions.cohort: unknown key 'cohort'",
        ),
        (
            ("effect: permit", "effect: permit\n    conditions: {addressed_to: [receiving_org]}"),
            "clauses[0].conditions.addressed_to: mentoring.contact has no field 'receiving_org'",
        ),
        (
            ("effect: permit", "effect: permit\n    conditions: {supervisor: [cab]}"),
            "clauses[0].conditions.supervisor: unknown agency 'cab'",
        ),
        (
            ("effect: permit", "effect: permit\n    retention: two years"),
            "clauses[0].retention: bad retention 'two years'",
        ),
        (
            ("effect: permit", "effect: permit\n    grants_identifiers: [lcp_run_id]"),
            "clauses[0].grants_identifiers[0]: unknown person identifier scheme 'lcp_run_id'",
        ),
        (
            ("effect: permit", "effect: forbid"),
            "clauses[0].fields.contact_at: a forbid clause only drops fields, not 'keep'",
        ),
        (
            ("{contact_at: keep}", '{"*": mask}'),
            "clauses[0].fields.*: the default rule is keep or drop, not 'mask'",
        ),
        (
            ("{contact_at: keep}", "{pathways: drop, pathways.x: keep}"),
            "clauses[0].fields.pathways.x: unknown field",
        ),
    ],
)
def test_clause_problems_are_reported_with_their_path(
    tmp_path: Path, catalogue: Any, change: tuple[str, str], expected: str | None
) -> None:
    found = problems(tmp_path, catalogue, {"mals.yaml": agreement(CLAUSE.replace(*change))})
    if expected is None:
        assert found == []
    else:
        assert len(found) == 1, found
        assert found[0].startswith(f"policies/mals.yaml: {expected}"), found[0]


def test_sub_field_rules_need_their_container_kept(tmp_path: Path, catalogue: Any) -> None:
    clause = (
        CLAUSE.replace("[mentoring.contact]", "[licence.conditions_set]")
        .replace("from_agencies: [mals]", "from_agencies: [probation_crc]")
        .replace("{contact_at: keep}", "{conditions: drop, conditions.summary: keep}")
    )
    found = problems(tmp_path, catalogue, {"mals.yaml": agreement(clause)})
    assert found == [
        "policies/mals.yaml: clauses[0].fields.conditions.summary: conditions is "
        "'drop'; rules for its sub-fields need it kept (keep, or leave it out)"
    ]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("valid_from: 2012-01-01", "valid_from: 2012-02-30"), "valid_from: bad date '2012-02-30'"),
        (
            ("valid_from: 2012-01-01", "valid_from: 01/01/2012"),
            "valid_from: bad date '01/01/2012' (expected YYYY-MM-DD)",
        ),
        (("id: mals", "id: mals-agreement"), "id: 'mals-agreement' does not match the file name"),
        (
            ("parties: [mals, police, probation_trust, probation_crc]", "parties: [mals, eri]"),
            "parties[1]: eri is in IT, the agreement is UK-ENG",
        ),
        (
            ("parties: [mals, police, probation_trust, probation_crc]", "parties: [mals, cab]"),
            "parties[1]: unknown agency 'cab'",
        ),
        (("owner: mals", "owner: eri"), "owner: 'eri' is not one of the parties"),
        (("jurisdiction: UK-ENG", "jurisdiction: UK"), "jurisdiction: unknown jurisdiction 'UK'"),
        (("purpose: mentoring", "purpose: mentoring\ncolour: red"), "colour: unknown key 'colour'"),
        (("purpose: mentoring", "purpose: mentoring\npurpose: again"), "not valid YAML: line"),
    ],
)
def test_agreement_problems_are_reported(
    tmp_path: Path, catalogue: Any, change: tuple[str, str], expected: str
) -> None:
    found = problems(tmp_path, catalogue, {"mals.yaml": agreement().replace(*change)})
    assert len(found) == 1, found
    assert found[0].startswith(f"policies/mals.yaml: {expected}"), found[0]


def test_duplicate_clause_ids_are_refused(tmp_path: Path, catalogue: Any) -> None:
    found = problems(tmp_path, catalogue, {"mals.yaml": agreement(CLAUSE + CLAUSE)})
    assert found == [
        "policies/mals.yaml: clauses[1].id: clause id 'm-1' is also used in policies/mals.yaml"
    ]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("jurisdiction: IT", "jurisdiction: FR"),
            "agencies.eri.jurisdiction: unknown jurisdiction",
        ),
        (("kind: voluntary", "kind: charity"), "agencies.eri.kind: unknown kind 'charity'"),
        (
            ("audiences: {eri: staff}", "audiences: {eri.staff: x, mals.x: y}"),
            "agencies.eri.audiences.mals.x: audience 'mals.x' must be 'eri' or start with 'eri.'",
        ),
        (
            ("superseded_by: [probation_crc]", "superseded_by: [probation_cr]"),
            "agencies.probation_trust.superseded_by: unknown agency 'probation_cr'",
        ),
        (
            ("    valid_to: 2014-05-31\n", ""),
            "agencies.probation_trust.superseded_by: a superseded agency needs valid_to",
        ),
        (
            ("valid_from: 2014-06-01", "valid_from: 2014-07-01"),
            "agencies.probation_trust.superseded_by: probation_crc is not in force on 2014-06-01",
        ),
        (("version: 1", "version: 1\nowner: x"), "owner: unknown key 'owner'"),
    ],
)
def test_agency_problems_are_reported(
    tmp_path: Path, catalogue: Any, change: tuple[str, str], expected: str
) -> None:
    root = write(tmp_path, {"agencies.yaml": AGENCIES.replace(*change)})
    found = collect(root, catalogue)[1]
    assert found and found[0].startswith(f"policies/agencies.yaml: {expected}"), found


def test_every_problem_is_collected(tmp_path: Path, catalogue: Any) -> None:
    bad = CLAUSE.replace("{contact_at: keep}", "{notes: redcat}")
    found = problems(
        tmp_path,
        catalogue,
        {
            "mals.yaml": agreement(bad + bad.replace("m-1", "m-2")),
            "other.yml": "id: other",
        },
    )
    assert len(found) == 3
    with pytest.raises(PolicyError, match=r"\(and 2 more; run 'hub policy check'\)"):
        load_agreements(tmp_path / "policies", catalogue)


def test_a_missing_directory_is_a_problem(tmp_path: Path, catalogue: Any) -> None:
    assert collect(tmp_path / "nowhere", catalogue)[1][0].endswith("policy directory not found")


def test_overlapping_permits_must_be_nested(tmp_path: Path, catalogue: Any) -> None:
    other = CLAUSE.replace("m-1", "m-2").replace("{contact_at: keep}", "{mode: keep}")
    found = problems(tmp_path, catalogue, {"mals.yaml": agreement(CLAUSE + other)})
    assert found == [
        "policies/mals.yaml: clauses[0]: m-1 and m-2 both permit mentoring.contact from mals to "
        "probation_crc but neither shares everything the other does (make one's fields and "
        "granted identifiers contain the other's, or split the event types: a delivery is made "
        "under one clause)"
    ]
    wider = CLAUSE.replace("m-1", "m-2").replace(
        "{contact_at: keep}", "{contact_at: keep, mode: keep}"
    )
    assert problems(tmp_path / "b", catalogue, {"mals.yaml": agreement(CLAUSE + wider)}) == []
    transformed = CLAUSE.replace("m-1", "m-2").replace(
        "{contact_at: keep}", "{contact_at: generalise}"
    )
    assert problems(tmp_path / "c", catalogue, {"mals.yaml": agreement(CLAUSE + transformed)}) == []
