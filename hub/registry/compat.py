"""Avro schema parsing, canonical forms and Confluent compatibility levels.

The verdict always comes from ``avro.compatibility.ReaderWriterCompatibilityChecker``; this module
only chooses which (reader, writer) pairs a level asks for and turns the checker's locations
(JSON-pointer-like paths into the reader schema, such as ``/fields/2/type``) into one-line
messages that name the field, e.g.
``hub.events.CustodyReleased.release_type: reader field missing default``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import avro.errors
import avro.io
import avro.schema
from avro.compatibility import (
    ReaderWriterCompatibilityChecker,
    SchemaCompatibilityResult,
    SchemaCompatibilityType,
    lookup_writer_field,
)

from hub.domain.errors import SchemaError

NONE = "NONE"
BACKWARD = "BACKWARD"
BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
FORWARD = "FORWARD"
FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
FULL = "FULL"
FULL_TRANSITIVE = "FULL_TRANSITIVE"
COMPATIBILITY_LEVELS = (
    NONE,
    BACKWARD,
    BACKWARD_TRANSITIVE,
    FORWARD,
    FORWARD_TRANSITIVE,
    FULL,
    FULL_TRANSITIVE,
)
DEFAULT_COMPATIBILITY = BACKWARD

_READS_OLD = {BACKWARD, BACKWARD_TRANSITIVE, FULL, FULL_TRANSITIVE}
_OLD_READS = {FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE}
_TRANSITIVE = {BACKWARD_TRANSITIVE, FORWARD_TRANSITIVE, FULL_TRANSITIVE}


def parse_level(level: str) -> str:
    """The Confluent level named by ``level`` (any case); ``SchemaError`` if there is none."""
    upper = level.strip().upper() if isinstance(level, str) else ""
    if upper not in COMPATIBILITY_LEVELS:
        raise SchemaError(
            f"unknown compatibility level {level!r} "
            f"(expected one of {', '.join(COMPATIBILITY_LEVELS)})"
        )
    return upper


# --- parsing and canonical forms -------------------------------------------------------------


def _load_json(text: str) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError) as exc:
        raise SchemaError(f"invalid Avro schema: not JSON ({exc})") from exc


def parse_schema(text: str) -> avro.schema.Schema:
    """Parse and validate an Avro schema (names, enum symbols and field defaults)."""
    _load_json(text)
    try:
        schema = avro.schema.parse(text)
    except (avro.errors.AvroException, TypeError, ValueError, KeyError) as exc:
        raise SchemaError(f"invalid Avro schema: {exc}") from exc
    _check_defaults(schema, _root_path(schema), set())
    return schema


def canonical_text(text: str) -> str:
    """The schema as compact JSON, keys in their given order: what the registry stores."""
    return json.dumps(_load_json(text), separators=(",", ":"), ensure_ascii=False)


def normalized_text(text: str) -> str:
    """The schema after ``normalize=true``: parsed by avro, names resolved, keys sorted."""
    return json.dumps(
        parse_schema(text).to_json(), separators=(",", ":"), sort_keys=True, ensure_ascii=False
    )


def fingerprint(text: str) -> str:
    """SHA-256 over the compact, key-sorted JSON: equal for schemas differing only in layout."""
    data = json.dumps(_load_json(text), separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


def _check_defaults(schema: avro.schema.Schema, path: str, seen: set[str]) -> None:
    if isinstance(schema, avro.schema.RecordSchema):
        if schema.fullname in seen:
            return
        seen.add(schema.fullname)
        for field in schema.fields:
            field_path = f"{path}.{field.name}"
            if field.has_default and not _default_is_valid(field.type, field.default):
                raise SchemaError(
                    f"invalid Avro schema: {field_path}: default {json.dumps(field.default)} "
                    f"does not match type {_describe(field.type)}"
                )
            _check_defaults(field.type, field_path, seen)
    elif isinstance(schema, avro.schema.ArraySchema):
        _check_defaults(schema.items, f"{path}[]", seen)
    elif isinstance(schema, avro.schema.MapSchema):
        _check_defaults(schema.values, f"{path}{{}}", seen)
    elif isinstance(schema, avro.schema.UnionSchema):
        for branch in schema.schemas:
            _check_defaults(branch, path, seen)


def _default_is_valid(schema: avro.schema.Schema, default: Any) -> bool:
    if isinstance(schema, avro.schema.UnionSchema):  # a union's default belongs to its first branch
        return bool(schema.schemas) and _default_is_valid(schema.schemas[0], default)
    try:
        return bool(avro.io.validate(schema, _json_default_to_datum(schema, default)))
    except (AttributeError, TypeError, ValueError, KeyError):
        return False


def _json_default_to_datum(schema: avro.schema.Schema, value: Any) -> Any:
    """Avro writes bytes and fixed defaults as JSON strings of code points 0-255."""
    if schema.type in ("bytes", "fixed") and isinstance(value, str):
        return value.encode("latin-1")
    if isinstance(schema, avro.schema.RecordSchema) and isinstance(value, dict):
        return {
            f.name: _json_default_to_datum(f.type, value[f.name]) if f.name in value else f.default
            for f in schema.fields
        }
    if isinstance(schema, avro.schema.ArraySchema) and isinstance(value, list):
        return [_json_default_to_datum(schema.items, item) for item in value]
    if isinstance(schema, avro.schema.MapSchema) and isinstance(value, dict):
        return {k: _json_default_to_datum(schema.values, v) for k, v in value.items()}
    if isinstance(schema, avro.schema.UnionSchema) and schema.schemas:
        return _json_default_to_datum(schema.schemas[0], value)
    return value


# --- compatibility --------------------------------------------------------------------------


def check_compatibility(
    candidate: str | avro.schema.Schema,
    previous: Sequence[tuple[int, str | avro.schema.Schema]],
    level: str,
) -> list[str]:
    """Messages saying why ``candidate`` breaks ``level``; empty when it is compatible.

    ``previous`` is the subject's live versions as ``(version, schema)``, oldest first. The
    non-transitive levels look at the newest only. BACKWARD means the candidate reads data
    written with the previous schemas; FORWARD, the previous schemas read the candidate's data.
    """
    level = parse_level(level)
    if level == NONE or not previous:
        return []
    new = _as_schema(candidate)
    against = list(previous) if level in _TRANSITIVE else [previous[-1]]
    messages: list[str] = []
    for version, old_schema in reversed(against):
        old = _as_schema(old_schema)
        if level in _READS_OLD:
            for problem in incompatibilities(reader=new, writer=old):
                messages.append(f"{problem} (new schema reading version {version} data)")
        if level in _OLD_READS:
            for problem in incompatibilities(reader=old, writer=new):
                messages.append(f"{problem} (version {version} reading new schema data)")
    return messages


def incompatibilities(reader: avro.schema.Schema, writer: avro.schema.Schema) -> list[str]:
    """Why ``reader`` cannot read data written with ``writer``, one message per location."""
    result: SchemaCompatibilityResult = _LocatingChecker().get_compatibility(reader, writer)
    if result.compatibility is not SchemaCompatibilityType.incompatible:
        return []
    return sorted(_explain_result(result, reader, writer, _root_path(reader))) or sorted(
        result.messages
    )


def _as_schema(schema: str | avro.schema.Schema) -> avro.schema.Schema:
    return schema if isinstance(schema, avro.schema.Schema) else parse_schema(schema)


class _LocatingChecker(ReaderWriterCompatibilityChecker):
    """The stock checker, except that union branches keep their parent's location.

    avro's checker compares each union branch through ``get_compatibility(reader, branch)``,
    which starts again at the root location, so an error inside a union would point at ``/``.
    """

    def __init__(self) -> None:
        super().__init__()
        self._stack: list[list[str]] = []

    def calculate_compatibility(
        self, reader: avro.schema.Schema, writer: avro.schema.Schema, location: list[str]
    ) -> SchemaCompatibilityResult:
        if self._stack and location == [self.ROOT_REFERENCE_TOKEN]:
            location = self._stack[-1]
        self._stack.append(location)
        try:
            return super().calculate_compatibility(reader, writer, location)
        finally:
            self._stack.pop()


# --- turning a checker location into a message ----------------------------------------------

_NAVIGATES = {"fields": "record", "items": "array", "values": "map"}
_TERMINAL = {"name": ("record", "enum", "fixed"), "size": ("fixed",), "symbols": ("enum",)}


def _explain_result(
    result: SchemaCompatibilityResult,
    reader: avro.schema.Schema,
    writer: avro.schema.Schema,
    path: str,
) -> set[str]:
    locations = set(result.locations)
    if len(locations) > 1:
        # merge() unions the root location of every compatible sibling into the result
        locations.discard("/")
    messages: set[str] = set()
    for location in locations:
        messages.update(_explain(location, reader, writer, path))
    return messages


def _explain(
    location: str, reader: avro.schema.Schema, writer: avro.schema.Schema, path: str
) -> set[str]:
    tokens = [t for t in location.split("/") if t]
    r: avro.schema.Schema | None = reader
    w: avro.schema.Schema | None = writer
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token == "fields" and i + 1 < len(tokens):
            r, w = _branch(r, "record"), _branch(w, "record")
            index = int(tokens[i + 1])
            if not isinstance(r, avro.schema.RecordSchema) or index >= len(r.fields):
                break
            field = r.fields[index]
            path = f"{path}.{field.name}"
            writer_field = (
                lookup_writer_field(writer_schema=w, reader_field=field)
                if isinstance(w, avro.schema.RecordSchema)
                else None
            )
            if i + 2 >= len(tokens):  # the location is the field itself
                return {f"{path}: reader field missing default"}
            r = field.type
            w = writer_field.type if writer_field is not None else None
            i += 3 if tokens[i + 2] == "type" else 2
            continue
        if token in ("items", "values"):
            r, w = _branch(r, _NAVIGATES[token]), _branch(w, _NAVIGATES[token])
            r = getattr(r, token, None)
            w = getattr(w, token, None)
            path += "[]" if token == "items" else "{}"
        elif token in _TERMINAL:
            r, w = _branch(r, *_TERMINAL[token]), _branch(w, *_TERMINAL[token])
            return {f"{path}: {_terminal_problem(token, r, w)}"}
        elif token.isdigit() and isinstance(r, avro.schema.UnionSchema):
            branch = w.schemas[int(token)] if isinstance(w, avro.schema.UnionSchema) else w
            return _explain_union(r, branch, path)
        i += 1
    if isinstance(r, avro.schema.UnionSchema):
        return _explain_union(r, w, path)
    return {f"{path}: reader type {_describe(r)} cannot read writer type {_describe(w)}"}


def _explain_union(
    reader: avro.schema.UnionSchema, writer: avro.schema.Schema | None, path: str
) -> set[str]:
    """A reader union with a branch of the writer's own type and name says why that one fails."""
    for branch in reader.schemas:
        if (
            writer is not None
            and branch.type == writer.type
            and _describe(branch) == _describe(writer)
        ):
            result = _LocatingChecker().get_compatibility(branch, writer)
            if result.compatibility is SchemaCompatibilityType.incompatible:
                return _explain_result(result, branch, writer, path)
    return {f"{path}: reader union {_describe(reader)} lacks writer type {_describe(writer)}"}


def _terminal_problem(
    token: str, r: avro.schema.Schema | None, w: avro.schema.Schema | None
) -> str:
    if token == "name":
        return f"reader name {_describe(r)} does not match writer name {_describe(w)}"
    if token == "size":
        return (
            f"reader fixed size {getattr(r, 'size', '?')} differs from writer size "
            f"{getattr(w, 'size', '?')}"
        )
    missing = sorted(set(getattr(w, "symbols", [])) - set(getattr(r, "symbols", [])))
    return f"reader enum lacks writer symbols {', '.join(missing)}"


def _branch(schema: avro.schema.Schema | None, *types: str) -> avro.schema.Schema | None:
    """``schema`` itself, or its first union branch of one of ``types``."""
    if isinstance(schema, avro.schema.UnionSchema):
        for branch in schema.schemas:
            if branch.type in types:
                return branch
        return None
    return schema


def _root_path(schema: avro.schema.Schema) -> str:
    if isinstance(schema, avro.schema.NamedSchema):
        return str(schema.fullname)
    return f"<{schema.type}>"


def _describe(schema: avro.schema.Schema | None) -> str:
    if schema is None:
        return "(none)"
    if isinstance(schema, avro.schema.NamedSchema):
        return str(schema.fullname)
    if isinstance(schema, avro.schema.ArraySchema):
        return f"array<{_describe(schema.items)}>"
    if isinstance(schema, avro.schema.MapSchema):
        return f"map<{_describe(schema.values)}>"
    if isinstance(schema, avro.schema.UnionSchema):
        return "[" + ", ".join(_describe(b) for b in schema.schemas) + "]"
    return str(schema.type)
