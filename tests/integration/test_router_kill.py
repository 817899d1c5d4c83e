"""IN-6 (RELIABILITY.md B.2): DLQ durability when the router process is killed.

``hub router run`` runs as a subprocess (HUB_* environment, transaction timeout 15 s, session
timeout 6 s) while a stream with 50 % bad records is produced in the background. The test kills
it with SIGKILL five times, each time at a random moment (seeded) after it committed at least
one transaction, and starts a new one each time; the last one drains the stream and stops on
SIGTERM. Then:

- DLQ count exact: every bad record is in its agency's DLQ exactly once (0 lost, 0 duplicated),
  with its reason; one ``rejected`` audit entry each;
- every good event was routed exactly once (one ``published`` entry each);
- the router group's lag is 0.

DLQ records are written in the router's transaction, so a kill either loses the whole batch
(read again by the next router) or nothing; Kafka Connect's asynchronous DLQ send is the
counter-example this guards against.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.integration.test_router_harness import (
    MALFORMED_KINDS,
    Hub,
    Injector,
    malformed,
    random_events,
    wait_until,
)

pytestmark = pytest.mark.kafka
HUB = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "hub"
KILLS = int(os.environ.get("HUB_IN6_KILLS", "5"))
RECORDS = int(os.environ.get("HUB_IN6_RECORDS", "1200"))  # half of them bad
SEED = int(os.environ.get("HUB_IN6_SEED", "66"))


class RouterProcess:
    def __init__(self, hub: Hub, logs: Path, n: int) -> None:
        self.log = logs / f"router-{n}.log"
        self._out = self.log.open("wb")
        self.proc = subprocess.Popen(
            [str(HUB), "router", "run"], env=hub.env(), stdout=self._out, stderr=subprocess.STDOUT
        )

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self._out.close()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(60)
        self._out.close()
        return code

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def committed_inputs(hub: Hub, consumer: Consumer, partitions: list[TopicPartition]) -> int:
    """How many ingest records the router group has committed: it moves only when a router
    transaction with input records in it commits."""
    return sum(max(tp.offset, 0) for tp in consumer.committed(partitions, timeout=10))


def test_in6_dlq_exact_under_router_sigkill(kafka_bootstrap, registry_url, topics, codec,
                                            tmp_path) -> None:  # fmt: skip
    hub = Hub(kafka_bootstrap, registry_url, topics, codec, tmp_path / "home",
              batch_size=100)  # fmt: skip  (small batches: many commits to kill between)
    rng = random.Random(SEED)
    good = random_events(hub, RECORDS // 2, seed=SEED, subjects=1000)
    kinds = [k for k in MALFORMED_KINDS if k != "oversize"]
    stream: list[tuple[str, bytes | None, bytes | None, str | None]] = [
        (hub.topics.ingest(e["envelope"]["source_agency"]),
         e["envelope"]["subject"]["local_id"].encode(), codec.encode(e), None)
        for e in good
    ]  # fmt: skip
    stream += [malformed(hub, kinds[i % len(kinds)], rng.choice(good))
               for i in range(RECORDS - len(good))]  # fmt: skip
    rng.shuffle(stream)

    # the stream, produced in chunks while routers come and go
    landed: list = []
    failure: list[BaseException] = []

    def produce() -> None:
        try:
            injector = Injector(hub.bootstrap_servers)
            for at in range(0, len(stream), 20):  # about 30 records/s: the stream lasts
                chunk = stream[at : at + 20]       # through the kills
                landed.extend(injector.send([(t, k, v) for t, k, v, _ in chunk]))
                time.sleep(0.6)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failure.append(exc)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    watcher = Consumer({"bootstrap.servers": hub.bootstrap_servers,
                        "group.id": f"{hub.topics.prefix}hub-router"})  # fmt: skip  (never joins)
    admin_meta = watcher.list_topics(timeout=10).topics
    inputs = [TopicPartition(t, p) for t in hub.ingest_topics() for p in admin_meta[t].partitions]
    logs = tmp_path / "logs"
    logs.mkdir()
    kills = []
    try:
        for n in range(KILLS):
            before = committed_inputs(hub, watcher, inputs)
            router = RouterProcess(hub, logs, n)
            try:
                wait_until(
                    lambda r=router, b=before: committed_inputs(hub, watcher, inputs) > b
                    or r.proc.poll() is not None,
                    60, "a committed transaction",
                )  # fmt: skip
            except AssertionError:
                router.kill()
                raise AssertionError(f"router {n} committed nothing:\n{router.tail()}") from None
            assert router.proc.poll() is None, f"router {n} exited:\n{router.tail()}"
            time.sleep(rng.uniform(0.0, 1.5))  # a random kill point after ≥1 commit
            kills.append(committed_inputs(hub, watcher, inputs))
            router.kill()
        producer.join(120)
        assert not failure, failure
        assert len(landed) == len(stream)
        final = RouterProcess(hub, logs, KILLS)
        try:
            wait_until(lambda: not any(hub.router_lag().values()), 120, "lag 0", step=0.5)
        finally:
            code = final.stop()
        assert code == 0, final.tail()
    finally:
        watcher.close()

    expected = {(p.topic, p.partition, p.offset): reason
                for p, (_, _, _, reason) in zip(landed, stream, strict=True) if reason}  # fmt: skip
    everything = hub.read_many([*hub.dlq_topics(), hub.topics.audit])
    origins = Counter()
    reasons = {}
    for topic in hub.dlq_topics():
        for m in everything[topic]:
            h = dict(m.headers())
            origin = (h["hub.error.topic"].decode(), int(h["hub.error.partition"]),
                      int(h["hub.error.offset"]))  # fmt: skip
            origins[origin] += 1
            reasons[origin] = h["hub.error.reason"].decode()
    duplicated = [o for o, n in origins.items() if n > 1]
    lost = sorted(set(expected) - set(origins))
    assert not duplicated, f"{len(duplicated)} DLQ records duplicated: {duplicated[:5]}"
    assert not lost, f"{len(lost)} bad records lost: {lost[:5]}"
    assert set(origins) == set(expected) and sum(origins.values()) == len(expected)
    assert reasons == expected
    audit = [json.loads(m.value()) for m in everything[hub.topics.audit]]
    rejected = Counter(e["entry_id"] for e in audit if e["kind"] == "rejected")
    assert len(rejected) == len(expected) and set(rejected.values()) == {1}
    published = Counter(e["event_id"] for e in audit if e["kind"] == "published")
    assert published == Counter(e["envelope"]["event_id"] for e in good), "routed ≠ once each"
    # the kills hit open transactions: their DLQ records are on disk, aborted, never read
    uncommitted = hub.read_many(hub.dlq_topics(), isolation="read_uncommitted")
    aborted = sum(map(len, uncommitted.values())) - len(expected)
    print(f"\nIN-6: {len(expected)} bad of {len(stream)}; SIGKILLs when {kills} inputs were "
          f"committed; {aborted} DLQ records of killed transactions aborted")  # fmt: skip
    assert aborted > 0, "no kill interrupted a transaction that had written to the DLQ"
