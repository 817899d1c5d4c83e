"""Re-walk the stored trail: positions, links, hashes, searchable columns, signed checkpoints and,
given one, an outside witness.

What each check catches:

- ``gap`` / ``duplicate`` / ``reordered``: a row deleted, repeated or moved (seq runs 1, 2, 3...);
- ``broken_link``: ``prev_hash`` is not the previous entry's hash (genesis: 64 zeros);
- ``unknown_algorithm`` / ``hash_mismatch``: the stored hash is not the hash of the stored bytes;
- ``column_mismatch`` / ``malformed``: a searchable column disagrees with the hashed body, or the
  body is not an entry;
- ``bad_signature`` / ``checkpoint_mismatch`` / ``reordered`` (checkpoint): a checkpoint that does
  not verify under the trusted key, whose signed head is not the chain's head at that size, or
  that goes backwards; this is what stops a rewrite by someone without the key (RELIABILITY AU-3);
- ``truncated``: a signed checkpoint or the witness covers more entries than are stored;
- ``inconsistent_with_witness``: the chain at the witness's size does not end in its head (a
  rewrite or a fork).

Without a witness, removing the newest entries *and* the checkpoints covering them cannot be
told apart from a shorter trail; the report says so. Anyone with write access to the database can
append well-formed entries after the last checkpoint; the report gives that unsigned tail.

The walk stops at the first broken entry: what follows it cannot be trusted anyway.
"""

from __future__ import annotations

import json
import operator
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hub.audit.chain import ALGORITHMS, GENESIS_HASH, ChainedEntry
from hub.audit.checkpoint import ORIGIN, Checkpoint, CheckpointVerifier
from hub.audit.entry import INDEX_COLUMNS, index_values
from hub.audit.protocols import EntryRow, TrailSource
from hub.domain.errors import AuditIntegrityError

log = structlog.get_logger(__name__)

WITNESS = "witness"
NO_WITNESS_NOTE = "tail truncation is undetectable without a witness file"

_PREFIX = {name: b'{"alg":"' + name.encode() + b'","entry":' for name in ALGORITHMS}
_N_INDEX = len(INDEX_COLUMNS)
_CLAUSES = 5 + _N_INDEX - 1  # the row index of the clause_ids column (the last one)
_plain_index = operator.itemgetter(*INDEX_COLUMNS[:-1])
_scan = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class Problem:
    """One break. ``seq`` names the entry, or ``checkpoint`` the checkpoint id (or "witness");
    ``position`` orders problems along the chain (a checkpoint sits at its size)."""

    kind: str
    message: str
    position: int
    seq: int | None = None
    checkpoint: int | str | None = None

    def describe(self) -> str:
        where = f"entry {self.seq}" if self.seq is not None else f"checkpoint {self.checkpoint}"
        return f"{where}: {self.kind}: {self.message}"


@dataclass
class VerifyReport:
    size: int = 0
    head_hash: str = GENESIS_HASH
    complete: bool = True
    checkpoints: int = 0
    signed_size: int = 0
    witness_size: int | None = None
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first(self) -> Problem | None:
        """The first break along the chain (entries before checkpoints at the same position)."""
        if not self.problems:
            return None
        return min(self.problems, key=lambda p: (p.position, p.seq is None))

    @property
    def unsigned_tail(self) -> int:
        return self.size - self.signed_size if self.complete else 0

    @property
    def entries_per_s(self) -> float:
        return self.size / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def summary(self) -> str:
        """One line for the CLI."""
        if self.first is not None:
            extra = f" (+{len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
            return f"audit trail BROKEN at {self.first.describe()}{extra}"
        text = (
            f"audit trail ok: {self.size} entries, head {self.head_hash[:16]}, "
            f"{self.checkpoints} checkpoints, signed up to {self.signed_size}"
        )
        if self.witness_size is not None:
            text += f", consistent with the witness at {self.witness_size}"
        return text

    def raise_if_broken(self) -> None:
        """``AuditIntegrityError`` (exit code 3) naming the first break."""
        if self.first is not None:
            raise AuditIntegrityError(self.summary())


@dataclass
class MemoryTrail:
    """A trail held in memory: rows as ``ENTRY_ROW_COLUMNS`` tuples, and checkpoints. For tests
    and for re-deriving the chain from the topic to compare heads (RELIABILITY AU-5)."""

    rows: list[EntryRow]
    checkpoint_list: list[Checkpoint] = field(default_factory=list)

    @classmethod
    def from_chain(
        cls, chained: Iterable[ChainedEntry], checkpoints: Iterable[Checkpoint] = ()
    ) -> MemoryTrail:
        rows: list[EntryRow] = [
            (item.seq, item.body, item.prev_hash, item.hash, item.alg, *item.index)
            for item in chained
        ]
        return cls(rows, list(checkpoints))

    def entry_rows(self) -> Iterator[EntryRow]:
        return iter(self.rows)

    def checkpoints(self) -> list[Checkpoint]:
        return list(self.checkpoint_list)


def verify(
    source: TrailSource,
    public_keys: Ed25519PublicKey | list[Ed25519PublicKey],
    witness: Checkpoint | None = None,
    *,
    origin: str = ORIGIN,
) -> VerifyReport:
    """Verify the whole trail in ``source`` against the trusted ``public_keys``."""
    started = time.perf_counter()
    report = VerifyReport()
    verifier = CheckpointVerifier(public_keys, origin)
    checkpoints = source.checkpoints()
    report.checkpoints = len(checkpoints)
    by_size = _check_checkpoints(checkpoints, verifier, report)
    if witness is not None and (message := verifier.problem(witness)) is not None:
        report.problems.append(
            Problem("bad_signature", f"witness {message}", _position(witness.size), None, WITNESS)
        )
        witness = None
    wanted = witness.size if witness is not None else -1

    size, head, witnessed_head = _walk(source.entry_rows(), by_size, wanted, report)
    report.size, report.head_hash = size, head
    if report.complete:
        signed = [s for s in by_size if s <= size]
        report.signed_size = max(signed, default=0)
        beyond = [cp for s, cps in by_size.items() if s > size for cp in cps]
        if beyond:
            cp = min(beyond, key=lambda c: c.size)
            report.problems.append(
                Problem(
                    "truncated",
                    f"signed for {cp.size} entries but {size} are stored: "
                    f"entries {size + 1}..{cp.size} are missing",
                    size + 1,
                    None,
                    cp.id,
                )
            )
        if witness is not None:
            report.witness_size = witness.size
            _check_witness(witness, size, witnessed_head, report)
        else:
            report.notes.append(NO_WITNESS_NOTE)
        if report.unsigned_tail:
            report.notes.append(
                f"entries {report.signed_size + 1}..{size} are not under a signed checkpoint yet"
            )
    report.elapsed_s = time.perf_counter() - started
    first = report.first
    if first is None:
        log.info(
            "audit_verified", size=size, checkpoints=report.checkpoints, seconds=report.elapsed_s
        )
    else:
        log.warning("audit_verify_failed", problem=first.describe(), problems=len(report.problems))
    return report


def _check_checkpoints(
    checkpoints: list[Checkpoint], verifier: CheckpointVerifier, report: VerifyReport
) -> dict[int, list[Checkpoint]]:
    """Signatures and order; returns the valid checkpoints by size."""
    by_size: dict[int, list[Checkpoint]] = {}
    last: Checkpoint | None = None
    for cp in checkpoints:
        message = verifier.problem(cp)
        if message is not None:
            report.problems.append(
                Problem("bad_signature", message, _position(cp.size), None, cp.id)
            )
            continue
        if last is not None and (cp.size < last.size or cp.at < last.at):
            report.problems.append(
                Problem(
                    "reordered",
                    f"size {cp.size} at {cp.at} comes after checkpoint {last.id} "
                    f"(size {last.size} at {last.at})",
                    cp.size,
                    None,
                    cp.id,
                )
            )
        if cp.size == 0 and cp.head_hash != GENESIS_HASH:
            report.problems.append(
                Problem("checkpoint_mismatch", "size 0 but not the genesis head", 0, None, cp.id)
            )
        by_size.setdefault(cp.size, []).append(cp)
        last = cp
    return by_size


def _walk(
    rows: Iterable[EntryRow],
    by_size: dict[int, list[Checkpoint]],
    wanted: int,
    report: VerifyReport,
) -> tuple[int, str, str | None]:
    """Walk the entries; return (entries verified, head, head at size ``wanted`` if reached).
    Stops at the first broken entry."""
    it = iter(rows)
    expected, prev = 1, GENESIS_HASH
    witnessed = GENESIS_HASH if wanted == 0 else None
    problem: Problem | None = None
    for row in it:
        seq, body, prev_hash, stored, alg = row[0], row[1], row[2], row[3], row[4]
        if seq != expected:
            problem = _position_problem(seq, expected, it)
            break
        if body.__class__ is not bytes:
            if not isinstance(body, str):
                problem = Problem("malformed", f"body {body!r} is not text", seq, seq)
                break
            body = body.encode("utf-8", "surrogateescape")
        if prev_hash != prev:
            problem = Problem(
                "broken_link",
                f"prev_hash {_short(prev_hash)} is not entry {seq - 1}'s hash",
                seq,
                seq,
            )
            break
        prefix = _PREFIX.get(alg)
        if prefix is None:
            problem = Problem("unknown_algorithm", f"algorithm {alg!r} (expected sha256)", seq, seq)
            break
        digest = ALGORITHMS[alg](
            b"".join(
                (prefix, body, b',"prev_hash":"', prev_hash.encode(), b'","seq":', b"%d}" % seq)
            )
        ).hexdigest()
        if digest != stored:
            problem = Problem(
                "hash_mismatch",
                f"stored hash {_short(stored)} is not the hash of its bytes",
                seq,
                seq,
            )
            break
        try:
            text = body.decode()
            data, end = _scan(text, 0)
            columns_ok = (
                end == len(text)
                and _plain_index(data) == tuple(row[5:_CLAUSES])
                and (_ENCODER.encode(data["clause_ids"]) if data["clause_ids"] else "[]")
                == row[_CLAUSES]
            )
        except (StopIteration, ValueError, KeyError, TypeError, IndexError):
            columns_ok = False
        if not columns_ok:
            problem = _column_problem(seq, body, row)
            if problem is not None:
                break
        if seq in by_size:
            problem = _checkpoint_problem(seq, digest, by_size[seq])
            if problem is not None:
                break
        if seq == wanted:
            witnessed = digest
        prev = digest
        expected += 1
    if problem is not None:
        report.problems.append(problem)
        report.complete = False
    return expected - 1, prev, witnessed


def _position_problem(seq: object, expected: int, rest: Iterator[EntryRow]) -> Problem:
    """Row ``seq`` stands where entry ``expected`` belongs; the problem is named by ``expected``."""
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        return Problem(
            "malformed",
            f"seq {seq!r} is not a position (entry {expected} belongs here)",
            expected,
            expected,
        )
    if seq < expected:
        kind = "duplicate" if seq == expected - 1 else "reordered"
        return Problem(
            kind, f"found entry {seq} again where entry {expected} belongs", expected, expected
        )
    following = next(rest, None)
    if following is not None and following[0] == expected:
        return Problem(
            "reordered", f"entry {seq} is stored before entry {expected}", expected, expected
        )
    return Problem("gap", f"entry {expected} is missing (next stored is {seq})", expected, expected)


def _column_problem(seq: int, body: bytes, row: EntryRow) -> Problem | None:
    """The slow path, when the fast check in ``_walk`` failed: says exactly what is wrong."""
    try:
        expected = index_values(json.loads(body))
    except (ValueError, KeyError, TypeError) as exc:
        return Problem("malformed", f"body is not an audit entry ({exc})", seq, seq)
    stored = tuple(row[5 : 5 + _N_INDEX])
    if expected == stored:
        return None
    for name, want, got in zip(INDEX_COLUMNS, expected, stored, strict=False):
        if want != got:
            return Problem(
                "column_mismatch", f"column {name} {got!r} but body says {want!r}", seq, seq
            )
    return Problem("column_mismatch", "searchable columns are missing", seq, seq)


def _checkpoint_problem(seq: int, digest: str, cps: list[Checkpoint]) -> Problem | None:
    for cp in cps:
        if cp.head_hash != digest:
            return Problem(
                "checkpoint_mismatch",
                f"signed head {_short(cp.head_hash)} at size {cp.size} is not the chain's "
                f"{_short(digest)}: an entry up to {seq} was changed after signing",
                seq,
                None,
                cp.id,
            )
    return None


def _check_witness(witness: Checkpoint, size: int, head: str | None, report: VerifyReport) -> None:
    if witness.size > size:
        report.problems.append(
            Problem(
                "truncated",
                f"the witness signed {witness.size} entries but {size} are stored: "
                f"entries {size + 1}..{witness.size} are missing",
                size + 1,
                None,
                WITNESS,
            )
        )
    elif head != witness.head_hash:
        report.problems.append(
            Problem(
                "inconsistent_with_witness",
                f"the chain's head at size {witness.size} is {_short(head or '')}, the witness "
                f"signed {_short(witness.head_hash)}: the trail was rewritten or forked",
                witness.size,
                None,
                WITNESS,
            )
        )


def _position(size: object) -> int:
    return size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else 0


def _short(value: object) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text[:16] + "..." if len(text) > 16 else text
