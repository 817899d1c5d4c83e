"""The MALS connectors without a broker: the outbox triggers, outbox rows to events, and the
sink's handling of delivered records (referrals, corrections, retractions) in MALS' tables."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text

from connectors.mals import codes
from connectors.mals.schema import (
    clients,
    consent,
    create_schema,
    hub_id_map,
    hub_inbox,
    hub_outbox,
    hub_sink_offsets,
    hub_sink_rejects,
    lcp_attendance,
    mals_engine,
    outcomes,
    referrals,
    sessions,
)
from connectors.mals.sink import CREATED_BY, Delivered, MalsApplier
from connectors.mals.source import OutboxSource
from hub.adapters.kafka import DeliveryFailed
from hub.publisher import Publisher, event_id_for
from hub.serde.catalogue import Catalogue
from hub.serde.codec import AvroCodec

D = dt.date
TOPIC = "deliver.mals"


class MemoryRegistry:
    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.schemas: dict[int, str] = {}

    def register(self, subject: str, schema: str) -> int:
        if subject not in self.ids:
            self.ids[subject] = len(self.ids) + 1
            self.schemas[self.ids[subject]] = schema
        return self.ids[subject]

    def schema_by_id(self, schema_id: int) -> str:
        return self.schemas[schema_id]


class CapturingSink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.fail_next_flush = False

    def send(
        self, topic: str, key: bytes | None, value: bytes, headers: Sequence[Any] = ()
    ) -> None:
        self.sent.append((topic, key, value))

    def flush(self, timeout: float = 60.0) -> None:
        if self.fail_next_flush:
            self.fail_next_flush = False
            raise DeliveryFailed("1 record(s) not delivered; first: broker down")


@pytest.fixture(scope="module")
def codec(catalogue: Catalogue) -> AvroCodec:
    return AvroCodec(catalogue, MemoryRegistry())


@pytest.fixture
def db(tmp_path: Path) -> Engine:
    engine = mals_engine(f"sqlite:///{tmp_path / 'mals.db'}")
    create_schema(engine)
    with engine.begin() as conn:
        conn.execute(
            clients.insert().values(client_id="MALS-0107", first_name="Dean", prison_no="A1234BC")
        )
    return engine


def outbox(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(hub_outbox).order_by(hub_outbox.c.outbox_id)))


def test_mals_labels_map_to_reference_codes(catalogue: Catalogue) -> None:
    for mapping, list_name in codes.OUTBOUND:
        assert set(mapping.values()) <= catalogue.reference(list_name), list_name
    for mapping, list_name in codes.INBOUND:
        assert set(mapping) <= catalogue.reference(list_name), list_name
    for event_type in codes.OUTCOME_EVENTS.values():
        catalogue.name_for(event_type)


# -- the outbox triggers ------------------------------------------------------------------------


def test_staff_writes_enqueue_outbox_rows_in_the_same_transaction(db: Engine) -> None:
    with db.begin() as conn:
        conn.execute(
            sessions.insert().values(
                client_id="MALS-0107",
                session_date=D(2014, 6, 10),
                start_time="10:30",
                mode="Gym/activity",
                hours=2,
                pathways="Health",
                notes="CANARY-NOTES-1",
            )
        )
        conn.execute(
            consent.insert().values(
                client_id="MALS-0107",
                scope="Research",
                given_on=D(2014, 6, 1),
                captured_by="Jo",
                withdrawn_on=D(2014, 7, 1),
                withdrawal_recorded_by="Jo",
                withdrawal_reason="CANARY-REASON-1",
            )
        )
    with pytest.raises(RuntimeError), db.begin() as conn:  # a write that rolls back
        conn.execute(
            outcomes.insert().values(
                client_id="MALS-0107", outcome_type="Employment", outcome_date=D(2014, 8, 1)
            )
        )
        raise RuntimeError("staff cancelled")
    rows = outbox(db)
    assert [(r.source_table, r.change) for r in rows] == [
        ("sessions", "insert"),
        ("consent", "insert"),
        ("consent", "withdraw"),
    ]
    assert json.loads(rows[0].payload)["mode"] == "Gym/activity"
    assert json.loads(rows[0].identifiers) == {"prison_number": "A1234BC", "hub_pseudonym": None}
    dump = "".join(f"{r.payload}{r.identifiers}" for r in rows)
    assert "CANARY" not in dump  # notes and the withdrawal reason never reach the outbox


def test_only_changes_to_published_columns_enqueue(db: Engine) -> None:
    with db.begin() as conn:
        conn.execute(
            sessions.insert().values(
                client_id="MALS-0107", session_date=D(2014, 6, 10), mode="Telephone", hours=1
            )
        )
        conn.execute(
            lcp_attendance.insert().values(
                client_id="MALS-0107", run_ref="R1", session_date=D(2014, 6, 2)
            )
        )
    with db.begin() as conn:
        conn.execute(text("UPDATE sessions SET notes = 'edited notes'"))
        conn.execute(text("UPDATE lcp_attendance SET facilitator_notes = 'x'"))
    assert len(outbox(db)) == 2
    with db.begin() as conn:
        conn.execute(text("UPDATE sessions SET hours = 1.5"))
    assert [(r.source_table, r.change) for r in outbox(db)][-1] == ("sessions", "update")


# -- outbox rows -> events ----------------------------------------------------------------------


def source(db: Engine, codec: AvroCodec) -> tuple[OutboxSource, CapturingSink]:
    sink = CapturingSink()
    publisher = Publisher(
        agency="mals", source_system="mals-db", jurisdiction="UK-ENG", codec=codec, sink=sink
    )
    return OutboxSource(db, publisher, batch_size=100), sink


def staff_records(db: Engine) -> None:
    with db.begin() as conn:
        conn.execute(
            sessions.insert().values(
                client_id="MALS-0107",
                session_date=D(2014, 6, 10),
                start_time="10:30",
                mode="Home visit",
                hours=1.5,
                pathways="Accommodation; Health",
                family_present=True,
                notes="CANARY-NOTES-2",
            )
        )
        conn.execute(
            lcp_attendance.insert().values(
                client_id="MALS-0107",
                run_ref="1st Cohort 05/11/2013",
                session_no=3,
                session_date=D(2014, 6, 11),
                am_pm="AM",
                theme="Values and Beliefs",
                hours=3,
                facilitator_notes="CANARY-FAC-2",
            )
        )
        conn.execute(
            outcomes.insert().values(
                client_id="MALS-0107",
                outcome_type="Employment",
                outcome_date=D(2014, 9, 1),
                organisation="Knowsley Reuse",
                category="Part-time",
                hours_per_week=16,
            )
        )
        conn.execute(
            consent.insert().values(
                client_id="MALS-0107",
                scope="Share progress with OM",
                given_on=D(2014, 6, 1),
                captured_by="Jo",
                method="Written",
            )
        )


def test_outbox_rows_become_events_with_deterministic_ids(db: Engine, codec: AvroCodec) -> None:
    staff_records(db)
    src, sink = source(db, codec)
    assert src.publish_batch() == 4
    events = [codec.decode(value)[1] for _, _, value in sink.sent]
    assert [e["envelope"]["event_type"] for e in events] == [
        "mentoring.contact",
        "lcp.session_attended",
        "outcome.employment_started",
        "consent.given",
    ]
    rows = outbox(db)
    for row, event in zip(rows, events, strict=True):
        envelope = event["envelope"]
        assert envelope["event_id"] == event_id_for(
            "mals", "mals-db", envelope["event_type"], f"outbox/{row.outbox_id}"
        )
        assert row.event_id == envelope["event_id"] and row.sent_at is not None
        assert envelope["subject"]["local_id"] == "MALS-0107"
        assert envelope["subject"]["identifiers"] == [
            {"scheme": "prison_number", "value": "A1234BC"}
        ]
    contact, lcp, job, given = events
    assert contact["contact_at"] == dt.datetime(2014, 6, 10, 9, 30, tzinfo=dt.UTC)  # BST
    assert (contact["mode"], contact["duration_minutes"]) == ("home_visit", 90)
    assert contact["pathways"] == ["accommodation", "health"]
    assert contact["family_involved"] is True and contact["notes"] is None
    assert (lcp["theme"], lcp["period"], lcp["facilitator_notes"]) == (
        "values_and_beliefs",
        "am",
        None,
    )
    assert (job["employment_type"], job["employer"]) == ("part_time", "Knowsley Reuse")
    assert given["scopes"] == ["share_progress_with_om"] and given["method"] == "written"
    assert b"CANARY" not in b"".join(value for _, _, value in sink.sent)
    # The same rows again (a crash before they were marked): the same bytes.
    with db.begin() as conn:
        conn.execute(hub_outbox.update().values(sent_at=None, event_id=None))
    first = [value for _, _, value in sink.sent]
    src.publish_batch()
    assert [value for _, _, value in sink.sent[4:]] == first


def test_a_change_in_mals_is_a_correction_of_the_previous_event(
    db: Engine, codec: AvroCodec
) -> None:
    staff_records(db)
    src, sink = source(db, codec)
    src.publish_batch()
    with db.begin() as conn:
        conn.execute(text("UPDATE sessions SET hours = 2"))
        conn.execute(
            text(
                "UPDATE consent SET withdrawn_on = '2014-07-01', "
                "withdrawal_recorded_by = 'Jo', withdrawal_reason = 'CANARY-WHY'"
            )
        )
    src.publish_batch()
    contact, withdrawn = (codec.decode(value)[1] for _, _, value in sink.sent[4:])
    first_contact = codec.decode(sink.sent[0][2])[1]
    assert contact["envelope"]["supersedes_event_id"] == first_contact["envelope"]["event_id"]
    assert contact["duration_minutes"] == 120
    assert withdrawn["envelope"]["event_type"] == "consent.withdrawn"
    assert withdrawn["envelope"]["supersedes_event_id"] is None
    assert withdrawn["reason"] is None and withdrawn["withdrawn_on"] == D(2014, 7, 1)


def test_a_row_that_cannot_be_built_is_marked_and_does_not_block(
    db: Engine, codec: AvroCodec
) -> None:
    with db.begin() as conn:
        conn.execute(
            sessions.insert().values(
                client_id="MALS-0107", session_date=D(2014, 6, 10), mode="Carrier pigeon", hours=1
            )
        )
        conn.execute(
            sessions.insert().values(
                client_id="MALS-0107", session_date=D(2014, 6, 11), mode="Telephone", hours=1
            )
        )
    src, sink = source(db, codec)
    assert src.publish_batch() == 2
    bad, good = outbox(db)
    assert bad.sent_at is None and "sessions row 1 (outbox 1): mode: 'Carrier pigeon'" in bad.error
    assert good.sent_at is not None and len(sink.sent) == 1
    assert src.publish_batch() == 0


def test_rows_are_not_marked_sent_when_the_broker_did_not_confirm(
    db: Engine, codec: AvroCodec
) -> None:
    staff_records(db)
    src, sink = source(db, codec)
    sink.fail_next_flush = True
    with pytest.raises(DeliveryFailed):
        src.publish_batch()
    assert all(r.sent_at is None and r.event_id is None for r in outbox(db))
    assert src.publish_batch() == 4  # sent again, with the same ids
    assert len({v for _, _, v in sink.sent}) == 4


# -- delivered records -> MALS' tables ----------------------------------------------------------

_offsets = iter(range(10**6))


def delivered(event_type: str, subject: tuple[str, str], **fields: Any) -> Delivered:
    envelope = {
        "event_id": fields.pop("event_id", str(uuid.uuid4())),
        "event_type": event_type,
        "source_agency": fields.pop("source_agency", "probation_crc"),
        "subject": {
            "local_id": subject[1],
            "local_id_scheme": subject[0],
            "identifiers": [],
            "hub_subject_id": None,
        },
        "supersedes_event_id": fields.pop("supersedes", None),
    }
    disclosure = {"clause_id": "mals-1", "retention_until": D(2015, 6, 1)}
    return Delivered(
        TOPIC, 0, next(_offsets), {"envelope": envelope, "disclosure": disclosure, **fields}
    )


REFERRAL = {
    "referral_id": "CRC-R-77",
    "programme": "mentoring",
    "referred_on": D(2014, 6, 3),
    "referrer_org": "probation_crc",
    "receiving_org": "mals",
    "pathways": ["accommodation", "attitudes_thinking_behaviour"],
    "reason": "support on release",
    "release_date": D(2014, 6, 20),
    "risk_level": "medium",
    "referrer": {
        "organisation": "probation_crc",
        "role": "offender manager",
        "name": "Sam OM",
        "phone": "0151 000 0000",
        "email": None,
    },
    "offender_manager": {
        "organisation": "probation_crc",
        "role": "offender manager",
        "name": "Sam OM",
        "phone": "0151 000 0000",
        "email": None,
    },
    "safety_information": "meet in office",
    "offence_summary": None,
    "mappa_notes": None,
}


def apply(db: Engine, *items: Delivered) -> MalsApplier:
    applier = MalsApplier()
    with db.begin() as conn:
        applier.apply_batch(conn, items)
    return applier


def rows(db: Engine, table: Any) -> list[dict[str, Any]]:
    with db.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(table))]


def test_referral_for_a_pseudonym_creates_the_client_with_only_the_minimum_dataset(
    db: Engine,
) -> None:
    pseudonym = "ab" * 32
    apply(db, delivered("referral.created", ("hub_pseudonym", pseudonym), **REFERRAL))
    (referral,) = rows(db, referrals)
    assert referral["client_id"] == "MALS-0108"
    assert referral["referrer_ref"] == "CRC-R-77" and referral["status"] == "New"
    assert referral["pathways"] == "Accommodation; Attitudes"
    assert (referral["risk_level"], referral["programme"]) == ("Medium", "Mentoring")
    assert (referral["om_name"], referral["release_date"]) == ("Sam OM", D(2014, 6, 20))
    new = next(c for c in rows(db, clients) if c["client_id"] == "MALS-0108")
    assert new["created_by"] == CREATED_BY
    assert [new[c] for c in ("first_name", "surname", "dob", "phone", "area")] == [None] * 5
    assert rows(db, hub_id_map)[0]["pseudonym"] == pseudonym
    # The next referral for the same person finds the client; MALS' own id is used as is.
    apply(
        db,
        delivered("referral.created", ("hub_pseudonym", pseudonym), **REFERRAL),
        delivered("referral.created", ("mals_client_id", "MALS-0107"), **REFERRAL),
    )
    assert [r["client_id"] for r in rows(db, referrals)] == ["MALS-0108", "MALS-0108", "MALS-0107"]
    assert len(rows(db, clients)) == 2


def test_the_same_delivery_twice_changes_nothing(db: Engine) -> None:
    item = delivered("referral.created", ("hub_pseudonym", "cd" * 32), **REFERRAL)
    apply(db, item)
    before = {t.name: rows(db, t) for t in (clients, referrals, hub_inbox, hub_id_map)}
    assert apply(db, item).stats.outcomes == {"duplicate": 1}
    assert {t.name: rows(db, t) for t in (clients, referrals, hub_inbox, hub_id_map)} == before


def test_a_correction_replaces_the_referral_in_place(db: Engine) -> None:
    first = delivered("referral.created", ("hub_pseudonym", "ef" * 32), **REFERRAL)
    apply(db, first)
    with db.begin() as conn:  # MALS staff screen it
        conn.execute(referrals.update().values(status="Accepted"))
    corrected = {**REFERRAL, "release_date": D(2014, 6, 27), "safety_information": None}
    apply(
        db,
        delivered(
            "referral.created",
            ("hub_pseudonym", "ef" * 32),
            supersedes=first.record["envelope"]["event_id"],
            **corrected,
        ),
    )
    (referral,) = rows(db, referrals)
    assert referral["release_date"] == D(2014, 6, 27) and referral["safety_information"] is None
    assert referral["status"] == "Accepted"
    states = {r["event_id"]: r["state"] for r in rows(db, hub_inbox)}
    assert states[first.record["envelope"]["event_id"]] == "superseded"


def test_a_retraction_removes_the_referral_and_the_client_it_created(db: Engine) -> None:
    first = delivered("referral.created", ("hub_pseudonym", "01" * 32), **REFERRAL)
    kept = delivered("referral.created", ("mals_client_id", "MALS-0107"), **REFERRAL)
    apply(db, first, kept)
    retract = [
        delivered(
            "delivery.retracted",
            ("hub_pseudonym", "01" * 32),
            source_agency="hub",
            retracted_event_id=item.record["envelope"]["event_id"],
            reason="superseded",
        )
        for item in (first, kept)
    ]
    apply(db, *retract)
    assert rows(db, referrals) == []
    assert [c["client_id"] for c in rows(db, clients)] == ["MALS-0107"]  # MALS' own client stays
    assert rows(db, hub_id_map) == []
    assert apply(db, first).stats.outcomes == {"duplicate": 1}  # never comes back


def test_a_retraction_before_its_event_leaves_a_tombstone(db: Engine) -> None:
    event = delivered("referral.created", ("hub_pseudonym", "23" * 32), **REFERRAL)
    apply(
        db,
        delivered(
            "delivery.retracted",
            ("hub_pseudonym", "23" * 32),
            source_agency="hub",
            retracted_event_id=event.record["envelope"]["event_id"],
            reason="link_retracted",
        ),
    )
    apply(db, event)
    assert rows(db, referrals) == [] and len(rows(db, clients)) == 1


def test_other_deliveries_are_kept_in_the_inbox_and_own_events_ignored(db: Engine) -> None:
    release = delivered(
        "custody.released",
        ("mals_client_id", "MALS-0107"),
        source_agency="hmp_liverpool",
        released_at=dt.datetime(2014, 6, 20, 8, tzinfo=dt.UTC),
        establishment="HMP Liverpool",
    )
    own = delivered(
        "mentoring.contact", ("mals_client_id", "MALS-0107"), source_agency="mals", notes="CANARY"
    )
    odd = delivered("referral.created", ("police_nominal_id", "N1"), **REFERRAL)
    applier = apply(db, release, own, odd)
    assert applier.stats.outcomes == {"stored": 1, "own": 1, "rejected": 1}
    inbox = {r["event_id"]: r for r in rows(db, hub_inbox)}
    stored = json.loads(inbox[release.record["envelope"]["event_id"]]["payload"])
    assert stored == {"establishment": "HMP Liverpool", "released_at": "2014-06-20T08:00:00+00:00"}
    assert inbox[own.record["envelope"]["event_id"]]["payload"] is None
    assert rows(db, hub_sink_rejects)[0]["reason"] == "unaddressable"
    with db.connect() as conn:
        assert conn.execute(select(func.max(hub_sink_offsets.c.next_offset))).scalar() == (
            odd.offset + 1
        )


def test_a_correction_to_another_person_moves_the_referral_and_drops_the_wrong_client(
    db: Engine,
) -> None:
    first = delivered("referral.created", ("hub_pseudonym", "45" * 32), **REFERRAL)
    apply(db, first)
    moved = delivered(
        "referral.created",
        ("hub_pseudonym", "67" * 32),
        supersedes=first.record["envelope"]["event_id"],
        **REFERRAL,
    )
    apply(db, moved)
    (referral,) = rows(db, referrals)
    assert referral["client_id"] == "MALS-0109"
    assert sorted(c["client_id"] for c in rows(db, clients)) == ["MALS-0107", "MALS-0109"]
    assert [m["pseudonym"] for m in rows(db, hub_id_map)] == ["67" * 32]


def test_a_merge_moves_the_pseudonym_mapping_and_its_retraction_moves_it_back(
    db: Engine,
) -> None:
    old, new = "0a" * 32, "0b" * 32
    apply(db, delivered("referral.created", ("hub_pseudonym", old), **REFERRAL))
    merge = delivered("identity.subject_merged", ("hub_pseudonym", new), source_agency="hub",
                      merged_local_id_scheme="hub_pseudonym", merged_local_id=old)  # fmt: skip
    apply(db, merge)
    assert [(m["pseudonym"], m["client_id"]) for m in rows(db, hub_id_map)] == [
        (new, "MALS-0108")
    ]
    # what the hub sends next under the surviving pseudonym reaches the same client
    apply(db, delivered("referral.created", ("hub_pseudonym", new), **REFERRAL))
    assert {r["client_id"] for r in rows(db, referrals)} == {"MALS-0108"}

    merge_id = merge.record["envelope"]["event_id"]  # type: ignore[index]
    apply(db, delivered("delivery.retracted", ("hub_pseudonym", new), source_agency="hub",
                        retracted_event_id=merge_id, reason="link_retracted"))  # fmt: skip

    assert [m["pseudonym"] for m in rows(db, hub_id_map)] == [old]
