"""Realistic delivered records for one audience, shaped as the codec decodes them, deterministic
per seed: for the view benchmark and the view tests (which also encode them, so they are checked
against the schemas).

Each subject is keyed by its audience-local id (so its records share a partition), events arrive
in time order per subject, about one in six has a field withheld, and a few are corrections of an
earlier event of the same subject or retractions of one.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Callable
from typing import Any

BASE = dt.datetime(2014, 6, 1, 9, 0, tzinfo=dt.UTC)
NAMESPACE = uuid.UUID("0c5bdf52-7a4e-4d31-9a5e-6f3f0a2b9d11")
SOURCE = {
    "custody": ("hmp_liverpool", "nomis"),
    "licence": ("probation_nps", "ndelius"),
    "supervision": ("probation_crc", "ndelius"),
    "assessment": ("probation_crc", "oasys"),
    "iom": ("police", "niche"),
    "referral": ("probation_crc", "ndelius"),
    "mentoring": ("mals", "mals-db"),
    "lcp": ("mals", "mals-db"),
    "outcome": ("mals", "mals-db"),
    "plan": ("mals", "mals-db"),
}


def _contact(rng: random.Random, organisation: str) -> dict[str, Any]:
    n = rng.randrange(1, 40)
    return {
        "organisation": organisation,
        "role": "offender_manager",
        "name": f"Officer {n}",
        "phone": f"0151 000 {n:04d}",
        "email": f"om{n}@example.org",
    }


def _date(at: dt.datetime, days: int = 0) -> dt.date:
    return (at + dt.timedelta(days=days)).date()


def _condition(rng: random.Random, n: int) -> dict[str, Any]:
    kind = rng.choice(("reside_at", "curfew", "exclusion_zone", "report_to_om", "drug_testing"))
    return {
        "condition_id": f"c{n}",
        "condition_type": kind,
        "summary": f"{kind.replace('_', ' ')} condition",
        "details": None,
        "reside_at": None,
        "named_associates": None,
        "exclusion_area": "Kirkby" if kind == "exclusion_zone" else None,
        "exclusion_zone_geometry": None,
        "curfew_from": "19:00" if kind == "curfew" else None,
        "curfew_until": "07:00" if kind == "curfew" else None,
        "victim_related": False,
    }


Payload = Callable[[random.Random, dt.datetime], dict[str, Any]]

PAYLOADS: dict[str, Payload] = {
    "custody.received": lambda r, at: {
        "received_at": at,
        "establishment": "HMP Liverpool",
        "reason": r.choice(("sentenced", "remanded", "recalled")),
        "expected_release_date": _date(at, r.randrange(30, 400)),
    },
    "custody.release_scheduled": lambda r, at: {
        "release_date": _date(at, r.randrange(1, 60)),
        "release_type": r.choice(("on_licence", "end_of_sentence")),
        "establishment": "HMP Liverpool",
        "supervising_body": "probation_crc",
    },
    "custody.released": lambda r, at: {
        "released_at": at,
        "release_type": r.choice(("on_licence", "home_detention_curfew", "end_of_sentence")),
        "establishment": "HMP Liverpool",
        "at_liberty": True,
        "supervising_body": r.choice(("probation_crc", "probation_nps")),
        "offender_manager": _contact(r, "probation_crc"),
        "supervision_end_date": _date(at, 365),
    },
    "licence.conditions_set": lambda r, at: {
        "licence_start": _date(at),
        "licence_end": _date(at, 365),
        "life_licence": False,
        "conditions": [_condition(r, n) for n in range(r.randrange(1, 4))],
    },
    "licence.conditions_varied": lambda r, at: {
        "varied_on": _date(at),
        "conditions": [_condition(r, r.randrange(0, 5))],
        "removed_condition_ids": [f"c{r.randrange(0, 5)}"],
        "reason": "reviewed by the offender manager",
    },
    "supervision.breach_recorded": lambda r, at: {
        "breach_date": _date(at),
        "breach_type": r.choice(("curfew", "failure_to_attend", "residence")),
        "action_taken": "warning",
    },
    "supervision.recall": lambda r, at: {
        "recalled_on": _date(at),
        "recall_type": r.choice(("fixed_term", "standard")),
    },
    "supervision.responsibility_assigned": lambda r, at: {
        "supervising_body": r.choice(("probation_crc", "probation_nps")),
        "offender_manager": _contact(r, "probation_crc"),
        "basis": "licence",
        "effective_from": _date(at),
        "mappa_managed": r.random() < 0.2,
    },
    "supervision.responsibility_transferred": lambda r, at: {
        "from_body": "probation_crc",
        "to_body": "probation_nps",
        "effective_from": _date(at),
        "reason": r.choice(("risk_level_changed", "relocation", "reallocation")),
        "new_offender_manager": _contact(r, "probation_nps"),
    },
    "assessment.risk_of_harm": lambda r, at: {
        "assessed_on": _date(at),
        "risk_level": r.choice(("low", "medium", "high", "very_high")),
        "tool": "OASys",
        "next_review_date": _date(at, 90),
    },
    "assessment.needs": lambda r, at: {
        "assessed_on": _date(at),
        "needs": [
            {
                "pathway": r.choice(("accommodation", "drugs_alcohol", "finance_benefit_debt")),
                "need_code": r.choice(("debt", "drug_dependency", "mental_health_support")),
                "summary": "identified at assessment",
                "clinical_detail": None,
                "support_arranged": r.choice((None, "referred")),
            }
            for _ in range(r.randrange(1, 3))
        ],
    },
    "iom.cohort_entered": lambda r, at: {
        "cohort": "knowsley_iom",
        "borough": "knowsley",
        "selection_method": "matrix_score",
        "priority_band": r.choice(("high", "medium", "low")),
        "entry_date": _date(at),
    },
    "iom.cohort_exited": lambda r, at: {
        "cohort": "knowsley_iom",
        "exit_date": _date(at),
        "exit_reason": r.choice(("desisted", "deselected", "moved_borough")),
    },
    "referral.created": lambda r, at: {
        "referral_id": f"ref-{r.randrange(3)}",
        "programme": r.choice(("mentoring", "lcp")),
        "referred_on": _date(at),
        "referrer_org": "probation_crc",
        "receiving_org": "mals",
        "pathways": ["accommodation"],
        "reason": "support on release",
    },
    "referral.accepted": lambda r, at: {
        "referral_id": f"ref-{r.randrange(3)}",
        "accepted_on": _date(at),
    },
    "referral.declined": lambda r, at: {
        "referral_id": f"ref-{r.randrange(3)}",
        "declined_on": _date(at),
        "reason": r.choice(("no_capacity", "declined_by_person")),
    },
    "mentoring.contact": lambda r, at: {
        "contact_id": f"mc-{r.randrange(10**9)}",
        "contact_at": at,
        "mode": r.choice(("face_to_face", "telephone")),
        "duration_minutes": r.randrange(15, 120),
        "pathways": ["accommodation"],
        "notes": "met in town",
    },
    "mentoring.closed": lambda r, at: {
        "closed_on": _date(at),
        "reason": r.choice(("completed", "disengaged")),
        "sessions_total": r.randrange(1, 30),
    },
    "lcp.session_attended": lambda r, at: {
        "run_id": "lcp-2014-1",
        "session_number": r.randrange(1, 12),
        "session_date": _date(at),
        "theme": r.choice(("communication", "values_and_beliefs", "making_a_change")),
    },
    "lcp.enrolled": lambda r, at: {"run_id": "lcp-2014-1", "enrolled_on": _date(at)},
    "lcp.completed": lambda r, at: {
        "run_id": "lcp-2014-1",
        "completed_on": _date(at),
        "certificate_awarded": True,
    },
    "outcome.employment_started": lambda r, at: {
        "employment_type": r.choice(("full_time", "part_time")),
        "started_on": _date(at),
        "employer": "Knowsley Works",
    },
    "outcome.housing_secured": lambda r, at: {
        "housing_type": r.choice(("social_rent", "supported_housing")),
        "secured_on": _date(at),
    },
    "plan.life_change_created": lambda r, at: {
        "plan_id": "plan-1",
        "start_date": _date(at),
        "milestones": [
            {
                "milestone_id": f"m{n}",
                "description": f"milestone {n}",
                "pathway": "accommodation",
                "due_date": _date(at, 30 * n),
                "status": "planned",
                "achieved_on": None,
            }
            for n in range(1, 3)
        ],
        "lead_org": "mals",
    },
    "plan.milestone_achieved": lambda r, at: {
        "plan_id": "plan-1",
        "milestone_id": f"m{r.randrange(1, 3)}",
        "achieved_on": _date(at),
    },
}
EVENT_TYPES = tuple(PAYLOADS)
# fields a clause may withhold, per event type (optional ones only)
WITHHOLDABLE = {
    "custody.released": ("offender_manager", "supervising_body"),
    "assessment.risk_of_harm": ("tool", "next_review_date"),
    "mentoring.contact": ("notes",),
    "referral.created": ("reason", "pathways"),
    "assessment.needs": ("assessed_by",),
}


def _envelope(
    event_id: str, event_type: str, at: dt.datetime, subject: tuple[str, str]
) -> dict[str, Any]:
    agency, system = SOURCE.get(event_type.split(".")[0], ("hub", "router"))
    return {
        "event_id": event_id,
        "event_type": event_type,
        "schema_version": 1,
        "occurred_at": at,
        "recorded_at": at + dt.timedelta(minutes=5),
        "effective_date": None,
        "source_agency": agency,
        "source_system": system,
        "jurisdiction": "UK-ENG",
        "subject": {
            "local_id_scheme": subject[0],
            "local_id": subject[1],
            "identifiers": [],
            "hub_subject_id": None,
        },
        "supersedes_event_id": None,
        "correction_reason": None,
        "sensitivity": "standard",
        "compartment": None,
        "consent_ref": None,
        "responsible_org": None,
    }


def _disclosure(audience: str, withheld: list[str], consent_based: bool) -> dict[str, Any]:
    return {
        "audience": audience,
        "agreement_id": "merseyside-iom-isa",
        "agreement_version": "2014.1",
        "clause_id": "c3-mals-summaries" if consent_based else "c1-statutory",
        "purpose": "reducing reoffending",
        "legal_basis": "consent" if consent_based else "Crime and Disorder Act 1998 s.115",
        "consent_based": consent_based,
        "withheld": withheld,
        "transformed": [],
        "retention_until": dt.date(2021, 6, 1),
    }


def sample_deliveries(
    n: int,
    *,
    audience: str = "mals",
    seed: int = 0,
    subjects: int | None = None,
    corrections: float = 0.03,
    retractions: float = 0.02,
    merges: float = 0.0,
) -> list[dict[str, Any]]:
    """``n`` delivered records (events, corrections, retractions) for ``audience``; with
    ``merges``, that share of identity merges (``identity.subject_merged`` of one subject into
    another), a third of which are retracted later (S8)."""
    rng = random.Random(seed)
    count = subjects or max(1, n // 25)
    keys = [
        ("mals_client_id", f"MC{i:06d}") if i % 3 else ("hub_pseudonym", f"{i:064x}")
        for i in range(count)
    ]
    clock = {key: BASE + dt.timedelta(days=rng.randrange(0, 200)) for key in keys}
    delivered: dict[tuple[str, str], list[dict[str, Any]]] = {key: [] for key in keys}
    out: list[dict[str, Any]] = []
    merged: list[dict[str, Any]] = []
    for i in range(n):
        key = rng.choice(keys)
        clock[key] += dt.timedelta(hours=rng.randrange(1, 24 * 20))
        at = clock[key]
        event_id = str(uuid.uuid5(NAMESPACE, f"{seed}/{i}"))
        earlier = delivered[key]
        roll = rng.random()
        if merges and roll > 1 - merges:
            if merged and rng.random() < 1 / 3:
                out.append(_unmerge(event_id, at, merged.pop(rng.randrange(len(merged)))))
                continue
            into = rng.choice([k for k in keys if k != key] or [key])
            record = {
                "envelope": _envelope(event_id, "identity.subject_merged", at, into),
                "merged_local_id_scheme": key[0],
                "merged_local_id": key[1],
                "cause_event_id": str(uuid.uuid5(NAMESPACE, f"{seed}/{i}/cause")),
                "disclosure": None,
            }
            merged.append(record)
            out.append(record)
            continue
        if earlier and roll < retractions:
            target = rng.choice(earlier)
            record: dict[str, Any] = {
                "envelope": _envelope(event_id, "delivery.retracted", at, key),
                "retracted_event_id": target["envelope"]["event_id"],
                "reason": rng.choice(("consent_withdrawn", "link_retracted", "superseded")),
                "clause_id": target["disclosure"]["clause_id"],
                "cause_event_id": str(uuid.uuid5(NAMESPACE, f"{seed}/{i}/cause")),
                "disclosure": None,
            }
            out.append(record)
            continue
        if earlier and roll < retractions + corrections:
            original = rng.choice(earlier)
            event_type = original["envelope"]["event_type"]
        else:
            original = None
            event_type = rng.choice(EVENT_TYPES)
        record = {"envelope": _envelope(event_id, event_type, at, key)}
        record.update(PAYLOADS[event_type](rng, at))
        withheld: list[str] = []
        if event_type in WITHHOLDABLE and rng.random() < 0.5:
            withheld = [rng.choice(WITHHOLDABLE[event_type])]
            for name in withheld:
                record[name] = None
        if original is not None:
            record["envelope"]["supersedes_event_id"] = original["envelope"]["event_id"]
            record["envelope"]["correction_reason"] = "keying_error"
        record["disclosure"] = _disclosure(
            audience, withheld, event_type.split(".")[0] in ("mentoring", "lcp", "outcome")
        )
        earlier.append(record)
        out.append(record)
    return out


def _unmerge(event_id: str, at: dt.datetime, merge: dict[str, Any]) -> dict[str, Any]:
    """The hub's retraction of a merge record (the link was wrong)."""
    subject = merge["envelope"]["subject"]
    return {
        "envelope": _envelope(
            event_id, "delivery.retracted", at, (subject["local_id_scheme"], subject["local_id"])
        ),
        "retracted_event_id": merge["envelope"]["event_id"],
        "reason": "link_retracted",
        "clause_id": None,
        "cause_event_id": None,
        "disclosure": None,
    }
