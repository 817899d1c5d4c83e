"""Field encryption on, a file connector seals what the schemas mark sensitive before it leaves:
the value on the wire holds none of it (the fields are null), the ``hub.enc`` header carries it,
and the hub's keys open it again. ``hub connector run`` builds its publisher the same way."""

from __future__ import annotations

from pathlib import Path

from connectors import connector
from connectors.framework import Ledger, MemorySink, build_publisher, run_file
from hub.adapters.key_store import open_keyring
from hub.crypto import FieldCrypto
from hub.crypto.fields import HEADER_ENC

SAMPLE = Path(__file__).resolve().parents[1] / "golden" / "connectors" / "probation"


def test_a_connector_publishes_sensitive_fields_sealed(  # type: ignore[no-untyped-def]
    registry_url, catalogue, codec, tmp_path
) -> None:
    fields = FieldCrypto(catalogue, open_keyring(tmp_path / "keys", create=True))
    spec = connector("probation-crc")
    sink = MemorySink()
    publisher = build_publisher(spec, "unused:9092", registry_url, sink=sink, fields=fields)
    summary = run_file(spec, SAMPLE / "crc-events.json", publisher, Ledger(":memory:"))
    assert summary.published and sink.sent

    sealed = opened = 0
    for _topic, _key, value, headers in sink.sent:
        _, record = codec.decode(value)
        paths = fields.sensitive(record["envelope"]["event_type"])
        if not any(_value_at(record, p) for p in paths):
            if HEADER_ENC in dict(headers):
                sealed += 1
                restored = fields.open(record, headers)
                opened += any(_value_at(restored, p) for p in paths)
        else:
            raise AssertionError(f"clear sensitive value on the wire: {record['envelope']}")
    assert sealed and opened == sealed, (sealed, opened)


def _value_at(record, path):  # type: ignore[no-untyped-def]
    """Any non-null value at ``path`` (field names; lists searched item by item)."""
    values = [record]
    for name in path:
        nxt = []
        for v in values:
            if isinstance(v, list):
                nxt += [i.get(name) for i in v if isinstance(i, dict)]
            elif isinstance(v, dict):
                nxt.append(v.get(name))
        values = [v for v in nxt if v is not None]
    flat = [i for v in values for i in (v if isinstance(v, list) else [v])]
    return any(v is not None for v in flat)
