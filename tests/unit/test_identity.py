"""Identity without Kafka: name similarity, the MALS pseudonym loop, merges and unlinks as
records the views follow, event-level link retraction (S8), candidate proposals; and the view
projection's handling of merges (any order gives the same tables)."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import pytest

from hub.identity import MERGED, PROPOSED, candidate_id
from hub.policy import MemoryState, PseudonymKeys
from hub.policy.similarity import name_key, similar
from hub.router import Router, RouterConfig
from hub.serde.codec import AvroCodec
from hub.topics import Topics
from hub.views.projection import Decoded, ViewState, apply_batch, canonical_dump
from hub.views.samples import sample_deliveries
from tests.golden.policy.builder import EventBuilder
from tests.unit.test_router_process import (
    AGREEMENTS,
    CATALOGUE,
    JURISDICTIONS,
    DictSeen,
    MemoryRegistry,
    _dlq_reason,
    _process,
)

PEOPLE = {
    "jordan": {
        "identifiers": {},
        "local_ids": {
            "probation_crc": {"probation_case_ref": "CRC-77"},
            "hmp_liverpool": {"prison_number": "A7777JJ"},
            "police": {"police_nominal_id": "MP-77"},
        },
    },
}
T = Topics()


@pytest.fixture
def codec() -> AvroCodec:
    codec = AvroCodec(CATALOGUE, MemoryRegistry())
    codec.register_all()
    return codec


@pytest.fixture
def router(codec: AvroCodec) -> Router:
    return Router(
        topics=T, codec=codec, agreements=AGREEMENTS, state=MemoryState(CATALOGUE),
        keys=PseudonymKeys(b"unit-test-master-key-0123456789"), seen=DictSeen(),
        config=RouterConfig(storm_threshold=1000),
    )  # fmt: skip


def _event(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    from tests.factory import EventFactory

    payload = {**EventFactory(CATALOGUE, seed=3).payload(spec["type"]), **spec.get("payload", {})}
    builder = EventBuilder(CATALOGUE, JURISDICTIONS, PEOPLE, namespace="identity")
    return builder.build(name, {**spec, "payload": payload})


def _delivered(outputs: list[Any], codec: Any, audience: str) -> list[dict[str, Any]]:
    topic = T.deliver(audience)
    return [codec.decode(o.value, topic, 0, 0)[1] for o in outputs if o.topic == topic]


# -- similarity ---------------------------------------------------------------------------------


def test_names_are_folded_and_token_order_is_ignored() -> None:
    assert name_key("José  Smith-Jones") == name_key("SMITH jones, Jose") == "jones jose smith"


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("Jordan Smith", "Smith Jordan", 1.0),
        ("Jordan Smith", "Jordon Smith", "near"),
        ("Jordan Smith", "Jordan Smyth", "near"),
        ("Jordan Smith", "Jordan Brown", None),
        ("Al Li", "Bo Li", None),
    ],
)
def test_similar_names_score_and_different_ones_do_not(a: str, b: str, expected: Any) -> None:
    score = similar(name_key(a), name_key(b))
    if expected == "near":
        assert score is not None and 0.5 < score < 1.0
    else:
        assert score == expected


# -- the MALS loop: a pseudonym the hub issued to MALS links back --------------------------------


def _referral_to_mals(router: Router, codec: Any) -> str:
    """Jordan is supervised by the CRC and referred to MALS; MALS gets him under a pseudonym."""
    steps = [
        {"type": "supervision.responsibility_assigned", "from": "probation_crc",
         "subject": "jordan", "at": "2015-01-05T09:00:00Z",
         "payload": {"supervising_body": "probation_crc", "effective_from": "2015-01-05",
                     "supervision_end": "2016-01-05"}},
        {"type": "referral.created", "from": "probation_crc", "subject": "jordan",
         "at": "2015-01-06T09:00:00Z",
         "payload": {"receiving_org": "mals", "referrer_org": "probation_crc",
                     "referral_id": "REF-77"}},
    ]  # fmt: skip
    outputs: list[Any] = []
    for i, spec in enumerate(steps):
        outputs = _process(router, codec, _event(f"ref{i}", spec))
        assert _dlq_reason(outputs) is None
    (referral,) = _delivered(outputs, codec, "mals")
    subject = referral["envelope"]["subject"]
    assert subject["local_id_scheme"] == "hub_pseudonym"
    return str(subject["local_id"])


def _from_mals(name: str, event_type: str, at: str, pseudonym: str, **payload: Any) -> Any:
    who = {"local_id": "MALS-0108", "scheme": "mals_client_id",
           "identifiers": {"hub_pseudonym": pseudonym}}  # fmt: skip
    return _event(name, {"type": event_type, "from": "mals", "subject": who, "at": at,
                         "payload": payload})  # fmt: skip


def _mals_progress(router: Router, codec: Any, pseudonym: str) -> list[dict[str, Any]]:
    consent = _from_mals("consent", "consent.given", "2015-01-07T10:00:00Z", pseudonym,
                         consent_id="CON-1", scopes=["share_progress_with_om"],
                         expires_on=None)  # fmt: skip
    assert _dlq_reason(_process(router, codec, consent)) is None
    contact = _from_mals("contact", "mentoring.contact", "2015-01-08T10:00:00Z", pseudonym)
    outputs = _process(router, codec, contact)
    assert _dlq_reason(outputs) is None
    return _delivered(outputs, codec, "probation_crc")


def test_mals_progress_about_a_pseudonym_it_was_sent_reaches_the_offender_manager(
    router: Router, codec: Any
) -> None:
    pseudonym = _referral_to_mals(router, codec)

    delivered = _mals_progress(router, codec, pseudonym)

    (contact,) = delivered
    assert contact["envelope"]["subject"]["local_id"] == "CRC-77"
    assert contact["disclosure"]["clause_id"] == "mals-20"
    # and MALS is now addressed by its own client id
    assert router.state.local_identifier_for(
        router.state.subject_of(contact), "mals"
    ) == ("mals_client_id", "MALS-0108")


def test_a_pseudonym_issued_to_another_agency_links_nothing(router: Router, codec: Any) -> None:
    _referral_to_mals(router, codec)
    other = router.keys.pseudonym("kmbc", router.state.subject_of(_event("x", {
        "type": "iom.cohort_entered", "from": "probation_crc", "subject": "jordan",
        "at": "2015-01-05T09:00:00Z"})))  # fmt: skip

    assert _mals_progress(router, codec, other) == []


# -- merges, unlinks and mis-linked events -------------------------------------------------------


def _police_and_prison(router: Router, codec: Any) -> None:
    """Police and the prison know Jordan under ids that are not yet linked (two subjects)."""
    for i, (agency, event_type) in enumerate(
        [("police", "iom.cohort_entered"), ("hmp_liverpool", "custody.release_scheduled")]
    ):
        spec = {"type": event_type, "from": agency, "subject": "jordan",
                "at": f"2015-02-0{i + 1}T09:00:00Z"}  # fmt: skip
        if event_type == "iom.cohort_entered":
            spec["payload"] = {"cohort": "knowsley_iom", "entry_date": "2015-02-01"}
        assert _dlq_reason(_process(router, codec, _event(f"pp{i}", spec))) is None


def _link(name: str, retract: bool = False, unlinked: tuple[str, str] | None = None
          ) -> dict[str, Any]:  # fmt: skip
    spec: dict[str, Any] = {"from": "police", "subject": "jordan", "at": "2015-02-10T09:00:00Z"}
    if retract:
        scheme, value = unlinked or ("prison_number", "A7777JJ")
        return _event(name, {**spec, "type": "record.link_retracted", "payload": {
            "identifier_scheme": scheme, "identifier_value": value,
            "retracted_event_id": None, "reason": "mislinked_record", "retracted_by": "u1"}})
    return _event(name, {**spec, "type": "person.identifier_linked", "payload": {
        "identifier_scheme": "prison_number", "identifier_value": "A7777JJ",
        "match_method": "manual", "matched_by": "u1"}})  # fmt: skip


def test_a_link_merges_two_subjects_and_every_audience_is_told_how_it_knew_them(
    router: Router, codec: Any
) -> None:
    _police_and_prison(router, codec)
    audiences = set(router.state.audiences_of(router.state.subject_of(_event("q", {
        "type": "iom.cohort_entered", "from": "police", "subject": "jordan",
        "at": "2015-02-01T09:00:00Z"}))))  # fmt: skip

    outputs = _process(router, codec, _link("link"))

    merged = {a: _delivered(outputs, codec, a) for a in AGREEMENTS.audiences()}
    told = {a for a, records in merged.items() if any(
        r["envelope"]["event_type"] == MERGED for r in records)}  # fmt: skip
    assert told and told <= audiences | set(router.state.audiences_of(
        router.state.subject_of(_link("again"))))  # fmt: skip
    for audience in told:
        for record in (r for r in merged[audience] if r["envelope"]["event_type"] == MERGED):
            assert record["merged_local_id"] != record["envelope"]["subject"]["local_id"]
            assert record["envelope"]["source_agency"] == "hub"


@pytest.mark.parametrize(
    "unlinked", [("prison_number", "A7777JJ"), ("police_nominal_id", "MP-77")],
    ids=["the-linked-identifier", "the-other-side"],
)
def test_an_unlink_retracts_the_merge_records(
    router: Router, codec: Any, unlinked: tuple[str, str]
) -> None:
    _police_and_prison(router, codec)
    linked = _process(router, codec, _link("link"))
    merges = {
        (o.topic, r["envelope"]["event_id"])
        for a in AGREEMENTS.audiences()
        for o, r in zip(
            [o for o in linked if o.topic == T.deliver(a)], _delivered(linked, codec, a),
            strict=True,
        )
        if r["envelope"]["event_type"] == MERGED
    }
    assert merges

    outputs = _process(router, codec, _link("unlink", retract=True, unlinked=unlinked))

    retracted = {
        (T.deliver(a), r["retracted_event_id"])
        for a in AGREEMENTS.audiences()
        for r in _delivered(outputs, codec, a)
        if r["envelope"]["event_type"] == "delivery.retracted"
    }
    assert retracted == merges
    # and the state holds two people again: police's id is no longer the prison's subject's
    prison = _event("p", {"type": "custody.release_scheduled", "from": "hmp_liverpool",
                          "subject": "jordan", "at": "2015-02-11T09:00:00Z"})  # fmt: skip
    police = _event("q", {"type": "iom.cohort_entered", "from": "police", "subject": "jordan",
                          "at": "2015-02-11T09:00:00Z"})  # fmt: skip
    assert router.state.subject_of(prison) != router.state.subject_of(police)
    assert router.state.local_identifier_for(router.state.subject_of(prison), "police") is None
    assert router.state.local_identifier_for(router.state.subject_of(police), "police") == (
        "police_nominal_id", "MP-77")


def test_a_mislinked_event_is_retracted_from_everyone_who_got_it(
    router: Router, codec: Any
) -> None:
    pseudonym = _referral_to_mals(router, codec)
    (contact,) = _mals_progress(router, codec, pseudonym)
    retraction = _from_mals("mislink", "record.link_retracted", "2015-01-09T10:00:00Z",
                            pseudonym, retracted_event_id=contact["envelope"]["event_id"],
                            identifier_scheme=None, identifier_value=None,
                            reason="mislinked_record", retracted_by="mals-manager")  # fmt: skip

    outputs = _process(router, codec, retraction)

    (withdrawn,) = [
        r for r in _delivered(outputs, codec, "probation_crc")
        if r["envelope"]["event_type"] == "delivery.retracted"
    ]  # fmt: skip
    assert withdrawn["retracted_event_id"] == contact["envelope"]["event_id"]
    assert withdrawn["reason"] == "link_retracted"


def test_only_the_source_may_retract_the_link_of_its_event(router: Router, codec: Any) -> None:
    pseudonym = _referral_to_mals(router, codec)
    (contact,) = _mals_progress(router, codec, pseudonym)
    forged = _event("forged", {"type": "record.link_retracted", "from": "police",
                               "subject": "jordan", "at": "2015-01-09T10:00:00Z", "payload": {
        "retracted_event_id": contact["envelope"]["event_id"], "reason": "mislinked_record",
        "retracted_by": "x", "identifier_scheme": None, "identifier_value": None}})  # fmt: skip

    assert _dlq_reason(_process(router, codec, forged)) == "forged_correction"


@pytest.mark.parametrize("event_type", [MERGED, PROPOSED, "identity.candidate_decided"])
def test_partners_may_not_publish_the_hubs_identity_records(
    router: Router, codec: Any, event_type: str
) -> None:
    event = _event("hubonly", {"type": event_type, "from": "police", "subject": "jordan",
                               "at": "2015-01-09T10:00:00Z"})  # fmt: skip
    assert _dlq_reason(_process(router, codec, event)) == "reserved_event_type"


# -- candidates ----------------------------------------------------------------------------------


def _registered(name: str, agency: str, who: dict[str, Any], given: str, family: str,
                born: str) -> dict[str, Any]:  # fmt: skip
    return _event(name, {"type": "person.registered", "from": agency, "subject": who,
                         "at": "2015-03-01T09:00:00Z", "payload": {
        "given_name": given, "family_name": family, "date_of_birth": born}})  # fmt: skip


def test_similar_people_are_proposed_never_merged(router: Router, codec: Any) -> None:
    mals = {"local_id": "MALS-0200", "scheme": "mals_client_id"}
    police = {"local_id": "MP-200", "scheme": "police_nominal_id"}
    first = _registered("r1", "mals", mals, "José", "Smith", "1990-04-01")
    assert _dlq_reason(_process(router, codec, first)) is None

    outputs = _process(router, codec, _registered("r2", "police", police, "JOSE", "SMITH",
                                                  "1990-04-01"))  # fmt: skip

    proposals = [codec.decode(o.value, o.topic, 0, 0)[1] for o in outputs
                 if o.topic == T.identity]  # fmt: skip
    (proposal,) = proposals
    a, b = router.state.subject_of(first), router.state.subject_of(_registered(
        "r2", "police", police, "JOSE", "SMITH", "1990-04-01"))  # fmt: skip
    assert a != b, "a name and date of birth never merge on their own"
    assert proposal["candidate_id"] == candidate_id(a, b)
    assert {proposal["left_ref"], proposal["right_ref"]} == {
        "mals|mals_client_id|MALS-0200", "police|police_nominal_id|MP-200"}
    assert proposal["date_of_birth"] == dt.date(1990, 4, 1)


def test_another_date_of_birth_is_no_candidate() -> None:
    state = MemoryState(CATALOGUE)
    mals = {"local_id": "MALS-0201", "scheme": "mals_client_id"}
    police = {"local_id": "MP-201", "scheme": "police_nominal_id"}
    state.apply_event(_registered("r3", "mals", mals, "Ann", "Lee", "1990-04-01"))
    other = _registered("r4", "police", police, "Ann", "Lee", "1990-04-02")
    state.apply_event(other)

    assert state.candidates_for(other) == []


# -- the view follows merges ---------------------------------------------------------------------


def _entries(records: list[dict[str, Any]]) -> list[Decoded]:
    return [Decoded(("deliver.mals", 0, i), r) for i, r in enumerate(records)]


def test_any_order_of_merges_and_retractions_gives_the_same_view() -> None:
    records = sample_deliveries(600, seed=5, subjects=12, merges=0.05)
    dumps = set()
    for seed in range(4):
        shuffled = records[:]
        random.Random(seed).shuffle(shuffled)
        state = ViewState("mals")
        apply_batch(state, _entries(shuffled))
        dumps.add(canonical_dump(state.tables()))
    assert len(dumps) == 1


def test_a_merge_files_both_timelines_under_one_subject_and_its_retraction_splits_them() -> None:
    records = sample_deliveries(40, seed=6, subjects=2, corrections=0, retractions=0)
    keys = sorted({(r["envelope"]["subject"]["local_id_scheme"],
                    r["envelope"]["subject"]["local_id"]) for r in records})  # fmt: skip
    (old, new) = keys
    merge = {**sample_deliveries(1, seed=7, subjects=1)[0]}
    merge = {
        "envelope": {**merge["envelope"], "event_id": "m-1", "event_type": MERGED,
                     "source_agency": "hub",
                     "subject": {**merge["envelope"]["subject"], "local_id_scheme": new[0],
                                 "local_id": new[1]}},
        "merged_local_id_scheme": old[0], "merged_local_id": old[1],
        "cause_event_id": "c-1", "disclosure": None,
    }  # fmt: skip
    state = ViewState("mals")
    apply_batch(state, _entries([*records, merge]))
    tables = state.tables()
    assert [(s["subject_scheme"], s["subject_id"]) for s in tables["view_subjects"]] == [new]
    assert {(r["subject_scheme"], r["subject_id"]) for r in tables["view_timeline"]} == {new}
    assert len(tables["view_timeline"]) == len(records)

    unmerge = {
        "envelope": {**merge["envelope"], "event_id": "u-1", "event_type": "delivery.retracted"},
        "retracted_event_id": "m-1", "reason": "link_retracted", "clause_id": None,
        "cause_event_id": None, "disclosure": None,
    }  # fmt: skip
    apply_batch(state, [Decoded(("deliver.mals", 0, len(records) + 1), unmerge)])
    tables = state.tables()
    assert sorted((s["subject_scheme"], s["subject_id"]) for s in tables["view_subjects"]) == keys
    assert all(
        (r["subject_scheme"], r["subject_id"]) == (r["delivered_scheme"], r["delivered_id"])
        for r in tables["view_timeline"]
    )
