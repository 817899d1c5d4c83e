"""The retention purge of an audience view (PR-3, GDPR 5(1)(e)).

Each delivery carries its clause's retention in ``disclosure.retention_until`` and the view keeps
it in ``view_timeline.retention_until``. ``purge_expired`` deletes, in one transaction, every
timeline row whose date has passed (``retention_until`` before the clock's date) with its withheld
rows, and recomputes the subject and status rows of the subjects it touched from what remains
(deleting them when nothing remains). Retraction and correction tombstones hold ids only and
stay. ``secure_delete`` is on for SQLite views, and the WAL is checkpointed and truncated after a
purge, so no copy of a purged row stays in the file.

A rebuild replays expired deliveries too: run the purge after a rebuild (``hub view purge``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, select, tuple_
from sqlalchemy.exc import SQLAlchemyError

from hub.adapters.view_store import (
    SqlViewStore,
    _timeline,
    view_status,
    view_subjects,
    view_timeline,
    view_withheld,
)
from hub.domain.errors import InfraError
from hub.views.projection import row_dict, status_row, subject_row

CHUNK = 500


@dataclass(frozen=True)
class Purged:
    rows: int
    subjects: int
    as_of: dt.date


def purge_expired(store: SqlViewStore, as_of: dt.date) -> Purged:
    """Delete the rows whose retention date is before ``as_of`` (see the module docs)."""
    try:
        with store.engine.begin() as conn:
            expired = conn.execute(
                select(view_timeline.c.event_id, view_timeline.c.subject_scheme,
                       view_timeline.c.subject_id)
                .where(view_timeline.c.retention_until < as_of)
            ).all()  # fmt: skip
            ids = [r.event_id for r in expired]
            keys = sorted({(r.subject_scheme, r.subject_id) for r in expired})
            for chunk in _chunks(ids):
                conn.execute(delete(view_withheld).where(view_withheld.c.event_id.in_(chunk)))
                conn.execute(delete(view_timeline).where(view_timeline.c.event_id.in_(chunk)))
            for key in keys:
                match = (view_timeline.c.subject_scheme == key[0]) & (
                    view_timeline.c.subject_id == key[1]
                )
                rows = sorted(
                    (
                        _timeline(r._mapping)
                        for r in conn.execute(select(view_timeline).where(match))
                    ),
                    key=lambda r: r.order,
                )
                for table in (view_subjects, view_status):
                    keyed = tuple_(table.c.subject_scheme, table.c.subject_id) == key
                    conn.execute(delete(table).where(keyed))
                if rows:
                    conn.execute(view_subjects.insert(), [row_dict(subject_row(key, rows))])
                    conn.execute(view_status.insert(), [row_dict(status_row(key, rows))])
        if store.engine.dialect.name == "sqlite":  # outside a transaction: no BEGIN IMMEDIATE
            raw = store.engine.raw_connection()
            try:
                cursor = raw.cursor()
                cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                cursor.close()
            finally:
                raw.close()
    except SQLAlchemyError as exc:
        raise InfraError(f"view database ({store.audience}): purge failed: {exc}") from exc
    return Purged(len(ids), len(keys), as_of)


def _chunks(items: Sequence[str]) -> list[Sequence[str]]:
    return [items[i : i + CHUNK] for i in range(0, len(items), CHUNK)]
