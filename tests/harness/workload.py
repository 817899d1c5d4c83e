"""The inputs of an exactly-once run: N mixed events, a share of them defective on purpose.

The mix is chosen so that every decision depends only on events of the same subject, and every
subject's events travel on one partition of one ingest topic (the partition key is the subject's
local id, and each agency has its own subjects). Decisions then do not depend on how the router
interleaves topics and partitions, and the oracle can replay each partition in order into a
``MemoryState`` and get the router's decisions (RELIABILITY.md B.0).

- ``hmp_liverpool``: releases, receptions and licence conditions (to the police under kiom-1 and
  kiom-10 unconditionally; to the supervising probation body once a release or an assignment named
  it: per-subject state on the same partition);
- ``probation_crc``: supervision, breaches, recalls, risk assessments (police under kiom-20; the
  supervising body after its own ``supervision.responsibility_assigned``).

No consent, cohort, identity-link or correction events: those would join subjects across topics.

Each input record carries the header ``x-harness-input`` (its input id: the ``event_id`` of a
valid event, ``defect-<n>`` of a defective one) so the oracle can find where it landed.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from hub.publisher import Publisher, subject
from hub.serde.codec import AvroCodec
from hub.topics import Topics
from tests.factory import BASE, EventFactory

INPUT_HEADER = "x-harness-input"

MIX: dict[str, tuple[str, ...]] = {
    "hmp_liverpool": (
        "custody.release_scheduled",
        "custody.released",
        "custody.received",
        "licence.conditions_set",
        "licence.conditions_varied",
        "supervision.responsibility_assigned",
    ),
    "probation_crc": (
        "assessment.risk_of_harm",
        "supervision.breach_recorded",
        "supervision.recall",
        "supervision.responsibility_assigned",
        "licence.conditions_set",
    ),
}
SUPERVISORS = ("probation_crc", "probation_nps")

# defect kind -> the reason code the router must put in hub.error.reason
DEFECTS: dict[str, str] = {
    "bad_magic": "bad_magic",
    "truncated": "truncated",
    "trailing_bytes": "trailing_bytes",
    "source_mismatch": "source_mismatch",
}


@dataclass(frozen=True)
class Input:
    """One input record as the harness published it."""

    input_id: str
    agency: str  # whose ingest topic it goes to
    subject: str  # the source-local id, also the partition key
    event_type: str | None
    defect: str | None  # None, or a key of DEFECTS
    key: bytes
    value: bytes

    @property
    def expected_reason(self) -> str | None:
        return DEFECTS[self.defect] if self.defect else None


@dataclass
class Workload:
    inputs: list[Input]
    seed: int
    by_id: dict[str, Input] = field(init=False)

    def __post_init__(self) -> None:
        self.by_id = {i.input_id: i for i in self.inputs}

    @property
    def valid(self) -> list[Input]:
        return [i for i in self.inputs if i.defect is None]

    @property
    def defective(self) -> list[Input]:
        return [i for i in self.inputs if i.defect is not None]


def build_workload(
    codec: AvroCodec,
    n: int,
    *,
    defect_rate: float = 0.01,
    seed: int = 1,
    subjects_per_agency: int | None = None,
    namespace: str = "eo",
) -> Workload:
    """``n`` inputs, ``round(n * defect_rate)`` (at least one if the rate > 0) of them defective."""
    rng = random.Random(seed)
    factory = EventFactory(codec.catalogue, seed=seed)
    agencies = sorted(MIX)
    per_agency = subjects_per_agency or max(4, n // 8)
    publishers = {
        a: Publisher(agency=a, source_system=f"{a}-eo", jurisdiction="UK-ENG", codec=codec,
                     sink=None)  # type: ignore[arg-type]
        for a in agencies
    }  # fmt: skip
    defects = round(n * defect_rate) if defect_rate else 0
    if defect_rate and defects == 0:
        defects = 1
    defect_at = set(rng.sample(range(n), defects))
    kinds = sorted(DEFECTS)
    inputs: list[Input] = []
    for i in range(n):
        agency = rng.choice(agencies)
        local = f"{namespace}-{agency[:3]}-{rng.randrange(per_agency)}"
        if i in defect_at:
            inputs.append(
                _defect(
                    kinds[len(inputs) % len(kinds)],
                    i,
                    agency,
                    local,
                    rng,
                    publishers,
                    factory,
                    codec,
                )  # fmt: skip
            )
            continue
        event_type = rng.choice(MIX[agency])
        record = _event(publishers[agency], factory, rng, event_type, f"{namespace}-{i}", local)
        publishers[agency].validate(record)
        inputs.append(
            Input(
                input_id=record["envelope"]["event_id"],
                agency=agency,
                subject=local,
                event_type=event_type,
                defect=None,
                key=local.encode(),
                value=codec.encode(record),
            )
        )
    return Workload(inputs, seed)


def _event(
    publisher: Publisher, factory: EventFactory, rng: random.Random, event_type: str,
    source_key: str, local: str,
) -> dict[str, Any]:  # fmt: skip
    payload = factory.payload(event_type)
    if "supervising_body" in payload or event_type == "supervision.responsibility_assigned":
        payload["supervising_body"] = rng.choice(SUPERVISORS)
    if event_type == "supervision.responsibility_assigned":
        payload["effective_from"] = BASE.date()
        payload["supervision_end"] = None
    return publisher.build(
        event_type,
        source_key=source_key,
        subject=subject(local, "police_nominal_id", pnc_id=f"PNC-{local}"),
        occurred_at=BASE + dt.timedelta(seconds=rng.randrange(0, 10**7)),
        payload=payload,
    )


def _defect(
    kind: str, i: int, agency: str, local: str, rng: random.Random,
    publishers: dict[str, Publisher], factory: EventFactory, codec: AvroCodec,
) -> Input:  # fmt: skip
    input_id = f"defect-{i}"
    if kind == "bad_magic":
        value = b"\x07" + rng.randbytes(40)
    elif kind == "truncated":
        value = b"\x00\x00\x01"
    else:
        # a valid event of this agency (trailing bytes added), or of the other agency published
        # on this agency's topic (an agency may publish only as itself)
        source = agency if kind == "trailing_bytes" else next(a for a in MIX if a != agency)
        event_type = rng.choice(MIX[source])
        record = _event(publishers[source], factory, rng, event_type, f"defect-{i}", local)
        value = codec.encode(record) + (b"\x00\x02" if kind == "trailing_bytes" else b"")
    return Input(input_id, agency, local, None, kind, local.encode(), value)


# -- publishing ----------------------------------------------------------------------------------


def publish(bootstrap: str, topics: Topics, inputs: Iterable[Input]) -> int:
    """Produce the inputs to their agencies' ingest topics (idempotent, acks=all); return count."""
    failures: list[str] = []

    def on_delivery(err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            failures.append(err.str())

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 10,
            "compression.type": "lz4",
        }
    )
    count = 0
    for item in inputs:
        headers = [(INPUT_HEADER, item.input_id.encode())]
        if item.event_type:
            headers.append(("event_type", item.event_type.encode()))
        while True:
            try:
                producer.produce(
                    topics.ingest(item.agency), key=item.key, value=item.value, headers=headers,
                    on_delivery=on_delivery,
                )  # fmt: skip
                break
            except BufferError:
                producer.poll(0.2)
        producer.poll(0)
        count += 1
    remaining = producer.flush(60)
    if remaining or failures:
        raise AssertionError(f"publish failed: {remaining} unsent, errors {failures[:3]}")
    return count


# -- what landed where ---------------------------------------------------------------------------

Position = tuple[str, int, int]  # topic, partition, offset


def ingest_topics(topics: Topics) -> list[str]:
    return [topics.ingest(a) for a in sorted(MIX)]


def read_ingest_log(bootstrap: str, topic_names: Sequence[str]) -> dict[tuple[str, int], list[
        tuple[int, str]]]:  # fmt: skip
    """Per ingest partition, in offset order: (offset, input id) of every record."""
    log: dict[tuple[str, int], list[tuple[int, str]]] = {}
    for rec in read_topics(bootstrap, topic_names, "read_uncommitted"):
        headers = dict(rec.headers)
        input_id = headers.get(INPUT_HEADER, b"").decode()
        log.setdefault((rec.topic, rec.partition), []).append((rec.offset, input_id))
    for entries in log.values():
        entries.sort()
    return log


@dataclass(frozen=True)
class Rec:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    @property
    def attempt(self) -> str | None:
        for name, value in self.headers:
            if name == "x-hub-attempt":
                return value.decode()
        return None

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode()
        return None


def retrying(call, seconds: float = 60.0):  # type: ignore[no-untyped-def]
    """``call()``, asked again while the broker is moving a coordinator, electing a leader or
    coming back from a stop (the faults these tests inject)."""
    import time

    deadline = time.monotonic() + seconds
    while True:
        try:
            return call()
        except KafkaException as exc:
            if time.monotonic() > deadline or exc.args[0].fatal():
                raise
            time.sleep(0.25)


def partitions_of(bootstrap: str, topic_names: Sequence[str]) -> list[TopicPartition]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    metadata = admin.list_topics(timeout=15).topics
    out = []
    for name in topic_names:
        if name not in metadata:
            continue
        out += [TopicPartition(name, p) for p in sorted(metadata[name].partitions)]
    return out


def read_topics(
    bootstrap: str, topic_names: Sequence[str], isolation: str, timeout_s: float = 90.0
) -> list[Rec]:
    """Every record of ``topic_names`` from offset 0 to the end, with ``isolation``.

    The end is the high watermark of each partition when the read starts; with read_committed,
    the read is complete once every partition reported end-of-partition at or past it (no
    transaction may be open when this is called).
    """
    import time

    parts = partitions_of(bootstrap, topic_names)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "hub-eo-checker",
            "enable.auto.commit": False,
            "isolation.level": isolation,
            "enable.partition.eof": True,
            "fetch.max.bytes": 16 * 1024 * 1024,
        }
    )
    try:
        ends = {}
        for tp in parts:
            ends[(tp.topic, tp.partition)] = retrying(
                lambda tp=tp: consumer.get_watermark_offsets(tp, timeout=15)
            )[1]
        pending = {k for k, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for (t, p) in pending])
        out: list[Rec] = []
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{isolation} read incomplete: {sorted(pending)[:5]}")
            for message in consumer.consume(5000, 0.5):
                error = message.error()
                where = (message.topic(), message.partition())
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        if message.offset() >= ends.get(where, 0):
                            pending.discard(where)
                        continue
                    raise AssertionError(f"reading {where}: {error.str()}")
                out.append(
                    Rec(
                        message.topic(),
                        message.partition(),
                        message.offset(),
                        message.key(),
                        message.value(),
                        tuple(message.headers() or ()),
                    )  # fmt: skip
                )
                if message.offset() + 1 >= ends.get(where, 0):
                    pending.discard(where)
            if pending:
                # read_committed never returns the control record at the end of a partition:
                # the position moves past it, so compare positions with the ends too
                for tp in consumer.position([TopicPartition(t, p) for (t, p) in pending]):
                    if tp.offset >= ends[(tp.topic, tp.partition)]:
                        pending.discard((tp.topic, tp.partition))
        return out
    finally:
        consumer.close()
