"""Tools for the people who own the agreements (``hub policy check|explain|matrix|diff``).

- :func:`check`: every problem in ``policies/`` (empty list: all good).
- :func:`explain`: for one event and one audience, the decision and each field's treatment and
  the clause responsible; :func:`explain_text` renders it. :func:`event_from_json` reads an event
  written as JSON (timestamps and dates as ISO-8601 text).
- :func:`matrix`: who may see what, by data class (the rows of REQUIREMENTS §3.4) or by event
  type, per audience; :func:`matrix_text` and :func:`matrix_html` render it.
- :func:`diff`: what agreements B newly share or stop sharing compared with A, per event type,
  audience and field; :func:`diff_text` renders it.

Matrix cells: ``F`` every field of some event of the row is shared as is; ``S`` some fields, or
transformed; ``C`` only under consent-based clauses (``S/C``, ``F/C``: statutory and more with
consent); ``–`` forbidden; blank: no clause. Cells ignore conditions (cohort, referral,
supervision...): a cell says what an audience may receive when a clause's conditions hold.
"""

from __future__ import annotations

import datetime as dt
import decimal
import html
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub.domain.errors import InputError
from hub.policy import (
    AgreementSet,
    Decision,
    MemoryState,
    PolicyState,
    collect,
    evaluate,
)
from hub.policy.agreements import Candidate, expand_event_types
from hub.serde.catalogue import Catalogue

DATA_CLASSES: dict[str, tuple[str, ...]] = {
    "Identity and contact": ("person.*",),
    "Offence history and intelligence": (
        "police.arrest",
        "police.charge",
        "court.*",
        "outcome.reoffence_recorded",
    ),
    "CORVUS score and cost of crime": ("police.priority_score_updated",),
    "Release date, release address, custody": ("custody.*",),
    "Licence conditions": ("licence.*",),
    "Supervision and breaches": ("supervision.*",),
    "Risk-of-harm level": ("assessment.risk_of_harm",),
    "MAPPA detail": ("mappa.*",),
    "Victim identity and contact": ("victim.*",),
    "Health and needs": ("assessment.needs", "outcome.drug_service_engaged"),
    "Mentoring contacts (notes)": ("mentoring.contact",),
    "Mentoring summary and plan": ("mentoring.closed", "mentor.assigned", "plan.*"),
    "LCP enrolment, attendance, completion": ("lcp.*",),
    "Pathway outcomes": (
        "outcome.housing_application_made",
        "outcome.housing_secured",
        "outcome.employment_started",
        "outcome.training_started",
    ),
    "Referrals": ("referral.*",),
    "IOM cohort and cross-border": ("iom.*", "cross_border.*"),
    "Helpline calls": ("helpline.*",),
    "Disclosures": ("disclosure.*",),
    "Documents": ("document.*",),
    "Consent records": ("consent.*",),
    "Safety House file and plan": ("sh.*", "mayor.*"),
    "NL Aftercare and routes": ("aftercare.*", "route.*"),
    "NL extremism case": ("assessment.extremism_risk",),
    "Research extracts": ("research.*",),
    "Organisations and corrections": ("org.*", "record.*", "mentor.training_recorded"),
}
_TREATMENT = {
    "keep": "kept",
    "drop": "withheld",
    "mask": "masked",
    "generalise": "generalised",
    "pseudonymise": "pseudonymised",
    "summarise": "summarised",
}
_OPENNESS = {"drop": 0, "pseudonymise": 1, "summarise": 2, "generalise": 2, "mask": 2, "keep": 3}


def check(root: Path | None = None, catalogue: Catalogue | None = None) -> list[str]:
    """Every problem in the agreements under ``root`` (default: the repository's policies/)."""
    return collect(root, catalogue)[1]


# ---------------------------------------------------------------------------------------------
# explain
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExplainRow:
    field: str
    treatment: str  # kept, withheld, masked, generalised, pseudonymised, summarised
    clause: str  # the clause responsible ("" when nothing is delivered)
    note: str = ""


def explain(
    event: Mapping[str, Any],
    audience: str,
    agreements: AgreementSet,
    state: PolicyState | None = None,
) -> tuple[Decision, list[ExplainRow]]:
    """The decision for ``event`` and ``audience`` and, per field, what happens to it and why.

    With no ``state`` an empty in-memory state is used (conditions about consent, cohorts,
    referrals and supervision then fail, as they would for a stranger). The event is applied to
    the state first, as the router does."""
    if state is None:
        state = MemoryState(agreements.catalogue)
    if "envelope" in event and event["envelope"].get("event_id"):
        state.apply_event(event)
    decision = evaluate(event, audience, state, agreements)
    event_type = event.get("envelope", {}).get("event_type", "")
    rows: list[ExplainRow] = []
    if not decision.permitted:
        paths = agreements.fields_of(event_type) if event_type in agreements.catalogue else {}
        for name in paths:
            rows.append(ExplainRow(name, "withheld", "", f"{decision.effect}: nothing delivered"))
        return decision, rows
    permit = agreements.clause(decision.clause_ids[0])[1]
    forbids = [agreements.clause(c)[1] for c in decision.clause_ids[1:]]
    for path, rule in decision.fields.items():
        parent = path.rpartition(".")[0]
        if parent and decision.fields.get(parent) != "keep":
            continue
        clause, note = permit.id, ""
        named = path in permit.fields
        if rule == "drop":
            by = next((f for f in forbids if _covers(f.fields, path)), None)
            if by is not None:
                clause, note = by.id, f"field-level forbid: {by.description}"
            elif not named:
                note = "not named by the clause (default: withheld)"
        elif not named and "." not in path and "*" in permit.fields:
            note = "the clause's default (*)"
        if rule == "summarise" and path in decision.summaries:
            note = f"summary: {json.dumps(decision.summaries[path].as_dict(), sort_keys=True)}"
        rows.append(ExplainRow(path, _TREATMENT[rule], clause, note))
    subject = event["envelope"]["subject"]
    own = (
        state.local_identifier_for(decision.subject, decision.audience_agency)
        if decision.subject and decision.audience_agency and decision.person_level
        else None
    )
    how = (
        "the source's own id (not a person)"
        if not decision.person_level
        else f"{decision.audience_agency}'s own {own[0]}"
        if own
        else "an audience-specific pseudonym (hub_pseudonym)"
    )
    rows.append(ExplainRow("envelope.subject.local_id", "transformed", permit.id, how))
    granted = [
        i["scheme"]
        for i in subject.get("identifiers") or ()
        if i["scheme"] in decision.grants_identifiers
    ]
    withheld = [
        i["scheme"]
        for i in subject.get("identifiers") or ()
        if i["scheme"] not in decision.grants_identifiers
    ]
    if granted:
        rows.append(
            ExplainRow(
                "envelope.subject.identifiers", "kept", permit.id, "granted: " + ", ".join(granted)
            )
        )
    if withheld:
        rows.append(
            ExplainRow(
                "envelope.subject.identifiers",
                "withheld",
                permit.id,
                "not granted: " + ", ".join(withheld),
            )
        )
    return decision, rows


def _covers(fields: Mapping[str, str], path: str) -> bool:
    return any(path == p or path.startswith(p + ".") for p in fields)


def explain_text(decision: Decision, rows: Iterable[ExplainRow]) -> str:
    lines = [
        f"{decision.event_type} -> {decision.audience}: {decision.effect.upper()}",
        f"  {decision.reason}",
    ]
    if decision.permitted:
        lines.append(
            f"  agreement {decision.agreement_id} v{decision.agreement_version}, clause "
            f"{decision.clause_id}; purpose: {decision.purpose}; legal basis: "
            f"{decision.legal_basis}; {'consent-based (' + str(decision.consent_scope) + ')' if decision.consent_based else 'not consent-based'}; "  # noqa: E501
            f"keep until {decision.retention_until}"
        )
    for error in decision.errors:
        lines.append(f"  error: {error}")
    rows = list(rows)
    if rows:
        width = max(len(r.field) for r in rows)
        lines.append("")
        for r in rows:
            note = f"  ({r.note})" if r.note else ""
            lines.append(f"  {r.field.ljust(width)}  {r.treatment:<13} {r.clause}{note}")
    return "\n".join(lines) + "\n"


def event_from_json(data: Mapping[str, Any] | str | Path, catalogue: Catalogue) -> dict[str, Any]:
    """An event written as JSON (a mapping, JSON text or a file) as the engine sees it: ISO-8601
    timestamps and dates become datetimes and dates, fields left out become null (or their
    schema default)."""
    if isinstance(data, Path):
        data = data.read_text(encoding="utf-8")
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise InputError(f"event: not valid JSON: {exc}") from exc
    if not isinstance(data, Mapping) or not isinstance(data.get("envelope"), Mapping):
        raise InputError("event: expected a JSON object with an 'envelope'")
    event_type = data["envelope"].get("event_type")
    if not isinstance(event_type, str) or event_type not in catalogue:
        raise InputError(f"event: envelope.event_type: unknown event type {event_type!r}")
    schema = catalogue.schema(event_type)
    try:
        return _from_json(schema, data, {}, "")
    except (TypeError, ValueError, decimal.InvalidOperation) as exc:
        raise InputError(f"event: {exc}") from exc


def _from_json(schema: Any, value: Any, named: dict[str, Any], path: str) -> Any:
    if isinstance(schema, list):
        if value is None:
            return None
        branches = [b for b in schema if b != "null"]
        return _from_json(branches[0], value, named, path) if len(branches) == 1 else value
    if isinstance(schema, str):
        return _from_json(named[schema], value, named, path) if schema in named else value
    kind = schema.get("type")
    if kind == "record":
        named[schema["name"]] = schema
        if not isinstance(value, Mapping):
            raise TypeError(f"{path or 'event'}: expected an object")
        fields = {f["name"]: f for f in schema["fields"]}
        unknown = sorted(set(value) - set(fields))
        if unknown:
            raise ValueError(f"{path + '.' if path else ''}{unknown[0]}: not a field")
        out = {}
        for name, f in fields.items():
            sub = f"{path}.{name}" if path else name
            if name in value:
                out[name] = _from_json(f["type"], value[name], named, sub)
            else:
                _register(f["type"], named)
                out[name] = f.get("default")
        return out
    if kind in ("enum", "fixed"):
        named[schema["name"]] = schema
        return value
    if value is None:
        return None
    if kind == "array":
        return [_from_json(schema["items"], v, named, f"{path}[{i}]") for i, v in enumerate(value)]
    if kind == "map":
        return {k: _from_json(schema["values"], v, named, path) for k, v in value.items()}
    logical = schema.get("logicalType")
    if logical == "timestamp-millis":
        instant = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        if instant.tzinfo is None:
            raise ValueError(f"{path}: timestamp {value!r} needs a time zone (e.g. Z)")
        return instant
    if logical == "date":
        return dt.date.fromisoformat(str(value))
    if logical == "decimal":
        return decimal.Decimal(str(value)).quantize(decimal.Decimal(1).scaleb(-schema["scale"]))
    return value


def _register(schema: Any, named: dict[str, Any]) -> None:
    """Remember the named types a field defines even when the field is left out."""
    if isinstance(schema, list):
        for branch in schema:
            _register(branch, named)
    elif isinstance(schema, dict):
        if schema.get("type") in ("record", "enum", "fixed"):
            named.setdefault(schema["name"], schema)
            for f in schema.get("fields", []):
                _register(f["type"], named)
        elif schema.get("type") == "array":
            _register(schema["items"], named)
        elif schema.get("type") == "map":
            _register(schema["values"], named)


# ---------------------------------------------------------------------------------------------
# matrix
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MatrixCell:
    row: str  # data class or event type
    audience: str
    cell: str  # F, S, C, S/C, F/C, – (blank cells are not listed)
    clauses: tuple[str, ...]
    conditions: tuple[str, ...] = ()


def _unconditional_forbid(candidate: Candidate) -> bool:
    clause = candidate.clause
    return (
        clause.effect == "forbid"
        and not clause.field_forbid
        and clause.conditions == type(clause.conditions)()
        and clause.compartment is None
    )


def _reach_by_source(agreements: AgreementSet) -> dict[tuple[str, str, str], dict[str, Any]]:
    """(event type, source, audience) -> the permits that survive unconditional forbids."""
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    for key, candidates in agreements.entries():
        entry = out.setdefault(key, {"permits": [], "forbids": set(), "field_forbids": []})
        blocking = [c for c in candidates if _unconditional_forbid(c)]
        if blocking:
            entry["forbids"].update(c.clause.id for c in blocking)
            continue
        for c in candidates:
            if c.clause.effect == "permit":
                entry["permits"].append(c)
            elif c.clause.field_forbid and c.clause.conditions == type(c.clause.conditions)():
                entry["field_forbids"].append(c)
    return out


def _reach(agreements: AgreementSet) -> dict[tuple[str, str], dict[str, Any]]:
    """(event type, audience) -> the surviving permits and the forbids, over every source."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for (event_type, _source, audience), entry in _reach_by_source(agreements).items():
        merged = out.setdefault((event_type, audience), {"permits": [], "forbids": set()})
        merged["permits"] += entry["permits"]
        merged["forbids"] |= entry["forbids"]
    return out


def _cell(permits: list[Candidate], forbids: set[str]) -> str:
    def breadth(cands: list[Candidate]) -> str:
        if not cands:
            return ""
        return "F" if any(_is_full(c) for c in cands) else "S"

    statutory = breadth([c for c in permits if not c.clause.consent_based])
    consent = [c for c in permits if c.clause.consent_based]
    if statutory and consent:
        return f"{statutory}/C"
    if statutory:
        return statutory
    if consent:
        return "C"
    return "–" if forbids else ""


def _is_full(candidate: Candidate) -> bool:
    return all(rule == "keep" for rule in candidate.fields.values())


def matrix(agreements: AgreementSet, by: str = "data_class") -> list[MatrixCell]:
    """Who may see what: one cell per (data class or event type, audience) that some clause
    names. ``by`` is ``data_class`` (the rows of REQUIREMENTS §3.4) or ``event_type``."""
    if by not in ("data_class", "event_type"):
        raise InputError(f"matrix by {by!r} (expected data_class or event_type)")
    reach = _reach(agreements)
    known = agreements.catalogue.event_types()
    if by == "event_type":
        groups = {t: [t] for t in known}
    else:
        groups = {
            name: expand_event_types(patterns, known) for name, patterns in DATA_CLASSES.items()
        }
        covered = {t for types in groups.values() for t in types}
        for t in known:
            if t not in covered:
                groups.setdefault("Other", []).append(t)
    cells: list[MatrixCell] = []
    for row, types in groups.items():
        for audience in agreements.audiences():
            permits: list[Candidate] = []
            forbids: set[str] = set()
            for t in types:
                entry = reach.get((t, audience))
                if entry:
                    permits += entry["permits"]
                    forbids |= entry["forbids"]
            cell = _cell(permits, forbids)
            if not cell:
                continue
            clauses = tuple(sorted({c.clause.id for c in permits} | forbids))
            conditions = tuple(
                sorted(
                    {
                        f"{c.clause.id}: {'; '.join(c.clause.conditions.describe())}"
                        for c in permits
                        if c.clause.conditions.describe()
                    }
                    | {
                        f"{c.clause.id}: consent {c.clause.consent_scope}"
                        for c in permits
                        if c.clause.consent_based
                    }
                )
            )
            cells.append(MatrixCell(row, audience, cell, clauses, conditions))
    return cells


def _grid(agreements: AgreementSet, by: str) -> tuple[list[str], list[str], dict]:
    cells = matrix(agreements, by)
    rows = list(dict.fromkeys(c.row for c in cells))
    audiences = [a for a in agreements.audiences() if any(c.audience == a for c in cells)]
    return rows, audiences, {(c.row, c.audience): c for c in cells}


LEGEND = (
    "F full; S some fields or transformed; C consent-based only; S/C, F/C statutory plus "
    "more with consent; – forbidden; blank: no clause (default deny)"
)


def matrix_text(agreements: AgreementSet, by: str = "data_class") -> str:
    rows, audiences, grid = _grid(agreements, by)
    width = max([len(r) for r in rows] + [8])
    columns = [max(len(a), 3) for a in audiences]
    header = (
        " " * width
        + " | "
        + " | ".join(a.ljust(w) for a, w in zip(audiences, columns, strict=True))
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        values = [
            (grid[(row, a)].cell if (row, a) in grid else "").ljust(w)
            for a, w in zip(audiences, columns, strict=True)
        ]
        lines.append(row.ljust(width) + " | " + " | ".join(values))
    lines += ["", LEGEND, f"agreements digest {agreements.digest}"]
    return "\n".join(lines) + "\n"


def matrix_html(agreements: AgreementSet, by: str = "data_class") -> str:
    rows, audiences, grid = _grid(agreements, by)
    e = html.escape
    head = "".join(f'<th scope="col">{e(a)}</th>' for a in audiences)
    body = []
    for row in rows:
        tds = []
        for a in audiences:
            cell = grid.get((row, a))
            if cell is None:
                tds.append("<td></td>")
                continue
            title = "\n".join([f"clauses: {', '.join(cell.clauses)}", *cell.conditions])
            css = {"–": "forbid", "C": "consent"}.get(cell.cell, "share")
            tds.append(f'<td class="{css}" title="{e(title)}">{e(cell.cell)}</td>')
        body.append(f'<tr><th scope="row">{e(row)}</th>{"".join(tds)}</tr>')
    agreements_list = "".join(
        f"<li>{e(a.id)} v{e(a.version)}: {e(a.title)} ({e(a.jurisdiction)}, from "
        f"{a.valid_from}{' to ' + str(a.valid_to) if a.valid_to else ''})</li>"
        for a in agreements.agreements()
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>Who may see what</title><style>"
        "table{border-collapse:collapse;font:13px sans-serif}th,td{border:1px solid #ccc;"
        "padding:3px 6px;text-align:center}th[scope=row]{text-align:left}"
        ".forbid{background:#f4cccc}.consent{background:#fff2cc}.share{background:#d9ead3}"
        "</style></head><body><h1>Who may see what</h1>"
        f"<p>{e(LEGEND)}. Hover a cell for its clauses and conditions.</p>"
        f"<table><thead><tr><th></th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
        f"<h2>Agreements</h2><ul>{agreements_list}</ul>"
        f"<p>agreements digest <code>{e(agreements.digest)}</code></p></body></html>\n"
    )


# ---------------------------------------------------------------------------------------------
# diff
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiffRow:
    event_type: str
    source: str
    audience: str
    field: str  # a payload path, or "(conditions)"
    before: str  # best rule in A ("" when A delivers nothing)
    after: str
    change: str  # newly shares | stops sharing | changes


def _sharing(agreements: AgreementSet) -> dict[tuple[str, str, str], dict[str, Any]]:
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    for key, entry in _reach_by_source(agreements).items():
        fields: dict[str, str] = {}
        for candidate in entry["permits"]:
            withheld = [p for f in entry["field_forbids"] for p in f.clause.fields]
            for path, rule in candidate.fields.items():
                if any(path == w or path.startswith(w + ".") for w in withheld):
                    rule = "drop"
                current = fields.get(path)
                if current is None or _OPENNESS[rule] > _OPENNESS[current]:
                    fields[path] = rule
        terms = sorted(
            {
                f"{c.clause.id}: "
                + "; ".join(
                    c.clause.conditions.describe()
                    + ([f"consent {c.clause.consent_scope}"] if c.clause.consent_based else [])
                )
                for c in entry["permits"]
            }
        )
        out[key] = {"fields": fields, "terms": terms}
    return out


def diff(a: AgreementSet, b: AgreementSet) -> list[DiffRow]:
    """What B newly shares or stops sharing compared with A, per event type, source agency,
    audience and field (the most open rule any permit gives), and where conditions changed."""
    before, after = _sharing(a), _sharing(b)
    rows: list[DiffRow] = []
    for key in sorted(set(before) | set(after)):
        event_type, source, audience = key
        old = before.get(key, {"fields": {}, "terms": []})
        new = after.get(key, {"fields": {}, "terms": []})
        for path in sorted(set(old["fields"]) | set(new["fields"])):
            x, y = old["fields"].get(path, "drop"), new["fields"].get(path, "drop")
            if x == y:
                continue
            if x == "drop":
                change = "newly shares"
            elif y == "drop":
                change = "stops sharing"
            else:
                change = "changes"
            rows.append(
                DiffRow(
                    event_type,
                    source,
                    audience,
                    path,
                    x if path in old["fields"] else "",
                    y if path in new["fields"] else "",
                    change,
                )
            )
        if old["terms"] != new["terms"] and old["fields"] and new["fields"]:
            rows.append(
                DiffRow(
                    event_type,
                    source,
                    audience,
                    "(conditions)",
                    " | ".join(old["terms"]),
                    " | ".join(new["terms"]),
                    "changes",
                )
            )
    return rows


def diff_text(rows: Iterable[DiffRow]) -> str:
    rows = list(rows)
    if not rows:
        return "no change in what any audience may receive\n"
    lines = []
    for r in rows:
        arrow = f"{r.before or '-'} -> {r.after or '-'}"
        lines.append(
            f"{r.change:<14} {r.event_type} from {r.source} -> {r.audience}: {r.field} ({arrow})"
        )
    return "\n".join(lines) + "\n"


__all__ = [
    "DATA_CLASSES",
    "DiffRow",
    "ExplainRow",
    "MatrixCell",
    "check",
    "diff",
    "diff_text",
    "event_from_json",
    "explain",
    "explain_text",
    "matrix",
    "matrix_html",
    "matrix_text",
]
