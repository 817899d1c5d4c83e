"""`hub audit run`: the single writer of the audit chain, fed from the one-partition `hub.audit`.

It assigns the partition itself (no consumer group, no offsets in Kafka) and starts from the
offset stored in the audit database with the entries, so a crash never loses or repeats an entry.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from hub.adapters.audit_store import SqlAuditStore
from hub.adapters.kafka import security_config
from hub.audit.checkpoint import CheckpointSigner
from hub.audit.materialise import Materialiser
from hub.domain.errors import InfraError

log = structlog.get_logger(__name__)


def run_materialiser(
    *,
    bootstrap: str,
    topic: str,
    store: SqlAuditStore,
    signer: CheckpointSigner,
    should_stop: Callable[[], bool],
    checkpoint_every: int = 1000,
    checkpoint_interval_s: float = 5.0,
    idle_stop_s: float | None = None,
) -> Materialiser:
    """Append ``hub.audit`` to the chain until ``should_stop()`` (or ``idle_stop_s`` without
    records, for catch-up runs); returns the materialiser with its counters."""
    worker = Materialiser(
        store, signer, topic=topic, checkpoint_every=checkpoint_every,
        checkpoint_interval_s=checkpoint_interval_s,
    )  # fmt: skip
    start = store.next_offset(topic, 0)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "hub-audit-materialiser",  # required by the client; never committed
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            **security_config(),
        }
    )
    consumer.assign([TopicPartition(topic, 0, start if start is not None else OFFSET_BEGINNING)])
    log.info("audit_materialiser_started", topic=topic, from_offset=start or 0)
    idle = 0.0
    try:
        while not should_stop():
            messages = consumer.consume(1000, 1.0)
            records = []
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.fatal():
                        raise InfraError(f"audit consumer failed: {error.str()}")
                    continue
                records.append((message.partition(), message.offset(), message.value()))
            if records:
                idle = 0.0
                worker.process(records)
            else:
                worker.tick()
                idle += 1.0
                if idle_stop_s is not None and idle >= idle_stop_s:
                    break
        worker.checkpoint_head()
    except KafkaException as exc:
        raise InfraError(f"audit consumer: {exc}") from exc
    finally:
        consumer.close()
    log.info(
        "audit_materialiser_stopped", appended=worker.result.appended,
        rejected=worker.result.rejected,
    )  # fmt: skip
    return worker
