"""MALS' own vocabulary and the hub's reference codes, both ways.

MALS staff pick these labels from drop-downs in their client database; the hub's events carry the
codes of ``schemas/reference/*.yaml``. A label that is not here is an error naming the table,
row, column and value (the row waits in the outbox until it is fixed); it is never guessed.
``tests/unit/test_mals_codes.py`` checks every code below against the reference lists.
"""

from __future__ import annotations

from collections.abc import Mapping

# -- outbound: MALS label -> hub code -----------------------------------------------------------

CONTACT_MODES = {  # sessions.mode -> contact_modes
    "Face to face": "face_to_face",
    "Telephone": "telephone",
    "Email": "email",
    "Letter": "letter",
    "Group": "group",
    "Home visit": "home_visit",
    "Gym/activity": "gym_or_activity",
    "Office": "office_activity",
    "Prison visit": "prison_in_reach",
    "Gate pick-up": "gate_meeting",
}

PATHWAYS = {  # sessions.pathways, referrals.pathways (";"-separated) <-> pathways
    "Accommodation": "accommodation",
    "ETE": "education_training_employment",
    "Health": "health",
    "Drugs/alcohol": "drugs_alcohol",
    "Finance": "finance_benefit_debt",
    "Family": "children_families",
    "Attitudes": "attitudes_thinking_behaviour",
}

LCP_THEMES = {  # lcp_attendance.theme -> lcp_session_themes
    "Communication": "communication",
    "Values and Beliefs": "values_and_beliefs",
    "Making a Change": "making_a_change",
    "CV and interview technique": "cv_and_interview",
    "Market Place": "market_place",
    "Judgement and Respect": "judgement_and_respect",
    "Victim Awareness": "victim_awareness",
    "Offender Behaviour": "offender_behaviour",
    "Communication and Teamwork": "communication_and_teamwork",
    "Respect": "respect",
    "Goal setting": "goal_setting",
    "Restorative justice": "restorative_justice",
    "Team building": "team_building",
    "Work experience": "work_experience",
    "Graduation": "graduation",
}

PERIODS = {"AM": "am", "PM": "pm", "Full day": "full_day", "Evening": "evening"}

ABSENCE_REASONS = {  # lcp_attendance.absence_reason -> absence_reasons
    "Ill": "illness",
    "Legal visit": "legal_visit",
    "Regime": "prison_regime",
    "Transferred": "transferred",
    "Released": "released",
    "Refused": "refused",
    "Work": "work",
    "Unknown": "unknown",
}

CONSENT_SCOPES = {  # consent.scope -> consent_scopes
    "Share progress with OM": "share_progress_with_om",
    "Share progress with IOM": "share_progress_with_iom",
    "Share support needs with OM": "share_support_needs_with_om",
    "Research": "research",
    "Family contact": "family_contact",
    "Programme participation": "programme_participation",
}

CONSENT_METHODS = {"Written": "written", "Verbal": "verbal_recorded", "Electronic": "electronic"}

EMPLOYMENT_TYPES = {  # outcomes.category for Employment -> employment_types
    "Full-time": "full_time",
    "Part-time": "part_time",
    "Trial": "trial_position",
    "Contract": "job_contract",
    "Placement": "work_placement",
    "Self-employed": "self_employment",
    "Social enterprise": "social_enterprise",
}

HOUSING_TYPES = {  # outcomes.category for Housing -> housing_types
    "Social rent": "social_rent",
    "Private rent": "private_rent",
    "Supported": "supported_housing",
    "Family home": "family_home",
    "Hostel": "hostel",
}

OUTCOME_EVENTS = {  # outcomes.outcome_type -> event type
    "Employment": "outcome.employment_started",
    "Training": "outcome.training_started",
    "Housing": "outcome.housing_secured",
    "Housing application": "outcome.housing_application_made",
    "Drug service": "outcome.drug_service_engaged",
    "LCP graduation": "lcp.completed",
}

# -- inbound: hub code -> MALS label (referrals) ------------------------------------------------

PROGRAMMES_IN = {"mentoring": "Mentoring", "lcp": "LCP"}
RISK_LEVELS_IN = {"low": "Low", "medium": "Medium", "high": "High", "very_high": "Very high"}
PATHWAYS_IN = {code: label for label, code in PATHWAYS.items()}

# The lists a test checks against schemas/reference (mapping, reference list).
OUTBOUND: tuple[tuple[Mapping[str, str], str], ...] = (
    (CONTACT_MODES, "contact_modes"),
    (PATHWAYS, "pathways"),
    (LCP_THEMES, "lcp_session_themes"),
    (PERIODS, "session_periods"),
    (ABSENCE_REASONS, "absence_reasons"),
    (CONSENT_SCOPES, "consent_scopes"),
    (CONSENT_METHODS, "consent_methods"),
    (EMPLOYMENT_TYPES, "employment_types"),
    (HOUSING_TYPES, "housing_types"),
)
INBOUND: tuple[tuple[Mapping[str, str], str], ...] = (
    (PROGRAMMES_IN, "referral_programmes"),
    (RISK_LEVELS_IN, "risk_levels"),
    (PATHWAYS_IN, "pathways"),
)


class UnknownLabel(ValueError):
    """A MALS value with no hub code: names where it is and what would be accepted."""


def to_code(mapping: Mapping[str, str], value: str, where: str) -> str:
    try:
        return mapping[value]
    except KeyError:
        accepted = ", ".join(repr(k) for k in mapping)
        message = f"{where}: {value!r} is not a known value (expected {accepted})"
        raise UnknownLabel(message) from None


def split_labels(text: str | None) -> list[str]:
    """MALS keeps lists as ``"Accommodation; Health"``."""
    return [part.strip() for part in (text or "").split(";") if part.strip()]


def join_labels(labels: list[str]) -> str:
    return "; ".join(labels)
