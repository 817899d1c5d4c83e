"""The view store's contract, run against SQLite (file and memory) and PostgreSQL: whatever the
batching, replays, late events or concurrent writers, the database holds exactly the tables the
pure projection computes in memory (the same dump bytes)."""

from __future__ import annotations

import datetime as dt
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hub.adapters.view_store import SqlViewStore, open_view_store
from hub.domain.errors import InputError
from hub.views.projection import Decoded, Entry, Undecodable, ViewState, apply_batch, canonical_dump
from hub.views.samples import sample_deliveries
from tests.pg import fresh_postgres_url, postgres_url  # noqa: F401  (fixtures)

AUDIENCE = "mals"
TOPIC = "deliver.mals"


def entries_for(records: list[dict[str, Any]], partitions: int = 3) -> list[Entry]:
    """Records to entries, each subject on one partition, in the order a consumer may read."""
    offsets = [0] * partitions
    out: list[Entry] = []
    for record in records:
        p = int(record["envelope"]["subject"]["local_id"][-1], 16) % partitions
        out.append(Decoded((TOPIC, p, offsets[p]), record))
        offsets[p] += 1
    return out


def oracle(entries: list[Entry]) -> bytes:
    state = ViewState(AUDIENCE)
    apply_batch(state, entries)
    return canonical_dump(state.tables())


def late(records: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """Move one in ten events back in time, so they arrive after later ones."""
    rng = random.Random(seed)
    for record in records:
        if record["envelope"]["event_type"] != "delivery.retracted" and rng.random() < 0.1:
            record["envelope"]["occurred_at"] -= dt.timedelta(days=rng.randrange(1, 400))
    return records


class ViewStoreContract:
    @pytest.fixture
    def url(self) -> str:
        raise NotImplementedError

    @pytest.fixture
    def store(self, url: str) -> Iterator[SqlViewStore]:
        store = open_view_store(url, AUDIENCE)
        yield store
        store.dispose()

    def test_batches_with_replays_give_the_tables_of_the_projection(
        self, store: SqlViewStore
    ) -> None:
        entries = entries_for(late(sample_deliveries(3000, seed=11, subjects=60), seed=11))
        rng = random.Random(11)
        start = 0
        while start < len(entries):
            size = rng.randrange(1, 400)
            store.apply_batch(entries[max(0, start - rng.randrange(0, 100)) : start + size])
            start += size

        assert store.dump() == oracle(entries)

    def test_merges_and_retracted_merges_give_the_tables_of_the_projection(
        self, store: SqlViewStore
    ) -> None:
        records = late(sample_deliveries(1000, seed=21, subjects=30, merges=0.04), seed=21)
        entries = entries_for(records)
        rng = random.Random(21)
        start = 0
        while start < len(entries):
            size = rng.randrange(1, 300)
            store.apply_batch(entries[max(0, start - rng.randrange(0, 50)) : start + size])
            start += size

        tables = store.tables()
        assert tables["view_aliases"], "the sample holds merges"
        assert any(r["delivered_id"] != r["subject_id"] for r in tables["view_timeline"])
        assert store.dump() == oracle(entries)

    def test_the_same_batch_twice_changes_nothing(self, store: SqlViewStore) -> None:
        entries = entries_for(sample_deliveries(500, seed=12, subjects=20))
        store.apply_batch(entries)
        first = store.dump()

        stats = store.apply_batch(entries)

        assert stats.stale == len(entries) and stats.applied == 0
        assert store.dump() == first

    def test_offsets_are_stored_with_the_rows(self, store: SqlViewStore) -> None:
        entries = entries_for(sample_deliveries(300, seed=13, subjects=12))
        store.apply_batch(entries)

        last: dict[int, int] = {}
        for entry in entries:
            last[entry.position[1]] = entry.position[2]
        assert store.offsets(TOPIC) == {p: o + 1 for p, o in last.items()}
        assert store.offsets("deliver.other") == {}

    def test_undecodable_records_are_stored_as_rejects(self, store: SqlViewStore) -> None:
        entries: list[Entry] = [
            Undecodable((TOPIC, 0, 0), "bad_magic", "deliver.mals[0]@0: magic byte is 7"),
            *entries_for(sample_deliveries(5, seed=14, subjects=1), partitions=1)[1:],
        ]
        store.apply_batch(entries)

        rejects = store.tables()["view_rejects"]
        assert [(r["partition"], r["offset"], r["reason"]) for r in rejects] == [
            (0, 0, "bad_magic")
        ]
        assert store.dump() == oracle(entries)

    def test_reset_then_replay_gives_the_same_bytes(self, store: SqlViewStore) -> None:
        entries = entries_for(sample_deliveries(800, seed=15, subjects=30))
        for start in range(0, len(entries), 97):
            store.apply_batch(entries[start : start + 97])
        before = store.dump()

        store.reset()
        assert store.count("view_timeline") == 0 and store.offsets(TOPIC) == {}
        store.apply_batch(entries)

        assert store.dump() == before

    def test_concurrent_writers_of_the_same_records_never_collide(
        self, url: str, store: SqlViewStore
    ) -> None:
        entries = entries_for(sample_deliveries(1200, seed=16, subjects=40))
        errors: list[BaseException] = []

        def writer() -> None:
            other = open_view_store(url, AUDIENCE)
            try:
                for start in range(0, len(entries), 150):
                    other.apply_batch(entries[start : start + 150])
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
            finally:
                other.dispose()

        threads = [threading.Thread(target=writer) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert errors == []
        assert store.dump() == oracle(entries)

    def test_a_database_holds_the_view_of_one_audience(self, url: str, store: SqlViewStore) -> None:
        with pytest.raises(InputError, match="holds the view of audience 'mals', not 'kmbc'"):
            open_view_store(url, "kmbc")


class TestSqliteFile(ViewStoreContract):
    @pytest.fixture
    def url(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path / 'view.db'}"


class TestPostgres(ViewStoreContract):
    @pytest.fixture
    def url(self, fresh_postgres_url: str) -> str:  # noqa: F811
        return fresh_postgres_url
