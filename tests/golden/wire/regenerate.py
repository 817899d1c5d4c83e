"""Rewrite the golden wire files: `python -m tests.golden.wire.regenerate`.

Only after a deliberate change to the wire format or to a schema; the diff then shows exactly
which bytes changed. Each event type gets `<event_type>.bin` (Confluent framing with schema id
4242 and the Avro body) built from `tests.golden.wire.samples`.
"""

from __future__ import annotations

from pathlib import Path

from hub.serde import wire
from hub.serde.catalogue import Catalogue
from tests.golden.wire.samples import SCHEMA_ID, sample_record

HERE = Path(__file__).resolve().parent


def main() -> None:
    catalogue = Catalogue.load()
    for event_type in catalogue.event_types():
        record = sample_record(catalogue, event_type)
        body = wire.encode_body(catalogue.parsed(event_type), record)
        (HERE / f"{event_type}.bin").write_bytes(wire.frame(SCHEMA_ID, body))
    print(f"wrote {len(catalogue.event_types())} golden files to {HERE}")


if __name__ == "__main__":
    main()
