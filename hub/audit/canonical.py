"""Canonical JSON (RFC 8785 style) for the values an audit entry holds.

Objects have their keys sorted by UTF-16 code units, there is no whitespace, strings are escaped
as ECMAScript's ``JSON.stringify`` does and the text is UTF-8. Only strings, integers in the
I-JSON safe range, ``null``, booleans, lists and string-keyed objects are accepted: no floats, so
no number formatting question arises.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

MAX_SAFE_INTEGER = 2**53 - 1

_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def canonical_json(value: Any) -> bytes:
    """The canonical UTF-8 bytes of ``value``; ``ValueError`` for anything outside the subset."""
    text = _ENCODER.encode(_prepare(value))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("a string holds a lone surrogate, which UTF-8 cannot encode") from exc


def sorted_keys(keys: Iterable[str]) -> list[str]:
    """``keys`` in RFC 8785 order: by UTF-16 code units (code point order differs above U+FFFF)."""
    out = list(keys)
    if all(key.isascii() for key in out):
        out.sort()
    else:
        out.sort(key=lambda key: key.encode("utf-16-be", "surrogatepass"))
    return out


def _prepare(value: Any) -> Any:
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, int):
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise ValueError(f"integer {value} is outside the I-JSON safe range")
        return value
    if isinstance(value, Mapping):
        for key in value:
            if not isinstance(key, str):
                raise ValueError(f"object key {key!r} is not a string")
        return {key: _prepare(value[key]) for key in sorted_keys(value)}
    if isinstance(value, (list, tuple)):
        return [_prepare(item) for item in value]
    raise ValueError(f"{type(value).__name__} is not allowed in canonical JSON")
