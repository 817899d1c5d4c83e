"""The policy state in SQL (SQLAlchemy 2 Core; SQLite and PostgreSQL).

``SqlPolicyState(engine)`` implements :class:`hub.policy.state.PolicyState` with the logic of
:class:`hub.policy.state.StateLogic`; this module only stores and reads rows.

Transactions. Every update (``apply_event``, ``record_delivery``, ``mark_retracted``) runs in a
database transaction. Outside :meth:`SqlPolicyState.transaction` each call commits on its own.
Inside it, all calls share one connection and commit together when the block exits (and roll
back if it raises), so the router can keep the database consistent with its Kafka transaction::

    with state.transaction():             # one batch
        for event in batch:
            state.apply_event(event)      # idempotent by event_id
            decisions = [evaluate(event, a, state, agreements) for a in audiences]
            ... produce deliveries, record_delivery(...) ...
        producer.send_offsets_to_transaction(...)
    # the database has committed here; now commit the Kafka transaction
    producer.commit_transaction()

Commit the database first, then Kafka. If the process dies in between, the batch is consumed
again: ``apply_event`` returns False for each event already applied, and evaluation reads the
state as of each event's recorded position, so the replayed decisions are the same as the first
ones. (The other order could lose state for deliveries already committed.) Reads inside the
transaction are cached per subject and dropped when the transaction ends; one
``SqlPolicyState`` is meant for one thread.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    and_,
    bindparam,
    delete,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from hub.domain.errors import InfraError
from hub.policy.state import Delivery, Interval, StateLogic
from hub.serde.catalogue import Catalogue

ID = 64
NAME = 200
KEY = 320

policy_metadata = MetaData()

applied = Table(
    "policy_applied_events",
    policy_metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(ID), nullable=False, unique=True),
    Column("event_type", String(NAME), nullable=False),
    sqlite_autoincrement=True,
)

links = Table(
    "policy_identity_links",
    policy_metadata,
    Column("link_key", String(KEY), primary_key=True),
    Column("subject", String(ID), nullable=False, index=True),
    Column("event_id", String(ID), nullable=False),
)

local_ids = Table(
    "policy_local_ids",
    policy_metadata,
    Column("subject", String(ID), primary_key=True),
    Column("agency", String(NAME), primary_key=True),
    Column("scheme", String(NAME), nullable=False),
    Column("local_id", String(KEY), nullable=False),
)

intervals = Table(
    "policy_intervals",
    policy_metadata,
    Column("row_id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),
    Column("subject", String(ID), nullable=False),
    Column("fact_key", String(KEY), nullable=False),
    Column("value", String(NAME), nullable=False),
    Column("extra", String(NAME)),
    Column("start_ms", BigInteger, nullable=False),
    Column("end_ms", BigInteger),
    Column("start_event", String(ID), nullable=False),
    Column("end_event", String(ID)),
    Column("start_seq", Integer, nullable=False),
    Column("end_seq", Integer),
    Column("void_seq", Integer),
    Index("ix_policy_intervals_subject", "kind", "subject"),
    Index("ix_policy_intervals_key", "kind", "fact_key"),
    Index("ix_policy_intervals_start_event", "start_event"),
    Index("ix_policy_intervals_end_event", "end_event"),
    sqlite_autoincrement=True,
)

deliveries = Table(
    "policy_deliveries",
    policy_metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(ID), nullable=False),
    Column("audience", String(NAME), nullable=False),
    Column("subject", String(ID), nullable=False, index=True),
    Column("clause_id", String(NAME), nullable=False),
    Column("consent_based", Boolean, nullable=False),
    Column("consent_scope", String(NAME)),
    Column("retracted", Boolean, nullable=False, default=False),
    UniqueConstraint("event_id", "audience", name="uq_policy_deliveries_event_audience"),
    sqlite_autoincrement=True,
)


# The router's hot statements, built once: building a SQLAlchemy statement costs several times
# executing a cached one (PERFORMANCE: ~70 µs against ~15 µs per look-up on SQLite).
class HotStatement:
    """A statement the router runs once or twice per event, compiled once per dialect and run
    on the DBAPI cursor of the caller's connection (so inside its transaction): SQLAlchemy's
    own work per execute (~15 µs) is several times the driver's (~3 µs). Rows are plain
    tuples; driver errors become ``InfraError``."""

    def __init__(self, statement: Any, keys: Sequence[str]) -> None:
        self.statement = statement
        self.keys = tuple(keys)
        self._compiled: dict[str, tuple[str, tuple[str, ...] | None]] = {}

    def __call__(self, conn: Connection, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        dialect = conn.dialect
        compiled = self._compiled.get(dialect.name)
        if compiled is None:
            done = self.statement.compile(dialect=dialect, column_keys=list(self.keys))
            order = tuple(done.positiontup or ()) if done.positional else None
            compiled = self._compiled[dialect.name] = (done.string, order)
        sql, order = compiled
        cursor = conn.connection.cursor()
        try:
            cursor.execute(sql, tuple(params[k] for k in order) if order is not None else params)
            return list(cursor.fetchall()) if cursor.description else []
        except dialect.loaded_dbapi.Error as exc:
            raise InfraError(f"{sql.split()[0]} failed: {exc}") from exc
        finally:
            cursor.close()


_POSITION = HotStatement(
    select(applied.c.seq).where(applied.c.event_id == bindparam("event_id")), ["event_id"]
)
_APPLY = HotStatement(insert(applied).returning(applied.c.seq), ["event_id", "event_type"])
_LINKS = select(links.c.link_key, links.c.subject).where(
    links.c.link_key.in_(bindparam("keys", expanding=True))
)
_LOCALS = select(local_ids.c.agency, local_ids.c.scheme, local_ids.c.local_id).where(
    local_ids.c.subject == bindparam("subject")
)
_INSERT_LOCAL = insert(local_ids)
_UPDATE_LOCAL = (
    update(local_ids)
    .where(local_ids.c.subject == bindparam("s"), local_ids.c.agency == bindparam("a"))
    .values(scheme=bindparam("scheme"), local_id=bindparam("local_id"))
)
# The kinds StateLogic's handlers write: one query loads them all for a subject (through the
# (kind, subject) index); any other kind is read on its own.
_KINDS = ("consent", "cohort", "referral", "supervision", "mentor")
_SUBJECT_INTERVALS = (
    select(intervals)
    .where(intervals.c.kind.in_(_KINDS), intervals.c.subject == bindparam("subject"))
    .order_by(intervals.c.row_id)
)
_INSERT_INTERVAL = insert(intervals)
_DELIVERED = select(deliveries.c.event_id, deliveries.c.audience).where(
    deliveries.c.event_id.in_(bindparam("ids", expanding=True))
)
_INSERT_DELIVERY = insert(deliveries)
_CHUNK = 500  # ids per IN (...) list


people = Table(
    "policy_people",
    policy_metadata,
    Column("subject", String(ID), primary_key=True),
    Column("ref", String(KEY), primary_key=True),  # agency|scheme|local id of the registration
    Column("born", String(10), nullable=False, index=True),
    Column("name_key", String(KEY), nullable=False),
)


def create_policy_tables(engine: Engine) -> None:
    """Create the policy state tables if they do not exist (tests, ``hub init``)."""
    try:
        policy_metadata.create_all(engine)
    except SQLAlchemyError as exc:
        raise InfraError(f"cannot create the policy tables: {exc}") from exc


def _interval(row: Any) -> Interval:
    return Interval(
        row_id=row.row_id,
        kind=row.kind,
        subject=row.subject,
        key=row.fact_key,
        value=row.value,
        extra=row.extra,
        start=row.start_ms,
        end=row.end_ms,
        start_event=row.start_event,
        end_event=row.end_event,
        start_seq=row.start_seq,
        end_seq=row.end_seq,
        void_seq=row.void_seq,
    )


class SqlPolicyState(StateLogic):
    """Policy state in a SQL database (see the module docs for transactions)."""

    def __init__(self, engine: Engine, catalogue: Catalogue | None = None) -> None:
        super().__init__(catalogue)
        self.engine = engine
        self._conn: Connection | None = None
        self._cache: dict[tuple[str, str], list[Interval]] = {}
        self._positions: dict[str, int] = {}
        self._link_cache: dict[str, str | None] = {}
        # subject_of per envelope (kept alive, so its id is not reused) until a link changes
        self._subjects: dict[int, tuple[Any, str]] = {}
        self._local_cache: dict[str, dict[str, tuple[str, str]]] = {}
        self._pending: dict[tuple[str, str], Delivery] = {}  # written when the block ends

    # -- connections -------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self._conn is not None:
            yield
            return
        try:
            with self.engine.begin() as conn:
                self._conn = conn
                try:
                    yield
                    self._flush_deliveries()
                finally:
                    self._conn = None
                    self._cache.clear()
                    self._positions.clear()
                    self._link_cache.clear()
                    self._subjects.clear()
                    self._local_cache.clear()
                    self._pending.clear()
        except SQLAlchemyError as exc:
            raise InfraError(f"policy state: {exc}") from exc

    def current_connection(self) -> Connection:
        """The connection of the open :meth:`transaction`, for other stores that must commit
        with the policy state (the router's seen-events table)."""
        if self._conn is None:
            raise InfraError("policy state: no transaction is open")
        return self._conn

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        if self._conn is not None:
            yield self._conn
            return
        try:
            with self.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise InfraError(f"policy state: {exc}") from exc

    def _write(self) -> Connection:
        if self._conn is None:
            raise InfraError("policy state: writes happen inside transaction()")
        return self._conn

    def _forget(self, subject: str | None = None) -> None:
        if subject is None:
            self._cache.clear()
        else:
            for key in [k for k in self._cache if k[1] == subject]:
                del self._cache[key]

    # -- applied events ----------------------------------------------------------------------
    def _begin_apply(self, event_id: str, event_type: str) -> int | None:
        conn = self._write()
        if self.position(event_id) is not None:
            return None
        # Two routers applying the same event at once: the second insert violates the unique
        # event_id, its transaction fails (InfraError) and the batch is retried. No savepoint:
        # on SQLite a SAVEPOINT outside BEGIN commits on release.
        ((seq,),) = _APPLY(conn, {"event_id": event_id, "event_type": event_type})
        self._positions[event_id] = seq
        return seq

    def position(self, event_id: str) -> int | None:
        if event_id in self._positions:
            return self._positions[event_id]
        with self._connection() as conn:
            rows = _POSITION(conn, {"event_id": event_id})
        seq = rows[0][0] if rows else None
        if seq is not None and self._conn is not None:
            self._positions[event_id] = seq
        return seq

    # -- identity ----------------------------------------------------------------------------
    def subject_of(self, event: Mapping[str, Any]) -> str:
        """As :meth:`StateLogic.subject_of`; inside a transaction, remembered per envelope until
        a link changes (the engine asks once per audience)."""
        if self._conn is None:
            return super().subject_of(event)
        envelope = event["envelope"]
        known = self._subjects.get(id(envelope))
        if known is not None and known[0] is envelope:
            return known[1]
        subject = super().subject_of(event)
        self._subjects[id(envelope)] = (envelope, subject)
        return subject

    def _links(self, keys: Sequence[str]) -> dict[str, str]:
        cache = self._link_cache if self._conn is not None else {}
        missing = [k for k in keys if k not in cache]
        if missing:
            with self._connection() as conn:
                rows = conn.execute(_LINKS, {"keys": missing})
                found = {row.link_key: row.subject for row in rows}
            if self._conn is None:
                return found
            for key in missing:
                cache[key] = found.get(key)
        return {k: v for k in keys if (v := cache.get(k)) is not None}

    def _set_link(self, key: str, subject: str, event_id: str) -> None:
        conn = self._write()
        done = conn.execute(
            update(links).where(links.c.link_key == key).values(subject=subject, event_id=event_id)
        )
        if done.rowcount == 0:
            conn.execute(insert(links).values(link_key=key, subject=subject, event_id=event_id))
        self._link_cache[key] = subject
        self._subjects.clear()

    def _delete_link(self, key: str) -> None:
        self._write().execute(delete(links).where(links.c.link_key == key))
        self._link_cache[key] = None
        self._subjects.clear()

    def _link_keys_of(self, subject: str) -> list[str]:
        with self._connection() as conn:
            rows = conn.execute(select(links.c.link_key).where(links.c.subject == subject))
            return sorted(rows.scalars())

    def _link_event(self, key: str) -> str | None:
        with self._connection() as conn:
            return conn.execute(
                select(links.c.event_id).where(links.c.link_key == key)
            ).scalar_one_or_none()

    def _rename_subject(self, old: str, new: str) -> None:
        conn = self._write()
        self._flush_deliveries()
        conn.execute(update(links).where(links.c.subject == old).values(subject=new))
        taken: set[str] = set(
            conn.execute(select(local_ids.c.agency).where(local_ids.c.subject == new)).scalars()
        )
        conn.execute(
            delete(local_ids).where(local_ids.c.subject == old, local_ids.c.agency.in_(taken))
        )
        conn.execute(update(local_ids).where(local_ids.c.subject == old).values(subject=new))
        conn.execute(update(intervals).where(intervals.c.subject == old).values(subject=new))
        conn.execute(update(deliveries).where(deliveries.c.subject == old).values(subject=new))
        refs = select(people.c.ref).where(people.c.subject == new)
        taken_refs = set(conn.execute(refs).scalars())
        conn.execute(delete(people).where(people.c.subject == old, people.c.ref.in_(taken_refs)))
        conn.execute(update(people).where(people.c.subject == old).values(subject=new))
        self._forget()
        self._link_cache.clear()
        self._subjects.clear()
        self._local_cache.clear()

    def _set_local(self, subject: str, agency: str, scheme: str, local_id: str) -> None:
        conn = self._write()
        known = self._local_ids_of(subject)
        current = known.get(agency)
        if current == (scheme, local_id):
            return
        if current is None:
            conn.execute(
                _INSERT_LOCAL,
                {"subject": subject, "agency": agency, "scheme": scheme, "local_id": local_id},
            )
        else:
            conn.execute(
                _UPDATE_LOCAL, {"s": subject, "a": agency, "scheme": scheme, "local_id": local_id}
            )
        known[agency] = (scheme, local_id)

    def _get_local(self, subject: str, agency: str) -> tuple[str, str] | None:
        return self._local_ids_of(subject).get(agency)

    def _local_ids_of(self, subject: str) -> dict[str, tuple[str, str]]:
        """agency -> (scheme, local id), read once per subject and transaction."""
        cached = self._local_cache.get(subject)
        if cached is not None:
            return cached
        with self._connection() as conn:
            rows = conn.execute(_LOCALS, {"subject": subject})
            found = {row.agency: (row.scheme, row.local_id) for row in rows}
        if self._conn is not None:
            self._local_cache[subject] = found
        return found

    def _locals_of(self, subject: str) -> dict[str, tuple[str, str]]:
        with self._connection() as conn:
            rows = conn.execute(select(local_ids).where(local_ids.c.subject == subject)).all()
        return {row.agency: (row.scheme, row.local_id) for row in rows}

    def _delete_local(self, subject: str, agency: str) -> None:
        self._write().execute(
            delete(local_ids).where(local_ids.c.subject == subject, local_ids.c.agency == agency)
        )
        self._local_cache.pop(subject, None)

    def _put_person(self, subject: str, born: str, name_key: str, ref: str) -> None:
        conn = self._write()
        done = conn.execute(
            update(people)
            .where(people.c.subject == subject, people.c.ref == ref)
            .values(born=born, name_key=name_key)
        )
        if done.rowcount == 0:
            conn.execute(
                insert(people).values(subject=subject, ref=ref, born=born, name_key=name_key)
            )

    def _people_born(self, born: str) -> list[tuple[str, str, str]]:
        with self._connection() as conn:
            rows = conn.execute(select(people).where(people.c.born == born)).all()
        return sorted((row.subject, row.name_key, row.ref) for row in rows)

    # -- intervals ---------------------------------------------------------------------------
    def _intervals(self, kind: str, subject: str) -> list[Interval]:
        cached = self._cache.get((kind, subject))
        if cached is not None:
            return cached
        if kind in _KINDS:
            return self._load_intervals(subject)[kind]
        with self._connection() as conn:
            rows = [
                _interval(r)
                for r in conn.execute(
                    select(intervals)
                    .where(intervals.c.kind == kind, intervals.c.subject == subject)
                    .order_by(intervals.c.row_id)
                )
            ]
        if self._conn is not None:
            self._cache[(kind, subject)] = rows
        return rows

    def _load_intervals(self, subject: str) -> dict[str, list[Interval]]:
        """Every interval of ``subject`` of the handlers' kinds, in one query."""
        found: dict[str, list[Interval]] = {kind: [] for kind in _KINDS}
        with self._connection() as conn:
            for row in conn.execute(_SUBJECT_INTERVALS, {"subject": subject}):
                found[row.kind].append(_interval(row))
        if self._conn is not None:
            for kind, rows in found.items():
                self._cache[(kind, subject)] = rows
        return found

    def _intervals_by_key(self, kind: str, key: str) -> list[Interval]:
        with self._connection() as conn:
            return [
                _interval(r)
                for r in conn.execute(
                    select(intervals)
                    .where(intervals.c.kind == kind, intervals.c.fact_key == key)
                    .order_by(intervals.c.row_id)
                )
            ]

    def _intervals_of_event(self, event_id: str) -> list[Interval]:
        with self._connection() as conn:
            return [
                _interval(r)
                for r in conn.execute(
                    select(intervals)
                    .where(
                        or_(intervals.c.start_event == event_id, intervals.c.end_event == event_id)
                    )
                    .order_by(intervals.c.row_id)
                )
            ]

    def _insert_interval(
        self,
        kind: str,
        subject: str,
        key: str,
        value: str,
        extra: str | None,
        start: int,
        end: int | None,
        event_id: str,
        seq: int,
    ) -> None:
        self._write().execute(
            _INSERT_INTERVAL,
            {
                "kind": kind,
                "subject": subject,
                "fact_key": key,
                "value": value,
                "extra": extra,
                "start_ms": start,
                "end_ms": end,
                "start_event": event_id,
                "start_seq": seq,
                "end_seq": seq if end is not None else None,
            },
        )
        self._forget(subject)

    def _end_interval(self, row_id: int, end: int, event_id: str, seq: int) -> None:
        self._write().execute(
            update(intervals)
            .where(intervals.c.row_id == row_id)
            .values(end_ms=end, end_event=event_id, end_seq=seq)
        )
        self._forget()

    def _void_interval(self, row_id: int, seq: int) -> None:
        self._write().execute(
            update(intervals).where(intervals.c.row_id == row_id).values(void_seq=seq)
        )
        self._forget()

    # -- deliveries --------------------------------------------------------------------------
    def _put_delivery(self, delivery: Delivery) -> None:
        """Kept until the transaction ends (or a delivery is read) and then written with the
        others in one executemany: one statement per batch instead of two per delivery."""
        self._write()
        self._pending.setdefault((delivery.event_id, delivery.audience), delivery)

    def _flush_deliveries(self) -> None:
        if not self._pending:
            return
        conn = self._write()
        pending = list(self._pending.values())
        self._pending.clear()
        ids = sorted({d.event_id for d in pending})
        stored: set[tuple[str, str]] = set()
        for i in range(0, len(ids), _CHUNK):
            rows = conn.execute(_DELIVERED, {"ids": ids[i : i + _CHUNK]})
            stored.update((row.event_id, row.audience) for row in rows)
        new = [
            {
                "event_id": d.event_id,
                "audience": d.audience,
                "subject": d.subject,
                "clause_id": d.clause_id,
                "consent_based": d.consent_based,
                "consent_scope": d.consent_scope,
                "retracted": False,
            }
            for d in pending
            if (d.event_id, d.audience) not in stored
        ]
        if new:
            conn.execute(_INSERT_DELIVERY, new)

    def _deliveries(self, condition: Any) -> list[Delivery]:
        if self._conn is not None:
            self._flush_deliveries()
        with self._connection() as conn:
            return [
                Delivery(
                    seq=r.seq,
                    event_id=r.event_id,
                    audience=r.audience,
                    subject=r.subject,
                    clause_id=r.clause_id,
                    consent_based=bool(r.consent_based),
                    consent_scope=r.consent_scope,
                    retracted=bool(r.retracted),
                )
                for r in conn.execute(
                    select(deliveries).where(condition).order_by(deliveries.c.seq)
                )
            ]

    def _deliveries_of_subject(self, subject: str) -> list[Delivery]:
        return self._deliveries(deliveries.c.subject == subject)

    def _deliveries_of_event(self, event_id: str) -> list[Delivery]:
        return self._deliveries(deliveries.c.event_id == event_id)

    def _set_retracted(self, event_id: str, audience: str) -> None:
        self._flush_deliveries()
        self._write().execute(
            update(deliveries)
            .where(and_(deliveries.c.event_id == event_id, deliveries.c.audience == audience))
            .values(retracted=True)
        )
