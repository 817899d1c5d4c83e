"""The event catalogue: ``schemas/`` loaded, checked once, served as self-contained Avro schemas.

Layout of ``schemas/`` (the source of truth for the wire):

- ``*.avsc`` at the top (``envelope.avsc`` first, then ``types.avsc`` and any others): a JSON
  array (or a single object) of named types that events refer to by full name, e.g.
  ``hub.events.Envelope``.
- ``events/<Name>.avsc``: one record ``hub.events.<Name>`` per event type. Fields: ``envelope``,
  the payload, ``disclosure``. The record's ``"hub.event_type"`` gives the dotted type, and
  ``<Name>`` is its PascalCase (``sh.case_reported`` -> ``ShCaseReported``).
- ``reference/<list>.yaml``: code lists that string fields name with ``"hub.reference"``.

Rules the loader enforces, each failure a one-line ``SchemaError`` naming the file:

- every record and field has a ``doc``;
- every payload field, and every field of a record used inside a payload, is ``["null", T]`` with
  ``default: null`` (a withheld field is delivered as null under the same schema);
- ``"hub.required"`` and ``"hub.sensitive"`` are ``true`` when present; ``"hub.reference"`` names an
  existing list and sits on a string (or array of strings) field; no other ``hub.*`` attribute;
- no array whose items encode to zero bytes (see :mod:`hub.serde.lint`);
- fastavro accepts the self-contained schema (defaults match their types, names resolve...).

Field paths returned by ``required_fields``, ``sensitive_fields`` and ``reference_fields`` are
dotted: a payload field is its name (``release_type``), a nested field goes through records and
arrays (``conditions.named_associates``), envelope fields start with ``envelope.``.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from fastavro import parse_schema
from fastavro.schema import SchemaParseException, UnknownType

from hub.domain.errors import SchemaError
from hub.serde.lint import lint_schema

NAMESPACE = "hub.events"
ENVELOPE = f"{NAMESPACE}.Envelope"
DISCLOSURE = f"{NAMESPACE}.Disclosure"
ENVELOPE_TYPES = tuple(
    f"{NAMESPACE}.{n}"
    for n in ("Identifier", "Subject", "Envelope", "FieldTreatment", "Disclosure")
)
DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "schemas"

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
NAMED_KINDS = frozenset({"record", "error", "enum", "fixed"})
FIELD_ATTRIBUTES = frozenset({"hub.required", "hub.sensitive", "hub.reference"})
RECORD_ATTRIBUTES = frozenset({"hub.event_type"})
EVENT_TYPE_RE = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+")
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
CODE_KEYS = frozenset({"code", "label", "jurisdictions", "maps_to", "kind", "note"})
LIST_KEYS = frozenset({"name", "description", "version", "codes"})
NULLABLE_HINT = '(use ["null", <type>] with "default": null)'


def record_name_for(event_type: str) -> str:
    """The record name an event type must have: ``person.identifier_linked`` ->
    ``hub.events.PersonIdentifierLinked``."""
    parts = re.split(r"[._]", event_type)
    return f"{NAMESPACE}." + "".join(p[:1].upper() + p[1:] for p in parts)


@dataclass(frozen=True)
class ReferenceCode:
    code: str
    label: str
    jurisdictions: tuple[str, ...] = ()
    maps_to: str | None = None
    kind: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class ReferenceList:
    name: str
    description: str
    version: int
    codes: tuple[ReferenceCode, ...]

    def code_set(self) -> frozenset[str]:
        return frozenset(c.code for c in self.codes)

    def get(self, code: str) -> ReferenceCode | None:
        return next((c for c in self.codes if c.code == code), None)

    def maps_to(self) -> dict[str, str]:
        """Local code -> standard code (e.g. ``nl_ac_debt`` -> ``finance_benefit_debt``); a code
        without ``maps_to`` maps to itself."""
        return {c.code: c.maps_to or c.code for c in self.codes}


@dataclass(frozen=True)
class _Event:
    name: str
    event_type: str
    file: str
    schema: dict[str, Any]  # self-contained
    required: tuple[str, ...]
    sensitive: tuple[str, ...]
    references: tuple[tuple[str, str], ...]


class Catalogue:
    """The loaded catalogue. Build it with :meth:`Catalogue.load`; it is read-only afterwards."""

    def __init__(
        self,
        root: Path,
        lists: Mapping[str, ReferenceList],
        library: Mapping[str, dict[str, Any]],
        events: Mapping[str, _Event],
    ) -> None:
        self.root = root
        self._lists = dict(lists)
        self._library = dict(library)
        self._events = dict(events)
        self._by_type = {e.event_type: e.name for e in events.values()}
        self._parsed: dict[str, Any] = {}
        self._canonical: dict[str, str] = {}

    @classmethod
    def load(cls, root: Path | None = None) -> Catalogue:
        """Load and check every file under ``root`` (default: the repository's ``schemas/``)."""
        return _Loader(Path(root) if root is not None else DEFAULT_ROOT).load()

    # -- names -------------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Full Avro names of the event records, sorted."""
        return sorted(self._events)

    def event_types(self) -> list[str]:
        """Dotted event types, sorted."""
        return sorted(self._by_type)

    def name_for(self, event_type: str) -> str:
        """``custody.released`` -> ``hub.events.CustodyReleased``; ``KeyError`` if unknown."""
        try:
            return self._by_type[event_type]
        except KeyError:
            raise KeyError(f"unknown event type {event_type!r}") from None

    def event_type_for(self, name: str) -> str:
        """``hub.events.CustodyReleased`` -> ``custody.released``; ``KeyError`` if unknown."""
        return self._event(name).event_type

    def __contains__(self, name_or_event_type: object) -> bool:
        return isinstance(name_or_event_type, str) and self._lookup(name_or_event_type) is not None

    # -- schemas -----------------------------------------------------------------------------
    def schema(self, name_or_event_type: str) -> dict[str, Any]:
        """The self-contained schema (shared types inlined at first use), as a fresh copy."""
        return copy.deepcopy(self._event(name_or_event_type).schema)

    def parsed(self, name_or_event_type: str) -> Any:
        """fastavro's ``parse_schema`` of :meth:`schema`, cached."""
        name = self._event(name_or_event_type).name
        parsed = self._parsed.get(name)
        if parsed is None:
            parsed = parse_schema(copy.deepcopy(self._events[name].schema))
            self._parsed[name] = parsed
        return parsed

    def canonical_json(self, name_or_event_type: str) -> str:
        """Stable JSON of :meth:`schema` (sorted keys, no spaces): the text registered in the
        schema registry under the record name."""
        name = self._event(name_or_event_type).name
        text = self._canonical.get(name)
        if text is None:
            text = canonical_json(self._events[name].schema)
            self._canonical[name] = text
        return text

    def named_type(self, name: str) -> dict[str, Any]:
        """A shared named type as written (e.g. ``hub.events.Envelope``), as a fresh copy."""
        return copy.deepcopy(self._library[name])

    def source_file(self, name_or_event_type: str) -> str:
        """The schema file of an event, relative to the repository (``schemas/events/X.avsc``)."""
        return self._event(name_or_event_type).file

    # -- field metadata ----------------------------------------------------------------------
    def required_fields(self, name_or_event_type: str) -> list[str]:
        """Dotted paths of the fields marked ``"hub.required": true`` (the source supplies them)."""
        return list(self._event(name_or_event_type).required)

    def sensitive_fields(self, name_or_event_type: str) -> list[str]:
        """Dotted paths of the fields marked ``"hub.sensitive": true``."""
        return list(self._event(name_or_event_type).sensitive)

    def reference_fields(self, name_or_event_type: str) -> dict[str, str]:
        """Dotted path -> reference list name, for every field marked ``"hub.reference"``
        (envelope fields included, e.g. ``envelope.jurisdiction`` -> ``jurisdictions``)."""
        return dict(self._event(name_or_event_type).references)

    # -- reference data ----------------------------------------------------------------------
    def reference(self, list_name: str) -> frozenset[str]:
        """The codes of a reference list; ``KeyError`` if there is no such list."""
        return self.reference_list(list_name).code_set()

    def reference_list(self, list_name: str) -> ReferenceList:
        try:
            return self._lists[list_name]
        except KeyError:
            raise KeyError(f"unknown reference list {list_name!r}") from None

    def reference_lists(self) -> list[str]:
        return sorted(self._lists)

    # -- internals ---------------------------------------------------------------------------
    def _lookup(self, key: str) -> str | None:
        if key in self._events:
            return key
        if key in self._by_type:
            return self._by_type[key]
        full = f"{NAMESPACE}.{key}"
        return full if full in self._events else None

    def _event(self, name_or_event_type: str) -> _Event:
        name = self._lookup(name_or_event_type)
        if name is None:
            raise KeyError(f"unknown event type or schema name {name_or_event_type!r}")
        return self._events[name]


def canonical_json(schema: Any) -> str:
    return json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# ---------------------------------------------------------------------------------------------
# Loading and checking
# ---------------------------------------------------------------------------------------------


def _full_name(name: str, namespace: str | None) -> str:
    if "." in name or not namespace:
        return name
    return f"{namespace}.{name}"


def _namespace_of(full_name: str) -> str | None:
    return full_name.rpartition(".")[0] or None


def _definition_name(schema: Mapping[str, Any], namespace: str | None) -> str:
    name = schema["name"]
    return _full_name(name, schema.get("namespace") or namespace)


def _nullable(field: Mapping[str, Any]) -> bool:
    t = field.get("type")
    return (
        isinstance(t, list)
        and len(t) >= 2
        and t[0] == "null"
        and "default" in field
        and field["default"] is None
    )


def _string_like(t: Any) -> bool:
    """A string, an array of strings, or a nullable one of those: where a code may live."""
    if isinstance(t, list):
        rest = [b for b in t if b != "null"]
        return len(rest) == 1 and _string_like(rest[0])
    if t == "string":
        return True
    if isinstance(t, dict):
        if t.get("type") == "array":
            return _string_like(t.get("items"))
        return t.get("type") == "string" and "logicalType" not in t
    return False


class _Loader:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.lists: dict[str, ReferenceList] = {}
        self.library: dict[str, dict[str, Any]] = {}
        self.library_file: dict[str, str] = {}
        self.payload_types: set[str] = set()  # shared types already checked as payload

    def rel(self, path: Path) -> str:
        try:
            return path.relative_to(self.root.parent).as_posix()
        except ValueError:
            return path.as_posix()

    def fail(self, file: str, problem: str) -> SchemaError:
        return SchemaError(f"{file}: {problem}")

    # -- top level ---------------------------------------------------------------------------
    def load(self) -> Catalogue:
        if not self.root.is_dir():
            raise self.fail(self.rel(self.root), "schema directory not found")
        self.load_reference_lists()
        self.load_library()
        events: dict[str, _Event] = {}
        event_dir = self.root / "events"
        files = sorted(event_dir.glob("*.avsc")) if event_dir.is_dir() else []
        if not files:
            raise self.fail(self.rel(event_dir), "no event schemas (*.avsc) found")
        for path in files:
            # The file name is the record name, which is derived from the event type, so two
            # files can never define the same event type.
            event = self.load_event(path)
            events[event.name] = event
        return Catalogue(self.root, self.lists, self.library, events)

    # -- reference lists ---------------------------------------------------------------------
    def load_reference_lists(self) -> None:
        ref_dir = self.root / "reference"
        raw: dict[str, tuple[str, dict[str, Any]]] = {}
        for path in sorted(ref_dir.glob("*.yaml")) if ref_dir.is_dir() else []:
            file = self.rel(path)
            try:
                doc = yaml.safe_load(path.read_text(encoding="utf-8"))
            except yaml.YAMLError as exc:
                mark = getattr(exc, "problem_mark", None)
                where = f" at line {mark.line + 1}" if mark is not None else ""
                problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
                raise self.fail(file, f"invalid YAML{where}: {problem}") from exc
            raw[path.stem] = (file, doc)
        for stem, (file, doc) in raw.items():
            self.lists[stem] = self.parse_reference_list(file, stem, doc)
        if "jurisdictions" in self.lists:
            known = self.lists["jurisdictions"].code_set()
            for lst in self.lists.values():
                for c in lst.codes:
                    for j in c.jurisdictions:
                        if j not in known:
                            raise self.fail(
                                raw[lst.name][0],
                                f"code {c.code!r}: unknown jurisdiction {j!r} "
                                f"(expected one of {', '.join(sorted(known))})",
                            )

    def parse_reference_list(self, file: str, stem: str, doc: Any) -> ReferenceList:
        if not isinstance(doc, dict):
            raise self.fail(file, "expected a mapping with name, description, version and codes")
        unknown = set(doc) - LIST_KEYS
        if unknown:
            raise self.fail(
                file,
                f"unknown key {sorted(unknown)[0]!r} (expected name, description, version, codes)",
            )
        if doc.get("name") != stem:
            raise self.fail(file, f"name is {doc.get('name')!r}, expected {stem!r} (the file name)")
        if not isinstance(doc.get("description"), str) or not doc["description"].strip():
            raise self.fail(file, "description is missing")
        version = doc.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise self.fail(file, f"version is {version!r}, expected a positive integer")
        items = doc.get("codes")
        if not isinstance(items, list) or not items:
            raise self.fail(file, "codes must be a non-empty list")
        codes: list[ReferenceCode] = []
        seen: set[str] = set()
        for i, item in enumerate(items):
            where = f"codes[{i}]"
            if not isinstance(item, dict):
                raise self.fail(file, f"{where}: expected a mapping with code and label")
            bad = set(item) - CODE_KEYS
            if bad:
                raise self.fail(
                    file,
                    f"{where}: unknown key {sorted(bad)[0]!r} "
                    f"(expected {', '.join(sorted(CODE_KEYS))})",
                )
            code = item.get("code")
            if not isinstance(code, str) or not code:
                raise self.fail(file, f"{where}: code is {code!r}, expected a non-empty string")
            if code in seen:
                raise self.fail(file, f"{where}: duplicate code {code!r}")
            seen.add(code)
            label = item.get("label")
            if not isinstance(label, str) or not label.strip():
                raise self.fail(file, f"{where}: code {code!r} has no label")
            jurisdictions = item.get("jurisdictions", [])
            if not isinstance(jurisdictions, list) or not all(
                isinstance(j, str) for j in jurisdictions
            ):
                raise self.fail(file, f"{where}: jurisdictions must be a list of codes")
            for key in ("maps_to", "kind", "note"):
                if key in item and not isinstance(item[key], str):
                    raise self.fail(file, f"{where}: {key} must be a string")
            codes.append(
                ReferenceCode(
                    code=code,
                    label=label,
                    jurisdictions=tuple(jurisdictions),
                    maps_to=item.get("maps_to"),
                    kind=item.get("kind"),
                    note=item.get("note"),
                )
            )
        for i, c in enumerate(codes):
            if c.maps_to is not None:
                target = next((t for t in codes if t.code == c.maps_to), None)
                if target is None or target.maps_to is not None:
                    raise self.fail(
                        file,
                        f"codes[{i}]: code {c.code!r} maps_to {c.maps_to!r}, which is not a "
                        "standard code of this list",
                    )
        return ReferenceList(stem, doc["description"].strip(), version, tuple(codes))

    # -- shared named types ------------------------------------------------------------------
    def library_files(self) -> list[Path]:
        files = sorted(self.root.glob("*.avsc"))
        envelope = self.root / "envelope.avsc"
        if envelope not in files:
            raise self.fail(self.rel(envelope), "file not found (the envelope types live there)")
        return [envelope] + [f for f in files if f != envelope]

    def load_library(self) -> None:
        for path in self.library_files():
            file = self.rel(path)
            doc = self.read_json(path)
            items = doc if isinstance(doc, list) else [doc]
            for i, item in enumerate(items):
                if not isinstance(item, dict) or item.get("type") not in NAMED_KINDS:
                    raise self.fail(
                        file, f"item {i}: expected a named type (record, enum or fixed)"
                    )
                self.check_name(file, item, NAMESPACE)
                name = _definition_name(item, None)
                if "." not in name:
                    raise self.fail(
                        file, f"{name}: shared types need a namespace (e.g. hub.events.{name})"
                    )
                if name in self.library:
                    raise self.fail(file, f"{name} is already defined in {self.library_file[name]}")
                self.library[name] = item
                self.library_file[name] = file
        for name in ENVELOPE_TYPES:
            if name not in self.library:
                raise self.fail(self.rel(self.root / "envelope.avsc"), f"{name} is not defined")
        # Check each shared type on its own: docs, attributes, names that resolve, no nested
        # definitions clashing with another shared name.
        for name, item in self.library.items():
            file = self.library_file[name]
            defined = set(self.library)
            self.check_type(
                file, item, name, _namespace_of(name), payload=False, defined=defined, top=True
            )
            for problem in lint_schema(item):
                raise self.fail(file, problem)

    def read_json(self, path: Path) -> Any:
        file = self.rel(path)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise self.fail(
                file, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
            ) from exc
        except UnicodeDecodeError as exc:
            raise self.fail(file, f"not UTF-8 text: {exc.reason}") from exc

    # -- events ------------------------------------------------------------------------------
    def load_event(self, path: Path) -> _Event:
        file = self.rel(path)
        schema = self.read_json(path)
        if not isinstance(schema, dict) or schema.get("type") != "record":
            raise self.fail(file, "expected one record schema")
        self.check_name(file, schema, NAMESPACE)
        name = _definition_name(schema, None)
        event_type = schema.get("hub.event_type")
        if not isinstance(event_type, str) or not EVENT_TYPE_RE.fullmatch(event_type):
            raise self.fail(
                file,
                f'{name}: "hub.event_type" is {event_type!r}, expected a dotted lower-case type '
                "such as 'custody.released'",
            )
        expected = record_name_for(event_type)
        if name != expected:
            raise self.fail(
                file,
                f"record name {name!r} does not match event type {event_type!r} "
                f"(expected {expected!r})",
            )
        if path.stem != expected.rpartition(".")[2]:
            raise self.fail(
                file,
                f"file name does not match record {name!r} (expected "
                f"{expected.rpartition('.')[2]}.avsc)",
            )
        if name in self.library:
            raise self.fail(file, f"{name} is also a shared type in {self.library_file[name]}")
        fields = schema.get("fields")
        if not isinstance(fields, list) or len(fields) < 2:
            raise self.fail(file, f"{name}: expected fields envelope, payload..., disclosure")
        first, last = fields[0], fields[-1]
        if not (
            isinstance(first, dict)
            and first.get("name") == "envelope"
            and first.get("type") == ENVELOPE
        ):
            raise self.fail(
                file, f'{name}: the first field must be "envelope" of type "{ENVELOPE}"'
            )
        if not (
            isinstance(last, dict)
            and last.get("name") == "disclosure"
            and last.get("type") == ["null", DISCLOSURE]
            and "default" in last
            and last["default"] is None
        ):
            raise self.fail(
                file,
                f'{name}: the last field must be "disclosure" of type '
                f'["null", "{DISCLOSURE}"] with default null',
            )
        # Docs, attributes and nullability; payload fields are checked as payload.
        self.check_record_head(file, schema, name, event=True)
        defined = set(self.library)
        self.check_fields(
            file, schema, name, _namespace_of(name), defined, payload_slice=slice(1, -1)
        )

        contained = self.self_contained(schema)
        for problem in lint_schema(contained):
            raise self.fail(file, problem)
        try:
            parse_schema(copy.deepcopy(contained))
        except (SchemaParseException, UnknownType, ValueError, TypeError, KeyError) as exc:
            reason = " ".join(str(exc).split())
            raise self.fail(file, f"{name}: not valid Avro: {reason}") from exc
        required, sensitive, references = _field_metadata(contained)
        return _Event(name, event_type, file, contained, required, sensitive, references)

    # -- checks ------------------------------------------------------------------------------
    def check_name(self, file: str, schema: Mapping[str, Any], namespace: str | None) -> None:
        name = schema.get("name")
        if not isinstance(name, str) or not all(NAME_RE.fullmatch(p) for p in name.split(".")):
            raise self.fail(file, f"invalid type name {name!r}")
        ns = schema.get("namespace")
        if ns is not None and (
            not isinstance(ns, str) or not all(NAME_RE.fullmatch(p) for p in ns.split("."))
        ):
            raise self.fail(file, f"{name}: invalid namespace {ns!r}")

    def check_record_head(
        self, file: str, schema: Mapping[str, Any], where: str, event: bool
    ) -> None:
        doc = schema.get("doc")
        if not isinstance(doc, str) or not doc.strip():
            raise self.fail(file, f"{where}: record has no doc")
        for key in schema:
            if key.startswith("hub.") and (key not in RECORD_ATTRIBUTES or not event):
                raise self.fail(file, f"{where}: unknown attribute {key!r}")

    def check_fields(
        self,
        file: str,
        record: Mapping[str, Any],
        where: str,
        namespace: str | None,
        defined: set[str],
        payload_slice: slice | None = None,
        payload: bool = False,
    ) -> None:
        """Check a record's fields; ``payload`` (all fields) or ``payload_slice`` (some) must be
        nullable."""
        fields = record.get("fields")
        if not isinstance(fields, list):
            raise self.fail(file, f"{where}: record fields must be a list")
        names: set[str] = set()
        payload_fields = (
            fields[payload_slice] if payload_slice is not None else (fields if payload else [])
        )
        payload_ids = {id(f) for f in payload_fields}
        for field in fields:
            if not isinstance(field, dict) or not isinstance(field.get("name"), str):
                raise self.fail(file, f"{where}: every field needs a name")
            fname = field["name"]
            path = f"{where}.{fname}"
            if not NAME_RE.fullmatch(fname):
                raise self.fail(file, f"{path}: invalid field name")
            if fname in names:
                raise self.fail(file, f"{path}: duplicate field")
            names.add(fname)
            if "type" not in field:
                raise self.fail(file, f"{path}: field has no type")
            doc = field.get("doc")
            if not isinstance(doc, str) or not doc.strip():
                raise self.fail(file, f"{path}: field has no doc")
            in_payload = id(field) in payload_ids
            if in_payload and not _nullable(field):
                raise self.fail(
                    file,
                    f"{path}: payload field is not nullable {NULLABLE_HINT}",
                )
            self.check_field_attributes(file, field, path)
            self.check_type(
                file, field["type"], path, namespace, payload=in_payload, defined=defined
            )

    def check_field_attributes(self, file: str, field: Mapping[str, Any], path: str) -> None:
        for key, value in field.items():
            if not key.startswith("hub."):
                continue
            if key not in FIELD_ATTRIBUTES:
                raise self.fail(
                    file,
                    f"{path}: unknown attribute {key!r} "
                    f"(expected {', '.join(sorted(FIELD_ATTRIBUTES))})",
                )
            if key in ("hub.required", "hub.sensitive") and value is not True:
                raise self.fail(
                    file, f"{path}: {key} is {value!r}, expected true (or leave it out)"
                )
            if key == "hub.reference":
                if not isinstance(value, str) or value not in self.lists:
                    known = ", ".join(sorted(self.lists)) or "none"
                    raise self.fail(
                        file,
                        f"{path}: unknown reference list {value!r} "
                        f"(no schemas/reference/{value}.yaml; "
                        f"known: {known})",
                    )
                if not _string_like(field.get("type")):
                    raise self.fail(file, f"{path}: hub.reference is only allowed on string fields")

    def check_type(
        self,
        file: str,
        t: Any,
        where: str,
        namespace: str | None,
        payload: bool,
        defined: set[str],
        top: bool = False,
    ) -> None:
        if isinstance(t, str):
            if t in PRIMITIVES:
                return
            full = _full_name(t, namespace)
            if full not in defined and t not in defined:
                raise self.fail(file, f"{where}: unknown type {t!r}")
            if payload and full in self.library:
                self.check_shared_payload_type(file, full, where)
            return
        if isinstance(t, list):
            if not t:
                raise self.fail(file, f"{where}: empty union")
            for branch in t:
                self.check_type(file, branch, where, namespace, payload, defined)
            return
        if not isinstance(t, dict) or "type" not in t:
            raise self.fail(file, f"{where}: invalid type {json.dumps(t)[:60]}")
        kind = t["type"]
        if kind in NAMED_KINDS:
            self.check_name(file, t, namespace)
            full = _definition_name(t, namespace)
            if not top:
                if full in self.library:
                    raise self.fail(
                        file,
                        f"{where}: {full} redefines a shared type of "
                        f"{self.library_file[full]}; refer to it by name",
                    )
                if full in defined:
                    raise self.fail(file, f"{where}: {full} is defined twice")
                defined.add(full)
            if kind in ("record", "error"):
                label = full if top else where
                self.check_record_head(file, t, label, event=False)
                self.check_fields(file, t, label, _namespace_of(full), defined, payload=payload)
            return
        if kind == "array":
            self.check_type(file, t.get("items"), where, namespace, payload, defined)
        elif kind == "map":
            self.check_type(file, t.get("values"), where, namespace, payload, defined)
        elif kind not in PRIMITIVES:
            self.check_type(file, kind, where, namespace, payload, defined)

    def check_shared_payload_type(self, file: str, full: str, where: str) -> None:
        """A shared type used inside a payload must have nullable fields too (checked once)."""
        if full in ENVELOPE_TYPES:
            raise self.fail(
                file,
                f"{where}: envelope type {full} cannot be used in a payload (its fields "
                "are not nullable)",
            )
        if full in self.payload_types:
            return
        self.payload_types.add(full)
        definition = self.library[full]
        if definition.get("type") in ("record", "error"):
            self.check_fields(
                self.library_file[full],
                definition,
                full,
                _namespace_of(full),
                set(self.library),
                payload=True,
            )

    # -- self-contained form -----------------------------------------------------------------
    def self_contained(self, schema: dict[str, Any]) -> dict[str, Any]:
        """Inline each shared named type at its first use; later uses stay references."""
        defined: set[str] = set()

        def inline(t: Any, ns: str | None) -> Any:
            if isinstance(t, str):
                if t in PRIMITIVES:
                    return t
                full = _full_name(t, ns)
                if full in defined or full not in self.library:
                    return full
                defined.add(full)
                return inline_def(copy.deepcopy(self.library[full]), None)
            if isinstance(t, list):
                return [inline(b, ns) for b in t]
            if isinstance(t, dict):
                kind = t.get("type")
                if kind in NAMED_KINDS:
                    return inline_def(dict(t), ns)
                out = dict(t)
                if kind == "array":
                    out["items"] = inline(t["items"], ns)
                elif kind == "map":
                    out["values"] = inline(t["values"], ns)
                return out
            return t

        def inline_def(definition: dict[str, Any], ns: str | None) -> dict[str, Any]:
            full = _definition_name(definition, ns)
            defined.add(full)
            if "fields" in definition:
                inner = _namespace_of(full)
                definition["fields"] = [
                    {**f, "type": inline(f["type"], inner)} for f in definition["fields"]
                ]
            return definition

        return inline_def(copy.deepcopy(schema), None)


def _field_metadata(
    schema: Mapping[str, Any],
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[tuple[str, str], ...]]:
    """(required paths, sensitive paths, (path, list) pairs) of a self-contained schema."""
    required: list[str] = []
    sensitive: list[str] = []
    references: list[tuple[str, str]] = []
    for path, field in _walk_fields(schema):
        if field.get("hub.required") is True:
            required.append(path)
        if field.get("hub.sensitive") is True:
            sensitive.append(path)
        if "hub.reference" in field:
            references.append((path, field["hub.reference"]))
    return tuple(required), tuple(sensitive), tuple(references)


def _walk_fields(schema: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(dotted path, field) for every field of a self-contained record, depth first. A named
    type referenced again after its definition is walked again under the new path."""
    definitions: dict[str, Mapping[str, Any]] = {}

    def records_in(t: Any, ns: str | None) -> Iterator[tuple[Mapping[str, Any], str | None]]:
        if isinstance(t, str):
            full = _full_name(t, ns)
            if full in definitions:
                yield definitions[full], _namespace_of(full)
        elif isinstance(t, list):
            for b in t:
                yield from records_in(b, ns)
        elif isinstance(t, dict):
            kind = t.get("type")
            if kind in ("record", "error"):
                full = _definition_name(t, ns)
                definitions[full] = t
                yield t, _namespace_of(full)
            elif kind in NAMED_KINDS:
                definitions[_definition_name(t, ns)] = t
            elif kind == "array":
                yield from records_in(t.get("items"), ns)
            elif kind == "map":
                yield from records_in(t.get("values"), ns)

    def walk(record: Mapping[str, Any], prefix: str, ns: str | None, stack: tuple[str, ...]):
        for field in record.get("fields", []):
            path = f"{prefix}{field['name']}"
            yield path, field
            for sub, sub_ns in list(records_in(field["type"], ns)):
                full = _definition_name(sub, sub_ns)
                if full in stack:  # recursive type: stop
                    continue
                yield from walk(sub, f"{path}.", sub_ns, (*stack, full))

    top = _definition_name(schema, None)
    definitions[top] = schema
    yield from walk(schema, "", _namespace_of(top), (top,))
