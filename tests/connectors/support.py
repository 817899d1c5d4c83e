"""Helpers for connector tests: run a file connector in-process (no broker) and read what it
sent as decoded records; compare with a golden file; the broker round trip for EO-8."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import os
import time
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from connectors.framework import Connector, Ledger, MemorySink, Summary, run_file
from hub.domain.errors import InfraError
from hub.publisher import Publisher
from hub.topics import Topics

# `HUBTEST_REGEN=1 pytest tests/connectors` rewrites the golden expectations; review the diff.
REGEN = os.environ.get("HUBTEST_REGEN") == "1"
# rows of the generated "very large file" of each connector's bad-input tests
LARGE = 100_000 if os.environ.get("HUBTEST_TIER") == "soak" else 10_000


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
    """Run ``connector`` over ``path`` with a MemorySink: (summary, the records it sent, decoded,
    publisher). Over 1,000 are not decoded (an empty list): count ``publisher.sink.sent``."""
    publisher = publisher or memory_publisher(connector, codec)
    before = len(publisher.sink.sent)  # type: ignore[attr-defined]
    summary = run_file(connector, path, publisher, ledger or Ledger(":memory:"),
                       quarantine_dir=path.parent / "quarantine", **kw)  # fmt: skip
    sent = publisher.sink.sent[before:]  # type: ignore[attr-defined]
    if len(sent) >= 1000:
        return summary, [], publisher
    records = [codec.decode(value, topic, 0, i)[1] for i, (topic, _, value, _) in enumerate(sent)]
    return summary, records, publisher


class CrashAfter:
    """A sink that forwards ``n`` records and then fails: a connector killed half-way."""

    def __init__(self, sink: Any, n: int) -> None:
        self.sink, self.left = sink, n

    def send(self, topic: str, key: bytes | None, value: bytes, headers: Any = ()) -> None:
        if self.left == 0:
            raise InfraError("killed half-way")
        self.left -= 1
        self.sink.send(topic, key, value, headers)

    def flush(self, timeout: float = 60.0) -> None:
        self.sink.flush(timeout)


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


def read_topics(bootstrap_servers: str, topics: list[str]) -> list[tuple[str, bytes]]:
    """Every committed record of ``topics`` (those that exist) as (topic, value), read to the
    end with one read_committed consumer."""
    metadata = AdminClient({"bootstrap.servers": bootstrap_servers}).list_topics(timeout=10)
    parts = [TopicPartition(t, p) for t in topics if t in metadata.topics
             for p in metadata.topics[t].partitions]  # fmt: skip
    consumer = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": "connector-tests",
                         "enable.auto.commit": False, "isolation.level": "read_committed",
                         "fetch.wait.max.ms": 20})  # fmt: skip
    try:
        ends = {(tp.topic, tp.partition): consumer.get_watermark_offsets(tp, timeout=10)[1]
                for tp in parts}  # fmt: skip
        consumer.assign([TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING) for tp in parts])
        out: list[tuple[str, bytes]] = []
        deadline = time.monotonic() + 60
        while any(0 < ends[(p.topic, p.partition)] and not 0 <= ends[(p.topic, p.partition)]
                  <= p.offset for p in consumer.position(parts)):  # fmt: skip
            assert time.monotonic() < deadline, f"could not read {topics} to the end"
            out += [(m.topic(), m.value()) for m in consumer.consume(1000, 0.2) if not m.error()]
        return out
    finally:
        consumer.close()
