"""The MALS source connector through the real broker.

- What MALS staff write in their own tables reaches ``ingest.mals`` as the right hub events,
  with deterministic ids and without the notes; a second run publishes nothing new.
- EO-13 (RELIABILITY.md B.1): the source runs as a subprocess and is SIGKILLed 5 times while
  5,000 MALS rows are inserted. At every kill, each outbox row marked sent is already on the topic
  (marked only after the broker confirmed it). At the end every row is published: the distinct
  event ids on the topic are exactly the outbox's, one per row, and any re-send is byte-identical
  (so the router drops it as a duplicate). Then the router runs over the topic and ``deliver.mals``
  holds each row exactly once: exactly once downstream.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text

from connectors.mals.schema import (
    clients,
    consent,
    create_schema,
    hub_outbox,
    lcp_attendance,
    mals_engine,
    mentors,
    outcomes,
    sessions,
)
from connectors.mals.source import OutboxSource, build_publisher
from hub import bootstrap
from hub.adapters.kafka import ensure_topics
from hub.publisher import event_id_for
from tests.conftest import REPO
from tests.hubtest import TopicTail, hub_settings, read_all, run_router_until_idle

pytestmark = pytest.mark.kafka

D = dt.date
ROWS = int(os.environ.get("HUB_EO13_ROWS", "5000"))
KILLS = int(os.environ.get("HUB_EO13_KILLS", "5"))
SEED = int(os.environ.get("HUB_EO13_SEED", "13"))


def mals_db(tmp_path: Path, clients_n: int = 1) -> tuple[str, Engine]:
    url = f"sqlite:///{tmp_path / 'mals.db'}"
    engine = mals_engine(url)
    create_schema(engine)
    with engine.begin() as conn:
        conn.execute(mentors.insert(), [{"mentor_id": f"MEN-{i:03d}"} for i in range(1, 6)])
        conn.execute(
            clients.insert(),
            [
                {"client_id": f"MALS-{i:04d}", "first_name": f"C{i}"}
                for i in range(100, 100 + clients_n)
            ],
        )
    return url, engine


def decoded(codec: Any, messages: list[Any]) -> list[dict[str, Any]]:
    return [codec.decode(m.value(), m.topic(), m.partition(), m.offset())[1] for m in messages]


def test_staff_records_reach_ingest_mals_as_hub_events(
    kafka_bootstrap, registry_url, topics, codec, tmp_path: Path
) -> None:
    _, engine = mals_db(tmp_path)
    topic = topics.ingest("mals")
    ensure_topics(kafka_bootstrap, {topic: 3})
    with engine.begin() as conn:  # what a MALS mentor and manager record in a week
        conn.execute(
            sessions.insert().values(
                client_id="MALS-0100",
                mentor_id="MEN-001",
                session_date=D(2014, 7, 2),
                start_time="14:00",
                mode="Gym/activity",
                hours=2,
                pathways="Health",
                notes="CANARY-SESSION-NOTES",
            )
        )
        conn.execute(
            sessions.insert().values(
                client_id="MALS-0100",
                mentor_id="MEN-001",
                session_date=D(2014, 7, 9),
                mode="Home visit",
                hours=1,
                pathways="Accommodation",
                family_present=True,
            )
        )
        conn.execute(
            lcp_attendance.insert().values(
                client_id="MALS-0100",
                run_ref="LCP-2014-K2",
                session_no=4,
                session_date=D(2014, 7, 3),
                am_pm="PM",
                theme="Victim Awareness",
                hours=3,
                facilitator_notes="CANARY-FAC",
            )
        )
        conn.execute(
            outcomes.insert().values(
                client_id="MALS-0100",
                outcome_type="Housing application",
                outcome_date=D(2014, 7, 10),
                organisation="Knowsley Housing Trust",
            )
        )
        conn.execute(
            consent.insert().values(
                client_id="MALS-0100",
                scope="Share progress with IOM",
                given_on=D(2014, 7, 1),
                captured_by="Jo Reid",
                method="Written",
            )
        )
    with engine.begin() as conn:  # later: the client withdraws that consent
        conn.execute(
            text(
                "UPDATE consent SET withdrawn_on = '2014-08-01', "
                "withdrawal_recorded_by = 'Jo Reid', "
                "withdrawal_reason = 'CANARY-WHY'"
            )
        )

    publisher = build_publisher(kafka_bootstrap, registry_url, topics.prefix)
    OutboxSource(engine, publisher).run(lambda: False, once=True)
    messages = read_all(kafka_bootstrap, topic)
    events = sorted(decoded(codec, messages), key=lambda e: e["envelope"]["recorded_at"])
    by_type = defaultdict(list)
    for event in events:
        by_type[event["envelope"]["event_type"]].append(event)
    assert Counter({t: len(v) for t, v in by_type.items()}) == Counter(
        {
            "mentoring.contact": 2,
            "lcp.session_attended": 1,
            "outcome.housing_application_made": 1,
            "consent.given": 1,
            "consent.withdrawn": 1,
        }
    )
    with engine.connect() as conn:
        box = {r.event_id: r for r in conn.execute(select(hub_outbox))}
    assert len(box) == 6 and all(r.sent_at is not None for r in box.values())
    for event in events:
        envelope = event["envelope"]
        row = box[envelope["event_id"]]
        assert envelope["event_id"] == event_id_for(
            "mals", "mals-db", envelope["event_type"], f"outbox/{row.outbox_id}"
        )
        assert (envelope["source_agency"], envelope["source_system"]) == ("mals", "mals-db")
        assert envelope["subject"]["local_id"] == "MALS-0100"
        assert envelope["subject"]["local_id_scheme"] == "mals_client_id"
    gym = next(e for e in by_type["mentoring.contact"] if e["mode"] == "gym_or_activity")
    assert gym["contact_at"] == dt.datetime(2014, 7, 2, 13, tzinfo=dt.UTC)
    assert (gym["duration_minutes"], gym["pathways"], gym["mentor_id"]) == (
        120,
        ["health"],
        "MEN-001",
    )
    assert gym["notes"] is None
    (lcp,) = by_type["lcp.session_attended"]
    assert (lcp["run_id"], lcp["session_number"], lcp["theme"], lcp["period"]) == (
        "LCP-2014-K2",
        4,
        "victim_awareness",
        "pm",
    )
    (housing,) = by_type["outcome.housing_application_made"]
    assert (housing["provider"], housing["supported_by"]) == ("Knowsley Housing Trust", "mals")
    (withdrawn,) = by_type["consent.withdrawn"]
    assert withdrawn["scopes"] == ["share_progress_with_iom"] and withdrawn["reason"] is None
    assert withdrawn["consent_id"] == by_type["consent.given"][0]["consent_id"]
    assert not any(b"CANARY" in m.value() for m in messages)

    OutboxSource(engine, publisher).run(lambda: False, once=True)  # nothing new to send
    assert len(read_all(kafka_bootstrap, topic)) == len(messages)


# -- EO-13 --------------------------------------------------------------------------------------

OUTCOME_ROWS = [
    {
        "outcome_type": "Employment",
        "organisation": "Knowsley Reuse",
        "category": "Part-time",
        "hours_per_week": 16,
    },
    {
        "outcome_type": "Training",
        "organisation": "Knowsley College",
        "course": "CSCS card",
        "full_time": False,
    },
    {"outcome_type": "Housing", "organisation": "Villages Housing", "category": "Social rent"},
    {"outcome_type": "Housing application", "organisation": "Knowsley Housing Trust"},
    {"outcome_type": "Drug service", "organisation": "Knowsley drug and alcohol service"},
    {
        "outcome_type": "LCP graduation",
        "run_ref": "LCP-2014-K2",
        "certificate": True,
        "family_attended": True,
        "sessions_attended": 11,
        "sessions_total": 12,
    },
]


def staff_row(rng: random.Random, i: int) -> tuple[Any, dict[str, Any]]:
    """One row a MALS staff member might insert (each gives exactly one outbox row)."""
    client = f"MALS-{100 + rng.randrange(40):04d}"
    day = D(2014, 6, 2) + dt.timedelta(days=rng.randrange(300))
    pick = rng.random()
    if pick < 0.5:
        return sessions, {
            "client_id": client,
            "mentor_id": f"MEN-00{rng.randrange(1, 6)}",
            "session_date": day,
            "start_time": f"{rng.randrange(9, 18):02d}:00",
            "mode": rng.choice(["Face to face", "Telephone", "Gym/activity", "Home visit"]),
            "hours": rng.choice([0.5, 1, 1.5, 2]),
            "pathways": rng.choice(["Health", "Accommodation; ETE", "Family"]),
            "notes": f"CANARY-EO13-{i}",
        }
    if pick < 0.7:
        attended = rng.random() < 0.85
        return lcp_attendance, {
            "client_id": client,
            "run_ref": "LCP-2014-K2",
            "session_no": rng.randrange(1, 13),
            "session_date": day,
            "am_pm": rng.choice(["AM", "PM"]),
            "theme": "Goal setting",
            "hours": 3,
            "attended": attended,
            "absence_reason": None if attended else "Ill",
        }
    if pick < 0.85:
        return outcomes, {"client_id": client, "outcome_date": day, **rng.choice(OUTCOME_ROWS)}
    return consent, {
        "client_id": client,
        "scope": "Share progress with OM",
        "given_on": day,
        "captured_by": "Jo Reid",
        "method": "Written",
    }


class Writer(threading.Thread):
    """MALS staff at work: rows ``[start, stop)`` inserted in transactions of 20, spread over
    ~10 s for the whole of ``ROWS``."""

    def __init__(self, engine: Engine, rng: random.Random, start: int, stop: int) -> None:
        super().__init__(daemon=True)
        self.engine, self.rng, self.rows = engine, rng, range(start, stop)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            per_txn = 20
            for first in range(self.rows.start, self.rows.stop, per_txn):
                with self.engine.begin() as conn:
                    for i in range(first, min(first + per_txn, self.rows.stop)):
                        table, values = staff_row(self.rng, i)
                        conn.execute(table.insert().values(**values))
                time.sleep(10.0 * per_txn / ROWS)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


def sent_ids(engine: Engine) -> dict[int, str]:
    with engine.connect() as conn:
        return dict(
            conn.execute(
                select(hub_outbox.c.outbox_id, hub_outbox.c.event_id).where(
                    hub_outbox.c.sent_at.is_not(None)
                )
            ).all()
        )


def test_eo13_killing_the_source_loses_nothing_and_marks_only_confirmed_rows(
    kafka_bootstrap, registry_url, topics, codec, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    print(f"EO-13 seed {SEED}")
    url, engine = mals_db(tmp_path, clients_n=40)
    topic = topics.ingest("mals")
    settings = hub_settings(kafka_bootstrap, registry_url, topics.prefix, tmp_path / "home")
    bootstrap.init(settings)  # topics, keys and hub database for the router at the end
    command = [
        sys.executable,
        "-m",
        "connectors.mals.source",
        "--db",
        url,
        "--bootstrap",
        kafka_bootstrap,
        "--registry-url",
        registry_url,
        "--topic-prefix",
        topics.prefix,
        "--batch-size",
        "200",
        "--poll-interval",
        "0.05",
    ]
    env = {**os.environ, "HUB_LOG_LEVEL": "WARNING", "HUB_HOME": str(tmp_path / "home")}
    log = (tmp_path / "source.log").open("ab")

    def start(*extra: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([*command, *extra], cwd=REPO, env=env, stdout=log, stderr=log)

    tail = TopicTail(kafka_bootstrap, topic)
    on_topic: dict[str, list[bytes]] = defaultdict(list)

    def read_topic() -> None:
        new = tail.read(timeout_s=60)[sum(len(v) for v in on_topic.values()) :]
        for message, event in zip(new, decoded(codec, new), strict=True):
            on_topic[event["envelope"]["event_id"]].append(message.value())

    last = 20  # written after the last restart: that incarnation is then known to be running
    writer = Writer(engine, rng, 0, ROWS - last)
    writer.start()
    process = start()
    try:
        for kill in range(KILLS):
            marked_before = len(sent_ids(engine))
            deadline = time.monotonic() + 60
            while len(sent_ids(engine)) == marked_before and time.monotonic() < deadline:
                time.sleep(0.05)  # let this incarnation make progress
            time.sleep(rng.uniform(0.0, 0.3))  # while it works through the backlog
            process.send_signal(signal.SIGKILL)
            process.wait(30)
            marked = sent_ids(engine)
            read_topic()
            missing = {i for i, e in marked.items() if e not in on_topic}
            assert not missing, (
                f"kill {kill + 1}: {len(missing)} outbox rows marked sent are not "
                f"on the topic, e.g. {sorted(missing)[:5]}"
            )
            print(
                f"kill {kill + 1}: {len(marked)} rows marked sent, "
                f"{sum(map(len, on_topic.values()))} records on the topic"
            )
            process = start()
        writer.join(120)
        assert writer.error is None and not writer.is_alive()
        final = Writer(engine, rng, ROWS - last, ROWS)
        final.run()
        assert final.error is None
        deadline = time.monotonic() + 120
        while len(sent_ids(engine)) < ROWS and time.monotonic() < deadline:
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)  # a clean stop
        assert process.wait(30) == 0
        process = start("--once")  # nothing left: exits at once
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        log.close()

    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(hub_outbox)).scalar() == ROWS
        box = list(conn.execute(select(hub_outbox)))
    assert all(r.sent_at is not None and r.error is None for r in box)
    read_topic()
    tail.close()
    expected = {r.event_id for r in box}
    assert len(expected) == ROWS and set(on_topic) == expected  # every row, nothing else
    for r in box:  # each id is the deterministic one of its outbox row
        event = codec.decode(on_topic[r.event_id][0])[1]
        assert r.event_id == event_id_for(
            "mals", "mals-db", event["envelope"]["event_type"], f"outbox/{r.outbox_id}"
        )
    resent = {e: v for e, v in on_topic.items() if len(v) > 1}
    assert all(len(set(values)) == 1 for values in resent.values()), "a re-send differs"
    assert not any(b"CANARY" in v for values in on_topic.values() for v in values)
    print(
        f"EO-13: {ROWS} rows, {sum(map(len, on_topic.values()))} records, "
        f"{len(resent)} re-sent after a kill"
    )

    # Downstream: the router drops the re-sends; MALS' own view gets each row once (mals-0).
    stats = run_router_until_idle(settings, idle_s=2.0, timeout_s=180)
    assert stats.rejected == 0 and stats.duplicates == sum(len(v) - 1 for v in resent.values())
    delivered = Counter(
        event["envelope"]["event_id"]
        for event in decoded(codec, read_all(kafka_bootstrap, topics.deliver("mals")))
    )
    assert set(delivered) == expected and set(delivered.values()) == {1}
