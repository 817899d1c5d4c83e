"""Golden byte files pin the wire format: the same record must always give the same bytes.

If one fails after a deliberate schema or format change, rerun
`python -m tests.golden.wire.regenerate` and review the diff of the .bin files.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.serde import wire
from hub.serde.catalogue import Catalogue
from tests.golden.wire.samples import SCHEMA_ID, sample_record

HERE = Path(__file__).resolve().parent / "wire"
CATALOGUE = Catalogue.load()


@pytest.mark.parametrize("event_type", CATALOGUE.event_types())
def test_encoding_matches_the_golden_bytes(event_type: str) -> None:
    golden = (HERE / f"{event_type}.bin").read_bytes()
    record = sample_record(CATALOGUE, event_type)
    body = wire.encode_body(CATALOGUE.parsed(event_type), record)
    assert wire.frame(SCHEMA_ID, body) == golden


@pytest.mark.parametrize("event_type", CATALOGUE.event_types())
def test_golden_bytes_decode_to_the_record(event_type: str) -> None:
    schema_id, body = wire.unframe((HERE / f"{event_type}.bin").read_bytes())
    assert schema_id == SCHEMA_ID
    decoded = wire.decode_body(CATALOGUE.parsed(event_type), body)
    assert decoded == sample_record(CATALOGUE, event_type)


def test_every_event_type_has_a_golden_file() -> None:
    files = {p.name.removesuffix(".bin") for p in HERE.glob("*.bin")}
    assert files == set(CATALOGUE.event_types())
