"""The router's memory of routed event ids (for duplicate detection), in the hub database.

Each id is stored with the SHA-256 of its bytes and the position it was first read from: the
same id at the same position is a replay after an abort (route it again), at another position
with the same bytes a duplicate (drop it), with other bytes a conflict (DLQ, never silent).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    insert,
    select,
)
from sqlalchemy.exc import SQLAlchemyError

from hub.adapters.policy_store import HotStatement
from hub.domain.errors import InfraError

metadata = MetaData()
router_events = Table(
    "router_events",
    metadata,
    Column("event_id", String(64), primary_key=True),
    Column("content_hash", String(64), nullable=False),
    Column("topic", String(255), nullable=False),
    Column("kafka_partition", Integer, nullable=False),
    Column("kafka_offset", BigInteger, nullable=False),
)
_GET = HotStatement(select(
    router_events.c.content_hash, router_events.c.topic,
    router_events.c.kafka_partition, router_events.c.kafka_offset,
).where(router_events.c.event_id == bindparam("event_id")), ["event_id"])  # fmt: skip
_PUT = HotStatement(insert(router_events), [c.name for c in router_events.columns])


def create_router_tables(engine: Engine) -> None:
    metadata.create_all(engine)


class SqlSeenEvents:
    """``SeenEvents`` over SQL; reads and writes go through the connection of ``transaction()``."""

    def __init__(self, engine: Engine, connection: Callable[[], Connection] | None = None) -> None:
        """``connection``, when given, supplies the connection of a transaction owned by someone
        else (the policy state's), so both commit together; ``transaction()`` is then unused."""
        self.engine = engine
        self._shared = connection
        self._conn: Connection | None = None
        # the id get() last found absent, on which connection: put() then needs no second look
        self._absent: tuple[Connection, str] | None = None

    @contextmanager
    def transaction(self) -> Iterator[None]:
        try:
            with self.engine.begin() as conn:
                self._conn = conn
                yield
        except SQLAlchemyError as exc:
            raise InfraError(f"router store: {exc}") from exc
        finally:
            self._conn = None

    def get(self, event_id: str) -> tuple[str, str, int, int] | None:
        conn = self._connection()
        rows = _GET(conn, {"event_id": event_id})
        row = rows[0] if rows else None
        self._absent = (conn, event_id) if row is None else None
        return None if row is None else (row[0], row[1], int(row[2]), int(row[3]))

    def put(
        self, event_id: str, content_hash: str, topic: str, partition: int, offset: int
    ) -> None:
        conn = self._connection()
        if self._absent != (conn, event_id) and self.get(event_id) is not None:
            return
        self._absent = None
        _PUT(conn, {
            "event_id": event_id, "content_hash": content_hash, "topic": topic,
            "kafka_partition": partition, "kafka_offset": offset,
        })  # fmt: skip

    def _connection(self) -> Connection:
        if self._shared is not None:
            return self._shared()
        if self._conn is None:
            raise InfraError("router store used outside a transaction")
        return self._conn
