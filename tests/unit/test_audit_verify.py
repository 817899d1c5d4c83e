"""The verifier on a stored 500-entry trail, a checkpoint every 50 (RELIABILITY AU-1..AU-4).

The trail is built once per module in a SQLite file. Byte flips run on the rows as read from
that file (``store.entry_rows()``, ``store.checkpoints()``), each mutated copy verified in full;
a smaller set goes through SQL on a copy of the file to exercise the stored path, including bytes
that are not UTF-8. The large AU-1 sample runs on two worker processes when there are two cores.
"""

from __future__ import annotations

import bisect
import dataclasses
import os
import random
import shutil
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hub.adapters.audit_store import open_audit_store
from hub.audit.bench import sample_entries
from hub.audit.chain import chain
from hub.audit.checkpoint import Checkpoint, CheckpointSigner, read_witness, write_witness
from hub.audit.entry import AuditEntry
from hub.audit.materialise import materialise
from hub.audit.protocols import ENTRY_ROW_COLUMNS
from hub.audit.verify import NO_WITNESS_NOTE, WITNESS, MemoryTrail, VerifyReport, verify
from hub.domain.errors import AuditIntegrityError

SIZE = 500
EVERY = 50
SEED = 20250131


@dataclass
class Trail:
    db: Path
    rows: list[tuple[Any, ...]]
    checkpoints: list[Checkpoint]
    signer: CheckpointSigner

    def verify(
        self,
        rows: list[tuple[Any, ...]] | None = None,
        checkpoints: list[Checkpoint] | None = None,
        witness: Checkpoint | None = None,
    ) -> VerifyReport:
        trail = MemoryTrail(
            self.rows if rows is None else rows,
            self.checkpoints if checkpoints is None else checkpoints,
        )
        return verify(trail, self.signer.public_key, witness)

    def head_at(self, size: int) -> str:
        return str(self.rows[size - 1][3])


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trail]:
    db = tmp_path_factory.mktemp("audit") / "trail.db"
    store = open_audit_store(f"sqlite:///{db}")
    signer = CheckpointSigner(Ed25519PrivateKey.generate())
    values = [entry.to_json_bytes() for entry in sample_entries(SIZE, seed=SEED)]
    materialise(
        store,
        ((0, offset, value) for offset, value in enumerate(values)),
        signer,
        checkpoint_every=EVERY,
    )
    rows = [tuple(row) for row in store.entry_rows()]
    checkpoints = store.checkpoints()
    store.close()  # merges the WAL into the file, so a copy of the file is the whole trail
    yield Trail(db, rows, checkpoints, signer)


def _flip(value: Any, pos: int, xor: int) -> Any:
    """``value`` with the byte at ``pos`` of its stored form XOR-ed with ``xor`` (non-zero)."""
    raw = value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")
    changed = bytearray(raw)
    changed[pos] ^= xor
    return (
        bytes(changed) if isinstance(value, bytes) else changed.decode("utf-8", "surrogateescape")
    )


def _size(value: Any) -> int:
    return len(value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape"))


def _resign(
    trail: Trail, rows: list[tuple[Any, ...]], signer: CheckpointSigner
) -> list[Checkpoint]:
    return [
        dataclasses.replace(signer.sign(cp.size, str(rows[cp.size - 1][3])), id=cp.id)
        for cp in trail.checkpoints
    ]


def _rechain(
    rows: list[tuple[Any, ...]], start: int, entries: list[AuditEntry]
) -> list[tuple[Any, ...]]:
    """Rows with ``entries`` chained from position ``start`` on, hashes recomputed (no key)."""
    head = (start - 1, str(rows[start - 2][3])) if start > 1 else (0, "0" * 64)
    relinked = MemoryTrail.from_chain(chain(entries, head)).rows
    return rows[: start - 1] + [tuple(row) for row in relinked]


# clean trail


def test_clean_trail_verifies_ten_times_without_a_false_positive(trail: Trail) -> None:
    for _ in range(10):
        report = trail.verify()
        assert report.ok, report.summary()
        assert (report.size, report.signed_size, report.checkpoints) == (SIZE, SIZE, SIZE // EVERY)
        assert report.head_hash == trail.head_at(SIZE)
        assert NO_WITNESS_NOTE in report.notes


def test_clean_trail_verifies_from_the_database_file(trail: Trail) -> None:
    store = open_audit_store(f"sqlite:///{trail.db}")
    try:
        report = verify(store, trail.signer.public_key)
    finally:
        store.close()
    assert report.ok, report.summary()
    assert report.size == SIZE


def test_a_broken_report_raises_an_integrity_error_with_exit_code_3(trail: Trail) -> None:
    rows = list(trail.rows)
    rows[41] = tuple(_flip(v, 10, 1) if i == 1 else v for i, v in enumerate(rows[41]))
    report = trail.verify(rows)
    with pytest.raises(AuditIntegrityError, match="entry 42") as caught:
        report.raise_if_broken()
    assert caught.value.exit_code == 3


# AU-1: single-byte flips


def _au1_mutations(trail: Trail) -> list[tuple[str, int, int, int, int]]:
    """A stratified sample of (target, row, column, byte, xor) over every stored column."""
    rnd = random.Random(SEED)
    quota = {"body": 7500, "prev_hash": 1500, "hash": 1500, "alg": 1500}
    out: list[tuple[str, int, int, int, int]] = []
    for col in range(1, len(ENTRY_ROW_COLUMNS)):
        name = ENTRY_ROW_COLUMNS[col]
        sizes = [_size(row[col]) if row[col] is not None else 0 for row in trail.rows]
        starts = [0]
        for size in sizes:
            starts.append(starts[-1] + size)
        total = starts[-1]
        for flat in rnd.sample(range(total), min(total, quota.get(name, 400))):
            r = bisect.bisect_right(starts, flat) - 1
            out.append(("entry", r, col, flat - starts[r], rnd.randrange(1, 256)))
    for c, cp in enumerate(trail.checkpoints):
        for col, name in enumerate(("origin", "head_hash", "at", "key_id", "signature")):
            for pos in range(_size(getattr(cp, name))):
                out.append(("checkpoint", c, col, pos, rnd.randrange(1, 256)))
        for bit in range(16):
            out.append(("checkpoint", c, -1, bit, 0))
    return out


_WORKER_TRAIL: Trail | None = None


def _init_worker(trail: Trail) -> None:
    global _WORKER_TRAIL
    _WORKER_TRAIL = trail


def _au1_failures(mutations: list[tuple[str, int, int, int, int]]) -> list[str]:
    trail = _WORKER_TRAIL
    assert trail is not None
    failures: list[str] = []
    for target, r, col, pos, xor in mutations:
        if target == "entry":
            rows = list(trail.rows)
            rows[r] = tuple(_flip(v, pos, xor) if i == col else v for i, v in enumerate(rows[r]))
            report = trail.verify(rows)
            want: tuple[int | None, int | str | None] = (trail.rows[r][0], None)
        else:
            cps = list(trail.checkpoints)
            cp = cps[r]
            if col < 0:
                cps[r] = dataclasses.replace(cp, size=cp.size ^ (1 << pos))
            else:
                name = ("origin", "head_hash", "at", "key_id", "signature")[col]
                cps[r] = dataclasses.replace(cp, **{name: _flip(getattr(cp, name), pos, xor)})
            report = trail.verify(checkpoints=cps)
            want = (None, cp.id)
        first = report.first
        got = (first.seq, first.checkpoint) if first is not None else None
        if got != want:
            failures.append(f"{target} {r} column {col} byte {pos}: wanted {want}, got {got}")
    return failures


def test_au1_every_sampled_single_byte_flip_names_the_mutated_entry_or_checkpoint(
    trail: Trail,
) -> None:
    mutations = _au1_mutations(trail)
    assert len(mutations) >= 20_000
    columns = {(m[0], m[2]) for m in mutations}
    assert (
        len(columns) == len(ENTRY_ROW_COLUMNS) - 1 + 6
    )  # every entry column, every checkpoint one
    workers = min(2, os.cpu_count() or 1)
    if workers == 1:
        _init_worker(trail)
        failures = _au1_failures(mutations)
    else:
        chunks = [mutations[i::workers] for i in range(workers)]
        with ProcessPoolExecutor(
            workers, mp_context=get_context("fork"), initializer=_init_worker, initargs=(trail,)
        ) as pool:
            failures = [f for part in pool.map(_au1_failures, chunks) for f in part]
    assert not failures, f"{len(failures)} of {len(mutations)} flips misreported: {failures[:5]}"


def _sql_flip(db: Path, table: str, key: str, key_value: int, column: str, pos: int) -> None:
    with sqlite3.connect(db) as conn:
        (raw,) = conn.execute(
            f"SELECT CAST({column} AS BLOB) FROM {table} WHERE {key} = ?", (key_value,)
        ).fetchone()
        changed = bytearray(raw)
        changed[pos] ^= 0x80  # high bit: usually leaves invalid UTF-8 in a text column
        conn.execute(
            f"UPDATE {table} SET {column} = CAST(? AS TEXT) WHERE {key} = ?",
            (bytes(changed), key_value),
        )


def test_au1_flips_written_into_the_database_file_are_named(trail: Trail, tmp_path: Path) -> None:
    rnd = random.Random(SEED + 1)
    cases: list[tuple[str, str, int, str, int]] = []
    for column in ENTRY_ROW_COLUMNS[1:]:
        for _ in range(3):
            r = rnd.randrange(SIZE)
            if trail.rows[r][ENTRY_ROW_COLUMNS.index(column)] is None:
                continue
            size = _size(trail.rows[r][ENTRY_ROW_COLUMNS.index(column)])
            cases.append(("audit_entries", "seq", r + 1, column, rnd.randrange(size)))
    for column in ("origin", "head_hash", "at", "key_id", "signature"):
        cp = rnd.choice(trail.checkpoints)
        assert cp.id is not None
        cases.append(
            ("audit_checkpoints", "id", cp.id, column, rnd.randrange(_size(getattr(cp, column))))
        )
    for n, (table, key, key_value, column, pos) in enumerate(cases):
        copy = tmp_path / f"copy{n}.db"
        shutil.copyfile(trail.db, copy)
        _sql_flip(copy, table, key, key_value, column, pos)
        store = open_audit_store(f"sqlite:///{copy}")
        try:
            first = verify(store, trail.signer.public_key).first
        finally:
            store.close()
        assert first is not None, f"{table}.{column} of {key_value} byte {pos} not detected"
        got = first.seq if table == "audit_entries" else first.checkpoint
        assert got == key_value, f"{table}.{column} of {key_value}: {first.describe()}"


# AU-2: structural mutations


def test_au2_deleted_entry_is_a_gap_at_its_position(trail: Trail) -> None:
    rows = trail.rows[:136] + trail.rows[137:]
    first = trail.verify(rows).first
    assert first is not None and (first.kind, first.seq) == ("gap", 137)


def test_au2_inserted_naive_forgery_is_named(trail: Trail) -> None:
    forged = (137, b'{"forged":true}', trail.rows[135][3], "f" * 64, "sha256", *trail.rows[136][5:])
    renumbered = [(row[0] + 1, *row[1:]) for row in trail.rows[136:]]
    first = trail.verify(trail.rows[:136] + [forged] + renumbered).first
    assert first is not None and (first.kind, first.seq) == ("hash_mismatch", 137)


def test_au2_inserted_well_hashed_forgery_breaks_the_link_after_it(trail: Trail) -> None:
    entry = sample_entries(1, seed=99)[0]
    (forged,) = chain([entry], (136, trail.head_at(136)))
    row = MemoryTrail.from_chain([forged]).rows[0]
    renumbered = [(r[0] + 1, *r[1:]) for r in trail.rows[136:]]
    first = trail.verify(trail.rows[:136] + [tuple(row)] + renumbered).first
    assert first is not None and (first.kind, first.seq) == ("broken_link", 138)


def test_au2_swapped_rows_are_reordered_at_the_first(trail: Trail) -> None:
    rows = list(trail.rows)
    rows[199], rows[200] = rows[200], rows[199]
    first = trail.verify(rows).first
    assert first is not None and (first.kind, first.seq) == ("reordered", 200)


def test_au2_swapped_row_contents_under_fixed_positions_break_the_link(trail: Trail) -> None:
    rows = list(trail.rows)
    a, b = rows[199], rows[200]
    rows[199], rows[200] = (a[0], *b[1:]), (b[0], *a[1:])
    first = trail.verify(rows).first
    assert first is not None and (first.kind, first.seq) == ("broken_link", 200)


def test_au2_duplicated_entry_is_named(trail: Trail) -> None:
    rows = trail.rows[:300] + [trail.rows[299]] + trail.rows[300:]
    first = trail.verify(rows).first
    assert first is not None and (first.kind, first.seq) == ("duplicate", 301)


def test_au2_copied_entry_appended_with_a_new_number_breaks_the_link(trail: Trail) -> None:
    rows = trail.rows + [(SIZE + 1, *trail.rows[41][1:])]
    first = trail.verify(rows).first
    assert first is not None and (first.kind, first.seq) == ("broken_link", SIZE + 1)


def test_au2_row_added_before_the_first_is_named(trail: Trail) -> None:
    rows = [(0, *trail.rows[0][1:])] + trail.rows
    first = trail.verify(rows).first
    assert first is not None and first.seq == 1


def test_au2_well_hashed_row_after_the_last_checkpoint_is_reported_as_unsigned(
    trail: Trail,
) -> None:
    (extra,) = chain(sample_entries(1, seed=98), (SIZE, trail.head_at(SIZE)))
    report = trail.verify(trail.rows + MemoryTrail.from_chain([extra]).rows)
    assert report.ok
    assert report.unsigned_tail == 1
    assert any(f"entries {SIZE + 1}..{SIZE + 1}" in note for note in report.notes)


def test_au2_truncated_tail_without_witness_is_reported_undetectable(trail: Trail) -> None:
    kept = [cp for cp in trail.checkpoints if cp.size <= 450]
    report = trail.verify(trail.rows[:470], kept)
    assert report.ok
    assert NO_WITNESS_NOTE in report.notes
    assert report.unsigned_tail == 20


def test_au2_truncated_tail_with_witness_is_detected(trail: Trail, tmp_path: Path) -> None:
    path = tmp_path / "witness.json"
    write_witness(path, trail.checkpoints[-1])
    kept = [cp for cp in trail.checkpoints if cp.size <= 450]
    report = trail.verify(trail.rows[:470], kept, witness=read_witness(path))
    first = report.first
    assert first is not None
    assert (first.kind, first.checkpoint, first.position) == ("truncated", WITNESS, 471)


def test_au2_truncated_entries_under_a_kept_checkpoint_are_detected_without_witness(
    trail: Trail,
) -> None:
    first = trail.verify(trail.rows[:470]).first
    assert first is not None
    assert (first.kind, first.checkpoint) == ("truncated", trail.checkpoints[-1].id)


@pytest.mark.parametrize("delta", [1, -1])
def test_au2_checkpoint_size_off_by_one_is_a_bad_signature(trail: Trail, delta: int) -> None:
    cps = list(trail.checkpoints)
    cps[3] = dataclasses.replace(cps[3], size=cps[3].size + delta)
    first = trail.verify(checkpoints=cps).first
    assert first is not None and (first.kind, first.checkpoint) == ("bad_signature", cps[3].id)


def test_au2_swapped_checkpoints_are_reordered(trail: Trail) -> None:
    cps = list(trail.checkpoints)
    a, b = cps[3], cps[4]
    cps[3], cps[4] = dataclasses.replace(b, id=a.id), dataclasses.replace(a, id=b.id)
    first = trail.verify(checkpoints=cps).first
    assert first is not None and (first.kind, first.checkpoint) == ("reordered", b.id)


# AU-3: a rewrite without the key


def _rewritten(trail: Trail, seq: int) -> list[tuple[Any, ...]]:
    """The trail with entry ``seq``'s audience changed and every hash after it recomputed."""
    entries = [AuditEntry.from_json_bytes(row[1]) for row in trail.rows]
    entries[seq - 1] = dataclasses.replace(entries[seq - 1], audience="someone.else")
    return _rechain(trail.rows, seq, entries[seq - 1 :])


def test_au3_full_rewrite_fails_at_the_first_checkpoint_covering_it(trail: Trail) -> None:
    rows = _rewritten(trail, 10)
    first = trail.verify(rows).first
    assert first is not None
    assert (first.kind, first.checkpoint) == ("checkpoint_mismatch", trail.checkpoints[0].id)


def test_au3_rewrite_with_checkpoint_heads_edited_fails_their_signatures(trail: Trail) -> None:
    rows = _rewritten(trail, 10)
    cps = [dataclasses.replace(cp, head_hash=str(rows[cp.size - 1][3])) for cp in trail.checkpoints]
    first = trail.verify(rows, cps).first
    assert first is not None
    assert (first.kind, first.checkpoint) == ("bad_signature", trail.checkpoints[0].id)


def test_au3_rewrite_resigned_with_another_key_fails_the_signatures(trail: Trail) -> None:
    rows = _rewritten(trail, 10)
    cps = _resign(trail, rows, CheckpointSigner(Ed25519PrivateKey.generate()))
    first = trail.verify(rows, cps).first
    assert first is not None
    assert (first.kind, first.checkpoint) == ("bad_signature", trail.checkpoints[0].id)


# AU-4: fork and equivocation


def test_au4_witness_with_the_same_size_and_another_root_is_inconsistent(trail: Trail) -> None:
    fork = trail.signer.sign(250, "ab" * 32)
    first = trail.verify(witness=fork).first
    assert first is not None
    assert (first.kind, first.checkpoint) == ("inconsistent_with_witness", WITNESS)


def test_au4_rewrite_by_the_key_holder_is_inconsistent_with_an_earlier_witness(
    trail: Trail,
) -> None:
    witness = trail.checkpoints[3]  # exported at size 200, before the rewrite
    rows = _rewritten(trail, 10)
    cps = _resign(trail, rows, trail.signer)
    assert trail.verify(rows, cps).ok  # self-consistent: only the witness can tell
    first = trail.verify(rows, cps, witness=witness).first
    assert first is not None
    assert (first.kind, first.checkpoint) == ("inconsistent_with_witness", WITNESS)


def test_au4_two_signed_checkpoints_of_one_size_with_different_roots_are_caught(
    trail: Trail,
) -> None:
    fork = dataclasses.replace(trail.signer.sign(250, "cd" * 32), id=99)
    first = trail.verify(checkpoints=[*trail.checkpoints, fork]).first
    assert first is not None and first.checkpoint == 99


def test_witness_consistent_with_the_trail_passes(trail: Trail) -> None:
    report = trail.verify(witness=trail.checkpoints[4])
    assert report.ok, report.summary()
    assert report.witness_size == trail.checkpoints[4].size
    assert NO_WITNESS_NOTE not in report.notes


def test_witness_signed_by_another_key_is_rejected(trail: Trail) -> None:
    other = CheckpointSigner(Ed25519PrivateKey.generate()).sign(SIZE, trail.head_at(SIZE))
    first = trail.verify(witness=other).first
    assert first is not None and (first.kind, first.checkpoint) == ("bad_signature", WITNESS)
