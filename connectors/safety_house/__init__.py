"""Safety House Haaglanden (Veiligheidshuis): JSON with Dutch keys -> ``ingest.safety_house``, and
the parts of the same export that other Hague partners own: the Mayor's orders ->
``ingest.hague_municipality``, the Aftercare Team's registrations -> ``ingest.hague_aftercare``.

The Safety House's case system exports ``{"registraties": [...]}`` (or JSON lines): one document
per registration, its kind in ``soort``, its own number in ``registratienummer``, the person's
file in ``dossiernummer``. ``MAPPING.md`` has every key and code.

| soort | hub event | published by |
| --- | --- | --- |
| ``casusmelding`` (case report) | ``sh.case_reported`` | ``safety-house`` |
| ``screening`` | ``sh.screening_completed`` | ``safety-house`` |
| ``casusoverleg`` (case conference) | ``sh.case_conference_held`` | ``safety-house`` |
| ``plan_van_aanpak`` (action plan) | ``sh.action_plan_agreed`` | ``safety-house`` |
| ``voortgangsoverleg`` (review) | ``sh.review_held`` | ``safety-house`` |
| ``balans`` (stock-take) | ``sh.stock_take`` | ``safety-house`` |
| ``burgemeestersmaatregel`` (mayoral order) | ``mayor.order_issued`` | ``hague-municipality`` |
| ``nazorg_bezoek`` (prison visit) | ``aftercare.prison_visit`` | ``hague-aftercare`` |
| ``nazorg_ondersteuning`` (support) | ``aftercare.release_support_given`` | ``hague-aftercare`` |
| ``route_aanvraag``, ``_start``, ``_uitkomst`` | ``route.application``, ``started``, ``outcome`` |

Each fact is published by the agency that owns it, because the agreements name their sources
(the police see a Mayor's order only from the municipality, ``sh-5``; the Homelessness Team sees
the housing route from Aftercare, ``sh-8``). So the same export is run once per part; each part
counts the others' registrations as skipped (they stand for none of its events). Dates are
``dd-mm-jjjj`` or ``jjjj-mm-dd``; files from Dutch desktops that are not UTF-8 are read as
Windows-1252 (said in the summary).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from connectors.framework import (
    Connector,
    Emit,
    JsonReader,
    Ledger,
    Record,
    Row,
    Summary,
    code_table,
    local_midnight,
)
from hub.publisher import Publisher, subject

ZONE = "Europe/Amsterdam"
SOURCE_SYSTEM = "veiligheidshuis"
DATES = ("%d-%m-%Y", "%Y-%m-%d")
DATETIMES = ("%d-%m-%Y %H:%M", "%d-%m-%Y %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M")



ORGANISATIONS = code_table(
    ("safety_house", "nl_police", "nl_prosecutor", "nl_probation", "hague_municipality",
     "hague_aftercare", "nl_health", "nl_housing"),
    veiligheidshuis="safety_house", politie="nl_police", om="nl_prosecutor",
    openbaar_ministerie="nl_prosecutor", reclassering="nl_probation",
    gemeente="hague_municipality", oov="hague_municipality", nazorg="hague_aftercare",
    zorg="nl_health", ggz="nl_health", verslavingszorg="nl_health",
    woningcorporatie="nl_housing", wonen="nl_housing",
)  # fmt: skip
NEEDS = code_table(
    ("nl_sh_housing", "nl_sh_domestic_violence", "nl_sh_children", "nl_sh_drugs_dependency"),
    wonen="nl_sh_housing", huisvesting="nl_sh_housing", huiselijk_geweld="nl_sh_domestic_violence",
    kinderen="nl_sh_children", verslaving="nl_sh_drugs_dependency",
    werk="education_training_employment", financien="finance_benefit_debt",
    schulden="finance_benefit_debt", gezondheid="health", gedrag="attitudes_thinking_behaviour",
)  # fmt: skip
PROGRAMMES = code_table(
    ("adult", "youth", "group", "domestic_violence", "aftercare"),
    volwassenen="adult", jeugd="youth", groep="group", huiselijk_geweld="domestic_violence",
    nazorg="aftercare",
)  # fmt: skip
TERMS = code_table(("pre_release", "short_term", "long_term"),
               voor_vrijlating="pre_release", kort="short_term", lang="long_term")  # fmt: skip
APPROACHES = code_table(
    ("punishment", "treatment_with_conditional_punishment", "treatment"),
    straffen="punishment", zorg_met_drang="treatment_with_conditional_punishment",
    drang="treatment_with_conditional_punishment", zorg="treatment",
)  # fmt: skip
STATUSES = code_table(
    ("planned", "in_progress", "achieved", "missed", "blocked", "cancelled"),
    gepland="planned", bezig="in_progress", behaald="achieved", gemist="missed",
    geblokkeerd="blocked", vervallen="cancelled",
)  # fmt: skip
DECISIONS = code_table(("continue", "close", "return_to_system"),
                   doorgaan="continue", afsluiten="close",
                   terug_naar_regulier="return_to_system")  # fmt: skip
ORDERS = code_table(
    ("spatial_restraining_order", "area_ban", "temporary_domestic_exclusion_order"),
    gebiedsverbod="area_ban", locatieverbod="spatial_restraining_order",
    tijdelijk_huisverbod="temporary_domestic_exclusion_order",
)  # fmt: skip
AC_AREAS = code_table(
    ("nl_ac_identity_papers", "nl_ac_accommodation", "nl_ac_income", "nl_ac_debt", "nl_ac_care"),
    identiteitsbewijs="nl_ac_identity_papers", huisvesting="nl_ac_accommodation",
    onderdak="nl_ac_accommodation", inkomen="nl_ac_income", schulden="nl_ac_debt",
    zorg="nl_ac_care",
)  # fmt: skip
AC_NEEDS = code_table(
    ("no_identity_papers", "homeless", "no_income", "debt", "mental_health_support",
     "physical_health", "drug_dependency", "alcohol_dependency", "employment"),
    geen_identiteitsbewijs="no_identity_papers", dakloos="homeless", geen_inkomen="no_income",
    schulden="debt", psychische_zorg="mental_health_support", lichamelijke_zorg="physical_health",
    drugsverslaving="drug_dependency", alcoholverslaving="alcohol_dependency", werk="employment",
)  # fmt: skip
SUPPORT_ITEMS = code_table(
    ("supermarket_coupons", "debit_card", "travel_coupons", "homelessness_team_referral",
     "night_shelter_place", "identity_papers_application", "benefits_application"),
    supermarktbonnen="supermarket_coupons", betaalpas="debit_card", reisbonnen="travel_coupons",
    ov_bonnen="travel_coupons", doorverwijzing_daklozenteam="homelessness_team_referral",
    nachtopvang="night_shelter_place", aanvraag_identiteitsbewijs="identity_papers_application",
    aanvraag_uitkering="benefits_application",
)  # fmt: skip
ROUTES = code_table(("housing", "work"), wonen="housing", werk="work")
ROUTE_OUTCOMES = code_table(
    ("housed", "job_contract", "trial_position", "training", "ended_without_outcome", "withdrew",
     "returned_to_prison"),
    gehuisvest="housed", arbeidscontract="job_contract", proefplaatsing="trial_position",
    opleiding="training", zonder_resultaat="ended_without_outcome", gestopt="withdrew",
    terug_in_detentie="returned_to_prison",
)  # fmt: skip
MAYORAL = "burgemeestersmaatregel"
SH_KINDS = ("casusmelding", "screening", "casusoverleg", "plan_van_aanpak", "voortgangsoverleg",
            "balans")  # fmt: skip
AFTERCARE_KINDS = ("nazorg_bezoek", "nazorg_ondersteuning", "route_aanvraag", "route_start",
                   "route_uitkomst")  # fmt: skip
KINDS = (*SH_KINDS, MAYORAL, *AFTERCARE_KINDS)
PARTS = {  # agency -> the kinds of registration it publishes
    "safety_house": frozenset(SH_KINDS),
    "hague_municipality": frozenset({MAYORAL}),
    "hague_aftercare": frozenset(AFTERCARE_KINDS),
}


def _objects(
    row: Row, key: str, build: Callable[[Row], dict[str, Any]], required: bool = False
) -> list[dict[str, Any]]:
    """``build`` applied to each object of the list under ``key``; what it notes about a field
    is reported on ``row`` as ``key[i].field``."""
    out = []
    for i, value in enumerate(_items(row, key, required)):
        where = f"{key}[{i}]"
        if not isinstance(value, Mapping):
            row.error(where, "expected an object")
            continue
        sub = Row(Record(row.record.file, row.record.line, "", dict(value)))
        out.append(build(sub))
        for field, message in sub.errors:
            row.error(f"{where}.{field}" if field else where, message)
    return out


def _items(row: Row, key: str, required: bool = False) -> list[Any]:
    value = row.get(key)
    if value is None or value == []:
        if required:
            row.error(key, "is empty (required)")
        return []
    if not isinstance(value, list):
        row.error(key, "expected a list")
        return []
    return value


def _codes_of(row: Row, key: str, codes: Mapping[str, str], required: bool = False) -> list[str]:
    out = []
    for i, item in enumerate(_items(row, key, required)):
        sub = Row(Record(row.record.file, row.record.line, "", {"v": item}))
        code = sub.code("v", codes, required=True)
        for _, message in sub.errors:
            row.error(f"{key}[{i}]", message)
        if code:
            out.append(code)
    return out


def _texts(row: Row, key: str) -> list[str]:
    out = []
    for i, item in enumerate(_items(row, key)):
        if not isinstance(item, str) or not item.strip() or len(item) > 500:
            row.error(f"{key}[{i}]", f"expected text of at most 500 characters, got {item!r:.40}")
        else:
            out.append(item.strip())
    return out


def _tasks(row: Row, key: str, required: bool) -> list[dict[str, Any]]:
    return _objects(row, key, lambda sub: {
        "task_id": sub.text("taaknummer", required=True, max_len=40),
        "organisation": sub.code("organisatie", ORGANISATIONS, required=True),
        "description": sub.text("omschrijving", max_len=1000),
        "due_date": sub.date("deadline", formats=DATES),
        "status": sub.code("status", STATUSES),
    }, required)  # fmt: skip


def _milestones(row: Row, key: str) -> list[dict[str, Any]]:
    return _objects(row, key, lambda sub: {
        "milestone_id": sub.text("mijlpaalnummer", required=True, max_len=40),
        "description": sub.text("omschrijving", max_len=1000),
        "pathway": sub.code("leefgebied", NEEDS),
        "due_date": sub.date("deadline", formats=DATES),
        "status": sub.code("status", STATUSES),
        "achieved_on": sub.date("behaald_op", formats=DATES),
    })  # fmt: skip


def _aftercare_needs(row: Row, key: str) -> list[dict[str, Any]]:
    return _objects(row, key, lambda sub: {
        "pathway": sub.code("leefgebied", AC_AREAS, required=True),
        "need_code": sub.code("probleem", AC_NEEDS),
        "summary": sub.text("toelichting", max_len=1000),
        "clinical_detail": None,  # never read: care details stay with the care provider
        "support_arranged": sub.text("ondersteuning", max_len=1000),
    })  # fmt: skip


def _event(row: Row, kind: str, case_id: str | None) -> tuple[str, Any, dict[str, Any]] | None:
    """(hub event type, the day of the fact, payload) of one registration."""
    if kind == "casusmelding":
        day = row.date("meldingsdatum", required=True, formats=DATES)
        return "sh.case_reported", day, {
            "case_id": case_id, "reported_on": day,
            "reported_by_org": row.code("melder", ORGANISATIONS, required=True),
            "reason": row.text("reden", required=True, max_len=2000),
            "needs": _codes_of(row, "leefgebieden", NEEDS) or None,
            "family_case": row.flag("gezinszaak"), "municipality": row.text("gemeente", max_len=60),
        }  # fmt: skip
    if kind == "screening":
        day = row.date("screeningsdatum", required=True, formats=DATES)
        return "sh.screening_completed", day, {
            "case_id": case_id, "screened_on": day,
            "complex_case": row.flag("complex", required=True),
            "probation_input": row.flag("inbreng_reclassering", required=True),
            "accepted": row.flag("geaccepteerd", required=True),
            "programme": row.code("programma", PROGRAMMES),
            "process_manager": row.text("procesregisseur", max_len=100),
            "notes": row.text("notities", max_len=2000),
        }  # fmt: skip
    if kind == "casusoverleg":
        day = row.date("datum", required=True, formats=DATES)
        return "sh.case_conference_held", day, {
            "conference_id": row.text("overlegnummer", required=True, max_len=40),
            "case_id": case_id, "held_on": day, "chair": row.text("voorzitter", max_len=100),
            "partners_present": _codes_of(row, "aanwezig", ORGANISATIONS, required=True),
            "discussed_verbally": row.flag("mondeling_besproken"),
        }  # fmt: skip
    if kind == "plan_van_aanpak":
        day = row.date("datum", required=True, formats=DATES)
        return "sh.action_plan_agreed", day, {
            "plan_id": row.text("plannummer", required=True, max_len=40), "case_id": case_id,
            "agreed_on": day, "term": row.code("termijn", TERMS),
            "approach": row.code("aanpak", APPROACHES, required=True),
            "lead_org": row.code("regievoerder", ORGANISATIONS, required=True),
            "goals": _texts(row, "doelen") or None,
            "tasks": _tasks(row, "taken", required=True),
            "milestones": _milestones(row, "mijlpalen") or None,
            "review_date": row.date("evaluatiedatum", formats=DATES),
            "stock_take_date": row.date("balansdatum", formats=DATES),
            "discussed_verbally": row.flag("mondeling_besproken"),
        }  # fmt: skip
    if kind == "voortgangsoverleg":
        day = row.date("datum", required=True, formats=DATES)
        return "sh.review_held", day, {
            "plan_id": row.text("plannummer", required=True, max_len=40), "case_id": case_id,
            "held_on": day, "tasks": _tasks(row, "taken", required=False) or None,
            "notes": row.text("notities", max_len=2000),
        }  # fmt: skip
    if kind == "balans":
        day = row.date("datum", required=True, formats=DATES)
        return "sh.stock_take", day, {
            "case_id": case_id, "held_on": day,
            "decision": row.code("besluit", DECISIONS, required=True),
            "reason": row.text("reden", max_len=1000),
        }  # fmt: skip
    if kind == MAYORAL:
        day = row.date("besluitdatum", required=True, formats=DATES)
        return "mayor.order_issued", day, {
            "order_id": row.text("maatregelnummer", required=True, max_len=40),
            "order_type": row.code("maatregel", ORDERS, required=True), "issued_on": day,
            "issued_by": row.text("besloten_door", required=True, max_len=100),
            "legal_basis": row.text("grondslag", required=True, max_len=200),
            "valid_from": row.date("geldig_van", required=True, formats=DATES),
            "valid_until": row.date("geldig_tot", required=True, formats=DATES),
            "area_name": row.text("gebied", max_len=200),
            "area_geometry": row.text("gebied_geometrie", max_len=20_000),
            "extends_order_id": row.text("verlengt", max_len=40),
            "protected_party_ref": row.text("beschermde_partij", max_len=40),
        }  # fmt: skip
    if kind == "nazorg_bezoek":
        day = row.date("datum", required=True, formats=DATES)
        return "aftercare.prison_visit", day, {
            "visited_on": day, "establishment": row.text("inrichting", required=True, max_len=100),
            "expected_release_date": row.date("verwachte_vrijlating", formats=DATES),
            "needs": _aftercare_needs(row, "leefgebieden") or None,
        }  # fmt: skip
    if kind == "nazorg_ondersteuning":
        moment = row.datetime("tijdstip", ZONE, required=True, formats=DATETIMES)
        items = _codes_of(row, "verstrekt", SUPPORT_ITEMS, required=True)
        day = moment.date() if moment else None
        return "aftercare.release_support_given", day, {
            "given_at": moment, "items": items, "notes": row.text("notities", max_len=2000),
        }  # fmt: skip
    if kind in ("route_aanvraag", "route_start", "route_uitkomst"):
        day = row.date("datum", required=True, formats=DATES)
        common = {"application_id": row.text("aanvraagnummer", required=True, max_len=40),
                  "route": row.code("route", ROUTES, required=True)}  # fmt: skip
        if kind == "route_aanvraag":
            return "route.application", day, {
                **common, "applied_on": day, "age_years": row.integer("leeftijd", low=12, high=120),
                "homeless": row.flag("dakloos"), "on_probation": row.flag("reclassering"),
                "outstanding_prosecutions": row.flag("openstaande_zaken"),
            }  # fmt: skip
        if kind == "route_start":
            return "route.started", day, {
                **common, "started_on": day,
                "planned_end": row.date("geplande_einddatum", formats=DATES),
                "extends_until": row.date("verlengd_tot", formats=DATES),
            }  # fmt: skip
        return "route.outcome", day, {
            **common, "outcome": row.code("uitkomst", ROUTE_OUTCOMES, required=True),
            "outcome_on": day,
        }  # fmt: skip
    row.error("soort", f"{kind!r} is not a known kind of registration (expected "
                       f"{', '.join(KINDS)})")  # fmt: skip
    return None


def mapper(agency: str):  # type: ignore[no-untyped-def]
    """The registrations of one part of the export: ``PARTS[agency]``."""
    own = PARTS[agency]

    def map_row(row: Row) -> Iterator[Emit]:
        kind = row.text("soort", required=agency == "safety_house", max_len=40)
        kind = "_".join(kind.casefold().split()) if kind else None
        if kind not in own and (kind in KINDS or agency != "safety_house"):
            return  # another part's registration (or unknown: the Safety House's to reject)
        number = row.text("registratienummer", required=True, max_len=60)
        aftercare = kind in AFTERCARE_KINDS
        file_id = row.text("dossiernummer", required=not aftercare, max_len=40)
        client = row.text("clientnummer", required=aftercare, max_len=40)
        case_id = row.text("casusnummer", required=kind in SH_KINDS, max_len=40)
        built = _event(row, kind, case_id) if kind else None
        if row.errors or built is None or number is None:
            return
        event_type, day, payload = built
        if event_type == "mayor.order_issued" and payload["valid_until"] < payload["valid_from"]:
            row.error("geldig_tot", f"{payload['valid_until']} is before geldig_van")
            return
        if aftercare and client:
            who = subject(client, "aftercare_client_id", sh_file_id=file_id or "")
        else:
            who = subject(str(file_id), "sh_file_id")
        yield Emit(
            event_type,
            entity=f"{kind}/{number}",
            subject=who,
            occurred_at=payload.get("given_at") or local_midnight(day, ZONE),
            payload=payload,
        )

    return map_row


def _connector(name: str, agency: str, description: str) -> Connector:
    return Connector(
        name=name,
        agency=agency,
        source_system=SOURCE_SYSTEM,
        jurisdiction="NL",
        reader=JsonReader(items="registraties"),
        map=mapper(agency),
        patterns=("*.json", "*.jsonl"),
        fallback_encoding="cp1252",
        correction_reason="keying_error",
        description=description,
    )


SAFETY_HOUSE = _connector(
    "safety-house",
    "safety_house",
    "Safety House Haaglanden: cases, screenings, conferences, plans (JSON)",
)
MUNICIPALITY = _connector(
    "hague-municipality",
    "hague_municipality",
    "The Hague: the Mayor's orders from the Safety House system (JSON)",
)
AFTERCARE = _connector(
    "hague-aftercare",
    "hague_aftercare",
    "The Hague Aftercare: prison visits, release support, routes (JSON)",
)
BY_AGENCY = {c.agency: c for c in (SAFETY_HOUSE, MUNICIPALITY, AFTERCARE)}


def run(path: str | Path, publisher: Publisher, ledger: Ledger | str | Path | None = None,
        **options: Any) -> Summary:  # fmt: skip
    """Publish one export with ``publisher``: the part of its agency (``PARTS``): as
    ``safety_house`` the case registrations, as ``hague_municipality`` the Mayor's orders, as
    ``hague_aftercare`` the Aftercare Team's. ``options`` go to
    :func:`connectors.framework.run_file` (``quarantine_dir``, ``encoding``, ``progress``)."""
    connector = BY_AGENCY.get(publisher.agency)
    if connector is None:
        raise ValueError(f"no Safety House connector publishes as {publisher.agency!r} "
                         f"(expected one of {', '.join(BY_AGENCY)})")  # fmt: skip
    return connector.run(path, publisher, ledger, **options)
