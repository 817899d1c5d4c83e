"""One contract for every policy-state backend (as eventsourcing's persistence tests do): the
in-memory state, SQLite and PostgreSQL. A new backend is done when this suite passes on it.

PostgreSQL runs when ``HUB_TEST_POSTGRES_URL`` names a database, or when ``initdb`` and
``pg_ctl`` are installed (a throwaway cluster is started for the module); otherwise it skips.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine

from hub.adapters.policy_store import SqlPolicyState, create_policy_tables, policy_metadata
from hub.domain.errors import InfraError, PolicyError
from hub.policy import MemoryState, PolicyState
from tests.golden.policy.builder import EventBuilder

JURISDICTIONS = {
    "police": "UK-ENG",
    "probation_trust": "UK-ENG",
    "probation_crc": "UK-ENG",
    "probation_nps": "UK-ENG",
    "hmp_liverpool": "UK-ENG",
    "mals": "UK-ENG",
    "kmbc": "UK-ENG",
    "gmp": "UK-ENG",
    "victim_liaison": "UK-ENG",
    "safety_house": "NL",
}
PEOPLE = {
    "jo": {
        "identifiers": {"pnc_id": "14/0000001J"},
        "local_ids": {
            "police": {"police_nominal_id": "MP-1"},
            "hmp_liverpool": {"prison_number": "A0001JO"},
            "probation_trust": {"probation_case_ref": "MPT-1"},
            "probation_crc": {"probation_case_ref": "CRC-1"},
            "kmbc": {"kmbc_iom_ref": "K-1"},
            "victim_liaison": {"victim_ref": "VLU-1"},
        },
    },
    "jo_at_mals": {"local_ids": {"mals": {"mals_client_id": "MALS-1"}}},
    "al": {
        "identifiers": {"pnc_id": "14/0000002A"},
        "local_ids": {"police": {"police_nominal_id": "MP-2"}, "mals": {"mals_client_id": "M-2"}},
    },
    "nl_person": {"local_ids": {"safety_house": {"sh_file_id": "SH-1"}}},
}


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


class PolicyStateContract:
    """Subclasses provide a ``state`` fixture returning a fresh, empty backend."""

    @pytest.fixture
    def events(self, catalogue: Any) -> Any:
        builder = EventBuilder(catalogue, JURISDICTIONS, PEOPLE, namespace="contract")
        counter = iter(range(10**6))

        def make(event_type: str, agency: str, who: Any, when: str, **payload: Any) -> dict:
            extra = {k: payload.pop(k) for k in ("supersedes", "effective_date") if k in payload}
            spec = {
                "type": event_type,
                "from": agency,
                "subject": who,
                "at": when,
                "payload": payload,
                **extra,
            }
            return builder.build(f"e{next(counter)}", spec)

        make.builder = builder  # type: ignore[attr-defined]
        return make

    # -- updates -----------------------------------------------------------------------------
    def test_apply_is_idempotent_by_event_id(self, state: PolicyState, events: Any) -> None:
        event = events(
            "iom.cohort_entered",
            "police",
            "jo",
            "2014-07-01T10:00:00Z",
            cohort="knowsley_iom",
            borough="Knowsley",
            selection_method="matrix_score",
            entry_date="2014-07-01",
        )
        assert state.apply_event(event) is True
        position = state.position(event["envelope"]["event_id"])
        assert position is not None
        assert state.apply_event(event) is False
        assert state.position(event["envelope"]["event_id"]) == position
        subject = state.subject_of(event)
        assert state.in_cohort(subject, at("2014-07-02T00:00:00Z"))

    def test_unapplied_events_have_no_position(self, state: PolicyState) -> None:
        assert state.position("never-applied") is None

    def test_a_failed_transaction_changes_nothing(self, state: Any, events: Any) -> None:
        event = events(
            "consent.given",
            "mals",
            "al",
            "2014-07-01T10:00:00Z",
            consent_id="C1",
            scopes=["research"],
            given_on="2014-07-01",
            captured_by="lead mentor",
        )
        with pytest.raises(RuntimeError), state.transaction():
            state.apply_event(event)
            raise RuntimeError("the Kafka transaction aborted")
        assert state.position(event["envelope"]["event_id"]) is None
        assert not state.consent_in_force(
            state.subject_of(event), "research", at("2014-07-02T00:00:00Z")
        )
        assert state.apply_event(event) is True

    # -- consent -----------------------------------------------------------------------------
    def test_consent_holds_from_given_until_withdrawn(
        self, state: PolicyState, events: Any
    ) -> None:
        given = events(
            "consent.given",
            "mals",
            "al",
            "2014-04-01T10:00:00Z",
            consent_id="C1",
            scopes=["share_progress_with_om", "research"],
            given_on="2014-04-01",
            captured_by="lead mentor",
        )
        withdrawn = events(
            "consent.withdrawn",
            "mals",
            "al",
            "2014-06-01T10:00:00Z",
            consent_id="C1",
            scopes=["research"],
            withdrawn_on="2014-06-01",
            captured_by="lead mentor",
        )
        state.apply_event(given)
        state.apply_event(withdrawn)
        s = state.subject_of(given)
        assert not state.consent_in_force(s, "research", at("2014-04-01T09:59:00Z"))
        assert state.consent_in_force(s, "research", at("2014-04-01T10:00:00Z"))
        assert state.consent_in_force(s, "research", at("2014-05-31T23:59:00Z"))
        # withdrawal counts from the start of its day
        assert not state.consent_in_force(s, "research", at("2014-06-01T08:00:00Z"))
        assert state.consent_in_force(s, "share_progress_with_om", at("2014-07-01T00:00:00Z"))
        assert not state.consent_in_force(s, "family_contact", at("2014-05-01T00:00:00Z"))

    def test_consent_scopes_change_and_expire(self, state: PolicyState, events: Any) -> None:
        given = events(
            "consent.given",
            "mals",
            "al",
            "2014-04-01T10:00:00Z",
            consent_id="C2",
            scopes=["share_progress_with_om"],
            given_on="2014-04-01",
            captured_by="lead mentor",
            expires_on="2014-12-31",
        )
        changed = events(
            "consent.scope_changed",
            "mals",
            "al",
            "2014-05-01T10:00:00Z",
            consent_id="C2",
            scopes=["research"],
            scopes_added=["research"],
            scopes_removed=["share_progress_with_om"],
            changed_on="2014-05-01",
            captured_by="lead mentor",
        )
        state.apply_event(given)
        state.apply_event(changed)
        s = state.subject_of(given)
        assert state.consent_in_force(s, "share_progress_with_om", at("2014-04-15T00:00:00Z"))
        assert not state.consent_in_force(s, "share_progress_with_om", at("2014-05-02T00:00:00Z"))
        assert state.consent_in_force(s, "research", at("2014-05-02T00:00:00Z"))
        assert not state.consent_in_force(s, "share_progress_with_om", at("2015-01-01T00:00:00Z"))

    def test_consent_follows_the_person_across_agencies(
        self, state: PolicyState, events: Any
    ) -> None:
        given = events(
            "consent.given",
            "mals",
            "al",
            "2014-04-01T10:00:00Z",
            consent_id="C3",
            scopes=["research"],
            given_on="2014-04-01",
            captured_by="lead mentor",
        )
        arrest = events(
            "police.arrest",
            "police",
            "al",
            "2014-05-01T10:00:00Z",
            arrested_at="2014-05-01T10:00:00Z",
            force="police",
            offence_type="burglary",
        )
        state.apply_event(given)
        state.apply_event(arrest)
        assert state.subject_of(arrest) == state.subject_of(given)
        assert state.consent_in_force(
            state.subject_of(arrest), "research", at("2014-05-01T10:00:00Z")
        )

    # -- cohort, referrals, supervision, mentor ----------------------------------------------
    def test_cohort_membership_has_entry_and_exit_dates(
        self, state: PolicyState, events: Any
    ) -> None:
        entered = events(
            "iom.cohort_entered",
            "police",
            "jo",
            "2014-07-01T10:00:00Z",
            cohort="knowsley_iom",
            borough="Knowsley",
            selection_method="matrix_score",
            entry_date="2014-07-01",
        )
        exited = events(
            "iom.cohort_exited",
            "police",
            "jo",
            "2014-09-02T10:00:00Z",
            cohort="knowsley_iom",
            exit_date="2014-09-01",
            exit_reason="moved_out_of_force_area",
        )
        state.apply_event(entered)
        state.apply_event(exited)
        s = state.subject_of(entered)
        assert not state.in_cohort(s, at("2014-06-30T23:00:00Z"))
        assert state.in_cohort(s, at("2014-07-01T00:00:00Z"))
        assert state.in_cohort(s, at("2014-08-31T23:59:00Z"))
        assert not state.in_cohort(s, at("2014-09-01T00:00:00Z"))

    def test_referrals_open_and_close(self, state: PolicyState, events: Any) -> None:
        created = events(
            "referral.created",
            "probation_crc",
            "jo",
            "2014-07-01T10:00:00Z",
            referral_id="R1",
            programme="mentoring",
            referred_on="2014-07-01",
            referrer_org="probation_crc",
            receiving_org="mals",
        )
        declined = events(
            "referral.declined",
            "mals",
            "jo_at_mals",
            "2014-07-10T10:00:00Z",
            referral_id="R1",
            declined_on="2014-07-10",
            reason="no_capacity",
        )
        state.apply_event(created)
        s = state.subject_of(created)
        t = at("2014-07-05T00:00:00Z")
        assert state.open_referral(s, "mals", t)
        assert state.open_referral(s, "mals", t, from_agency="probation_crc")
        assert not state.open_referral(s, "mals", t, from_agency="police")
        assert not state.open_referral(s, "kmbc", t)
        state.apply_event(declined)
        assert state.open_referral(s, "mals", t)
        assert not state.open_referral(s, "mals", at("2014-07-11T00:00:00Z"))

    def test_mentoring_closure_closes_referral_and_mentor(
        self, state: PolicyState, events: Any
    ) -> None:
        created = events(
            "referral.created",
            "police",
            "al",
            "2014-07-01T10:00:00Z",
            referral_id="R2",
            programme="mentoring",
            referred_on="2014-07-01",
            referrer_org="police",
            receiving_org="mals",
        )
        mentor = events(
            "mentor.assigned",
            "mals",
            "al",
            "2014-07-02T10:00:00Z",
            organisation="mals",
            mentor_id="M9",
            assigned_on="2014-07-02",
        )
        closed = events(
            "mentoring.closed",
            "mals",
            "al",
            "2014-10-01T10:00:00Z",
            closed_on="2014-10-01",
            reason="completed",
        )
        for event in (created, mentor, closed):
            state.apply_event(event)
        s = state.subject_of(created)
        assert state.mentor_of(s, at("2014-08-01T00:00:00Z")) == ("mals", "M9")
        assert state.open_referral(s, "mals", at("2014-08-01T00:00:00Z"))
        assert state.mentor_of(s, at("2014-10-02T00:00:00Z")) is None
        assert not state.open_referral(s, "mals", at("2014-10-02T00:00:00Z"))

    def test_supervision_transfer_moves_supervisor_and_open_referrals(
        self, state: PolicyState, events: Any
    ) -> None:
        assigned = events(
            "supervision.responsibility_assigned",
            "probation_trust",
            "jo",
            "2014-01-10T10:00:00Z",
            supervising_body="probation_trust",
            effective_from="2014-01-10",
            supervision_end="2015-01-09",
        )
        referral = events(
            "referral.created",
            "probation_trust",
            "jo",
            "2014-03-01T10:00:00Z",
            referral_id="R3",
            programme="mentoring",
            referred_on="2014-03-01",
            referrer_org="probation_trust",
            receiving_org="mals",
        )
        transfer = events(
            "supervision.responsibility_transferred",
            "probation_trust",
            "jo",
            "2014-05-30T10:00:00Z",
            from_body="probation_trust",
            to_body="probation_crc",
            effective_from="2014-06-01",
            reason="organisational_change",
        )
        for event in (assigned, referral, transfer):
            state.apply_event(event)
        s = state.subject_of(assigned)
        assert state.supervisor(s, at("2014-05-31T23:00:00Z")) == "probation_trust"
        assert state.supervisor(s, at("2014-06-01T00:00:00Z")) == "probation_crc"
        assert state.supervisor(s, at("2015-01-10T00:00:00Z")) is None  # supervision ended
        t = at("2014-06-02T00:00:00Z")
        assert state.open_referral(s, "mals", t, from_agency="probation_crc")
        assert not state.open_referral(s, "mals", t, from_agency="probation_trust")
        assert state.open_referral(
            s, "mals", at("2014-05-01T00:00:00Z"), from_agency="probation_trust"
        )

    def test_release_names_the_supervising_body(self, state: PolicyState, events: Any) -> None:
        released = events(
            "custody.released",
            "hmp_liverpool",
            "jo",
            "2015-03-02T09:30:00Z",
            released_at="2015-03-02T09:30:00Z",
            release_type="on_licence",
            establishment="HMP Liverpool",
            at_liberty=True,
            supervising_body="probation_crc",
            supervision_end_date="2016-03-01",
        )
        state.apply_event(released)
        s = state.subject_of(released)
        assert state.supervisor(s, at("2015-03-02T09:00:00Z")) is None
        assert state.supervisor(s, at("2015-03-03T00:00:00Z")) == "probation_crc"
        assert state.supervisor(s, at("2016-03-02T00:00:00Z")) is None

    def test_victim_and_cross_border_cases_count_as_open_referrals(
        self, state: PolicyState, events: Any
    ) -> None:
        due = events(
            "victim.release_notification_due",
            "hmp_liverpool",
            "jo",
            "2015-04-11T09:00:00Z",
            victim_ref="V-1",
            offence_class="serious_violent",
            release_date="2015-06-01",
            victim_liaison_officer={"organisation": "victim_liaison"},
        )
        notice = events(
            "cross_border.notification",
            "police",
            "jo",
            "2015-04-12T09:00:00Z",
            sending_force="police",
            receiving_force="gmp",
            moved_on="2015-04-12",
        )
        state.apply_event(due)
        state.apply_event(notice)
        s = state.subject_of(due)
        assert state.open_referral(s, "victim_liaison", at("2015-04-11T10:00:00Z"))
        assert state.open_referral(s, "gmp", at("2015-04-12T10:00:00Z"))
        assert not state.open_referral(s, "gmp", at("2015-04-11T10:00:00Z"))

    # -- positions: decisions as of what was known -------------------------------------------
    def test_queries_as_of_a_position_ignore_later_events(
        self, state: PolicyState, events: Any
    ) -> None:
        moved = events(
            "person.address_changed",
            "police",
            "jo",
            "2015-03-01T10:00:00Z",
            address={"area": "Salford"},
            effective_from="2015-03-01",
        )
        notice = events(
            "cross_border.notification",
            "police",
            "jo",
            "2015-03-02T11:00:00Z",
            sending_force="police",
            receiving_force="gmp",
            moved_on="2015-03-01",
        )
        state.apply_event(moved)
        state.apply_event(notice)
        s = state.subject_of(moved)
        t = at("2015-03-01T10:00:00Z")
        assert state.open_referral(s, "gmp", t)  # the case covers the move, in hindsight...
        first = state.position(moved["envelope"]["event_id"])
        assert not state.open_referral(s, "gmp", t, seq=first)  # ...not as first known
        second = state.position(notice["envelope"]["event_id"])
        assert first is not None and second is not None and second > first
        assert state.open_referral(s, "gmp", t, seq=second)

    def test_a_correction_voids_what_the_superseded_event_said(
        self, state: PolicyState, events: Any
    ) -> None:
        wrong = events(
            "iom.cohort_entered",
            "police",
            "jo",
            "2014-07-01T10:00:00Z",
            cohort="knowsley_iom",
            borough="Knowsley",
            selection_method="matrix_score",
            entry_date="2014-07-01",
        )
        fixed = events(
            "iom.cohort_entered",
            "police",
            "jo",
            "2014-07-05T10:00:00Z",
            cohort="knowsley_iom",
            borough="Knowsley",
            selection_method="matrix_score",
            entry_date="2014-08-01",
            supersedes="e0",
        )
        state.apply_event(wrong)
        before = state.position(wrong["envelope"]["event_id"])
        state.apply_event(fixed)
        s = state.subject_of(wrong)
        assert not state.in_cohort(s, at("2014-07-15T00:00:00Z"))
        assert state.in_cohort(s, at("2014-08-15T00:00:00Z"))
        assert state.in_cohort(s, at("2014-07-15T00:00:00Z"), seq=before)

    def test_a_corrected_withdrawal_restores_the_consent(
        self, state: PolicyState, events: Any
    ) -> None:
        given = events(
            "consent.given",
            "mals",
            "al",
            "2014-04-01T10:00:00Z",
            consent_id="C4",
            scopes=["research", "share_progress_with_om"],
            given_on="2014-04-01",
            captured_by="lead mentor",
        )
        withdrawn = events(
            "consent.withdrawn",
            "mals",
            "al",
            "2014-06-01T10:00:00Z",
            consent_id="C4",
            scopes=["research", "share_progress_with_om"],
            withdrawn_on="2014-06-01",
            captured_by="lead mentor",
        )
        corrected = events(
            "consent.withdrawn",
            "mals",
            "al",
            "2014-06-02T10:00:00Z",
            consent_id="C4",
            scopes=["research"],
            withdrawn_on="2014-06-01",
            captured_by="lead mentor",
            supersedes="e1",
        )
        for event in (given, withdrawn, corrected):
            state.apply_event(event)
        s = state.subject_of(given)
        later = at("2014-07-01T00:00:00Z")
        assert state.consent_in_force(s, "share_progress_with_om", later)
        assert not state.consent_in_force(s, "research", later)

    # -- identity ----------------------------------------------------------------------------
    def test_strong_identifiers_link_agencies_deterministically(
        self, state: PolicyState, events: Any
    ) -> None:
        arrest = events(
            "police.arrest",
            "police",
            "jo",
            "2014-05-01T10:00:00Z",
            arrested_at="2014-05-01T10:00:00Z",
            force="police",
            offence_type="burglary",
        )
        received = events(
            "custody.received",
            "hmp_liverpool",
            "jo",
            "2014-05-02T10:00:00Z",
            received_at="2014-05-02T10:00:00Z",
            establishment="HMP Liverpool",
            reason="remanded",
        )
        # Before anything is applied both already resolve to the same id (both hold the PNC id).
        assert state.subject_of(arrest) == state.subject_of(received)
        state.apply_event(arrest)
        state.apply_event(received)
        s = state.subject_of(arrest)
        assert state.local_id_for(s, "police") == "MP-1"
        assert state.local_identifier_for(s, "hmp_liverpool") == ("prison_number", "A0001JO")
        assert state.local_id_for(s, "kmbc") is None

    def test_identifier_links_merge_subjects(self, state: PolicyState, events: Any) -> None:
        consent = events(
            "consent.given",
            "mals",
            "jo_at_mals",
            "2014-04-01T10:00:00Z",
            consent_id="C5",
            scopes=["research"],
            given_on="2014-04-01",
            captured_by="lead mentor",
        )
        arrest = events(
            "police.arrest",
            "police",
            "jo",
            "2014-05-01T10:00:00Z",
            arrested_at="2014-05-01T10:00:00Z",
            force="police",
            offence_type="burglary",
        )
        state.apply_event(consent)
        state.apply_event(arrest)
        assert state.subject_of(consent) != state.subject_of(arrest)
        link = events(
            "person.identifier_linked",
            "mals",
            "jo_at_mals",
            "2014-05-10T10:00:00Z",
            identifier_scheme="pnc_id",
            identifier_value="14/0000001J",
            match_method="manual",
        )
        state.apply_event(link)
        s = state.subject_of(arrest)
        assert state.subject_of(consent) == s
        assert state.consent_in_force(s, "research", at("2014-06-01T00:00:00Z"))
        assert state.local_id_for(s, "mals") == "MALS-1"
        assert state.local_id_for(s, "police") == "MP-1"

    def test_a_retracted_link_stops_linking(self, state: PolicyState, events: Any) -> None:
        link = events(
            "person.identifier_linked",
            "mals",
            "jo_at_mals",
            "2014-05-10T10:00:00Z",
            identifier_scheme="pnc_id",
            identifier_value="14/0000009X",
            match_method="manual",
        )
        state.apply_event(link)
        other = events(
            "police.arrest",
            "police",
            {
                "local_id": "MP-9",
                "scheme": "police_nominal_id",
                "identifiers": {"pnc_id": "14/0000009X"},
            },
            "2014-05-11T10:00:00Z",
            arrested_at="2014-05-11T10:00:00Z",
            force="police",
            offence_type="burglary",
        )
        assert state.subject_of(other) == state.subject_of(link)
        retract = events(
            "record.link_retracted",
            "mals",
            "jo_at_mals",
            "2014-05-12T10:00:00Z",
            identifier_scheme="pnc_id",
            identifier_value="14/0000009X",
            reason="mislinked_record",
            retracted_by="MALS manager",
        )
        state.apply_event(retract)
        assert state.subject_of(other) != state.subject_of(link)

    def test_record_subjects_never_link_to_people(self, state: PolicyState, events: Any) -> None:
        run = events(
            "lcp.run_scheduled",
            "mals",
            {"local_id": "14/0000001J", "scheme": "lcp_run_id"},
            "2014-08-01T10:00:00Z",
            run_id="R-1",
            setting="custodial",
            venue="HMP Liverpool",
            start_date="2014-09-01",
        )
        arrest = events(
            "police.arrest",
            "police",
            "jo",
            "2014-05-01T10:00:00Z",
            arrested_at="2014-05-01T10:00:00Z",
            force="police",
            offence_type="burglary",
        )
        state.apply_event(run)
        state.apply_event(arrest)
        assert state.subject_of(run).startswith("rec-")
        assert state.subject_of(run) != state.subject_of(arrest)

    def test_the_same_number_in_two_jurisdictions_is_two_people(
        self, state: PolicyState, events: Any
    ) -> None:
        uk = events(
            "custody.received",
            "hmp_liverpool",
            {"local_id": "12345", "scheme": "prison_number"},
            "2014-05-02T10:00:00Z",
            received_at="2014-05-02T10:00:00Z",
            establishment="HMP Liverpool",
            reason="remanded",
        )
        nl = events(
            "sh.case_reported",
            "safety_house",
            {"local_id": "12345", "scheme": "prison_number"},
            "2014-05-02T10:00:00Z",
            case_id="SH-9",
            reported_on="2014-05-02",
            reported_by_org="nl_police",
            reason="theft",
        )
        assert state.subject_of(uk) != state.subject_of(nl)

    # -- deliveries --------------------------------------------------------------------------
    def test_deliveries_are_recorded_once_and_retracted(self, state: PolicyState) -> None:
        state.record_delivery(
            "E1", "probation_crc", "hs-1", "mals-20", True, "share_progress_with_om"
        )
        state.record_delivery(
            "E1", "probation_crc", "hs-1", "mals-20", True, "share_progress_with_om"
        )
        state.record_delivery(
            "E1", "police.iom", "hs-1", "mals-21", True, "share_progress_with_iom"
        )
        state.record_delivery("E2", "police", "hs-1", "kiom-1", False, None)
        state.record_delivery("E3", "ljmu", "hs-2", "ljmu-1", True, "research")
        assert state.deliveries_of("E1") == ["police.iom", "probation_crc"]
        assert state.consent_based_deliveries(
            "hs-1", ["share_progress_with_om", "share_progress_with_iom"]
        ) == [
            ("E1", "probation_crc", "mals-20"),
            ("E1", "police.iom", "mals-21"),
        ]
        assert state.consent_based_deliveries("hs-1", ["research"]) == []
        state.mark_retracted("E1", "probation_crc")
        assert state.deliveries_of("E1") == ["police.iom"]
        assert state.consent_based_deliveries("hs-1", ["share_progress_with_om"]) == []

    def test_queries_need_a_time(self, state: PolicyState) -> None:
        with pytest.raises(PolicyError):
            state.in_cohort("hs-1", None)


class TestMemoryState(PolicyStateContract):
    @pytest.fixture
    def state(self, catalogue: Any) -> MemoryState:
        return MemoryState(catalogue)


class TestSqliteState(PolicyStateContract):
    @pytest.fixture
    def state(self, catalogue: Any, tmp_path: Path) -> Iterator[SqlPolicyState]:
        engine = create_engine(f"sqlite:///{tmp_path / 'policy.db'}")
        create_policy_tables(engine)
        yield SqlPolicyState(engine, catalogue)
        engine.dispose()

    def test_state_survives_a_restart(
        self, state: SqlPolicyState, events: Any, catalogue: Any
    ) -> None:
        event = events(
            "iom.cohort_entered",
            "police",
            "jo",
            "2014-07-01T10:00:00Z",
            cohort="knowsley_iom",
            borough="Knowsley",
            selection_method="matrix_score",
            entry_date="2014-07-01",
        )
        state.apply_event(event)
        again = SqlPolicyState(state.engine, catalogue)
        assert again.apply_event(event) is False
        assert again.position(event["envelope"]["event_id"]) == state.position(
            event["envelope"]["event_id"]
        )
        assert again.in_cohort(again.subject_of(event), at("2014-08-01T00:00:00Z"))

    def test_other_stores_can_share_the_transaction(self, state: SqlPolicyState) -> None:
        with pytest.raises(InfraError):
            state.current_connection()
        with state.transaction():
            assert state.current_connection() is state.current_connection()


# --- PostgreSQL -------------------------------------------------------------------------------


class TestPostgresState(PolicyStateContract):
    @pytest.fixture
    def state(self, catalogue: Any, postgres_url: str) -> Iterator[SqlPolicyState]:
        engine: Engine = create_engine(postgres_url)
        policy_metadata.drop_all(engine)
        create_policy_tables(engine)
        yield SqlPolicyState(engine, catalogue)
        policy_metadata.drop_all(engine)
        engine.dispose()
