"""EO-9 and EO-10 of RELIABILITY.md B.1, through the real broker, on SQLite and PostgreSQL.

EO-9: 20,000 deliveries (plus undecodable records and an aborted transaction) in
``deliver.mals``; the view consumer runs as a subprocess and is SIGKILLed 5 times at random points,
then restarted to the end. The view database must equal the oracle (the projection applied once,
in memory, to every committed record: same dump bytes), the stored offset of each partition must
be its last record + 1, and no writer may have hit a unique-constraint violation.

EO-10: ``rebuild`` from offset 0 must give a byte-identical dump.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, Message, Producer
from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError

from hub.adapters.kafka import ensure_topics, producer_config
from hub.adapters.view_consumer import rebuild
from hub.adapters.view_store import open_view_store
from hub.domain.errors import SerdeError
from hub.serde.codec import AvroCodec
from hub.topics import Topics
from hub.views.projection import Decoded, Entry, Undecodable, ViewState, apply_batch, canonical_dump
from hub.views.samples import sample_deliveries
from tests.pg import fresh_postgres_url, postgres_url  # noqa: F401  (fixtures)

pytestmark = pytest.mark.kafka

AUDIENCE = "mals"
DELIVERIES = int(os.environ.get("HUB_EO9_DELIVERIES", "20000"))
KILLS = int(os.environ.get("HUB_EO9_KILLS", "5"))
PARTITIONS = 3
TXN_SIZE = 2000
COLLISIONS = ("IntegrityError", "UniqueViolation", "UNIQUE constraint failed", "duplicate key")


@pytest.fixture(params=["sqlite", "postgresql"])
def view_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'view-mals.db'}"
    else:
        yield request.getfixturevalue("fresh_postgres_url")


def full(codec: AvroCodec, record: dict[str, Any]) -> dict[str, Any]:
    """The record with every schema field present (null where the sample leaves it out)."""
    fields = codec.catalogue.schema(record["envelope"]["event_type"])["fields"]
    return {f["name"]: record.get(f["name"]) for f in fields}


def poison(rng: random.Random, valid: bytes) -> bytes:
    return rng.choice(
        [
            b"\x07" + valid[1:],  # bad magic byte
            valid[: len(valid) // 2],  # truncated body
            b"\x00\x00\x00\xff\xf0" + valid[5:],  # a schema id the registry does not know
        ]
    )


class Produced:
    """Values produced in transactions, with the positions the broker gave them."""

    def __init__(self) -> None:
        self.positions: dict[int, tuple[int, int]] = {}
        self.failures: list[str] = []

    def callback(self, index: int) -> Any:
        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                self.failures.append(err.str())
            else:
                self.positions[index] = (msg.partition(), msg.offset())

        return on_delivery


def produce(
    bootstrap: str,
    topic: str,
    items: list[tuple[bytes, bytes]],
    aborted: list[tuple[bytes, bytes]],
    prefix: str,
) -> dict[int, tuple[int, int]]:
    """Produce ``items`` (key, value) in committed transactions of ``TXN_SIZE``, with one aborted
    transaction of ``aborted`` half-way; return the position of each item by its index."""
    producer = Producer(
        producer_config(
            bootstrap,
            **{"transactional.id": f"{prefix}eo9-producer", "linger.ms": 20,
               "queue.buffering.max.messages": 200_000, "transaction.timeout.ms": 60_000},
        )
    )  # fmt: skip
    produced = Produced()
    batches = [
        list(range(s, min(s + TXN_SIZE, len(items)))) for s in range(0, len(items), TXN_SIZE)
    ]
    batches.insert(len(batches) // 2, [])  # the aborted one
    producer.init_transactions(30)
    for batch in batches:
        producer.begin_transaction()
        for index in batch or range(-len(aborted), 0):
            key, value = items[index] if index >= 0 else aborted[index]
            while True:
                try:
                    producer.produce(
                        topic, key=key, value=value, on_delivery=produced.callback(index)
                    )
                    break
                except BufferError:
                    producer.poll(0.1)
        producer.flush(60)
        if batch:
            producer.commit_transaction(60)
        else:
            producer.abort_transaction(30)
    assert produced.failures == []
    return produced.positions


def stored_offsets(db_url: str, topic: str) -> dict[int, int]:
    """Read the view's offsets with a plain engine, as any reader of the database would."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT partition, next_offset FROM view_offsets WHERE topic = :topic"),
                {"topic": topic},
            ).all()
        return {int(p): int(o) for p, o in rows}
    except SQLAlchemyError:
        return {}  # the consumer has not created its tables yet
    finally:
        engine.dispose()


def start_consumer(
    env: dict[str, str], db_url: str, log: Path, prefix: str
) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "hub.adapters.view_consumer", "run", "--audience", AUDIENCE,
        "--db", db_url, "--instance-id", f"{prefix}view-{AUDIENCE}-1",
    ]  # fmt: skip
    with log.open("ab") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def test_view_consumer_killed_5_times_equals_oracle_and_rebuild_is_byte_identical(
    kafka_bootstrap: str,
    topics: Topics,
    codec: AvroCodec,
    registry_url: str,
    view_db: str,
    tmp_path: Path,
) -> None:
    rng = random.Random(9)
    topic = topics.deliver(AUDIENCE)
    ensure_topics(kafka_bootstrap, {topic: PARTITIONS})

    # 20,000 deliveries, one in a thousand followed by an undecodable record, and an aborted
    # transaction of 500 more half-way, which no read_committed reader may see
    records = sample_deliveries(DELIVERIES, audience=AUDIENCE, seed=9)
    items: list[tuple[bytes, bytes]] = []
    for record in records:
        key = record["envelope"]["subject"]["local_id"].encode()
        value = codec.encode(full(codec, record))
        items.append((key, value))
        if rng.random() < 0.001:
            items.append((key, poison(rng, value)))
    never = [
        (r["envelope"]["subject"]["local_id"].encode(), codec.encode(full(codec, r)))
        for r in sample_deliveries(500, audience=AUDIENCE, seed=10)
    ]
    positions = produce(kafka_bootstrap, topic, items, never, topics.prefix)

    # the oracle: every committed record applied once, in memory, with the same projection
    entries: list[Entry] = []
    for index, (_, value) in enumerate(items):
        position = (topic, *positions[index])
        try:
            entries.append(Decoded(position, codec.decode(value, *position)[1]))
        except SerdeError as exc:
            entries.append(Undecodable(position, exc.reason, str(exc)))
    entries.sort(key=lambda e: e.position)
    oracle = ViewState(AUDIENCE)
    apply_batch(oracle, entries)
    oracle_dump = canonical_dump(oracle.tables())
    expected = {e.position[1]: e.position[2] + 1 for e in entries}  # sorted: the last wins
    total = sum(expected.values())
    undecodable = sum(1 for e in entries if isinstance(e, Undecodable))
    assert undecodable > 0 and len(entries) == len(items)

    # EO-9: the consumer as a subprocess, SIGKILLed at random points, restarted
    env = {
        **os.environ,
        "HUB_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "HUB_REGISTRY_URL": registry_url,
        "HUB_TOPIC_PREFIX": topics.prefix,
        "HUB_HOME": str(tmp_path / "hub-home"),
        "HUB_LOG_LEVEL": "INFO",
    }
    logs: list[Path] = []
    killed_at: list[int] = []

    def progress() -> int:
        return sum(stored_offsets(view_db, topic).values())

    def reached(goal: int) -> Callable[[], bool]:
        return lambda: progress() >= goal

    kill_points = sorted(rng.uniform(0.05, 0.8) for _ in range(KILLS))
    for run, point in enumerate(kill_points):
        logs.append(tmp_path / f"consumer-{run}.log")
        goal = max(progress() + 1, int(point * total))  # at least one batch in every run
        process = start_consumer(env, view_db, logs[-1], topics.prefix)
        try:
            wait_for(reached(goal), 120, f"the view to pass {goal} before kill {run + 1}")
            time.sleep(rng.uniform(0, 0.2))  # land anywhere: mid-batch, mid-commit, idle
        finally:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(30)
        assert process.returncode == -signal.SIGKILL
        killed_at.append(progress())
    assert all(done < total for done in killed_at), f"killed after the end: {killed_at}/{total}"
    logs.append(tmp_path / "consumer-final.log")
    process = start_consumer(env, view_db, logs[-1], topics.prefix)
    try:
        wait_for(lambda: stored_offsets(view_db, topic) == expected, 180, "the view to catch up")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    assert process.returncode == 0, logs[-1].read_text()[-2000:]

    output = "\n".join(log.read_text() for log in logs)
    assert not [c for c in COLLISIONS if c in output], "a writer hit a unique-constraint violation"
    assert "view_batch_failed" not in output
    store = open_view_store(view_db, AUDIENCE)
    try:
        incremental = store.dump()
        assert store.offsets(topic) == expected
        assert store.count("view_rejects") == undecodable
    finally:
        store.dispose()
    assert hashlib.sha256(incremental).hexdigest() == hashlib.sha256(oracle_dump).hexdigest()

    # EO-10: a rebuild from offset 0 gives the same bytes
    rebuilt = rebuild(kafka_bootstrap, topics, AUDIENCE, view_db, codec)
    assert rebuilt.records == len(entries)
    store = open_view_store(view_db, AUDIENCE)
    try:
        assert hashlib.sha256(store.dump()).hexdigest() == hashlib.sha256(incremental).hexdigest()
    finally:
        store.dispose()
