"""One JSON document per event → an event record the Publisher validates and sends.

The document names the event and its source record; the payload uses the event schema's own
field names (``hub schemas list``)::

    {"event_type": "referral.created", "source_agency": "probation_crc",
     "source_system": "crc-case", "source_key": "REF-2014-0042",
     "occurred_at": "2014-06-02T10:00:00Z",
     "subject": {"local_id": "CRC-881", "local_id_scheme": "probation_case_ref",
                 "identifiers": [{"scheme": "pnc_id", "value": "PNC-1"}]},
     "payload": {"referral_id": "REF-2014-0042", "programme": "mentoring", ...}}

Optional: ``recorded_at`` (default ``occurred_at``), ``effective_date``, ``jurisdiction`` (the
agency's; another is refused), ``sensitivity`` (default ``standard``), ``compartment``,
``consent_ref``, ``responsible_org``, and for a correction ``supersedes_event_id`` or
``supersedes_source_key`` (the source key of the record it corrects, same event type) with
``correction_reason``.

Timestamps are ISO 8601 with a zone (``Z``), dates ``YYYY-MM-DD``, decimals a number or a string,
bytes base64. Every error names the field by its dotted path.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import decimal
from collections.abc import Mapping
from typing import Any

from hub.domain.errors import ValidationError
from hub.publisher import Publisher, event_id_for
from hub.serde.wire import named_types

REQUIRED = ("event_type", "source_agency", "source_system", "source_key", "occurred_at",
            "subject", "payload")  # fmt: skip
OPTIONAL = ("recorded_at", "effective_date", "jurisdiction", "sensitivity", "compartment",
            "consent_ref", "responsible_org", "supersedes_event_id", "supersedes_source_key",
            "correction_reason")  # fmt: skip
SUBJECT_KEYS = ("local_id", "local_id_scheme", "identifiers")


def _fail(field: str, message: str, reason: str = "invalid") -> ValidationError:
    return ValidationError(f"{field}: {message}", field=field, reason=reason)


def _text(doc: Mapping[str, Any], key: str, *, required: bool = True) -> str | None:
    value = doc.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise _fail(key, f"expected a non-empty string, got {_show(value)}")
    if len(value) > 200:
        raise _fail(key, "longer than 200 characters")
    return value


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def timestamp(value: Any, field: str) -> dt.datetime:
    if not isinstance(value, str):
        raise _fail(field, f"expected an ISO 8601 timestamp string, got {_show(value)}")
    try:
        instant = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _fail(field, f"{_show(value)} is not an ISO 8601 timestamp "
                           "(e.g. 2014-06-02T10:00:00Z)") from None  # fmt: skip
    if instant.tzinfo is None:
        raise _fail(field, f"{_show(value)} has no time zone (add Z or +01:00)")
    return instant.astimezone(dt.UTC)


def date(value: Any, field: str) -> dt.date:
    if not isinstance(value, str):
        raise _fail(field, f"expected a date string YYYY-MM-DD, got {_show(value)}")
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise _fail(field, f"{_show(value)} is not a date YYYY-MM-DD") from None


def subject_from(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail("subject", f"expected an object, got {_show(value)}")
    unknown = sorted(set(value) - set(SUBJECT_KEYS))
    if unknown:
        raise _fail(f"subject.{unknown[0]}", "is not a field of subject "
                    f"(expected {', '.join(SUBJECT_KEYS)})", "unknown_field")  # fmt: skip
    local_id = _text(value, "local_id")
    scheme = _text(value, "local_id_scheme")
    identifiers = value.get("identifiers", [])
    if not isinstance(identifiers, list):
        raise _fail("subject.identifiers", "expected a list of {scheme, value}")
    out = []
    for i, item in enumerate(identifiers):
        where = f"subject.identifiers[{i}]"
        if not isinstance(item, Mapping) or set(item) != {"scheme", "value"}:
            raise _fail(where, "expected an object with exactly scheme and value")
        if not all(isinstance(item[k], str) and item[k] for k in ("scheme", "value")):
            raise _fail(where, "scheme and value must be non-empty strings")
        out.append({"scheme": item["scheme"], "value": item["value"]})
    return {"local_id": local_id, "local_id_scheme": scheme, "identifiers": out,
            "hub_subject_id": None}  # fmt: skip


def record_from(doc: Any, publisher_for: Any, jurisdictions: Mapping[str, str]) -> dict[str, Any]:
    """The event record of one document. ``publisher_for(agency, source_system, jurisdiction)``
    gives the Publisher that builds and validates it; ``jurisdictions`` maps agency → code."""
    if not isinstance(doc, Mapping):
        raise _fail("document", f"expected a JSON object, got {_show(doc)}")
    unknown = sorted(set(doc) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise _fail(unknown[0], "is not a field of an ingest document (payload fields go "
                    "inside payload)", "unknown_field")  # fmt: skip
    for key in REQUIRED:
        if key not in doc:
            raise _fail(key, "is required and missing", "required")
    event_type = _text(doc, "event_type")
    agency = _text(doc, "source_agency")
    assert event_type is not None and agency is not None
    home = jurisdictions.get(agency, "")
    claimed = _text(doc, "jurisdiction", required=False)
    publisher: Publisher = publisher_for(agency, _text(doc, "source_system"), home)
    if claimed is not None and claimed != home:
        raise _fail("jurisdiction", f"{claimed!r} is not {agency}'s jurisdiction {home!r} "
                    "(person-level data stays in its jurisdiction)", "jurisdiction")  # fmt: skip
    catalogue = publisher.catalogue
    if event_type not in catalogue:
        raise _fail("event_type", f"{event_type!r} is not an event type of the catalogue "
                    "(hub schemas list)", "unknown_event_type")  # fmt: skip
    payload = doc["payload"]
    if not isinstance(payload, Mapping):
        raise _fail("payload", f"expected an object, got {_show(payload)}")
    schema = catalogue.schema(event_type)
    named = named_types(schema)
    fields = {f["name"]: f for f in schema["fields"] if f["name"] not in ("envelope", "disclosure")}
    for key in payload:
        if key not in fields:
            raise _fail(f"payload.{key}", f"is not a field of {event_type}", "unknown_field")
    values = {
        name: from_json(f["type"], payload[name], f"payload.{name}", named)
        for name, f in fields.items()
        if name in payload
    }
    supersedes = _text(doc, "supersedes_event_id", required=False)
    old_key = _text(doc, "supersedes_source_key", required=False)
    if supersedes and old_key:
        raise _fail("supersedes_source_key", "give supersedes_event_id or supersedes_source_key, "
                    "not both")  # fmt: skip
    if old_key:
        supersedes = event_id_for(agency, publisher.source_system, event_type, old_key)
    effective = doc.get("effective_date")
    return publisher.build(
        event_type,
        source_key=str(_text(doc, "source_key")),
        subject=subject_from(doc["subject"]),
        occurred_at=timestamp(doc["occurred_at"], "occurred_at"),
        recorded_at=(
            timestamp(doc["recorded_at"], "recorded_at")
            if doc.get("recorded_at") is not None
            else None
        ),  # fmt: skip
        effective_date=None if effective is None else date(effective, "effective_date"),
        payload=values,
        sensitivity=_text(doc, "sensitivity", required=False) or "standard",
        compartment=_text(doc, "compartment", required=False),
        consent_ref=_text(doc, "consent_ref", required=False),
        responsible_org=_text(doc, "responsible_org", required=False),
        supersedes_event_id=supersedes,
        correction_reason=_text(doc, "correction_reason", required=False),
    )


def from_json(schema: Any, value: Any, path: str, named: Mapping[str, Any]) -> Any:
    """``value`` as the Avro type ``schema`` expects; ``ValidationError`` naming ``path``."""
    if isinstance(schema, list):
        if value is None:
            if "null" in schema:
                return None
            raise _fail(path, "must not be null")
        branches = [b for b in schema if b != "null"]
        if len(branches) == 1:
            return from_json(branches[0], value, path, named)
        raise _fail(path, "union fields are not accepted over HTTP")
    if isinstance(schema, str) and schema in named:
        schema = named[schema]
    if isinstance(schema, str):
        schema = {"type": schema}
    kind, logical = schema["type"], schema.get("logicalType")
    if isinstance(kind, (dict, list)):
        return from_json(kind, value, path, named)
    if value is None:
        raise _fail(path, "must not be null")
    if kind == "record":
        if not isinstance(value, Mapping):
            raise _fail(path, f"expected an object, got {_show(value)}")
        fields = {f["name"]: f for f in schema["fields"]}
        for key in value:
            if key not in fields:
                raise _fail(f"{path}.{key}", "is not a field", "unknown_field")
        return {
            name: (from_json(f["type"], value[name], f"{path}.{name}", named)
                   if name in value else f.get("default"))
            for name, f in fields.items()
        }  # fmt: skip
    if kind == "array":
        if not isinstance(value, list):
            raise _fail(path, f"expected a list, got {_show(value)}")
        return [from_json(schema["items"], v, f"{path}[{i}]", named) for i, v in enumerate(value)]
    if kind == "map":
        if not isinstance(value, Mapping):
            raise _fail(path, f"expected an object, got {_show(value)}")
        return {str(k): from_json(schema["values"], v, f"{path}.{k}", named)
                for k, v in value.items()}  # fmt: skip
    if logical == "timestamp-millis":
        return timestamp(value, path)
    if logical == "date":
        return date(value, path)
    if logical == "decimal":
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise _fail(path, f"expected a decimal number, got {_show(value)}")
        try:
            number = decimal.Decimal(str(value))
            return number.quantize(decimal.Decimal(1).scaleb(-schema.get("scale", 0)))
        except decimal.InvalidOperation:
            raise _fail(path, f"{_show(value)} is not a decimal number") from None
    if kind in ("string", "enum"):
        if not isinstance(value, str):
            raise _fail(path, f"expected a string, got {_show(value)}")
        return value
    if kind in ("int", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(path, f"expected an integer, got {_show(value)}")
        return value
    if kind in ("float", "double"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(path, f"expected a number, got {_show(value)}")
        return float(value)
    if kind == "boolean":
        if not isinstance(value, bool):
            raise _fail(path, f"expected true or false, got {_show(value)}")
        return value
    if kind in ("bytes", "fixed"):
        try:
            return base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError):
            raise _fail(path, "expected base64 text") from None
    raise _fail(path, f"type {kind!r} is not accepted over HTTP")
