"""hub policy check | explain | matrix | diff, as functions."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from hub import policytool
from hub.domain.errors import InputError
from hub.policy import MemoryState, load_agreements
from tests.golden.policy.builder import EventBuilder

REPO = Path(__file__).resolve().parents[2]
S1 = REPO / "tests" / "golden" / "policy" / "s01_short_sentence_release.yaml"


@pytest.fixture(scope="module")
def agreements(catalogue: Any) -> Any:
    return load_agreements(catalogue=catalogue)


@pytest.fixture(scope="module")
def s1(catalogue: Any, agreements: Any) -> tuple[dict[str, dict], MemoryState]:
    doc = yaml.safe_load(S1.read_text())
    builder = EventBuilder(
        catalogue,
        {a.id: a.jurisdiction for a in agreements.agencies()},
        doc["people"],
        namespace="tools",
    )
    events = {name: builder.build(name, spec) for name, spec in doc["events"].items()}
    state = MemoryState(catalogue)
    for name in ("cohort", "referral", "mentor", "mals_registration", "scheduled", "supervision"):
        state.apply_event(events[name])
    return events, state


def test_check_passes_on_the_repository_policies(catalogue: Any) -> None:
    assert policytool.check(catalogue=catalogue) == []


def test_check_lists_the_problems(tmp_path: Path, catalogue: Any) -> None:
    root = tmp_path / "policies"
    shutil.copytree(REPO / "policies", root)
    text = (root / "kiom-isp.yaml").read_text().replace("kind: statutory", "kind: x")
    (root / "kiom-isp.yaml").write_text(
        text.replace("valid_from: 2011-04-01", "valid_from: 2011-04-31")
    )
    problems = policytool.check(root, catalogue)
    assert problems == [
        "policies/kiom-isp.yaml: valid_from: bad date '2011-04-31' (day is out "
        "of range for month; expected YYYY-MM-DD)"
    ]


def test_explain_names_each_fields_treatment_and_clause(s1: Any, agreements: Any) -> None:
    events, state = s1
    decision, rows = policytool.explain(events["licence"], "mals", agreements, state)
    assert decision.effect == "permit"
    by_field = {(r.field, r.treatment): r for r in rows}
    assert by_field[("conditions", "summarised")].clause == "mals-3"
    assert "non_association" in by_field[("conditions", "summarised")].note
    assert by_field[("life_licence", "withheld")].note.startswith("not named by the clause")
    assert (
        by_field[("envelope.subject.local_id", "transformed")].note == "mals's own mals_client_id"
    )
    assert by_field[("envelope.subject.identifiers", "withheld")].note == "not granted: pnc_id"
    text = policytool.explain_text(decision, rows)
    assert text.startswith("licence.conditions_set -> mals: PERMIT\n")
    assert "mals-referral-progress v2014.3, clause mals-3" in text


def test_explain_shows_field_level_forbids(
    s1: Any,
    agreements: Any,
    catalogue: Any,
) -> None:
    events, state = s1
    decision, rows = policytool.explain(events["mentor"], "probation_crc", agreements, state)
    assert decision.effect == "deny"  # no consent to share progress with the OM in S1
    assert all(r.treatment == "withheld" for r in rows)
    consent = EventBuilder(
        catalogue,
        {"mals": "UK-ENG"},
        yaml.safe_load(S1.read_text())["people"],
        namespace="tools-consent",
    ).build(
        "c",
        {
            "type": "consent.given",
            "from": "mals",
            "subject": "jordan",
            "at": "2015-02-01T00:00:00Z",
            "payload": {
                "consent_id": "C",
                "scopes": ["share_progress_with_om"],
                "given_on": "2015-02-01",
                "captured_by": "MALS",
            },
        },
    )
    state.apply_event(consent)
    fresh = dict(events["mentor"])  # the same assignment, once the CRC supervises
    fresh["envelope"] = {
        **events["mentor"]["envelope"],
        "event_id": "mentor-again",
        "occurred_at": dt.datetime(2015, 2, 25, tzinfo=dt.UTC),
    }
    decision, rows = policytool.explain(fresh, "probation_crc", agreements, state)
    assert decision.clause_ids == ("mals-23", "mals-92")
    row = next(r for r in rows if r.field == "meeting_arrangements")
    assert row.clause == "mals-92" and row.note.startswith("field-level forbid")


def test_explain_a_denial(s1: Any, agreements: Any) -> None:
    events, state = s1
    decision, rows = policytool.explain(events["score"], "kmbc", agreements, state)
    assert decision.effect == "deny" and decision.clause_ids == ("kiom-4",)
    assert {r.treatment for r in rows} == {"withheld"}
    assert "forbid clause kiom-4" in policytool.explain_text(decision, rows)


def test_events_read_from_json(s1: Any, catalogue: Any) -> None:
    events, _ = s1
    original = events["released"]

    def default(value: Any) -> Any:
        if isinstance(value, dt.datetime):
            return value.isoformat().replace("+00:00", "Z")
        if isinstance(value, dt.date):
            return value.isoformat()
        raise TypeError(value)

    text = json.dumps(original, default=default)
    assert policytool.event_from_json(text, catalogue) == original
    sparse = json.loads(text)
    del sparse["destination_address"], sparse["disclosure"]
    read = policytool.event_from_json(sparse, catalogue)
    assert read["destination_address"] is None and read["disclosure"] is None
    with pytest.raises(InputError, match="unknown event type"):
        policytool.event_from_json({"envelope": {"event_type": "x.y"}}, catalogue)
    sparse["colour"] = "red"
    with pytest.raises(InputError, match="colour: not a field"):
        policytool.event_from_json(sparse, catalogue)


def test_the_matrix_encodes_the_design_decisions(agreements: Any) -> None:
    cells = {(c.row, c.audience): c for c in policytool.matrix(agreements)}
    score = "CORVUS score and cost of crime"
    assert cells[(score, "mals")].cell == "–"
    assert cells[(score, "kmbc")].cell == "–"
    assert cells[(score, "police.iom")].cell == "F"
    assert cells[(score, "ljmu")].cell == "C"
    assert cells[("Victim identity and contact", "mals")].cell == "–"
    assert cells[("Victim identity and contact", "mals.mentor")].cell == "–"
    assert cells[("Helpline calls", "police")].cell == "–"
    assert cells[("Mentoring contacts (notes)", "probation_crc")].cell == "C"
    assert cells[("Mentoring contacts (notes)", "gmp")].cell == "–"
    assert cells[("Licence conditions", "gmp")].cell == "S"
    assert ("Safety House file and plan", "police") not in cells
    assert cells[("Mentoring contacts (notes)", "eri")].clauses == ("eri-0",)  # its own
    for cell in cells.values():  # nothing about UK people reaches NL or IT partners
        if cell.audience in {
            a.id for a in agreements.agencies() if a.jurisdiction != "UK-ENG"
        } and cell.cell not in ("–", ""):
            assert all(not c.startswith(("kiom", "mals", "xb", "vl", "ljmu")) for c in cell.clauses)
    by_type = {(c.row, c.audience): c for c in policytool.matrix(agreements, by="event_type")}
    assert by_type[("mentoring.contact", "mals.mentor")].cell == "F"
    assert "mals-15: mentor assigned" in by_type[("mentoring.contact", "mals.mentor")].conditions


def test_matrix_renderings(agreements: Any) -> None:
    text = policytool.matrix_text(agreements)
    assert "CORVUS score and cost of crime" in text and agreements.digest in text
    page = policytool.matrix_html(agreements, by="event_type")
    assert page.startswith("<!DOCTYPE html>") and "<table>" in page
    assert 'title="clauses: kiom-4' in page
    with pytest.raises(InputError):
        policytool.matrix(agreements, by="colour")


def test_diff_of_identical_agreements_is_empty(agreements: Any) -> None:
    assert policytool.diff(agreements, agreements) == []
    assert policytool.diff_text([]) == "no change in what any audience may receive\n"


def test_diff_shows_what_a_change_newly_shares_or_stops_sharing(
    tmp_path: Path, catalogue: Any, agreements: Any
) -> None:
    root = tmp_path / "policies"
    shutil.copytree(REPO / "policies", root)
    mals = root / "mals-referral-progress.yaml"
    text = mals.read_text()
    text = text.replace(
        "    fields: {received_at: keep, establishment: keep}",
        "    fields: {received_at: keep, establishment: keep, reason: keep}",
    )
    text = text.replace(
        "    fields: {moved_on: keep, new_area: keep}", "    fields: {moved_on: keep}"
    )
    mals.write_text(text)
    changed = load_agreements(root, catalogue)
    rows = policytool.diff(agreements, changed)
    assert rows == [
        policytool.DiffRow(
            "cross_border.notification",
            "police",
            "mals",
            "new_area",
            "keep",
            "drop",
            "stops sharing",
        ),
        policytool.DiffRow(
            "custody.received", "hmp_liverpool", "mals", "reason", "drop", "keep", "newly shares"
        ),
    ]
    assert "newly shares   custody.received from hmp_liverpool -> mals: reason (drop -> keep)" in (
        policytool.diff_text(rows)
    )


def test_diff_sees_forbids_and_conditions(tmp_path: Path, catalogue: Any, agreements: Any) -> None:
    root = tmp_path / "policies"
    shutil.copytree(REPO / "policies", root)
    kiom = root / "kiom-isp.yaml"
    kiom.write_text(
        kiom.read_text()
        .replace(
            "    to_audiences: [mals, mals.mentor, kmbc]",
            "    to_audiences: [mals, mals.mentor, kmbc, police.iom]",
        )
        .replace(
            "    to_audiences: [kmbc]\n    conditions: {in_cohort: true}\n    fields:\n"
            "      release_date: keep",
            "    to_audiences: [kmbc]\n    fields:\n      release_date: keep",
        )
    )
    rows = policytool.diff(agreements, load_agreements(root, catalogue))
    stopped = {(r.event_type, r.audience, r.change) for r in rows}
    assert ("police.priority_score_updated", "police.iom", "stops sharing") in stopped
    conditions = [r for r in rows if r.field == "(conditions)"]
    assert any(
        r.audience == "kmbc"
        and "kiom-6: in IOM cohort" in r.before
        and "kiom-6: in IOM cohort" not in r.after
        for r in conditions
    )
