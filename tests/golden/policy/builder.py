"""Build valid events from the compact descriptions the golden policy cases use.

An event is written as::

    type: custody.released          # event type
    from: hmp_liverpool             # source agency (its jurisdiction comes from agencies.yaml)
    subject: jordan                 # a person of the file's `people`, or {local_id, scheme}
    at: 2015-03-02T09:30:00Z        # occurred_at (recorded_at defaults to it)
    payload: {...}                  # payload fields; dates and timestamps as ISO text
    # optional: recorded_at, effective_date, sensitivity, compartment, consent_ref,
    #           responsible_org, supersedes (name of another event), correction_reason, system

and a person as::

    jordan:
      identifiers: {pnc_id: 14/0123456J}      # strong identifiers every source holds
      local_ids:                              # each agency's own id for the person
        hmp_liverpool: {prison_number: A1234BC}

Events are built with the real Publisher and validated against the catalogue (schema, required
fields, reference codes), so a golden case can never test an event a partner could not publish.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Mapping
from typing import Any

from hub.publisher import Publisher, subject
from hub.serde import wire
from hub.serde.catalogue import Catalogue


class _Codec:
    """The part of AvroCodec that Publisher.build/validate use, without a registry."""

    def __init__(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue

    def validate(self, record: Mapping[str, Any]) -> str:
        name = self.catalogue.name_for(record["envelope"]["event_type"])
        wire.validate(self.catalogue.parsed(name), record)
        return name


def parse_instant(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        instant = value
    else:
        instant = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if instant.tzinfo is None:
        raise ValueError(f"timestamp {value!r} has no time zone (add Z)")
    return instant.astimezone(dt.UTC)


def parse_date(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value))


def convert(schema: Any, value: Any, named: dict[str, Any]) -> Any:
    """JSON/YAML values to the Python values fastavro uses, following ``schema``."""
    if value is None:
        return None
    if isinstance(schema, list):
        branches = [b for b in schema if b != "null"]
        return convert(branches[0], value, named) if len(branches) == 1 else value
    if isinstance(schema, str):
        if schema in named:
            return convert(named[schema], value, named)
        return value
    kind = schema.get("type")
    if kind == "record":
        named[schema["name"]] = schema
        fields = {f["name"]: f for f in schema["fields"]}
        unknown = set(value) - set(fields)
        if unknown:
            raise ValueError(f"{schema['name']}: unknown fields {sorted(unknown)}")
        return {
            name: convert(f["type"], value.get(name), named) if name in value else None
            for name, f in fields.items()
        }
    if kind == "array":
        return [convert(schema["items"], v, named) for v in value]
    logical = schema.get("logicalType")
    if logical == "timestamp-millis":
        return parse_instant(value)
    if logical == "date":
        return parse_date(value)
    if logical == "decimal":
        return decimal.Decimal(str(value)).quantize(decimal.Decimal(1).scaleb(-schema["scale"]))
    return value


class EventBuilder:
    def __init__(
        self,
        catalogue: Catalogue,
        jurisdictions: Mapping[str, str],
        people: Mapping[str, Any] | None = None,
        namespace: str = "golden",
    ) -> None:
        self.catalogue = catalogue
        self.codec = _Codec(catalogue)
        self.jurisdictions = dict(jurisdictions)  # agency id -> jurisdiction
        self.people = dict(people or {})
        self.namespace = namespace
        self.ids: dict[str, str] = {}  # event name -> event id

    def subject_block(self, agency: str, who: Any) -> dict[str, Any]:
        if isinstance(who, Mapping):
            extra = {k: v for k, v in (who.get("identifiers") or {}).items()}
            return subject(str(who["local_id"]), str(who["scheme"]), **extra)
        person = self.people[who]
        local = (person.get("local_ids") or {}).get(agency)
        if not local:
            raise ValueError(f"{who} has no local id at {agency} (add people.{who}.local_ids)")
        ((scheme, local_id),) = local.items()
        return subject(
            str(local_id),
            scheme,
            **{k: str(v) for k, v in (person.get("identifiers") or {}).items()},
        )

    def build(self, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        event_type = spec["type"]
        agency = spec["from"]
        publisher = Publisher(
            agency=agency,
            source_system=spec.get("system", f"{agency}-system"),
            jurisdiction=spec.get("jurisdiction", self.jurisdictions.get(agency, "UK-ENG")),
            codec=self.codec,  # type: ignore[arg-type]
            sink=None,  # type: ignore[arg-type]
        )
        schema = self.catalogue.schema(event_type)
        named: dict[str, Any] = {}
        _collect_named(schema, named)  # shared types are defined inline at first use
        payload_schema = {
            "type": "record",
            "name": schema["name"],
            "fields": [f for f in schema["fields"] if f["name"] not in ("envelope", "disclosure")],
        }
        payload = convert(payload_schema, spec.get("payload") or {}, named)
        supersedes = spec.get("supersedes")
        record = publisher.build(
            event_type,
            source_key=f"{self.namespace}:{name}",
            subject=self.subject_block(agency, spec["subject"]),
            occurred_at=parse_instant(spec["at"]),
            recorded_at=parse_instant(spec["recorded_at"]) if spec.get("recorded_at") else None,
            effective_date=parse_date(spec["effective_date"])
            if spec.get("effective_date")
            else None,
            payload=payload,
            sensitivity=spec.get("sensitivity", "standard"),
            compartment=spec.get("compartment"),
            consent_ref=spec.get("consent_ref"),
            responsible_org=spec.get("responsible_org"),
            supersedes_event_id=self.ids.get(supersedes, supersedes) if supersedes else None,
            correction_reason=spec.get("correction_reason"),
        )
        publisher.validate(record)
        self.ids[name] = record["envelope"]["event_id"]
        return record


def _collect_named(schema: Any, named: dict[str, Any]) -> None:
    if isinstance(schema, list):
        for branch in schema:
            _collect_named(branch, named)
    elif isinstance(schema, dict):
        if schema.get("type") in ("record", "enum", "fixed") and "name" in schema:
            named.setdefault(schema["name"], schema)
        for f in schema.get("fields", []):
            _collect_named(f["type"], named)
        if schema.get("type") == "array":
            _collect_named(schema["items"], named)


def value_at(value: Any, path: str) -> Any:
    """The value at ``a.b.0.c`` (list indexes as numbers)."""
    for part in path.split("."):
        if value is None:
            return None
        if isinstance(value, list):
            value = value[int(part)]
        else:
            value = value.get(part)
    return value
