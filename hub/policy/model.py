"""The agreements as data: agencies, agreements, clauses, conditions and field rules.

These are the loaded, checked form of ``policies/*.yaml`` (see :mod:`hub.policy.loader`). They are
frozen; the engine (:mod:`hub.policy.engine`) reads them and never changes them.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

RULES = ("keep", "drop", "mask", "generalise", "pseudonymise", "summarise")
AGENCY_KINDS = ("statutory", "associate", "voluntary")
EFFECTS = ("permit", "forbid")

AGENCY_ID = re.compile(r"[a-z][a-z0-9_]*")
AUDIENCE_ID = re.compile(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)*")
CLAUSE_ID = re.compile(r"[a-z0-9][a-z0-9_.-]*")
COMPARTMENT_ID = re.compile(r"[a-z][a-z0-9_]*")


def frozen_map(items: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    return MappingProxyType(dict(items or {}))


@dataclass(frozen=True)
class Retention:
    """How long an audience may keep what it receives: ISO-8601 ``P2Y6M10D`` or a day count."""

    years: int = 0
    months: int = 0
    days: int = 0

    def until(self, day: dt.date) -> dt.date:
        months = day.month - 1 + self.months + 12 * self.years
        year, month = day.year + months // 12, months % 12 + 1
        last = calendar.monthrange(year, month)[1]
        return dt.date(year, month, min(day.day, last)) + dt.timedelta(days=self.days)

    def text(self) -> str:
        parts = [(self.years, "Y"), (self.months, "M"), (self.days, "D")]
        return "P" + ("".join(f"{n}{u}" for n, u in parts if n) or "0D")


@dataclass(frozen=True)
class Agency:
    id: str
    name: str
    jurisdiction: str
    kind: str
    audiences: Mapping[str, str]  # audience id -> description
    valid_from: dt.date | None = None
    valid_to: dt.date | None = None  # last day in force
    superseded_by: tuple[str, ...] = ()
    description: str = ""

    def in_force(self, day: dt.date) -> bool:
        return (self.valid_from is None or self.valid_from <= day) and (
            self.valid_to is None or day <= self.valid_to
        )

    def not_in_force_reason(self, day: dt.date) -> str:
        if self.valid_from is not None and day < self.valid_from:
            return f"{self.id} is not in force on {day} (from {self.valid_from})"
        after = f"superseded by {', '.join(self.superseded_by)}" if self.superseded_by else "ended"
        return f"{self.id} is not in force on {day} ({after} after {self.valid_to})"


@dataclass(frozen=True)
class SummarySpec:
    """What ``summarise`` leaves of a field.

    - ``keep``: for a record, or a list of records, the sub-fields kept (the rest is null);
    - ``where``: for a list of records, only the items whose sub-field holds one of the values
      (``$agency`` stands for the audience's agency, ``$audience`` for the audience);
    - ``text``: for a text field, the fixed text delivered instead; for a list, a one-item list
      with the text, ``{count}`` replaced by the list's length.
    """

    keep: tuple[str, ...] = ()
    where: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    text: str | None = None

    def resolved(self, audience: str, agency: str) -> SummarySpec:
        if not any(v in ("$agency", "$audience") for _, vs in self.where for v in vs):
            return self
        subst = {"$agency": agency, "$audience": audience}
        where = tuple((k, tuple(subst.get(v, v) for v in vs)) for k, vs in self.where)
        return SummarySpec(self.keep, where, self.text)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.keep:
            out["keep"] = list(self.keep)
        if self.where:
            out["where"] = {k: list(v) for k, v in self.where}
        if self.text is not None:
            out["text"] = self.text
        return out


@dataclass(frozen=True)
class Conditions:
    """Conditions of a clause; all must hold (``any_of``: at least one of its sets must hold)."""

    in_cohort: bool | None = None
    open_referral: str | None = None  # "to_audience" | "from_audience"
    supervisor: tuple[str, ...] = ()  # agency ids; "audience" = the audience's agency
    mentor_assigned: bool | None = None
    addressed_to: tuple[str, ...] = ()  # payload paths naming the audience's agency
    where: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    sensitivities: tuple[str, ...] = ()
    any_of: tuple[Conditions, ...] = ()

    @property
    def needs_state(self) -> bool:
        return (
            self.in_cohort is not None
            or self.open_referral is not None
            or bool(self.supervisor)
            or self.mentor_assigned is not None
            or any(c.needs_state for c in self.any_of)
        )

    def describe(self) -> list[str]:
        """Short readable phrases, for the matrix and ``explain``."""
        out: list[str] = []
        if self.in_cohort is not None:
            out.append("in IOM cohort" if self.in_cohort else "not in IOM cohort")
        if self.open_referral == "to_audience":
            out.append("open referral to the audience")
        elif self.open_referral == "from_audience":
            out.append("open referral from the audience")
        if self.supervisor:
            out.append("supervised by " + "/".join(self.supervisor))
        if self.mentor_assigned is not None:
            out.append("mentor assigned" if self.mentor_assigned else "no mentor assigned")
        if self.addressed_to:
            out.append("addressed to the audience (" + ", ".join(self.addressed_to) + ")")
        for path, values in self.where:
            out.append(f"{path} in {list(values)}")
        if self.sensitivities:
            out.append("sensitivity " + "/".join(self.sensitivities))
        if self.any_of:
            out.append(" or ".join("(" + "; ".join(c.describe()) + ")" for c in self.any_of))
        return out


@dataclass(frozen=True)
class Clause:
    id: str
    agreement_id: str
    effect: str
    description: str
    event_types: tuple[str, ...]  # as written: exact types or "prefix.*"
    from_agencies: tuple[str, ...]  # agency ids or "*"
    to_audiences: tuple[str, ...]  # audience ids or "*"
    purpose: str
    legal_basis: str
    conditions: Conditions = Conditions()
    compartment: str | None = None
    fields: Mapping[str, str] = field(default_factory=frozen_map)  # path -> rule, "*" default
    summaries: Mapping[str, SummarySpec] = field(default_factory=frozen_map)
    retention: Retention | None = None
    consent_based: bool = False
    consent_scope: str | None = None
    grants_identifiers: tuple[str, ...] = ()
    index: int = 0  # position in its agreement, for messages

    @property
    def field_forbid(self) -> bool:
        """A forbid clause that names fields withholds those fields; one without denies."""
        return self.effect == "forbid" and bool(self.fields)


@dataclass(frozen=True)
class Agreement:
    id: str
    title: str
    version: str
    jurisdiction: str
    parties: tuple[str, ...]
    owner: str
    legal_basis: str
    purpose: str
    valid_from: dt.date
    valid_to: dt.date | None
    retention: Retention | None
    file: str
    clauses: tuple[Clause, ...] = field(default=())
    description: str = ""

    def in_force(self, day: dt.date) -> bool:
        return self.valid_from <= day and (self.valid_to is None or day <= self.valid_to)
