"""The schema registry's tables in the hub database (SQLite or PostgreSQL, SQLAlchemy Core).

``registry_schemas`` holds each distinct schema once under its global id, keyed by fingerprint;
``registry_subject_versions`` numbers them per subject, with a soft-delete flag;
``registry_config`` holds compatibility levels, ``subject`` NULL for the global one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TypeVar

import structlog
from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Engine,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    cast,
    create_engine,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.elements import ColumnElement

from hub.domain.errors import InfraError
from hub.registry.service import StoredSchema, SubjectVersion

log = structlog.get_logger(__name__)

T = TypeVar("T")

SUBJECT_LENGTH = 512
_WRITE_ATTEMPTS = 5

registry_metadata = MetaData()

schemas_table = Table(
    "registry_schemas",
    registry_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("fingerprint", String(64), nullable=False, unique=True),
    Column("schema_type", String(16), nullable=False),
    Column("schema", Text, nullable=False),
)

subject_versions_table = Table(
    "registry_subject_versions",
    registry_metadata,
    Column("subject", String(SUBJECT_LENGTH), primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("schema_id", Integer, ForeignKey("registry_schemas.id"), nullable=False, index=True),
    Column("deleted", Boolean, nullable=False, default=False),
)

config_table = Table(
    "registry_config",
    registry_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subject", String(SUBJECT_LENGTH), nullable=True, unique=True),
    Column("compatibility", String(32), nullable=False),
)


def create_registry_tables(engine: Engine) -> None:
    """Create the registry's tables if they are missing (Alembic will take this over)."""
    try:
        registry_metadata.create_all(engine)
    except SQLAlchemyError as exc:
        raise InfraError(
            f"registry database {engine.url!r}: could not create tables: {_one_line(exc)}"
        ) from exc


def registry_engine(database_url: str) -> Engine:
    """An engine for ``database_url``; an in-memory SQLite database is shared by all threads."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        return create_engine(url, connect_args={"check_same_thread": False}, poolclass=StaticPool)
    return create_engine(url, pool_pre_ping=True)


def open_registry_store(database_url: str) -> SqlRegistryStore:
    """Connect to ``database_url``, create the tables if needed, and return the store."""
    try:
        engine = registry_engine(database_url)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise InfraError(f"registry database {database_url!r}: {exc}") from exc
    create_registry_tables(engine)
    return SqlRegistryStore(engine)


_VERSION_COLUMNS = (
    subject_versions_table.c.subject,
    subject_versions_table.c.version,
    subject_versions_table.c.schema_id,
    schemas_table.c.schema,
    schemas_table.c.schema_type,
    schemas_table.c.fingerprint,
    subject_versions_table.c.deleted,
)


class SqlRegistryStore:
    """``RegistryStore`` over SQLAlchemy Core; every method is one transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # SQLite allows one writer; serialising this process's writes avoids "database is locked".
        self._write_lock = threading.RLock()
        # An in-memory SQLite database is one connection shared by all threads: serialise reads too.
        self._read_lock: AbstractContextManager[object] = (
            self._write_lock if isinstance(engine.pool, StaticPool) else nullcontext()
        )

    def close(self) -> None:
        self.engine.dispose()

    # writes

    def add_version(
        self, subject: str, schema: str, schema_type: str, fingerprint: str
    ) -> SubjectVersion:
        def write(conn: Connection) -> SubjectVersion:
            stored = conn.execute(
                select(schemas_table).where(schemas_table.c.fingerprint == fingerprint)
            ).first()
            if stored is None:
                schema_id: int = conn.execute(
                    insert(schemas_table)
                    .values(fingerprint=fingerprint, schema_type=schema_type, schema=schema)
                    .returning(schemas_table.c.id)
                ).scalar_one()
                stored_text, stored_type = schema, schema_type
            else:
                schema_id, stored_text, stored_type = stored.id, stored.schema, stored.schema_type
            existing = conn.execute(
                select(subject_versions_table.c.version).where(
                    subject_versions_table.c.subject == subject,
                    subject_versions_table.c.schema_id == schema_id,
                    subject_versions_table.c.deleted.is_(False),
                )
            ).scalar()
            if existing is not None:  # a concurrent request registered it a moment ago
                return SubjectVersion(
                    subject, existing, int(schema_id), stored_text, stored_type, fingerprint
                )
            latest = conn.execute(
                select(func.max(subject_versions_table.c.version)).where(
                    subject_versions_table.c.subject == subject
                )
            ).scalar()
            version = (latest or 0) + 1
            conn.execute(
                insert(subject_versions_table).values(
                    subject=subject, version=version, schema_id=schema_id, deleted=False
                )
            )
            return SubjectVersion(
                subject, version, int(schema_id), stored_text, stored_type, fingerprint, False
            )

        return self._write(write)

    def mark_deleted(self, subject: str, versions: Sequence[int]) -> None:
        self._write(
            lambda conn: conn.execute(
                update(subject_versions_table)
                .where(
                    subject_versions_table.c.subject == subject,
                    subject_versions_table.c.version.in_(list(versions)),
                )
                .values(deleted=True)
            )
        )

    def remove_versions(self, subject: str, versions: Sequence[int]) -> None:
        self._write(
            lambda conn: conn.execute(
                delete(subject_versions_table).where(
                    subject_versions_table.c.subject == subject,
                    subject_versions_table.c.version.in_(list(versions)),
                )
            )
        )

    def set_compatibility(self, subject: str | None, level: str) -> None:
        def write(conn: Connection) -> None:
            changed = conn.execute(
                update(config_table).where(_config_subject(subject)).values(compatibility=level)
            ).rowcount
            if not changed:
                conn.execute(insert(config_table).values(subject=subject, compatibility=level))

        self._write(write)

    def delete_compatibility(self, subject: str | None) -> None:
        self._write(lambda conn: conn.execute(delete(config_table).where(_config_subject(subject))))

    # reads

    def schema_by_id(self, schema_id: int) -> StoredSchema | None:
        with self._read() as conn:
            row = conn.execute(select(schemas_table).where(schemas_table.c.id == schema_id)).first()
        if row is None:
            return None
        return StoredSchema(int(row.id), row.schema, row.schema_type, row.fingerprint)

    def versions(self, subject: str) -> list[SubjectVersion]:
        return self._versions(subject_versions_table.c.subject == subject)

    def versions_of_schema(self, schema_id: int) -> list[SubjectVersion]:
        return self._versions(subject_versions_table.c.schema_id == schema_id)

    def subjects(self) -> list[tuple[str, bool]]:
        all_deleted = func.min(cast(subject_versions_table.c.deleted, Integer))
        query = (
            select(subject_versions_table.c.subject, all_deleted.label("all_deleted"))
            .group_by(subject_versions_table.c.subject)
            .order_by(subject_versions_table.c.subject)
        )
        with self._read() as conn:
            return [(row.subject, not row.all_deleted) for row in conn.execute(query)]

    def get_compatibility(self, subject: str | None) -> str | None:
        query = (
            select(config_table.c.compatibility)
            .where(_config_subject(subject))
            .order_by(config_table.c.id.desc())
            .limit(1)
        )
        with self._read() as conn:
            return conn.execute(query).scalar()

    # plumbing

    def _versions(self, where: ColumnElement[bool]) -> list[SubjectVersion]:
        query = (
            select(*_VERSION_COLUMNS)
            .join(schemas_table, schemas_table.c.id == subject_versions_table.c.schema_id)
            .where(where)
            .order_by(subject_versions_table.c.subject, subject_versions_table.c.version)
        )
        with self._read() as conn:
            return [
                SubjectVersion(
                    row.subject,
                    int(row.version),
                    int(row.schema_id),
                    row.schema,
                    row.schema_type,
                    row.fingerprint,
                    bool(row.deleted),
                )
                for row in conn.execute(query)
            ]

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with self._read_lock, self.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise InfraError(f"registry database: read failed: {_one_line(exc)}") from exc

    def _write(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in a transaction, retrying when a concurrent writer took the same key."""
        for attempt in range(1, _WRITE_ATTEMPTS + 1):
            try:
                with self._write_lock, self.engine.begin() as conn:
                    return work(conn)
            except IntegrityError as exc:
                if attempt == _WRITE_ATTEMPTS:
                    raise InfraError(
                        f"registry database: write conflicted {attempt} times: {_one_line(exc)}"
                    ) from exc
                log.warning("registry_write_retried", attempt=attempt)
            except SQLAlchemyError as exc:
                raise InfraError(f"registry database: write failed: {_one_line(exc)}") from exc
        raise AssertionError("unreachable")


def _config_subject(subject: str | None) -> ColumnElement[bool]:
    if subject is None:
        return config_table.c.subject.is_(None)
    return config_table.c.subject == subject


def _one_line(exc: BaseException) -> str:
    return " ".join(str(getattr(exc, "orig", None) or exc).split())
