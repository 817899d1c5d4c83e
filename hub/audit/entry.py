"""The audit entry: what happened, to whom, by whom, under which clause. Metadata and hashes only.

An entry never holds a shared value. Fields are named with their treatment, the shared bytes are
represented by their SHA-256 (``payload_hash``) and the subject by a pseudonym (``subject_ref``).
The wire form (the value of a ``hub.audit`` record) is the canonical JSON of ``to_dict()``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import operator
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from hub.audit.canonical import canonical_json, sorted_keys
from hub.domain.errors import InputError, SerdeError

FORMAT_VERSION = 1

KINDS = frozenset(
    {
        "published",
        "rejected",
        "decided",
        "delivered",
        "retracted",
        "corrected",
        "access",
        "login_ok",
        "login_failed",
        "access_denied",
        "policy_loaded",
        "break_glass",
        "approval",
        "key_event",
        "erased",
        "retention_purge",
        "dlq_storm",
        "auditor_query",
    }
)
OUTCOMES = frozenset({"ok", "denied", "error", "permit", "deny"})
TREATMENTS = frozenset(
    {"keep", "drop", "mask", "generalise", "pseudonymise", "summarise", "withheld"}
)

# Column-sized limits: indexed values fit a VARCHAR(200); free text stays small.
ID_MAX = 128
SHORT_MAX = 200
TEXT_MAX = 2000
MAX_CLAUSES = 64
MAX_FIELDS = 256
MAX_DETAILS = 32
DETAIL_VALUE_MAX = 512

_SHORT = (
    "component",
    "actor",
    "role",
    "subject_ref",
    "event_id",
    "event_type",
    "source_agency",
    "audience",
    "agreement_id",
    "agreement_version",
)
_TEXT = ("reason", "purpose", "justification")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_AT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")

# The searchable copies the store keeps beside the hashed body, in column order.
INDEX_COLUMNS = (
    "entry_id",
    "kind",
    "at",
    "component",
    "actor",
    "role",
    "outcome",
    "subject_ref",
    "event_id",
    "event_type",
    "source_agency",
    "audience",
    "agreement_id",
    "agreement_version",
    "clause_ids",
)
_plain_index = operator.itemgetter(*INDEX_COLUMNS[:-1])
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


@dataclasses.dataclass(frozen=True)
class AuditEntry:
    """One audit fact. Construction validates and normalises (UTC, milliseconds, sorted maps)."""

    entry_id: str
    kind: str
    at: datetime
    component: str
    outcome: str
    actor: str | None = None
    role: str | None = None
    subject_ref: str | None = None
    event_id: str | None = None
    event_type: str | None = None
    source_agency: str | None = None
    audience: str | None = None
    agreement_id: str | None = None
    agreement_version: str | None = None
    clause_ids: tuple[str, ...] = ()
    fields: Mapping[str, str] = dataclasses.field(default_factory=dict)
    reason: str | None = None
    purpose: str | None = None
    justification: str | None = None
    payload_hash: str | None = None
    details: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        attrs = vars(self)
        for name, limit, required in _STRING_RULES:
            value = attrs[name]
            if value is None and not required:
                continue
            if (
                value.__class__ is str
                and 0 < len(value) <= limit
                and value.isascii()
                and "\x00" not in value
            ):
                continue
            _check_str(self._where, name, value, limit, required=required)
        if not isinstance(self.kind, str) or self.kind not in KINDS:
            raise InputError(
                f"{self._where()}: kind {self.kind!r} (expected one of {_list(KINDS)})"
            )
        if not isinstance(self.outcome, str) or self.outcome not in OUTCOMES:
            raise InputError(
                f"{self._where()}: outcome {self.outcome!r} (expected one of {_list(OUTCOMES)})"
            )
        at = self.at
        if not isinstance(at, datetime) or at.utcoffset() is None:
            raise InputError(f"{self._where()}: at {at!r} (expected a timezone-aware datetime)")
        if at.tzinfo is not UTC or at.microsecond % 1000:
            at = at.astimezone(UTC)
            object.__setattr__(self, "at", at.replace(microsecond=at.microsecond // 1000 * 1000))
        object.__setattr__(self, "_at_text", format_at(self.at))
        if self.payload_hash is not None and not (
            isinstance(self.payload_hash, str) and _HEX64.fullmatch(self.payload_hash)
        ):
            raise InputError(
                f"{self._where()}: payload_hash {self.payload_hash!r} "
                "(expected 64 lower-case hex digits)"
            )
        clause_ids = tuple(self.clause_ids)
        if isinstance(self.clause_ids, str) or len(clause_ids) > MAX_CLAUSES:
            raise InputError(
                f"{self._where()}: clause_ids (expected at most {MAX_CLAUSES} clause ids)"
            )
        for clause in clause_ids:
            _check_str(self._where, "clause_ids[]", clause, SHORT_MAX, required=True)
        object.__setattr__(self, "clause_ids", clause_ids)
        fields = _frozen_map(self._where, "fields", self.fields, MAX_FIELDS)
        for name, treatment in fields.items():
            if not isinstance(treatment, str) or treatment not in TREATMENTS:
                raise InputError(
                    f"{self._where()}: fields[{name!r}] treatment {treatment!r} "
                    f"(expected one of {_list(TREATMENTS)})"
                )
        object.__setattr__(self, "fields", fields)
        details = _frozen_map(self._where, "details", self.details, MAX_DETAILS)
        for value in details.values():
            _check_str(self._where, "details[]", value, DETAIL_VALUE_MAX, required=True)
        object.__setattr__(self, "details", details)

    def _where(self) -> str:
        return f"audit entry {self.entry_id!r}"

    def __hash__(self) -> int:
        return hash((self.entry_id, self.kind, self.at))

    def __reduce__(self) -> tuple[Any, ...]:
        # The read-only maps do not pickle; the canonical bytes rebuild an equal entry.
        return (AuditEntry.from_json_bytes, (self.to_json_bytes(),))

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form, keys in canonical order: every key present, ``at`` as ISO-8601
        with milliseconds and Z, ``v`` the format version."""
        attrs = vars(self)
        out = {name: attrs[name] for name in _ATTR_ORDER}
        out["at"] = attrs["_at_text"]
        out["clause_ids"] = list(self.clause_ids)
        out["details"] = dict(self.details)
        out["fields"] = dict(self.fields)
        out["v"] = FORMAT_VERSION
        return out

    def to_json_bytes(self) -> bytes:
        """The canonical JSON bytes: the ``hub.audit`` record value and the stored body."""
        return self.canonical

    @property
    def canonical(self) -> bytes:
        """``to_json_bytes()``, computed once (a plain attribute: ``cached_property`` locks)."""
        cached: bytes | None = vars(self).get("_canonical")
        if cached is None:
            cached = encode_dict(self.to_dict())
            object.__setattr__(self, "_canonical", cached)
        return cached

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AuditEntry:
        """Rebuild an entry from ``to_dict()`` output; unknown keys and wrong types are errors."""
        version = data.get("v")
        if version.__class__ is not int or version != FORMAT_VERSION:
            raise InputError(f"audit entry: v {version!r} (expected {FORMAT_VERSION})")
        keys = data.keys()
        if not keys <= _KEYS:
            raise InputError(f"audit entry: unknown keys {sorted(set(keys) - _KEYS)}")
        if not _REQUIRED <= keys:
            raise InputError(f"audit entry: missing keys {sorted(_REQUIRED - set(keys))}")
        values = dict(data)
        del values["v"]
        values["at"] = parse_at(values["at"])
        for name, kind in (("clause_ids", list), ("fields", dict), ("details", dict)):
            value = values.get(name, _ABSENT)
            if value is not _ABSENT and value.__class__ is not kind:
                raise InputError(f"audit entry: {name} {value!r} (expected a JSON {kind.__name__})")
        return cls(**values)

    @classmethod
    def from_json_bytes(cls, data: bytes) -> AuditEntry:
        """Decode a ``hub.audit`` record value; ``SerdeError(reason="invalid_audit_entry")``.

        Any JSON spelling is accepted, but a duplicated key (which a plain parse would resolve
        silently) is an error. Canonical input, what ``to_json_bytes`` writes, cannot hold one,
        so the strict parse only runs for other input.
        """
        try:
            parsed = json.loads(data)
            if not isinstance(parsed, dict):
                raise InputError(
                    f"audit entry: expected a JSON object, got {type(parsed).__name__}"
                )
            entry = cls.from_dict(parsed)
            if entry.canonical != data:
                json.loads(data, object_pairs_hook=_no_duplicate_keys)
            return entry
        except (ValueError, InputError) as exc:
            raise SerdeError(f"invalid audit entry: {exc}", reason="invalid_audit_entry") from exc

    def index_values(self) -> tuple[str | None, ...]:
        """The searchable column values, in ``INDEX_COLUMNS`` order."""
        clause_ids = self.clause_ids
        return (
            self.entry_id,
            self.kind,
            vars(self)["_at_text"],
            self.component,
            self.actor,
            self.role,
            self.outcome,
            self.subject_ref,
            self.event_id,
            self.event_type,
            self.source_agency,
            self.audience,
            self.agreement_id,
            self.agreement_version,
            _ENCODER.encode(list(clause_ids)) if clause_ids else "[]",
        )


_KEYS = frozenset(item.name for item in dataclasses.fields(AuditEntry)) | {"v"}
_ATTR_ORDER = tuple(name for name in sorted(_KEYS) if name != "v")
_REQUIRED = frozenset({"entry_id", "kind", "at", "component", "outcome"})
_STRING_RULES = (
    ("entry_id", ID_MAX, True),
    ("component", SHORT_MAX, True),
    *((name, SHORT_MAX, False) for name in _SHORT[1:]),
    *((name, TEXT_MAX, False) for name in _TEXT),
)
_AT_EXAMPLE = "2025-01-31T09:30:00.000Z"
_ABSENT = object()


def encode_dict(data: dict[str, Any]) -> bytes:
    """The canonical bytes of a ``to_dict()`` result: already in canonical key order and holding
    only validated text, so the generic ``canonical_json`` checks are not needed (it is the
    reference the tests compare this with)."""
    return _ENCODER.encode(data).encode("utf-8")


def index_values(data: Mapping[str, Any]) -> tuple[str | None, ...]:
    """The searchable column values of an entry's ``to_dict()`` form (or its parsed body)."""
    clause_ids = data["clause_ids"]
    return (*_plain_index(data), _ENCODER.encode(clause_ids) if clause_ids else "[]")


def clause_id_pattern(clause_id: str) -> str:
    """The text a ``clause_ids`` column contains when the entry names ``clause_id``."""
    return _ENCODER.encode(clause_id)


def make_entry_id(kind: str, *parts: str | int | None) -> str:
    """A deterministic entry id: the same kind and parts (event id, audience...) give the same id,
    so a replayed router transaction produces the same entries and the store skips them."""
    digest = hashlib.sha256(canonical_json([kind, *parts])).hexdigest()
    return f"{kind}-{digest[:40]}"


def payload_hash(data: bytes) -> str:
    """The hex SHA-256 of shared bytes: what the trail records instead of the values."""
    return hashlib.sha256(data).hexdigest()


def format_at(at: datetime) -> str:
    """``2025-01-31T09:30:00.123Z``: UTC, milliseconds, fixed width, so text order is time order."""
    if at.tzinfo is not UTC:
        at = at.astimezone(UTC)
    return at.isoformat(timespec="milliseconds")[:-6] + "Z"


def parse_at(text: str) -> datetime:
    """The inverse of ``format_at``; anything else is an ``InputError``."""
    if not isinstance(text, str) or not _AT.fullmatch(text):
        raise InputError(f"timestamp {text!r} (expected text like {_AT_EXAMPLE})")
    try:
        return datetime.fromisoformat(text[:-1]).replace(tzinfo=UTC)
    except ValueError as exc:
        raise InputError(f"timestamp {text!r}: {exc}") from exc


def _check_str(
    where: Callable[[], str], name: str, value: Any, limit: int, *, required: bool = False
) -> None:
    if (
        value.__class__ is str
        and 0 < len(value) <= limit
        and value.isascii()
        and "\x00" not in value
    ):
        return
    if value is None and not required:
        return
    if not isinstance(value, str) or (required and not value):
        raise InputError(f"{where()}: {name} {value!r} (expected non-empty text)")
    if len(value) > limit:
        raise InputError(f"{where()}: {name} is {len(value)} characters (at most {limit})")
    if "\x00" in value:
        raise InputError(f"{where()}: {name} contains a NUL character")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InputError(f"{where()}: {name} holds a lone surrogate") from exc


def _frozen_map(
    where: Callable[[], str], name: str, value: object, limit: int
) -> Mapping[str, str]:
    if not isinstance(value, Mapping):
        raise InputError(f"{where()}: {name} {value!r} (expected a mapping)")
    if len(value) > limit:
        raise InputError(f"{where()}: {name} has {len(value)} items (at most {limit})")
    all_ascii = True
    for key in value:
        if not (
            key.__class__ is str
            and 0 < len(key) <= SHORT_MAX
            and key.isascii()
            and "\x00" not in key
        ):
            _check_str(where, name, key, SHORT_MAX, required=True)
            all_ascii = False
    keys = sorted(value) if all_ascii else sorted_keys(value)
    return MappingProxyType({key: value[key] for key in keys})


def _list(values: frozenset[str]) -> str:
    return ", ".join(sorted(values))


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out
