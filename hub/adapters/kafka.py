"""Kafka clients for the hub: configuration with the guarantees of RELIABILITY.md B.7, topic
creation, and a producer that raises delivery failures instead of swallowing them."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import structlog
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from hub.domain.errors import InfraError

log = structlog.get_logger(__name__)

Headers = Sequence[tuple[str, bytes]]

# The security keys (SASL_SSL, credentials, CA) every client this process builds carries; set once
# at start-up from the settings (hub.bootstrap), resolved when the first client is built.
_security: Callable[[], Mapping[str, Any]] = dict


def use_security(source: Callable[[], Mapping[str, Any]]) -> None:
    """Make every producer, consumer and admin configuration built here authenticate as
    ``source()`` says (``hub.adapters.kafka_security.client_security``)."""
    global _security
    _security = source


def security_config() -> dict[str, Any]:
    """The security keys of this process's clients (empty in plaintext mode)."""
    return dict(_security())


def admin_config(bootstrap: str, **extra: Any) -> dict[str, Any]:
    """An admin client's configuration, with this process's security keys."""
    return {"bootstrap.servers": bootstrap, **security_config(), **extra}


def producer_config(bootstrap: str, **extra: Any) -> dict[str, Any]:
    """An idempotent, acks=all producer; ``extra`` adds or overrides librdkafka keys."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        "message.max.bytes": 1_048_576,
    }
    config.update(security_config())
    config.update(extra)
    return config


def consumer_config(bootstrap: str, group_id: str, **extra: Any) -> dict[str, Any]:
    """A consumer that commits nothing by itself and never sees aborted transactions."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "group.id": group_id,
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
    }
    config.update(security_config())
    config.update(extra)
    return config


def ensure_topics(
    bootstrap: str,
    topics: Mapping[str, int] | Iterable[str],
    *,
    default_partitions: int = 3,
    config: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> list[str]:
    """Create the topics that do not exist yet (name → partitions); return the ones created."""
    wanted = (
        dict(topics) if isinstance(topics, Mapping) else dict.fromkeys(topics, default_partitions)
    )
    admin = AdminClient(admin_config(bootstrap))
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        raise InfraError(f"cannot list topics on {bootstrap}: {exc}") from exc
    missing = [
        NewTopic(name, num_partitions=parts, replication_factor=-1, config=dict(config or {}))
        for name, parts in wanted.items()
        if name not in existing
    ]
    created: list[str] = []
    if missing:
        for name, future in admin.create_topics(missing, operation_timeout=timeout).items():
            try:
                future.result(timeout)
                created.append(name)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise InfraError(f"cannot create topic {name}: {exc}") from exc
        _wait_for_leaders(admin, [t.topic for t in missing], timeout)
        log.info("topics_created", topics=created)
    return created


def _wait_for_leaders(admin: AdminClient, names: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        metadata = admin.list_topics(timeout=timeout).topics
        if all(
            name in metadata
            and metadata[name].error is None
            and all(p.leader >= 0 for p in metadata[name].partitions.values())
            for name in names
        ):
            return
        time.sleep(0.1)
    raise InfraError(f"topics {names} have no leader after {timeout:.0f}s")


class DeliveryFailed(InfraError):
    """One or more records were not acknowledged by the broker."""


class SafeProducer:
    """A producer whose delivery failures are collected and raised on ``flush``, never lost."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        try:
            self._producer = Producer(dict(config))
        except KafkaException as exc:
            raise InfraError(f"invalid producer configuration: {exc}") from exc
        self._failures: list[str] = []
        self.delivered = 0

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._failures.append(f"{msg.topic()}: {err.str()}")
        else:
            self.delivered += 1

    def send(self, topic: str, key: bytes | None, value: bytes, headers: Headers = ()) -> None:
        while True:
            try:
                self._producer.produce(
                    topic,
                    value=value,
                    key=key,
                    headers=list(headers),
                    on_delivery=self._on_delivery,
                )
                break
            except BufferError:  # the local queue is full: let deliveries drain, then retry
                self._producer.poll(0.5)
            except KafkaException as exc:
                raise DeliveryFailed(f"cannot produce to {topic}: {exc}") from exc
        self._producer.poll(0)

    def flush(self, timeout: float = 60.0) -> None:
        """Wait for every outstanding record; raise ``DeliveryFailed`` if any was not delivered."""
        remaining = self._producer.flush(timeout)
        if remaining:
            self._failures.append(f"{remaining} records still unacknowledged after {timeout:.0f}s")
        if self._failures:
            failures, self._failures = self._failures, []
            raise DeliveryFailed(f"{len(failures)} record(s) not delivered; first: {failures[0]}")
