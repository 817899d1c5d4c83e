"""HMP Liverpool: the release schedule (CSV) -> ``custody.release_scheduled`` on
``ingest.hmp_liverpool``.

One row per booking due for release; the schedule is exported whole, and again whenever it
changes. Each row is one fact, entity ``release/<prison_number>/<booking_no>``: a release date,
type, address or offender manager changed on a later export is a **correction** of the earlier
event (``supersedes_event_id``, with ``change_reason`` as the reason: REQUIREMENTS §7 S1/S8),
which every partner that received the original receives too. ``MAPPING.md`` has every column.
"""

from __future__ import annotations

from collections.abc import Iterator

from connectors.framework import Column, Connector, CsvReader, Emit, Row, local_midnight
from hub.publisher import subject

AGENCY = "hmp_liverpool"
SOURCE_SYSTEM = "nomis"
ZONE = "Europe/London"
ESTABLISHMENT = "HMP Liverpool"

RELEASE_TYPES = {
    **{c: c for c in ("end_of_sentence", "on_licence", "home_detention_curfew",
                      "released_from_remand", "transfer_out", "deportation")},
    "CRD": "on_licence", "PRRD": "on_licence", "HDC": "home_detention_curfew",
    "ARD": "end_of_sentence", "SED": "end_of_sentence", "LED": "end_of_sentence",
    "REMAND": "released_from_remand", "TRANSFER": "transfer_out", "DEPORT": "deportation",
}  # fmt: skip
SUPERVISORS = {"CRC": "probation_crc", "NPS": "probation_nps", "probation_crc": "probation_crc",
               "probation_nps": "probation_nps"}  # fmt: skip
CHANGE_REASONS = {
    **{c: c for c in ("keying_error", "late_information", "amended_by_court", "other")},
    "KEYING": "keying_error", "LATE": "late_information", "COURT": "amended_by_court",
    "RECALC": "late_information",
}  # fmt: skip
SUPERVISED = ("on_licence", "home_detention_curfew")

COLUMNS = (
    Column("prison_number", aliases=("noms_number", "prisoner_number")),
    Column("booking_no", aliases=("booking",)),
    Column("pnc_id", required=False, aliases=("pnc",)),
    Column("release_date"),
    Column("release_type"),
    Column("scheduled_on", doc="when the release was scheduled in the prison's system"),
    Column("amended_on", required=False, doc="when this version of the row was entered"),
    Column("change_reason", required=False),
    Column("release_address_line1", required=False),
    Column("release_town", required=False),
    Column("release_postcode", required=False),
    Column("release_area", required=False),
    Column("supervising_body", required=False),
    Column("om_name", required=False),
    Column("om_phone", required=False),
    Column("om_email", required=False),
    Column("licence_end_date", required=False),
    Column("establishment", required=False),
)


def map_row(row: Row) -> Iterator[Emit]:
    number = row.text("prison_number", required=True, max_len=20)
    booking = row.text("booking_no", required=True, max_len=20)
    pnc = row.text("pnc_id", max_len=40)
    release_date = row.date("release_date", required=True)
    release_type = row.code("release_type", RELEASE_TYPES, required=True)
    scheduled_on = row.date("scheduled_on", required=True)
    amended_on = row.date("amended_on")
    change_reason = row.code("change_reason", CHANGE_REASONS)
    body = row.code("supervising_body", SUPERVISORS)
    licence_end = row.date("licence_end_date")
    area = row.text("release_area", max_len=60)
    line1 = row.text("release_address_line1", max_len=200)
    postcode = row.text("release_postcode", max_len=10)
    address = None
    if line1 or postcode:
        if not (line1 and postcode):
            missing = "release_postcode" if line1 else "release_address_line1"
            row.error(missing, "is empty, but the release address has its other part")
        address = {"line1": line1, "line2": None, "town": row.text("release_town", max_len=100),
                   "postcode": postcode, "area": area, "country": "GB", "kind": "home"}  # fmt: skip
    om = None
    om_name = row.text("om_name", max_len=100)
    om_phone = row.text("om_phone", max_len=40)
    om_email = row.text("om_email", max_len=200)
    if om_name or om_phone or om_email:
        if body is None:
            row.error("supervising_body", "is empty, but an offender manager is named")
        om = {"organisation": body, "role": "offender manager", "name": om_name,
              "phone": om_phone, "email": om_email}  # fmt: skip
    if release_type in SUPERVISED and body is None and not row.errors:
        row.error("supervising_body", f"is empty, but a release {release_type} is supervised")
    if release_date and licence_end and licence_end < release_date:
        row.error("licence_end_date", f"{licence_end} is before release_date {release_date}")
    if scheduled_on and amended_on and amended_on < scheduled_on:
        row.error("amended_on", f"{amended_on} is before scheduled_on {scheduled_on}")
    if row.errors or number is None or booking is None or scheduled_on is None:
        return
    yield Emit(
        "custody.release_scheduled",
        entity=f"release/{number}/{booking}",
        subject=subject(number, "prison_number", pnc_id=pnc or ""),
        occurred_at=local_midnight(amended_on or scheduled_on, ZONE),
        payload={
            "release_date": release_date,
            "release_type": release_type,
            "establishment": row.text("establishment", max_len=100) or ESTABLISHMENT,
            "release_address": address,
            "release_area": area,
            "supervising_body": body,
            "offender_manager": om,
            "licence_end_date": licence_end,
        },  # fmt: skip
        correction_reason=change_reason,
    )


CONNECTOR = Connector(
    name="prison",
    agency=AGENCY,
    source_system=SOURCE_SYSTEM,
    jurisdiction="UK-ENG",
    reader=CsvReader(COLUMNS),
    map=map_row,
    correction_reason="other",
    description="HMP Liverpool: the release schedule",
)
