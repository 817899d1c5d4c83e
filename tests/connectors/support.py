"""Helpers for connector tests: run a file connector in-process (no broker) and read what it
sent as decoded records; compare with a golden file; the broker round trip for EO-8."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import os
from pathlib import Path
from typing import Any

from connectors.framework import Connector, Ledger, MemorySink, Summary, run_file
from hub.publisher import Publisher
from hub.topics import Topics

# `HUBTEST_REGEN=1 pytest tests/connectors` rewrites the golden expectations; review the diff.
REGEN = os.environ.get("HUBTEST_REGEN") == "1"
# rows of the generated "very large file" of each connector's bad-input tests
LARGE = 100_000 if os.environ.get("HUBTEST_TIER") == "soak" else 20_000


def memory_publisher(connector: Connector, codec: Any, prefix: str = "") -> Publisher:
    return Publisher(
        agency=connector.agency,
        source_system=connector.source_system,
        jurisdiction=connector.jurisdiction,
        codec=codec,
        sink=MemorySink(),
        topics=Topics(prefix),
    )


def decoded(codec: Any, publisher: Publisher) -> list[dict[str, Any]]:
    """The records the publisher sent, decoded from their wire bytes."""
    sink = publisher.sink
    assert isinstance(sink, MemorySink)
    return [codec.decode(value, topic, 0, i)[1] for i, (topic, _, value, _) in enumerate(sink.sent)]


def run_in_memory(
    connector: Connector, path: Path, codec: Any, ledger: Ledger | None = None,
    publisher: Publisher | None = None, **kw: Any,
) -> tuple[Summary, list[dict[str, Any]], Publisher]:  # fmt: skip
    """Run ``connector`` over ``path`` with a MemorySink; (summary, decoded records, publisher)."""
    publisher = publisher or memory_publisher(connector, codec)
    before = len(publisher.sink.sent)  # type: ignore[attr-defined]
    summary = run_file(connector, path, publisher, ledger or Ledger(":memory:"),
                       quarantine_dir=path.parent / "quarantine", **kw)  # fmt: skip
    sent = publisher.sink.sent[before:]  # type: ignore[attr-defined]
    records = [codec.decode(value, topic, 0, i)[1] for i, (topic, _, value, _) in enumerate(sent)]
    return summary, records if len(records) < 1000 else [], publisher


def plain(value: Any) -> Any:
    """A decoded record as JSON-able data (dates ISO, decimals as text)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    return value


def check_golden(records: list[dict[str, Any]], expected: Path) -> None:
    """The records equal the golden file's, in order (rewritten with HUBTEST_REGEN=1)."""
    got = [plain(r) for r in records]
    if REGEN:
        expected.write_text(json.dumps(got, indent=1, ensure_ascii=False) + "\n")
    assert got == json.loads(expected.read_text())


def counts(summary: Summary) -> tuple[int, int, int, int]:
    return summary.read, summary.published, summary.rejected, summary.skipped
