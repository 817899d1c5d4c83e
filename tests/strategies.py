"""Hypothesis strategies built from Avro schemas.

``records_for(schema)`` gives valid Python values for any Avro schema (a fastavro ``parse_schema``
result or a plain JSON schema): primitives, records, enums, fixed, arrays, maps, unions, named
references (recursive ones included) and the logical types fastavro converts (date, time-millis,
time-micros, timestamp-millis, timestamp-micros, local-timestamp-millis/-micros, decimal, uuid).
Values are the ones fastavro's reader returns, so a round trip compares equal: timestamps are
timezone-aware UTC at the type's precision, decimals are quantized to the schema's scale.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Mapping
from typing import Any

from hypothesis import strategies as st

UTC = dt.UTC
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
# Keep generated instants inside what datetime and fastavro's readers round-trip on every platform.
MIN_INSTANT = dt.datetime(1, 1, 2)
MAX_INSTANT = dt.datetime(9999, 12, 30)

_PRIMITIVES: dict[str, st.SearchStrategy[Any]] = {
    "null": st.none(),
    "boolean": st.booleans(),
    "int": st.integers(*INT32),
    "long": st.integers(*INT64),
    "float": st.floats(width=32, allow_nan=False),
    "double": st.floats(allow_nan=False),
    "bytes": st.binary(max_size=32),
    "string": st.text(max_size=32),
}
_NAMED = frozenset({"record", "error", "enum", "fixed"})


def records_for(schema: Any, *, max_items: int = 3) -> st.SearchStrategy[Any]:
    """A strategy for values of ``schema``; arrays and maps hold at most ``max_items`` entries."""
    builder = _Builder(max_items)
    if isinstance(schema, Mapping):
        for name, named in (schema.get("__named_schemas") or {}).items():
            builder.definitions.setdefault(name, named)
    return builder.build(schema, None)


def _truncate(value: dt.datetime | dt.time, micros_per_unit: int) -> Any:
    return value.replace(microsecond=value.microsecond // micros_per_unit * micros_per_unit)


def _decimals(precision: int, scale: int) -> st.SearchStrategy[decimal.Decimal]:
    step = decimal.Decimal(1).scaleb(-scale)
    bound = decimal.Decimal(10) ** (precision - scale) - step
    return st.decimals(
        min_value=-bound, max_value=bound, places=scale, allow_nan=False, allow_infinity=False
    ).map(lambda d: d.quantize(step))


def _instants(micros_per_unit: int, aware: bool) -> st.SearchStrategy[dt.datetime]:
    zones = st.just(UTC) if aware else st.none()
    return st.datetimes(min_value=MIN_INSTANT, max_value=MAX_INSTANT, timezones=zones).map(
        lambda d: _truncate(d, micros_per_unit)
    )


def _logical(t: Mapping[str, Any]) -> st.SearchStrategy[Any] | None:
    logical, base = t.get("logicalType"), t.get("type")
    if logical == "date" and base == "int":
        return st.dates()
    if logical == "time-millis" and base == "int":
        return st.times().map(lambda v: _truncate(v, 1000))
    if logical == "time-micros" and base == "long":
        return st.times()
    if logical == "timestamp-millis" and base == "long":
        return _instants(1000, aware=True)
    if logical == "timestamp-micros" and base == "long":
        return _instants(1, aware=True)
    if logical == "local-timestamp-millis" and base == "long":
        return _instants(1000, aware=False)
    if logical == "local-timestamp-micros" and base == "long":
        return _instants(1, aware=False)
    if logical == "uuid" and base == "string":
        return st.uuids()
    if logical == "decimal" and base in ("bytes", "fixed"):
        return _decimals(int(t["precision"]), int(t.get("scale", 0)))
    return None


class _Builder:
    def __init__(self, max_items: int) -> None:
        self.max_items = max_items
        self.definitions: dict[str, Any] = {}
        self.strategies: dict[str, st.SearchStrategy[Any]] = {}

    def build(self, t: Any, ns: str | None) -> st.SearchStrategy[Any]:
        if isinstance(t, str):
            if t in _PRIMITIVES:
                return _PRIMITIVES[t]
            full = t if "." in t or not ns else f"{ns}.{t}"
            if full not in self.strategies and full not in self.definitions:
                full = t  # a name in the null namespace
            if full in self.strategies:
                return self.strategies[full]
            if full in self.definitions:
                return self.build_named(self.definitions[full], full.rpartition(".")[0] or None)
            raise ValueError(f"unknown Avro type {t!r}")
        if isinstance(t, list):
            return st.one_of([self.build(b, ns) for b in t])
        if not isinstance(t, Mapping):
            raise ValueError(f"not an Avro schema: {t!r}")
        logical = _logical(t)
        if logical is not None:
            return logical
        kind = t.get("type")
        if kind in _NAMED:
            return self.build_named(t, ns)
        if kind == "array":
            return st.lists(self.build(t["items"], ns), max_size=self.max_items)
        if kind == "map":
            return st.dictionaries(
                st.text(max_size=8), self.build(t["values"], ns), max_size=self.max_items
            )
        return self.build(kind, ns)

    def build_named(self, t: Mapping[str, Any], ns: str | None) -> st.SearchStrategy[Any]:
        name = t["name"]
        space = t.get("namespace") or ns
        full = name if "." in name or not space else f"{space}.{name}"
        if full in self.strategies:
            return self.strategies[full]
        self.definitions[full] = t
        inner = full.rpartition(".")[0] or None
        kind = t["type"]
        strategy: st.SearchStrategy[Any]
        if kind == "enum":
            strategy = st.sampled_from(list(t["symbols"]))
        elif kind == "fixed":
            strategy = st.binary(min_size=t["size"], max_size=t["size"])
        else:
            placeholder = st.deferred(lambda: self.strategies[full])
            self.strategies[full] = placeholder  # lets recursive references resolve
            strategy = st.fixed_dictionaries(
                {f["name"]: self.build(f["type"], inner) for f in t["fields"]}
            )
        self.strategies[full] = strategy
        return strategy
