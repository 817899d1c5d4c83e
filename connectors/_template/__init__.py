"""A minimal file connector to copy: a CSV of people -> ``person.registered``.

Copy this folder to ``connectors/<partner>/``, set the agency and source system, declare the
columns, write ``map`` and ``MAPPING.md``, and add one line to ``connectors.PARTNERS``. The
framework (``connectors/framework.py``) reads the file, checks encodings, quarantines rejected
rows, keeps event ids deterministic and counts; see ``connectors/README.md``.
"""

from __future__ import annotations

from collections.abc import Iterator

from connectors.framework import Column, Connector, CsvReader, Emit, Row, local_midnight
from hub.publisher import subject

ZONE = "Europe/London"

COLUMNS = (
    Column("person_id", doc="the source system's own id of the person"),
    Column("given_name"),
    Column("family_name", required=False),
    Column("date_of_birth", required=False, doc="YYYY-MM-DD or DD/MM/YYYY"),
    Column("registered_on", doc="when the source recorded the person (never today's date)"),
)


def map_row(row: Row) -> Iterator[Emit]:
    person_id = row.text("person_id", required=True, max_len=40)
    given_name = row.text("given_name", required=True)
    family_name = row.text("family_name")
    date_of_birth = row.date("date_of_birth")
    registered_on = row.date("registered_on", required=True)
    if row.errors or person_id is None or registered_on is None:
        return  # the framework quarantines the row with every reason noted
    yield Emit(
        "person.registered",
        entity=f"person/{person_id}",
        subject=subject(person_id, "agency_id"),
        occurred_at=local_midnight(registered_on, ZONE),
        payload={
            "given_name": given_name,
            "family_name": family_name,
            "date_of_birth": date_of_birth,
        },  # fmt: skip
    )


CONNECTOR = Connector(
    name="template",
    agency="kmbc",
    source_system="template-csv",
    jurisdiction="UK-ENG",
    reader=CsvReader(COLUMNS),
    map=map_row,
    correction_reason="keying_error",
    description="A CSV of people (the skeleton to copy)",
)
