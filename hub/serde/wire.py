"""The Confluent wire format and Avro binary encode/decode, with one error type: ``SerdeError``.

A value is: magic byte 0, a 4-byte big-endian schema id, then the Avro binary body. fastavro's
``ValueError``/``TypeError``/``EOFError``/... become ``SerdeError`` with a stable reason code and,
when known, the topic, partition and offset of the record. Trailing bytes are rejected.
"""

from __future__ import annotations

import datetime as dt
import decimal
import io
import struct
import uuid
from collections.abc import Mapping
from typing import Any

from fastavro import schemaless_reader, schemaless_writer

from hub.domain.errors import SerdeError, ValidationError

MAGIC = 0
HEADER = struct.Struct(">bI")
# The hub's own per-event limit, smaller than the broker's (RELIABILITY.md A6): what the router
# writes for an event (a delivery with its disclosure record, or the DLQ copy with its headers)
# must stay under its producer's message.max.bytes (librdkafka's default, 1,000,000 bytes).
MAX_VALUE_BYTES = 512 * 1024


def frame(schema_id: int, body: bytes) -> bytes:
    return HEADER.pack(MAGIC, schema_id) + body


def unframe(value: bytes | None, **where: Any) -> tuple[int, bytes]:
    """Split a Confluent-framed value into (schema id, Avro body)."""
    if value is None:
        raise SerdeError("null value (tombstones are not events)", reason="null_value", **where)
    if len(value) == 0:
        raise SerdeError("empty value", reason="empty_value", **where)
    if len(value) > MAX_VALUE_BYTES:
        raise SerdeError(
            f"value of {len(value)} bytes exceeds the limit of {MAX_VALUE_BYTES}",
            reason="oversize",
            **where,
        )
    if value[0] != MAGIC:
        raise SerdeError(
            f"magic byte is {value[0]}, expected 0 (Confluent wire format)",
            reason="bad_magic",
            **where,
        )
    if len(value) < HEADER.size:
        raise SerdeError("value shorter than the 5-byte wire header", reason="truncated", **where)
    _, schema_id = HEADER.unpack_from(value)
    return schema_id, value[HEADER.size :]


def encode_body(parsed_schema: Any, record: Mapping[str, Any]) -> bytes:
    """Avro-encode a record that has already been validated against ``parsed_schema``."""
    out = io.BytesIO()
    try:
        schemaless_writer(out, parsed_schema, record)
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
        raise SerdeError(f"cannot encode record: {exc}", reason="encode_failed") from exc
    return out.getvalue()


def decode_body(
    parsed_schema: Any,
    body: bytes,
    names: dict[str, Any] | None = None,
    reader_schema: Any = None,
    **where: Any,
) -> dict[str, Any]:
    """Avro-decode ``body`` written with ``parsed_schema`` (resolved into ``reader_schema`` when
    given); every failure, and any trailing byte, is a ``SerdeError``."""
    stream = io.BytesIO(body)
    try:
        record = schemaless_reader(stream, parsed_schema, reader_schema)
    except EOFError as exc:
        raise SerdeError("Avro body ends early", reason="truncated", **where) from exc
    except (UnicodeDecodeError, decimal.InvalidOperation) as exc:
        raise SerdeError(
            f"undecodable value: {exc.__class__.__name__}", reason="invalid_avro", **where
        ) from exc
    except (
        ValueError,
        TypeError,
        IndexError,
        KeyError,
        OverflowError,
        MemoryError,
        struct.error,
    ) as exc:
        raise SerdeError(f"invalid Avro body: {exc}"[:200], reason="invalid_avro", **where) from exc
    if stream.tell() != len(body):
        raise SerdeError(
            f"{len(body) - stream.tell()} trailing bytes after the Avro record",
            reason="trailing_bytes",
            **where,
        )
    if not isinstance(record, dict):
        raise SerdeError("Avro body is not a record", reason="invalid_record", **where)
    try:
        validate(reader_schema or parsed_schema, record, names)
    except ValidationError as exc:
        raise SerdeError(
            f"decoded record is invalid: {exc}", reason="invalid_record", **where
        ) from exc
    return record


# -- validation -------------------------------------------------------------------------------
# fastavro's own validator reports whole schemas; this one names the first bad field by its
# dotted path and says what would have been accepted.

_INT_RANGE = (-(2**31), 2**31 - 1)
_LONG_RANGE = (-(2**63), 2**63 - 1)


_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "string", "bytes"}


def named_types(schema: Any, found: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every named type (record, enum, fixed) defined anywhere in ``schema``, by full name."""
    found = {} if found is None else found
    if isinstance(schema, list):
        for branch in schema:
            named_types(branch, found)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in ("record", "error", "enum", "fixed") and "name" in schema:
            found.setdefault(schema["name"], schema)
        for field in schema.get("fields", ()):
            named_types(field["type"], found)
        for key in ("items", "values"):
            if key in schema:
                named_types(schema[key], found)
        if isinstance(kind, (dict, list)):
            named_types(kind, found)
    return found


def validate(parsed_schema: Any, record: Any, names: dict[str, Any] | None = None) -> None:
    """Raise ``ValidationError`` naming the first field of ``record`` that the schema refuses."""
    names = names if names is not None else named_types(parsed_schema)
    problem = _check(parsed_schema, record, "", names)
    if problem is not None:
        path, message = problem
        raise ValidationError(f"{path or 'record'}: {message}", field=path or None)


def _type_name(schema: Any) -> str:
    if isinstance(schema, str):
        return schema
    if isinstance(schema, list):
        return " or ".join(_type_name(s) for s in schema)
    logical = schema.get("logicalType")
    if logical:
        return logical
    return str(schema.get("name", schema.get("type")))


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check(schema: Any, value: Any, path: str, names: dict[str, Any]) -> tuple[str, str] | None:
    if isinstance(schema, str) and schema not in _PRIMITIVES:
        schema = names[schema]
    if isinstance(schema, dict) and isinstance(schema["type"], (dict, list)):
        schema = schema["type"]
    if isinstance(schema, list):
        if value is None and "null" in schema:
            return None
        if value is None:
            return path, "is missing (null), expected " + _type_name(schema)
        problems = [_check(branch, value, path, names) for branch in schema if branch != "null"]
        if any(p is None for p in problems):
            return None
        found = [p for p in problems if p is not None]
        return (
            found[0]
            if len(found) == 1
            else (path, f"{_describe(value)} is not a {_type_name(schema)}")
        )
    kind = schema if isinstance(schema, str) else schema["type"]
    logical = None if isinstance(schema, str) else schema.get("logicalType")
    if value is None and kind != "null":
        return path, f"is missing (null), expected {_type_name(schema)}"
    if logical == "timestamp-millis":
        if isinstance(value, dt.datetime):
            return None if value.tzinfo is not None else (path, "timestamp needs a timezone (UTC)")
        return (
            None
            if isinstance(value, int) and not isinstance(value, bool)
            else (path, f"{_describe(value)} is not a timestamp")
        )
    if logical == "date":
        ok = isinstance(value, dt.date) and not isinstance(value, dt.datetime)
        return None if ok else (path, f"{_describe(value)} is not a date (YYYY-MM-DD)")
    if logical == "decimal":
        if not isinstance(value, decimal.Decimal):
            return path, f"{_describe(value)} is not a decimal amount"
        sign, digits, exponent = value.as_tuple()
        scale = schema.get("scale", 0)
        if not isinstance(exponent, int) or -exponent > scale:
            return path, f"{value} has more than {scale} decimal places"
        if len(digits) - (-exponent) > schema["precision"] - scale:
            return path, f"{value} does not fit precision {schema['precision']}"
        return None
    if logical == "uuid" and kind == "string":
        try:
            uuid.UUID(str(value))
        except ValueError:
            return path, f"{_describe(value)} is not a UUID"
        return None
    if kind == "null":
        return None if value is None else (path, "must be null")
    if kind == "boolean":
        return None if isinstance(value, bool) else (path, f"{_describe(value)} is not true/false")
    if kind in ("int", "long"):
        low, high = _INT_RANGE if kind == "int" else _LONG_RANGE
        if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
            return None
        return path, f"{_describe(value)} is not a whole number in the {kind} range"
    if kind in ("float", "double"):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if ok else (path, f"{_describe(value)} is not a number")
    if kind == "string":
        return None if isinstance(value, str) else (path, f"{_describe(value)} is not text")
    if kind == "bytes":
        return None if isinstance(value, (bytes, bytearray)) else (path, "is not bytes")
    if kind == "enum":
        symbols = schema["symbols"]
        return (
            None
            if value in symbols
            else (path, f"{_describe(value)} is not one of {', '.join(symbols)}")
        )
    if kind == "fixed":
        ok = isinstance(value, (bytes, bytearray)) and len(value) == schema["size"]
        return None if ok else (path, f"is not {schema['size']} bytes")
    if kind == "array":
        if not isinstance(value, (list, tuple)):
            return path, f"{_describe(value)} is not a list"
        for index, item in enumerate(value):
            problem = _check(schema["items"], item, f"{path}[{index}]", names)
            if problem:
                return problem
        return None
    if kind == "map":
        if not isinstance(value, Mapping):
            return path, "is not a mapping"
        for key, item in value.items():
            if not isinstance(key, str):
                return path, "map keys must be text"
            problem = _check(schema["values"], item, f"{path}[{key!r}]", names)
            if problem:
                return problem
        return None
    if kind in ("record", "error"):
        if not isinstance(value, Mapping):
            return path, f"{_describe(value)} is not a record"
        known = {f["name"] for f in schema["fields"]}
        unknown = sorted(set(value) - known)
        if unknown:
            where = f"{path}.{unknown[0]}" if path else unknown[0]
            return where, f"is not a field of {schema['name']}"
        for field in schema["fields"]:
            name = field["name"]
            child = f"{path}.{name}" if path else name
            if name not in value:
                if "default" in field:
                    continue
                return child, "is missing and has no default"
            problem = _check(field["type"], value[name], child, names)
            if problem:
                return problem
        return None
    return path, f"unsupported schema type {kind!r}"
