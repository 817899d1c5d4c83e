"""The deterministic records behind the golden wire files."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hub.publisher import event_id_for
from hub.serde.catalogue import Catalogue
from tests.factory import EventFactory

SCHEMA_ID = 4242
AT = dt.datetime(2015, 3, 2, 9, 30, tzinfo=dt.UTC)


def sample_record(catalogue: Catalogue, event_type: str) -> dict[str, Any]:
    """A full record of ``event_type``: the same on every machine and every run."""
    payload = EventFactory(catalogue, seed=sum(map(ord, event_type))).payload(event_type)
    name = catalogue.name_for(event_type)
    record: dict[str, Any] = {
        "envelope": {
            "event_id": event_id_for("police", "golden", event_type, "row-1"),
            "event_type": event_type,
            "schema_version": 1,
            "occurred_at": AT,
            "recorded_at": AT,
            "effective_date": AT.date(),
            "source_agency": "police",
            "source_system": "golden",
            "jurisdiction": "UK-ENG",
            "subject": {
                "local_id": "MP-0042",
                "local_id_scheme": "police_nominal_id",
                "identifiers": [{"scheme": "pnc_id", "value": "14/0123456J"}],
                "hub_subject_id": None,
            },
            "supersedes_event_id": None,
            "correction_reason": None,
            "sensitivity": "standard",
            "compartment": None,
            "consent_ref": None,
            "responsible_org": None,
        },
        "disclosure": None,
    }
    for field in catalogue.schema(name)["fields"]:
        if field["name"] not in record:
            record[field["name"]] = payload.get(field["name"])
    return record
