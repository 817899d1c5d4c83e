"""Consume → produce → commit offsets in one Kafka transaction (KIP-98, KIP-447), with the fault
handling RELIABILITY.md A1 asks for:

- one transactional producer per router slot with a stable ``transactional.id``;
- offsets sent with the consumer group metadata; ``enable.auto.commit=false``; ``acks=all``;
- never ``abort_transaction()`` after a commit timed out or ended in doubt: retry the commit, then
  close the producer and build a new one with the same ``transactional.id`` (librdkafka has no
  KIP-890 client fix yet), and seek the consumer back to the committed offsets;
- after a real abort, seek the consumer back to the committed offsets (KAFKA-17582);
- a fenced producer (a newer instance with the same id) is fatal: the old instance must exit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from hub.domain.errors import Fenced, InfraError, TransactionAborted
from hub.ports import InRecord, OutRecord

log = structlog.get_logger(__name__)


@dataclass
class TxnStats:
    committed: int = 0
    aborted: int = 0
    commit_retries: int = 0
    producer_recreated: int = 0


class TransactionalBus:
    """A consumer and a transactional producer that commit together."""

    def __init__(
        self,
        *,
        bootstrap: str,
        group_id: str,
        transactional_id: str,
        subscribe: Sequence[str],
        consumer_extra: Mapping[str, Any] | None = None,
        producer_extra: Mapping[str, Any] | None = None,
        transaction_timeout_ms: int = 60_000,
        commit_attempts: int = 3,
        on_assign: Callable[[list[tuple[str, int]]], None] | None = None,
    ) -> None:
        self.transactional_id = transactional_id
        self.commit_attempts = commit_attempts
        self.stats = TxnStats()
        self._on_assign_cb = on_assign
        self._producer_config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "transactional.id": transactional_id,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            "transaction.timeout.ms": transaction_timeout_ms,
            **dict(producer_extra or {}),
        }
        consumer_config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 10_000,
            "heartbeat.interval.ms": 1_000,
            "topic.metadata.refresh.interval.ms": 2_000,
            "fetch.wait.max.ms": 100,
            **dict(consumer_extra or {}),
        }
        try:
            self.consumer = Consumer(consumer_config)
        except KafkaException as exc:
            raise InfraError(f"invalid consumer configuration: {exc}") from exc
        self.producer = self._new_producer()
        self.consumer.subscribe(list(subscribe), on_assign=self._assigned)
        self._in_transaction = False

    @property
    def in_transaction(self) -> bool:
        return self._in_transaction

    # -- producer lifecycle --------------------------------------------------------------------
    def _new_producer(self) -> Producer:
        try:
            producer = Producer(self._producer_config)
            producer.init_transactions(30)
        except KafkaException as exc:
            raise InfraError(f"{self.transactional_id}: init_transactions failed: {exc}") from exc
        return producer

    def _recreate_producer(self) -> None:
        """Close the producer and build a new one with the same transactional.id: its
        init_transactions completes or aborts whatever the old one left in doubt. A coordinator
        that cannot finish the old transaction (its markers refused) answers
        CONCURRENT_TRANSACTIONS until init_transactions times out: InfraError, the router exits."""
        log.warning("producer_recreated", transactional_id=self.transactional_id)
        self.stats.producer_recreated += 1
        try:
            self.producer.flush(0)
        except KafkaException:
            pass
        del self.producer
        self.producer = self._new_producer()

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info(
            "partitions_assigned", partitions=[f"{p.topic}[{p.partition}]" for p in partitions]
        )
        if self._on_assign_cb:
            self._on_assign_cb([(p.topic, p.partition) for p in partitions])

    # -- the loop's operations -------------------------------------------------------------
    def poll(self, max_records: int, timeout: float) -> list[InRecord]:
        messages = self.consumer.consume(max_records, timeout)
        records: list[InRecord] = []
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() in (KafkaError._PARTITION_EOF,):
                    continue
                if error.fatal():
                    raise InfraError(f"consumer failed: {error.str()}")
                log.warning("consumer_error", error=error.str())
                continue
            records.append(_in_record(message))
        return records

    def begin(self) -> None:
        try:
            self.producer.begin_transaction()
        except KafkaException as exc:
            self._raise_fatal_or_fenced(exc, "begin_transaction")
            raise InfraError(f"begin_transaction failed: {exc}") from exc
        self._in_transaction = True

    def send(self, record: OutRecord) -> None:
        while True:
            try:
                self.producer.produce(
                    record.topic, value=record.value, key=record.key, headers=list(record.headers)
                )
                return
            except BufferError:
                self.producer.poll(0.1)
            except KafkaException as exc:
                self._raise_fatal_or_fenced(exc, "produce")
                raise TransactionAborted(f"produce to {record.topic} failed: {exc}") from exc

    def commit(self, records: Sequence[InRecord]) -> None:
        """Commit the transaction with the offsets after ``records`` (the ones processed).

        On an abortable error: abort, rewind, raise ``TransactionAborted``. On a commit that timed
        out or is in doubt: retry it; if it still fails, recreate the producer (never abort),
        rewind, and raise ``TransactionAborted`` so the caller reprocesses from the committed
        offsets (which include this batch if the commit in fact succeeded).
        """
        try:
            offsets = next_offsets(records)
            if offsets:
                self.producer.send_offsets_to_transaction(
                    offsets, self.consumer.consumer_group_metadata(), 30
                )
        except KafkaException as exc:
            self._raise_fatal_or_fenced(exc, "send_offsets_to_transaction")
            self.abort(f"send_offsets_to_transaction failed: {exc}")
        in_doubt = False
        for attempt in range(1, self.commit_attempts + 1):
            try:
                self.producer.commit_transaction(30)
                self._in_transaction = False
                self.stats.committed += 1
                return
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                self._raise_fatal_or_fenced(exc, "commit_transaction")
                if error.txn_requires_abort():
                    if not in_doubt:
                        self.abort(f"commit_transaction requires abort: {error.str()}")
                    # An earlier attempt timed out: its EndTxn may still be applied, so an abort
                    # now could corrupt the outcome (librdkafka#4016, #5423). Recreate instead.
                    log.warning("commit_abortable_after_timeout", error=error.str())
                    break
                in_doubt = True
                log.warning(
                    "commit_retried", attempt=attempt, error=error.str(),
                    retriable=error.retriable(),
                )  # fmt: skip
                self.stats.commit_retries += 1
                time.sleep(min(0.2 * attempt, 1.0))
        # In doubt: the KIP-890 gap means abort_transaction() here could corrupt the outcome.
        self._in_transaction = False
        self._recreate_producer()
        self.rewind()
        raise TransactionAborted("commit in doubt; producer recreated and consumer rewound")

    def abort(self, why: str) -> None:
        """Abort the open transaction, rewind the consumer, raise ``TransactionAborted``."""
        log.warning("transaction_aborted", reason=why)
        try:
            # Let the records already sent reach their partitions first: an EndTxn(abort) that
            # overtakes them finds the transaction still empty at the coordinator, which answers
            # INVALID_TXN_STATE, fatal to librdkafka (seen in EO-7 once the router aborted within
            # milliseconds of its first sends). They stay invisible: the transaction aborts.
            self.producer.flush(30)
            self.producer.abort_transaction(30)
        except KafkaException as exc:
            self._raise_fatal_or_fenced(exc, "abort_transaction")
            self._recreate_producer()
        self._in_transaction = False
        self.stats.aborted += 1
        self.rewind()
        raise TransactionAborted(why)

    def rewind(self) -> None:
        """Seek every assigned partition back to its committed offset (KAFKA-17582)."""
        assignment = self.consumer.assignment()
        if not assignment:
            return
        for attempt in range(1, 6):
            try:
                committed = self.consumer.committed(assignment, timeout=30)
                break
            except KafkaException as exc:
                # A broker coming back (its coordinator loading, pending transactional offsets
                # not yet stable) is no reason to die; continuing without the rewind would be.
                error: KafkaError = exc.args[0]
                retry = error.retriable() or error.code() in _RETRY_REWIND
                if error.fatal() or attempt == 5 or not retry:
                    raise InfraError(f"cannot rewind to the committed offsets: {exc}") from exc
                log.warning("rewind_retried", attempt=attempt, error=error.str())
        for tp in committed:
            offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            self.consumer.seek(TopicPartition(tp.topic, tp.partition, offset))
        log.info("consumer_rewound", partitions=len(assignment))

    def pause(self, topic: str, partition: int) -> None:
        self.consumer.pause([TopicPartition(topic, partition)])

    def _raise_fatal_or_fenced(self, exc: KafkaException, operation: str) -> None:
        error: KafkaError = exc.args[0]
        if error.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED,
                            KafkaError.INVALID_PRODUCER_EPOCH):  # fmt: skip
            raise Fenced(f"{self.transactional_id} was fenced during {operation}: {error.str()}")
        # produce() on a producer already in the fatal state (e.g. fenced by a newer instance
        # while this one was stopped) raises a plain _FATAL error whose fatal() is False
        if error.fatal() or error.code() == KafkaError._FATAL:
            raise Fenced(f"{self.transactional_id}: fatal error during {operation}: {error.str()}")

    def close(self) -> None:
        # No producer when a recreation failed (its InfraError is on its way up: keep it, do not
        # mask it with an AttributeError here).
        producer: Producer | None = getattr(self, "producer", None)
        if producer is not None and self._in_transaction:
            try:
                producer.abort_transaction(10)
            except KafkaException:
                pass
        self.consumer.close()
        if producer is None:
            return
        try:
            producer.flush(10)
        except KafkaException as exc:  # a fenced or fatal producer: keep the original error
            log.warning("producer_flush_failed", error=str(exc))


_RETRY_REWIND = frozenset(
    {
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
        KafkaError.UNSTABLE_OFFSET_COMMIT,
    }
)


def _in_record(message: Message) -> InRecord:
    timestamp = message.timestamp()
    return InRecord(
        topic=message.topic(),
        partition=message.partition(),
        offset=message.offset(),
        key=message.key(),
        value=message.value(),
        headers=tuple(message.headers() or ()),
        timestamp_ms=timestamp[1] if timestamp else 0,
    )


def next_offsets(records: Sequence[InRecord]) -> list[TopicPartition]:
    """For each partition in ``records``, the offset after the last record (what to commit)."""
    last: dict[tuple[str, int], int] = {}
    for record in records:
        key = (record.topic, record.partition)
        last[key] = max(last.get(key, -1), record.offset)
    return [TopicPartition(t, p, o + 1) for (t, p), o in sorted(last.items())]
