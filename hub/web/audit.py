"""The portal's entries on the audit trail: every page that shows a subject, sign-ins, refusals.

An ``access`` entry is produced to ``hub.audit`` and acknowledged by the broker *before* the
page is rendered; when it is not, the page is not shown (fail closed). Sign-in and refusal entries
are best effort: their loss is logged, and the request goes on.

The view holds the subject under the audience's own id (or the audience's pseudonym), not the
audit pseudonym the router uses, so ``subject_ref`` is ``sha256("<scheme>:<local id>")`` in hex,
the scheme is in ``details``, and the auditor who knows the audience's id can compute it.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Protocol

import structlog

from hub.audit.entry import MAX_CLAUSES, SHORT_MAX, TEXT_MAX, AuditEntry, make_entry_id
from hub.domain.errors import HubError, InfraError

log = structlog.get_logger(__name__)
COMPONENT = "web"


class EntrySink(Protocol):
    """A producer to ``hub.audit`` (``hub.adapters.kafka.SafeProducer``): ``flush`` raises an
    ``InfraError`` when a record was not acknowledged."""

    def send(self, topic: str, key: bytes | None, value: bytes) -> None: ...

    def flush(self, timeout: float = ...) -> None: ...


class _SharedSink:
    def __init__(self, recorder: AccessRecorder) -> None:
        self._recorder = recorder
        self._pending: list[tuple[str, bytes | None, bytes]] = []

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        self._pending.append((topic, key, value))

    def flush(self, timeout: float = 0.0) -> None:
        pending, self._pending = self._pending, []
        if pending:
            self._recorder._send(pending)


def subject_ref(scheme: str, local_id: str) -> str:
    return hashlib.sha256(f"{scheme}:{local_id}".encode()).hexdigest()


class AccessRecorder:
    """Writes the portal's audit entries, one at a time (a producer's ``flush`` waits for every
    record it holds, so concurrent requests must not share one unguarded)."""

    def __init__(
        self,
        sink_factory: Callable[[], EntrySink],
        topic: str,
        *,
        timeout_s: float = 10.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._sink_factory = sink_factory
        self._sink: EntrySink | None = None
        self.topic = topic
        self.timeout_s = timeout_s
        self.clock = clock
        self._lock = threading.Lock()

    def close(self) -> None:
        """Let the producer go (after a last flush): the app's shutdown calls this."""
        with self._lock:
            sink, self._sink = self._sink, None
        if sink is not None:
            try:
                sink.flush(self.timeout_s)
            except InfraError as exc:
                log.error("audit_entries_not_flushed", error=str(exc))

    def _record(self, entry: AuditEntry) -> None:
        self._send([(self.topic, entry.entry_id.encode(), entry.to_json_bytes())])
        log.info("audit_entry_recorded", entry_id=entry.entry_id, kind=entry.kind)

    def _send(self, records: Sequence[tuple[str, bytes | None, bytes]]) -> None:
        with self._lock:
            if self._sink is None:
                self._sink = self._sink_factory()
            for topic, key, value in records:
                self._sink.send(topic, key, value)
            self._sink.flush(self.timeout_s)

    def query_sink(self) -> EntrySink:
        """A sink for ``hub.audit.query.AuditedQueries`` that shares this recorder's producer:
        what it is sent goes out at its ``flush``, which raises ``InfraError`` when the broker
        did not acknowledge it (the auditor's answer is then not shown)."""
        return _SharedSink(self)

    def access(
        self,
        *,
        actor: str,
        role: str,
        audience: str,
        page: str,
        subject: tuple[str, str] | None = None,
        clause_ids: Sequence[str] = (),
        purposes: Sequence[str] = (),
        details: Mapping[str, str] | None = None,
    ) -> AuditEntry:
        """Record that ``actor`` is shown ``page``; ``InfraError`` if the trail did not take it,
        and then the caller must not show the page."""
        ref = subject_ref(*subject) if subject else None
        extra = {"page": page, **(details or {})}
        if subject:
            extra["subject_scheme"] = subject[0][:SHORT_MAX]
        purpose = "; ".join(purposes)[:TEXT_MAX] or f"{role} view of {audience} in the portal"
        entry = AuditEntry(
            entry_id=make_entry_id("access", audience, actor, ref, uuid.uuid4().hex),
            kind="access",
            at=self.clock(),
            component=COMPONENT,
            outcome="ok",
            actor=actor,
            role=role,
            audience=audience,
            subject_ref=ref,
            clause_ids=tuple(sorted(set(clause_ids)))[:MAX_CLAUSES],
            purpose=purpose,
            details=extra,
        )
        try:
            self._record(entry)
        except InfraError as exc:
            log.error("access_not_recorded", page=page, audience=audience, error=str(exc))
            raise InfraError(
                f"the audit trail ({self.topic}) did not take the record of this access, so the "
                "page is not shown"
            ) from exc
        return entry

    def event(
        self,
        kind: str,
        *,
        outcome: str,
        actor: str | None,
        role: str | None = None,
        audience: str | None = None,
        subject: tuple[str, str] | None = None,
        reason: str | None = None,
        details: Mapping[str, str] | None = None,
    ) -> None:
        """A best-effort entry (``login_ok``, ``login_failed``, ``access_denied``)."""
        try:
            entry = AuditEntry(
                entry_id=make_entry_id(kind, audience, actor, uuid.uuid4().hex),
                kind=kind,
                at=self.clock(),
                component=COMPONENT,
                outcome=outcome,
                actor=actor,
                role=role,
                audience=audience,
                subject_ref=subject_ref(*subject) if subject else None,
                reason=reason,
                details=dict(details or {}),
            )
            self._record(entry)
        except HubError as exc:
            log.error("audit_entry_not_recorded", kind=kind, error=str(exc))
