"""An audience's view of its delivered events, as pure data: ``apply_batch(state, entries)``.

The view is a function of the *set* of records read from ``deliver.<audience>``, not of the order
in which they were read, so a consumer killed and restarted anywhere, or a rebuild from offset 0,
ends with the same tables:

- a delivered event is shown in the timeline unless some record retracts it
  (``delivery.retracted``) or corrects it (a later event whose ``envelope.supersedes_event_id``
  names it); retractions and corrections are kept as tombstones (ids, reason, time; no content),
  so a late or replayed original stays hidden;
- subjects and status are recomputed for every subject a batch touched, from its remaining
  timeline rows in ``(occurred_at, event_id)`` order (:mod:`hub.views.status`);
- every operation is an insert into a set or a delete by key, so applying a record twice is the
  same as once; a record at a position below the stored next offset is skipped before that;
- identity follows ``identity.subject_merged`` records: each is an alias (the merged subject's id
  as this audience knew it -> the surviving one) unless some ``delivery.retracted`` names it (the
  link was wrong, S8). A timeline row keeps the subject it was delivered under
  (``delivered_scheme``, ``delivered_id``) and is filed under that subject resolved through the
  aliases in force (``subject_scheme``, ``subject_id``), so a merge re-keys the merged subject's
  rows into one timeline and a retracted merge moves them back, whatever the order they arrive.

:class:`ViewState` holds the tables in memory. The SQL store (:mod:`hub.adapters.view_store`) loads
the slice a batch needs into one, applies the batch, and writes the difference back; tests use a
full in-memory state as the oracle. :func:`canonical_dump` turns the tables into the bytes whose
hash both are compared by.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import itertools
import json
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from hub.views.status import STATUS_EVENT_TYPES, derive_status, open_referrals

RETRACTION = "delivery.retracted"
MERGED = "identity.subject_merged"
SubjectKey = tuple[str, str]  # (local_id_scheme, local_id) as the audience sees the subject
Partition = tuple[str, int]  # (topic, partition)
Position = tuple[str, int, int]  # (topic, partition, offset)
TABLES = (
    "view_aliases",
    "view_corrections",
    "view_meta",
    "view_offsets",
    "view_rejects",
    "view_retractions",
    "view_status",
    "view_subjects",
    "view_timeline",
    "view_withheld",
)


# -- values -------------------------------------------------------------------------------------


def utc(value: dt.datetime) -> dt.datetime:
    """An aware UTC datetime; a naive one (SQLite gives those back) is taken to be UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def _default(value: Any) -> Any:
    """JSON for the non-JSON values a decoded Avro record holds."""
    if isinstance(value, dt.datetime):
        return utc(value).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON data")


_CANONICAL = json.JSONEncoder(
    default=_default, sort_keys=True, separators=(",", ":"), ensure_ascii=False
)


def canonical_json(value: Any) -> str:
    """Canonical JSON text (sorted keys, no spaces) of a decoded value: dates as ISO text,
    timestamps as UTC ISO text with milliseconds, decimals as text, bytes as base64."""
    if not value and isinstance(value, list):
        return "[]"
    return _CANONICAL.encode(value)


def row_dict(row: Any) -> dict[str, Any]:
    """A row dataclass as column -> value (flat: faster than ``asdict``)."""
    values = row.__dict__  # the fields (and any cached property, which is no column)
    return {name: values[name] for name in row.__dataclass_fields__}


# -- rows ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimelineRow:
    """One delivered event as the audience may see it. JSON columns are canonical text."""

    event_id: str
    subject_scheme: str
    subject_id: str
    event_type: str
    occurred_at: dt.datetime
    recorded_at: dt.datetime
    source_agency: str
    source_system: str
    sensitivity: str
    payload: str  # the delivered payload fields that are not null
    withheld: str  # [{field, clause_id}]
    transformed: str  # [{field, rule, clause_id}]
    identifiers: str  # [{scheme, value}] other identifiers a clause granted
    agreement_id: str
    agreement_version: str
    clause_id: str
    purpose: str
    legal_basis: str
    consent_based: bool
    retention_until: dt.date | None
    supersedes_event_id: str | None
    correction_reason: str | None
    delivered_scheme: str = ""  # the subject as delivered ("" : the same as subject_*)
    delivered_id: str = ""

    @property
    def subject(self) -> SubjectKey:
        return (self.subject_scheme, self.subject_id)

    @property
    def delivered(self) -> SubjectKey:
        return (self.delivered_scheme, self.delivered_id)

    @property
    def order(self) -> tuple[dt.datetime, str]:
        return (self.occurred_at, self.event_id)

    # parsed once and kept in the instance (no lock per read, as ``cached_property`` takes)
    @property
    def fields(self) -> Mapping[str, Any]:
        parsed: dict[str, Any] | None = self.__dict__.get("_fields")
        if parsed is None:
            parsed = self.__dict__["_fields"] = json.loads(self.payload)
        return parsed

    @property
    def withheld_fields(self) -> Mapping[str, str]:
        marks: dict[str, str] | None = self.__dict__.get("_withheld_fields")
        if marks is None:
            marks = {}
            if self.withheld != "[]":
                marks = {w["field"]: w["clause_id"] for w in json.loads(self.withheld)}
            self.__dict__["_withheld_fields"] = marks
        return marks

    def row(self) -> dict[str, Any]:
        return row_dict(self)


@dataclass(frozen=True)
class RetractionRow:
    """A retraction: which delivery was withdrawn, why and when; never its content."""

    retraction_event_id: str
    retracted_event_id: str
    reason: str
    clause_id: str | None
    cause_event_id: str | None
    at: dt.datetime


@dataclass(frozen=True)
class AliasRow:
    """``identity.subject_merged``: (from_*) is the same person as (to_*), for this audience."""

    merge_event_id: str
    from_scheme: str
    from_id: str
    to_scheme: str
    to_id: str
    cause_event_id: str | None
    at: dt.datetime


@dataclass(frozen=True)
class CorrectionRow:
    """``superseded_event_id`` was replaced by ``corrected_by_event_id``."""

    superseded_event_id: str
    corrected_by_event_id: str
    correction_reason: str | None
    at: dt.datetime


@dataclass(frozen=True)
class RejectRow:
    """A record the view could not use, kept by position so it is neither lost nor retried."""

    topic: str
    partition: int
    offset: int
    reason: str
    error: str


@dataclass(frozen=True)
class SubjectRow:
    subject_scheme: str
    subject_id: str
    first_seen: dt.datetime
    last_seen: dt.datetime
    last_event_id: str
    last_event_type: str
    events: int
    identifiers: str


@dataclass(frozen=True)
class StatusRow:
    subject_scheme: str
    subject_id: str
    custody_status: str | None
    licence_status: str | None
    supervising_body: str | None
    offender_manager: str | None
    risk_level: str | None
    cohort: str | None
    cohort_status: str | None
    open_referrals: int
    lcp_stage: str | None
    as_of_event_id: str | None
    as_of: dt.datetime | None
    detail: str  # the whole status (hub.views.status), canonical JSON


# -- entries ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decoded:
    """A record read from ``deliver.<audience>`` and decoded."""

    position: Position
    record: Mapping[str, Any]


@dataclass(frozen=True)
class Undecodable:
    """A record that could not be decoded: ``reason`` is the ``SerdeError`` reason code."""

    position: Position
    reason: str
    error: str


Entry = Decoded | Undecodable


class Unusable(ValueError):
    """A decoded record that is not a delivery for this view (a reject, with a reason code)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class BatchStats:
    applied: int = 0  # records that changed the view (shown, retracted, corrected)
    duplicates: int = 0  # event ids already in the view (by id)
    stale: int = 0  # positions below the stored next offset (by position)
    hidden: int = 0  # arrived already retracted or corrected
    retractions: int = 0
    corrections: int = 0
    rejected: int = 0

    def add(self, other: BatchStats) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)


def timeline_row(record: Mapping[str, Any]) -> TimelineRow:
    """The timeline row of a delivered (non-retraction) record; ``Unusable`` when it is not one."""
    envelope = record.get("envelope") or {}
    disclosure = record.get("disclosure")
    if not disclosure:
        raise Unusable("missing_disclosure", "a delivered event must carry a disclosure")
    subject = envelope["subject"]
    payload = {
        name: value
        for name, value in record.items()
        if name not in ("envelope", "disclosure") and value is not None
    }
    clause = disclosure["clause_id"]
    withheld = [{"field": f, "clause_id": clause} for f in sorted(set(disclosure["withheld"]))]
    transformed = sorted(
        ({"field": t["field"], "rule": t["rule"], "clause_id": t["clause_id"]}
         for t in disclosure.get("transformed") or ()),
        key=lambda t: (t["field"], t["rule"], t["clause_id"]),
    )  # fmt: skip
    identifiers = sorted({(i["scheme"], i["value"]) for i in subject.get("identifiers") or ()})
    return TimelineRow(
        event_id=envelope["event_id"],
        subject_scheme=subject["local_id_scheme"],
        subject_id=subject["local_id"],
        event_type=envelope["event_type"],
        occurred_at=utc(envelope["occurred_at"]),
        recorded_at=utc(envelope["recorded_at"]),
        source_agency=envelope["source_agency"],
        source_system=envelope["source_system"],
        sensitivity=envelope["sensitivity"],
        payload=canonical_json(payload),
        withheld=canonical_json(withheld),
        transformed=canonical_json(transformed),
        identifiers=canonical_json([{"scheme": s, "value": v} for s, v in identifiers]),
        agreement_id=disclosure["agreement_id"],
        agreement_version=disclosure["agreement_version"],
        clause_id=clause,
        purpose=disclosure["purpose"],
        legal_basis=disclosure["legal_basis"],
        consent_based=bool(disclosure["consent_based"]),
        retention_until=disclosure.get("retention_until"),
        supersedes_event_id=envelope.get("supersedes_event_id"),
        correction_reason=envelope.get("correction_reason"),
        delivered_scheme=subject["local_id_scheme"],
        delivered_id=subject["local_id"],
    )


def subject_row(
    key: SubjectKey, rows: list[TimelineRow], base: SubjectRow | None = None
) -> SubjectRow:
    """``rows`` in timeline order, at least one; ``base``: the row of the rows before them."""
    held = [r.identifiers for r in rows] + ([base.identifiers] if base is not None else [])
    pairs = {(i["scheme"], i["value"]) for text in held if text != "[]" for i in json.loads(text)}
    return SubjectRow(
        subject_scheme=key[0],
        subject_id=key[1],
        first_seen=base.first_seen if base is not None else rows[0].occurred_at,
        last_seen=rows[-1].occurred_at,
        last_event_id=rows[-1].event_id,
        last_event_type=rows[-1].event_type,
        events=len(rows) + (base.events if base is not None else 0),
        identifiers=canonical_json([{"scheme": s, "value": v} for s, v in sorted(pairs)]),
    )


def status_row(
    key: SubjectKey, rows: list[TimelineRow], base: StatusRow | None = None
) -> StatusRow:
    """``rows`` in timeline order; the status folded from those that inform it (onto ``base``,
    the status of the rows before them)."""
    informing = [r for r in rows if r.event_type in STATUS_EVENT_TYPES]
    status = derive_status(informing, _parsed(base.detail) if base is not None else None)
    manager = status["supervision"]["offender_manager"]
    last_id, last_at = (base.as_of_event_id, base.as_of) if base is not None else (None, None)
    if informing:
        last_id, last_at = informing[-1].event_id, informing[-1].occurred_at
    return StatusRow(
        subject_scheme=key[0],
        subject_id=key[1],
        custody_status=status["custody"]["status"],
        licence_status=status["licence"]["status"],
        supervising_body=status["supervision"]["supervising_body"],
        offender_manager=manager.get("name") if isinstance(manager, Mapping) else None,
        risk_level=status["risk"]["level"],
        cohort=status["cohort"]["name"],
        cohort_status=status["cohort"]["status"],
        open_referrals=open_referrals(status),
        lcp_stage=status["lcp"]["stage"],
        as_of_event_id=last_id,
        as_of=last_at,
        detail=_keep(canonical_json(status), status),
    )


# The statuses folded last, by their canonical text: the next batch reads a subject's status back
# from its database as that text and folds onto it, so it takes the folded value over rather than
# parsing the text again. The value is the text parsed (the fold reads JSON values only, keyed by
# text, and never shares a container it later changes), so either gives the same fold; one is
# taken out when used (the fold changes it), and the oldest go first past the bound (two batches
# of 1,000 distinct subjects; a status of ~25 events takes ~14 KB as a value, ~2.4 KB as text).
_FOLDED: dict[str, dict[str, Any]] = {}
_FOLDED_MAX = 2048
_FOLDED_LOCK = threading.Lock()


def _keep(detail: str, status: dict[str, Any]) -> str:
    with _FOLDED_LOCK:
        if len(_FOLDED) >= _FOLDED_MAX:
            for stale in list(itertools.islice(_FOLDED, _FOLDED_MAX // 4)):
                del _FOLDED[stale]
        _FOLDED[detail] = status
    return detail


def _parsed(detail: str) -> dict[str, Any]:
    with _FOLDED_LOCK:
        status = _FOLDED.pop(detail, None)
    if status is None:
        parsed: dict[str, Any] = json.loads(detail)
        return parsed
    return status


class IncompleteSlice(RuntimeError):
    """A batch touched rows of a subject that was loaded only partly (a bug of the loader)."""


# -- the state ----------------------------------------------------------------------------------


@dataclass
class ViewState:
    """The view's tables in memory (all of them for an oracle, a batch's slice for the store)."""

    audience: str
    timeline: dict[str, TimelineRow] = field(default_factory=dict)
    by_subject: dict[SubjectKey, set[str]] = field(default_factory=dict)
    retractions: dict[str, RetractionRow] = field(default_factory=dict)
    retracted: set[str] = field(default_factory=set)  # event ids some retraction names
    corrections: dict[tuple[str, str], CorrectionRow] = field(default_factory=dict)
    superseded: set[str] = field(default_factory=set)  # event ids some correction replaces
    rejects: dict[Position, RejectRow] = field(default_factory=dict)
    aliases: dict[str, AliasRow] = field(default_factory=dict)  # every one (the store loads all)
    rekeyed: set[str] = field(default_factory=set)  # timeline rows filed under another subject
    offsets: dict[Partition, int] = field(default_factory=dict)
    subjects: dict[SubjectKey, SubjectRow] = field(default_factory=dict)
    status: dict[SubjectKey, StatusRow] = field(default_factory=dict)
    # subjects whose earlier rows are not loaded: their stored subject and status rows, and the
    # ids folded onto those since (the store loads the whole timeline of any other subject)
    bases: dict[SubjectKey, tuple[SubjectRow, StatusRow]] = field(default_factory=dict)
    folded: dict[SubjectKey, set[str]] = field(default_factory=dict)
    dirty: set[SubjectKey] = field(default_factory=set)  # changed since the last refresh
    touched: set[SubjectKey] = field(default_factory=set)  # refreshed since the state was made

    # loading (the store fills a slice from the database) and changing
    def add_timeline(self, row: TimelineRow) -> None:
        self.timeline[row.event_id] = row
        self.by_subject.setdefault(row.subject, set()).add(row.event_id)
        self.dirty.add(row.subject)

    def remove_timeline(self, event_id: str) -> TimelineRow | None:
        row = self.timeline.pop(event_id, None)
        if row is not None:
            ids = self.by_subject[row.subject]
            ids.discard(event_id)
            if not ids:
                del self.by_subject[row.subject]
            self.dirty.add(row.subject)
        return row

    def add_retraction(self, row: RetractionRow) -> None:
        self.retractions[row.retraction_event_id] = row
        self.retracted.add(row.retracted_event_id)

    def resolve(self, key: SubjectKey) -> SubjectKey:
        """``key`` through the aliases in force (a chain followed to its end; of two aliases from
        one key, the later one (time, id) wins)."""
        step: dict[SubjectKey, tuple[tuple[dt.datetime, str], SubjectKey]] = {}
        for alias in self.aliases.values():
            if alias.merge_event_id in self.retracted:
                continue
            source, order = (alias.from_scheme, alias.from_id), (alias.at, alias.merge_event_id)
            if source not in step or step[source][0] < order:
                step[source] = (order, (alias.to_scheme, alias.to_id))
        seen = {key}
        while key in step:
            nxt = step[key][1]
            if nxt in seen:
                break
            seen.add(nxt)
            key = nxt
        return key

    def filed(self, row: TimelineRow) -> TimelineRow:
        """``row`` under the subject its delivered subject resolves to."""
        delivered = row.delivered if row.delivered_scheme else row.subject
        key = self.resolve(delivered)
        if key == row.subject and row.delivered_scheme:
            return row
        return replace(
            row,
            subject_scheme=key[0],
            subject_id=key[1],
            delivered_scheme=delivered[0],
            delivered_id=delivered[1],
        )

    def rekey(self) -> None:
        """File every loaded timeline row under the subject the aliases now resolve it to."""
        for event_id, row in list(self.timeline.items()):
            filed = self.filed(row)
            if filed is not row:
                self.remove_timeline(event_id)
                self.add_timeline(filed)
                self.rekeyed.add(event_id)

    def add_correction(self, row: CorrectionRow) -> None:
        self.corrections[(row.superseded_event_id, row.corrected_by_event_id)] = row
        self.superseded.add(row.superseded_event_id)

    def hidden(self, event_id: str) -> bool:
        return event_id in self.retracted or event_id in self.superseded

    def rows_of(self, key: SubjectKey) -> list[TimelineRow]:
        return sorted((self.timeline[i] for i in self.by_subject.get(key, ())), key=_order)

    def refresh(self) -> set[SubjectKey]:
        """Recompute subjects and status for the subjects changed since the last refresh: from
        all their rows, or, for a subject loaded only partly, by folding its new rows (all later
        than its stored last event) onto its stored rows, which gives the same result."""
        changed, self.dirty = self.dirty, set()
        self.touched |= changed
        for key in changed:
            if key in self.bases:
                self._extend(key)
                continue
            rows = self.rows_of(key)
            if rows:
                self.subjects[key] = subject_row(key, rows)
                self.status[key] = status_row(key, rows)
            else:
                self.subjects.pop(key, None)
                self.status.pop(key, None)
        return changed

    def _extend(self, key: SubjectKey) -> None:
        base_subject, base_status = self.bases[key]
        folded = self.folded.setdefault(key, set())
        present = self.by_subject.get(key, set())
        if folded - present:
            raise IncompleteSlice(f"rows of partly loaded subject {key[0]} were removed")
        rows = sorted((self.timeline[i] for i in present - folded), key=_order)
        if rows and rows[0].order <= (base_subject.last_seen, base_subject.last_event_id):
            raise IncompleteSlice(f"rows of partly loaded subject {key[0]} arrived out of order")
        if rows:
            base_subject = subject_row(key, rows, base_subject)
            if any(r.event_type in STATUS_EVENT_TYPES for r in rows):
                base_status = status_row(key, rows, base_status)
            self.bases[key] = (base_subject, base_status)
            folded.update(r.event_id for r in rows)
        self.subjects[key] = base_subject
        self.status[key] = base_status

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        """Every table as rows of column -> value (the SQL store's columns, same names)."""
        self.refresh()
        return {
            "view_aliases": [row_dict(r) for r in self.aliases.values()],
            "view_corrections": [row_dict(r) for r in self.corrections.values()],
            "view_meta": [{"key": "audience", "value": self.audience}],
            "view_offsets": [
                {"topic": t, "partition": p, "next_offset": o} for (t, p), o in self.offsets.items()
            ],
            "view_rejects": [row_dict(r) for r in self.rejects.values()],
            "view_retractions": [row_dict(r) for r in self.retractions.values()],
            "view_status": [row_dict(r) for r in self.status.values()],
            "view_subjects": [row_dict(r) for r in self.subjects.values()],
            "view_timeline": [r.row() for r in self.timeline.values()],
            "view_withheld": [w for r in self.timeline.values() for w in withheld_rows(r)],
        }


def _order(row: TimelineRow) -> tuple[dt.datetime, str]:
    return row.order


def withheld_rows(row: TimelineRow) -> Iterator[dict[str, Any]]:
    if row.withheld == "[]":  # most rows
        return
    for w in json.loads(row.withheld):
        yield {"event_id": row.event_id, "field": w["field"], "clause_id": w["clause_id"]}


# -- applying -----------------------------------------------------------------------------------


def apply_batch(state: ViewState, entries: Iterable[Entry]) -> BatchStats:
    """Apply ``entries`` in order, advance the offsets, recompute the touched subjects."""
    stats = BatchStats()
    for entry in entries:
        topic, partition, offset = entry.position
        next_offset = state.offsets.get((topic, partition))
        if next_offset is not None and offset < next_offset:
            stats.stale += 1
            continue
        if isinstance(entry, Undecodable):
            _reject(state, entry.position, entry.reason, entry.error, stats)
        else:
            try:
                apply_record(state, entry.record, stats)
            except Unusable as exc:
                _reject(state, entry.position, exc.reason, str(exc), stats)
        state.offsets[(topic, partition)] = offset + 1
    state.refresh()
    return stats


def _reject(
    state: ViewState, position: Position, reason: str, error: str, stats: BatchStats
) -> None:
    state.rejects[position] = RejectRow(*position, reason=reason, error=error[:500])
    stats.rejected += 1


def apply_record(state: ViewState, record: Mapping[str, Any], stats: BatchStats) -> None:
    """Apply one decoded record (set semantics: applying it again changes nothing)."""
    try:
        envelope = record["envelope"]
        event_id = envelope["event_id"]
        event_type = envelope["event_type"]
    except (KeyError, TypeError):
        raise Unusable("invalid_envelope", "record has no envelope with event_id") from None
    disclosure = record.get("disclosure")
    if disclosure and disclosure.get("audience") != state.audience:
        raise Unusable(
            "wrong_audience",
            f"delivered to audience {disclosure.get('audience')!r}, "
            f"this view is {state.audience!r}",
        )
    if event_type == RETRACTION:
        if event_id in state.retractions:
            stats.duplicates += 1
            return
        target = record.get("retracted_event_id")
        if not target or not record.get("reason"):
            raise Unusable("invalid_retraction", "delivery.retracted without retracted_event_id")
        state.add_retraction(
            RetractionRow(
                retraction_event_id=event_id,
                retracted_event_id=target,
                reason=record["reason"],
                clause_id=record.get("clause_id"),
                cause_event_id=record.get("cause_event_id"),
                at=utc(envelope["occurred_at"]),
            )
        )
        state.remove_timeline(target)
        if target in state.aliases:
            state.rekey()
        stats.retractions += 1
        stats.applied += 1
        return
    if event_type == MERGED:
        if event_id in state.aliases:
            stats.duplicates += 1
            return
        try:
            subject = envelope["subject"]
            alias = AliasRow(
                merge_event_id=event_id,
                from_scheme=record["merged_local_id_scheme"],
                from_id=record["merged_local_id"],
                to_scheme=subject["local_id_scheme"],
                to_id=subject["local_id"],
                cause_event_id=record.get("cause_event_id"),
                at=utc(envelope["occurred_at"]),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise Unusable("invalid_merge", f"identity.subject_merged lacks {exc}") from None
        if not alias.from_scheme or not alias.from_id:
            raise Unusable("invalid_merge", "identity.subject_merged without merged_local_id")
        state.aliases[event_id] = alias
        if state.hidden(event_id):
            stats.hidden += 1
        else:
            state.rekey()
            stats.applied += 1
        return
    if event_id in state.timeline:
        stats.duplicates += 1
        return
    try:
        row = timeline_row(record)
    except (KeyError, TypeError, AttributeError) as exc:
        raise Unusable("invalid_delivery", f"delivered record lacks {exc}") from None
    supersedes = row.supersedes_event_id
    if supersedes and supersedes != event_id:
        state.add_correction(
            CorrectionRow(supersedes, event_id, row.correction_reason, at=row.occurred_at)
        )
        state.remove_timeline(supersedes)
        stats.corrections += 1
    if state.hidden(event_id):
        stats.hidden += 1
        return
    state.add_timeline(state.filed(row))
    stats.applied += 1


# -- the dump -----------------------------------------------------------------------------------


def _dump_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return utc(value).isoformat(timespec="microseconds").replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def canonical_dump(tables: Mapping[str, Iterable[Mapping[str, Any]]]) -> bytes:
    """Every table, sorted by name, its rows as canonical JSON lines in sorted order."""
    lines: list[str] = []
    for name in sorted(tables):
        rows = sorted(
            json.dumps(
                {k: _dump_value(v) for k, v in row.items()},
                sort_keys=True,
                separators=(",", ":"),
                ensure_ascii=False,
            )
            for row in tables[name]
        )
        lines.append(f"# {name} {len(rows)}")
        lines.extend(rows)
    return ("\n".join(lines) + "\n").encode()
