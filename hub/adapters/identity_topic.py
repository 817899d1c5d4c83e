"""``hub.identity`` as the identity tool reads and writes it: every committed record from the
beginning (``read_committed``), and the decisions ``hub identity confirm|reject`` append."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from hub.adapters.kafka import SafeProducer, consumer_config, producer_config
from hub.domain.errors import InfraError, SerdeError
from hub.serde.codec import AvroCodec


def read_records(
    bootstrap: str, topic: str, codec: AvroCodec, timeout: float = 30.0
) -> list[dict[str, Any]]:
    """Every committed record of ``topic``, decoded, in (partition, offset) order; a record
    that cannot be decoded is skipped (the router wrote it; nothing else may)."""
    reader = Consumer(consumer_config(bootstrap, f"{topic}-reader"))
    try:
        try:
            partitions = sorted(reader.list_topics(topic, timeout=10).topics[topic].partitions)
            ends = {
                p: reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in partitions
            }
        except (KafkaException, KeyError) as exc:
            raise InfraError(f"{topic}: cannot read its end offsets: {exc}") from exc
        ends = {p: end for p, end in ends.items() if end > 0}
        if not ends:
            return []
        reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(ends)])
        found: list[tuple[int, int, dict[str, Any]]] = []
        deadline = time.monotonic() + timeout
        while True:
            positions = reader.position([TopicPartition(topic, p) for p in sorted(ends)])
            if all(tp.offset >= ends[tp.partition] for tp in positions):
                break
            if time.monotonic() > deadline:
                raise InfraError(f"{topic}: not read to its end in {timeout:.0f}s")
            for message in reader.consume(1000, 0.2):
                if message.error() is not None or message.value() is None:
                    continue
                try:
                    _, record = codec.decode(
                        message.value(), message.topic(), message.partition(), message.offset()
                    )
                except SerdeError:
                    continue
                found.append((message.partition(), message.offset(), record))
        return [record for _, _, record in sorted(found, key=lambda f: f[:2])]
    finally:
        reader.close()


def append(bootstrap: str, topic: str, codec: AvroCodec, record: Mapping[str, Any]) -> None:
    """Write one record to ``topic`` and wait for the broker's acknowledgement."""
    producer = SafeProducer(producer_config(bootstrap))
    key = str(record.get("candidate_id") or record["envelope"]["event_id"]).encode()
    headers = [("event_type", str(record["envelope"]["event_type"]).encode())]
    producer.send(topic, key, codec.encode(record), headers)
    producer.flush()
