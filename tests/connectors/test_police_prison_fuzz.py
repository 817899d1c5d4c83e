"""IN-7 for the police and prison connectors: mutated copies of the golden exports (bytes
flipped, lines cut, duplicated, dropped or swapped, columns added, quotes, NULs, BOMs and Latin-1
bytes inserted, the whole file re-encoded) never crash the connector. Each input is either
refused with one clear error naming the file, or read with every record published, skipped or
quarantined: the counts add up, every quarantine entry has its file, line, raw text and reasons
naming file and line, no reason is an internal error, and everything sent decodes and validates.
A few hundred examples per connector here; ``HUBTEST_TIER=soak`` runs 10,000."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors import connector
from connectors.framework import Ledger, read_quarantine, run_file
from hub.domain.errors import InputError
from tests.connectors.support import memory_publisher

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "connectors"
SAMPLES = {
    "police": (GOLDEN / "police" / "night1.csv").read_bytes(),
    "prison": (GOLDEN / "prison" / "schedule1.csv").read_bytes(),
}
EXAMPLES = 10_000 if os.environ.get("HUBTEST_TIER") == "soak" else 200
NASTY = [b",", b'"', b"\n", b"\r", b";", b"\t", b"\x00", b"\xef\xbb\xbf", b"\xe9", b"\xff\xfe",
         b"\\", b"'", b"\xc3", b"\x85", "\u2028".encode(), b"9" * 30, b"-", b"/"]  # fmt: skip


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    for op in draw(st.lists(st.sampled_from(OPS), min_size=1, max_size=4)):
        data = op(draw, data)
    return data


def _pos(draw: st.DrawFn, data: bytes) -> int:
    return draw(st.integers(0, len(data)))


def _flip(draw: st.DrawFn, data: bytes) -> bytes:
    if not data:
        return data
    i = draw(st.integers(0, len(data) - 1))
    return data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1 :]


def _cut(draw: st.DrawFn, data: bytes) -> bytes:
    return data[: _pos(draw, data)]


def _insert(draw: st.DrawFn, data: bytes) -> bytes:
    i = _pos(draw, data)
    chunk = draw(st.one_of(st.sampled_from(NASTY), st.binary(min_size=1, max_size=12)))
    return data[:i] + chunk + data[i:]


def _lines(draw: st.DrawFn, data: bytes, how: str) -> bytes:
    lines = data.split(b"\n")
    i = draw(st.integers(0, len(lines) - 1))
    j = draw(st.integers(0, len(lines) - 1))
    if how == "dup":
        lines.insert(j, lines[i])
    elif how == "drop":
        del lines[i]
    else:
        lines[i], lines[j] = lines[j], lines[i]
    return b"\n".join(lines)


def _extra_column(draw: st.DrawFn, data: bytes) -> bytes:
    lines = data.split(b"\n")
    every = draw(st.booleans())
    return b"\n".join(
        line + (b",extra" if n == 0 else b",x") if line and (every or n == 0) else line
        for n, line in enumerate(lines)
    )


def _reencode(draw: st.DrawFn, data: bytes) -> bytes:
    text = data.decode("utf-8", errors="replace")
    return text.encode(draw(st.sampled_from(["latin-1", "cp1252", "utf-16"])), errors="replace")


OPS = [
    _flip, _flip, _cut, _insert, _insert, _extra_column, _reencode,
    lambda d, b: _lines(d, b, "dup"), lambda d, b: _lines(d, b, "drop"),
    lambda d, b: _lines(d, b, "swap"),
]  # fmt: skip


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_in7_mutated_exports_never_crash_and_always_add_up(name, codec, tmp_path_factory) -> None:
    spec = connector(name)
    folder = tmp_path_factory.mktemp(f"fuzz-{name}")
    path = folder / "export.csv"
    outcomes = {"refused": 0, "read": 0}

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
    @given(data=mutated(SAMPLES[name]), encoding=st.sampled_from([None, None, "cp1252"]))
    def check(data: bytes, encoding: str | None) -> None:
        path.write_bytes(data)
        publisher = memory_publisher(spec, codec)
        try:
            summary = run_file(spec, path, publisher, Ledger(":memory:"),
                               quarantine_dir=folder / "q", encoding=encoding)  # fmt: skip
        except InputError as exc:
            assert str(exc).startswith("export.csv"), exc
            assert "\n" not in str(exc)
            outcomes["refused"] += 1
            return
        outcomes["read"] += 1
        assert summary.adds_up, summary
        entries = [e for q in summary.quarantine for e in read_quarantine(q)]
        assert len(entries) == summary.rejected
        for entry in entries:
            assert entry["file"] == "export.csv" and entry["line"] >= 2
            assert entry["reasons"], entry
            for reason in entry["reasons"]:
                assert re.match(rf"export\.csv:{entry['line']}: ", reason), reason
                assert "internal error" not in reason, reason
        sent = publisher.sink.sent  # type: ignore[attr-defined]
        assert len(sent) == summary.events
        for topic, _, value, _ in sent:
            codec.decode(value, topic)  # decodes and validates

    check()
    # the mutations exercised both outcomes
    assert outcomes["refused"] > 0 and outcomes["read"] > 0, outcomes
