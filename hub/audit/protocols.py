"""What the audit logic needs from storage. ``hub.adapters.audit_store.SqlAuditStore`` implements
it; ``hub.ports`` may re-export these (audit sits below ports, so it cannot import them)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from hub.audit.checkpoint import Checkpoint
from hub.audit.entry import INDEX_COLUMNS, AuditEntry

# A stored entry exactly as read: (seq, body, prev_hash, hash, alg, *INDEX_COLUMNS values).
# ``body`` is bytes or text (the verifier hashes its UTF-8 bytes); the rest is text or None.
ENTRY_ROW_COLUMNS = ("seq", "body", "prev_hash", "hash", "alg", *INDEX_COLUMNS)
EntryRow = Sequence[Any]


class OffsetMark(NamedTuple):
    """The next Kafka offset to read, stored in the same transaction as the entries before it."""

    topic: str
    partition: int
    next_offset: int


@dataclass(frozen=True)
class StoredEntry:
    seq: int
    hash: str
    entry: AuditEntry


class TrailSource(Protocol):
    """A stored trail as the verifier reads it: raw rows, nothing interpreted."""

    def entry_rows(self) -> Iterator[EntryRow]:
        """Every entry row in ascending ``seq`` order."""
        ...

    def checkpoints(self) -> list[Checkpoint]:
        """Every checkpoint in ascending ``id`` order."""
        ...


class AuditStore(TrailSource, Protocol):
    """The append-only trail (single writer)."""

    def append(
        self, entries: Sequence[AuditEntry], offset: OffsetMark | None = None
    ) -> list[tuple[int, str]]:
        """Chain and store ``entries`` (skipping known entry ids) and ``offset``, in one
        transaction; return (seq, hash) of each entry appended."""
        ...

    def head(self) -> tuple[int, str]:
        """(size, hash of the last entry); (0, genesis hash) when empty."""
        ...

    def add_checkpoint(self, cp: Checkpoint) -> Checkpoint: ...

    def latest_checkpoint(self) -> Checkpoint | None: ...

    def next_offset(self, topic: str, partition: int) -> int | None: ...
