"""Turning view data into what a page shows: labels, dates, the status sections and the tasks.

A status value the audience may not see is null in the view, and the status's ``withheld`` map
names the clause that withheld it: such a line reads "withheld (clause X)", never a blank.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_TIMESTAMP = re.compile(r"^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2})(:\d{2}(\.\d+)?)?Z$")

# What a status section shows: (key in the status, label). A volunteer mentor sees only the
# sections about meeting their mentee safely (DESIGN decision 3); the view already holds only
# what the mentor clauses deliver, this keeps the page to it even if that ever widened.
SECTIONS: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "custody": ("Custody", (
        ("status", "Status"), ("since", "Since"), ("establishment", "Establishment"),
        ("reason", "Reason"), ("expected_release_date", "Expected release"),
        ("release_date", "Release date"), ("release_type", "Release type"),
        ("at_liberty", "At liberty"), ("recall_type", "Recall type"),
    )),
    "licence": ("Licence", (
        ("status", "Status"), ("start", "Start"), ("end", "End"),
        ("life_licence", "Life licence"), ("varied_on", "Varied on"),
        ("conditions", "Conditions"), ("breaches", "Breaches"), ("last_breach", "Last breach"),
    )),
    "supervision": ("Supervision", (
        ("supervising_body", "Supervising body"), ("offender_manager", "Offender manager"),
        ("since", "Since"), ("until", "Until"), ("basis", "Basis"),
        ("mappa_managed", "MAPPA managed"), ("previous_body", "Previous body"),
    )),
    "risk": ("Risk", (
        ("level", "Risk level"), ("assessed_on", "Assessed on"), ("tool", "Tool"),
        ("next_review_date", "Next review"),
    )),
    "cohort": ("IOM cohort", (
        ("name", "Cohort"), ("status", "Status"), ("borough", "Borough"),
        ("priority_band", "Priority band"), ("entered_on", "Entered on"),
        ("exited_on", "Exited on"), ("exit_reason", "Exit reason"),
    )),
    "lcp": ("Life Change Programme", (
        ("stage", "Stage"), ("run_id", "Run"), ("counts", "Sessions and steps"),
    )),
    "needs": ("Pathway needs", (("assessed_on", "Assessed on"), ("items", "Needs"))),
}  # fmt: skip
MENTOR_SECTIONS = frozenset({"custody", "licence", "risk", "lcp"})
OPEN_REFERRAL = frozenset({"open", "screened", "accepted"})


@dataclass
class Line:
    label: str
    value: Any = None
    withheld_by: str | None = None


@dataclass
class Section:
    key: str
    title: str
    lines: list[Line] = field(default_factory=list)


@dataclass
class Task:
    what: str
    due: Any
    source: str


def label(name: str) -> str:
    """``first_meeting_place`` -> ``First meeting place``."""
    text = name.replace("_", " ").replace(".", " ").strip()
    return text[:1].upper() + text[1:]


def when(value: Any) -> str:
    """Dates and times as a practitioner reads them (times in UTC, said so)."""
    if isinstance(value, dt.datetime):
        value = value.astimezone(dt.UTC) if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return value.strftime("%Y-%m-%d %H:%M UTC")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, str):
        match = _TIMESTAMP.match(value)
        if match:
            return f"{match.group(1)} {match.group(2)} UTC"
    return "" if value is None else str(value)


def _present(value: Any) -> bool:
    if value is None or value == [] or value == {}:
        return False
    if isinstance(value, Mapping):
        return any(_present(v) for v in value.values())
    return True


def status_sections(status: Mapping[str, Any] | None, *, mentor: bool) -> list[Section]:
    if not status:
        return []
    withheld: Mapping[str, str] = status.get("withheld") or {}
    out = []
    for key, (title, lines) in SECTIONS.items():
        if mentor and key not in MENTOR_SECTIONS:
            continue
        section = Section(key, title)
        data = status.get(key) or {}
        for name, text in lines:
            value = data.get(name)
            if key == "licence" and name == "breaches" and not value:
                continue
            path = f"{key}.{name}"
            clause = withheld.get(path) or next(
                (c for p, c in withheld.items() if p.startswith(path + ".")), None
            )
            if _present(value):
                section.lines.append(Line(text, value))
            elif clause:
                section.lines.append(Line(text, None, clause))
        if section.lines:
            out.append(section)
    return out


def referrals(status: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Every referral the view knows of, the open ones first."""
    known = (status or {}).get("referrals") or {}
    items = [{"referral_id": rid, **entry} for rid, entry in known.items()]
    return sorted(items, key=lambda r: (r.get("status") not in OPEN_REFERRAL, r["referral_id"]))


def plans(status: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    out = []
    for plan_id, plan in sorted(((status or {}).get("plans") or {}).items()):
        milestones = [{"milestone_id": mid, **m} for mid, m in sorted(plan["milestones"].items())]
        out.append({"plan_id": plan_id, **plan, "milestones": milestones})
    return out


def tasks(status: Mapping[str, Any] | None, agency: str, *, mentor: bool) -> list[Task]:
    """What is waiting on someone: plan milestones not yet achieved, reviews that are due, and
    (for practitioners) open referrals addressed to the user's own agency."""
    if not status:
        return []
    out: list[Task] = []
    for plan in plans(status):
        for m in plan["milestones"]:
            if m.get("status") != "achieved":
                what = m.get("description") or m["milestone_id"]
                out.append(Task(f"Milestone: {what}", m.get("due_date"), f"plan {plan['plan_id']}"))
        if plan.get("next_review_date"):
            out.append(Task("Plan review", plan["next_review_date"], f"plan {plan['plan_id']}"))
    risk = status.get("risk") or {}
    if risk.get("next_review_date"):
        out.append(Task("Risk review", risk["next_review_date"], risk.get("tool") or "assessment"))
    if not mentor:
        for r in referrals(status):
            if r.get("status") in OPEN_REFERRAL and r.get("receiving_org") == agency:
                out.append(Task(f"Referral {r['referral_id']} ({r.get('status')})",
                                r.get("since"), r.get("programme") or "referral"))  # fmt: skip
    return sorted(out, key=lambda t: (t.due is None, str(t.due or ""), t.what))
