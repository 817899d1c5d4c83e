"""The Confluent wire format and the validator, without a broker or a registry."""

from __future__ import annotations

import datetime as dt
import decimal

import pytest
from fastavro import parse_schema

from hub.domain.errors import SerdeError, ValidationError
from hub.serde import wire

SCHEMA = parse_schema(
    {
        "type": "record",
        "name": "hub.events.Sample",
        "fields": [
            {"name": "id", "type": "string"},
            {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {
                "name": "on",
                "type": ["null", {"type": "int", "logicalType": "date"}],
                "default": None,
            },
            {
                "name": "cost",
                "type": [
                    "null",
                    {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2},
                ],
                "default": None,
            },
            {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []},
            {
                "name": "inner",
                "type": [
                    "null",
                    {"type": "record", "name": "Inner", "fields": [{"name": "n", "type": "int"}]},
                ],
                "default": None,
            },
            {"name": "again", "type": ["null", "Inner"], "default": None},
        ],
    }
)
RECORD = {
    "id": "a",
    "at": dt.datetime(2014, 6, 1, 9, 30, tzinfo=dt.UTC),
    "on": dt.date(2014, 6, 1),
    "cost": decimal.Decimal("1234.50"),
    "tags": ["x"],
    "inner": {"n": 3},
    "again": {"n": 4},
}


def test_frame_and_unframe_round_trip() -> None:
    body = wire.encode_body(SCHEMA, RECORD)
    value = wire.frame(42, body)
    assert value[:5] == b"\x00\x00\x00\x00\x2a"
    schema_id, rest = wire.unframe(value)
    assert schema_id == 42
    assert wire.decode_body(SCHEMA, rest) == RECORD


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "null_value"),
        (b"", "empty_value"),
        (b"\x01\x00\x00\x00\x01abc", "bad_magic"),
        (b"\x00\x00\x01", "truncated"),
        (b"\x00" * (wire.MAX_VALUE_BYTES + 1), "oversize"),
    ],
)
def test_bad_frames_have_their_own_reason(value: bytes | None, reason: str) -> None:
    with pytest.raises(SerdeError) as caught:
        wire.unframe(value, topic="ingest.police", partition=2, offset=17)
    assert caught.value.reason == reason
    assert str(caught.value).startswith("ingest.police[2]@17: ")


def test_trailing_bytes_are_rejected() -> None:
    body = wire.encode_body(SCHEMA, RECORD) + b"\x00"
    with pytest.raises(SerdeError) as caught:
        wire.decode_body(SCHEMA, body, topic="t", partition=0, offset=1)
    assert caught.value.reason == "trailing_bytes"


def test_truncated_body_is_a_serde_error() -> None:
    body = wire.encode_body(SCHEMA, RECORD)
    for cut in range(len(body)):
        with pytest.raises(SerdeError) as caught:
            wire.decode_body(SCHEMA, body[:cut])
        assert caught.value.reason in {"truncated", "invalid_avro", "invalid_record"}


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"id": None}, "id", "missing"),
        ({"at": dt.datetime(2014, 6, 1)}, "at", "timezone"),
        ({"on": "2014-06-01"}, "on", "not a date"),
        ({"cost": decimal.Decimal("1.234")}, "cost", "decimal places"),
        ({"tags": ["x", 3]}, "tags[1]", "not text"),
        ({"inner": {"n": "three"}}, "inner.n", "whole number"),
        ({"again": {"n": 2**40}}, "again.n", "int range"),
        ({"colour": "red"}, "colour", "not a field"),
    ],
)
def test_validation_names_the_field_and_says_why(change: dict, field: str, words: str) -> None:
    with pytest.raises(ValidationError) as caught:
        wire.validate(SCHEMA, {**RECORD, **change})
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")
    assert words in str(caught.value)
