"""The materialiser over plain (partition, offset, value) records, into in-memory SQLite."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hub.adapters.audit_store import SqlAuditStore, open_audit_store
from hub.audit.bench import sample_entries
from hub.audit.checkpoint import CheckpointSigner
from hub.audit.materialise import AUDIT_TOPIC, Materialiser, materialise
from hub.audit.verify import verify


@pytest.fixture
def store() -> Iterator[SqlAuditStore]:
    s = open_audit_store("sqlite://")
    yield s
    s.close()


@pytest.fixture
def signer() -> CheckpointSigner:
    return CheckpointSigner(Ed25519PrivateKey.generate())


def records(n: int, seed: int = 1, start: int = 0) -> list[tuple[int, int, bytes | None]]:
    values = [entry.to_json_bytes() for entry in sample_entries(n, seed=seed)]
    return [(0, start + i, value) for i, value in enumerate(values)]


def test_checkpoints_every_n_entries_and_at_the_end(
    store: SqlAuditStore, signer: CheckpointSigner
) -> None:
    result = materialise(store, records(120), signer, checkpoint_every=50, batch_size=32)
    assert (result.consumed, result.appended, result.rejected) == (120, 120, 0)
    assert [cp.size for cp in store.checkpoints()] == [50, 100, 120]
    assert store.head()[0] == 120
    assert store.next_offset(AUDIT_TOPIC, 0) == 120
    report = verify(store, signer.public_key)
    assert report.ok and report.signed_size == 120


def test_entries_keep_the_topic_order(store: SqlAuditStore, signer: CheckpointSigner) -> None:
    recs = records(40)
    materialise(store, recs, signer, batch_size=7)
    stored = [item.entry.to_json_bytes() for item in store.iter_entries()]
    assert stored == [value for _, _, value in recs]


def test_malformed_values_become_rejected_entries_without_their_content(
    store: SqlAuditStore, signer: CheckpointSigner
) -> None:
    canary = b"CANARY-4b1d-secret-name"
    recs = records(5)
    quoted = re.sub(rb'"kind":"\w+"', b'"kind":"' + canary + b'"', recs[0][2] or b"")
    assert canary in quoted
    bad = [b"not json " + canary, None, quoted]
    recs[1:1] = [(0, 100 + i, value) for i, value in enumerate(bad)]
    result = materialise(store, recs, signer, checkpoint_every=1000)
    assert (result.appended, result.rejected) == (8, 3)
    rejected = store.query(kind="rejected", outcome="error")
    assert [item.seq for item in rejected] == [2, 3, 4]
    for item, value in zip(rejected, bad, strict=True):
        entry = item.entry
        assert entry.component == "materialiser"
        assert entry.payload_hash == hashlib.sha256(value or b"").hexdigest()
        assert dict(entry.details) == {
            "topic": AUDIT_TOPIC,
            "partition": "0",
            "offset": str(100 + bad.index(value)),
        }
        assert entry.reason and entry.reason.split(":")[0] in ("invalid_audit_entry", "empty_value")
    with store.engine.connect() as conn:
        dumped = json.dumps(
            [list(row) for row in conn.exec_driver_sql("SELECT * FROM audit_entries")]
        )
    assert canary.decode() not in dumped
    assert verify(store, signer.public_key).ok


def test_replaying_the_same_records_appends_nothing(
    store: SqlAuditStore, signer: CheckpointSigner
) -> None:
    recs = records(60)
    materialise(store, recs, signer, checkpoint_every=25)
    head = store.head()
    again = materialise(store, recs, signer, checkpoint_every=25)
    assert (again.appended, again.skipped) == (0, 60)
    assert store.head() == head
    assert [cp.size for cp in store.checkpoints()] == [25, 50, 60]


def test_restart_resumes_after_the_stored_offset(
    store: SqlAuditStore, signer: CheckpointSigner
) -> None:
    recs = records(100)
    first = Materialiser(store, signer, checkpoint_every=1000)
    first.process(recs[:30])
    first.process(recs[30:60])
    assert store.next_offset(AUDIT_TOPIC, 0) == 60
    second = Materialiser(store, signer, checkpoint_every=1000)
    second.process(recs[:50])  # the consumer rewound: nothing is appended twice
    second.process(recs[50:])
    assert store.head()[0] == 100
    assert second.result.skipped == 60


def test_a_known_entry_id_at_a_new_offset_is_skipped(
    store: SqlAuditStore, signer: CheckpointSigner
) -> None:
    recs = records(10)
    again = [(0, 10 + i, value) for i, (_, _, value) in enumerate(recs[:3])]
    result = materialise(store, recs + again, signer)
    assert (result.appended, result.skipped) == (10, 3)
    assert store.next_offset(AUDIT_TOPIC, 0) == 13


def test_tick_signs_the_head_after_the_interval(
    store: SqlAuditStore, signer: CheckpointSigner
) -> None:
    now = [0.0]
    worker = Materialiser(
        store, signer, checkpoint_every=1000, checkpoint_interval_s=5, clock=lambda: now[0]
    )
    worker.process(records(7))
    assert store.checkpoints() == []
    now[0] = 4.9
    assert worker.tick() is None
    now[0] = 5.0
    cp = worker.tick()
    assert cp is not None and cp.size == 7
    now[0] = 20.0
    assert worker.tick() is None  # nothing new to sign
    assert len(store.checkpoints()) == 1


def test_a_new_materialiser_does_not_resign_a_signed_head(
    store: SqlAuditStore, signer: CheckpointSigner
) -> None:
    materialise(store, records(10), signer)
    assert Materialiser(store, signer).checkpoint_head() is None
    assert len(store.checkpoints()) == 1
