"""The hash chain: an entry's hash covers its canonical bytes, its position and the hash before it.

The hashed bytes of entry ``seq`` are the canonical JSON of::

    {"alg": "sha256", "entry": <entry.to_dict()>, "prev_hash": <hex>, "seq": <seq>}

so the algorithm name, the position and the link are all inside what is hashed. Keys sort as
``alg < entry < prev_hash < seq``, which lets ``record_bytes`` build the same bytes by
concatenating the stored body (the entry's canonical JSON) with the other columns: verification
never re-encodes an entry. ``hash = sha256(record bytes)`` in lower-case hex; the genesis
``prev_hash`` is 64 zeros.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from hub.audit.canonical import canonical_json
from hub.audit.entry import AuditEntry

DEFAULT_ALG = "sha256"
ALGORITHMS: dict[str, Callable[[bytes], Any]] = {"sha256": hashlib.sha256}
GENESIS_HASH = "0" * 64

_PREFIX = {name: b'{"alg":"' + name.encode() + b'","entry":' for name in ALGORITHMS}


@dataclass(frozen=True)
class ChainedEntry:
    """An entry placed in the chain: what the store writes (``index``: its searchable values)."""

    seq: int
    entry: AuditEntry
    body: bytes
    prev_hash: str
    hash: str
    alg: str = DEFAULT_ALG
    index: tuple[str | None, ...] = ()


def canonical_record(entry: AuditEntry, seq: int, prev_hash: str, alg: str = DEFAULT_ALG) -> bytes:
    """The hashed bytes of ``entry`` at position ``seq`` (the reference encoding)."""
    return canonical_json(
        {"alg": alg, "entry": entry.to_dict(), "prev_hash": prev_hash, "seq": seq}
    )


def record_bytes(body: bytes, seq: int, prev_hash: str, alg: str = DEFAULT_ALG) -> bytes:
    """``canonical_record`` built from a stored body; ``prev_hash`` must be lower-case hex and
    ``alg`` one of ``ALGORITHMS`` (the verifier checks both before calling)."""
    return b"".join(
        (_PREFIX[alg], body, b',"prev_hash":"', prev_hash.encode(), b'","seq":', b"%d}" % seq)
    )


def entry_hash(record: bytes, alg: str = DEFAULT_ALG) -> str:
    return str(ALGORITHMS[alg](record).hexdigest())


def chain(
    entries: Iterable[AuditEntry],
    head: tuple[int, str] = (0, GENESIS_HASH),
    alg: str = DEFAULT_ALG,
) -> list[ChainedEntry]:
    """Link ``entries`` after ``head`` (size, hash), in order."""
    size, prev = head
    out: list[ChainedEntry] = []
    for entry in entries:
        size += 1
        body = entry.canonical
        digest = entry_hash(record_bytes(body, size, prev, alg), alg)
        out.append(ChainedEntry(size, entry, body, prev, digest, alg, entry.index_values()))
        prev = digest
    return out
