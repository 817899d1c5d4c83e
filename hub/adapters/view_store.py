"""An audience's view database (SQLite or PostgreSQL, SQLAlchemy Core): the tables of
:mod:`hub.views.projection` plus the offsets of ``deliver.<audience>``, written together.

``apply_batch`` runs in ONE database transaction: it takes the view's write lock (SQLite: ``BEGIN
IMMEDIATE``; PostgreSQL: a transaction-level advisory lock), reads the stored next offsets and the
slice of the view the batch touches into a :class:`~hub.views.projection.ViewState`, applies the
batch with the pure projection, and writes the difference together with the new offsets. A crash
anywhere loses the whole transaction, rows and offsets alike, so the records are read again and
applied exactly once. Nothing here commits offsets to Kafka.

Tables (one database per audience; ``view_meta`` says whose): ``view_subjects``, ``view_timeline``,
``view_withheld``, ``view_status``, ``view_retractions``, ``view_corrections`` (tombstones: ids,
reason and time, no content), ``view_rejects`` (position and reason of records that could not be
used), ``view_offsets`` (next offset per partition), ``view_aliases`` (identity merges: this
audience's id of a merged subject -> the surviving one; a timeline row keeps the subject it was
delivered under in ``delivered_*`` and is filed under the resolved one in ``subject_*``). JSON
columns are canonical text, so SQLite and PostgreSQL hold the same bytes and
:meth:`SqlViewStore.dump` compares across backends.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import operator
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ColumnElement,
    Connection,
    Date,
    DateTime,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    any_,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    text,
    tuple_,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import RowMapping, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import StaticPool

from hub.domain.errors import InfraError, InputError
from hub.views.projection import (
    MERGED,
    RETRACTION,
    TABLES,
    AliasRow,
    BatchStats,
    CorrectionRow,
    Decoded,
    Entry,
    Partition,
    RetractionRow,
    StatusRow,
    SubjectKey,
    SubjectRow,
    TimelineRow,
    ViewState,
    apply_batch,
    canonical_dump,
    row_dict,
    utc,
    withheld_rows,
)

log = structlog.get_logger(__name__)

CHUNK = 500  # keys per IN (...) list: well under SQLite's and PostgreSQL's parameter limits
ID = String(64)
NAME = String(255)


def _subject_columns() -> list[Column[Any]]:
    return [
        Column("subject_scheme", String(64), primary_key=True),
        Column("subject_id", NAME, primary_key=True),
    ]


metadata = MetaData()
view_meta = Table(
    "view_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)
view_subjects = Table(
    "view_subjects",
    metadata,
    *_subject_columns(),
    Column("first_seen", DateTime(timezone=True), nullable=False),
    Column("last_seen", DateTime(timezone=True), nullable=False),
    Column("last_event_id", ID, nullable=False),
    Column("last_event_type", NAME, nullable=False),
    Column("events", Integer, nullable=False),
    Column("identifiers", Text, nullable=False),
)
view_timeline = Table(
    "view_timeline",
    metadata,
    Column("event_id", ID, primary_key=True),
    Column("subject_scheme", String(64), nullable=False),
    Column("subject_id", NAME, nullable=False),
    Column("event_type", NAME, nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("source_agency", NAME, nullable=False),
    Column("source_system", NAME, nullable=False),
    Column("sensitivity", NAME, nullable=False),
    Column("payload", Text, nullable=False),
    Column("withheld", Text, nullable=False),
    Column("transformed", Text, nullable=False),
    Column("identifiers", Text, nullable=False),
    Column("agreement_id", NAME, nullable=False),
    Column("agreement_version", NAME, nullable=False),
    Column("clause_id", NAME, nullable=False),
    Column("purpose", Text, nullable=False),
    Column("legal_basis", Text, nullable=False),
    Column("consent_based", Boolean, nullable=False),
    Column("retention_until", Date, nullable=True),
    Column("supersedes_event_id", ID, nullable=True),
    Column("correction_reason", Text, nullable=True),
    Column("delivered_scheme", String(64), nullable=False),
    Column("delivered_id", NAME, nullable=False),
    Index("ix_view_timeline_subject", "subject_scheme", "subject_id", "occurred_at"),
)
view_aliases = Table(
    "view_aliases",
    metadata,
    Column("merge_event_id", ID, primary_key=True),
    Column("from_scheme", String(64), nullable=False),
    Column("from_id", NAME, nullable=False),
    Column("to_scheme", String(64), nullable=False),
    Column("to_id", NAME, nullable=False),
    Column("cause_event_id", ID, nullable=True),
    Column("at", DateTime(timezone=True), nullable=False),
)
view_withheld = Table(
    "view_withheld",
    metadata,
    Column("event_id", ID, primary_key=True),
    Column("field", NAME, primary_key=True),
    Column("clause_id", NAME, nullable=False),
)
view_status = Table(
    "view_status",
    metadata,
    *_subject_columns(),
    Column("custody_status", NAME, nullable=True),
    Column("licence_status", NAME, nullable=True),
    Column("supervising_body", NAME, nullable=True),
    Column("offender_manager", NAME, nullable=True),
    Column("risk_level", NAME, nullable=True),
    Column("cohort", NAME, nullable=True),
    Column("cohort_status", NAME, nullable=True),
    Column("open_referrals", Integer, nullable=False),
    Column("lcp_stage", NAME, nullable=True),
    Column("as_of_event_id", ID, nullable=True),
    Column("as_of", DateTime(timezone=True), nullable=True),
    Column("detail", Text, nullable=False),
)
view_retractions = Table(
    "view_retractions",
    metadata,
    Column("retraction_event_id", ID, primary_key=True),
    Column("retracted_event_id", ID, nullable=False, index=True),
    Column("reason", NAME, nullable=False),
    Column("clause_id", NAME, nullable=True),
    Column("cause_event_id", ID, nullable=True),
    Column("at", DateTime(timezone=True), nullable=False),
)
view_corrections = Table(
    "view_corrections",
    metadata,
    Column("superseded_event_id", ID, primary_key=True),
    Column("corrected_by_event_id", ID, primary_key=True),
    Column("correction_reason", Text, nullable=True),
    Column("at", DateTime(timezone=True), nullable=False),
)
view_rejects = Table(
    "view_rejects",
    metadata,
    Column("topic", NAME, primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("offset", BigInteger, primary_key=True),
    Column("reason", NAME, nullable=False),
    Column("error", Text, nullable=False),
)
view_offsets = Table(
    "view_offsets",
    metadata,
    Column("topic", NAME, primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("next_offset", BigInteger, nullable=False),
)
assert tuple(sorted(metadata.tables)) == TABLES


def view_engine(database_url: str) -> Engine:
    """An engine for a view database. SQLite: WAL, ``synchronous=NORMAL`` (a power cut may lose
    the last commits, and their offsets with them, so they are read again), and ``BEGIN
    IMMEDIATE`` so a batch holds the write lock from its first read."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if url.database in (None, "", ":memory:"):
        engine = create_engine(url, connect_args={"check_same_thread": False}, poolclass=StaticPool)
    else:
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60})
    event.listen(engine, "connect", _sqlite_connect)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (_sqlite_begin)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA cache_size=-65536")
    cursor.execute("PRAGMA secure_delete=ON")  # an erased or purged row leaves no free-page copy
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _one_line(exc: BaseException) -> str:
    return re.sub(r"\s+", " ", str(getattr(exc, "orig", None) or exc)).strip()[:300]


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def _lock_key(audience: str) -> int:
    digest = hashlib.sha256(f"hub-view\x00{audience}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class SqlViewStore:
    """One audience's view database. Build it with :func:`open_view_store`."""

    def __init__(self, engine: Engine, audience: str) -> None:
        self.engine = engine
        self.audience = audience
        self._postgres = engine.dialect.name == "postgresql"
        self._statements: dict[tuple[str, bool], tuple[str, Any]] = {}

    # -- set-up ----------------------------------------------------------------------------------
    def create(self) -> None:
        """Create the tables if missing, and record (or check) whose view this database is."""
        with self._transaction() as conn:
            metadata.create_all(conn)
            stored = conn.execute(
                select(view_meta.c.value).where(view_meta.c.key == "audience")
            ).scalar_one_or_none()
            if stored is None:
                conn.execute(insert(view_meta).values(key="audience", value=self.audience))
            elif stored != self.audience:
                raise InputError(
                    f"{self.engine.url.render_as_string(hide_password=True)}: holds the view of "
                    f"audience {stored!r}, not {self.audience!r} (one database per audience)"
                )

    def reset(self) -> None:
        """Empty every table but ``view_meta`` (for a rebuild from offset 0)."""
        with self._transaction() as conn:
            for table in reversed(metadata.sorted_tables):
                if table is not view_meta:
                    conn.execute(delete(table))
        log.info("view_reset", audience=self.audience)

    def dispose(self) -> None:
        self.engine.dispose()

    # -- reads -----------------------------------------------------------------------------------
    def offsets(self, topic: str) -> dict[int, int]:
        """The stored next offset of each partition of ``topic`` (absent: never read)."""
        with self._transaction() as conn:
            rows = conn.execute(
                select(view_offsets.c.partition, view_offsets.c.next_offset).where(
                    view_offsets.c.topic == topic
                )
            ).all()
        return {int(r.partition): int(r.next_offset) for r in rows}

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        with self._transaction() as conn:
            return {
                name: [dict(r._mapping) for r in conn.execute(select(metadata.tables[name]))]
                for name in TABLES
            }

    def dump(self) -> bytes:
        """Every table as canonical sorted JSON lines (see ``canonical_dump``): equal bytes mean
        equal views, whatever the backend."""
        return canonical_dump(self.tables())

    def count(self, table: str) -> int:
        with self._transaction() as conn:
            return int(
                conn.execute(select(func.count()).select_from(metadata.tables[table])).scalar_one()
            )

    # -- the batch -------------------------------------------------------------------------------
    def apply_batch(self, entries: Sequence[Entry]) -> BatchStats:
        """Apply ``entries`` (in the order read) and store the new offsets, in one transaction."""
        if not entries:
            return BatchStats()
        with self._transaction() as conn:
            partitions = sorted({(e.position[0], e.position[1]) for e in entries})
            self._lock(conn)
            state = ViewState(self.audience)
            state.offsets = self._load_offsets(conn, partitions)
            fresh = [e for e in entries if e.position[2] >= state.offsets.get(e.position[:2], 0)]
            before = self._load_slice(conn, state, fresh)
            stats = apply_batch(state, entries)
            self._write(conn, state, before, partitions)
        return stats

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        try:
            with self.engine.begin() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise InfraError(f"view database ({self.audience}): {_one_line(exc)}") from exc

    def _lock(self, conn: Connection) -> None:
        """One writer at a time per view database: SQLite's ``BEGIN IMMEDIATE`` already is; on
        PostgreSQL a transaction-level advisory lock. Per view rather than per partition, since a
        correction or retraction may touch a subject whose records sit on another partition."""
        if self._postgres:
            conn.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(self.audience)}
            )

    def _load_offsets(
        self, conn: Connection, partitions: Sequence[Partition]
    ) -> dict[Partition, int]:
        rows = conn.execute(
            select(view_offsets).where(
                tuple_(view_offsets.c.topic, view_offsets.c.partition).in_(partitions)
            )
        ).all()
        return {(r.topic, int(r.partition)): int(r.next_offset) for r in rows}

    def _load_slice(self, conn: Connection, state: ViewState, entries: Sequence[Entry]) -> _Before:
        """Load what applying ``entries`` may read: the rows and tombstones of every event id
        they name; the whole timeline of every subject whose stored rows they may remove or
        precede; for any other subject they touch, its stored subject and status rows only
        (the projection folds the new rows onto those)."""
        ids: set[str] = set()
        targets: set[str] = set()
        earliest: dict[SubjectKey, tuple[dt.datetime, str]] = {}
        for entry in entries:
            if not isinstance(entry, Decoded):
                continue
            record = entry.record
            envelope = record.get("envelope") or {}
            event_id = envelope.get("event_id")
            if not isinstance(event_id, str):
                continue
            ids.add(event_id)
            for target in (envelope.get("supersedes_event_id"), record.get("retracted_event_id")):
                if isinstance(target, str):
                    targets.add(target)
            subject, at = envelope.get("subject") or {}, envelope.get("occurred_at")
            if envelope.get("event_type") != RETRACTION and isinstance(at, dt.datetime):
                key = (str(subject.get("local_id_scheme")), str(subject.get("local_id")))
                order = (utc(at), event_id)
                earliest[key] = min(earliest.get(key, order), order)
        named = sorted(ids | targets)
        t = view_timeline
        whole = self._load_aliases(conn, state, entries, targets)
        if state.aliases:  # the new rows are filed under their resolved subjects
            earliest = _resolved(state, earliest)
        for row in self._select_in(conn, t, t.c.event_id, named):
            loaded = _timeline(row)
            state.add_timeline(loaded)
            whole.add(loaded.subject)
        bases: dict[SubjectKey, SubjectRow] = {}
        for stored in map(
            _subject, self._select_subjects(conn, view_subjects, set(earliest) - whole)
        ):
            key = (stored.subject_scheme, stored.subject_id)
            if earliest[key] <= (stored.last_seen, stored.last_event_id):
                whole.add(key)  # a late event: recompute from the whole timeline
            else:
                bases[key] = stored
        for row in self._select_subjects(conn, view_status, set(bases)):
            status = StatusRow(**{**row, "as_of": _utc_or_none(row["as_of"])})
            key = (status.subject_scheme, status.subject_id)
            state.bases[key] = (bases[key], status)
        for row in self._select_subjects(conn, t, whole):
            state.add_timeline(_timeline(row))
        r, c = view_retractions, view_corrections
        for row in self._select_in(conn, r, r.c.retracted_event_id, named):
            state.add_retraction(_retraction(row))
        for row in self._select_in(conn, c, c.c.superseded_event_id, named):
            state.add_correction(_correction(row))
        for row in self._select_in(conn, r, r.c.retraction_event_id, sorted(ids)):
            state.add_retraction(_retraction(row))
        state.dirty.clear()
        state.rekeyed.clear()
        return _Before(
            timeline=set(state.timeline),
            retractions=set(state.retractions),
            corrections=set(state.corrections),
            aliases=set(state.aliases),
            status={key: status for key, (_, status) in state.bases.items()},
        )

    def _load_aliases(
        self, conn: Connection, state: ViewState, entries: Sequence[Entry], targets: set[str]
    ) -> set[SubjectKey]:
        """Load every alias (few: one per merge this audience was told of); return the subjects
        whose whole timeline the batch's merges and retracted merges may re-key."""
        for row in conn.execute(select(view_aliases)):
            values = dict(row._mapping)
            values["at"] = utc(values["at"])
            state.aliases[values["merge_event_id"]] = AliasRow(**values)
        r = view_retractions
        for row in self._select_in(conn, r, r.c.retracted_event_id, sorted(state.aliases)):
            state.add_retraction(_retraction(row))  # a retracted merge is no alias
        keys: set[SubjectKey] = set()
        for entry in entries:
            record = entry.record if isinstance(entry, Decoded) else None
            envelope = (record or {}).get("envelope") or {}
            if envelope.get("event_type") == MERGED:
                subject = envelope.get("subject") or {}
                keys.add((str(subject.get("local_id_scheme")), str(subject.get("local_id"))))
                keys.add(
                    (str(record.get("merged_local_id_scheme")), str(record.get("merged_local_id")))
                )
        for target in targets & set(state.aliases):
            alias = state.aliases[target]
            keys |= {(alias.from_scheme, alias.from_id), (alias.to_scheme, alias.to_id)}
        if not keys:
            return set()
        # every subject the rows may be filed under before or after: whatever is reachable from
        # those keys through any alias (retracted or not), and what they resolve to now
        edges: dict[SubjectKey, set[SubjectKey]] = {}
        for alias in state.aliases.values():
            edges.setdefault((alias.from_scheme, alias.from_id), set()).add(
                (alias.to_scheme, alias.to_id)
            )
        todo = list(keys)
        while todo:
            for nxt in edges.get(todo.pop(), ()):
                if nxt not in keys:
                    keys.add(nxt)
                    todo.append(nxt)
        return keys | {state.resolve(k) for k in keys}

    def _in(self, column: Column[Any], values: Sequence[Any]) -> ColumnElement[bool]:
        """``column IN values``; on PostgreSQL ``= ANY(array)``, one parameter however many."""
        if self._postgres:
            return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
        return column.in_(values)

    def _select_in(
        self, conn: Connection, table: Table, column: Column[Any], values: Sequence[Any]
    ) -> Iterator[RowMapping]:
        for chunk in _chunks(values):
            yield from conn.execute(select(table).where(self._in(column, chunk))).mappings().all()

    def _select_subjects(
        self, conn: Connection, table: Table, keys: Iterable[SubjectKey]
    ) -> Iterator[RowMapping]:
        """The rows of ``table`` whose (subject_scheme, subject_id) is one of ``keys``."""
        wanted = set(keys)
        local_ids = sorted({local_id for _, local_id in wanted})
        for row in self._select_in(conn, table, table.c.subject_id, local_ids):
            if (row["subject_scheme"], row["subject_id"]) in wanted:
                yield row

    def _upsert(self, conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
        """Insert or replace ``rows`` by primary key: one prepared statement, executemany."""
        if rows:
            sql, convert = self._statement(table, upsert=True)
            conn.exec_driver_sql(sql, [convert(row) for row in rows])

    def _insert(self, conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
        """Insert ``rows`` (new keys only): one prepared statement, executemany."""
        if rows:
            sql, convert = self._statement(table, upsert=False)
            conn.exec_driver_sql(sql, [convert(row) for row in rows])

    def _statement(self, table: Table, *, upsert: bool) -> tuple[str, Any]:
        """The driver-level INSERT (or upsert: ``ON CONFLICT ... DO UPDATE``, the same text on
        SQLite and PostgreSQL) of ``table`` and the function turning a row into its parameters:
        the values SQLAlchemy would bind (SQLite: timestamps as its DATETIME text, dates as ISO
        text, booleans as 0/1), without compiling a statement per batch."""
        key = (table.name, upsert)
        cached = self._statements.get(key)
        if cached is not None:
            return cached
        names = [c.name for c in table.columns]
        mark = "%s" if self._postgres else "?"
        sql = (
            f"INSERT INTO {table.name} ({', '.join(_quoted(n) for n in names)}) "
            f"VALUES ({', '.join([mark] * len(names))})"
        )
        if upsert:
            keys = [c.name for c in table.primary_key.columns]
            updates = ", ".join(
                f"{_quoted(n)} = excluded.{_quoted(n)}" for n in names if n not in keys
            )
            sql += f" ON CONFLICT ({', '.join(_quoted(k) for k in keys)}) DO UPDATE SET {updates}"
        values = operator.itemgetter(*names)
        converters = [
            (i, f) for i, c in enumerate(table.columns)
            if not self._postgres and (f := _SQLITE_VALUE.get(type(c.type))) is not None
        ]  # fmt: skip

        def convert(row: Mapping[str, Any]) -> tuple[Any, ...]:
            found = values(row)
            if not converters:
                return found  # type: ignore[no-any-return]
            out = list(found)
            for i, f in converters:
                if out[i] is not None:
                    out[i] = f(out[i])
            return tuple(out)

        self._statements[key] = (sql, convert)
        return sql, convert

    def _write(
        self, conn: Connection, state: ViewState, before: _Before, partitions: Sequence[Partition]
    ) -> None:
        state.refresh()
        moved = state.rekeyed & before.timeline & set(state.timeline)
        gone = sorted((before.timeline - set(state.timeline)) | moved)
        new = [state.timeline[i] for i in sorted((set(state.timeline) - before.timeline) | moved)]
        for chunk in _chunks(gone):
            conn.execute(delete(view_withheld).where(self._in(view_withheld.c.event_id, chunk)))
            conn.execute(delete(view_timeline).where(self._in(view_timeline.c.event_id, chunk)))
        self._insert(conn, view_timeline, [row.row() for row in new])
        self._insert(conn, view_withheld, [w for row in new for w in withheld_rows(row)])
        self._insert(
            conn,
            view_retractions,
            [row_dict(v) for k, v in state.retractions.items() if k not in before.retractions],
        )
        self._insert(
            conn,
            view_corrections,
            [row_dict(v) for k, v in state.corrections.items() if k not in before.corrections],
        )
        self._insert(conn, view_rejects, [row_dict(v) for v in state.rejects.values()])
        self._insert(
            conn,
            view_aliases,
            [row_dict(v) for k, v in state.aliases.items() if k not in before.aliases],
        )
        keys = sorted(state.touched)
        vanished = [k for k in keys if k not in state.subjects]
        for table in (view_subjects, view_status):
            for chunk in _chunks(vanished):
                keyed = tuple_(table.c.subject_scheme, table.c.subject_id).in_(chunk)
                conn.execute(delete(table).where(keyed))
        kept = [k for k in keys if k in state.subjects]
        same = {k for k, status in before.status.items() if state.status.get(k) is status}
        self._upsert(conn, view_subjects, [row_dict(state.subjects[k]) for k in kept])
        self._upsert(conn, view_status, [row_dict(state.status[k]) for k in kept if k not in same])
        self._upsert(
            conn,
            view_offsets,
            [{"topic": t, "partition": p, "next_offset": n} for (t, p), n in state.offsets.items()],
        )

    # -- the baseline of the benchmark -----------------------------------------------------------
    def bulk_upsert_timeline(self, rows: Iterable[TimelineRow]) -> None:
        """Upsert timeline rows with no offsets, no tombstones and no status: the plain bulk
        write the exactly-once path is measured against."""
        items = [row.row() for row in rows]
        with self._transaction() as conn:
            self._upsert(conn, view_timeline, items)


@dataclass
class _Before:
    """The slice as loaded, to tell what a batch added, removed or changed."""

    timeline: set[str]
    retractions: set[str]
    corrections: set[tuple[str, str]]
    aliases: set[str]
    status: dict[SubjectKey, StatusRow]


def _resolved(
    state: ViewState, earliest: dict[SubjectKey, tuple[dt.datetime, str]]
) -> dict[SubjectKey, tuple[dt.datetime, str]]:
    out: dict[SubjectKey, tuple[dt.datetime, str]] = {}
    for key, order in earliest.items():
        resolved = state.resolve(key)
        out[resolved] = min(out.get(resolved, order), order)
    return out


def _quoted(name: str) -> str:
    return f'"{name}"'


def _sqlite_datetime(value: dt.datetime) -> str:
    """SQLAlchemy's SQLite DATETIME text of a UTC datetime (what it binds and parses back)."""
    text = value.isoformat(" ", "microseconds")
    if text.endswith("+00:00"):
        return text[:-6]
    return utc(value).replace(tzinfo=None).isoformat(" ", "microseconds")


_SQLITE_VALUE: dict[type, Any] = {
    DateTime: _sqlite_datetime,
    Date: lambda value: value.isoformat(),
    Boolean: int,
}


def _timeline(row: Mapping[Any, Any]) -> TimelineRow:
    values = dict(row)
    values["occurred_at"] = utc(values["occurred_at"])
    values["recorded_at"] = utc(values["recorded_at"])
    values["consent_based"] = bool(values["consent_based"])
    return TimelineRow(**values)


def _utc_or_none(value: dt.datetime | None) -> dt.datetime | None:
    return utc(value) if value is not None else None


def _subject(row: Mapping[Any, Any]) -> SubjectRow:
    values = dict(row)
    values["first_seen"] = utc(values["first_seen"])
    values["last_seen"] = utc(values["last_seen"])
    return SubjectRow(**values)


def _retraction(row: Mapping[Any, Any]) -> RetractionRow:
    values = dict(row)
    values["at"] = utc(values["at"])
    return RetractionRow(**values)


def _correction(row: Mapping[Any, Any]) -> CorrectionRow:
    values = dict(row)
    values["at"] = utc(values["at"])
    return CorrectionRow(**values)


def open_view_store(database_url: str, audience: str) -> SqlViewStore:
    """Connect to ``database_url``, create the tables if needed, and return the store."""
    try:
        engine = view_engine(database_url)
    except (SQLAlchemyError, ValueError, ImportError, OSError) as exc:
        raise InputError(
            f"view database URL {_safe_url(database_url)!r}: {_one_line(exc)} "
            "(expected e.g. sqlite:///views/mals.db or postgresql+psycopg://user@host/db)"
        ) from exc
    store = SqlViewStore(engine, audience)
    store.create()
    return store


def _safe_url(database_url: str) -> str:
    try:
        return make_url(database_url).render_as_string(hide_password=True)
    except (SQLAlchemyError, ValueError):
        return "<unparseable>"
