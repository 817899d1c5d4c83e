"""Events to bytes and back: the catalogue's schemas, registered ids and the Confluent wire format.

``AvroCodec.encode`` validates against the catalogue schema before encoding; ``decode`` reads with
the writer's schema (looked up by id) resolved into the catalogue's current reader schema, so a
consumer keeps working while partners roll out BACKWARD-compatible versions.
``encode_derived`` encodes a record built from a decoded (so validated) event of the same type,
validating only what differs from that event: the router's deliveries, where a full second
validation per audience was most of the encoding cost.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastavro import parse_schema
from fastavro.schema import SchemaParseException

from hub.domain.errors import SerdeError, ValidationError
from hub.ports import SchemaRegistry
from hub.serde import wire
from hub.serde.catalogue import Catalogue


class AvroCodec:
    def __init__(self, catalogue: Catalogue, registry: SchemaRegistry) -> None:
        self.catalogue = catalogue
        self.registry = registry
        self._ids: dict[str, int] = {}
        self._names: dict[str, dict[str, Any]] = {}
        self._writers: dict[int, tuple[str, Any, Any]] = {}

    # -- registration ------------------------------------------------------------------------
    def register_all(self) -> dict[str, int]:
        """Register every catalogue schema under its record name (record name strategy)."""
        for name in self.catalogue.names():
            self.schema_id(name)
        return dict(self._ids)

    def schema_id(self, name: str) -> int:
        schema_id = self._ids.get(name)
        if schema_id is None:
            schema_id = self.registry.register(name, self.catalogue.canonical_json(name))
            self._ids[name] = schema_id
        return schema_id

    # -- encode ------------------------------------------------------------------------------
    def validate(self, record: Mapping[str, Any]) -> str:
        """Check ``record`` against its catalogue schema; return its Avro name."""
        event_type = _event_type(record)
        try:
            name = self.catalogue.name_for(event_type)
        except KeyError:
            raise ValidationError(
                f"envelope.event_type: unknown event type {event_type!r}",
                field="envelope.event_type",
                reason="unknown_event_type",
            ) from None
        parsed = self.catalogue.parsed(name)
        wire.validate(parsed, record, self._named(name))
        return name

    def encode(self, record: Mapping[str, Any]) -> bytes:
        name = self.validate(record)
        body = wire.encode_body(self.catalogue.parsed(name), record)
        return wire.frame(self.schema_id(name), body)

    def encode_derived(self, record: Mapping[str, Any], source: Mapping[str, Any]) -> bytes:
        """Encode ``record``, built from ``source``: an event of the same type that ``decode``
        returned (and so validated). Every field whose value differs from ``source``'s is
        validated, down through records (a changed ``envelope.subject`` is checked, an
        unchanged ``envelope.occurred_at`` is not); unknown and missing fields are refused as
        ``validate`` refuses them. Anything else is validated in full."""
        if _event_type(record) != _event_type(source):
            return self.encode(record)
        name = self.catalogue.name_for(_event_type(record))
        parsed = self.catalogue.parsed(name)
        _check_changed(parsed, record, source, "", self._named(name))
        return wire.frame(self.schema_id(name), wire.encode_body(parsed, record))

    # -- decode ------------------------------------------------------------------------------
    def decode(
        self,
        value: bytes | None,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """Decode a framed value into (Avro name, record); every failure is a ``SerdeError``."""
        where: dict[str, Any] = {"topic": topic, "partition": partition, "offset": offset}
        schema_id, body = wire.unframe(value, **where)
        name, writer, reader = self._schemas_for(schema_id, where)
        record = wire.decode_body(
            writer, body, self._named(name), reader, schema_id=schema_id, **where
        )
        # Type confusion: a body written for one event type, framed with the schema id of
        # another, can decode; its envelope then names a type whose fields it does not have.
        event_type = record["envelope"]["event_type"]
        if event_type != self.catalogue.event_type_for(name):
            raise SerdeError(
                f"envelope.event_type {event_type[:80]!r} does not match schema id {schema_id} "
                f"({name})",
                reason="event_type_mismatch",
                schema_id=schema_id,
                **where,
            )
        return name, record

    def _schemas_for(self, schema_id: int, where: dict[str, Any]) -> tuple[str, Any, Any]:
        """(Avro name, writer schema, reader schema or None when they are the same)."""
        cached = self._writers.get(schema_id)
        if cached is not None:
            return cached
        try:
            text = self.registry.schema_by_id(schema_id)
        except SerdeError as exc:
            raise SerdeError(str(exc), reason=exc.reason, schema_id=schema_id, **where) from exc
        try:
            writer_json = json.loads(text)
            name = writer_json.get("name", "") if isinstance(writer_json, dict) else ""
            if "." not in name and isinstance(writer_json, dict) and writer_json.get("namespace"):
                name = f"{writer_json['namespace']}.{name}"
            if name not in self.catalogue.names():
                raise SerdeError(
                    f"schema id {schema_id} is {name or 'not a record'}, not a catalogue event",
                    reason="unknown_event_type",
                    schema_id=schema_id,
                    **where,
                )
            current = self.catalogue.parsed(name)
            if json.loads(self.catalogue.canonical_json(name)) == writer_json:
                entry = (name, current, None)
            else:  # an older (or newer) version: resolve it into the current reader schema
                entry = (name, parse_schema(writer_json), current)
        except (ValueError, SchemaParseException) as exc:
            raise SerdeError(
                f"schema id {schema_id} is not valid Avro: {exc}",
                reason="invalid_schema",
                schema_id=schema_id,
                **where,
            ) from exc
        self._writers[schema_id] = entry
        return entry

    def _named(self, name: str) -> dict[str, Any]:
        names = self._names.get(name)
        if names is None:
            names = wire.named_types(self.catalogue.parsed(name))
            self._names[name] = names
        return names


@dataclass(frozen=True)
class _Shape:
    """What ``_check_changed`` needs of a record schema, worked out once per schema."""

    name: str
    known: frozenset[str]
    # (field name, type, its record schema if it is one (or null | one), nullable, has a default)
    fields: tuple[tuple[str, Any, Mapping[str, Any] | None, bool, bool], ...]


def _shape(schema: Mapping[str, Any], names: dict[str, Any]) -> _Shape:
    shape = _SHAPES.get(id(schema))
    if shape is None or shape[0] is not schema:
        fields = tuple(
            (
                f["name"], f["type"], _record_schema(f["type"], names),
                isinstance(f["type"], list) and "null" in f["type"], "default" in f,
            )
            for f in schema["fields"]
        )  # fmt: skip
        shape = (schema, _Shape(schema["name"], frozenset(f[0] for f in fields), fields))
        _SHAPES[id(schema)] = shape
    return shape[1]


_SHAPES: dict[int, tuple[Mapping[str, Any], _Shape]] = {}


def _check_changed(
    schema: Mapping[str, Any],
    record: Mapping[str, Any],
    source: Mapping[str, Any],
    path: str,
    names: dict[str, Any],
) -> None:
    """Validate the fields of ``record`` (a record of ``schema``) that differ from ``source``."""
    shape = _shape(schema, names)
    if not shape.known.issuperset(record):
        where = path + sorted(set(record) - shape.known)[0]
        raise ValidationError(f"{where}: is not a field of {shape.name}", field=where)
    for name, kind, nested, nullable, has_default in shape.fields:
        if name not in record:
            if has_default:
                continue
            where = path + name
            raise ValidationError(f"{where}: is missing and has no default", field=where)
        value, before = record[name], source.get(name)
        if value is before or (value is None and nullable):
            continue
        if type(value) is type(before) and value == before:
            continue
        if nested is not None and isinstance(value, Mapping) and isinstance(before, Mapping):
            _check_changed(nested, value, before, f"{path}{name}.", names)
            continue
        try:
            wire.validate(kind, value, names)
        except ValidationError as exc:
            inner = exc.field or ""
            where = path + name + ("" if not inner or inner.startswith("[") else ".") + inner
            message = str(exc).partition(": ")[2]
            raise ValidationError(f"{where}: {message}", field=where, reason=exc.reason) from None


def _record_schema(schema: Any, names: dict[str, Any]) -> Mapping[str, Any] | None:
    """The record schema of a field typed as a record or as a union of null and a record."""
    if isinstance(schema, list):
        branches = [b for b in schema if b != "null"]
        if len(branches) != 1:
            return None
        schema = branches[0]
    if isinstance(schema, str):
        schema = names.get(schema)
    if isinstance(schema, Mapping) and isinstance(schema.get("type"), Mapping):
        schema = schema["type"]
    if isinstance(schema, Mapping) and schema.get("type") == "record":
        return schema
    return None


def _event_type(record: Mapping[str, Any]) -> str:
    envelope = record.get("envelope")
    if not isinstance(envelope, Mapping) or not isinstance(envelope.get("event_type"), str):
        raise ValidationError("envelope.event_type: is missing", field="envelope.event_type")
    return envelope["event_type"]
