"""The auditors' reports over the stored trail: search, a subject's disclosures, denials and
rejections, and sharing over time.

Pure functions over a store with ``SqlAuditStore.query``'s signature. Each report cites the
entries it rests on by their number in the chain (``seq``), which ``hub audit verify`` checks,
and holds what the entries hold: metadata, field names and hashes, never a shared value.
Tables come out as (columns, rows of text), for the terminal and for CSV alike.
"""

from __future__ import annotations

import csv
import html
import io
from collections import defaultdict
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from hub.audit.entry import KINDS, AuditEntry, format_at
from hub.audit.protocols import StoredEntry
from hub.domain.errors import InputError

PAGE = 5000
DECISIONS = ("permit", "deny")
PERIODS = ("month", "quarter", "year")
WITHHELD = frozenset({"withheld", "drop"})

Table = tuple[tuple[str, ...], list[tuple[str, ...]]]


class EntryQuery(Protocol):
    """What the reports read: ``hub.adapters.audit_store.SqlAuditStore``."""

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
        since: datetime | None = None,
        until: datetime | None = None,
        after_seq: int = 0,
        limit: int = 1000,
    ) -> list[StoredEntry]: ...

    def head(self) -> tuple[int, str]: ...


def _all(store: EntryQuery, **filters: object) -> Iterator[StoredEntry]:
    """Every matching entry in seq order, a page at a time."""
    after = 0
    while True:
        page = store.query(after_seq=after, limit=PAGE, **filters)  # type: ignore[arg-type]
        yield from page
        if len(page) < PAGE:
            return
        after = page[-1].seq


def _time(at: datetime | None) -> str:
    return format_at(at) if at is not None else ""


def _fields(fields: Mapping[str, str], withheld: bool) -> str:
    return "; ".join(
        name if withheld else f"{name} ({rule})"
        for name, rule in fields.items()
        if (rule in WITHHELD) == withheld
    )


# -- search ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchFilters:
    """``hub audit search``: every given filter must match. ``decision`` is the outcome of a
    ``decided`` entry (permit or deny); ``until`` is exclusive."""

    subject_ref: str | None = None
    agency: str | None = None
    audience: str | None = None
    agreement_id: str | None = None
    clause_id: str | None = None
    kind: str | None = None
    decision: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 100

    def __post_init__(self) -> None:
        if self.kind is not None and self.kind not in KINDS:
            raise InputError(f"--kind {self.kind!r} (expected one of {', '.join(sorted(KINDS))})")
        if self.decision is not None and self.decision not in DECISIONS:
            raise InputError(f"--decision {self.decision!r} (expected permit or deny)")
        if self.decision is not None and self.kind not in (None, "decided"):
            raise InputError(f"--decision applies to decided entries, not --kind {self.kind}")
        if self.limit < 1:
            raise InputError(f"--limit {self.limit} (expected at least 1)")
        if self.since and self.until and self.since >= self.until:
            raise InputError("--since must be before --until")

    def recorded(self) -> dict[str, object]:
        """What the ``auditor_query`` entry records (the subject goes in its own field)."""
        return {
            "agency": self.agency, "audience": self.audience, "agreement": self.agreement_id,
            "clause": self.clause_id, "kind": self.kind, "decision": self.decision,
            "since": self.since, "until": self.until, "limit": self.limit,
        }  # fmt: skip


@dataclass(frozen=True)
class SearchResult:
    entries: list[StoredEntry]
    truncated: bool  # more entries match than ``limit``


def search(store: EntryQuery, filters: SearchFilters) -> SearchResult:
    """The first ``limit`` matching entries, in trail order."""
    found = store.query(
        subject_ref=filters.subject_ref,
        agency=filters.agency,
        audience=filters.audience,
        agreement_id=filters.agreement_id,
        clause_id=filters.clause_id,
        kind="decided" if filters.decision else filters.kind,
        outcome=filters.decision,
        since=filters.since,
        until=filters.until,
        limit=filters.limit + 1,
    )
    return SearchResult(found[: filters.limit], len(found) > filters.limit)


ENTRY_COLUMNS = (
    "seq", "entry_id", "at", "kind", "outcome", "component", "actor", "role", "subject_ref",
    "event_id", "event_type", "source_agency", "audience", "agreement_id", "agreement_version",
    "clause_ids", "fields_shared", "fields_withheld", "reason", "purpose", "justification",
    "payload_hash", "details",
)  # fmt: skip


def entry_row(stored: StoredEntry) -> tuple[str, ...]:
    """An entry as a CSV row (``ENTRY_COLUMNS``)."""
    e = stored.entry
    return (
        str(stored.seq), e.entry_id, _time(e.at), e.kind, e.outcome, e.component,
        e.actor or "", e.role or "", e.subject_ref or "", e.event_id or "", e.event_type or "",
        e.source_agency or "", e.audience or "", e.agreement_id or "",
        e.agreement_version or "", " ".join(e.clause_ids), _fields(e.fields, False),
        _fields(e.fields, True), e.reason or "", e.purpose or "", e.justification or "",
        e.payload_hash or "", "; ".join(f"{k}={v}" for k, v in e.details.items()),
    )  # fmt: skip


def search_table(result: SearchResult) -> Table:
    """A compact table for the terminal; CSV takes every column (``entry_row``)."""
    columns = ("#", "at (UTC)", "kind", "outcome", "from", "to", "event type", "agreement",
               "clauses", "subject", "actor", "note")  # fmt: skip
    rows: list[tuple[str, ...]] = []
    for stored in result.entries:
        e = stored.entry
        agreement = f"{e.agreement_id} v{e.agreement_version}" if e.agreement_id else ""
        note = e.reason or ""
        if e.kind == "delivered":
            note = f"withheld: {_fields(e.fields, True) or '-'}"
        elif e.kind == "auditor_query":
            note = ", ".join(f"{k}={v}" for k, v in e.details.items())
        rows.append((
            str(stored.seq), _time(e.at)[:19], e.kind, e.outcome, e.source_agency or "",
            e.audience or "", e.event_type or "", agreement, " ".join(e.clause_ids),
            (e.subject_ref or "")[:12], e.actor or "", note,
        ))  # fmt: skip
    return columns, rows


# -- disclosure report -------------------------------------------------------------------------


@dataclass(frozen=True)
class Disclosure:
    """One delivery of the subject's data to one audience, and what became of it."""

    seq: int
    entry: AuditEntry
    retracted: AuditEntry | None = None  # as of the report
    superseded_by: str | None = None  # a correction this audience received, as of the report

    @property
    def shared(self) -> dict[str, str]:
        return {name: rule for name, rule in self.entry.fields.items() if rule not in WITHHELD}

    @property
    def withheld(self) -> list[str]:
        return [name for name, rule in self.entry.fields.items() if rule in WITHHELD]

    @property
    def status(self) -> str:
        if self.retracted is not None:
            return f"retracted {_time(self.retracted.at)} ({self.retracted.reason})"
        if self.superseded_by:
            return f"superseded by {self.superseded_by}"
        return "held"


@dataclass(frozen=True)
class DisclosureReport:
    """A subject's disclosures: who received what, when, under which agreement and clause.

    With ``as_of``, only what happened before that instant: the deliveries made before it that
    were not retracted before it ("what did agency X know at time T"), and the retractions and
    corrections before it.
    """

    subject_ref: str
    subject: str  # as the auditor named it
    as_of: datetime | None
    agency: str | None
    trail_size: int
    trail_head: str
    deliveries: list[Disclosure] = field(default_factory=list)
    retractions: list[StoredEntry] = field(default_factory=list)
    corrections: list[StoredEntry] = field(default_factory=list)

    def recipients(self) -> dict[str, dict[str, str]]:
        """audience -> every field it received (not withheld), with its treatment."""
        out: dict[str, dict[str, str]] = defaultdict(dict)
        for item in self.deliveries:
            out[item.entry.audience or ""].update(item.shared)
        return dict(out)

    def withheld(self) -> dict[str, set[str]]:
        """audience -> every field withheld from it in at least one delivery."""
        out: dict[str, set[str]] = defaultdict(set)
        for item in self.deliveries:
            out[item.entry.audience or ""].update(item.withheld)
        return dict(out)


def _of_agency(audience: str | None, agency: str | None) -> bool:
    return agency is None or audience == agency or (audience or "").startswith(f"{agency}.")


def disclosure_report(
    store: EntryQuery,
    subject_ref: str,
    *,
    subject: str = "",
    as_of: datetime | None = None,
    agency: str | None = None,
) -> DisclosureReport:
    """The disclosure report of one subject (by audit pseudonym), optionally as of an instant
    and for the audiences of one agency."""
    size, head = store.head()
    delivered: list[StoredEntry] = []
    retracted: dict[tuple[str, str], AuditEntry] = {}
    retractions: list[StoredEntry] = []
    corrections: list[StoredEntry] = []
    for stored in _all(store, subject_ref=subject_ref, until=as_of,
                       kind=("delivered", "retracted", "corrected")):  # fmt: skip
        if stored.seq > size:
            break  # appended while reading: the report stands on entries 1..size
        e = stored.entry
        if e.kind == "corrected":
            recipients = e.details.get("recipients", "").split(",")
            if agency is None or any(_of_agency(r, agency) for r in recipients):
                corrections.append(stored)
        elif not _of_agency(e.audience, agency):
            continue
        elif e.kind == "delivered":
            delivered.append(stored)
        else:
            retractions.append(stored)
            retracted.setdefault((e.event_id or "", e.audience or ""), e)
    received = {(s.entry.event_id, s.entry.audience) for s in delivered}
    superseded = {
        (c.entry.details.get("supersedes"), audience): c.entry.event_id or ""
        for c in corrections
        for audience in {s.entry.audience for s in delivered}
        if (c.entry.event_id, audience) in received
    }
    deliveries = []
    for stored in delivered:
        key = (stored.entry.event_id or "", stored.entry.audience or "")
        gone = retracted.get(key)
        if as_of is not None and gone is not None:
            continue  # retracted before the instant: no longer held then
        deliveries.append(Disclosure(stored.seq, stored.entry, gone, superseded.get(key)))
    return DisclosureReport(
        subject_ref=subject_ref, subject=subject or subject_ref, as_of=as_of, agency=agency,
        trail_size=size, trail_head=head, deliveries=deliveries, retractions=retractions,
        corrections=corrections,
    )  # fmt: skip


def disclosure_summary(report: DisclosureReport) -> Table:
    """One row per recipient audience."""
    by_audience: dict[str, list[Disclosure]] = defaultdict(list)
    for item in report.deliveries:
        by_audience[item.entry.audience or ""].append(item)
    received, withheld = report.recipients(), report.withheld()
    rows: list[tuple[str, ...]] = []
    for audience, items in sorted(by_audience.items()):
        shared = received.get(audience, {})
        rows.append((
            audience, str(len(items)), _time(items[0].entry.at)[:19],
            _time(items[-1].entry.at)[:19],
            ", ".join(sorted({i.entry.agreement_id or "" for i in items})),
            "; ".join(f"{n} ({r})" for n, r in sorted(shared.items())),
            ", ".join(sorted(withheld.get(audience, ()))),
            str(sum(1 for i in items if i.retracted is not None)),
        ))  # fmt: skip
    return ("audience", "deliveries", "first (UTC)", "last (UTC)", "agreements", "fields received",
            "fields withheld", "retracted"), rows  # fmt: skip


DISCLOSURE_BRIEF = (
    "seq", "kind", "at", "source_agency", "audience", "event_type", "event_id", "clause_ids",
    "fields_received", "fields_withheld", "status", "reason",
)  # fmt: skip


def disclosure_table(report: DisclosureReport, only: Sequence[str] = ()) -> Table:
    """One row per delivery, retraction and correction, in trail order: every column (the CSV)
    or ``only`` those named (``DISCLOSURE_BRIEF`` fits a terminal)."""
    columns = ("seq", "kind", "at", "source_agency", "audience", "event_type", "event_id",
               "agreement_id", "agreement_version", "clause_ids", "purpose", "legal_basis",
               "fields_received", "fields_withheld", "status", "reason", "related_event_id",
               "payload_hash")  # fmt: skip
    rows: list[tuple[int, tuple[str, ...]]] = []
    for item in report.deliveries:
        e = item.entry
        rows.append((item.seq, (
            str(item.seq), e.kind, _time(e.at), e.source_agency or "", e.audience or "",
            e.event_type or "", e.event_id or "", e.agreement_id or "",
            e.agreement_version or "", " ".join(e.clause_ids), e.purpose or "",
            e.details.get("legal_basis", ""), _fields(e.fields, False), _fields(e.fields, True),
            item.status, "", "", e.payload_hash or "",
        )))  # fmt: skip
    for stored in [*report.retractions, *report.corrections]:
        e = stored.entry
        related = e.details.get("supersedes") or e.details.get("cause_event_id") or ""
        audience = e.audience or e.details.get("recipients", "")
        rows.append((stored.seq, (
            str(stored.seq), e.kind, _time(e.at), e.source_agency or "", audience,
            e.event_type or "", e.event_id or "", "", "", " ".join(e.clause_ids), "", "", "",
            "", "", e.reason or "", related, e.payload_hash or "",
        )))  # fmt: skip
    ordered = [row for _, row in sorted(rows, key=lambda pair: pair[0])]
    if not only:
        return columns, ordered
    keep = [columns.index(name) for name in only]
    return tuple(only), [tuple(row[i] for i in keep) for row in ordered]


def disclosure_html(report: DisclosureReport, *, generated_by: str, generated_at: datetime) -> str:
    """A printable, self-contained HTML page of the report."""
    esc = html.escape

    def table(data: Table, skip: Collection[str] = ()) -> str:
        columns, rows = data
        keep = [i for i, name in enumerate(columns) if name not in skip]
        if not rows:
            return "<p class=none>None.</p>"
        head = "".join(f"<th>{esc(columns[i])}</th>" for i in keep)
        body = "".join(
            "<tr>" + "".join(f"<td>{esc(row[i])}</td>" for i in keep) + "</tr>" for row in rows
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    columns, rows = disclosure_table(report)
    kinds = columns.index("kind")
    sections = {
        kind: (columns, [row for row in rows if row[kinds] == kind])
        for kind in ("delivered", "retracted", "corrected")
    }
    scope = (
        f"what was held before {esc(_time(report.as_of))} (deliveries retracted before then "
        "are left out)"
        if report.as_of
        else "every delivery on the trail, with what became of it"
    )
    audience = f" to the audiences of {esc(report.agency)}" if report.agency else ""
    not_delivery = ("agreement_id", "agreement_version", "purpose", "legal_basis",
                    "fields_received", "fields_withheld", "status")  # fmt: skip
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Disclosure report: {esc(report.subject)}</title>
<style>
body {{ font: 10pt/1.35 system-ui, sans-serif; margin: 1.5cm; color: #111; }}
h1 {{ font-size: 16pt; margin: 0 0 .3em; }} h2 {{ font-size: 12pt; margin-top: 1.4em; }}
dl {{ display: grid; grid-template-columns: max-content 1fr; gap: .15em 1em; }}
dt {{ font-weight: 600; }} dd {{ margin: 0; font-family: ui-monospace, monospace; }}
table {{ border-collapse: collapse; width: 100%; font-size: 8.5pt; }}
th, td {{ border: 1px solid #999; padding: 2px 4px; text-align: left; vertical-align: top;
  overflow-wrap: anywhere; }}
th {{ background: #eee; }} tr {{ page-break-inside: avoid; }}
.none, footer {{ color: #555; }} footer {{ margin-top: 2em; font-size: 8pt; }}
@page {{ size: A4 landscape; margin: 1cm; }}
@media print {{ body {{ margin: 0; }} }}
</style></head><body>
<h1>Disclosure report</h1>
<p>Every disclosure of this subject's data through the hub{audience}: {scope}.</p>
<dl>
<dt>Subject</dt><dd>{esc(report.subject)}</dd>
<dt>Audit pseudonym</dt><dd>{esc(report.subject_ref)}</dd>
<dt>As of</dt><dd>{esc(_time(report.as_of)) or "now"}</dd>
<dt>Audit trail</dt><dd>{report.trail_size} entries, head {esc(report.trail_head)}</dd>
<dt>Generated</dt><dd>{esc(_time(generated_at))} by {esc(generated_by)}</dd>
</dl>
<h2>Recipients</h2>
{table(disclosure_summary(report))}
<h2>Deliveries ({len(sections["delivered"][1])})</h2>
{table(sections["delivered"], ("kind", "reason", "related_event_id"))}
<h2>Retractions ({len(sections["retracted"][1])})</h2>
{table(sections["retracted"], ("kind", *not_delivery))}
<h2>Corrections ({len(sections["corrected"][1])})</h2>
{table(sections["corrected"], ("kind", *not_delivery))}
<footer>Times are UTC. "seq" is the entry's number in the hash-chained audit trail; run
<code>hub audit verify</code> to check that the trail is intact. The trail holds metadata, field
names and hashes only: no shared value appears here.</footer>
</body></html>
"""


# -- denials and rejections ----------------------------------------------------------------------


def denials(
    store: EntryQuery,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    agency: str | None = None,
) -> list[StoredEntry]:
    """Every deny decision and every record sent to a DLQ, in trail order."""
    found = _all(store, kind=("decided", "rejected"), outcome=("deny", "error"), since=since,
                 until=until, agency=agency)  # fmt: skip
    wanted = (("decided", "deny"), ("rejected", "error"))
    return [stored for stored in found if (stored.entry.kind, stored.entry.outcome) in wanted]


def denials_table(entries: Sequence[StoredEntry]) -> Table:
    columns = ("seq", "at", "what", "source_agency", "audience", "event_type", "event_id",
               "agreement_id", "clause_ids", "reason", "where")  # fmt: skip
    rows: list[tuple[str, ...]] = []
    for stored in entries:
        e = stored.entry
        where = ""
        if e.kind == "rejected":
            d = e.details
            where = f"{d.get('topic')}[{d.get('partition')}]@{d.get('offset')} -> {d.get('dlq')}"
        rows.append((
            str(stored.seq), _time(e.at), "denied" if e.kind == "decided" else "dlq",
            e.source_agency or "", e.audience or "", e.event_type or "", e.event_id or "",
            e.agreement_id or "", " ".join(e.clause_ids), e.reason or "", where,
        ))  # fmt: skip
    return columns, rows


# -- sharing over time ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SharingRow:
    period: str
    source_agency: str
    audience: str
    deliveries: int
    subjects: int  # distinct subjects delivered about


def period_of(at: datetime, by: str) -> str:
    if by == "month":
        return f"{at.year:04d}-{at.month:02d}"
    if by == "quarter":
        return f"{at.year:04d}-Q{(at.month - 1) // 3 + 1}"
    return f"{at.year:04d}"


def _periods(first: str, last: str, by: str) -> list[str]:
    """Every period from ``first`` to ``last``, so a month without sharing shows as 0."""
    if by == "year":
        return [f"{y:04d}" for y in range(int(first), int(last) + 1)]
    per_year = 12 if by == "month" else 4

    def index(period: str) -> int:
        year, part = period.split("-")
        return int(year) * per_year + int(part.lstrip("Q")) - 1

    out = []
    for i in range(index(first), index(last) + 1):
        year, part = divmod(i, per_year)
        out.append(f"{year:04d}-{part + 1:02d}" if by == "month" else f"{year:04d}-Q{part + 1}")
    return out


def sharing(
    store: EntryQuery,
    *,
    by: str = "month",
    since: datetime | None = None,
    until: datetime | None = None,
    agency: str | None = None,
) -> list[SharingRow]:
    """Deliveries per (source agency, audience) pair per period, every period from the first
    to the last delivery (0 where a pair shared nothing), ordered by pair then period."""
    if by not in PERIODS:
        raise InputError(f"--by {by!r} (expected one of {', '.join(PERIODS)})")
    counts: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    subjects: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    seen: set[str] = set()
    for stored in _all(store, kind="delivered", since=since, until=until, agency=agency):
        e = stored.entry
        period = period_of(e.at, by)
        pair = (e.source_agency or "", e.audience or "")
        counts[pair][period] += 1
        if e.subject_ref:
            subjects[(*pair, period)].add(e.subject_ref)
        seen.add(period)
    if not seen:
        return []
    periods = _periods(min(seen), max(seen), by)
    rows = []
    for source, audience in sorted(counts):
        for period in periods:
            n = counts[(source, audience)].get(period, 0)
            people = len(subjects.get((source, audience, period), ()))
            rows.append(SharingRow(period, source, audience, n, people))
    return rows


def sharing_table(rows: Sequence[SharingRow]) -> Table:
    """Per pair and period, with the change from the pair's previous period."""
    out: list[tuple[str, ...]] = []
    previous: dict[tuple[str, str], int] = {}
    for row in rows:
        pair = (row.source_agency, row.audience)
        change = "" if pair not in previous else f"{row.deliveries - previous[pair]:+d}"
        previous[pair] = row.deliveries
        out.append((row.period, row.source_agency, row.audience, str(row.deliveries),
                    str(row.subjects), change))  # fmt: skip
    return ("period", "source_agency", "audience", "deliveries", "subjects", "change"), out


def sharing_totals(rows: Sequence[SharingRow]) -> Table:
    """All partners together, per period."""
    totals: dict[str, list[int]] = {}
    for row in rows:
        total = totals.setdefault(row.period, [0, 0])
        total[0] += row.deliveries
        total[1] += row.deliveries > 0
    return ("period", "deliveries", "active pairs"), [
        (period, str(n), str(pairs)) for period, (n, pairs) in sorted(totals.items())
    ]


# -- export ------------------------------------------------------------------------------------

_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def to_csv(data: Table) -> str:
    """CSV text; a cell that a spreadsheet would run as a formula gets a leading apostrophe."""
    columns, rows = data
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["'" + cell if cell.startswith(_FORMULA) else cell for cell in row])
    return out.getvalue()
