"""The publisher SDK that partner connectors use to put events on ``ingest.<agency>``.

It builds the envelope, gives every source record a deterministic ``event_id`` (so a re-run of the
same input publishes the same ids and the router drops the duplicates), validates each event
against its schema and reference data before sending, and raises delivery failures.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import structlog

from hub.crypto import FieldCrypto
from hub.domain.errors import ValidationError
from hub.serde.catalogue import Catalogue
from hub.serde.codec import AvroCodec
from hub.serde.events import check_event
from hub.topics import Topics

log = structlog.get_logger(__name__)

# uuid5 namespace of the hub's event ids; fixed forever, part of the contract.
EVENT_ID_NAMESPACE = uuid.UUID("6f1d7c2e-5b0a-4e8e-9a43-2f0d8b1c9e57")


def event_id_for(agency: str, source_system: str, event_type: str, source_key: str) -> str:
    """The deterministic id of one source record: the same record always gives the same id."""
    return str(
        uuid.uuid5(EVENT_ID_NAMESPACE, "\x1f".join((agency, source_system, event_type, source_key)))
    )


class RecordSink(Protocol):
    def send(
        self, topic: str, key: bytes | None, value: bytes, headers: Sequence[tuple[str, bytes]] = ()
    ) -> None: ...

    def flush(self, timeout: float = 60.0) -> None: ...


def subject(local_id: str, scheme: str, **identifiers: str) -> dict[str, Any]:
    """A subject block: the source-local id and any strong identifiers the source holds."""
    return {
        "local_id": local_id,
        "local_id_scheme": scheme,
        "identifiers": [{"scheme": k, "value": v} for k, v in sorted(identifiers.items()) if v],
        "hub_subject_id": None,
    }


class Publisher:
    def __init__(
        self,
        *,
        agency: str,
        source_system: str,
        jurisdiction: str,
        codec: AvroCodec,
        sink: RecordSink,
        topics: Topics | None = None,
        fields: FieldCrypto | None = None,
    ) -> None:
        self.agency = agency
        self.source_system = source_system
        self.jurisdiction = jurisdiction
        self.codec = codec
        self.catalogue: Catalogue = codec.catalogue
        self.sink = sink
        self.topic = (topics or Topics()).ingest(agency)
        self.published = 0
        self._field_names: dict[str, list[str]] = {}
        self.fields = fields  # sensitive values never reach ingest.* in clear

    def _fields(self, name: str) -> list[str]:
        if name not in self._field_names:
            self._field_names[name] = [f["name"] for f in self.catalogue.schema(name)["fields"]]
        return self._field_names[name]

    def build(
        self,
        event_type: str,
        *,
        source_key: str,
        subject: Mapping[str, Any],
        occurred_at: dt.datetime,
        payload: Mapping[str, Any],
        recorded_at: dt.datetime | None = None,
        effective_date: dt.date | None = None,
        sensitivity: str = "standard",
        compartment: str | None = None,
        consent_ref: str | None = None,
        responsible_org: str | None = None,
        supersedes_event_id: str | None = None,
        correction_reason: str | None = None,
    ) -> dict[str, Any]:
        """An event record with its envelope. ``recorded_at`` defaults to ``occurred_at`` so that
        the same source record always gives the same bytes, not only the same id."""
        try:
            name = self.catalogue.name_for(event_type)
        except KeyError:
            raise ValidationError(
                f"{event_type!r} is not an event type of the catalogue",
                field="event_type",
                reason="unknown_event_type",
            ) from None
        fields = self._fields(name)
        unknown = sorted(set(payload) - set(fields) - {"envelope", "disclosure"})
        if unknown:
            raise ValidationError(
                f"{event_type}: {unknown[0]}: is not a field of {name}",
                field=unknown[0],
                reason="unknown_field",
            )
        envelope = {
            "event_id": event_id_for(self.agency, self.source_system, event_type, source_key),
            "event_type": event_type,
            "schema_version": 1,
            "occurred_at": occurred_at,
            "recorded_at": recorded_at or occurred_at,
            "effective_date": effective_date,
            "source_agency": self.agency,
            "source_system": self.source_system,
            "jurisdiction": self.jurisdiction,
            "subject": dict(subject),
            "supersedes_event_id": supersedes_event_id,
            "correction_reason": correction_reason,
            "sensitivity": sensitivity,
            "compartment": compartment,
            "consent_ref": consent_ref,
            "responsible_org": responsible_org,
        }
        record: dict[str, Any] = {"envelope": envelope}
        for field in fields:
            if field not in ("envelope", "disclosure"):
                record[field] = payload.get(field)
        record["disclosure"] = None
        return record

    def validate(self, record: Mapping[str, Any]) -> str:
        """Check schema, required fields, reference codes and the source agency; return the name."""
        name = self.codec.validate(record)
        envelope = record["envelope"]
        event_type = envelope["event_type"]
        if envelope["source_agency"] != self.agency:
            raise ValidationError(
                f"{event_type}: envelope.source_agency: {envelope['source_agency']!r} is not "
                f"this publisher's agency {self.agency!r}",
                field="envelope.source_agency",
                reason="source_mismatch",
            )
        if record.get("disclosure") is not None:
            raise ValidationError(
                f"{event_type}: disclosure: partners may not set it (the router does)",
                field="disclosure",
                reason="forged_disclosure",
            )
        check_event(self.catalogue, name, record)
        return name

    def publish(self, record: Mapping[str, Any]) -> str:
        """Validate, encode and send one event; returns its ``event_id``. Call ``flush`` to
        wait for the broker's acknowledgements (failures are raised there)."""
        self.validate(record)
        sealed: list[tuple[str, bytes]] = []
        if self.fields is not None:
            record, sealed = self.fields.seal(record)
        value = self.codec.encode(record)
        envelope = record["envelope"]
        key = envelope["subject"]["local_id"].encode()
        headers = [("event_type", envelope["event_type"].encode()), *sealed]
        self.sink.send(self.topic, key, value, headers)
        self.published += 1
        return str(envelope["event_id"])

    def flush(self, timeout: float = 60.0) -> None:
        self.sink.flush(timeout)
