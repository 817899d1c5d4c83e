"""The MALS source connector: what MALS staff record in their own tables, published to
``ingest.mals`` without anyone keying it again.

MALS staff write sessions, LCP attendance, outcomes and consent with their own application. The
triggers of :mod:`connectors.mals.schema` put a row in ``hub_outbox`` in the same transaction
(transactional outbox; no table is ever diffed). This loop:

1. reads up to ``batch_size`` unsent outbox rows in ``outbox_id`` order;
2. builds each as its hub event (:func:`build_event`) with the :class:`~hub.publisher.Publisher`,
   ``source_key = "outbox/<outbox_id>"``: the same row always gives the same ``event_id`` and
   the same bytes (every value comes from the row's snapshot, ``recorded_at`` is the row's
   ``created_at``), so a re-send is an exact duplicate;
3. sends them and waits for the broker's acknowledgement of every one (``flush``);
4. only then marks them sent (``sent_at``, ``event_id``) in one database transaction.

Exactly once downstream = at-least-once publishing + a deterministic ``event_id`` + the router's
dedupe. A crash after step 3 and before step 4 sends the batch again on restart; the router
drops a record whose ``event_id`` it has routed with the same bytes (DESIGN.md "Rules that hold
everywhere"), so each MALS row reaches each audience once. A row is never marked sent before the
broker has it, so nothing is lost (RELIABILITY.md EO-13).

A row that cannot be built (a value MALS' vocabulary does not map, a required value missing) is
marked with its ``error`` and skipped, so it never blocks the rows behind it; after the row is
fixed in MALS' table its update trigger queues it again (``--retry-failed`` re-queues errors
after a code fix). A change to a published row is a correction: the new event carries
``supersedes_event_id`` = the event of the row's previous outbox entry. Notes never leave MALS:
see ``connectors/mals/MAPPING.md``.

``python -m connectors.mals.source --db URL [--bootstrap ...] [--registry-url ...]
[--topic-prefix ...] [--once]`` runs it; without the options it reads the hub's settings
(``HUB_KAFKA_BOOTSTRAP``, ``HUB_REGISTRY_URL``, ``HUB_TOPIC_PREFIX``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
import zoneinfo
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import Connection, Engine, and_, bindparam, func, select, update
from sqlalchemy.exc import SQLAlchemyError

from connectors.mals import codes
from connectors.mals.entry import add_connection_args, connection, stop_on_signals
from connectors.mals.schema import hub_outbox, mals_engine
from hub.domain.errors import HubError, InfraError, ValidationError
from hub.logsetup import configure
from hub.publisher import Publisher, event_id_for, subject

log = structlog.get_logger(__name__)

AGENCY = "mals"
SOURCE_SYSTEM = "mals-db"
JURISDICTION = "UK-ENG"
LOCAL = zoneinfo.ZoneInfo("Europe/London")
UTC = dt.UTC
BATCH_SIZE = 500
POLL_INTERVAL_S = 0.5
SENSITIVITY = {"outcome.drug_service_engaged": "health"}  # substance use: schemas/reference


class RowError(ValueError):
    """An outbox row that cannot become an event: says which row, column and value."""


@dataclass(frozen=True)
class OutboxRow:
    outbox_id: int
    source_table: str
    row_id: int
    change: str
    client_id: str
    identifiers: dict[str, Any]
    payload: dict[str, Any]
    created_at: dt.datetime

    @property
    def source_key(self) -> str:
        return f"outbox/{self.outbox_id}"

    def where(self, column: str) -> str:
        return f"{self.source_table} row {self.row_id} (outbox {self.outbox_id}): {column}"


def _row(r: Any) -> OutboxRow:
    return OutboxRow(
        r.outbox_id,
        r.source_table,
        r.row_id,
        r.change,
        r.client_id,
        json.loads(r.identifiers),
        json.loads(r.payload),
        r.created_at,
    )


# -- one outbox row -> one event ----------------------------------------------------------------


def event_type_of(row: OutboxRow) -> str:
    table, p = row.source_table, row.payload
    if table == "sessions":
        return "mentoring.contact"
    if table == "lcp_attendance":
        return "lcp.session_attended" if p.get("attended") else "lcp.session_missed"
    if table == "outcomes":
        kind = _required(row, "outcome_type")
        return codes.to_code(codes.OUTCOME_EVENTS, kind, row.where("outcome_type"))
    if table == "consent":
        return "consent.withdrawn" if row.change == "withdraw" else "consent.given"
    raise RowError(f"{row.where('source_table')}: no event for table {table!r}")


def build_event(publisher: Publisher, row: OutboxRow, supersedes: str | None) -> dict[str, Any]:
    """The event for one outbox row (raises ``RowError`` or ``ValidationError``)."""
    event_type = event_type_of(row)
    occurred_at, payload = _PAYLOADS[event_type](row)
    identifiers = {k: v for k, v in row.identifiers.items() if v}
    return publisher.build(
        event_type,
        source_key=row.source_key,
        subject=subject(row.client_id, "mals_client_id", **identifiers),
        occurred_at=occurred_at,
        recorded_at=row.created_at.replace(tzinfo=UTC),
        payload=payload,
        sensitivity=SENSITIVITY.get(event_type, "standard"),
        supersedes_event_id=supersedes,
        correction_reason="keying_error" if supersedes else None,
    )


def _required(row: OutboxRow, column: str) -> Any:
    value = row.payload.get(column)
    if value is None or value == "":
        raise RowError(f"{row.where(column)}: is empty (the hub event needs it)")
    return value


def _date(row: OutboxRow, column: str, required: bool = True) -> dt.date | None:
    value = _required(row, column) if required else row.payload.get(column)
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        raise RowError(f"{row.where(column)}: {value!r} is not a date (YYYY-MM-DD)") from None


def _midnight(day: dt.date) -> dt.datetime:
    """A fact known only to the day happens at 00:00Z that day (the hub's convention)."""
    return dt.datetime(day.year, day.month, day.day, tzinfo=UTC)


def _minutes(row: OutboxRow, column: str = "hours") -> int | None:
    hours = row.payload.get(column)
    if hours is None:
        return None
    try:
        return round(float(hours) * 60)
    except (TypeError, ValueError):
        raise RowError(f"{row.where(column)}: {hours!r} is not a number of hours") from None


def _int(row: OutboxRow, column: str) -> int | None:
    value = row.payload.get(column)
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise RowError(f"{row.where(column)}: {value!r} is not a whole number") from None


def _bool(row: OutboxRow, column: str) -> bool | None:
    value = row.payload.get(column)
    return None if value is None else bool(value)


def _code(row: OutboxRow, mapping: Mapping[str, str], column: str) -> str | None:
    value = row.payload.get(column)
    return None if value is None else codes.to_code(mapping, value, row.where(column))


def _pathways(row: OutboxRow, column: str = "pathways") -> list[str] | None:
    labels = codes.split_labels(row.payload.get(column))
    where = row.where(column)
    return [codes.to_code(codes.PATHWAYS, label, where) for label in labels] or None


def _session(row: OutboxRow) -> tuple[dt.datetime, dict[str, Any]]:
    day = _date(row, "session_date")
    assert day is not None
    start = row.payload.get("start_time")
    if start:
        try:
            clock = dt.time.fromisoformat(start)
        except ValueError:
            raise RowError(f"{row.where('start_time')}: {start!r} is not HH:MM") from None
        contact_at = dt.datetime.combine(day, clock, LOCAL).astimezone(UTC)
    else:
        contact_at = _midnight(day)
    return contact_at, {
        "contact_id": str(row.row_id),
        "contact_at": contact_at,
        "mode": codes.to_code(codes.CONTACT_MODES, _required(row, "mode"), row.where("mode")),
        "duration_minutes": _minutes(row),
        "pathways": _pathways(row),
        "mentor_id": row.payload.get("mentor_id"),
        "family_involved": _bool(row, "family_present"),
        # notes: never published (MAPPING.md)
    }


def _lcp_session(row: OutboxRow) -> tuple[dt.datetime, dict[str, Any]]:
    day = _date(row, "session_date")
    assert day is not None
    common = {
        "run_id": _required(row, "run_ref"),
        "session_number": _int(row, "session_no"),
        "session_date": day,
        "theme": _code(row, codes.LCP_THEMES, "theme"),
    }
    if row.payload.get("attended"):
        return _midnight(day), {
            **common,
            "period": _code(row, codes.PERIODS, "am_pm"),
            "duration_minutes": _minutes(row),
            # facilitator_notes: never published
        }
    return _midnight(day), {**common, "reason": _code(row, codes.ABSENCE_REASONS, "absence_reason")}


def _outcome_date(row: OutboxRow) -> dt.date:
    day = _date(row, "outcome_date")
    assert day is not None
    return day


def _employment(row: OutboxRow) -> tuple[dt.datetime, dict[str, Any]]:
    day = _outcome_date(row)
    return _midnight(day), {
        "employment_type": codes.to_code(
            codes.EMPLOYMENT_TYPES, _required(row, "category"), row.where("category")
        ),
        "started_on": day,
        "employer": row.payload.get("organisation"),
        "hours_per_week": _int(row, "hours_per_week"),
        "supported_by": AGENCY,
    }


def _training(row: OutboxRow) -> tuple[dt.datetime, dict[str, Any]]:
    day = _outcome_date(row)
    return _midnight(day), {
        "course": _required(row, "course"),
        "provider": _required(row, "organisation"),
        "started_on": day,
        "full_time": _bool(row, "full_time"),
        "supported_by": AGENCY,
    }


def _housing(row: OutboxRow) -> tuple[dt.datetime, dict[str, Any]]:
    day = _outcome_date(row)
    return _midnight(day), {
        "housing_type": codes.to_code(
            codes.HOUSING_TYPES, _required(row, "category"), row.where("category")
        ),
        "secured_on": day,
        "provider": row.payload.get("organisation"),
        "supported_by": AGENCY,
    }


def _housing_application(row: OutboxRow) -> tuple[dt.datetime, dict[str, Any]]:
    day = _outcome_date(row)
    return _midnight(day), {
        "applied_on": day,
        "provider": _required(row, "organisation"),
        "supported_by": AGENCY,
    }


def _drug_service(row: OutboxRow) -> tuple[dt.datetime, dict[str, Any]]:
    day = _outcome_date(row)
    return _midnight(day), {
        "service": _required(row, "organisation"),
        "engaged_on": day,
        "supported_by": AGENCY,
    }


def _lcp_completed(row: OutboxRow) -> tuple[dt.datetime, dict[str, Any]]:
    day = _outcome_date(row)
    return _midnight(day), {
        "run_id": _required(row, "run_ref"),
        "completed_on": day,
        "certificate_awarded": _bool(row, "certificate"),
        "family_attended": _bool(row, "family_attended"),
        "sessions_attended": _int(row, "sessions_attended"),
        "sessions_total": _int(row, "sessions_total"),
    }


def _scope(row: OutboxRow) -> str:
    return codes.to_code(codes.CONSENT_SCOPES, _required(row, "scope"), row.where("scope"))


def _consent_given(row: OutboxRow) -> tuple[dt.datetime, dict[str, Any]]:
    day = _date(row, "given_on")
    assert day is not None
    return _midnight(day), {
        "consent_id": str(row.row_id),
        "scopes": [_scope(row)],
        "given_on": day,
        "captured_by": _required(row, "captured_by"),
        "method": _code(row, codes.CONSENT_METHODS, "method"),
    }


def _consent_withdrawn(row: OutboxRow) -> tuple[dt.datetime, dict[str, Any]]:
    day = _date(row, "withdrawn_on")
    assert day is not None
    return _midnight(day), {
        "consent_id": str(row.row_id),
        "scopes": [_scope(row)],
        "withdrawn_on": day,
        "captured_by": _required(row, "withdrawal_recorded_by"),
        # reason: never published (the schema's doc: "The reason never leaves the source")
    }


_PAYLOADS: dict[str, Callable[[OutboxRow], tuple[dt.datetime, dict[str, Any]]]] = {
    "mentoring.contact": _session,
    "lcp.session_attended": _lcp_session,
    "lcp.session_missed": _lcp_session,
    "outcome.employment_started": _employment,
    "outcome.training_started": _training,
    "outcome.housing_secured": _housing,
    "outcome.housing_application_made": _housing_application,
    "outcome.drug_service_engaged": _drug_service,
    "lcp.completed": _lcp_completed,
    "consent.given": _consent_given,
    "consent.withdrawn": _consent_withdrawn,
}


# -- the loop -----------------------------------------------------------------------------------


@dataclass
class SourceStats:
    batches: int = 0
    published: int = 0
    failed: int = 0


class OutboxSource:
    def __init__(
        self,
        engine: Engine,
        publisher: Publisher,
        *,
        batch_size: int = BATCH_SIZE,
        flush_timeout: float = 60.0,
    ) -> None:
        self.engine = engine
        self.publisher = publisher
        self.batch_size = batch_size
        self.flush_timeout = flush_timeout
        self.stats = SourceStats()

    def pending(self) -> list[tuple[OutboxRow, str | None]]:
        """Up to ``batch_size`` unsent rows in order, each with the event it corrects."""
        query = (
            select(hub_outbox)
            .where(hub_outbox.c.sent_at.is_(None), hub_outbox.c.error.is_(None))
            .order_by(hub_outbox.c.outbox_id)
            .limit(self.batch_size)
        )
        try:
            with self.engine.connect() as conn:
                rows = [_row(r) for r in conn.execute(query)]
                return [(row, _supersedes(conn, row)) for row in rows]
        except SQLAlchemyError as exc:
            raise InfraError(f"cannot read hub_outbox: {_one_line(exc)}") from exc

    def publish_batch(self) -> int:
        """Publish one batch; return how many outbox rows it settled (sent or failed)."""
        rows = self.pending()
        if not rows:
            return 0
        sent: list[tuple[int, str]] = []
        failed: list[tuple[int, str]] = []
        for row, supersedes in rows:
            try:
                record = build_event(self.publisher, row, supersedes)
                sent.append((row.outbox_id, self.publisher.publish(record)))
            except (RowError, codes.UnknownLabel, ValidationError) as exc:
                failed.append((row.outbox_id, str(exc)))
                reason = getattr(exc, "reason", "row_error")
                log.warning(
                    "outbox_row_failed",
                    outbox_id=row.outbox_id,
                    table=row.source_table,
                    row_id=row.row_id,
                    reason=reason,
                )
        # Delivery confirmed (or DeliveryFailed raised, and nothing is marked) before any mark.
        self.publisher.flush(self.flush_timeout)
        self._mark(sent, failed)
        self.stats.batches += 1
        self.stats.published += len(sent)
        self.stats.failed += len(failed)
        log.info(
            "outbox_batch_published",
            published=len(sent),
            failed=len(failed),
            last_outbox_id=rows[-1][0].outbox_id,
        )
        return len(rows)

    def _mark(self, sent: Sequence[tuple[int, str]], failed: Sequence[tuple[int, str]]) -> None:
        now = dt.datetime.now(UTC).replace(tzinfo=None)
        by_id = hub_outbox.c.outbox_id == bindparam("id")
        try:
            with self.engine.begin() as conn:
                if sent:
                    conn.execute(
                        update(hub_outbox)
                        .where(by_id)
                        .values(sent_at=now, event_id=bindparam("event_id")),
                        [{"id": i, "event_id": e} for i, e in sent],
                    )
                if failed:
                    conn.execute(
                        update(hub_outbox).where(by_id).values(error=bindparam("error")),
                        [{"id": i, "error": error[:1000]} for i, error in failed],
                    )
        except SQLAlchemyError as exc:
            raise InfraError(f"cannot mark hub_outbox rows sent: {_one_line(exc)}") from exc

    def run(
        self,
        should_stop: Callable[[], bool],
        *,
        once: bool = False,
        poll_interval: float = POLL_INTERVAL_S,
    ) -> SourceStats:
        """Publish until ``should_stop()``; with ``once``, until the outbox has nothing pending.
        A broker or database failure is retried with backoff (nothing was marked)."""
        failures = 0
        log.info("mals_source_started", topic=self.publisher.topic)
        while not should_stop():
            try:
                settled = self.publish_batch()
                failures = 0
            except InfraError as exc:
                failures += 1
                if failures >= 10 and once:
                    raise
                log.warning("outbox_batch_failed", attempt=failures, error=str(exc))
                time.sleep(min(0.5 * 2**failures, 10.0))
                continue
            if settled == 0:
                if once:
                    break
                time.sleep(poll_interval)
        log.info("mals_source_stopped", **vars(self.stats))
        return self.stats


def _supersedes(conn: Connection, row: OutboxRow) -> str | None:
    """The event of the row's previous outbox entry (built, not failed), which a change
    corrects; None for a first entry or a withdrawal (an event of its own)."""
    if row.change != "update":
        return None
    c = hub_outbox.c
    previous_id = (
        select(func.max(c.outbox_id))
        .where(
            c.source_table == row.source_table,
            c.row_id == row.row_id,
            c.outbox_id < row.outbox_id,
            c.change.in_(("insert", "update")),
            c.error.is_(None),
        )
        .scalar_subquery()
    )
    previous = conn.execute(select(hub_outbox).where(c.outbox_id == previous_id)).first()
    if previous is None:
        return None
    before = _row(previous)
    try:
        event_type = event_type_of(before)
    except (RowError, codes.UnknownLabel):
        return None  # it could never be published
    return event_id_for(AGENCY, SOURCE_SYSTEM, event_type, before.source_key)


def retry_failed(engine: Engine) -> int:
    """Queue the rows that failed to build again (after a fix to the code or its vocabulary)."""
    with engine.begin() as conn:
        result = conn.execute(
            update(hub_outbox)
            .where(and_(hub_outbox.c.error.is_not(None), hub_outbox.c.sent_at.is_(None)))
            .values(error=None)
        )
        return int(result.rowcount or 0)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(getattr(exc, "orig", None) or exc).split())[:300]


# -- entry point --------------------------------------------------------------------------------


def build_publisher(bootstrap: str, registry_url: str, topic_prefix: str) -> Publisher:
    from hub.adapters.kafka import SafeProducer, producer_config
    from hub.adapters.schema_registry import HttpSchemaRegistry
    from hub.serde.catalogue import Catalogue
    from hub.serde.codec import AvroCodec
    from hub.topics import Topics

    codec = AvroCodec(Catalogue.load(), HttpSchemaRegistry(registry_url))
    return Publisher(
        agency=AGENCY,
        source_system=SOURCE_SYSTEM,
        jurisdiction=JURISDICTION,
        codec=codec,
        sink=SafeProducer(producer_config(bootstrap)),
        topics=Topics(topic_prefix),
    )


def run_source(
    db_url: str,
    bootstrap: str,
    registry_url: str,
    topic_prefix: str = "",
    *,
    once: bool = False,
    retry: bool = False,
    batch_size: int = BATCH_SIZE,
    poll_interval: float = POLL_INTERVAL_S,
    should_stop: Callable[[], bool] | None = None,
) -> SourceStats:
    """``hub connector run mals-source``: publish MALS' outbox until SIGTERM/SIGINT (or
    ``should_stop()``); with ``once``, until nothing is pending."""
    engine = mals_engine(db_url, write_lock=False)  # never holds up MALS staff's writes
    try:
        if retry:
            log.info("outbox_rows_requeued", rows=retry_failed(engine))
        source = OutboxSource(
            engine, build_publisher(bootstrap, registry_url, topic_prefix), batch_size=batch_size
        )
        return source.run(should_stop or stop_on_signals(), once=once, poll_interval=poll_interval)
    finally:
        engine.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m connectors.mals.source", description="Publish MALS' outbox to ingest.mals."
    )
    add_connection_args(parser)
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--poll-interval", type=float, default=POLL_INTERVAL_S)
    parser.add_argument("--once", action="store_true", help="stop when nothing is pending")
    parser.add_argument(
        "--retry-failed",
        action="store_true",
        help="queue rows that failed to build again, then run",
    )
    args = parser.parse_args(argv)
    stop = stop_on_signals()  # first, so a SIGTERM during start-up is a clean stop too
    try:
        c = connection(args)
        configure(c.log_level)
        run_source(
            args.db,
            c.bootstrap,
            c.registry_url,
            c.topic_prefix,
            once=args.once,
            retry=args.retry_failed,
            batch_size=args.batch_size,
            poll_interval=args.poll_interval,
            should_stop=stop,
        )
    except HubError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
