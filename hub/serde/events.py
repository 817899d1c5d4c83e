"""Event-level checks beyond the Avro schema: required fields and reference-data codes.

The Publisher runs them before sending and the router after decoding, because a corrupted payload
often still decodes (RELIABILITY.md A6).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from hub.domain.errors import ValidationError
from hub.serde.catalogue import Catalogue


def check_event(catalogue: Catalogue, name: str, record: Mapping[str, Any]) -> None:
    """Raise ``ValidationError`` for a missing required field, an unknown code or a bad id."""
    envelope = record["envelope"]
    event_type = envelope["event_type"]
    for key in ("event_id", "supersedes_event_id"):
        value = envelope.get(key)
        if value is not None and not _is_uuid(value):
            raise ValidationError(
                f"{event_type}: envelope.{key}: {value!r} is not a UUID",
                field=f"envelope.{key}",
                reason="bad_event_id",
            )
    for field in catalogue.required_fields(name):
        if not _values_at(record, field):
            raise ValidationError(
                f"{event_type}: {field}: is required and missing", field=field, reason="required"
            )
    for field, list_name in catalogue.reference_fields(name).items():
        for path, value in _values_at(record, field):
            codes = catalogue.reference(list_name)
            if value not in codes:
                shown = ", ".join(sorted(codes)[:12]) + (", ..." if len(codes) > 12 else "")
                raise ValidationError(
                    f"{event_type}: {path}: {value!r} is not a code of {list_name} "
                    f"(expected one of: {shown})",
                    field=path,
                    reason="unknown_code",
                )


def _is_uuid(value: Any) -> bool:
    try:
        return str(uuid.UUID(str(value))) == value
    except ValueError:
        return False


def _values_at(value: Any, dotted: str, path: str = "") -> list[tuple[str, Any]]:
    """The non-null values at a dotted path, through nested records and lists."""
    if isinstance(value, list):
        return [
            hit for i, item in enumerate(value) for hit in _values_at(item, dotted, f"{path}[{i}]")
        ]
    if not dotted:
        return [] if value is None else [(path, value)]
    if not isinstance(value, Mapping):
        return []
    head, _, rest = dotted.partition(".")
    return _values_at(value.get(head), rest, f"{path}.{head}" if path else head)
