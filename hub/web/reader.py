"""Reading one audience's view database for the portal: search, a mentor's mentees, a subject.

Read-only: the portal never writes a view (``hub view run`` does). The tables are those of
:mod:`hub.adapters.view_store`; JSON columns hold canonical text, parsed here.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, func, or_, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from hub.adapters.view_store import (
    view_meta,
    view_status,
    view_subjects,
    view_timeline,
    view_withheld,
)
from hub.domain.errors import InfraError

SubjectKey = tuple[str, str]
NAME_EVENT = "person.registered"
NAME_FIELDS = ("given_name", "preferred_name", "family_name")
MENTOR_EVENT = "mentor.assigned"
MIN_QUERY = 2
MAX_RESULTS = 50


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


@dataclass(frozen=True)
class SubjectSummary:
    scheme: str
    local_id: str
    name: str | None
    last_seen: dt.datetime | None
    last_event_type: str
    events: int

    @property
    def key(self) -> SubjectKey:
        return (self.scheme, self.local_id)


@dataclass(frozen=True)
class TimelineEvent:
    event_id: str
    event_type: str
    occurred_at: dt.datetime
    source_agency: str
    source_system: str
    fields: Mapping[str, Any]  # the delivered fields that are not null
    withheld: Mapping[str, str]  # field -> the clause that withheld it
    transformed: list[Mapping[str, str]]  # {field, rule, clause_id}
    agreement_id: str
    agreement_version: str
    clause_id: str
    purpose: str
    legal_basis: str
    consent_based: bool
    retention_until: dt.date | None
    correction_reason: str | None


@dataclass
class SubjectRecord:
    summary: SubjectSummary
    identifiers: list[Mapping[str, str]]
    timeline: list[TimelineEvent]
    status: dict[str, Any] | None
    clause_ids: list[str] = field(default_factory=list)
    purposes: list[str] = field(default_factory=list)


def _name_of(payload: Mapping[str, Any]) -> str | None:
    given = payload.get("preferred_name") or payload.get("given_name")
    parts = [p for p in (given, payload.get("family_name")) if isinstance(p, str) and p]
    return " ".join(parts) or None


class ViewReader:
    """One audience's view, read through its own engine."""

    def __init__(self, engine: Engine, audience: str) -> None:
        self.engine = engine
        self.audience = audience
        self._checked = False

    def _connect(self) -> Any:
        try:
            conn = self.engine.connect()
            if not self._checked:
                stored = conn.execute(
                    select(view_meta.c.value).where(view_meta.c.key == "audience")
                ).scalar_one_or_none()
                if stored != self.audience:
                    conn.close()
                    raise InfraError(
                        f"the view database for {self.audience!r} holds the view of {stored!r}"
                    )
                self._checked = True
            return conn
        except SQLAlchemyError as exc:
            raise InfraError(
                f"view database of {self.audience!r} cannot be read ({exc.__class__.__name__}); "
                f"is `hub view run --audience {self.audience}` running?"
            ) from exc

    def _run(self, work: Any) -> Any:
        conn = self._connect()
        try:
            with conn:
                return work(conn)
        except SQLAlchemyError as exc:
            raise InfraError(
                f"view database of {self.audience!r}: {exc.__class__.__name__}"
            ) from exc

    # -- lists -----------------------------------------------------------------------------------
    def search(self, query: str, within: set[SubjectKey] | None = None) -> list[SubjectSummary]:
        """Subjects whose local id or another identifier starts with ``query``, or whose name
        fields (as delivered to this audience) contain it; case-insensitive."""
        text = query.strip().casefold()
        if len(text) < MIN_QUERY:
            return []

        def work(conn: Any) -> list[SubjectSummary]:
            keys: set[SubjectKey] = set()
            s = view_subjects
            rows = conn.execute(
                select(s.c.subject_scheme, s.c.subject_id, s.c.identifiers).where(
                    or_(
                        func.lower(s.c.subject_id).startswith(text, autoescape=True),
                        func.lower(s.c.identifiers).contains(text, autoescape=True),
                    )
                )
            )
            for row in rows:
                values = [row.subject_id] + [i["value"] for i in json.loads(row.identifiers)]
                if any(str(v).casefold().startswith(text) for v in values):
                    keys.add((row.subject_scheme, row.subject_id))
            t = view_timeline
            named = conn.execute(
                select(t.c.subject_scheme, t.c.subject_id, t.c.payload).where(
                    t.c.event_type == NAME_EVENT,
                    func.lower(t.c.payload).contains(text, autoescape=True),
                )
            )
            for row in named:
                payload = json.loads(row.payload)
                if any(text in str(payload.get(f) or "").casefold() for f in NAME_FIELDS):
                    keys.add((row.subject_scheme, row.subject_id))
            if within is not None:
                keys &= within
            return self._summaries(conn, sorted(keys)[:MAX_RESULTS])

        result: list[SubjectSummary] = self._run(work)
        return result

    def subjects(self, keys: Iterable[SubjectKey]) -> list[SubjectSummary]:
        wanted = sorted(set(keys))[:MAX_RESULTS]
        result: list[SubjectSummary] = self._run(lambda conn: self._summaries(conn, wanted))
        return result

    def mentees(self, mentor_id: str) -> set[SubjectKey]:
        """The subjects whose latest ``mentor.assigned`` names ``mentor_id``."""

        def work(conn: Any) -> set[SubjectKey]:
            t = view_timeline
            latest: dict[SubjectKey, str | None] = {}
            rows = conn.execute(
                select(t.c.subject_scheme, t.c.subject_id, t.c.payload)
                .where(t.c.event_type == MENTOR_EVENT)
                .order_by(t.c.occurred_at, t.c.event_id)
            )
            for row in rows:
                latest[(row.subject_scheme, row.subject_id)] = json.loads(row.payload).get(
                    "mentor_id"
                )
            return {key for key, mentor in latest.items() if mentor == mentor_id}

        result: set[SubjectKey] = self._run(work)
        return result

    def _summaries(self, conn: Any, keys: list[SubjectKey]) -> list[SubjectSummary]:
        if not keys:
            return []
        s, t = view_subjects, view_timeline
        local_ids = sorted({k[1] for k in keys})
        wanted = set(keys)
        names: dict[SubjectKey, str | None] = {}
        for row in conn.execute(
            select(t.c.subject_scheme, t.c.subject_id, t.c.payload)
            .where(t.c.event_type == NAME_EVENT, t.c.subject_id.in_(local_ids))
            .order_by(t.c.occurred_at, t.c.event_id)
        ):
            name = _name_of(json.loads(row.payload))
            if name:
                names[(row.subject_scheme, row.subject_id)] = name
        out = []
        for row in conn.execute(select(s).where(s.c.subject_id.in_(local_ids))):
            key = (row.subject_scheme, row.subject_id)
            if key in wanted:
                out.append(
                    SubjectSummary(
                        scheme=key[0], local_id=key[1], name=names.get(key),
                        last_seen=_utc(row.last_seen), last_event_type=row.last_event_type,
                        events=row.events,
                    )
                )  # fmt: skip
        return sorted(out, key=lambda x: (x.name or "", x.scheme, x.local_id))

    # -- one subject -----------------------------------------------------------------------------
    def subject(self, key: SubjectKey) -> SubjectRecord | None:
        def work(conn: Any) -> SubjectRecord | None:
            summaries = self._summaries(conn, [key])
            if not summaries:
                return None
            s, t, w, st = view_subjects, view_timeline, view_withheld, view_status
            where_subject = (s.c.subject_scheme == key[0], s.c.subject_id == key[1])
            identifiers = json.loads(
                conn.execute(select(s.c.identifiers).where(*where_subject)).scalar_one()
            )
            rows = conn.execute(
                select(t)
                .where(t.c.subject_scheme == key[0], t.c.subject_id == key[1])
                .order_by(t.c.occurred_at, t.c.event_id)
            ).all()
            withheld: dict[str, dict[str, str]] = {}
            ids = [r.event_id for r in rows]
            for chunk in (ids[i : i + 500] for i in range(0, len(ids), 500)):
                for row in conn.execute(select(w).where(w.c.event_id.in_(chunk))):
                    withheld.setdefault(row.event_id, {})[row.field] = row.clause_id
            detail = conn.execute(
                select(st.c.detail).where(st.c.subject_scheme == key[0], st.c.subject_id == key[1])
            ).scalar_one_or_none()
            timeline = [_event(r, withheld.get(r.event_id, {})) for r in rows]
            return SubjectRecord(
                summary=summaries[0],
                identifiers=identifiers,
                timeline=timeline,
                status=json.loads(detail) if detail else None,
                clause_ids=sorted({e.clause_id for e in timeline}),
                purposes=sorted({e.purpose for e in timeline}),
            )

        result: SubjectRecord | None = self._run(work)
        return result


def _event(row: Any, withheld: Mapping[str, str]) -> TimelineEvent:
    return TimelineEvent(
        event_id=row.event_id,
        event_type=row.event_type,
        occurred_at=_utc(row.occurred_at) or row.occurred_at,
        source_agency=row.source_agency,
        source_system=row.source_system,
        fields=json.loads(row.payload),
        withheld=dict(sorted(withheld.items())),
        transformed=json.loads(row.transformed),
        agreement_id=row.agreement_id,
        agreement_version=row.agreement_version,
        clause_id=row.clause_id,
        purpose=row.purpose,
        legal_basis=row.legal_basis,
        consent_based=bool(row.consent_based),
        retention_until=row.retention_until,
        correction_reason=row.correction_reason,
    )


class Views:
    """A reader per audience, made on first use; an absent SQLite file is an error, not a new
    empty view."""

    def __init__(self, url_for: Any) -> None:
        self._url_for = url_for
        self._readers: dict[str, ViewReader] = {}
        self._lock = threading.Lock()

    def reader(self, audience: str) -> ViewReader:
        with self._lock:
            reader = self._readers.get(audience)
            if reader is None:
                reader = ViewReader(_read_engine(self._url_for(audience), audience), audience)
                self._readers[audience] = reader
            return reader

    def dispose(self) -> None:
        with self._lock:
            for reader in self._readers.values():
                reader.engine.dispose()
            self._readers.clear()


def _read_engine(url: str, audience: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database
        if not path or path == ":memory:" or not Path(path).exists():
            raise InfraError(
                f"the view of {audience!r} is not there ({path}); "
                f"run `hub view run --audience {audience}`"
            )
        return create_engine(parsed, connect_args={"timeout": 30})
    return create_engine(parsed, pool_pre_ping=True)
