"""Probation (CRC and NPS): JSON events from the providers' case systems -> ``ingest.<provider>``.

Each provider exports the events of its own cases as ``{"events": [...]}`` (or JSON lines); one
document is one case-system event, with its own ``eventId``, the case reference (``crn``) and the
fields of its ``eventType``. ``MAPPING.md`` has every key and code.

| eventType | hub event |
| --- | --- |
| ``RESPONSIBILITY_ASSIGNED`` | ``supervision.responsibility_assigned`` |
| ``RESPONSIBILITY_TRANSFERRED`` | ``supervision.responsibility_transferred`` |
| ``LICENCE_CONDITIONS_SET`` | ``licence.conditions_set`` |
| ``LICENCE_CONDITIONS_VARIED`` | ``licence.conditions_varied`` |
| ``BREACH`` | ``supervision.breach_recorded`` |
| ``RECALL`` | ``supervision.recall`` |
| ``REFERRAL`` | ``referral.created`` |

Two connectors share the mapping: ``probation-crc`` publishes as ``probation_crc`` and
``probation-nps`` as ``probation_nps``; a document whose ``provider`` is the other one is
rejected (it is the other provider's fact). The entity of an event is ``case/<crn>/<eventId>``:
the same case-system event exported again with other content is a correction.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from connectors.framework import (
    Connector,
    Emit,
    JsonReader,
    Ledger,
    Record,
    RecordError,
    Row,
    Summary,
    code_table,
    local_midnight,
)
from hub.publisher import Publisher, subject

ZONE = "Europe/London"
SOURCE_SYSTEM = "probation-case"



PROVIDERS = {"CRC": "probation_crc", "NPS": "probation_nps", "TRUST": "probation_trust",
             "probation_crc": "probation_crc", "probation_nps": "probation_nps",
             "probation_trust": "probation_trust"}  # fmt: skip
BASES = code_table(
    ("licence", "post_sentence_supervision", "community_order", "suspended_sentence_order"),
    LIC="licence", PSS="post_sentence_supervision", CO="community_order",
    SSO="suspended_sentence_order",
)  # fmt: skip
ROSH = code_table(("low", "medium", "high", "very_high"))
TRANSFER_REASONS = code_table(
    ("organisational_change", "risk_level_changed", "relocation", "reallocation"),
    TR_SPLIT="organisational_change", ROSH_CHANGE="risk_level_changed",
)  # fmt: skip
CONDITION_TYPES = code_table(
    (
        "reside_at",
        "non_association",
        "exclusion_zone",
        "curfew",
        "electronic_monitoring",
        "report_to_om",
        "drug_testing",
        "no_victim_contact",
        "programme_attendance",
        "other",
    ),
    RESIDE="reside_at",
    NON_ASSOC="non_association",
    EXCLUSION="exclusion_zone",
    TAG="electronic_monitoring",
    REPORT="report_to_om",
    DRUG_TEST="drug_testing",
    NO_CONTACT="no_victim_contact",
    PROGRAMME="programme_attendance",
)
ADDRESS_KINDS = code_table(
    ("home", "family_home", "approved_premises", "hostel", "supported_housing", "night_shelter",
     "no_fixed_abode"),
    AP="approved_premises", NFA="no_fixed_abode", FAMILY="family_home",
)  # fmt: skip
BREACH_TYPES = code_table(
    ("exclusion_zone", "non_association", "curfew", "residence", "failure_to_attend", "absconded",
     "electronic_monitoring", "further_offence", "drug_test", "other"),
    FTA="failure_to_attend", ABSCOND="absconded", TAG="electronic_monitoring",
    NON_ASSOC="non_association",
)  # fmt: skip
BREACH_ACTIONS = code_table(
    ("warning", "arrest", "recall", "return_to_court", "no_further_action"),
    COURT="return_to_court", NFA="no_further_action",
)  # fmt: skip
RECALL_TYPES = code_table(("fixed_term", "standard", "revocation"), FTR="fixed_term")
PROGRAMMES = code_table(
    ("mentoring", "lcp", "drug_services", "mental_health", "housing", "employment_support",
     "debt_advice"),
    DRUGS="drug_services", EMPLOYMENT="employment_support", DEBT="debt_advice",
)  # fmt: skip
PATHWAYS = code_table(
    ("accommodation", "education_training_employment", "health", "drugs_alcohol",
     "finance_benefit_debt", "children_families", "attitudes_thinking_behaviour"),
    ETE="education_training_employment", FINANCE="finance_benefit_debt",
    FAMILY="children_families", ATTITUDES="attitudes_thinking_behaviour",
)  # fmt: skip
RECEIVERS = code_table(("mals", "kmbc", "drug_service", "police", "hmp_liverpool"),
                   DRUG_SERVICE="drug_service")  # fmt: skip


def _sub(row: Row, key: str, prefix: str, value: Any) -> Row:
    """A Row over a nested object (one licence condition); its errors are named ``prefix.x``."""
    if not isinstance(value, Mapping):
        raise RecordError(prefix, "expected an object")
    return Row(Record(row.record.file, row.record.line, "", dict(value)))


def _merge(row: Row, sub: Row, prefix: str) -> None:
    for field, message in sub.errors:
        row.error(f"{prefix}.{field}" if field else prefix, message)


def _list(row: Row, key: str, required: bool = False) -> list[Any]:
    value = row.get(key)
    if value is None:
        if required:
            row.error(key, "is empty (required)")
        return []
    if not isinstance(value, list):
        row.error(key, "expected a list")
        return []
    return value


def _texts(row: Row, key: str) -> list[str]:
    out = []
    for i, item in enumerate(_list(row, key)):
        if not isinstance(item, str) or not item.strip() or len(item) > 200:
            row.error(f"{key}[{i}]", f"expected a name of at most 200 characters, got {item!r:.40}")
        else:
            out.append(item.strip())
    return out


def _code_list(row: Row, key: str, codes: Mapping[str, str]) -> list[str]:
    out = []
    for i, item in enumerate(_list(row, key)):
        sub = Row(Record(row.record.file, row.record.line, "", {"v": item}))
        code = sub.code("v", codes)
        for _, message in sub.errors:
            row.error(f"{key}[{i}]", message)
        if code:
            out.append(code)
    return out


def _contact(row: Row, key: str) -> dict[str, Any] | None:
    value = row.get(key)
    if value is None:
        return None
    sub = _sub(row, key, key, value)
    contact = {
        "organisation": sub.text("organisation", max_len=100),
        "role": sub.text("role", max_len=100),
        "name": sub.text("name", max_len=100),
        "phone": sub.text("phone", max_len=40),
        "email": sub.text("email", max_len=200),
    }
    _merge(row, sub, key)
    return contact


def _conditions(row: Row, key: str, required: bool) -> list[dict[str, Any]]:
    out = []
    for i, value in enumerate(_list(row, key, required)):
        prefix = f"{key}[{i}]"
        sub = _sub(row, key, prefix, value)
        reside = None
        if sub.get("resideAt") is not None:
            place = _sub(sub, "resideAt", "resideAt", sub.get("resideAt"))
            reside = {
                "line1": place.text("line1", max_len=200),
                "line2": place.text("line2", max_len=200),
                "town": place.text("town", max_len=100),
                "postcode": place.text("postcode", max_len=10),
                "area": place.text("area", max_len=100),
                "country": place.text("country", max_len=60),
                "kind": place.code("kind", ADDRESS_KINDS),
            }
            _merge(sub, place, "resideAt")
        associates = _texts(sub, "namedAssociates")
        out.append({
            "condition_id": sub.text("conditionId", required=True, max_len=40),
            "condition_type": sub.code("type", CONDITION_TYPES, required=True),
            "summary": sub.text("summary", max_len=500),
            "details": sub.text("details", max_len=2000),
            "reside_at": reside,
            "named_associates": associates or None,
            "exclusion_area": sub.text("exclusionArea", max_len=200),
            "exclusion_zone_geometry": sub.text("exclusionZoneGeometry", max_len=20_000),
            "curfew_from": sub.text("curfewFrom", max_len=10),
            "curfew_until": sub.text("curfewUntil", max_len=10),
            "victim_related": sub.flag("victimRelated"),
        })  # fmt: skip
        _merge(row, sub, prefix)
    return out


def _payload(row: Row, event_type: str) -> tuple[str, Any, dict[str, Any]] | None:
    """(hub event type, the date the fact takes place, payload) of one case-system event."""
    if event_type == "RESPONSIBILITY_ASSIGNED":
        day = row.date("effectiveFrom", required=True)
        return "supervision.responsibility_assigned", day, {
            "supervising_body": row.code("supervisingBody", PROVIDERS, required=True),
            "offender_manager": _contact(row, "offenderManager"),
            "basis": row.code("basis", BASES), "risk_level": row.code("rosh", ROSH),
            "effective_from": day, "supervision_end": row.date("supervisionEnd"),
            "mappa_managed": row.flag("mappa"),
        }  # fmt: skip
    if event_type == "RESPONSIBILITY_TRANSFERRED":
        day = row.date("effectiveFrom", required=True)
        return "supervision.responsibility_transferred", day, {
            "from_body": row.code("fromBody", PROVIDERS, required=True),
            "to_body": row.code("toBody", PROVIDERS, required=True), "effective_from": day,
            "reason": row.code("reason", TRANSFER_REASONS, required=True),
            "risk_level": row.code("rosh", ROSH),
            "new_offender_manager": _contact(row, "newOffenderManager"),
            "previous_offender_manager": _contact(row, "previousOffenderManager"),
        }  # fmt: skip
    if event_type == "LICENCE_CONDITIONS_SET":
        day = row.date("licenceStart", required=True)
        return "licence.conditions_set", day, {
            "licence_start": day, "licence_end": row.date("licenceEnd"),
            "life_licence": row.flag("lifeLicence"),
            "conditions": _conditions(row, "conditions", required=True),
        }  # fmt: skip
    if event_type == "LICENCE_CONDITIONS_VARIED":
        day = row.date("variedOn", required=True)
        removed = _texts(row, "removedConditionIds")
        return "licence.conditions_varied", day, {
            "varied_on": day, "conditions": _conditions(row, "conditions", required=True),
            "removed_condition_ids": removed or None, "reason": row.text("reason", max_len=500),
        }  # fmt: skip
    if event_type == "BREACH":
        day = row.date("breachDate", required=True)
        return "supervision.breach_recorded", day, {
            "breach_date": day, "breach_type": row.code("breachType", BREACH_TYPES, required=True),
            "condition_id": row.text("conditionId", max_len=40),
            "whereabouts_unknown": row.flag("whereaboutsUnknown"),
            "action_taken": row.code("action", BREACH_ACTIONS),
            "details": row.text("details", max_len=2000),
        }  # fmt: skip
    if event_type == "RECALL":
        day = row.date("recalledOn", required=True)
        return "supervision.recall", day, {
            "recalled_on": day, "recall_type": row.code("recallType", RECALL_TYPES, required=True),
            "reason": row.text("reason", max_len=500),
        }  # fmt: skip
    if event_type == "REFERRAL":
        day = row.date("referredOn", required=True)
        return "referral.created", day, {
            "referral_id": row.text("referralId", required=True, max_len=40),
            "programme": row.code("programme", PROGRAMMES, required=True), "referred_on": day,
            "referrer_org": None,  # the connector's agency, set by map_row
            "referrer": _contact(row, "referrer"),
            "receiving_org": row.code("receivingOrg", RECEIVERS, required=True),
            "pathways": _code_list(row, "pathways", PATHWAYS) or None,
            "reason": row.text("reason", max_len=1000), "release_date": row.date("releaseDate"),
            "risk_level": row.code("rosh", ROSH),
            "offender_manager": _contact(row, "offenderManager"),
            "safety_information": row.text("safetyInformation", max_len=1000),
            "offence_summary": row.text("offenceSummary", max_len=1000),
            "mappa_notes": row.text("mappaNotes", max_len=2000),
        }  # fmt: skip
    row.error("eventType", f"{event_type!r} is not a known event type (expected "
                           f"{', '.join(EVENT_TYPES)})")  # fmt: skip
    return None


EVENT_TYPES = ("RESPONSIBILITY_ASSIGNED", "RESPONSIBILITY_TRANSFERRED", "LICENCE_CONDITIONS_SET",
               "LICENCE_CONDITIONS_VARIED", "BREACH", "RECALL", "REFERRAL")  # fmt: skip


def mapper(agency: str):  # type: ignore[no-untyped-def]
    def map_row(row: Row) -> Iterator[Emit]:
        event_id = row.text("eventId", required=True, max_len=60)
        crn = row.text("crn", required=True, max_len=20)
        noms = row.text("nomsNumber", max_len=20)
        pnc = row.text("pncNumber", max_len=20)
        provider = row.code("provider", PROVIDERS, required=True)
        kind = row.text("eventType", required=True, max_len=40)
        if provider and provider != agency:
            row.error("provider", f"{row.get('provider')!r} is not this connector's provider "
                      f"({agency}); that provider publishes its own events")  # fmt: skip
        built = _payload(row, kind) if kind else None
        if row.errors or built is None or event_id is None or crn is None:
            return
        event_type, day, payload = built
        if event_type == "referral.created":
            payload["referrer_org"] = agency
        yield Emit(
            event_type,
            entity=f"case/{crn}/{event_id}",
            subject=subject(
                crn, "probation_case_ref", prison_number=noms or "", pnc_id=pnc or ""
            ),  # fmt: skip
            occurred_at=local_midnight(day, ZONE),
            payload=payload,
            effective_date=day if event_type.startswith("supervision.responsibility") else None,
            responsible_org=agency,
        )

    return map_row


def _connector(name: str, agency: str, title: str) -> Connector:
    return Connector(
        name=name,
        agency=agency,
        source_system=SOURCE_SYSTEM,
        jurisdiction="UK-ENG",
        reader=JsonReader(items="events"),
        map=mapper(agency),
        patterns=("*.json", "*.jsonl"),
        correction_reason="keying_error",
        description=f"{title}: case-system events (JSON)",
    )


CRC = _connector("probation-crc", "probation_crc", "Merseyside CRC")
NPS = _connector("probation-nps", "probation_nps", "NPS Merseyside")
BY_AGENCY = {c.agency: c for c in (CRC, NPS)}


def run(path: str | Path, publisher: Publisher, ledger: Ledger | str | Path | None = None,
        **options: Any) -> Summary:  # fmt: skip
    """Publish one export with ``publisher`` (its agency picks CRC or NPS); ``options`` go to
    :func:`connectors.framework.run_file` (``quarantine_dir``, ``encoding``, ``progress``)."""
    connector = BY_AGENCY.get(publisher.agency)
    if connector is None:
        raise ValueError(f"no probation connector publishes as {publisher.agency!r} "
                         f"(expected one of {', '.join(BY_AGENCY)})")  # fmt: skip
    return connector.run(path, publisher, ledger, **options)
