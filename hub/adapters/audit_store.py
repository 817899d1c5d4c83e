"""The audit trail's tables in the hub database (SQLite or PostgreSQL, SQLAlchemy Core).

``audit_entries`` is append-only: ``seq`` is the position in the chain, ``body`` the entry's
canonical JSON (what is hashed), ``prev_hash``/``hash``/``alg`` the chain, and the other columns
searchable copies of body fields (the verifier checks they agree with the body).
``audit_checkpoints`` holds signed heads; ``audit_offsets`` the materialiser's next Kafka offset,
written in the same transaction as the entries it appended.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    cast,
    create_engine,
    event,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Row, make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql import Select
from sqlalchemy.sql.elements import ColumnElement

from hub.audit.chain import GENESIS_HASH, ChainedEntry, chain
from hub.audit.checkpoint import Checkpoint
from hub.audit.entry import (
    ID_MAX,
    INDEX_COLUMNS,
    SHORT_MAX,
    AuditEntry,
    clause_id_pattern,
    format_at,
)
from hub.audit.protocols import ENTRY_ROW_COLUMNS, EntryRow, OffsetMark, StoredEntry
from hub.domain.errors import AuditIntegrityError, InfraError, InputError, SerdeError

log = structlog.get_logger(__name__)

QUERY_LIMIT_MAX = 100_000
_STREAM_CHUNK = 5_000
_IN_CHUNK = 500

audit_metadata = MetaData()

# SQLite only makes an INTEGER PRIMARY KEY the rowid, which keeps the table in seq order.
_Seq = BigInteger().with_variant(Integer(), "sqlite")

entries_table = Table(
    "audit_entries",
    audit_metadata,
    Column("seq", _Seq, primary_key=True, autoincrement=False),
    Column("entry_id", String(ID_MAX), nullable=False, unique=True),
    Column("kind", String(32), nullable=False, index=True),
    Column("at", String(24), nullable=False, index=True),
    Column("component", String(SHORT_MAX), nullable=False),
    Column("actor", String(SHORT_MAX), index=True),
    Column("role", String(SHORT_MAX)),
    Column("outcome", String(16), nullable=False),
    Column("subject_ref", String(SHORT_MAX), index=True),
    Column("event_id", String(SHORT_MAX), index=True),
    Column("event_type", String(SHORT_MAX)),
    Column("source_agency", String(SHORT_MAX), index=True),
    Column("audience", String(SHORT_MAX), index=True),
    Column("agreement_id", String(SHORT_MAX), index=True),
    Column("agreement_version", String(SHORT_MAX)),
    Column("clause_ids", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("alg", String(16), nullable=False),
)

checkpoints_table = Table(
    "audit_checkpoints",
    audit_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("origin", String(SHORT_MAX), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("head_hash", String(64), nullable=False),
    Column("at", String(24), nullable=False),
    Column("key_id", String(16), nullable=False),
    Column("signature", Text, nullable=False),
)

offsets_table = Table(
    "audit_offsets",
    audit_metadata,
    Column("topic", String(249), primary_key=True),
    Column("partition", Integer, primary_key=True, autoincrement=False),
    Column("next_offset", BigInteger, nullable=False),
)

_INSERT_ORDER = ("seq", *INDEX_COLUMNS, "body", "prev_hash", "hash", "alg")  # the table's order
_CHECKPOINT_COLUMNS = ("id", "origin", "size", "head_hash", "at", "key_id", "signature")


def create_audit_tables(engine: Engine) -> None:
    """Create the audit tables if they are missing (Alembic will take this over)."""
    try:
        audit_metadata.create_all(engine)
    except SQLAlchemyError as exc:
        raise InfraError(
            f"audit database {engine.url!r}: could not create tables: {_one_line(exc)}"
        ) from exc


def audit_engine(database_url: str) -> Engine:
    """An engine for ``database_url``; an in-memory SQLite database is shared by all threads.

    A SQLite file runs in WAL mode with ``synchronous=NORMAL``: readers (auditors) do not block
    the writer, and a commit does not wait for a disk flush. A power cut may lose the last
    transactions but never corrupts the file; the lost entries are re-read from Kafka because
    their offset is lost with them.
    """
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if url.database in (None, "", ":memory:"):
        return create_engine(url, connect_args={"check_same_thread": False}, poolclass=StaticPool)
    engine = create_engine(url)
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA cache_size=-65536")
    cursor.execute("PRAGMA wal_autocheckpoint=10000")
    cursor.close()


def open_audit_store(database_url: str) -> SqlAuditStore:
    """Connect to ``database_url``, create the tables if needed, and return the store."""
    try:
        engine = audit_engine(database_url)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise InfraError(f"audit database {database_url!r}: {exc}") from exc
    create_audit_tables(engine)
    return SqlAuditStore(engine)


class SqlAuditStore:
    """``AuditStore`` over SQLAlchemy Core. One writer process; every method is one transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sqlite = engine.dialect.name == "sqlite"
        self._write_lock = threading.Lock()
        compiled = (
            insert(entries_table)
            .values({name: bindparam(name) for name in _INSERT_ORDER})
            .compile(dialect=engine.dialect)
        )
        positional = compiled.positional and tuple(compiled.positiontup or ()) == _INSERT_ORDER
        self._insert_sql = str(compiled) if positional else None

    def close(self) -> None:
        self.engine.dispose()

    # writes

    def append(
        self, entries: Sequence[AuditEntry], offset: OffsetMark | None = None
    ) -> list[tuple[int, str]]:
        """Chain ``entries`` after the head and insert them, with ``offset``, in one transaction.

        An entry whose ``entry_id`` is already stored (or repeated in the batch) is skipped, so a
        replayed batch appends nothing. Returns (seq, hash) of each entry appended.
        """
        with self._write() as conn:
            known = self._known_ids(conn, [entry.entry_id for entry in entries])
            fresh: list[AuditEntry] = []
            for entry in entries:
                if entry.entry_id not in known:
                    known.add(entry.entry_id)
                    fresh.append(entry)
            linked = chain(fresh, _head(conn))
            if linked:
                self._insert(conn, linked)
            if offset is not None:
                _store_offset(conn, offset)
        if len(fresh) < len(entries):
            log.info("audit_duplicates_skipped", count=len(entries) - len(fresh))
        return [(item.seq, item.hash) for item in linked]

    def add_checkpoint(self, cp: Checkpoint) -> Checkpoint:
        values = {name: getattr(cp, name) for name in _CHECKPOINT_COLUMNS[1:]}
        with self._write() as conn:
            key = conn.execute(insert(checkpoints_table).values(**values)).inserted_primary_key
        assert key is not None
        return Checkpoint(**values, id=int(key[0]))

    # reads

    def head(self) -> tuple[int, str]:
        with self._read() as conn:
            return _head(conn)

    def next_offset(self, topic: str, partition: int) -> int | None:
        query = select(offsets_table.c.next_offset).where(
            offsets_table.c.topic == topic, offsets_table.c.partition == partition
        )
        with self._read() as conn:
            value = conn.execute(query).scalar()
        return None if value is None else int(value)

    def entry_rows(self) -> Iterator[EntryRow]:
        """Every entry row, raw, in seq order, streamed (what ``verify`` walks).

        On SQLite the body is read as bytes (what is hashed). If a text column holds bytes that
        are not UTF-8 (SQLite does not check), the rest is re-read as bytes and decoded with
        surrogate escapes, so the verifier sees the corrupted row and names it.
        """
        c = entries_table.c
        columns = [c[name] for name in ENTRY_ROW_COLUMNS]
        if not self._sqlite:
            yield from self._stream(select(*columns).order_by(c.seq))
            return
        last: int | None = None
        try:
            fast = select(columns[0], cast(columns[1], LargeBinary), *columns[2:])
            for row in self._stream_driver(fast.order_by(c.seq)):
                last = row[0]
                yield row
            return
        except InfraError as exc:
            if "decode" not in str(exc):
                raise
            log.warning("audit_row_not_utf8", after_seq=last)
        robust = select(columns[0], *(cast(col, LargeBinary) for col in columns[1:]))
        if last is not None:
            robust = robust.where(c.seq > last)
        for row in self._stream_driver(robust.order_by(c.seq)):
            yield (row[0], row[1], *[_text(value) for value in row[2:]])

    def checkpoints(self) -> list[Checkpoint]:
        """Every checkpoint in id order, as stored."""
        columns: list[Any] = [checkpoints_table.c[name] for name in _CHECKPOINT_COLUMNS]
        if self._sqlite:
            columns = [
                col if name in ("id", "size") else cast(col, LargeBinary)
                for name, col in zip(_CHECKPOINT_COLUMNS, columns, strict=True)
            ]
        query = select(*columns).order_by(checkpoints_table.c.id)
        with self._read() as conn:
            rows = conn.execute(query).all()
        return [
            Checkpoint(
                origin=_text(row[1]),
                size=row[2],
                head_hash=_text(row[3]),
                at=_text(row[4]),
                key_id=_text(row[5]),
                signature=_text(row[6]),
                id=row[0],
            )
            for row in rows
        ]

    def latest_checkpoint(self) -> Checkpoint | None:
        cps = self.checkpoints_since(0)
        return cps[-1] if cps else None

    def checkpoints_since(self, after_id: int) -> list[Checkpoint]:
        query = (
            select(*[checkpoints_table.c[name] for name in _CHECKPOINT_COLUMNS])
            .where(checkpoints_table.c.id > after_id)
            .order_by(checkpoints_table.c.id)
        )
        with self._read() as conn:
            return [Checkpoint(**row._asdict()) for row in conn.execute(query)]

    def iter_entries(self, start: int = 1) -> Iterator[StoredEntry]:
        """Entries from ``start`` in seq order, streamed."""
        query = (
            select(entries_table.c.seq, entries_table.c.hash, entries_table.c.body)
            .where(entries_table.c.seq >= start)
            .order_by(entries_table.c.seq)
        )
        for row in self._stream(query):
            yield _stored(row)

    def query(
        self,
        *,
        subject_ref: str | None = None,
        agency: str | None = None,
        audience: str | None = None,
        agreement_id: str | None = None,
        clause_id: str | None = None,
        kind: str | Collection[str] | None = None,
        outcome: str | Collection[str] | None = None,
        event_id: str | None = None,
        actor: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after_seq: int = 0,
        limit: int = 1000,
    ) -> list[StoredEntry]:
        """Entries matching every given filter, in seq order, at most ``limit`` of them.

        ``agency`` matches entries the agency took part in: as the source, as the audience, or
        through one of its audiences (``mals`` matches ``mals.mentor``). ``since`` is inclusive,
        ``until`` exclusive. Page with ``after_seq`` = the last seq of the previous page.
        """
        if not 1 <= limit <= QUERY_LIMIT_MAX:
            raise InputError(f"audit query limit {limit} (expected 1 to {QUERY_LIMIT_MAX})")
        c = entries_table.c
        where: list[ColumnElement[bool]] = [c.seq > after_seq]
        for column, value in (
            (c.subject_ref, subject_ref),
            (c.audience, audience),
            (c.agreement_id, agreement_id),
            (c.event_id, event_id),
            (c.actor, actor),
        ):
            if value is not None:
                where.append(column == value)
        if agency is not None:
            where.append(
                or_(
                    c.source_agency == agency,
                    c.audience == agency,
                    c.audience.startswith(f"{agency}.", autoescape=True),
                )
            )
        if clause_id is not None:
            where.append(c.clause_ids.contains(clause_id_pattern(clause_id), autoescape=True))
        for column, wanted in ((c.kind, kind), (c.outcome, outcome)):
            if isinstance(wanted, str):
                where.append(column == wanted)
            elif wanted is not None:
                where.append(column.in_(list(wanted)))
        if since is not None:
            where.append(c.at >= format_at(since))
        if until is not None:
            where.append(c.at < format_at(until))
        query = select(c.seq, c.hash, c.body).where(*where).order_by(c.seq).limit(limit)
        with self._read() as conn:
            return [_stored(row) for row in conn.execute(query)]

    # plumbing

    def _insert(self, conn: Connection, linked: list[ChainedEntry]) -> None:
        rows = [
            (item.seq, *item.index, item.body.decode(), item.prev_hash, item.hash, item.alg)
            for item in linked
        ]
        if self._insert_sql is not None:
            # A positional driver (SQLite) takes the tuples as they are: no per-row dicts.
            conn.exec_driver_sql(self._insert_sql, rows)
        else:
            params = [dict(zip(_INSERT_ORDER, row, strict=True)) for row in rows]
            conn.execute(insert(entries_table), params)

    def _known_ids(self, conn: Connection, ids: list[str]) -> set[str]:
        known: set[str] = set()
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start : start + _IN_CHUNK]
            query = select(entries_table.c.entry_id).where(entries_table.c.entry_id.in_(chunk))
            known.update(conn.execute(query).scalars())
        return known

    def _stream_driver(self, query: Select[Any]) -> Iterator[tuple[Any, ...]]:
        """Stream a parameterless query's rows as the driver returns them (plain tuples, no
        SQLAlchemy row objects): the verifier's hot path."""
        sql = str(query.compile(dialect=self.engine.dialect))
        driver_error = self.engine.dialect.loaded_dbapi.Error
        with self._read() as conn:
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                cursor.execute(sql)
                while rows := cursor.fetchmany(_STREAM_CHUNK):
                    yield from rows
            except driver_error as exc:
                raise InfraError(f"audit database: read failed: {_one_line(exc)}") from exc
            finally:
                cursor.close()

    def _stream(self, query: Select[Any]) -> Iterator[Row[Any]]:
        with self._read() as conn:
            yield from conn.execution_options(yield_per=_STREAM_CHUNK).execute(query)

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise InfraError(f"audit database: read failed: {_one_line(exc)}") from exc

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        try:
            with self._write_lock, self.engine.begin() as conn:
                yield conn
        except IntegrityError as exc:
            raise InfraError(
                f"audit database: another writer appended concurrently (the audit trail has "
                f"one writer): {_one_line(exc)}"
            ) from exc
        except SQLAlchemyError as exc:
            raise InfraError(f"audit database: write failed: {_one_line(exc)}") from exc


def _head(conn: Connection) -> tuple[int, str]:
    row = conn.execute(
        select(entries_table.c.seq, entries_table.c.hash)
        .order_by(entries_table.c.seq.desc())
        .limit(1)
    ).first()
    return (0, GENESIS_HASH) if row is None else (int(row[0]), str(row[1]))


def _store_offset(conn: Connection, offset: OffsetMark) -> None:
    key = (offsets_table.c.topic == offset.topic, offsets_table.c.partition == offset.partition)
    changed = conn.execute(
        update(offsets_table).where(*key).values(next_offset=offset.next_offset)
    ).rowcount
    if not changed:
        conn.execute(insert(offsets_table).values(**offset._asdict()))


def _stored(row: Sequence[Any]) -> StoredEntry:
    seq, digest, body = row
    try:
        entry = AuditEntry.from_json_bytes(body.encode() if isinstance(body, str) else body)
    except SerdeError as exc:
        raise AuditIntegrityError(
            f"audit entry {seq}: stored body is not a valid entry ({exc}); run hub audit verify"
        ) from exc
    return StoredEntry(int(seq), str(digest), entry)


def _text(value: Any) -> Any:
    """Stored bytes as text; bytes that are not UTF-8 survive as surrogate escapes."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return value


def _one_line(exc: BaseException) -> str:
    return " ".join(str(getattr(exc, "orig", None) or exc).split())
