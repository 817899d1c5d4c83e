"""Merseyside Police: the nightly CORVUS export of IOM nominals (CSV) -> ``ingest.police``.

One row per nominal, the whole list every night. Each row stands for up to five events, each a
fact with its own entity (``MAPPING.md`` has every column and code):

- ``person.registered``          ``nominal/<id>/person`` (names, date of birth, gender, borough)
- ``person.address_changed``     ``nominal/<id>/address/<address_since>``
- ``police.priority_score_updated`` ``nominal/<id>/score/<score_date>``
- ``iom.cohort_entered``         ``nominal/<id>/cohort-entry/<iom_entry_date>``
- ``iom.cohort_exited``          ``nominal/<id>/cohort-exit/<iom_exit_date>``
- ``police.arrest``              ``nominal/<id>/arrest/<last_arrest_ref>``

Between nights, what is unchanged is skipped (the ledger); a nominal leaving the cohort has an exit
date and reason, which is a new fact (``iom.cohort_exited``); a corrected date of birth, score or
arrest outcome changes the content of an existing entity, which the framework publishes as a
correction (``supersedes_event_id``, reason ``keying_error``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from connectors.framework import (
    Column,
    Connector,
    CsvReader,
    Emit,
    Row,
    code_table,
    local_midnight,
)
from hub.publisher import subject

AGENCY = "police"
SOURCE_SYSTEM = "corvus"
ZONE = "Europe/London"



GENDERS = code_table(
    ("female", "male", "other", "not_stated"),
    M="male",
    F="female",
    X="other",
    U="not_stated",
    N="not_stated",
)
BANDS = code_table(("high", "medium", "low"), H="high", M="medium", L="low")
SELECTION = code_table(
    ("matrix_score", "manual_addition", "prolific_definition"),
    MATRIX="matrix_score",
    MANUAL="manual_addition",
    PROLIFIC="prolific_definition",
)
EXIT_REASONS = code_table(
    (
        "moved_out_of_force_area",
        "moved_borough",
        "deselected",
        "desisted",
        "long_term_custody",
        "deceased",
        "other",
    ),
    MOVED_FORCE="moved_out_of_force_area",
    MOVED_BOROUGH="moved_borough",
    DESELECTED="deselected",
    DESISTED="desisted",
    CUSTODY="long_term_custody",
    DECEASED="deceased",
    OTHER="other",
)
OFFENCES = code_table(
    (
        "manslaughter",
        "firearm_possession",
        "domestic_violence",
        "drug_possession",
        "drug_supply_intent",
        "public_order",
        "theft_from_vehicle",
        "theft_from_person",
        "theft_from_shop",
        "bicycle_theft",
        "vehicle_theft",
        "burglary",
        "bladed_article_possession",
        "abh",
        "common_assault",
        "robbery",
        "harassment",
        "receiving_stolen_goods",
        "vehicle_interference",
        "criminal_damage",
        "breach_of_licence",
        "breach_of_order",
        "serious_sexual",
        "serious_violent",
        "terrorism",
        "other",
    ),
    SHOPLIFTING="theft_from_shop",
    PWITS="drug_supply_intent",
    POCD="drug_possession",
    PO="public_order",
    ABH="abh",
    TFMV="theft_from_vehicle",
    TWOC="vehicle_theft",
    DV="domestic_violence",
)
OFFENCES["Breach of exclusion zone"] = "breach_of_order"  # Peter's case, REQUIREMENTS §2.3 B
OUTCOMES = code_table(
    (
        "charged",
        "released_no_further_action",
        "released_under_investigation",
        "bailed",
        "remanded",
        "recalled",
        "cautioned",
    ),
    NFA="released_no_further_action",
    RUI="released_under_investigation",
)
ADDRESS_KINDS = code_table(
    (
        "home",
        "family_home",
        "approved_premises",
        "hostel",
        "supported_housing",
        "night_shelter",
        "no_fixed_abode",
    ),
    AP="approved_premises",
    NFA="no_fixed_abode",
)

COLUMNS = (
    Column("nominal_id", aliases=("nominal", "nominal ref"), doc="CORVUS nominal id"),
    Column("pnc_id", required=False, aliases=("pnc", "pnc number")),
    Column("surname", aliases=("family_name",)),
    Column("forenames", aliases=("forename", "given_name")),
    Column("date_of_birth", required=False, aliases=("dob",)),
    Column("gender", required=False, aliases=("sex",)),
    Column("borough"),
    Column("created_on", doc="when the nominal was created in CORVUS"),
    Column("address_line1", required=False),
    Column("address_town", required=False),
    Column("postcode", required=False),
    Column("address_kind", required=False),
    Column("address_since", required=False),
    Column("priority_score", required=False, aliases=("score",)),
    Column("previous_score", required=False),
    Column("cost_of_crime", required=False),
    Column("score_date", required=False),
    Column("matrix_version", required=False),
    Column("priority_band", required=False, aliases=("band",)),
    Column("iom_cohort", aliases=("iom",), doc="Y when the nominal is in the IOM cohort"),
    Column("iom_selection", required=False),
    Column("iom_entry_date", required=False),
    Column("iom_exit_date", required=False),
    Column("iom_exit_reason", required=False),
    Column("last_arrest_ref", required=False),
    Column("last_arrest_at", required=False),
    Column("last_arrest_offence", required=False),
    Column("last_arrest_outcome", required=False),
)

_GROUPS = {  # a value in one column of a group needs the others
    "address": ("address_line1", "postcode", "address_since"),
    "score": ("priority_score", "cost_of_crime", "score_date", "matrix_version"),
    "arrest": ("last_arrest_ref", "last_arrest_at", "last_arrest_offence"),
}


def _group(row: Row, name: str) -> bool:
    """True when the row has the group's facts; notes the missing columns of a partial group."""
    columns = _GROUPS[name]
    present = [c for c in columns if row.get(c) is not None]
    for column in columns:
        if present and column not in present:
            row.error(column, f"is empty, but {present[0]} is given (the {name} needs "
                              f"{', '.join(columns)})")  # fmt: skip
    return bool(present)


def map_row(row: Row) -> Iterator[Emit]:
    nominal = row.text("nominal_id", required=True, max_len=40)
    pnc = row.text("pnc_id", max_len=40)
    forenames = row.text("forenames", required=True, max_len=100)
    surname = row.text("surname", max_len=100)
    dob = row.date("date_of_birth")
    gender = row.code("gender", GENDERS)
    borough = row.text("borough", required=True, max_len=60)
    created = row.date("created_on", required=True)
    band = row.code("priority_band", BANDS)
    in_cohort = row.flag("iom_cohort", required=True)
    events: list[tuple[str, str, Any, Mapping[str, Any], str]] = []
    # (event type, entity suffix, occurred at, payload, sensitivity)

    if _group(row, "address"):
        since = row.date("address_since")
        kind = row.code("address_kind", ADDRESS_KINDS) or "home"
        address = {
            "line1": row.text("address_line1", max_len=200),
            "line2": None,
            "town": row.text("address_town", max_len=100),
            "postcode": row.text("postcode", max_len=10),
            "area": borough,
            "country": "GB",
            "kind": kind,
        }
        if since:
            events.append(
                (
                    "person.address_changed",
                    f"address/{since}",
                    local_midnight(since, ZONE),
                    {"address": address, "effective_from": since},
                    "standard",
                )
            )

    if _group(row, "score"):
        score_date = row.date("score_date")
        payload: Mapping[str, Any] = {
            "score": row.integer("priority_score", low=0, high=100_000),
            "cost_of_crime": row.money("cost_of_crime"),
            "score_date": score_date,
            "matrix_version": row.text("matrix_version", max_len=40),
            "borough": borough,
            "priority_band": band,
            "previous_score": row.integer("previous_score", low=0, high=100_000),
        }
        if score_date:
            events.append(
                (
                    "police.priority_score_updated",
                    f"score/{score_date}",
                    local_midnight(score_date, ZONE),
                    payload,
                    "intelligence",
                )
            )

    entry = row.date("iom_entry_date")
    exit_ = row.date("iom_exit_date")
    selection = row.code("iom_selection", SELECTION)
    exit_reason = row.code("iom_exit_reason", EXIT_REASONS)
    if in_cohort and entry is None:
        row.error("iom_entry_date", "is empty, but iom_cohort is Y")
    if in_cohort and entry and exit_ and exit_ >= entry:
        row.error(
            "iom_exit_date",
            f"{exit_} is on or after iom_entry_date {entry}, but iom_cohort "
            "is Y (a re-entry needs a later iom_entry_date)",
        )
    if in_cohort is False and entry and (exit_ is None or exit_ < entry):
        row.error(
            "iom_exit_date",
            "is empty or before iom_entry_date, but iom_cohort is N "
            "(a nominal leaving the cohort needs the date and reason)",
        )
    if exit_ and entry is None:
        row.error("iom_entry_date", "is empty, but iom_exit_date is given")
    if exit_ and exit_reason is None:
        row.error("iom_exit_reason", "is empty, but iom_exit_date is given")
    cohort = f"{'_'.join(borough.casefold().split())}_iom" if borough else None
    if entry:
        if selection is None:
            row.error("iom_selection", "is empty, but iom_entry_date is given")
        events.append(
            (
                "iom.cohort_entered",
                f"cohort-entry/{entry}",
                local_midnight(entry, ZONE),
                {
                    "cohort": cohort,
                    "borough": borough,
                    "selection_method": selection,
                    "entry_date": entry,
                },
                "standard",
            )
        )
    if exit_:
        events.append(
            (
                "iom.cohort_exited",
                f"cohort-exit/{exit_}",
                local_midnight(exit_, ZONE),
                {
                    "cohort": cohort,
                    "borough": borough,
                    "exit_date": exit_,
                    "exit_reason": exit_reason,
                },
                "standard",
            )
        )

    if _group(row, "arrest"):
        ref = row.text("last_arrest_ref", max_len=40)
        at = row.datetime("last_arrest_at", ZONE)
        payload = {
            "arrested_at": at,
            "force": AGENCY,
            "offence_type": row.code("last_arrest_offence", OFFENCES),
            "area": borough,
            "outcome": row.code("last_arrest_outcome", OUTCOMES),
        }
        if at:
            events.append(("police.arrest", f"arrest/{ref}", at, payload, "standard"))

    if row.errors or nominal is None or created is None:
        return
    who = subject(nominal, "police_nominal_id", pnc_id=pnc or "")
    yield Emit(
        "person.registered",
        entity=f"nominal/{nominal}/person",
        subject=who,
        occurred_at=local_midnight(created, ZONE),
        payload={
            "given_name": forenames,
            "family_name": surname,
            "date_of_birth": dob,
            "gender": gender,
        },
    )
    for event_type, suffix, occurred_at, payload, sensitivity in events:
        yield Emit(
            event_type,
            f"nominal/{nominal}/{suffix}",
            who,
            occurred_at,
            payload,
            sensitivity=sensitivity,
        )


CONNECTOR = Connector(
    name="police",
    agency=AGENCY,
    source_system=SOURCE_SYSTEM,
    jurisdiction="UK-ENG",
    reader=CsvReader(COLUMNS),
    map=map_row,
    correction_reason="keying_error",
    description="Merseyside Police: the nightly CORVUS export of IOM nominals",
)
