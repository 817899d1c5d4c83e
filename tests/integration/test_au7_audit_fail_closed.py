"""AU-7 (RELIABILITY.md B.3): the router fails closed when it cannot write the audit trail.

Audit entries are produced in the same Kafka transaction as the deliveries, so a failing
``hub.audit`` write must abort the deliveries with it. RELIABILITY words the fault as removing the
router's Write ACL on ``hub.audit``, which needs the secure broker; here the session's plain broker
refuses the writes instead: ``hub.audit``'s ``max.message.bytes`` is lowered mid-run below the size
of any audit batch (the broker rejects every one, as it would without the ACL), then restored.
Pass: 0 deliveries committed while audit writes fail, no DLQ record, and after restoring every
event is routed exactly once with its audit entries, by the same router (no restart).

The limit must still admit the coordinator's transaction markers (a control batch is 78 bytes):
the broker's marker writer treats RecordTooLargeException as fatal (IllegalStateException in
TransactionMarkerRequestCompletionHandler), so with a limit of 64 the abort of the failed
transaction never completes, the transactional.id stays in PrepareAbort until the coordinator
reloads, and every later AddOffsets/InitProducerId answers CONCURRENT_TRANSACTIONS: a broker stall
no client can recover from, and not what a missing ACL does (AddPartitionsToTxn is refused, so
``hub.audit`` never joins the transaction and needs no marker).
"""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from hub.adapters.kafka_txn import TransactionalBus
from hub.domain.errors import InfraError
from hub.topics import Topics
from tests.golden.policy.builder import EventBuilder
from tests.hubtest import LiveRouter
from tests.integration.test_router_harness import Hub, random_events, wait_until

pytestmark = pytest.mark.kafka
GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "policy"


# Above a transaction marker's control batch (78 bytes), below any audit batch (the router's
# aborts while it is set show the broker refusing them).
REFUSING_LIMIT = 128


def _audit_limit(hub: Hub, value: int) -> None:
    admin = AdminClient({"bootstrap.servers": hub.bootstrap_servers})
    entry = ConfigEntry("max.message.bytes", str(value),
                        incremental_operation=AlterConfigOpType.SET)  # fmt: skip
    resource = ConfigResource("TOPIC", hub.topics.audit, incremental_configs=[entry])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(30)


def _outputs(hub: Hub, ids: set[str]) -> tuple[Counter[tuple[str, str]], int]:
    """(deliveries of ``ids`` per (event, topic), DLQ records), read_committed from offset 0."""
    deliveries: Counter[tuple[str, str]] = Counter()
    for topic, messages in hub.read_many(hub.deliver_topics()).items():
        for m in messages:
            event_id = hub.codec.decode(m.value())[1]["envelope"]["event_id"]
            if event_id in ids:
                deliveries[(event_id, topic)] += 1
    dlq = sum(len(m) for m in hub.read_many(hub.dlq_topics()).values())
    return deliveries, dlq


def test_router_delivers_nothing_while_audit_writes_fail(
    kafka_bootstrap: str, registry_url: str, codec: Any, tmp_path: Path
) -> None:
    topics = Topics(prefix=f"a{uuid.uuid4().hex[:10]}.")
    hub = Hub(kafka_bootstrap, registry_url, topics, codec, tmp_path)
    first = []
    for path in sorted(GOLDEN.glob("s0*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        builder = EventBuilder(hub.catalogue, hub.jurisdiction, doc.get("people"),
                               namespace=f"au7-{path.stem}")  # fmt: skip
        first += [builder.build(name, spec) for name, spec in doc["events"].items()]
    second = random_events(hub, 60, seed=21)
    ids = {e["envelope"]["event_id"] for e in second}
    with LiveRouter(hub.settings) as live:
        hub.publish(first)
        live.wait(len(first))
        committed_before = live.router.stats.batches
        _audit_limit(hub, REFUSING_LIMIT)
        try:
            hub.publish(second)
            wait_until(lambda: live.router.stats.aborted >= 3, 60, "three aborted batches")
            during, dlq_during = _outputs(hub, ids)
            batches_during = live.router.stats.batches - committed_before
        finally:
            _audit_limit(hub, 1_048_588)  # the broker's default
        wait_until(lambda: not any(hub.router_lag().values()), 90, "the second batch routed")
        aborted = live.router.stats.aborted
    assert not during and dlq_during == 0 and batches_during == 0
    deliveries, dlq_after = _outputs(hub, ids)
    entries = hub.audit()
    published = Counter(e["event_id"] for e in entries if e["kind"] == "published")
    routed = {i for i in ids if published[i]}
    # every event is valid: all routed, each once, none refused
    assert routed == ids and all(published[i] == 1 for i in ids) and dlq_after == 0
    audited = Counter((e["event_id"], e["details"]["topic"]) for e in entries
                      if e["kind"] == "delivered" and e["event_id"] in ids)  # fmt: skip
    assert deliveries and set(deliveries.values()) == {1} and deliveries == audited
    print(f"AU-7: {aborted} transactions aborted while hub.audit refused writes, 0 deliveries "
          f"and 0 DLQ records committed; then the same router routed all {len(ids)} events once, "
          f"{sum(deliveries.values())} deliveries each with its delivered entry")  # fmt: skip


def test_close_after_a_failed_producer_recreation_keeps_its_error(
    kafka_bootstrap: str, topics: Topics
) -> None:
    """When the coordinator cannot finish the old transaction (the draft of this test, with a limit
    below a marker's size), the recreated producer's init_transactions fails and the bus raises
    InfraError, which ends the router; its ``close()`` must not replace that error with an
    AttributeError for the producer it no longer has."""
    bus = TransactionalBus(
        bootstrap=kafka_bootstrap,
        group_id=f"{topics.prefix}g",
        transactional_id=f"{topics.prefix}t",
        subscribe=[topics.audit],
    )
    bus.begin()
    bus._producer_config["transaction.timeout.ms"] = -1  # the next producer cannot be built
    with pytest.raises(InfraError, match="init_transactions failed"):
        bus._recreate_producer()
    assert bus.in_transaction
    bus.close()
    assert bus.stats.producer_recreated == 1
