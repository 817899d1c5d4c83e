"""Events published with the Publisher through the real broker come back decoded and equal."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer

from hub.adapters.kafka import SafeProducer, consumer_config, ensure_topics, producer_config
from hub.publisher import Publisher
from hub.topics import Topics
from tests.factory import EventFactory

pytestmark = pytest.mark.kafka


def test_ten_thousand_mixed_events_round_trip(kafka_bootstrap, topics: Topics, codec) -> None:
    ensure_topics(kafka_bootstrap, {topics.ingest("police"): 3})
    publisher = Publisher(
        agency="police", source_system="corvus", jurisdiction="UK-ENG", codec=codec,
        sink=SafeProducer(producer_config(kafka_bootstrap)), topics=topics,
    )  # fmt: skip
    factory = EventFactory(codec.catalogue, seed=11)
    event_types = codec.catalogue.event_types()
    sent = {}
    for i in range(10_000):
        event_type = event_types[i % len(event_types)]
        record = factory.event(publisher, event_type, key=f"row-{i}", local_id=f"N{i % 400}")
        sent[publisher.publish(record)] = record
    publisher.flush()
    assert len(sent) == 10_000

    consumer = Consumer(consumer_config(kafka_bootstrap, f"{topics.prefix}check"))
    consumer.subscribe([topics.ingest("police")])
    received = {}
    try:
        while len(received) < len(sent):
            batch = consumer.consume(500, timeout=10)
            assert batch, f"only {len(received)} of {len(sent)} events came back"
            for message in batch:
                assert message.error() is None
                name, record = codec.decode(
                    message.value(), message.topic(), message.partition(), message.offset()
                )
                event_id = record["envelope"]["event_id"]
                assert event_id not in received, "an event came back twice"
                assert name == codec.catalogue.name_for(record["envelope"]["event_type"])
                assert message.key() == record["envelope"]["subject"]["local_id"].encode()
                received[event_id] = record
    finally:
        consumer.close()
    assert received.keys() == sent.keys()
    for event_id, record in sent.items():
        assert received[event_id] == record
