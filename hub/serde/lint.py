"""Lint Avro schemas for amplification risks.

An Avro array is written as blocks of ``count`` items. If an item encodes to zero bytes (``null``,
a record with no fields, a record whose fields are all zero-size, a ``fixed`` of size 0), a few
bytes of input can claim billions of items and a decoder allocates them all. ``lint_schema``
reports every such array, naming the field, e.g.
``hub.events.X.field: array of null allows amplification``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_NAMED = frozenset({"record", "error", "enum", "fixed"})
_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})


def lint_schema(schema: Any) -> list[str]:
    """Problems found in ``schema`` (a parsed JSON schema: dict, list or name); empty if none."""
    return _Linter().run(schema)


class _Linter:
    def __init__(self) -> None:
        self.named: dict[str, Mapping[str, Any]] = {}
        self.problems: list[str] = []

    def run(self, schema: Any) -> list[str]:
        if isinstance(schema, list):  # a file of named types, or a top-level union
            for item in schema:
                self.walk(item, _label(item, None) or "<union>", None)
        else:
            self.walk(schema, _label(schema, None) or "<schema>", None)
        return self.problems

    def resolve(self, name: str, ns: str | None) -> Mapping[str, Any] | None:
        if "." not in name and ns:
            found = self.named.get(f"{ns}.{name}")
            if found is not None:
                return found
        return self.named.get(name)

    def walk(self, t: Any, path: str, ns: str | None) -> None:
        if isinstance(t, list):
            for branch in t:
                self.walk(branch, path, ns)
            return
        if not isinstance(t, Mapping):
            return  # a primitive or a reference to a type defined (and walked) earlier
        kind = t.get("type")
        if kind in _NAMED:
            full = _full_name(t, ns)
            if full:
                self.named[full] = t
            if kind in ("record", "error"):
                inner = full.rpartition(".")[0] or ns if full else ns
                for field in t.get("fields") or []:
                    if isinstance(field, Mapping):
                        self.walk(field.get("type"), f"{path}.{field.get('name')}", inner)
        elif kind == "array":
            items = t.get("items")
            what = self.zero_size(items, ns, set())
            if what:
                self.problems.append(f"{path}: array of {what} allows amplification")
            self.walk(items, path, ns)
        elif kind == "map":
            self.walk(t.get("values"), path, ns)
        elif isinstance(kind, (Mapping, list)):
            self.walk(kind, path, ns)

    def zero_size(self, t: Any, ns: str | None, seen: set[str]) -> str | None:
        """A description of ``t`` if its values encode to zero bytes, else None."""
        if (
            isinstance(t, Mapping)
            and t.get("type") not in _NAMED
            and not isinstance(t.get("type"), (Mapping, list))
        ):
            t = t.get("type")  # {"type": "null"} and friends
        if t == "null":
            return "null"
        if isinstance(t, str):
            if t in _PRIMITIVES:
                return None
            definition = self.resolve(t, ns)
            if definition is None or t in seen:
                return None
            return self.zero_size(definition, ns, seen | {t})
        if not isinstance(t, Mapping):
            return None  # unions always carry a branch index
        kind = t.get("type")
        name = _full_name(t, ns) or "<anonymous>"
        if kind == "fixed" and t.get("size") == 0:
            return f"zero-size fixed {name}"
        if kind in ("record", "error"):
            self.named.setdefault(name, t)
            fields = [f for f in t.get("fields") or [] if isinstance(f, Mapping)]
            if not fields:
                return f"empty record {name}"
            inner = name.rpartition(".")[0] or ns
            if all(self.zero_size(f.get("type"), inner, seen | {name}) for f in fields):
                return f"zero-size record {name}"
        return None


def _full_name(t: Mapping[str, Any], ns: str | None) -> str:
    name = t.get("name")
    if not isinstance(name, str):
        return ""
    if "." in name:
        return name
    space = t.get("namespace") or ns
    return f"{space}.{name}" if space else name


def _label(t: Any, ns: str | None) -> str:
    return _full_name(t, ns) if isinstance(t, Mapping) else ""
