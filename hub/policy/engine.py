"""``evaluate(event, audience, state, agreements) -> Decision``: may this audience see this event,
and in what form? Pure: the answer depends only on the event, the state and the agreements.

The rules, in the order they are checked:

1. The event must be routable at all, or it is **rejected** (to the DLQ, for every audience): a
   known source agency whose jurisdiction is the event's; a ``restricted-programme`` event must
   name a compartment, and a compartment must be named by some clause (DESIGN decision 2).
2. Hard limits, whatever the clauses say (**deny**): the audience's agency is in the event's
   jurisdiction (DESIGN decision 1); the source agency is in force on the day the event
   occurred and the audience's agency on that day or on the event's ``effective_date`` (a
   superseded agency neither sends nor receives events after its last day; a transfer published
   on 30 May and effective 1 June reaches the new body).
3. Clauses of agreements in force on the event's date that name the event type, the source
   agency and the audience, in the event's compartment (or none), whose conditions hold:
   - a whole-event **forbid** denies (and a forbid whose conditions cannot be evaluated denies);
   - a field-level forbid (a forbid naming fields) withholds those fields from any permit;
   - among the **permits** (a permit whose conditions cannot be evaluated is skipped), the one
     that reveals most wins (then the one granting more identifiers, statutory before
     consent-based, then by clause id). The loader makes permits that can match the same event
     and audience nested, so the winner covers every other match and removing a clause can
     never widen what an audience receives;
   - no permit: **deny** (default deny), with the reason each candidate clause failed.

A consent-based clause also needs its consent scope in force both when the event occurred and
when it was recorded (a fact recorded after a withdrawal is not shared, DESIGN decision 5).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hub.domain.errors import PolicyError
from hub.policy.agreements import AgreementSet, Candidate
from hub.policy.fields import (
    Plan,
    flatten,
    resolve_placeholders,
    summaries_of,
    withhold,
)
from hub.policy.model import Agency, Conditions, SummarySpec, frozen_map
from hub.policy.state import PolicyState

PERMIT, DENY, REJECT = "permit", "deny", "reject"
RESTRICTED = "restricted-programme"
# What a broken state lookup may raise; anything else (InfraError, ...) propagates.
_LOOKUP_ERRORS = (PolicyError, KeyError, TypeError, ValueError, AttributeError, IndexError)


@dataclass(frozen=True)
class Decision:
    """The answer for one event and one audience, with the reasons an auditor reads."""

    effect: str  # permit | deny | reject
    audience: str
    agreement_id: str | None = None
    agreement_version: str | None = None
    clause_ids: tuple[str, ...] = ()  # the deciding clause first, then field-level forbids
    purpose: str | None = None
    legal_basis: str | None = None
    consent_based: bool = False
    consent_scope: str | None = None
    retention_until: dt.date | None = None
    fields: Mapping[str, str] = field(default_factory=frozen_map)  # payload path -> rule
    errors: tuple[str, ...] = ()
    reason: str = ""
    event_id: str | None = None
    event_type: str | None = None
    subject: str | None = None  # hub subject id (permits only)
    audience_agency: str | None = None
    person_level: bool = True
    grants_identifiers: tuple[str, ...] = ()
    summaries: Mapping[str, SummarySpec] = field(default_factory=frozen_map)
    plan: Plan = field(default=(), repr=False, compare=False)

    @property
    def permitted(self) -> bool:
        return self.effect == PERMIT

    @property
    def clause_id(self) -> str | None:
        return self.clause_ids[0] if self.clause_ids else None

    @property
    def withheld(self) -> list[str]:
        """Paths delivered as null by rule (a dropped container's sub-fields are not listed)."""
        return [p for p, r in self.fields.items() if r == "drop" and _parent_kept(self.fields, p)]

    @property
    def transformed(self) -> list[tuple[str, str]]:
        """(path, rule) of every field delivered in a transformed form."""
        return [
            (p, r)
            for p, r in self.fields.items()
            if r not in ("keep", "drop") and _parent_kept(self.fields, p)
        ]


def _parent_kept(fields: Mapping[str, str], path: str) -> bool:
    parent = path.rpartition(".")[0]
    return not parent or fields.get(parent) == "keep"


class _ConditionError(Exception):
    pass


class _Context:
    """What the conditions of one evaluation look at; the subject is resolved on first use."""

    __slots__ = (
        "event",
        "envelope",
        "audience",
        "agency",
        "source",
        "at",
        "recorded",
        "day",
        "state",
        "_subject",
        "_seq",
    )

    def __init__(
        self,
        event: Mapping[str, Any],
        envelope: Mapping[str, Any],
        audience: str,
        agency: Agency,
        source: str,
        at: dt.datetime,
        day: dt.date,
        state: PolicyState,
    ) -> None:
        self.event = event
        self.envelope = envelope
        self.audience = audience
        self.agency = agency.id
        self.source = source
        self.at = at
        self.recorded = envelope.get("recorded_at")
        self.day = day
        self.state = state
        self._subject: str | None = None
        self._seq: int | None | bool = False

    @property
    def subject(self) -> str:
        if self._subject is None:
            try:
                self._subject = self.state.subject_of(self.event)
            except _LOOKUP_ERRORS as exc:
                raise _ConditionError(f"subject could not be resolved: {exc}") from exc
        return self._subject

    def ask(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """A state query as of this event's position (what was known when it was applied)."""
        try:
            if self._seq is False:
                self._seq = self.state.position(self.envelope["event_id"])
            return fn(*args, seq=self._seq, **kwargs)
        except _LOOKUP_ERRORS as exc:
            raise _ConditionError(f"{what} failed: {exc}") from exc


def values_at(value: Any, path: str) -> list[Any]:
    """The non-null values at a dotted path, through records and lists."""
    if isinstance(value, list):
        return [v for item in value for v in values_at(item, path)]
    if not path:
        return [] if value is None else [value]
    if not isinstance(value, Mapping):
        return []
    head, _, rest = path.partition(".")
    return values_at(value.get(head), rest)


def _failure(cond: Conditions, ctx: _Context) -> str | None:
    """None when every condition holds, else why not. Raises _ConditionError when a condition
    cannot be evaluated."""
    if cond.sensitivities:
        sensitivity = ctx.envelope.get("sensitivity")
        if sensitivity not in cond.sensitivities:
            return f"sensitivity {sensitivity!r} is not {'/'.join(cond.sensitivities)}"
    for path, allowed in cond.where:
        wanted = {
            ctx.agency if v == "$agency" else ctx.audience if v == "$audience" else v
            for v in allowed
        }
        found = values_at(ctx.event, path)
        if not any(v in wanted for v in found if isinstance(v, str | int | float | bool)):
            return f"{path} is {found[0] if len(found) == 1 else found!r}, not one of " + (
                ", ".join(str(v) for v in sorted(wanted, key=str))
            )
    if cond.addressed_to:
        if not any(ctx.agency in values_at(ctx.event, p) for p in cond.addressed_to):
            return f"not addressed to {ctx.agency} ({', '.join(cond.addressed_to)})"
    if cond.in_cohort is not None:
        member = ctx.ask("cohort lookup", ctx.state.in_cohort, ctx.subject, ctx.at)
        if member != cond.in_cohort:
            return f"subject {'not ' if cond.in_cohort else ''}in an IOM cohort on {ctx.day}"
    if cond.open_referral == "to_audience":
        if not ctx.ask("referral lookup", ctx.state.open_referral, ctx.subject, ctx.agency, ctx.at):
            return f"no open referral of the subject to {ctx.agency} on {ctx.day}"
    elif cond.open_referral == "from_audience":
        if not ctx.ask(
            "referral lookup",
            ctx.state.open_referral,
            ctx.subject,
            ctx.source,
            ctx.at,
            from_agency=ctx.agency,
        ):
            return f"no open referral of the subject from {ctx.agency} to {ctx.source} on {ctx.day}"
    if cond.supervisor:
        bodies = {ctx.agency if s == "audience" else s for s in cond.supervisor}
        body = ctx.ask("supervisor lookup", ctx.state.supervisor, ctx.subject, ctx.at)
        if body not in bodies:
            return (
                f"subject supervised by {body or 'no known body'} on {ctx.day}, not "
                f"{'/'.join(sorted(bodies))}"
            )
    if cond.mentor_assigned is not None:
        mentor = ctx.ask("mentor lookup", ctx.state.mentor_of, ctx.subject, ctx.at)
        assigned = mentor is not None and mentor[0] == ctx.agency
        if assigned != cond.mentor_assigned:
            return (
                f"{'no' if cond.mentor_assigned else 'a'} {ctx.agency} mentor assigned on {ctx.day}"
            )
    if cond.any_of:
        reasons: list[str] = []
        error: _ConditionError | None = None
        for option in cond.any_of:
            try:
                why = _failure(option, ctx)
            except _ConditionError as exc:
                error = exc
                continue
            if why is None:
                return None
            reasons.append(why)
        if error is not None:
            raise error
        return "none of: " + " | ".join(reasons)
    return None


def _consent_failure(scope: str, ctx: _Context) -> str | None:
    if not ctx.ask("consent lookup", ctx.state.consent_in_force, ctx.subject, scope, ctx.at):
        return f"no consent {scope!r} in force on {ctx.day}"
    recorded = ctx.recorded
    if isinstance(recorded, dt.datetime) and recorded > ctx.at:
        if not ctx.ask("consent lookup", ctx.state.consent_in_force, ctx.subject, scope, recorded):
            return f"consent {scope!r} no longer in force when the event was recorded"
    return None


def evaluate(
    event: Mapping[str, Any], audience: str, state: PolicyState, agreements: AgreementSet
) -> Decision:
    """Decide what ``audience`` may receive of ``event`` (see the module docs)."""
    try:
        envelope = event["envelope"]
        event_id = envelope["event_id"]
        event_type = envelope["event_type"]
        source = envelope["source_agency"]
        at = envelope["occurred_at"]
        jurisdiction = envelope["jurisdiction"]
        subject_block = envelope["subject"]
        if not isinstance(at, dt.datetime) or at.tzinfo is None:
            raise TypeError(f"occurred_at {at!r} is not a timezone-aware datetime")
    except (KeyError, TypeError) as exc:
        reason = f"malformed envelope: {exc}"
        return Decision(REJECT, audience, reason=reason, errors=(reason,))
    day = at.astimezone(dt.UTC).date()
    base: dict[str, Any] = {"event_id": event_id, "event_type": event_type}

    def reject(reason: str) -> Decision:
        return Decision(REJECT, audience, reason=reason, **base)

    def deny(
        reason: str, errors: tuple[str, ...] = (), clause_ids: tuple[str, ...] = ()
    ) -> Decision:
        return Decision(DENY, audience, reason=reason, errors=errors, clause_ids=clause_ids, **base)

    # 1. Is the event routable at all?
    if not agreements.has_agency(source):
        return reject(f"source agency {source!r} is not in policies/agencies.yaml")
    source_agency = agreements.agency(source)
    if jurisdiction != source_agency.jurisdiction:
        return reject(
            f"envelope.jurisdiction {jurisdiction!r} is not the jurisdiction of "
            f"{source} ({source_agency.jurisdiction})"
        )
    compartment = envelope.get("compartment")
    if envelope.get("sensitivity") == RESTRICTED and not compartment:
        return reject(
            "a restricted-programme event must name its compartment; rejected, "
            "never delivered (DESIGN decision 2)"
        )
    if compartment and compartment not in agreements.compartments():
        return reject(
            f"compartment {compartment!r} is named by no agreement: rejected, never "
            "delivered (DESIGN decision 2)"
        )

    # 2. Hard limits.
    if not agreements.has_audience(audience):
        return deny(f"unknown audience {audience!r}")
    agency = agreements.agency(agreements.agency_of_audience(audience))
    base["audience_agency"] = agency.id
    if agency.jurisdiction != jurisdiction:
        return deny(
            f"no event data crosses jurisdictions: the event is {jurisdiction}, {audience} "
            f"is {agency.jurisdiction}; only aggregates do (DESIGN decision 1)"
        )
    if not source_agency.in_force(day):
        return deny(f"source agency {source_agency.not_in_force_reason(day)}")
    effective = envelope.get("effective_date")
    if not agency.in_force(day) and not (
        isinstance(effective, dt.date) and agency.in_force(effective)
    ):
        return deny(f"audience agency {agency.not_in_force_reason(day)}")

    # 3. Clauses.
    candidates = agreements.candidates(event_type, source, audience)
    nothing = f"no clause of any agreement in force permits {event_type} to {audience}"
    if not candidates:
        return deny(nothing)
    ctx = _Context(event, envelope, audience, agency, source, at, day, state)
    permits: list[Candidate] = []
    field_forbids: list[Candidate] = []
    errors: list[str] = []
    failures: list[str] = []
    for candidate in candidates:
        agreement, clause = candidate.agreement, candidate.clause
        if not agreement.in_force(day):
            failures.append(f"{clause.id}: agreement {agreement.id} not in force on {day}")
            continue
        if clause.compartment != compartment:
            failures.append(
                f"{clause.id}: event compartment {compartment or 'none'}, clause "
                f"{clause.compartment or 'none'}"
            )
            continue
        try:
            why = _failure(clause.conditions, ctx)
            if why is None and clause.consent_based and clause.consent_scope:
                why = _consent_failure(clause.consent_scope, ctx)
        except _ConditionError as exc:
            error = f"{clause.id}: {exc}"
            if clause.effect == "forbid":
                return deny(
                    f"forbid clause {clause.id} could not be evaluated ({exc}); a forbid "
                    "that errors denies",
                    errors=(*errors, error),
                    clause_ids=(clause.id,),
                )
            errors.append(error)
            continue
        if why is not None:
            failures.append(f"{clause.id}: {why}")
            continue
        if clause.effect == "forbid":
            if clause.field_forbid:
                field_forbids.append(candidate)
                continue
            return deny(
                f"forbid clause {clause.id} ({clause.description})", tuple(errors), (clause.id,)
            )
        permits.append(candidate)

    if not permits:
        detail = f" ({'; '.join(failures + errors)})" if failures or errors else ""
        return deny(nothing + detail, tuple(errors))

    best = min(
        permits,
        key=lambda c: (
            -c.shared,
            -len(c.clause.grants_identifiers),
            c.clause.consent_based,
            c.clause.id,
        ),
    )
    clause, agreement = best.clause, best.agreement
    plan = best.plan
    fields, summaries = best.fields, best.summaries
    if best.placeholders or field_forbids:
        if best.placeholders:
            plan = resolve_placeholders(plan, audience, agency.id)
        for forbid in field_forbids:
            for path in forbid.clause.fields:
                plan = withhold(plan, path)
        fields, summaries = flatten(plan), summaries_of(plan)
    others = [c.clause.id for c in permits if c is not best]
    reason = (
        f"permitted by clause {clause.id} of {agreement.id} v{agreement.version}: "
        f"{clause.description}"
    )
    if others:
        reason += f" (also matched: {', '.join(others)})"
    if field_forbids:
        reason += "; fields withheld by " + ", ".join(
            f"forbid clause {f.clause.id} ({f.clause.description})" for f in field_forbids
        )
    try:
        subject = ctx.subject
    except _ConditionError as exc:
        return deny(f"{nothing}: {exc}", (*errors, str(exc)))
    schemes = agreements.person_schemes
    return Decision(
        effect=PERMIT,
        audience=audience,
        agreement_id=agreement.id,
        agreement_version=agreement.version,
        clause_ids=(clause.id, *(f.clause.id for f in field_forbids)),
        purpose=clause.purpose,
        legal_basis=clause.legal_basis,
        consent_based=clause.consent_based,
        consent_scope=clause.consent_scope,
        retention_until=clause.retention.until(day) if clause.retention else None,
        fields=fields,
        errors=tuple(errors),
        reason=reason,
        subject=subject,
        person_level=subject_block.get("local_id_scheme") in schemes,
        grants_identifiers=clause.grants_identifiers,
        summaries=summaries,
        plan=plan,
        **base,
    )
