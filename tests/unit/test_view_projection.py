"""The audience view as pure data: corrections replace, retractions delete and the status is
recomputed, withheld fields show as withheld with their clause, and the tables depend only on the
set of records read (so a replay, a restart or a rebuild gives the same bytes)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
import uuid
from typing import Any

import pytest

from hub.views.projection import (
    Decoded,
    Entry,
    Undecodable,
    ViewState,
    apply_batch,
    canonical_dump,
)
from hub.views.samples import sample_deliveries
from hub.views.status import derive_status

AUDIENCE = "probation_crc"
SUBJECT = ("probation_case_ref", "CRN-001")
T0 = dt.datetime(2014, 6, 2, 9, 0, tzinfo=dt.UTC)


def delivered(
    event_type: str,
    day: int,
    payload: dict[str, Any] | None = None,
    *,
    subject: tuple[str, str] = SUBJECT,
    withheld: tuple[str, ...] = (),
    clause: str = "c2-supervision",
    supersedes: str | None = None,
    agency: str = "probation_crc",
) -> dict[str, Any]:
    """A delivered record as the codec decodes it (payload fields not given are left out)."""
    return {
        "envelope": {
            "event_id": str(uuid.uuid4()),
            "event_type": event_type,
            "schema_version": 1,
            "occurred_at": T0 + dt.timedelta(days=day),
            "recorded_at": T0 + dt.timedelta(days=day, minutes=1),
            "effective_date": None,
            "source_agency": agency,
            "source_system": "ndelius",
            "jurisdiction": "UK-ENG",
            "subject": {
                "local_id_scheme": subject[0],
                "local_id": subject[1],
                "identifiers": [],
                "hub_subject_id": None,
            },
            "supersedes_event_id": supersedes,
            "correction_reason": "keying_error" if supersedes else None,
            "sensitivity": "standard",
            "compartment": None,
            "consent_ref": None,
            "responsible_org": None,
        },
        **(payload or {}),
        **dict.fromkeys(withheld),
        "disclosure": {
            "audience": AUDIENCE,
            "agreement_id": "merseyside-iom-isa",
            "agreement_version": "2014.1",
            "clause_id": clause,
            "purpose": "offender management",
            "legal_basis": "Offender Management Act 2007 s.14",
            "consent_based": False,
            "withheld": list(withheld),
            "transformed": [],
            "retention_until": dt.date(2021, 6, 1),
        },
    }


def retraction(
    target: dict[str, Any], day: int, reason: str = "consent_withdrawn"
) -> dict[str, Any]:
    record = delivered("delivery.retracted", day, agency="hub")
    record.update(
        retracted_event_id=target["envelope"]["event_id"],
        reason=reason,
        clause_id=target["disclosure"]["clause_id"],
        cause_event_id=str(uuid.uuid4()),
        disclosure=None,
    )
    return record


def risk(day: int, level: str, **kw: Any) -> dict[str, Any]:
    return delivered(
        "assessment.risk_of_harm", day, {"assessed_on": (T0 + dt.timedelta(days=day)).date(),
                                         "risk_level": level}, **kw,
    )  # fmt: skip


def view(*records: dict[str, Any], topic: str = "deliver.probation_crc") -> ViewState:
    state = ViewState(AUDIENCE)
    apply_batch(state, [Decoded((topic, 0, i), r) for i, r in enumerate(records)])
    return state


def status(state: ViewState, subject: tuple[str, str] = SUBJECT) -> dict[str, Any]:
    detail: dict[str, Any] = json.loads(state.status[subject].detail)
    return detail


def digest(state: ViewState) -> str:
    return hashlib.sha256(canonical_dump(state.tables())).hexdigest()


# -- timeline and subjects ---------------------------------------------------------------------


def test_delivered_event_lands_in_timeline_with_its_disclosure_and_non_null_fields() -> None:
    record = risk(0, "high")

    state = view(record)

    row = state.timeline[record["envelope"]["event_id"]]
    assert row.subject == SUBJECT
    assert json.loads(row.payload) == {"assessed_on": "2014-06-02", "risk_level": "high"}
    assert (row.agreement_id, row.clause_id, row.purpose) == (
        "merseyside-iom-isa",
        "c2-supervision",
        "offender management",
    )
    assert row.retention_until == dt.date(2021, 6, 1)
    subject = state.subjects[SUBJECT]
    assert (subject.first_seen, subject.events, subject.last_event_type) == (
        T0,
        1,
        "assessment.risk_of_harm",
    )


def test_correction_replaces_the_original_in_timeline_and_status() -> None:
    original = risk(0, "high")
    correction = risk(0, "medium", supersedes=original["envelope"]["event_id"])

    state = view(original, correction)

    assert list(state.timeline) == [correction["envelope"]["event_id"]]
    assert state.status[SUBJECT].risk_level == "medium"
    [row] = state.tables()["view_corrections"]
    assert row["superseded_event_id"] == original["envelope"]["event_id"]
    assert row["corrected_by_event_id"] == correction["envelope"]["event_id"]


def test_original_arriving_after_its_correction_stays_hidden() -> None:
    original = risk(0, "high")
    correction = risk(0, "medium", supersedes=original["envelope"]["event_id"])

    assert digest(view(correction, original)) == digest(view(original, correction))


def test_retraction_deletes_the_event_and_status_is_recomputed_from_what_remains() -> None:
    first, second = risk(0, "high"), risk(10, "low")

    state = view(first, second, retraction(second, 20))

    assert list(state.timeline) == [first["envelope"]["event_id"]]
    assert state.status[SUBJECT].risk_level == "high"
    assert state.subjects[SUBJECT].events == 1


def test_retraction_is_recorded_without_content_and_removes_an_emptied_subject() -> None:
    only = risk(0, "very_high")

    state = view(only, retraction(only, 5, reason="erased"))
    tables = state.tables()

    assert tables["view_timeline"] == [] and tables["view_subjects"] == []
    assert tables["view_status"] == [] and tables["view_withheld"] == []
    [row] = tables["view_retractions"]
    assert set(row) == {
        "retraction_event_id", "retracted_event_id", "reason", "clause_id", "cause_event_id", "at"
    }  # fmt: skip
    assert (row["retracted_event_id"], row["reason"]) == (only["envelope"]["event_id"], "erased")
    assert "very_high" not in canonical_dump(tables).decode()


def test_event_retracted_before_it_arrives_is_never_shown() -> None:
    record = risk(0, "high")

    state = view(retraction(record, 5), record)

    assert state.timeline == {} and state.subjects == {}


def test_withheld_field_shows_as_withheld_with_its_clause() -> None:
    released = delivered(
        "custody.released",
        0,
        {"released_at": T0, "release_type": "on_licence", "establishment": "HMP Liverpool",
         "at_liberty": True, "supervising_body": "probation_crc"},
        withheld=("offender_manager",),
        clause="c4-mals-release",
    )  # fmt: skip

    state = view(released)
    tables = state.tables()

    row = tables["view_timeline"][0]
    assert "offender_manager" not in json.loads(row["payload"])
    assert json.loads(row["withheld"]) == [
        {"field": "offender_manager", "clause_id": "c4-mals-release"}
    ]
    assert tables["view_withheld"] == [
        {
            "event_id": released["envelope"]["event_id"],
            "field": "offender_manager",
            "clause_id": "c4-mals-release",
        }
    ]
    detail = status(state)
    assert detail["supervision"]["supervising_body"] == "probation_crc"
    assert detail["supervision"]["offender_manager"] is None
    assert detail["withheld"] == {"supervision.offender_manager": "c4-mals-release"}


def test_a_later_event_that_supplies_a_withheld_value_clears_the_mark() -> None:
    hidden = risk(0, "high", withheld=("risk_level",), clause="c9")
    shown = risk(5, "medium")

    assert status(view(hidden))["withheld"] == {"risk.level": "c9"}
    assert status(view(hidden, shown))["withheld"] == {}
    assert view(hidden, shown).status[SUBJECT].risk_level == "medium"


# -- exactly once: positions, ids, order ---------------------------------------------------------


def test_positions_below_the_stored_offset_are_skipped_and_ids_seen_are_not_applied_twice() -> None:
    records = [risk(i, "low") for i in range(3)]
    entries = [Decoded(("t", 0, i), r) for i, r in enumerate(records)]
    state = ViewState(AUDIENCE)

    apply_batch(state, entries)
    before = digest(state)
    replay = apply_batch(state, entries)
    moved = apply_batch(state, [Decoded(("t", 0, 9), records[1])])

    assert (replay.stale, replay.applied) == (3, 0)
    assert (moved.duplicates, moved.applied) == (1, 0)
    assert state.offsets[("t", 0)] == 10
    state.offsets[("t", 0)] = 3  # the only change the second copy made
    assert digest(state) == before


def test_undecodable_and_foreign_records_are_kept_as_rejects_and_the_offset_moves_on() -> None:
    foreign = risk(0, "low")
    foreign["disclosure"]["audience"] = "mals"
    bare = risk(1, "low")
    bare["disclosure"] = None
    entries: list[Entry] = [
        Undecodable(("t", 0, 0), "bad_magic", "t[0]@0: magic byte is 7, expected 0"),
        Decoded(("t", 0, 1), foreign),
        Decoded(("t", 0, 2), bare),
    ]

    state = ViewState(AUDIENCE)
    stats = apply_batch(state, entries)

    assert stats.rejected == 3
    assert {(r.offset, r.reason) for r in state.rejects.values()} == {
        (0, "bad_magic"),
        (1, "wrong_audience"),
        (2, "missing_disclosure"),
    }
    assert state.timeline == {} and state.offsets == {("t", 0): 3}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_tables_depend_only_on_what_was_read_not_on_batching_or_interleaving(seed: int) -> None:
    records = sample_deliveries(1500, audience=AUDIENCE, seed=seed, subjects=40)
    by_partition: dict[int, list[dict[str, Any]]] = {0: [], 1: [], 2: []}
    for record in records:
        by_partition[hash(record["envelope"]["subject"]["local_id"]) % 3].append(record)
    queues = {
        p: [Decoded(("t", p, i), r) for i, r in enumerate(rs)] for p, rs in by_partition.items()
    }

    def interleaved(rng: random.Random) -> list[Entry]:
        pending = {p: list(q) for p, q in queues.items() if q}
        out: list[Entry] = []
        while pending:
            p = rng.choice(sorted(pending))
            out.append(pending[p].pop(0))
            if not pending[p]:
                del pending[p]
        return out

    once = ViewState(AUDIENCE)
    apply_batch(once, [e for q in queues.values() for e in q])
    rng = random.Random(seed)
    again = ViewState(AUDIENCE)
    entries = interleaved(rng)
    start = 0
    while start < len(entries):  # random batches, each replaying part of the previous one
        size = rng.randrange(1, 300)
        apply_batch(again, entries[max(0, start - rng.randrange(0, 50)) : start + size])
        start += size

    assert digest(again) == digest(once)


# -- status --------------------------------------------------------------------------------------


def test_custody_then_release_then_recall() -> None:
    state = view(
        delivered("custody.received", 0, {"received_at": T0, "establishment": "HMP Liverpool",
                                          "reason": "sentenced"}),
        delivered("custody.released", 100, {"released_at": T0 + dt.timedelta(days=100),
                                            "release_type": "on_licence",
                                            "establishment": "HMP Liverpool", "at_liberty": True,
                                            "supervising_body": "probation_crc",
                                            "offender_manager": {"name": "J. Smith",
                                                                 "organisation": "probation_crc",
                                                                 "role": None, "phone": None,
                                                                 "email": None}}),
    )  # fmt: skip
    row = state.status[SUBJECT]
    assert (row.custody_status, row.licence_status, row.supervising_body, row.offender_manager) == (
        "released",
        "on_licence",
        "probation_crc",
        "J. Smith",
    )

    recalled = view(
        delivered("custody.released", 0, {"release_type": "on_licence"}),
        delivered("supervision.recall", 30, {"recalled_on": dt.date(2014, 7, 2),
                                             "recall_type": "fixed_term"}),
    )  # fmt: skip
    assert (recalled.status[SUBJECT].custody_status, recalled.status[SUBJECT].licence_status) == (
        "recalled",
        "recalled",
    )


def condition(cid: str, kind: str) -> dict[str, Any]:
    return {"condition_id": cid, "condition_type": kind, "summary": kind}


def test_licence_conditions_set_then_varied_and_breaches_counted() -> None:
    state = view(
        delivered("licence.conditions_set", 0, {"licence_start": dt.date(2014, 6, 2),
                                                "conditions": [condition("c1", "curfew"),
                                                               condition("c2", "reside_at")]}),
        delivered("licence.conditions_varied", 10, {"varied_on": dt.date(2014, 6, 12),
                                                    "conditions": [condition("c3", "drug_testing")],
                                                    "removed_condition_ids": ["c1"]}),
        delivered("supervision.breach_recorded", 20, {"breach_date": dt.date(2014, 6, 22),
                                                      "breach_type": "curfew"}),
    )  # fmt: skip

    licence = status(state)["licence"]
    assert [c["condition_id"] for c in licence["conditions"]] == ["c2", "c3"]
    assert (licence["status"], licence["breaches"]) == ("on_licence", 1)


def test_supervision_transfer_replaces_body_and_offender_manager() -> None:
    state = view(
        delivered("supervision.responsibility_assigned", 0, {"supervising_body": "probation_trust",
                                                             "effective_from": dt.date(2014, 1, 1),
                                                             "offender_manager": {"name": "A"}}),
        delivered("supervision.responsibility_transferred", 5, {
            "from_body": "probation_trust", "to_body": "probation_crc",
            "effective_from": dt.date(2014, 6, 1), "reason": "organisational_change",
            "new_offender_manager": {"name": "B"}}),
    )  # fmt: skip

    supervision = status(state)["supervision"]
    assert (supervision["supervising_body"], supervision["previous_body"]) == (
        "probation_crc",
        "probation_trust",
    )
    assert state.status[SUBJECT].offender_manager == "B"


def test_cohort_referrals_lcp_needs_outcomes_and_plans() -> None:
    state = view(
        delivered("iom.cohort_entered", 0, {"cohort": "knowsley_iom", "borough": "knowsley",
                                            "entry_date": dt.date(2014, 6, 2)}),
        delivered("referral.created", 1, {"referral_id": "r1", "programme": "mentoring",
                                          "receiving_org": "mals",
                                          "referred_on": dt.date(2014, 6, 3)}),
        delivered("referral.created", 2, {"referral_id": "r2", "programme": "lcp",
                                          "receiving_org": "mals",
                                          "referred_on": dt.date(2014, 6, 4)}),
        delivered("referral.accepted", 3, {"referral_id": "r1"}),
        delivered("referral.declined", 4, {"referral_id": "r2", "reason": "no_capacity"}),
        delivered("lcp.enrolled", 5, {"run_id": "run-1"}, agency="mals"),
        delivered("lcp.session_attended", 6, {"run_id": "run-1"}, agency="mals"),
        delivered("lcp.session_attended", 7, {"run_id": "run-1"}, agency="mals"),
        delivered("assessment.needs", 8, {"needs": [{"pathway": "accommodation",
                                                     "need_code": "debt"}]}),
        delivered("outcome.housing_secured", 9, {"housing_type": "social_rent",
                                                 "secured_on": dt.date(2014, 6, 11)},
                  agency="mals"),
        delivered("plan.life_change_created", 10, {"plan_id": "p1", "milestones": [
            {"milestone_id": "m1", "description": "bank account", "status": "planned"}]},
                  agency="mals"),
        delivered("plan.milestone_achieved", 11, {"plan_id": "p1", "milestone_id": "m1",
                                                  "achieved_on": dt.date(2014, 6, 13)},
                  agency="mals"),
    )  # fmt: skip
    row, detail = state.status[SUBJECT], status(state)

    assert (row.cohort, row.cohort_status, row.open_referrals, row.lcp_stage) == (
        "knowsley_iom",
        "in_cohort",
        1,
        "enrolled",
    )
    assert detail["referrals"]["r2"]["status"] == "declined"
    assert detail["lcp"]["counts"] == {"enrolled": 1, "session_attended": 2}
    assert detail["needs"]["items"] == [{"pathway": "accommodation", "need_code": "debt"}]
    assert detail["outcomes"][0]["outcome"] == "housing_secured"
    assert detail["plans"]["p1"]["milestones"]["m1"]["status"] == "achieved"

    closed = view(
        delivered("referral.created", 1, {"referral_id": "r1", "receiving_org": "mals"}),
        delivered("mentoring.closed", 9, {"closed_on": dt.date(2014, 6, 11),
                                          "reason": "completed"}, agency="mals"),
    )  # fmt: skip
    assert closed.status[SUBJECT].open_referrals == 0


def test_status_folded_in_two_steps_equals_folded_at_once() -> None:
    state = view(*sample_deliveries(400, audience=AUDIENCE, seed=5, subjects=1))
    rows = state.rows_of(next(iter(state.subjects)))
    half = len(rows) // 2

    stepped = derive_status(rows[half:], json.loads(json.dumps(derive_status(rows[:half]))))

    assert stepped == derive_status(rows)
