"""MALS' client database as it exists (their tables, their column names), and the connector's
own bookkeeping tables beside it.

MALS' tables: ``clients``, ``mentors``, ``referrals``, ``sessions`` (mentoring contacts),
``lcp_attendance``, ``outcomes`` and ``consent``. MALS staff keep writing to them with their own
application; nothing here changes how they work.

The connector's tables, all prefixed ``hub_``:

- ``hub_outbox``: one row per change MALS staff make to a table the hub hears about. SQLite
  triggers (:data:`TRIGGERS`) fill it in the same transaction as the staff's own write, with a
  JSON snapshot of the columns that are published (never the notes); a write that rolls back
  leaves no outbox row, a write that commits always has one. The source connector
  (``connectors.mals.source``) publishes the rows in ``outbox_id`` order and sets ``sent_at``
  and ``event_id`` only after the broker acknowledged them. No table is ever diffed.
- ``hub_sink_offsets``: the next offset of each ``deliver.mals`` partition, written by the sink
  connector in the same transaction as the rows it writes (exactly once into MALS' tables).
- ``hub_inbox``: one row per delivered ``event_id`` the sink has applied (idempotence), with what
  became of it: the referral it created, ``superseded`` by a correction, ``retracted``, or the
  payload of a delivered event MALS' tables have no place for.
- ``hub_id_map``: the hub's pseudonym for a person (how the hub addresses MALS about someone MALS
  did not know) -> the MALS client id the sink created for them.
- ``hub_sink_rejects``: delivered records that could not be decoded or applied, with the reason.

The triggers are SQLite's (MALS' database is a single SQLite file). Another engine would need the
same triggers in its own dialect; the sink works on any engine SQLAlchemy supports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Date,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    create_engine,
    event,
    func,
    select,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool

metadata = MetaData()

# -- MALS' own tables ---------------------------------------------------------------------------

clients = Table(
    "clients",
    metadata,
    Column("client_id", String(16), primary_key=True),  # MALS-0107
    Column("first_name", String(80)),
    Column("surname", String(80)),
    Column("dob", Date),
    Column("phone", String(32)),
    Column("area", String(64)),
    Column("prison_no", String(16)),  # recorded on in-reach visits
    Column("created", DateTime, nullable=False, server_default=func.current_timestamp()),
    Column("created_by", String(40)),
)

mentors = Table(
    "mentors",
    metadata,
    Column("mentor_id", String(16), primary_key=True),  # MEN-012
    Column("first_name", String(80)),
    Column("surname", String(80)),
    Column("phone", String(32)),
    Column("email", String(120)),
    Column("active", Boolean, nullable=False, server_default=text("1")),
    Column("started_on", Date),
)

referrals = Table(
    "referrals",
    metadata,
    Column("referral_id", Integer, primary_key=True, autoincrement=True),
    Column("client_id", String(16), ForeignKey("clients.client_id"), nullable=False),
    Column("referrer_org", String(40)),
    Column("referrer_ref", String(80)),  # the referrer's own reference
    Column("referrer_name", String(120)),
    Column("referrer_role", String(80)),
    Column("referrer_phone", String(32)),
    Column("referrer_email", String(120)),
    Column("received_on", Date),
    Column("programme", String(40)),
    Column("pathways", String(200)),
    Column("reason", Text),
    Column("release_date", Date),
    Column("risk_level", String(16)),
    Column("om_org", String(40)),
    Column("om_name", String(120)),
    Column("om_phone", String(32)),
    Column("om_email", String(120)),
    Column("safety_information", Text),
    Column("status", String(16), nullable=False, server_default=text("'New'")),
    sqlite_autoincrement=True,
)

sessions = Table(
    "sessions",
    metadata,
    Column("session_id", Integer, primary_key=True, autoincrement=True),
    Column("client_id", String(16), ForeignKey("clients.client_id"), nullable=False),
    Column("mentor_id", String(16), ForeignKey("mentors.mentor_id")),
    Column("session_date", Date, nullable=False),
    Column("start_time", String(5)),  # HH:MM, UK local time
    Column("mode", String(24)),
    Column("hours", Numeric(5, 2, asdecimal=False)),
    Column("pathways", String(200)),
    Column("family_present", Boolean),
    Column("notes", Text),
    sqlite_autoincrement=True,
)

lcp_attendance = Table(
    "lcp_attendance",
    metadata,
    Column("attendance_id", Integer, primary_key=True, autoincrement=True),
    Column("client_id", String(16), ForeignKey("clients.client_id"), nullable=False),
    Column("run_ref", String(60), nullable=False),
    Column("session_no", Integer),
    Column("session_date", Date, nullable=False),
    Column("am_pm", String(10)),
    Column("theme", String(60)),
    Column("hours", Numeric(5, 2, asdecimal=False)),
    Column("attended", Boolean, nullable=False, server_default=text("1")),
    Column("absence_reason", String(40)),
    Column("facilitator_notes", Text),
    sqlite_autoincrement=True,
)

outcomes = Table(
    "outcomes",
    metadata,
    Column("outcome_id", Integer, primary_key=True, autoincrement=True),
    Column("client_id", String(16), ForeignKey("clients.client_id"), nullable=False),
    Column("outcome_type", String(24), nullable=False),
    Column("outcome_date", Date, nullable=False),
    Column("organisation", String(120)),  # employer, provider or service
    Column("category", String(40)),  # employment or housing type
    Column("hours_per_week", Integer),
    Column("full_time", Boolean),
    Column("course", String(120)),
    Column("run_ref", String(60)),
    Column("certificate", Boolean),
    Column("family_attended", Boolean),
    Column("sessions_attended", Integer),
    Column("sessions_total", Integer),
    Column("notes", Text),
    sqlite_autoincrement=True,
)

consent = Table(
    "consent",
    metadata,
    Column("consent_id", Integer, primary_key=True, autoincrement=True),
    Column("client_id", String(16), ForeignKey("clients.client_id"), nullable=False),
    Column("scope", String(60), nullable=False),
    Column("given_on", Date),
    Column("captured_by", String(80)),
    Column("method", String(20)),
    Column("withdrawn_on", Date),
    Column("withdrawal_recorded_by", String(80)),
    Column("withdrawal_reason", Text),
    sqlite_autoincrement=True,
)

MALS_TABLES = (
    "clients",
    "mentors",
    "referrals",
    "sessions",
    "lcp_attendance",
    "outcomes",
    "consent",
)

# -- the connector's bookkeeping ----------------------------------------------------------------

hub_outbox = Table(
    "hub_outbox",
    metadata,
    Column("outbox_id", Integer, primary_key=True, autoincrement=True),
    Column("source_table", String(32), nullable=False),
    Column("row_id", Integer, nullable=False),
    Column("change", String(16), nullable=False),  # insert, update, withdraw
    Column("client_id", String(16), nullable=False),
    Column("identifiers", Text, nullable=False),  # JSON: scheme -> value (or null)
    Column("payload", Text, nullable=False),  # JSON snapshot of the published columns
    Column("created_at", DateTime, nullable=False, server_default=func.current_timestamp()),
    Column("sent_at", DateTime),
    Column("event_id", String(36)),
    Column("error", Text),
    Index("hub_outbox_row", "source_table", "row_id"),
    Index(
        "hub_outbox_pending",
        "outbox_id",
        sqlite_where=text("sent_at IS NULL AND error IS NULL"),
        postgresql_where=text("sent_at IS NULL AND error IS NULL"),
    ),
    sqlite_autoincrement=True,  # ids are never reused: they are the events' source keys
)

hub_sink_offsets = Table(
    "hub_sink_offsets",
    metadata,
    Column("topic", String(249), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("next_offset", BigInteger, nullable=False),
)

hub_inbox = Table(
    "hub_inbox",
    metadata,
    Column("event_id", String(36), primary_key=True),
    Column("event_type", String(80)),  # null for a tombstone of an event never received
    Column("source_agency", String(40)),
    Column("state", String(16), nullable=False),
    Column("client_id", String(16)),
    Column("subject_scheme", String(40)),
    Column("subject_id", String(80)),
    Column("referral_id", Integer),
    Column("clause_id", String(40)),
    Column("retention_until", Date),
    Column("payload", Text),
    Column("topic", String(249)),
    Column("partition", Integer),
    Column("offset", BigInteger),
    Column("applied_at", DateTime, nullable=False, server_default=func.current_timestamp()),
)

hub_id_map = Table(
    "hub_id_map",
    metadata,
    Column("pseudonym", String(64), primary_key=True),
    Column("client_id", String(16), nullable=False, unique=True),
    Column("event_id", String(36), nullable=False),  # the referral that created the client
    Column("created_at", DateTime, nullable=False, server_default=func.current_timestamp()),
)

hub_sink_rejects = Table(
    "hub_sink_rejects",
    metadata,
    Column("topic", String(249), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("offset", BigInteger, primary_key=True),
    Column("reason", String(40), nullable=False),
    Column("message", Text, nullable=False),
    Column("at", DateTime, nullable=False, server_default=func.current_timestamp()),
)

# -- the outbox triggers ------------------------------------------------------------------------

# table -> (primary key, the columns a hub event is built from). Everything else (notes,
# facilitator notes, the reason for a withdrawal) never reaches the outbox.
PUBLISHED: dict[str, tuple[str, tuple[str, ...]]] = {
    "sessions": (
        "session_id",
        ("session_date", "start_time", "mode", "hours", "pathways", "mentor_id", "family_present"),
    ),
    "lcp_attendance": (
        "attendance_id",
        (
            "run_ref",
            "session_no",
            "session_date",
            "am_pm",
            "theme",
            "hours",
            "attended",
            "absence_reason",
        ),
    ),
    "outcomes": (
        "outcome_id",
        (
            "outcome_type",
            "outcome_date",
            "organisation",
            "category",
            "hours_per_week",
            "full_time",
            "course",
            "run_ref",
            "certificate",
            "family_attended",
            "sessions_attended",
            "sessions_total",
        ),
    ),
    "consent": ("consent_id", ("scope", "given_on", "captured_by", "method")),
}
WITHDRAWAL = ("scope", "withdrawn_on", "withdrawal_recorded_by")

_IDENTIFIERS = (
    "json_object("
    "'prison_number', (SELECT prison_no FROM clients WHERE client_id = NEW.client_id), "
    "'hub_pseudonym', (SELECT pseudonym FROM hub_id_map WHERE client_id = NEW.client_id))"
)


def _enqueue(table: str, change: str, columns: tuple[str, ...], where: str) -> str:
    pk = PUBLISHED[table][0]
    snapshot = ", ".join(f"'{c}', NEW.{c}" for c in columns)
    return (
        "INSERT INTO hub_outbox (source_table, row_id, change, client_id, identifiers, payload) "
        f"SELECT '{table}', NEW.{pk}, '{change}', NEW.client_id, {_IDENTIFIERS}, "
        f"json_object({snapshot}) WHERE {where};"
    )


def _changed(columns: tuple[str, ...]) -> str:
    return " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in ("client_id", *columns))


def _triggers() -> list[str]:
    ddl = []
    for table, (_, columns) in PUBLISHED.items():
        on_insert = [_enqueue(table, "insert", columns, "1")]
        on_update = [_enqueue(table, "update", columns, _changed(columns))]
        if table == "consent":  # consent.given needs a date; a withdrawal is its own event
            on_insert = [
                _enqueue(table, "insert", columns, "NEW.given_on IS NOT NULL"),
                _enqueue(table, "withdraw", WITHDRAWAL, "NEW.withdrawn_on IS NOT NULL"),
            ]
            on_update = [
                _enqueue(
                    table, "update", columns, f"NEW.given_on IS NOT NULL AND ({_changed(columns)})"
                ),
                _enqueue(
                    table,
                    "withdraw",
                    WITHDRAWAL,
                    "OLD.withdrawn_on IS NULL AND NEW.withdrawn_on IS NOT NULL",
                ),
            ]
        for change, body in (("insert", on_insert), ("update", on_update)):
            ddl.append(
                f"CREATE TRIGGER IF NOT EXISTS hub_outbox_{table}_{change} "
                f"AFTER {change.upper()} ON {table} FOR EACH ROW BEGIN {' '.join(body)} END"
            )
    return ddl


TRIGGERS = _triggers()


# -- engine and set-up --------------------------------------------------------------------------


def mals_engine(database_url: str, *, write_lock: bool = True) -> Engine:
    """An engine for MALS' database. SQLite: WAL (MALS staff keep working while the connectors
    read), a 60 s busy timeout, and with ``write_lock`` ``BEGIN IMMEDIATE``, so a transaction
    holds the write lock from its first read (the sink: allocating a client id and inserting it
    cannot race another writer). The source reads without it, so it never holds up MALS staff."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if url.database in (None, "", ":memory:"):
        engine = create_engine(url, connect_args={"check_same_thread": False}, poolclass=StaticPool)
    else:
        Path(str(url.database)).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60})
    event.listen(engine, "connect", _sqlite_connect)
    event.listen(engine, "begin", _sqlite_begin_immediate if write_lock else _sqlite_begin)
    return engine


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (_sqlite_begin)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin_immediate(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN")


def create_schema(engine: Engine) -> None:
    """Create MALS' tables (standing in for their existing database), the connector's tables and,
    on SQLite, the outbox triggers. Idempotent."""
    metadata.create_all(engine)
    if engine.dialect.name == "sqlite":
        with engine.begin() as conn:
            for ddl in TRIGGERS:
                conn.exec_driver_sql(ddl)


def next_client_id(conn: Connection) -> str:
    """The next MALS client id (``MALS-0108`` after ``MALS-0107``), in the caller's transaction."""
    highest = 0
    query = select(clients.c.client_id).where(clients.c.client_id.like("MALS-%"))
    ids: list[str] = list(conn.execute(query).scalars())
    for client_id in ids:
        suffix = client_id[5:]
        if suffix.isdigit():
            highest = max(highest, int(suffix))
    return f"MALS-{highest + 1:04d}"
