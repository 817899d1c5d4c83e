"""Helpers for tests that run the hub's pieces against the real broker."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from hub import bootstrap, demo
from hub.adapters.kafka import SafeProducer, producer_config
from hub.publisher import Publisher
from hub.settings import RouterSettings, Settings

JURISDICTION = {"UK-ENG": "UK-ENG", "NL": "NL", "IT": "IT"}


def hub_settings(kafka_bootstrap: str, registry_url: str, prefix: str, home: Path) -> Settings:
    return Settings(
        home=home,
        kafka_bootstrap=kafka_bootstrap,
        registry_url=registry_url,
        topic_prefix=prefix,
        router=RouterSettings(transaction_timeout_ms=15_000, session_timeout_ms=6_000),
    )


def publish(settings: Settings, codec: Any, records: Iterable[Mapping[str, Any]]) -> list[str]:
    """Publish ready-built records, each with a Publisher of its own source agency."""
    sink = SafeProducer(producer_config(settings.bootstrap_servers))
    publishers: dict[str, Publisher] = {}
    fields = bootstrap.field_crypto(settings, codec.catalogue)  # None unless field_encryption
    ids = []
    for record in records:
        envelope = record["envelope"]
        agency = envelope["source_agency"]
        if agency not in publishers:
            publishers[agency] = Publisher(
                agency=agency, source_system=envelope["source_system"],
                jurisdiction=envelope["jurisdiction"], codec=codec, sink=sink,
                topics=bootstrap.topics(settings), fields=fields,
            )  # fmt: skip
        ids.append(publishers[agency].publish(record))
    sink.flush()
    return ids


def run_router_until_idle(settings: Settings, idle_s: float = 3.0, timeout_s: float = 120.0):  # type: ignore[no-untyped-def]
    """Run the router in this thread until no record arrived for ``idle_s``; return its stats."""
    router, bus = bootstrap.build_router(settings)
    state = {"seen": -1, "since": time.monotonic(), "start": time.monotonic()}

    def should_stop() -> bool:
        now = time.monotonic()
        if router.stats.received != state["seen"]:
            state["seen"], state["since"] = router.stats.received, now
        if now - state["start"] > timeout_s:
            raise TimeoutError(f"router still busy after {timeout_s}s")
        return router.stats.received > 0 and now - state["since"] > idle_s

    try:
        router.run(bus, should_stop)
    finally:
        bus.close()
    return router.stats


def read_all(bootstrap_servers: str, topic: str, timeout_s: float = 30.0) -> list[Message]:
    """Every committed record of ``topic`` from offset 0, read with read_committed."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    metadata = admin.list_topics(topic, timeout=10).topics[topic]
    partitions = sorted(metadata.partitions)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": "hub-test-reader",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            # a short long-poll: watermark queries queue behind an outstanding fetch
            "fetch.wait.max.ms": 20,
        }
    )
    try:
        ends = {}
        for p in partitions:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            ends[p] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        messages: list[Message] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            done = True
            for tp in consumer.position([TopicPartition(topic, p) for p in partitions]):
                if ends[tp.partition] > 0 and (tp.offset < 0 or tp.offset < ends[tp.partition]):
                    done = False
            if done:
                return messages
            for message in consumer.consume(1000, 0.5):
                if message.error() is None:
                    messages.append(message)
        raise TimeoutError(f"could not read {topic} to its end in {timeout_s}s")
    finally:
        consumer.close()


class TopicTail:
    """A read_committed reader that keeps its place: each ``read()`` returns every record of the
    topic so far, reading only what arrived since the last call."""

    def __init__(self, bootstrap_servers: str, topic: str) -> None:
        self.topic = topic
        self.records: list[Message] = []
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap_servers,
                "group.id": "hub-test-tail",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": 20,
            }
        )
        admin = AdminClient({"bootstrap.servers": bootstrap_servers})
        metadata = admin.list_topics(topic, timeout=10).topics[topic]
        self._partitions = sorted(metadata.partitions)
        self._consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in self._partitions]
        )
        self._next = dict.fromkeys(self._partitions, 0)

    def read(self, timeout_s: float = 30.0) -> list[Message]:
        ends = {
            p: self._consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10)[1]
            for p in self._partitions
        }
        deadline = time.monotonic() + timeout_s
        while any(self._next[p] < ends[p] for p in self._partitions):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {self.topic} to its end in {timeout_s}s")
            for message in self._consumer.consume(1000, 0.2):
                if message.error() is None:
                    self.records.append(message)
                    self._next[message.partition()] = message.offset() + 1
            for tp in self._consumer.position(
                [TopicPartition(self.topic, p) for p in self._partitions]
            ):
                if tp.offset >= 0:  # past control records of committed transactions
                    self._next[tp.partition] = max(self._next[tp.partition], tp.offset)
        return self.records

    def close(self) -> None:
        self._consumer.close()


class LiveRouter(demo.LiveRouter):
    """The router in a background thread for the length of a test; ``wait(n)`` returns once it
    has consumed and committed ``n`` input records."""

    def __enter__(self) -> LiveRouter:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def wait(self, received: int, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.error is not None:
                raise AssertionError(f"router failed: {self.error!r}")
            stats = self.router.stats
            if stats.received >= received and stats.batches and not self.bus.in_transaction:
                return
            time.sleep(0.05)
        raise AssertionError(f"router consumed {self.router.stats.received} of {received}")
