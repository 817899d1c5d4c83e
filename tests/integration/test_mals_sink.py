"""MALS' database connected both ways, through the real broker and the real router (S3).

MALS staff record a consent for a client they already know (with the prison number from an
in-reach visit); the source connector publishes it, so the hub learns MALS' client id. The CRC
then refers that person and a second, new person to MALS, with offence and MAPPA material the
agreement drops. The router delivers both to ``deliver.mals``; the sink writes them into MALS'
``referrals`` table: the known person under MALS' own client id, the new one under a new client
created from the hub's pseudonym; only the minimum dataset, nothing the router withheld. Then a
correction replaces a referral in place, re-running (and replaying) the sink changes nothing, and
a correction that sends the referral elsewhere makes the router retract it: the sink removes it
and the client it created.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, delete, select

from connectors.mals.schema import (
    clients,
    consent,
    create_schema,
    hub_id_map,
    hub_inbox,
    hub_sink_offsets,
    mals_engine,
    metadata,
    referrals,
)
from connectors.mals.sink import CREATED_BY, MalsSink
from connectors.mals.source import OutboxSource, build_publisher
from hub import bootstrap
from hub.publisher import Publisher, subject
from tests.hubtest import hub_settings, publish, run_router_until_idle

pytestmark = pytest.mark.kafka

UTC = dt.UTC
CANARIES = (b"CANARY-OFFENCE-7731", b"CANARY-MAPPA-7731")


def dump(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    with engine.connect() as conn:
        return {
            name: sorted(tuple(map(str, row)) for row in conn.execute(select(table)))
            for name, table in metadata.tables.items()
        }


def referral(crc: Publisher, key: str, who: dict[str, Any], **changes: Any) -> dict[str, Any]:
    payload = {
        "referral_id": "CRC-REF-" + who["local_id"],
        "programme": "mentoring",
        "referred_on": dt.date(2014, 6, 3),
        "referrer_org": "probation_crc",
        "referrer": {
            "organisation": "probation_crc",
            "role": "offender manager",
            "name": "Sam Okafor",
            "phone": "0151 496 0001",
            "email": None,
        },
        "receiving_org": "mals",
        "pathways": ["accommodation", "attitudes_thinking_behaviour"],
        "reason": "through-the-gate mentoring",
        "release_date": dt.date(2014, 6, 20),
        "risk_level": "medium",
        "offender_manager": {
            "organisation": "probation_crc",
            "role": "offender manager",
            "name": "Sam Okafor",
            "phone": "0151 496 0001",
            "email": None,
        },
        "safety_information": "meet in the office for the first session",
        "offence_summary": CANARIES[0].decode(),
        "mappa_notes": CANARIES[1].decode(),
    }
    supersedes = changes.pop("supersedes", None)
    payload.update(changes)
    return crc.build(
        "referral.created",
        source_key=key,
        subject=who,
        occurred_at=dt.datetime(2014, 6, 3, 10, tzinfo=UTC),
        payload=payload,
        supersedes_event_id=supersedes,
        correction_reason="keying_error" if supersedes else None,
    )


def test_referrals_reach_mals_db_with_only_the_minimum_dataset_exactly_once(
    kafka_bootstrap, registry_url, topics, codec, tmp_path: Path
) -> None:
    settings = hub_settings(kafka_bootstrap, registry_url, topics.prefix, tmp_path / "home")
    bootstrap.init(settings)
    db_path = tmp_path / "mals.db"
    engine = mals_engine(f"sqlite:///{db_path}")
    create_schema(engine)

    # MALS staff, in their own database: a client met in prison, who consents.
    with engine.begin() as conn:
        conn.execute(
            clients.insert().values(client_id="MALS-0107", first_name="Dean", prison_no="A1234BC")
        )
        conn.execute(
            consent.insert().values(
                client_id="MALS-0107",
                scope="Share progress with OM",
                given_on=dt.date(2014, 6, 2),
                captured_by="Jo Reid",
                method="Written",
            )
        )
    OutboxSource(engine, build_publisher(kafka_bootstrap, registry_url, topics.prefix)).run(
        lambda: False, once=True
    )
    run_router_until_idle(settings, idle_s=1.0)  # the hub learns MALS' id before the referral
    crc = Publisher(
        agency="probation_crc",
        source_system="ndelius",
        jurisdiction="UK-ENG",
        codec=codec,
        sink=None,  # type: ignore[arg-type]  # only build() is used: publish() sends
        topics=topics,
    )
    known = subject("CRC-55", "probation_case_ref", prison_number="A1234BC")
    new = subject("CRC-56", "probation_case_ref")
    first = [referral(crc, "r55", known), referral(crc, "r56", new)]
    publish(settings, codec, first)
    assert run_router_until_idle(settings, idle_s=1.5).delivered == 2

    def sink_catch_up() -> None:
        sink = MalsSink(engine=engine, codec=codec, bootstrap=kafka_bootstrap, topics=topics)
        sink.catch_up(timeout=60)

    sink_catch_up()
    with engine.connect() as conn:
        rows = {r.referrer_ref: r._mapping for r in conn.execute(select(referrals))}
        made = conn.execute(select(clients).where(clients.c.created_by == CREATED_BY)).all()
        mapped = conn.execute(select(hub_id_map)).all()
    assert set(rows) == {"CRC-REF-CRC-55", "CRC-REF-CRC-56"}
    assert rows["CRC-REF-CRC-55"]["client_id"] == "MALS-0107"  # MALS' own id, no new client
    assert [c.client_id for c in made] == ["MALS-0108"] == [rows["CRC-REF-CRC-56"]["client_id"]]
    assert [m.client_id for m in mapped] == ["MALS-0108"] and len(mapped[0].pseudonym) == 64
    expected = {
        "referrer_org": "probation_crc",
        "referrer_name": "Sam Okafor",
        "referrer_role": "offender manager",
        "referrer_phone": "0151 496 0001",
        "referrer_email": None,
        "received_on": dt.date(2014, 6, 3),
        "programme": "Mentoring",
        "pathways": "Accommodation; Attitudes",
        "reason": "through-the-gate mentoring",
        "release_date": dt.date(2014, 6, 20),
        "risk_level": "Medium",
        "om_org": "probation_crc",
        "om_name": "Sam Okafor",
        "om_phone": "0151 496 0001",
        "om_email": None,
        "safety_information": "meet in the office for the first session",
        "status": "New",
    }
    for row in rows.values():
        assert {k: row[k] for k in expected} == expected
    (new_client,) = made
    assert all(
        new_client._mapping[c] is None
        for c in ("first_name", "surname", "dob", "phone", "area", "prison_no")
    )
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("mals.db*"))
    assert not any(canary in stored for canary in CANARIES), "withheld fields reached MALS' DB"

    # A correction of the new person's release date replaces the row in place.
    corrected = referral(
        crc,
        "r56-v2",
        new,
        release_date=dt.date(2014, 6, 27),
        supersedes=first[1]["envelope"]["event_id"],
    )
    publish(settings, codec, [corrected])
    run_router_until_idle(settings, idle_s=1.5)
    sink_catch_up()
    with engine.connect() as conn:
        r56 = conn.execute(
            select(referrals).where(referrals.c.referrer_ref == "CRC-REF-CRC-56")
        ).one()
    assert r56.release_date == dt.date(2014, 6, 27)
    assert r56.referral_id == rows["CRC-REF-CRC-56"]["referral_id"]

    # Running the sink again, and replaying the topic from the start, change nothing.
    before = dump(engine)
    sink_catch_up()
    assert dump(engine) == before
    with engine.begin() as conn:
        conn.execute(delete(hub_sink_offsets))
    sink_catch_up()
    after = dump(engine)
    assert after == before

    # The CRC redirects the referral to the drug service: MALS is no longer entitled to it.
    redirected = referral(
        crc,
        "r56-v3",
        new,
        receiving_org="drug_service",
        supersedes=corrected["envelope"]["event_id"],
    )
    publish(settings, codec, [redirected])
    assert run_router_until_idle(settings, idle_s=1.5).retracted >= 1
    sink_catch_up()
    with engine.connect() as conn:
        left = conn.execute(select(referrals.c.referrer_ref)).scalars().all()
        left_clients = conn.execute(select(clients.c.client_id)).scalars().all()
        states = dict(conn.execute(select(hub_inbox.c.event_id, hub_inbox.c.state)).all())
        assert conn.execute(select(hub_id_map)).all() == []
    assert left == ["CRC-REF-CRC-55"]
    assert left_clients == ["MALS-0107"]
    assert states[corrected["envelope"]["event_id"]] == "retracted"
    assert states[first[1]["envelope"]["event_id"]] == "superseded"
