"""ERI (Turin): the participants' register, a CSV with Italian headers -> ``ingest.eri``.

One row per registration (``tipo_registrazione``): referrals received from social services or
UEPE, consent given or withdrawn, LCP enrolment, session attendance and absence, work
experience, graduation, invitations to mentor, and employment outcomes (S12). ``MAPPING.md`` has
every column and code.

The person is ERI's participant id (``id_partecipante``) with the *codice fiscale* as a strong
identifier. The codice fiscale is checked (its form, its check character, and that the date of
birth it encodes is ``data_di_nascita``): a row where they disagree names the wrong person and is
quarantined. Names and the date of birth are read for that check only and never published.
Dates are ``gg/mm/aaaa`` (or ``aaaa-mm-gg``), hours ``4`` or ``3,5``; the delimiter is found from
the header (``;`` from Italian spreadsheets); a file that is not UTF-8 is read as Windows-1252.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from connectors.framework import (
    Column,
    Connector,
    CsvReader,
    Emit,
    Ledger,
    Row,
    Summary,
    code_table,
    local_midnight,
)
from hub.publisher import Publisher, subject

ZONE = "Europe/Rome"
AGENCY = "eri"



ORGANISATIONS = code_table(
    ("it_social_services", "uepe", "collegno", "eri"),
    servizi_sociali="it_social_services", cisap="it_social_services",
    distretto_1="it_social_services", comune_di_collegno="collegno",
)  # fmt: skip
PROGRAMMES = code_table(("lcp", "mentoring", "employment_support"),
                    inserimento_lavorativo="employment_support",
                    tutoraggio="mentoring")  # fmt: skip
SCOPES = code_table(
    ("share_with_social_services", "share_with_uepe", "share_with_employer", "research",
     "programme_participation"),
    servizi_sociali="share_with_social_services", uepe="share_with_uepe",
    datore_di_lavoro="share_with_employer", ricerca="research",
    partecipazione="programme_participation",
)  # fmt: skip
METHODS = code_table(
    ("written", "verbal_recorded", "electronic"),
    scritto="written", verbale="verbal_recorded", elettronico="electronic",
)  # fmt: skip
SETTINGS = code_table(("community", "custodial"), comunita="community", comunità="community",
                  carcere="custodial")  # fmt: skip
PERIODS = code_table(("am", "pm", "full_day", "evening"), mattina="am", pomeriggio="pm",
                 giornata_intera="full_day", sera="evening")  # fmt: skip
THEMES = code_table(
    ("communication", "values_and_beliefs", "making_a_change", "cv_and_interview", "market_place",
     "judgement_and_respect", "victim_awareness", "offender_behaviour",
     "communication_and_teamwork", "respect", "goal_setting", "restorative_justice",
     "team_building", "work_experience", "graduation"),
    comunicazione="communication", valori_e_convinzioni="values_and_beliefs",
    cambiamento="making_a_change", cv_e_colloquio="cv_and_interview", mercato="market_place",
    giudizio_e_rispetto="judgement_and_respect", vittime="victim_awareness",
    comportamento="offender_behaviour", lavoro_di_squadra="communication_and_teamwork",
    rispetto="respect", obiettivi="goal_setting", giustizia_riparativa="restorative_justice",
    esperienza_lavorativa="work_experience", consegna_attestati="graduation",
)  # fmt: skip
ABSENCES = code_table(
    ("illness", "legal_visit", "prison_regime", "transferred", "released", "refused", "work",
     "unknown"),
    malattia="illness", udienza="legal_visit", trasferito="transferred", rifiuto="refused",
    lavoro="work", sconosciuto="unknown",
)  # fmt: skip
EMPLOYMENT = code_table(
    ("full_time", "part_time", "trial_position", "job_contract", "job_scholarship",
     "work_placement", "internship_day", "self_employment", "social_enterprise"),
    tempo_pieno="full_time", contratto="job_contract", periodo_di_prova="trial_position",
    prova="trial_position", borsa_lavoro="job_scholarship", tirocinio="work_placement",
    giornata_di_stage="internship_day", lavoro_autonomo="self_employment",
    impresa_sociale="social_enterprise",
)  # fmt: skip
KINDS = ("segnalazione", "consenso", "revoca_consenso", "iscrizione", "presenza", "assenza",
         "tirocinio", "completamento", "invito_mentore", "esito_occupazionale")  # fmt: skip

COLUMNS = (
    Column("id_registrazione", aliases=("id registrazione", "n_registrazione")),
    Column("tipo_registrazione", aliases=("tipo",)),
    Column("id_partecipante", aliases=("partecipante",)),
    Column("codice_fiscale", required=False, aliases=("cf",)),
    Column("cognome", required=False),
    Column("nome", required=False),
    Column("data_di_nascita", required=False, aliases=("data nascita",)),
    Column("data", doc="the day of the fact"),
    Column("ente", required=False, doc="who referred (segnalazione)"),
    Column("programma", required=False),
    Column("motivo", required=False, doc="the reason of a referral; never for a withdrawal"),
    Column("rif_consenso", required=False),
    Column("ambiti_consenso", required=False),
    Column("raccolto_da", required=False),
    Column("modalita", required=False, aliases=("modalità",)),
    Column("edizione", required=False, doc="the LCP run, e.g. Torino 3"),
    Column("contesto", required=False),
    Column("sessione", required=False),
    Column("tema", required=False),
    Column("fascia", required=False),
    Column("ore", required=False),
    Column("motivo_assenza", required=False),
    Column("datore_di_lavoro", required=False),
    Column("esito_occupazionale", required=False),
    Column("settore", required=False),
    Column("ore_settimanali", required=False),
    Column("data_fine", required=False),
    Column("attestato", required=False),
    Column("famiglia_presente", required=False),
    Column("sessioni_frequentate", required=False),
    Column("sessioni_totali", required=False),
    Column("criterio_soddisfatto", required=False),
    Column("accettato", required=False),
)

# -- the codice fiscale ---------------------------------------------------------------------

_CF = re.compile(r"^[A-Z]{6}[0-9LMNPQRSTUV]{2}[ABCDEHLMPRST][0-9LMNPQRSTUV]{2}[A-Z]"
                 r"[0-9LMNPQRSTUV]{3}[A-Z]$")  # fmt: skip
_ODD = dict(zip("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ",
                [1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20,
                 11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24, 23], strict=True))  # fmt: skip
_MONTHS = "ABCDEHLMPRST"
_OMOCODIA = str.maketrans("LMNPQRSTUV", "0123456789")


def check_character(first15: str) -> str:
    """The codice fiscale's 16th character, computed from the first 15."""
    total = 0
    for i, c in enumerate(first15):
        total += _ODD[c] if i % 2 == 0 else (int(c) if c.isdigit() else ord(c) - ord("A"))
    return chr(ord("A") + total % 26)


def codice_fiscale(row: Row, born: dt.date | None) -> str | None:
    value = row.text("codice_fiscale", max_len=20)
    if value is None:
        return None
    cf = value.replace(" ", "").upper()
    if not _CF.match(cf):
        row.error("codice_fiscale", f"{value!r} is not a codice fiscale "
                  "(16 characters, e.g. RSSMRA85T10A562S)")  # fmt: skip
        return None
    if check_character(cf[:15]) != cf[15]:
        row.error("codice_fiscale", f"{value!r}: the check character should be "
                  f"{check_character(cf[:15])}")  # fmt: skip
        return None
    if born is not None:
        year = int(cf[6:8].translate(_OMOCODIA))
        month = _MONTHS.index(cf[8]) + 1
        day = int(cf[9:11].translate(_OMOCODIA)) % 40
        if (year, month, day) != (born.year % 100, born.month, born.day):
            row.error(
                "codice_fiscale",
                f"{value!r} does not match data_di_nascita "
                f"{born:%d/%m/%Y} (it is another person's, or one of the two is wrong)",
            )
            return None
    return cf


# -- one row --------------------------------------------------------------------------------


def _minutes(row: Row, key: str) -> int | None:
    value = row.text(key, max_len=10)
    if value is None:
        return None
    try:
        hours = decimal.Decimal(value.replace(",", "."))
        if not hours.is_finite() or not 0 < hours <= 24:
            raise decimal.InvalidOperation
    except decimal.InvalidOperation:
        row.error(key, f"{value!r} is not a number of hours (e.g. 4 or 3,5)")
        return None
    return int((hours * 60).to_integral_value(decimal.ROUND_HALF_UP))


def _scopes(row: Row, key: str) -> list[str]:
    value = row.text(key, required=True, max_len=300)
    out = []
    for part in re.split(r"[;,|/]", value or ""):
        if part.strip():
            code = SCOPES.get("_".join(part.strip().casefold().split()))
            if code is None:
                row.error(key, f"{part.strip()!r} is not a consent scope (expected "
                          f"{', '.join(sorted(SCOPES))})")  # fmt: skip
            elif code not in out:
                out.append(code)
    return out


def _event(row: Row, kind: str, day: dt.date, record_id: str) -> tuple[str, dict[str, Any]]:
    run_id = row.text("edizione", required=kind in ("iscrizione", "presenza", "assenza",
                      "tirocinio", "completamento", "invito_mentore"), max_len=60)  # fmt: skip
    if kind == "segnalazione":
        return "referral.created", {
            "referral_id": record_id, "programme": row.code("programma", PROGRAMMES, required=True),
            "referred_on": day, "referrer_org": row.code("ente", ORGANISATIONS, required=True),
            "receiving_org": AGENCY, "reason": row.text("motivo", max_len=1000),
        }  # fmt: skip
    if kind in ("consenso", "revoca_consenso"):
        common = {
            "consent_id": row.text("rif_consenso", required=True, max_len=40),
            "scopes": _scopes(row, "ambiti_consenso"),
            "captured_by": row.text("raccolto_da", required=True, max_len=100),
        }
        if kind == "consenso":
            return "consent.given", {**common, "given_on": day,
                                     "method": row.code("modalita", METHODS)}  # fmt: skip
        return "consent.withdrawn", {**common, "withdrawn_on": day}  # the reason stays at ERI
    if kind == "iscrizione":
        return "lcp.enrolled", {"run_id": run_id, "enrolled_on": day,
                                "setting": row.code("contesto", SETTINGS)}  # fmt: skip
    if kind == "presenza":
        return "lcp.session_attended", {
            "run_id": run_id, "session_number": row.integer("sessione", low=1, high=100),
            "session_date": day, "period": row.code("fascia", PERIODS),
            "theme": row.code("tema", THEMES, required=True),
            "duration_minutes": _minutes(row, "ore"),
        }  # fmt: skip
    if kind == "assenza":
        return "lcp.session_missed", {
            "run_id": run_id, "session_number": row.integer("sessione", low=1, high=100),
            "session_date": day, "theme": row.code("tema", THEMES),
            "reason": row.code("motivo_assenza", ABSENCES),
        }  # fmt: skip
    if kind == "tirocinio":
        return "lcp.work_experience_started", {
            "run_id": run_id, "started_on": day, "ended_on": row.date("data_fine"),
            "employer": row.text("datore_di_lavoro", required=True, max_len=200),
            "placement_type": row.code("esito_occupazionale", EMPLOYMENT),
        }  # fmt: skip
    if kind == "completamento":
        return "lcp.completed", {
            "run_id": run_id, "completed_on": day, "certificate_awarded": row.flag("attestato"),
            "family_attended": row.flag("famiglia_presente"),
            "sessions_attended": row.integer("sessioni_frequentate", low=0, high=100),
            "sessions_total": row.integer("sessioni_totali", low=1, high=100),
        }  # fmt: skip
    if kind == "invito_mentore":
        return "lcp.graduate_invited_as_mentor", {
            "run_id": run_id, "invited_on": day,
            "criterion_met": row.flag("criterio_soddisfatto"), "accepted": row.flag("accettato"),
        }  # fmt: skip
    return "outcome.employment_started", {
        "employment_type": row.code("esito_occupazionale", EMPLOYMENT, required=True),
        "started_on": day, "employer": row.text("datore_di_lavoro", max_len=200),
        "sector": row.text("settore", max_len=100),
        "hours_per_week": row.integer("ore_settimanali", low=1, high=80), "supported_by": AGENCY,
    }  # fmt: skip


def map_row(row: Row) -> Iterator[Emit]:
    record_id = row.text("id_registrazione", required=True, max_len=40)
    kind = row.text("tipo_registrazione", required=True, max_len=40)
    kind = "_".join(kind.casefold().split()) if kind else None
    participant = row.text("id_partecipante", required=True, max_len=40)
    day = row.date("data", required=True)
    born = row.date("data_di_nascita")
    cf = codice_fiscale(row, born)
    if kind is not None and kind not in KINDS:
        row.error("tipo_registrazione", f"{kind!r} is not a kind of registration (expected "
                  f"{', '.join(KINDS)})")  # fmt: skip
    if row.errors or kind is None or day is None or record_id is None or participant is None:
        return
    event_type, payload = _event(row, kind, day, record_id)
    if row.errors:
        return
    yield Emit(
        event_type,
        entity=f"registrazione/{record_id}",
        subject=subject(participant, "eri_participant_id", codice_fiscale=cf or ""),
        occurred_at=local_midnight(day, ZONE),
        payload=payload,
    )


CONNECTOR = Connector(
    name="eri",
    agency=AGENCY,
    source_system="eri-registro",
    jurisdiction="IT",
    reader=CsvReader(COLUMNS),
    map=map_row,
    patterns=("*.csv",),
    fallback_encoding="cp1252",
    correction_reason="keying_error",
    description="ERI Turin: the participants' register (CSV, Italian headers)",
)


def run(path: str | Path, publisher: Publisher, ledger: Ledger | str | Path | None = None,
        **options: Any) -> Summary:  # fmt: skip
    """Publish one register export with ``publisher`` (agency ``eri``); ``options`` go to
    :func:`connectors.framework.run_file` (``quarantine_dir``, ``encoding``, ``progress``)."""
    return CONNECTOR.run(path, publisher, ledger, **options)
