"""A subject's current status, folded from its timeline: ``derive_status(rows) -> dict``.

The fold is a pure left fold over the subject's remaining timeline rows in ``(occurred_at,
event_id)`` order, so a correction or a retraction gives the right status by recomputing, with no
special cases. The result is plain JSON data with every key always present (the same rows always
give the same bytes).

What each event type does (payload field names from ``schemas/events``):

- custody: ``custody.received`` (in custody), ``custody.release_scheduled`` (release scheduled),
  ``custody.released`` (released; also the supervising body and offender manager it names, and a
  licence when the release type is one), ``supervision.recall`` (recalled, licence revoked).
- licence: ``licence.conditions_set`` (replaces the conditions), ``licence.conditions_varied``
  (upserts by ``condition_id`` and removes ``removed_condition_ids``),
  ``supervision.breach_recorded`` (counts breaches).
- supervision: ``supervision.responsibility_assigned`` and ``...transferred``.
- risk: ``assessment.risk_of_harm``. cohort: ``iom.cohort_entered`` / ``iom.cohort_exited``.
- referrals: ``referral.created`` / ``screened`` / ``accepted`` / ``declined``; ``mentoring.closed``
  closes the open referrals received by the closing agency.
- lcp: a count per ``lcp.*`` event type, the latest run and the stage reached.
- needs: the latest ``assessment.needs``; outcomes: one entry per ``outcome.*`` event.
- plans: ``plan.life_change_created``, ``plan.milestone_set``, ``plan.milestone_achieved``.

A status value taken from a field the audience may not see is null, and ``withheld`` maps the
status path to the clause that withheld it (until a later event supplies the value).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

LICENCE_RELEASES = frozenset({"on_licence", "home_detention_curfew", "early_release"})
OPEN_REFERRAL = frozenset({"open", "screened", "accepted"})
LCP_STAGES = {
    "lcp.nominated": "nominated",
    "lcp.eligibility_evaluated": "eligibility_evaluated",
    "lcp.enrolled": "enrolled",
    "lcp.completed": "completed",
    "lcp.withdrawn": "withdrawn",
    "lcp.graduate_invited_as_mentor": "graduate_invited_as_mentor",
}
OUTCOME_CODE = {
    "outcome.drug_service_engaged": ("engaged_on", "service"),
    "outcome.employment_started": ("started_on", "employment_type"),
    "outcome.housing_application_made": ("applied_on", "provider"),
    "outcome.housing_secured": ("secured_on", "housing_type"),
    "outcome.reoffence_recorded": ("offence_date", "offence_type"),
    "outcome.training_started": ("started_on", "course"),
}


class StatusInput(Protocol):
    """What the fold reads from a timeline row."""

    @property
    def event_id(self) -> str: ...

    @property
    def event_type(self) -> str: ...

    @property
    def source_agency(self) -> str: ...

    @property
    def fields(self) -> Mapping[str, Any]: ...

    @property
    def withheld_fields(self) -> Mapping[str, str]: ...


def empty_status() -> dict[str, Any]:
    return {
        "custody": {
            "status": None,
            "since": None,
            "establishment": None,
            "reason": None,
            "expected_release_date": None,
            "release_date": None,
            "release_type": None,
            "at_liberty": None,
            "recall_type": None,
        },
        "licence": {
            "status": None,
            "start": None,
            "end": None,
            "life_licence": None,
            "conditions": [],
            "varied_on": None,
            "breaches": 0,
            "last_breach": None,
        },
        "supervision": {
            "supervising_body": None,
            "offender_manager": None,
            "since": None,
            "basis": None,
            "until": None,
            "mappa_managed": None,
            "previous_body": None,
        },
        "risk": {"level": None, "assessed_on": None, "tool": None, "next_review_date": None},
        "cohort": {
            "name": None,
            "status": None,
            "borough": None,
            "priority_band": None,
            "entered_on": None,
            "exited_on": None,
            "exit_reason": None,
        },
        "referrals": {},
        "lcp": {"stage": None, "run_id": None, "counts": {}},
        "needs": {"assessed_on": None, "items": []},
        "outcomes": [],
        "plans": {},
        "withheld": {},
    }


class _Fold:
    """One step of the fold: reads ``row`` and writes into ``state``, tracking withheld paths."""

    def __init__(self, state: dict[str, Any], row: StatusInput) -> None:
        self.state = state
        self.row = row
        self.fields = row.fields
        self.withheld = row.withheld_fields

    def get(self, field: str) -> Any:
        return self.fields.get(field)

    def put(self, section: str, key: str, field: str) -> None:
        """``state[section][key] = row[field]``, recording or clearing that it was withheld."""
        self.state[section][key] = self.fields.get(field)
        if self.withheld or self.state["withheld"]:  # the path is built only when it can matter
            self.mark(f"{section}.{key}", field)

    def set(self, section: str, key: str, value: Any) -> None:
        self.state[section][key] = value
        if self.state["withheld"]:
            self.state["withheld"].pop(f"{section}.{key}", None)

    def mark(self, path: str, field: str) -> None:
        marks = self.state["withheld"]
        if not marks and not self.withheld:
            return
        for stale in [p for p in marks if p == path or p.startswith(path + ".")]:
            del marks[stale]
        for withheld, clause in self.withheld.items():
            if withheld == field:
                marks[path] = clause
            elif withheld.startswith(field + "."):
                marks[path + withheld[len(field) :]] = clause


def _custody_received(f: _Fold) -> None:
    f.set("custody", "status", "in_custody")
    f.put("custody", "since", "received_at")
    f.put("custody", "establishment", "establishment")
    f.put("custody", "reason", "reason")
    f.put("custody", "expected_release_date", "expected_release_date")
    for key in ("release_date", "release_type", "at_liberty", "recall_type"):
        f.set("custody", key, None)


def _custody_release_scheduled(f: _Fold) -> None:
    if f.state["custody"]["status"] in (None, "in_custody", "release_scheduled", "recalled"):
        f.set("custody", "status", "release_scheduled")
    f.put("custody", "release_date", "release_date")
    f.put("custody", "release_type", "release_type")
    f.put("custody", "establishment", "establishment")


def _custody_released(f: _Fold) -> None:
    f.set("custody", "status", "released")
    f.put("custody", "since", "released_at")
    f.put("custody", "establishment", "establishment")
    f.put("custody", "release_type", "release_type")
    f.put("custody", "at_liberty", "at_liberty")
    f.set("custody", "recall_type", None)
    if f.get("supervising_body") is not None or "supervising_body" in f.withheld:
        f.put("supervision", "supervising_body", "supervising_body")
    if f.get("offender_manager") is not None or "offender_manager" in f.withheld:
        f.put("supervision", "offender_manager", "offender_manager")
    if f.get("release_type") in LICENCE_RELEASES:
        f.set("licence", "status", "on_licence")
        if f.get("supervision_end_date") is not None:
            f.put("licence", "end", "supervision_end_date")


def _licence_conditions_set(f: _Fold) -> None:
    f.set("licence", "status", "on_licence")
    f.put("licence", "start", "licence_start")
    f.put("licence", "end", "licence_end")
    f.put("licence", "life_licence", "life_licence")
    f.put("licence", "conditions", "conditions")
    f.state["licence"]["conditions"] = _conditions(f.get("conditions") or [])
    f.set("licence", "varied_on", None)


def _licence_conditions_varied(f: _Fold) -> None:
    licence = f.state["licence"]
    removed = set(f.get("removed_condition_ids") or ())
    kept = [c for c in licence["conditions"] if c.get("condition_id") not in removed]
    changed = _conditions(f.get("conditions") or [])
    changed_ids = {c.get("condition_id") for c in changed if c.get("condition_id") is not None}
    kept = [c for c in kept if c.get("condition_id") not in changed_ids]
    licence["conditions"] = _conditions([*kept, *changed])
    f.mark("licence.conditions", "conditions")
    f.put("licence", "varied_on", "varied_on")
    if licence["status"] is None:
        f.set("licence", "status", "on_licence")


def _conditions(items: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """By condition id (those without one last), then by content: the content is compared only
    when two share an id (or both have none), which gives the same order as always comparing it."""
    conditions = sorted((dict(c) for c in items), key=_condition_id)
    keys = [_condition_id(c) for c in conditions]
    if any(a == b for a, b in zip(keys, keys[1:], strict=False)):
        conditions.sort(key=lambda c: (*_condition_id(c), _content(c)))
    return conditions


def _condition_id(condition: Mapping[str, Any]) -> tuple[bool, str]:
    return (condition.get("condition_id") is None, condition.get("condition_id") or "")


def _content(condition: Mapping[str, Any]) -> str:
    return json.dumps(condition, sort_keys=True, default=str)


def _breach(f: _Fold) -> None:
    licence = f.state["licence"]
    licence["breaches"] += 1
    licence["last_breach"] = {
        "date": f.get("breach_date"),
        "type": f.get("breach_type"),
        "action_taken": f.get("action_taken"),
        "event_id": f.row.event_id,
    }


def _recall(f: _Fold) -> None:
    f.set("custody", "status", "recalled")
    f.put("custody", "since", "recalled_on")
    f.put("custody", "recall_type", "recall_type")
    f.set("licence", "status", "recalled")


def _responsibility_assigned(f: _Fold) -> None:
    f.put("supervision", "supervising_body", "supervising_body")
    f.put("supervision", "offender_manager", "offender_manager")
    f.put("supervision", "since", "effective_from")
    f.put("supervision", "basis", "basis")
    f.put("supervision", "until", "supervision_end")
    f.put("supervision", "mappa_managed", "mappa_managed")
    f.set("supervision", "previous_body", None)


def _responsibility_transferred(f: _Fold) -> None:
    f.put("supervision", "supervising_body", "to_body")
    f.put("supervision", "offender_manager", "new_offender_manager")
    f.put("supervision", "since", "effective_from")
    f.put("supervision", "previous_body", "from_body")


def _risk(f: _Fold) -> None:
    f.put("risk", "level", "risk_level")
    f.put("risk", "assessed_on", "assessed_on")
    f.put("risk", "tool", "tool")
    f.put("risk", "next_review_date", "next_review_date")


def _cohort_entered(f: _Fold) -> None:
    f.put("cohort", "name", "cohort")
    f.set("cohort", "status", "in_cohort")
    f.put("cohort", "borough", "borough")
    f.put("cohort", "priority_band", "priority_band")
    f.put("cohort", "entered_on", "entry_date")
    f.set("cohort", "exited_on", None)
    f.set("cohort", "exit_reason", None)


def _cohort_exited(f: _Fold) -> None:
    if f.get("cohort") is not None or "cohort" in f.withheld:
        f.put("cohort", "name", "cohort")
    f.set("cohort", "status", "exited")
    f.put("cohort", "exited_on", "exit_date")
    f.put("cohort", "exit_reason", "exit_reason")


def _referral(status: str, date_field: str) -> Callable[[_Fold], None]:
    def step(f: _Fold) -> None:
        referral_id = f.get("referral_id")
        if referral_id is None:
            return
        referrals = f.state["referrals"]
        entry = referrals.get(referral_id)
        if entry is None:
            entry = referrals[referral_id] = {
                "programme": None,
                "receiving_org": None,
                "referred_on": None,
                "status": None,
                "since": None,
            }
        if status == "open":
            entry["programme"] = f.get("programme")
            entry["receiving_org"] = f.get("receiving_org")
            entry["referred_on"] = f.get("referred_on")
        elif f.get("programme") is not None:
            entry["programme"] = f.get("programme")
        entry["status"] = status
        entry["since"] = f.get(date_field)

    return step


def _mentoring_closed(f: _Fold) -> None:
    for entry in f.state["referrals"].values():
        if entry["status"] in OPEN_REFERRAL and entry["receiving_org"] == f.row.source_agency:
            entry["status"] = "closed"
            entry["since"] = f.get("closed_on")


def _lcp(f: _Fold) -> None:
    lcp = f.state["lcp"]
    kind = f.row.event_type.removeprefix("lcp.")
    lcp["counts"][kind] = lcp["counts"].get(kind, 0) + 1
    stage = LCP_STAGES.get(f.row.event_type)
    if stage is not None:
        lcp["stage"] = stage
    if f.get("run_id") is not None:
        lcp["run_id"] = f.get("run_id")


def _needs(f: _Fold) -> None:
    f.put("needs", "assessed_on", "assessed_on")
    items = [{k: v for k, v in item.items() if v is not None} for item in f.get("needs") or ()]
    f.state["needs"]["items"] = items
    f.mark("needs.items", "needs")


def _outcome(f: _Fold) -> None:
    date_field, code_field = OUTCOME_CODE[f.row.event_type]
    f.state["outcomes"].append(
        {
            "event_id": f.row.event_id,
            "outcome": f.row.event_type.removeprefix("outcome."),
            "on": f.get(date_field),
            "code": f.get(code_field),
        }
    )


def _milestone(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: item.get(k) for k in ("description", "pathway", "due_date", "status", "achieved_on")}


def _plan(f: _Fold, plan_id: str) -> dict[str, Any]:
    plans = f.state["plans"]
    if plan_id not in plans:
        plans[plan_id] = {
            "start_date": None,
            "lead_org": None,
            "next_review_date": None,
            "milestones": {},
        }
    plan: dict[str, Any] = plans[plan_id]
    return plan


def _milestone_key(plan: Mapping[str, Any], item: Mapping[str, Any]) -> str:
    key = item.get("milestone_id")
    return str(key) if key is not None else f"#{len(plan['milestones']) + 1}"


def _plan_created(f: _Fold) -> None:
    plan_id = f.get("plan_id")
    if plan_id is None:
        return
    plan = _plan(f, plan_id)
    plan["start_date"] = f.get("start_date")
    plan["lead_org"] = f.get("lead_org")
    plan["next_review_date"] = f.get("next_review_date")
    for item in f.get("milestones") or ():
        plan["milestones"][_milestone_key(plan, item)] = _milestone(item)


def _milestone_set(f: _Fold) -> None:
    plan_id, item = f.get("plan_id"), f.get("milestone")
    if plan_id is None or item is None:
        return
    plan = _plan(f, plan_id)
    plan["milestones"][_milestone_key(plan, item)] = _milestone(item)


def _milestone_achieved(f: _Fold) -> None:
    plan_id, milestone_id = f.get("plan_id"), f.get("milestone_id")
    if plan_id is None or milestone_id is None:
        return
    plan = _plan(f, plan_id)
    milestone = plan["milestones"].setdefault(milestone_id, _milestone({}))
    milestone["status"] = "achieved"
    milestone["achieved_on"] = f.get("achieved_on")


STEPS: dict[str, Callable[[_Fold], None]] = {
    "custody.received": _custody_received,
    "custody.release_scheduled": _custody_release_scheduled,
    "custody.released": _custody_released,
    "licence.conditions_set": _licence_conditions_set,
    "licence.conditions_varied": _licence_conditions_varied,
    "supervision.breach_recorded": _breach,
    "supervision.recall": _recall,
    "supervision.responsibility_assigned": _responsibility_assigned,
    "supervision.responsibility_transferred": _responsibility_transferred,
    "assessment.risk_of_harm": _risk,
    "iom.cohort_entered": _cohort_entered,
    "iom.cohort_exited": _cohort_exited,
    "referral.created": _referral("open", "referred_on"),
    "referral.screened": _referral("screened", "screened_on"),
    "referral.accepted": _referral("accepted", "accepted_on"),
    "referral.declined": _referral("declined", "declined_on"),
    "mentoring.closed": _mentoring_closed,
    "assessment.needs": _needs,
    "plan.life_change_created": _plan_created,
    "plan.milestone_set": _milestone_set,
    "plan.milestone_achieved": _milestone_achieved,
    **{event_type: _lcp for event_type in (*LCP_STAGES, "lcp.session_attended",
                                           "lcp.session_missed", "lcp.work_experience_started")},
    **dict.fromkeys(OUTCOME_CODE, _outcome),
}  # fmt: skip

STATUS_EVENT_TYPES = frozenset(STEPS)


def derive_status(
    rows: Iterable[StatusInput], start: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Fold ``rows`` (already in timeline order) into a status; unknown event types pass.

    ``start`` is an earlier result, which the fold takes over and changes: folding more rows onto
    it gives what folding all the rows from the beginning gives, since the status holds the whole
    state of the fold.
    """
    state = start if start is not None else empty_status()
    for row in rows:
        step = STEPS.get(row.event_type)
        if step is not None:
            step(_Fold(state, row))
    return state


def open_referrals(status: Mapping[str, Any]) -> int:
    return sum(1 for r in status["referrals"].values() if r["status"] in OPEN_REFERRAL)
