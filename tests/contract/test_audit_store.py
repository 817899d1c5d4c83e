"""The audit store's contract, run against each backend: SQLite (file and in-memory) and PostgreSQL.

PostgreSQL runs when ``HUB_TEST_POSTGRES_URL`` names a database, or when ``initdb`` and
``pg_ctl`` are on the PATH and psycopg is installed (a throwaway cluster is started for the
module); otherwise those cases are skipped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine

from hub.adapters import audit_store
from hub.adapters.audit_store import (
    SqlAuditStore,
    audit_engine,
    audit_metadata,
    create_audit_tables,
    open_audit_store,
)
from hub.audit.bench import sample_entries
from hub.audit.chain import GENESIS_HASH, chain
from hub.audit.checkpoint import CheckpointSigner
from hub.audit.entry import AuditEntry
from hub.audit.protocols import OffsetMark
from hub.audit.verify import verify
from hub.domain.errors import InfraError, InputError

TOPIC = "hub.audit"


def entries(n: int, seed: int = 1) -> list[AuditEntry]:
    return sample_entries(n, seed=seed)


class AuditStoreContract:
    @pytest.fixture
    def store(self) -> Iterator[SqlAuditStore]:
        raise NotImplementedError

    def test_an_empty_trail_has_the_genesis_head(self, store: SqlAuditStore) -> None:
        assert store.head() == (0, GENESIS_HASH)
        assert list(store.entry_rows()) == []
        assert store.checkpoints() == [] and store.latest_checkpoint() is None
        assert store.next_offset(TOPIC, 0) is None

    def test_append_chains_after_the_head(self, store: SqlAuditStore) -> None:
        batch = entries(30)
        first = store.append(batch[:10])
        second = store.append(batch[10:])
        expected = [(item.seq, item.hash) for item in chain(batch)]
        assert first + second == expected
        assert store.head() == expected[-1]

    def test_stored_entries_read_back_equal(self, store: SqlAuditStore) -> None:
        batch = entries(25)
        store.append(batch)
        assert [item.entry for item in store.iter_entries()] == batch
        assert [item.seq for item in store.iter_entries(start=20)] == [20, 21, 22, 23, 24, 25]

    def test_known_entry_ids_are_skipped(self, store: SqlAuditStore) -> None:
        batch = entries(10)
        store.append(batch[:6])
        appended = store.append([batch[2], *batch[6:], batch[7]])
        assert [seq for seq, _ in appended] == [7, 8, 9, 10]
        assert store.head()[0] == 10

    def test_the_offset_is_stored_with_the_entries(self, store: SqlAuditStore) -> None:
        store.append(entries(3), OffsetMark(TOPIC, 0, 3))
        assert store.next_offset(TOPIC, 0) == 3
        store.append(entries(2, seed=2), OffsetMark(TOPIC, 0, 5))
        assert store.next_offset(TOPIC, 0) == 5
        assert store.next_offset(TOPIC, 1) is None
        assert store.next_offset("other", 0) is None

    def test_a_failed_append_stores_neither_entries_nor_offset(
        self, store: SqlAuditStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        store.append(entries(3), OffsetMark(TOPIC, 0, 3))
        head = store.head()
        monkeypatch.setattr(audit_store, "_head", lambda conn: (0, GENESIS_HASH))  # a rival writer
        with pytest.raises(InfraError, match="one writer"):
            store.append(entries(2, seed=9), OffsetMark(TOPIC, 0, 5))
        monkeypatch.undo()
        assert store.head() == head
        assert store.next_offset(TOPIC, 0) == 3

    def test_checkpoints_are_stored_in_order(self, store: SqlAuditStore) -> None:
        signer = CheckpointSigner(Ed25519PrivateKey.generate())
        appended = store.append(entries(20))
        added = [store.add_checkpoint(signer.sign(seq, digest)) for seq, digest in appended[9::10]]
        assert [cp.id for cp in added] == sorted({cp.id for cp in added})
        assert store.checkpoints() == added
        assert store.latest_checkpoint() == added[-1]

    def test_the_stored_trail_verifies(self, store: SqlAuditStore) -> None:
        signer = CheckpointSigner(Ed25519PrivateKey.generate())
        unusual = dataclasses.replace(
            entries(1, seed=5)[0],
            subject_ref="ps-\u00e9\u4e2d\U0001f600",
            fields={"n\u00e4me": "mask", "\U0001f600": "keep"},
            clause_ids=("c_1%", "c\u00e9"),
        )
        store.append([*entries(40), unusual])
        store.add_checkpoint(signer.sign(*store.head()))
        report = verify(store, signer.public_key)
        assert report.ok, report.summary()
        assert report.size == 41 and report.signed_size == 41
        assert store.query(subject_ref=unusual.subject_ref)[0].entry == unusual

    def test_query_filters_combine(self, store: SqlAuditStore) -> None:
        batch = entries(200, seed=3)
        store.append(batch)

        def matches(**want: object) -> list[int]:
            return [
                seq
                for seq, e in enumerate(batch, 1)
                if all(getattr(e, k) == v for k, v in want.items())
            ]

        subject = batch[17].subject_ref
        assert [s.seq for s in store.query(subject_ref=subject)] == matches(subject_ref=subject)
        assert [s.seq for s in store.query(audience="mals")] == matches(audience="mals")
        assert [s.seq for s in store.query(kind="decided", outcome="deny")] == matches(
            kind="decided", outcome="deny"
        )
        assert [s.seq for s in store.query(kind=["access", "rejected"])] == [
            seq for seq, e in enumerate(batch, 1) if e.kind in ("access", "rejected")
        ]
        agreement = batch[0].agreement_id
        assert len(store.query(agreement_id=agreement, limit=1000)) == len(
            matches(agreement_id=agreement)
        )

    def test_query_by_agency_covers_source_audience_and_sub_audiences(
        self, store: SqlAuditStore
    ) -> None:
        batch = entries(200, seed=4)
        store.append(batch)
        got = [s.seq for s in store.query(agency="mals", limit=1000)]
        want = [
            seq
            for seq, e in enumerate(batch, 1)
            if "mals" in (e.source_agency, e.audience) or (e.audience or "").startswith("mals.")
        ]
        assert got == want and got

    def test_query_by_clause_matches_whole_clause_ids(self, store: SqlAuditStore) -> None:
        base = entries(4, seed=6)
        tagged = [
            dataclasses.replace(base[0], clause_ids=("c1",)),
            dataclasses.replace(base[1], clause_ids=("c10", "c_2")),
            dataclasses.replace(base[2], clause_ids=("cx2",)),
            dataclasses.replace(base[3], clause_ids=("a%b", "c1")),
        ]
        store.append(tagged)
        assert [s.seq for s in store.query(clause_id="c1")] == [1, 4]
        assert [s.seq for s in store.query(clause_id="c_2")] == [2]
        assert [s.seq for s in store.query(clause_id="a%b")] == [4]
        assert store.query(clause_id="c") == []

    def test_query_by_time_window_and_pages(self, store: SqlAuditStore) -> None:
        batch = entries(100, seed=7)
        store.append(batch)
        since, until = batch[10].at, batch[40].at + timedelta(milliseconds=1)
        window = [s.seq for s in store.query(since=since, until=until, limit=1000)]
        assert window == [seq for seq, e in enumerate(batch, 1) if since <= e.at < until]
        page = store.query(since=since, until=until, limit=7)
        rest = store.query(since=since, until=until, after_seq=page[-1].seq, limit=1000)
        assert [s.seq for s in page + rest] == window

    @pytest.mark.parametrize("limit", [0, 100_001])
    def test_query_limit_is_bounded(self, store: SqlAuditStore, limit: int) -> None:
        with pytest.raises(InputError):
            store.query(limit=limit)


class TestSqliteFileStore(AuditStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[SqlAuditStore]:
        store = open_audit_store(f"sqlite:///{tmp_path / 'hub.db'}")
        yield store
        store.close()


class TestSqliteMemoryStore(AuditStoreContract):
    @pytest.fixture
    def store(self) -> Iterator[SqlAuditStore]:
        store = open_audit_store("sqlite://")
        yield store
        store.close()


class TestPostgresStore(AuditStoreContract):
    @pytest.fixture
    def engine(self, postgres_url: str) -> Iterator[Engine]:
        engine = audit_engine(postgres_url)
        audit_metadata.drop_all(engine)
        create_audit_tables(engine)
        yield engine
        audit_metadata.drop_all(engine)
        engine.dispose()

    @pytest.fixture
    def store(self, engine: Engine) -> Iterator[SqlAuditStore]:
        yield SqlAuditStore(engine)
