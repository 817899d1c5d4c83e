"""Turn ``hub.audit`` records into the stored chain, signing a checkpoint every N entries.

Written against plain ``(partition, offset, value)`` records so the Kafka loop is a thin wrapper:
poll a batch, ``Materialiser.process(batch)``, call ``tick()`` when idle. Each batch is one
database transaction holding its entries and the next offset, so after a crash the loop resumes
from ``store.next_offset`` without losing or repeating an entry; records below that offset are
skipped, and an entry id already stored is skipped by the store.

A value that is not an audit entry is not dropped and does not stop the loop (``hub.audit`` has
one partition, so raising would block the trail behind a poison pill): it is recorded in the chain
as a ``rejected`` entry from the ``materialiser`` naming topic, partition, offset, the reason
code and the SHA-256 of the bad value. Neither the value nor the decoder's message (which may
quote it) reaches the trail or the log; the offset leads an operator to the record.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog

from hub.audit.checkpoint import Checkpoint, CheckpointSigner
from hub.audit.entry import AuditEntry, make_entry_id
from hub.audit.protocols import AuditStore, OffsetMark
from hub.domain.errors import SerdeError

log = structlog.get_logger(__name__)

AUDIT_TOPIC = "hub.audit"
Record = tuple[int, int, bytes | None]


@dataclass
class MaterialiseResult:
    consumed: int = 0
    appended: int = 0
    skipped: int = 0
    rejected: int = 0
    checkpoints: list[Checkpoint] = field(default_factory=list)


class Materialiser:
    """The single writer of the chain."""

    def __init__(
        self,
        store: AuditStore,
        signer: CheckpointSigner,
        *,
        topic: str = AUDIT_TOPIC,
        checkpoint_every: int = 1000,
        checkpoint_interval_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if checkpoint_every < 1:
            raise ValueError(f"checkpoint_every {checkpoint_every} (expected at least 1)")
        self.store, self.signer, self.topic = store, signer, topic
        self.checkpoint_every = checkpoint_every
        self.checkpoint_interval_s = checkpoint_interval_s
        self._clock, self._now = clock, now
        self._next: dict[int, int] = {}
        latest = store.latest_checkpoint()
        self._signed_size = latest.size if latest is not None else 0
        self._last_stamp = latest.at_datetime if latest is not None else None
        self._signed_at = clock()
        self.result = MaterialiseResult()

    def process(self, records: Sequence[Record]) -> list[tuple[int, str]]:
        """Append one batch of records (one transaction); sign the checkpoints it completes."""
        entries: list[AuditEntry] = []
        last: tuple[int, int] | None = None
        for partition, offset, value in records:
            if last is not None and last[0] != partition:
                raise ValueError("a batch must hold records of one partition")
            self.result.consumed += 1
            if offset < self._start(partition):
                self.result.skipped += 1
                continue
            entries.append(self._decode(partition, offset, value))
            last = (partition, offset)
        if last is None:
            return []
        mark = OffsetMark(self.topic, last[0], last[1] + 1)
        appended = self.store.append(entries, mark)
        self._next[last[0]] = last[1] + 1
        self.result.appended += len(appended)
        self.result.skipped += len(entries) - len(appended)
        for seq, digest in appended:
            if seq % self.checkpoint_every == 0:
                self._sign(seq, digest)
        self.tick()
        return appended

    def tick(self) -> Checkpoint | None:
        """Sign the head if ``checkpoint_interval_s`` passed since the last checkpoint."""
        due = self.checkpoint_interval_s is not None and (
            self._clock() - self._signed_at >= self.checkpoint_interval_s
        )
        return self.checkpoint_head() if due else None

    def checkpoint_head(self) -> Checkpoint | None:
        """Sign the current head unless it is already signed."""
        size, digest = self.store.head()
        if size <= self._signed_size:
            self._signed_at = self._clock()
            return None
        return self._sign(size, digest)

    def _sign(self, size: int, digest: str) -> Checkpoint:
        # Checkpoint times never go backwards, even if the wall clock is stepped back: the
        # verifier treats a later checkpoint with an earlier time as reordered.
        stamp = self._now()
        if self._last_stamp is not None and stamp < self._last_stamp:
            stamp = self._last_stamp
        cp = self.store.add_checkpoint(self.signer.sign(size, digest, stamp))
        self._signed_size, self._signed_at, self._last_stamp = size, self._clock(), stamp
        self.result.checkpoints.append(cp)
        log.info("audit_checkpoint_signed", size=size, head=digest[:16], checkpoint=cp.id)
        return cp

    def _start(self, partition: int) -> int:
        if partition not in self._next:
            self._next[partition] = self.store.next_offset(self.topic, partition) or 0
        return self._next[partition]

    def _decode(self, partition: int, offset: int, value: bytes | None) -> AuditEntry:
        try:
            if value is None:
                raise SerdeError("the record has no value", reason="empty_value")
            return AuditEntry.from_json_bytes(value)
        except SerdeError as exc:
            self.result.rejected += 1
            log.warning(
                "audit_value_rejected",
                topic=self.topic,
                partition=partition,
                offset=offset,
                reason=exc.reason,
            )
            return rejected_value_entry(self.topic, partition, offset, value, exc, self._now())


def rejected_value_entry(
    topic: str, partition: int, offset: int, value: bytes | None, error: SerdeError, at: datetime
) -> AuditEntry:
    """The ``rejected`` entry that stands in the chain for a value that is not an audit entry."""
    return AuditEntry(
        entry_id=make_entry_id("rejected", "audit-value", topic, partition, offset),
        kind="rejected",
        at=at,
        component="materialiser",
        outcome="error",
        reason=f"{error.reason}: the value at this offset is not an audit entry",
        payload_hash=hashlib.sha256(value or b"").hexdigest(),
        details={"topic": topic, "partition": str(partition), "offset": str(offset)},
    )


def materialise(
    store: AuditStore,
    records: Iterable[Record],
    signer: CheckpointSigner,
    *,
    checkpoint_every: int = 1000,
    batch_size: int = 500,
    topic: str = AUDIT_TOPIC,
    final_checkpoint: bool = True,
) -> MaterialiseResult:
    """Append every record in batches of ``batch_size``; sign a checkpoint every
    ``checkpoint_every`` entries and, with ``final_checkpoint``, one at the end."""
    worker = Materialiser(store, signer, topic=topic, checkpoint_every=checkpoint_every)
    batch: list[Record] = []
    for record in records:
        if batch and (len(batch) >= batch_size or batch[-1][0] != record[0]):
            worker.process(batch)
            batch = []
        batch.append(record)
    if batch:
        worker.process(batch)
    if final_checkpoint:
        worker.checkpoint_head()
    return worker.result
