"""Every event schema of the catalogue round-trips through fastavro for values generated from it."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from hypothesis import HealthCheck, given, settings

from hub.serde.catalogue import Catalogue

try:
    from tests.strategies import records_for
except ModuleNotFoundError:  # pytest did not put the repository root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.strategies import records_for

CATALOGUE = Catalogue.load()
FAST = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _round_trip(parsed: Any, value: Any) -> Any:
    buf = io.BytesIO()
    schemaless_writer(buf, parsed, value)
    buf.seek(0)
    decoded = schemaless_reader(buf, parsed, None)
    assert buf.read() == b"", "the reader left bytes unread"
    return decoded


@pytest.mark.parametrize("name", CATALOGUE.names())
def test_every_event_schema_round_trips(name: str) -> None:
    parsed = CATALOGUE.parsed(name)

    @FAST
    @given(records_for(parsed))
    def check(record: dict[str, Any]) -> None:
        assert _round_trip(parsed, record) == record

    check()


# A schema with every Avro type and logical type the strategies claim to cover.
EVERYTHING = {
    "type": "record",
    "name": "Everything",
    "namespace": "test.strategies",
    "fields": [
        {"name": "n", "type": "null"},
        {"name": "b", "type": "boolean"},
        {"name": "i", "type": "int"},
        {"name": "l", "type": "long"},
        {"name": "f", "type": "float"},
        {"name": "d", "type": "double"},
        {"name": "by", "type": "bytes"},
        {"name": "s", "type": "string"},
        {"name": "e", "type": {"type": "enum", "name": "Colour", "symbols": ["RED", "GREEN"]}},
        {"name": "fx", "type": {"type": "fixed", "name": "Four", "size": 4}},
        {"name": "fx_again", "type": "Four"},
        {"name": "m", "type": {"type": "map", "values": ["null", "long"]}},
        {"name": "date", "type": {"type": "int", "logicalType": "date"}},
        {"name": "tmil", "type": {"type": "int", "logicalType": "time-millis"}},
        {"name": "tmic", "type": {"type": "long", "logicalType": "time-micros"}},
        {"name": "tsmil", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "tsmic", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {
            "name": "money",
            "type": {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2},
        },
        {
            "name": "fixed_money",
            "type": {
                "type": "fixed",
                "name": "Money8",
                "size": 8,
                "logicalType": "decimal",
                "precision": 18,
                "scale": 3,
            },
        },
        {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
        {
            "name": "tree",
            "type": {
                "type": "record",
                "name": "Node",
                "fields": [
                    {"name": "label", "type": "string"},
                    {"name": "children", "type": {"type": "array", "items": "Node"}},
                ],
            },
        },
        {"name": "choice", "type": ["null", "Colour", {"type": "array", "items": "Node"}]},
    ],
}


@FAST
@given(records_for(parse_schema(EVERYTHING)))
def test_strategies_cover_every_avro_type(record: dict[str, Any]) -> None:
    parsed = parse_schema(EVERYTHING)
    assert _round_trip(parsed, record) == record
    assert record["tsmil"].tzinfo is not None and record["tsmil"].microsecond % 1000 == 0
    assert record["money"].as_tuple().exponent == -2
