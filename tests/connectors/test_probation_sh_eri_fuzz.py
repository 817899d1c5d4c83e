"""IN-7 for the probation, Safety House and ERI connectors: mutated sample exports (byte flips,
cut and doubled lines, lines split in two, extra columns and keys, other encodings, truncation)
never crash a connector. Each file either fails as a whole with an ``InputError`` naming it, or
every record read is published, rejected or skipped, and every rejection names the file, line
and reason. 5 × 60 examples here; ``HUBTEST_TIER=soak`` runs 5 × 2,500."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.eri import CONNECTOR as ERI
from connectors.framework import Connector, Ledger, MemorySink, read_quarantine, run_file
from connectors.probation import CRC, NPS
from connectors.safety_house import AFTERCARE, SAFETY_HOUSE
from hub.domain.errors import InputError
from tests.connectors.support import memory_publisher

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "connectors"
SAMPLES = {
    "probation-crc": (CRC, GOLDEN / "probation" / "crc-events.json"),
    "probation-nps": (NPS, GOLDEN / "probation" / "nps-events.jsonl"),
    "safety-house": (SAFETY_HOUSE, GOLDEN / "safety_house" / "registraties.json"),
    "hague-aftercare": (AFTERCARE, GOLDEN / "safety_house" / "registraties.json"),
    "eri": (ERI, GOLDEN / "eri" / "registro.csv"),
}
EXAMPLES = 2_500 if os.environ.get("HUBTEST_TIER") == "soak" else 60


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with one to four mutations of the kinds RELIABILITY.md IN-7 names."""
    for _ in range(draw(st.integers(1, 4))):
        n = len(data)
        at = draw(st.integers(0, max(0, n - 1)))
        lines = data.split(b"\n")
        line = draw(st.integers(0, len(lines) - 1))
        kind = draw(
            st.sampled_from(
                [
                    "flip",
                    "cut",
                    "insert",
                    "drop_line",
                    "double_line",
                    "split_line",
                    "extra_field",
                    "encoding",
                    "truncate_line",
                ]
            )
        )
        if kind == "flip" and n:
            data = data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
        elif kind == "cut":
            data = data[:at]
        elif kind == "insert":
            data = data[:at] + draw(st.binary(min_size=1, max_size=16)) + data[at:]
        elif kind == "drop_line":
            data = b"\n".join(lines[:line] + lines[line + 1 :])
        elif kind == "double_line":
            data = b"\n".join(lines[: line + 1] + lines[line:])
        elif kind == "split_line":
            data = data[:at] + b"\n" + data[at:]
        elif kind == "extra_field":
            extra = draw(st.sampled_from([b";extra", b',"x":1', b'"extra": "\xc3\xa9", ', b";;;"]))
            data = b"\n".join(lines[:line] + [lines[line] + extra] + lines[line + 1 :])
        elif kind == "encoding":
            text = data.decode("utf-8", errors="replace")
            codec = draw(st.sampled_from(["latin-1", "utf-16", "cp1252", "utf-8-sig"]))
            data = text.encode(codec, errors="replace")
        elif kind == "truncate_line":
            cut = lines[line][: len(lines[line]) // 2]
            data = b"\n".join(lines[:line] + [cut] + lines[line + 1 :])
    return data


def _check(connector: Connector, data: bytes, codec) -> None:  # type: ignore[no-untyped-def]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"input{''.join(SAMPLE_SUFFIX[connector.name])}"
        path.write_bytes(data)
        publisher = memory_publisher(connector, codec)
        try:
            summary = run_file(connector, path, publisher, Ledger(":memory:"),
                               quarantine_dir=Path(tmp) / "q")  # fmt: skip
        except InputError as exc:
            assert str(exc).startswith(path.name), exc
            return
        assert summary.adds_up, summary
        assert summary.read == summary.published + summary.rejected + summary.skipped
        sink = publisher.sink
        assert isinstance(sink, MemorySink) and len(sink.sent) == summary.events
        entries = [e for q in summary.quarantine for e in read_quarantine(q)]
        assert len(entries) == summary.rejected
        for entry in entries:
            assert entry["file"] == path.name and entry["line"] >= 1 and entry["reasons"]
            for reason in entry["reasons"]:
                assert reason.startswith(f"{path.name}:{entry['line']}: "), reason


SAMPLE_SUFFIX = {c.name: p.suffix for c, p in SAMPLES.values()}


@pytest.mark.parametrize("name", list(SAMPLES))
def test_in7_mutated_exports_never_crash_and_always_add_up(name: str, codec) -> None:
    connector, sample = SAMPLES[name]

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(mutated(sample.read_bytes()))
    def fuzz(data: bytes) -> None:
        _check(connector, data, codec)

    fuzz()
