"""How the demo's events reach the hub: each partner's own export, through its own connector.

The demo's generator (:mod:`hub.demo`) decides what happens to whom; this module writes what each
partner's system would export about it, in that partner's format, under the run directory
(``<run>/partners/<wave>-<partner>.<ext>``, so a newcomer can open them), and runs the partner's
connector on it with the connector framework (ledger, quarantine, summary). A few rows are
deliberately bad, to show the quarantine at work.

A fact no partner file carries (a custody reception or release, a licence set by the prison, a
risk assessment, the partners abroad until their connectors are wired in here) is POSTed as a JSON
document to the HTTP ingest API, served by this process on a free port with one token per
agency, exactly as a partner without a Kafka client would send it. Its ``source_key`` is the
generator's, so its ``event_id`` is the one the generator built.
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import json
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from connectors.framework import Connector, Ledger, Summary
    from hub.demo import Item
    from hub.settings import Settings

LONDON = "Europe/London"

# -- which channel carries an event -----------------------------------------------------------

POLICE_TYPES = ("iom.cohort_entered", "iom.cohort_exited", "person.address_changed",
                "police.priority_score_updated", "police.arrest")  # fmt: skip
ERI_TYPES = {  # event type -> tipo_registrazione (lcp.withdrawn has none: the ingest API)
    "consent.given": "consenso", "lcp.enrolled": "iscrizione", "lcp.session_attended": "presenza",
    "lcp.completed": "completamento", "lcp.work_experience_started": "tirocinio",
    "outcome.employment_started": "esito_occupazionale",
}  # fmt: skip
SH_TYPES = {  # event type -> soort (the Safety House case system's registrations)
    "sh.case_reported": "casusmelding", "sh.screening_completed": "screening",
    "sh.case_conference_held": "casusoverleg", "sh.action_plan_agreed": "plan_van_aanpak",
    "sh.review_held": "voortgangsoverleg", "mayor.order_issued": "burgemeestersmaatregel",
    "aftercare.prison_visit": "nazorg_bezoek", "route.application": "route_aanvraag",
    "aftercare.release_support_given": "nazorg_ondersteuning",
}  # fmt: skip
# (a restricted programme's records, S19, are not in the case system's export: its team would
# send them through the ingest API, which is where the router refuses them)
NL_ORGS = {"nl_police": "politie", "nl_probation": "reclassering", "nl_prosecutor": "OM",
           "hague_municipality": "OOV", "hague_aftercare": "nazorg", "nl_housing": "wonen",
           "nl_health": "GGZ", "safety_house": "veiligheidshuis"}  # fmt: skip
NL_NEEDS = {"nl_sh_drugs_dependency": "verslaving", "nl_sh_housing": "wonen",
            "nl_sh_domestic_violence": "huiselijk geweld", "nl_sh_children": "kinderen"}
NL_STATUS = {"planned": "gepland", "in_progress": "bezig", "achieved": "behaald"}
PROBATION_TYPES = ("supervision.responsibility_assigned", "referral.created",
                   "supervision.breach_recorded")  # fmt: skip


def channel(item: Item) -> str:
    """The connector that publishes ``item``, or ``http`` for the ingest API."""
    agency, event_type = item.agency, item.event_type
    if agency == "police" and event_type in POLICE_TYPES:
        return "police"
    if agency == "hmp_liverpool" and event_type == "custody.release_scheduled":
        return "prison"
    if agency == "eri" and event_type in ERI_TYPES:
        return "eri"
    if agency == "safety_house" and event_type in SH_TYPES and not item.record["envelope"].get(
            "sensitivity") == "restricted-programme":
        return "safety-house"
    if agency == "hague_municipality" and event_type == "mayor.order_issued":
        return "hague-municipality"
    if agency == "hague_aftercare" and event_type in SH_TYPES:
        return "hague-aftercare"
    if agency == "mals" and event_type in MALS_TYPES:
        return "mals-source"
    if agency in ("probation_crc", "probation_nps") and event_type in PROBATION_TYPES:
        return "probation-crc" if agency == "probation_crc" else "probation-nps"
    # No file format for these facts yet (custody.received and custody.released come from the
    # prison's movements, not its release schedule; licence.conditions_set is set by the prison
    # here; assessment.risk_of_harm is not in the case-system export): the HTTP ingest API.
    return "http"


def _json_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, Mapping):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    return value


def _payload(record: Mapping[str, Any]) -> dict[str, Any]:
    """The event's own fields (a record holds them beside its envelope)."""
    return {k: v for k, v in record.items() if k not in ("envelope", "disclosure")}


def ingest_document(item: Item) -> dict[str, Any]:
    """The HTTP ingest document of ``item`` (connectors/http_ingest/documents.py)."""
    env = item.record["envelope"]
    who = env["subject"]
    doc: dict[str, Any] = {
        "event_type": env["event_type"], "source_agency": env["source_agency"],
        "source_system": env["source_system"], "source_key": item.source_key,
        "occurred_at": _json_value(env["occurred_at"]),
        "subject": {"local_id": who["local_id"], "local_id_scheme": who["local_id_scheme"],
                    "identifiers": [dict(i) for i in who.get("identifiers") or ()]},
        "payload": {k: _json_value(v) for k, v in _payload(item.record).items()
                    if v is not None},
    }  # fmt: skip
    for key in ("sensitivity", "compartment", "consent_ref", "responsible_org",
                "supersedes_event_id", "correction_reason", "effective_date"):  # fmt: skip
        if env.get(key) is not None:
            doc[key] = _json_value(env[key])
    return doc


# -- the partners' files ------------------------------------------------------------------------


def _d(value: Any) -> str:
    return value.isoformat() if isinstance(value, dt.date | dt.datetime) else str(value or "")


def _local(value: dt.datetime) -> str:
    from zoneinfo import ZoneInfo

    return value.astimezone(ZoneInfo(LONDON)).strftime("%Y-%m-%d %H:%M")


POLICE_COLUMNS = (
    "NOMINAL_ID", "PNC_ID", "SURNAME", "FORENAMES", "DATE_OF_BIRTH", "GENDER", "BOROUGH",
    "CREATED_ON", "ADDRESS_LINE1", "ADDRESS_TOWN", "POSTCODE", "ADDRESS_KIND", "ADDRESS_SINCE",
    "PRIORITY_SCORE", "PREVIOUS_SCORE", "COST_OF_CRIME", "SCORE_DATE",
    "MATRIX_VERSION", "PRIORITY_BAND", "IOM_COHORT", "IOM_SELECTION", "IOM_ENTRY_DATE",
    "IOM_EXIT_DATE", "IOM_EXIT_REASON", "LAST_ARREST_REF", "LAST_ARREST_AT",
    "LAST_ARREST_OFFENCE", "LAST_ARREST_OUTCOME",
)  # fmt: skip
PRISON_COLUMNS = (
    "Prison Number", "Booking No", "PNC ID", "Release Date", "Release Type", "Scheduled On",
    "Amended On", "Change Reason", "Release Address Line1", "Release Town", "Release Postcode",
    "Release Area", "Supervising Body", "OM Name", "OM Phone", "OM Email", "Licence End Date",
    "Establishment",
)  # fmt: skip
RELEASE_TYPES = {"on_licence": "CRD", "home_detention_curfew": "HDC", "end_of_sentence": "SED"}
BODIES = {"probation_crc": "CRC", "probation_nps": "NPS"}


def _pnc(record: Mapping[str, Any]) -> str:
    for ident in record["envelope"]["subject"].get("identifiers") or ():
        if ident["scheme"] == "pnc_id":
            return str(ident["value"])
    return ""


ERI_COLUMNS = (
    "id_registrazione", "tipo_registrazione", "id_partecipante", "codice_fiscale", "cognome",
    "nome", "data_di_nascita", "data", "rif_consenso", "ambiti_consenso", "raccolto_da",
    "modalita", "edizione", "contesto", "sessione", "tema", "fascia", "ore", "datore_di_lavoro",
    "esito_occupazionale", "attestato", "famiglia_presente", "sessioni_frequentate",
    "sessioni_totali",
)  # fmt: skip
ERI_SCOPES = {"share_with_social_services": "servizi sociali", "share_with_uepe": "UEPE"}


def _it(day: dt.date) -> str:
    return day.strftime("%d/%m/%Y")


def _si(flag: Any) -> str:
    return "" if flag is None else ("sì" if flag else "no")


class PartnerFiles:
    """The partners' current exports, built up wave by wave (the police and the prison export
    their whole list every time; the probation case systems export the events since the last
    run). ``entity`` maps each connector-carried item to the connector's entity for it, so the
    demo can find the event the connector published for it in the connector's ledger."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.police: dict[str, dict[str, str]] = {}  # nominal -> row
        self.prison: dict[str, dict[str, str]] = {}  # booking -> row
        self.eri: dict[str, dict[str, str]] = {}  # id_registrazione -> row
        self.entity: dict[str, tuple[str, str]] = {}  # item event id -> (channel, entity)
        self.bad_rows = 0

    # the CORVUS nightly export
    def police_row(self, item: Item) -> None:
        who, p, x = item.record["envelope"]["subject"], _payload(item.record), item.extra
        nominal = who["local_id"]
        row = self.police.setdefault(nominal, {
            "NOMINAL_ID": nominal, "PNC_ID": _pnc(item.record), "SURNAME": x["family"],
            "FORENAMES": x["given"], "DATE_OF_BIRTH": x["born"].strftime("%d/%m/%Y"),
            "GENDER": "F" if x["gender"] == "female" else "M", "BOROUGH": x["borough"],
            "CREATED_ON": _d(x["created_on"]), "IOM_COHORT": "N"})  # fmt: skip
        if item.event_type == "iom.cohort_entered":
            row.update({"IOM_COHORT": "Y", "IOM_SELECTION": p["selection_method"],
                        "IOM_ENTRY_DATE": _d(p["entry_date"]), "BOROUGH": p["borough"]})
            suffix = f"cohort-entry/{_d(p['entry_date'])}"
        elif item.event_type == "iom.cohort_exited":
            row.update({"IOM_COHORT": "N", "IOM_EXIT_DATE": _d(p["exit_date"]),
                        "IOM_EXIT_REASON": p["exit_reason"]})  # fmt: skip
            suffix = f"cohort-exit/{_d(p['exit_date'])}"
        elif item.event_type == "person.address_changed":
            a = p["address"]
            row.update({"ADDRESS_LINE1": a["line1"], "ADDRESS_TOWN": a.get("town") or "",
                        "POSTCODE": a["postcode"], "ADDRESS_KIND": a.get("kind") or "",
                        "ADDRESS_SINCE": _d(p["effective_from"])})
            # (CORVUS gives an address the nominal's borough as its area: BOROUGH stays, or the
            # cohort and score events would be corrected to the new borough)
            suffix = f"address/{_d(p['effective_from'])}"
        elif item.event_type == "police.priority_score_updated":
            row.update({"PRIORITY_SCORE": str(p["score"]),
                        "PREVIOUS_SCORE": str(p.get("previous_score") or ""),
                        "COST_OF_CRIME": f"£{p['cost_of_crime']:,}", "SCORE_DATE": _d(
                            p["score_date"]), "MATRIX_VERSION": p["matrix_version"],
                        "PRIORITY_BAND": (p.get("priority_band") or "")[:1].upper()})  # fmt: skip
            suffix = f"score/{_d(p['score_date'])}"
        else:  # police.arrest
            ref = x["custody_ref"]
            row.update({"LAST_ARREST_REF": ref, "LAST_ARREST_AT": _local(p["arrested_at"]),
                        "LAST_ARREST_OFFENCE": p["offence_type"],
                        "LAST_ARREST_OUTCOME": p["outcome"]})  # fmt: skip
            suffix = f"arrest/{ref}"
        self.entity[item.event_id] = ("police", f"nominal/{nominal}/{suffix}")

    def write_police(self, name: str, bad: bool) -> Path:
        rows = [self.police[k] for k in sorted(self.police)]
        if bad:  # keyed by hand in CORVUS: the 31st of February
            rows.append({"NOMINAL_ID": "MP-09901", "SURNAME": "Tarbuck", "FORENAMES": "Lee",
                         "DATE_OF_BIRTH": "31/02/1989", "GENDER": "M", "BOROUGH": "Knowsley",
                         "CREATED_ON": "2014-11-03", "IOM_COHORT": "N"})  # fmt: skip
            self.bad_rows += 1
        return self._csv(name, POLICE_COLUMNS, rows)

    # HMP Liverpool's release schedule
    def prison_row(self, item: Item) -> None:
        env, p = item.record["envelope"], _payload(item.record)
        booking = item.extra["booking"]
        occurred = env["occurred_at"].date()
        previous = self.prison.get(booking)
        address, om = p.get("release_address") or {}, p.get("offender_manager") or {}
        self.prison[booking] = {
            "Prison Number": env["subject"]["local_id"], "Booking No": booking,
            "PNC ID": _pnc(item.record), "Release Date": p["release_date"].strftime("%d/%m/%Y"),
            "Release Type": RELEASE_TYPES.get(p["release_type"], p["release_type"]),
            "Scheduled On": previous["Scheduled On"] if previous else occurred.strftime(
                "%d/%m/%Y"),
            "Amended On": occurred.strftime("%d/%m/%Y") if previous else "",
            "Change Reason": "KEYING" if env.get("correction_reason") == "keying_error" else (
                "RECALC" if previous else ""),
            "Release Address Line1": address.get("line1") or "",
            "Release Town": address.get("town") or "",
            "Release Postcode": address.get("postcode") or "",
            "Release Area": p.get("release_area") or "",
            "Supervising Body": BODIES.get(p.get("supervising_body") or "", ""),
            "OM Name": om.get("name") or "", "OM Phone": om.get("phone") or "",
            "OM Email": om.get("email") or "",
            "Licence End Date": _d(p.get("licence_end_date")),
            "Establishment": p.get("establishment") or "",
        }  # fmt: skip
        self.entity[item.event_id] = ("prison", f"release/{env['subject']['local_id']}/{booking}")

    def write_prison(self, name: str, bad: bool) -> Path:
        rows = [self.prison[k] for k in sorted(self.prison)]
        if bad:  # a release date that is no date
            rows.append({"Prison Number": "A9999ZZ", "Booking No": "B-99999",
                         "Release Date": "31/04/2016", "Release Type": "CRD",
                         "Scheduled On": "02/01/2016", "Release Area": "Knowsley",
                         "Supervising Body": "CRC"})  # fmt: skip
            self.bad_rows += 1
        return self._csv(name, PRISON_COLUMNS, rows)

    # ERI's participants' register (Turin), Italian headers, from a spreadsheet in Windows-1252
    def eri_row(self, item: Item, people: Mapping[str, Mapping[str, Any]]) -> None:
        env, p = item.record["envelope"], _payload(item.record)
        who = env["subject"]
        person = people[who["local_id"]]
        cf = next(i["value"] for i in who["identifiers"] if i["scheme"] == "codice_fiscale")
        record_id = "REG-" + item.source_key.split(":", 1)[1].replace(":", "-").upper()
        day = next(p[k] for k in ("given_on", "enrolled_on", "session_date", "completed_on",
                                  "started_on") if p.get(k))  # fmt: skip
        row = {"id_registrazione": record_id, "tipo_registrazione": ERI_TYPES[item.event_type],
               "id_partecipante": who["local_id"], "codice_fiscale": cf,
               "cognome": person["cognome"], "nome": person["nome"],
               "data_di_nascita": _it(person["nato"]), "data": _it(day),
               "edizione": p.get("run_id") or ""}  # fmt: skip
        if item.event_type == "consent.given":
            row |= {"rif_consenso": p["consent_id"],
                    "ambiti_consenso": ", ".join(ERI_SCOPES.get(c, c) for c in p["scopes"]),
                    "raccolto_da": p["captured_by"], "modalita": "scritto"}  # fmt: skip
        elif item.event_type == "lcp.enrolled":
            row["contesto"] = "comunità" if p["setting"] == "community" else "carcere"
        elif item.event_type == "lcp.session_attended":
            row |= {"sessione": str(p["session_number"]), "tema": p["theme"],
                    "fascia": "pomeriggio" if p["period"] == "pm" else "mattina",
                    "ore": f"{p['duration_minutes'] / 60:g}".replace(".", ",")}  # fmt: skip
        elif item.event_type == "lcp.completed":
            row |= {"attestato": _si(p.get("certificate_awarded")),
                    "famiglia_presente": _si(p.get("family_attended")),
                    "sessioni_frequentate": str(p["sessions_attended"]),
                    "sessioni_totali": str(p["sessions_total"])}  # fmt: skip
        elif item.event_type == "lcp.work_experience_started":
            row |= {"datore_di_lavoro": p["employer"], "esito_occupazionale": "tirocinio"}
        else:  # outcome.employment_started
            row |= {"datore_di_lavoro": p.get("employer") or "",
                    "esito_occupazionale": p["employment_type"]}  # fmt: skip
        self.eri[record_id] = row
        self.entity[item.event_id] = ("eri", f"registrazione/{record_id}")

    def write_eri(self, name: str, bad: bool) -> Path:
        rows = [self.eri[k] for k in sorted(self.eri)]
        if bad:  # a codice fiscale copied from another participant's row: the dates disagree
            first = rows[0]
            rows.append({**first, "id_registrazione": "REG-ERRATA-1",
                         "tipo_registrazione": "iscrizione", "data_di_nascita": "01/01/1970",
                         "contesto": "comunità", "edizione": "LCP-TO-2015-1"})  # fmt: skip
            self.bad_rows += 1
        return self._csv(name, ERI_COLUMNS, rows, delimiter=";", encoding="cp1252")

    # the Safety House case system's registrations, Dutch keys
    def sh_doc(self, item: Item) -> dict[str, Any]:
        env, p = item.record["envelope"], _payload(item.record)
        soort = SH_TYPES[item.event_type]
        number = "VH-R-" + item.source_key.split(":", 1)[1].replace(":", "-").upper()
        who = env["subject"]
        doc: dict[str, Any] = {"soort": soort, "registratienummer": number}
        if who["local_id_scheme"] == "aftercare_client_id":  # the Aftercare Team's client
            doc |= {"clientnummer": who["local_id"], "dossiernummer": next(
                (i["value"] for i in who["identifiers"] if i["scheme"] == "sh_file_id"), None)}
        else:
            doc |= {"dossiernummer": who["local_id"], "casusnummer": p.get("case_id")}

        def nl(day: Any) -> str | None:
            return day.strftime("%d-%m-%Y") if day else None

        def yn(flag: Any) -> str:
            return "ja" if flag else "nee"

        def tasks(items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
            return [{"taaknummer": t["task_id"], "organisatie": NL_ORGS[t["organisation"]],
                     "omschrijving": t.get("description"), "deadline": nl(t.get("due_date")),
                     "status": NL_STATUS.get(t.get("status") or "", t.get("status"))}
                    for t in items]  # fmt: skip

        if soort == "casusmelding":
            doc |= {"meldingsdatum": nl(p["reported_on"]),
                    "melder": NL_ORGS[p["reported_by_org"]], "reden": p.get("reason"),
                    "leefgebieden": [NL_NEEDS[n] for n in p.get("needs") or ()],
                    "gezinszaak": yn(p.get("family_case")), "gemeente": "Den Haag"}  # fmt: skip
        elif soort == "screening":
            doc |= {"screeningsdatum": nl(p["screened_on"]), "complex": yn(p["complex_case"]),
                    "inbreng_reclassering": yn(p["probation_input"]),
                    "geaccepteerd": yn(p["accepted"]),
                    "programma": {"adult": "volwassenen", "domestic_violence": "huiselijk geweld"}
                    .get(p["programme"], p["programme"]),
                    "procesregisseur": p.get("process_manager"), "notities": p.get("notes")}
        elif soort == "casusoverleg":
            doc |= {"overlegnummer": p["conference_id"], "datum": nl(p["held_on"]),
                    "voorzitter": p.get("chair"),
                    "aanwezig": [NL_ORGS[o] for o in p["partners_present"]],
                    "mondeling_besproken": yn(p.get("discussed_verbally"))}  # fmt: skip
        elif soort == "plan_van_aanpak":
            doc |= {"plannummer": p["plan_id"], "datum": nl(p["agreed_on"]),
                    "termijn": {"short_term": "kort", "long_term": "lang",
                                "pre_release": "voor vrijlating"}[p["term"]],
                    "aanpak": {"treatment": "zorg", "punishment": "straffen",
                               "treatment_with_conditional_punishment": "zorg met drang"}[
                                   p["approach"]],
                    "regievoerder": NL_ORGS[p["lead_org"]], "doelen": p.get("goals"),
                    "taken": tasks(p["tasks"]), "evaluatiedatum": nl(p.get("review_date"))}
        elif soort == "voortgangsoverleg":
            doc |= {"plannummer": p["plan_id"], "datum": nl(p["held_on"]),
                    "taken": tasks(p["tasks"]), "notities": p.get("notes")}  # fmt: skip
        elif soort == "nazorg_bezoek":
            doc |= {"datum": nl(p["visited_on"]), "inrichting": p["establishment"],
                    "verwachte_vrijlating": nl(p.get("expected_release_date")),
                    "leefgebieden": [{"leefgebied": n["pathway"], "probleem": n["need_code"],
                                      "toelichting": n.get("summary"),
                                      "ondersteuning": n.get("support_arranged")}
                                     for n in p["needs"]]}  # fmt: skip
        elif soort == "nazorg_ondersteuning":
            from zoneinfo import ZoneInfo

            doc |= {"tijdstip": p["given_at"].astimezone(ZoneInfo("Europe/Amsterdam")).strftime(
                "%d-%m-%Y %H:%M"), "verstrekt": p["items"], "notities": p.get("notes")}
        elif soort == "route_aanvraag":
            doc |= {"aanvraagnummer": p["application_id"], "route": "wonen",
                    "datum": nl(p["applied_on"]), "leeftijd": p.get("age_years"),
                    "dakloos": yn(p.get("homeless")), "reclassering": yn(p.get("on_probation")),
                    "openstaande_zaken": yn(p.get("outstanding_prosecutions"))}  # fmt: skip
        else:  # burgemeestersmaatregel, the Mayor's order (recorded by OOV)
            doc |= {"maatregelnummer": p["order_id"], "maatregel": {
                        "area_ban": "gebiedsverbod", "spatial_restraining_order": "locatieverbod",
                    }.get(p["order_type"], p["order_type"]), "verlengt": p.get("extends_order_id"),
                    "besluitdatum": nl(p["issued_on"]), "besloten_door": p["issued_by"],
                    "grondslag": p["legal_basis"], "geldig_van": nl(p["valid_from"]),
                    "geldig_tot": nl(p["valid_until"]), "gebied": p["area_name"],
                    "gebied_geometrie": p.get("area_geometry"),
                    "beschermde_partij": p.get("protected_party_ref")}  # fmt: skip
        self.entity[item.event_id] = (channel(item), f"{soort}/{number}")
        return {k: v for k, v in doc.items() if v not in (None, "", [])}

    def sh_bad(self) -> dict[str, Any]:
        """A screening saved without its 'complex' answer."""
        self.bad_rows += 1
        return {"soort": "screening", "registratienummer": "VH-R-ONVOLLEDIG-1",
                "dossiernummer": "SH-2015-0999", "casusnummer": "SHC-2015-0999",
                "screeningsdatum": "02-03-2015", "inbreng_reclassering": "nee",
                "geaccepteerd": "ja", "programma": "volwassenen"}  # fmt: skip

    # the probation case systems' event exports
    def probation_docs(self, items: Sequence[Item], bad: bool) -> list[dict[str, Any]]:
        docs = []
        for item in items:
            env, p = item.record["envelope"], _payload(item.record)
            provider = BODIES[item.agency]
            event_id = "EV-" + item.source_key.split(":", 1)[1].replace(":", "-").upper()
            crn = env["subject"]["local_id"]
            doc: dict[str, Any] = {"eventId": event_id, "provider": provider, "crn": crn,
                                   "pncNumber": _pnc(item.record)}  # fmt: skip
            if item.event_type == "supervision.responsibility_assigned":
                doc |= {"eventType": "RESPONSIBILITY_ASSIGNED",
                        "effectiveFrom": _d(p["effective_from"]),
                        "supervisingBody": BODIES[p["supervising_body"]], "basis": p["basis"],
                        "rosh": p["risk_level"].upper(), "supervisionEnd": _d(
                            p.get("supervision_end")),
                        "mappa": "Y" if p.get("mappa_managed") else "N",
                        "offenderManager": p["offender_manager"]}  # fmt: skip
            elif item.event_type == "supervision.breach_recorded":
                doc |= {"eventType": "BREACH", "breachDate": _d(p["breach_date"]),
                        "breachType": p["breach_type"], "conditionId": p.get("condition_id"),
                        "whereaboutsUnknown": "Y" if p.get("whereabouts_unknown") else "N",
                        "action": p.get("action_taken"), "details": p.get("details")}
            else:
                doc |= {"eventType": "REFERRAL", "referralId": p["referral_id"],
                        "programme": p["programme"].upper(), "referredOn": _d(p["referred_on"]),
                        "receivingOrg": p["receiving_org"].upper(), "pathways": p["pathways"],
                        "reason": p["reason"], "releaseDate": _d(p.get("release_date")),
                        "rosh": p["risk_level"].upper(), "offenderManager": p["offender_manager"],
                        "safetyInformation": p.get("safety_information"),
                        "offenceSummary": p.get("offence_summary"),
                        "mappaNotes": p.get("mappa_notes")}  # fmt: skip
            docs.append({k: v for k, v in doc.items() if v not in (None, "")})
            self.entity[item.event_id] = (channel(item), f"case/{crn}/{event_id}")
        if bad and docs:  # a risk level the case system does not have
            provider = docs[0]["provider"]
            docs.append({"eventId": f"EV-BAD-{provider}", "eventType": "RESPONSIBILITY_ASSIGNED",
                         "provider": provider, "crn": f"{provider}-09999",
                         "effectiveFrom": "2015-03-02", "supervisingBody": provider,
                         "basis": "LIC", "rosh": "EXTREME", "mappa": "N",
                         "offenderManager": {"organisation": BODIES.get(provider, provider),
                                             "name": "Duty officer"}})  # fmt: skip
            self.bad_rows += 1
        return docs

    def write_json(self, name: str, body: Any) -> Path:
        path = self.directory / name
        path.write_text(json.dumps(body, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        return path

    def _csv(self, name: str, columns: Sequence[str], rows: Sequence[Mapping[str, str]],
             delimiter: str = ",", encoding: str = "utf-8") -> Path:  # fmt: skip
        path = self.directory / name
        with path.open("w", encoding=encoding, newline="") as out:
            writer = csv.DictWriter(out, fieldnames=list(columns), extrasaction="ignore",
                                    delimiter=delimiter)  # fmt: skip
            writer.writeheader()
            writer.writerows(rows)
        return path


# -- MALS' own database ---------------------------------------------------------------------------

MALS_TYPES = ("mentoring.contact", "outcome.housing_secured", "outcome.employment_started",
              "lcp.session_attended", "lcp.completed")  # fmt: skip


def _pk(result: Any) -> int:
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def _label(mapping: Mapping[str, str], code: str) -> str:
    """MALS' label for a hub code (the source connector maps it back)."""
    return next(label for label, c in mapping.items() if c == code)


class MalsDesk:
    """MALS staff at work: what they record goes into MALS' own database (its ``clients``,
    ``mentors``, ``sessions`` and ``outcomes`` tables, ``connectors/mals/schema.py``), where the
    outbox triggers pick it up for the source connector; the sink writes the referrals the hub
    delivers to MALS into the same database."""

    def __init__(self, settings: Settings, clients: Mapping[str, Mapping[str, Any]]) -> None:
        from connectors.mals.schema import create_schema, mals_engine

        (settings.home / "mals").mkdir(parents=True, exist_ok=True)
        self.path = settings.home / "mals" / "mals.db"
        self.url = f"sqlite:///{self.path}"
        self.engine = mals_engine(self.url)
        create_schema(self.engine)
        self.clients = clients
        self.known: set[str] = set()
        self.mentors: set[str] = set()
        self.rows: dict[str, tuple[str, int]] = {}  # item event id -> (table, row id)
        self.bad_rows = 0

    def close(self) -> None:
        self.engine.dispose()

    def record(self, items: Sequence[Item], bad: bool) -> None:
        from sqlalchemy import insert

        from connectors.mals import codes
        from connectors.mals.schema import clients, lcp_attendance, mentors, outcomes, sessions

        with self.engine.begin() as conn:
            for item in items:
                p = _payload(item.record)
                client_id = item.record["envelope"]["subject"]["local_id"]
                if client_id not in self.known:
                    conn.execute(insert(clients).values(**self.clients[client_id]))
                    self.known.add(client_id)
                if item.event_type == "mentoring.contact":
                    mentor = p["mentor_id"]
                    if mentor not in self.mentors:
                        conn.execute(insert(mentors).values(
                            mentor_id=mentor, first_name="Volunteer",
                            started_on=dt.date(2014, 9, 1)))  # fmt: skip
                        self.mentors.add(mentor)
                    from zoneinfo import ZoneInfo

                    local = p["contact_at"].astimezone(ZoneInfo(LONDON))
                    row = conn.execute(insert(sessions).values(
                        client_id=client_id, mentor_id=mentor, session_date=local.date(),
                        start_time=local.strftime("%H:%M"),
                        mode=_label(codes.CONTACT_MODES, p["mode"]),
                        hours=p["duration_minutes"] / 60,
                        pathways="; ".join(_label(codes.PATHWAYS, c) for c in p["pathways"]),
                        family_present=p.get("family_involved"), notes=p.get("notes")))
                    self.rows[item.event_id] = ("sessions", _pk(row))
                elif item.event_type == "lcp.session_attended":
                    row = conn.execute(insert(lcp_attendance).values(
                        client_id=client_id, run_ref=p["run_id"], session_no=p["session_number"],
                        session_date=p["session_date"],
                        am_pm=_label(codes.PERIODS, p["period"]),
                        theme=_label(codes.LCP_THEMES, p["theme"]),
                        hours=p["duration_minutes"] / 60, attended=True,
                        facilitator_notes=p.get("facilitator_notes")))  # fmt: skip
                    self.rows[item.event_id] = ("lcp_attendance", _pk(row))
                elif item.event_type == "lcp.completed":
                    row = conn.execute(insert(outcomes).values(
                        client_id=client_id, outcome_type="LCP graduation",
                        outcome_date=p["completed_on"], run_ref=p["run_id"],
                        certificate=p.get("certificate_awarded"),
                        family_attended=p.get("family_attended"),
                        sessions_attended=p.get("sessions_attended"),
                        sessions_total=p.get("sessions_total")))  # fmt: skip
                    self.rows[item.event_id] = ("outcomes", _pk(row))
                elif item.event_type == "outcome.housing_secured":
                    row = conn.execute(insert(outcomes).values(
                        client_id=client_id, outcome_type="Housing",
                        outcome_date=p["secured_on"], organisation=p.get("provider"),
                        category=_label(codes.HOUSING_TYPES, p["housing_type"])))
                    self.rows[item.event_id] = ("outcomes", _pk(row))
                else:  # outcome.employment_started
                    row = conn.execute(insert(outcomes).values(
                        client_id=client_id, outcome_type="Employment",
                        outcome_date=p["started_on"], organisation=p.get("employer"),
                        category=_label(codes.EMPLOYMENT_TYPES, p["employment_type"]),
                        hours_per_week=p.get("hours_per_week")))
                    self.rows[item.event_id] = ("outcomes", _pk(row))
            if bad and self.known:  # a mode MALS' screen allowed once, and no code maps
                conn.execute(insert(sessions).values(
                    client_id=sorted(self.known)[0], session_date=dt.date(2015, 6, 1),
                    start_time="10:00", mode="Skype", hours=1.0, pathways="Health"))
                self.bad_rows += 1

    def published(self) -> dict[str, str]:
        """Item event id -> the event the source connector published for its row."""
        from sqlalchemy import select

        from connectors.mals.schema import hub_outbox

        with self.engine.connect() as conn:
            sent = {(r.source_table, r.row_id): r.event_id for r in conn.execute(
                select(hub_outbox).where(hub_outbox.c.event_id.is_not(None)))}  # fmt: skip
        return {item: sent[row] for item, row in self.rows.items() if row in sent}

    def outbox(self) -> tuple[int, int, int]:
        """Outbox rows: all, sent, failed (each failure's reason is in ``hub_outbox.error``)."""
        from sqlalchemy import text

        with self.engine.connect() as conn:
            return tuple(conn.execute(text(  # type: ignore[return-value]
                "SELECT count(*), count(sent_at), count(error) FROM hub_outbox")).one())

    def referrals(self) -> list[dict[str, Any]]:
        """MALS' referrals table, as the sink filled it."""
        from sqlalchemy import select

        from connectors.mals.schema import referrals

        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(
                select(referrals).order_by(referrals.c.referral_id))]  # fmt: skip


# -- the HTTP ingest API, served in this process -------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def ingest_server(settings: Settings, codec: Any) -> Iterator[tuple[str, Any]]:
    """``hub ingest serve`` on a free port in a thread; yields its address and token store."""
    import uvicorn

    from connectors.http_ingest.app import IngestConfig, create_app
    from connectors.http_ingest.tokens import open_token_store
    from hub import bootstrap

    (settings.home / "ingest").mkdir(parents=True, exist_ok=True)
    tokens = open_token_store(f"sqlite:///{settings.home / 'ingest' / 'tokens.db'}")
    jurisdictions = {a.id: a.jurisdiction for a in bootstrap.agreements(codec.catalogue).agencies()}
    config = IngestConfig(settings.bootstrap_servers, bootstrap.topics(settings), jurisdictions,
                          fields=bootstrap.field_crypto(settings, codec.catalogue))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(config, tokens, codec), host="127.0.0.1",
                                           port=port, log_config=None, access_log=False,
                                           server_header=False))  # fmt: skip
    thread = threading.Thread(target=server.run, name="hub-demo-ingest", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the HTTP ingest API did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", tokens
    finally:
        server.should_exit = True
        thread.join(30)


# -- running the partners' feeds -------------------------------------------------------------------


@dataclass
class FeedReport:
    """What went in through each connector and through the ingest API."""

    summaries: dict[str, Summary] = field(default_factory=dict)  # connector -> total
    files: list[Path] = field(default_factory=list)
    posted: dict[str, int] = field(default_factory=dict)  # agency -> documents (HTTP ingest)
    requests: int = 0
    bad_rows: int = 0
    id_map: dict[str, str] = field(default_factory=dict)  # generator's event id -> published
    mals_source: tuple[int, int, int] = (0, 0, 0)  # outbox rows: all, sent, failed
    mals_sink: dict[str, int] = field(default_factory=dict)  # sink outcomes
    mals_referrals: list[dict[str, Any]] = field(default_factory=list)  # MALS' referrals table

    @property
    def events(self) -> int:
        return (sum(s.events for s in self.summaries.values()) + sum(self.posted.values())
                + self.mals_source[1])  # fmt: skip


CONNECTOR_NAMES = ("police", "prison", "probation-crc", "probation-nps", "eri", "safety-house",
                   "hague-municipality", "hague-aftercare")  # fmt: skip
SH_PARTS = ("safety-house", "hague-municipality", "hague-aftercare")


class PartnerFeeds:
    """Writes each wave's partner files, runs the connectors and posts the rest."""

    def __init__(self, settings: Settings, sink: Any, ingest_url: str, tokens: Any,
                 mals: MalsDesk, registers: Mapping[str, Mapping[str, Any]]) -> None:  # fmt: skip
        from connectors import connector
        from connectors.framework import Ledger, build_publisher
        from hub import bootstrap

        self.settings = settings
        # every connector's Publisher seals the sensitive fields (None: field encryption off)
        fields = bootstrap.field_crypto(settings)
        self.directory = settings.home / "partners"
        (self.directory / "quarantine").mkdir(parents=True, exist_ok=True)
        self.files = PartnerFiles(self.directory)
        self.report = FeedReport()
        self.connectors: dict[str, Connector] = {n: connector(n) for n in CONNECTOR_NAMES}
        self.ledgers: dict[str, Ledger] = {}
        self.publishers: dict[str, Any] = {}
        for name, spec in self.connectors.items():
            state = settings.home / "connectors" / name
            state.mkdir(parents=True, exist_ok=True)
            self.ledgers[name] = Ledger(state / "ledger.sqlite")
            self.publishers[name] = build_publisher(
                spec, settings.bootstrap_servers, settings.registry_url or "",
                settings.topic_prefix, sink=sink)  # fmt: skip
            self.publishers[name].fields = fields
        self.ingest_url, self.tokens = ingest_url, tokens
        from connectors.mals.source import OutboxSource
        from connectors.mals.source import build_publisher as mals_publisher

        self.mals = mals
        self.registers = registers
        outbox = mals_publisher(settings.bootstrap_servers, settings.registry_url or "",
                                settings.topic_prefix)  # fmt: skip
        outbox.fields = fields
        self.mals_source = OutboxSource(mals.engine, outbox)
        self._tokens: dict[str, str] = {}
        self._bad_done: set[str] = set()

    def close(self) -> None:
        for ledger in self.ledgers.values():
            ledger.close()

    def agencies(self, items: Sequence[Item]) -> set[str]:
        return {item.agency for item in items}

    def _bad(self, name: str) -> bool:
        """A deliberately bad row in the first file of each connector."""
        first = name not in self._bad_done
        self._bad_done.add(name)
        return first

    def feed(self, number: int, items: Sequence[Item]) -> list[str]:
        """Send one wave; returns a line per channel for the progress output."""
        lines: list[str] = []
        by: dict[str, list[Item]] = {}
        for item in items:
            by.setdefault(channel(item), []).append(item)
        if by.get("police"):
            for item in by["police"]:
                self.files.police_row(item)
            path = self.files.write_police(f"{number}-corvus-export.csv",
                                           self._bad("police"))
            lines.append(self._run("police", path))
        if by.get("prison"):
            for item in by["prison"]:
                self.files.prison_row(item)
            path = self.files.write_prison(f"{number}-hmp-liverpool-release-schedule.csv",
                                           self._bad("prison"))
            lines.append(self._run("prison", path))
        for name in ("probation-crc", "probation-nps"):
            if by.get(name):
                docs = self.files.probation_docs(by[name], self._bad(name))
                path = self.files.write_json(f"{number}-{name}-events.json", {
                    "export": {"system": "probation-case", "provider": name[-3:].upper()},
                    "events": docs})  # fmt: skip
                lines.append(self._run(name, path))
        if by.get("eri"):
            for item in by["eri"]:
                self.files.eri_row(item, self.registers)
            path = self.files.write_eri(f"{number}-eri-registro.csv", self._bad("eri"))
            lines.append(self._run("eri", path))
        sh = [i for i in items if channel(i) in SH_PARTS]
        if sh:  # one export of the day's registrations; each part's connector reads it
            docs = [self.files.sh_doc(i) for i in sh]
            if self._bad("safety-house"):
                docs.append(self.files.sh_bad())
            path = self.files.write_json(f"{number}-veiligheidshuis-registraties.json",
                                         {"registraties": docs})  # fmt: skip
            for name in SH_PARTS:
                lines.append(self._run(name, path))
        if by.get("mals-source"):
            self.mals.record(by["mals-source"], self._bad("mals-source"))
            before = vars(self.mals_source.stats).copy()
            stats = self.mals_source.run(lambda: False, once=True)
            sent = stats.published - before["published"]
            failed = stats.failed - before["failed"]
            self.report.mals_source = self.mals.outbox()
            self.report.id_map.update(self.mals.published())
            lines.append(f"{'mals-source':<18} MALS' database {self.mals.path.name}: "
                         f"{sent + failed} outbox rows, {sent} published, {failed} failed")
        if by.get("http"):
            lines.append(self._post(number, by["http"]))
        self.report.bad_rows = self.files.bad_rows + self.mals.bad_rows
        for item in items:  # the event each connector published for the generator's item
            found = self.files.entity.get(item.event_id)
            if found:
                name, entity = found
                publisher = self.publishers[name]
                latest = self.ledgers[name].latest(publisher.topic,
                                                   f"{item.event_type}|{entity}")
                if latest is not None:
                    self.report.id_map[item.event_id] = latest.event_id
        return lines

    def _run(self, name: str, path: Path) -> str:
        spec = self.connectors[name]
        summary = spec.run(path, self.publishers[name], self.ledgers[name],
                           quarantine_dir=self.directory / "quarantine")  # fmt: skip
        self.report.files.append(path)
        total = self.report.summaries.get(name)
        self.report.summaries[name] = summary if total is None else total + summary
        where = f"; rejected rows in quarantine/{Path(summary.quarantine[0]).name}" if (
            summary.quarantine) else ""
        return (f"{name:<18} {path.name}: read {summary.read}, published {summary.published}, "
                f"rejected {summary.rejected}, skipped {summary.skipped}; {summary.events} "
                f"events ({summary.corrections} corrections){where}")  # fmt: skip

    def _token(self, agency: str) -> str:
        if agency not in self._tokens:
            self._tokens[agency] = self.tokens.issue(agency)
        return self._tokens[agency]

    def _post(self, number: int, items: Sequence[Item]) -> str:
        import httpx

        by: dict[str, list[dict[str, Any]]] = {}
        for item in items:
            by.setdefault(item.agency, []).append(ingest_document(item))
        sent = 0
        with httpx.Client(base_url=self.ingest_url, timeout=120) as client:
            for agency, docs in sorted(by.items()):
                headers = {"Authorization": f"Bearer {self._token(agency)}"}
                for start in range(0, len(docs), 200):
                    batch = docs[start:start + 200]
                    answer = client.post("/v1/events/batch", json={"events": batch},
                                         headers=headers)  # fmt: skip
                    self.report.requests += 1
                    if answer.status_code != 202:
                        raise RuntimeError(f"the ingest API refused {agency}'s batch: "
                                           f"{answer.status_code} {answer.text[:500]}")
                    sent += len(answer.json()["event_ids"])
                self.report.posted[agency] = self.report.posted.get(agency, 0) + len(docs)
        if number == 1:
            self.write_sample(by)
        return f"{'HTTP ingest':<18} {sent} documents from {len(by)} agencies"

    def write_sample(self, by: Mapping[str, Sequence[dict[str, Any]]]) -> None:
        """One posted document per agency, for a newcomer to read."""
        sample = {agency: docs[0] for agency, docs in sorted(by.items())}
        self.files.write_json("http-ingest-sample-documents.json", sample)
