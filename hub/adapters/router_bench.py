"""``hub bench router``: the router's throughput and end-to-end latency through the real broker,
with 3 and with 5 audiences, beside a no-policy baseline measured in the same run, on the same
broker (PERFORMANCE.md §3, goals G1 and G2; a benchmark, never a pass/fail test).

The two loops, each reading ``ingest.*`` with a ``TransactionalBus`` configured as the router's
(batches of up to 500 records, 0.2 s poll, ``linger.ms`` 5, lz4, acks=all, one transaction per
batch with the input offsets):

- **router**: the hub's router, built by ``hub.bootstrap.build_router`` (passed in: adapters do
  not import the layers above them), with ``router.audiences`` cut to the k audiences under test:
  decode, validate, dedupe, policy state, k decisions, field transforms, k deliveries and 2k+1
  audit entries;
- **baseline**: decode, then per audience re-encode the event (the codec validates, as the router's
  does) and produce it to ``deliver.<audience>``, plus the same number of audit-sized records
  (2k+1, a typical ``delivered`` entry) to ``hub.audit``: the same records out, no policy.

Every event is permitted for every audience under test (``custody.release_scheduled`` and
``custody.released`` from HMP Liverpool about people in the IOM cohort, supervised by the CRC,
referred to MALS and with a mentor: state the router builds from set-up events routed before the
timed phase). The audiences: k=3 ``police.iom``, ``kmbc``, ``mals``; k=5 adds ``mals.mentor`` and
``probation_crc``.

Each run has its own topic prefix and state directory, so nothing is shared between runs or with
earlier invocations. Per run:

1. throughput: ``n`` events are produced to ``ingest.hmp_liverpool`` before the loop starts; the
   loop's first transaction is warm-up (schemas fetched, caches filled) and not timed; the rate is
   the remaining events over the time from the end of that transaction to the commit of the
   last. Events per CPU-second of the loop's thread are reported too (steadier on a shared box);
2. exactly once: a ``read_committed`` consumer reads every ``deliver.<audience>`` topic and checks
   that each event reached each audience exactly once (a run that lost or duplicated one is void);
3. latency: with the loop still running, events are produced open-loop at a fixed rate from a
   schedule; a ``read_committed`` consumer of the deliver topics records each delivery's arrival.
   Latency is measured from the *scheduled* send time (no coordinated omission) to arrival, for
   every delivery of an event scheduled after the warm-up.

Runs are interleaved (baseline, router) per k, ``repeats`` times; figures are medians with
min..max, and the ratio router/baseline is computed per pair.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import platform
import shutil
import statistics
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, Producer, TopicPartition

from hub.adapters.kafka import consumer_config, ensure_topics, producer_config
from hub.adapters.kafka_txn import TransactionalBus
from hub.audit.entry import AuditEntry, make_entry_id, payload_hash
from hub.ports import InRecord, OutRecord
from hub.serde.catalogue import Catalogue
from hub.serde.codec import AvroCodec
from hub.serde.events import check_event
from hub.settings import Settings
from hub.topics import Topics

log = structlog.get_logger(__name__)

AUDIENCES = {
    3: ("police.iom", "kmbc", "mals"),
    5: ("police.iom", "kmbc", "mals", "mals.mentor", "probation_crc"),
}
SUBJECTS = 200
BATCH_SIZE = 500
POLL_TIMEOUT_S = 0.2
NAMESPACE = uuid.UUID("5d0c1f0e-3b7a-4c2e-8f41-6a9b2d7e0c13")
SOURCE = ("hmp_liverpool", "nomis")
Echo = Callable[[str], None]


# -- the events ------------------------------------------------------------------------------------


def _address(i: int) -> dict[str, Any]:
    return {"line1": f"{1 + i % 97} Ashworth Road", "line2": None, "town": "Kirkby",
            "postcode": f"L32 {1 + i % 9}XY", "area": "Knowsley", "country": "GB", "kind": "home"}


def _om(i: int) -> dict[str, Any]:
    return {"organisation": "probation_crc", "role": "offender manager",
            "name": f"Officer {i % 40}", "phone": f"0151 555 {i % 10000:04d}",
            "email": f"om{i % 40}@crc.example"}


class Events:
    """Valid hub events, built and checked against the catalogue (no Publisher: adapters sit
    below it), encoded once with the run's codec and replayed into every run."""

    def __init__(self, codec: AvroCodec) -> None:
        self.codec = codec
        self.catalogue: Catalogue = codec.catalogue

    def build(self, event_type: str, agency: str, system: str, key: str, scheme: str,
              local_id: str, person: int, at: dt.datetime,
              payload: Mapping[str, Any]) -> dict[str, Any]:  # fmt: skip
        name = self.catalogue.name_for(event_type)
        fields = [f["name"] for f in self.catalogue.schema(name)["fields"]]
        record: dict[str, Any] = {"envelope": {
            "event_id": str(uuid.uuid5(NAMESPACE, key)), "event_type": event_type,
            "schema_version": 1, "occurred_at": at, "recorded_at": at, "effective_date": None,
            "source_agency": agency, "source_system": system, "jurisdiction": "UK-ENG",
            "subject": {"local_id": local_id, "local_id_scheme": scheme,
                        "identifiers": [{"scheme": "pnc_id",
                                         "value": f"13/{100000 + person:07d}B"}],
                        "hub_subject_id": None},
            "supersedes_event_id": None, "correction_reason": None, "sensitivity": "standard",
            "compartment": None, "consent_ref": None, "responsible_org": None}}  # fmt: skip
        for name_ in fields:
            if name_ not in ("envelope", "disclosure"):
                record[name_] = payload.get(name_)
        record["disclosure"] = None
        check_event(self.catalogue, name, record)
        return record

    def encoded(self, record: Mapping[str, Any]) -> tuple[str, bytes, bytes]:
        envelope = record["envelope"]
        return (envelope["source_agency"], envelope["subject"]["local_id"].encode(),
                self.codec.encode(record))  # fmt: skip

    def setup(self) -> list[tuple[str, bytes, bytes]]:
        """Who the bench's people are: IOM cohort, CRC supervision, a MALS referral, a mentor."""
        out = []
        day = dt.datetime(2015, 1, 5, 9, tzinfo=dt.UTC)
        for p in range(SUBJECTS):
            out.append(self.encoded(self.build(
                "iom.cohort_entered", "police", "corvus", f"setup:{p}:cohort", "police_nominal_id",
                f"MP-B{p:05d}", p, day, {
                    "cohort": "knowsley_iom", "borough": "Knowsley",
                    "selection_method": "matrix_score", "entry_date": day.date()})))
            out.append(self.encoded(self.build(
                "supervision.responsibility_assigned", "probation_crc", "ndelius",
                f"setup:{p}:supervision", "probation_case_ref", f"CRC-B{p:05d}", p, day, {
                    "supervising_body": "probation_crc", "offender_manager": _om(p),
                    "basis": "licence", "risk_level": "medium", "effective_from": day.date()})))
            out.append(self.encoded(self.build(
                "referral.created", "probation_crc", "ndelius", f"setup:{p}:referral",
                "probation_case_ref", f"CRC-B{p:05d}", p, day, {
                    "referral_id": f"REF-B{p}", "programme": "mentoring",
                    "referred_on": day.date(), "referrer_org": "probation_crc",
                    "receiving_org": "mals", "pathways": ["accommodation"],
                    "offender_manager": _om(p)})))
            out.append(self.encoded(self.build(
                "mentor.assigned", "mals", "mals-db", f"setup:{p}:mentor", "mals_client_id",
                f"MALS-B{p:05d}", p, day, {
                    "organisation": "mals", "mentor_id": f"MENTOR-{p % 25}",
                    "assigned_on": day.date(), "referral_id": f"REF-B{p}"})))
        return out  # fmt: skip

    def custody(self, count: int, tag: str) -> list[tuple[str, bytes, bytes]]:
        """``count`` release events (scheduled and released, alternately), ~0.8 KB each."""
        out = []
        for i in range(count):
            p = i % SUBJECTS
            at = dt.datetime(2015, 3, 2, 9, tzinfo=dt.UTC) + dt.timedelta(seconds=i)
            address, om = _address(p), _om(p)
            if i % 2:
                event_type = "custody.released"
                payload = {"released_at": at, "release_type": "on_licence",
                           "establishment": "HMP Liverpool", "at_liberty": True,
                           "destination_address": address, "destination_area": "Knowsley",
                           "supervising_body": "probation_crc", "offender_manager": om,
                           "supervision_end_date": (at + dt.timedelta(days=365)).date()}
            else:
                event_type = "custody.release_scheduled"
                payload = {"release_date": at.date(), "release_type": "on_licence",
                           "establishment": "HMP Liverpool", "release_address": address,
                           "release_area": "Knowsley", "supervising_body": "probation_crc",
                           "offender_manager": om,
                           "licence_end_date": (at + dt.timedelta(days=180)).date()}
            out.append(self.encoded(self.build(
                event_type, *SOURCE, f"{tag}:{i}", "prison_number", f"A{p:04d}BN", p, at,
                payload)))  # fmt: skip
        return out


def event_id_of(value: bytes) -> str:
    """The event id of a framed hub event without decoding it: the first field of the first
    field (envelope.event_id), a string right after the 5-byte header."""
    shift = length = 0
    pos = 5
    while True:
        byte = value[pos]
        length |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            break
        shift += 7
    length = (length >> 1) ^ -(length & 1)  # zigzag
    return value[pos : pos + length].decode()


def audit_sized(codec: AvroCodec) -> bytes:
    """A typical ``delivered`` audit entry, the size of the router's."""
    entry = AuditEntry(
        entry_id=make_entry_id("delivered", str(uuid.uuid4()), "kmbc"), kind="delivered",
        at=dt.datetime.now(dt.UTC), component="router", outcome="ok", actor="hub-router-0",
        subject_ref="ab" * 32, event_id=str(uuid.uuid4()), event_type="custody.released",
        source_agency="hmp_liverpool", audience="kmbc", agreement_id="kiom-isp",
        agreement_version="2014.2", clause_ids=("kiom-6",),
        fields={"destination_address": "generalise", "offender_manager": "generalise"},
        purpose="Integrated offender management and public protection in Knowsley and Merseyside",
        payload_hash=payload_hash(b"x" * 700),
        details={"topic": "deliver.kmbc", "legal_basis": "Crime and Disorder Act 1998 s115"},
    )  # fmt: skip
    return entry.to_json_bytes()


# -- the loops -------------------------------------------------------------------------------------


class ClockedBus:
    """The loop's bus, timing the throughput phase from inside the loop's thread."""

    def __init__(self, bus: TransactionalBus, target: int) -> None:
        self.bus = bus
        self.target = target
        self.committed = 0
        self.warm: tuple[float, float, int] | None = None  # (wall, thread cpu, committed)
        self.done: tuple[float, float] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.bus, name)

    def commit(self, records: Sequence[InRecord]) -> None:
        self.bus.commit(records)
        self.committed += len(records)
        now = (time.perf_counter(), time.thread_time())
        if self.warm is None and self.committed:
            self.warm = (*now, self.committed)
        elif self.done is None and self.committed >= self.target:
            self.done = now


def new_bus(settings: Settings, name: str) -> TransactionalBus:
    """A bus configured as ``bootstrap.build_router`` configures the router's."""
    prefix = settings.topic_prefix
    pattern = "^" + prefix.replace(".", r"\.") + r"ingest\.[a-z][a-z0-9_]*$"
    return TransactionalBus(
        bootstrap=settings.bootstrap_servers, group_id=f"{prefix}hub-router",
        transactional_id=f"{prefix}{name}", subscribe=[pattern],
        transaction_timeout_ms=settings.router.transaction_timeout_ms,
        consumer_extra={"session.timeout.ms": settings.router.session_timeout_ms},
    )  # fmt: skip


class Loop:
    """A routing loop (the router, or the baseline) in a thread."""

    def __init__(self, run: Callable[[Callable[[], bool]], None], bus: Any) -> None:
        self.bus = bus
        self._run = run
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="bench-loop", daemon=True)

    def _main(self) -> None:
        try:
            self._run(self._stop.is_set)
        except BaseException as exc:  # noqa: BLE001 - raised by check()
            self.error = exc
        finally:
            self.bus.bus.close() if isinstance(self.bus, ClockedBus) else self.bus.close()

    def start(self) -> Loop:
        self._thread.start()
        return self

    def check(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"the loop failed: {self.error!r}") from self.error

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)
        self.check()


def baseline_loop(bus: Any, codec: AvroCodec, topics: Topics, audiences: Sequence[str],
                  audit_value: bytes) -> Callable[[Callable[[], bool]], None]:  # fmt: skip
    """Decode, re-encode per audience, produce the deliveries and 2k+1 audit-sized records."""
    deliver = [topics.deliver(a) for a in audiences]
    audit = topics.audit

    def run(should_stop: Callable[[], bool]) -> None:
        while not should_stop():
            records = bus.poll(BATCH_SIZE, POLL_TIMEOUT_S)
            if not records:
                continue
            bus.begin()
            for r in records:
                _, event = codec.decode(r.value, r.topic, r.partition, r.offset)
                bus.send(OutRecord(audit, r.key, audit_value))
                for topic in deliver:
                    bus.send(OutRecord(topic, r.key, codec.encode(event)))
                    bus.send(OutRecord(audit, r.key, audit_value))
                    bus.send(OutRecord(audit, r.key, audit_value))
            bus.commit(records)

    return run


# -- Kafka helpers ---------------------------------------------------------------------------------


def produce(bootstrap: str, topics: Topics, values: Sequence[tuple[str, bytes, bytes]]) -> None:
    producer = Producer(producer_config(bootstrap))
    for agency, key, value in values:
        while True:
            try:
                producer.produce(topics.ingest(agency), value=value, key=key)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    if producer.flush(60):
        raise RuntimeError("the bench's input was not fully acknowledged")


def committed_all(bootstrap: str, group: str, topic: str, timeout: float,
                  loop: Loop | None = None) -> None:  # fmt: skip
    """Wait until ``group`` has committed ``topic`` to its end (the input is not transactional,
    so its end is its high watermark)."""
    reader = Consumer(consumer_config(bootstrap, group))
    try:
        parts = sorted(reader.list_topics(topic, timeout=10).topics[topic].partitions)
        tps = [TopicPartition(topic, p) for p in parts]
        ends = {p: reader.get_watermark_offsets(TopicPartition(topic, p), 10, False)[1]
                for p in parts}  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if loop is not None:
                loop.check()
            if all(tp.offset >= ends[tp.partition] for tp in reader.committed(tps, timeout=10)):
                return
            time.sleep(0.2)
        raise TimeoutError(f"{group} did not commit {topic} within {timeout:.0f}s")
    finally:
        reader.close()


def read_deliveries(bootstrap: str, topics: Sequence[str], timeout: float = 120.0) -> Counter[
    tuple[str, str]
]:
    """(topic, event id) -> how many times, over every committed record of ``topics``."""
    reader = Consumer(consumer_config(bootstrap, "hub-bench-check"))
    seen: Counter[tuple[str, str]] = Counter()
    try:
        metadata = reader.list_topics(timeout=10).topics
        ends = {}
        for topic in topics:
            for p in metadata[topic].partitions:
                end = reader.get_watermark_offsets(TopicPartition(topic, p), 10, False)[1]
                if end > 0:
                    ends[(topic, p)] = end
        reader.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in ends])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            positions = reader.position([TopicPartition(t, p) for t, p in ends])
            if all(tp.offset >= ends[(tp.topic, tp.partition)] for tp in positions):
                return seen
            for message in reader.consume(5000, 0.5):
                if message.error() is None:
                    seen[(message.topic(), event_id_of(message.value()))] += 1
        raise TimeoutError(f"could not read the deliveries to their end in {timeout:.0f}s")
    finally:
        reader.close()


def measure_latency(bootstrap: str, topics: Topics, audiences: Sequence[str],
                    values: Sequence[tuple[str, bytes, bytes]], rate: float, warmup_s: float,
                    loop: Loop, drain_s: float = 30.0) -> tuple[list[float], int]:  # fmt: skip
    """Produce ``values`` open-loop at ``rate`` per second; return the latency (seconds, from the
    scheduled send to arrival at a read_committed consumer) of every delivery of an event
    scheduled after ``warmup_s``, and how many such deliveries never arrived."""
    deliver = [topics.deliver(a) for a in audiences]
    reader = Consumer(consumer_config(bootstrap, "hub-bench-latency"))
    metadata = reader.list_topics(timeout=10).topics
    reader.assign([TopicPartition(t, p, OFFSET_END) for t in deliver
                   for p in metadata[t].partitions])  # fmt: skip
    for t in deliver:  # make the assignment take effect before anything is sent
        for p in metadata[t].partitions:
            reader.position([TopicPartition(t, p)])
    reader.consume(100, 1.0)
    scheduled: dict[str, float] = {}
    timed: set[str] = set()
    latencies: list[float] = []
    arrived = 0
    state = {"sent": 0}
    start = time.time() + 0.5

    def send() -> None:
        producer = Producer(producer_config(bootstrap))
        for i, (agency, key, value) in enumerate(values):
            at = start + i / rate
            scheduled[event_id_of(value)] = at
            if i / rate >= warmup_s:
                timed.add(event_id_of(value))
            pause = at - time.time()
            if pause > 0:
                time.sleep(pause)
            producer.produce(topics.ingest(agency), value=value, key=key)
            producer.poll(0)
            state["sent"] += 1
        producer.flush(30)

    sender = threading.Thread(target=send, name="bench-latency-sender", daemon=True)
    sender.start()
    expected = len(values) * len(deliver)
    last_send = start + len(values) / rate
    try:
        while arrived < expected and time.time() < last_send + drain_s:
            loop.check()
            message = reader.poll(0.05)  # one at a time: the arrival time is when it is handed over
            if message is None or message.error() is not None:
                continue
            now = time.time()
            arrived += 1
            event_id = event_id_of(message.value())
            if event_id in timed:
                latencies.append(now - scheduled[event_id])
    finally:
        sender.join(30)
        reader.close()
    missing = len(timed) * len(deliver) - len(latencies)
    return latencies, missing


def delete_topics(bootstrap: str, prefixes: Sequence[str]) -> None:
    """Best effort: remove the bench's topics (they hold nothing anyone needs)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        names = [t for t in admin.list_topics(timeout=10).topics
                 if any(t.startswith(p) for p in prefixes)]  # fmt: skip
        if names:
            for future in admin.delete_topics(names, operation_timeout=30).values():
                try:
                    future.result(30)
                except Exception as exc:  # noqa: BLE001 - cleanup only
                    log.warning("bench_topic_not_deleted", error=str(exc))
    except Exception as exc:  # noqa: BLE001 - cleanup only
        log.warning("bench_cleanup_failed", error=str(exc))


# -- one run ---------------------------------------------------------------------------------------


@dataclass
class RunResult:
    variant: str
    k: int
    repeat: int
    events: int
    seconds: float
    per_s: float
    per_cpu_s: float
    exactly_once: bool
    problems: str = ""
    latencies: list[float] = field(default_factory=list)
    missing: int = 0


def one_run(
    base: Settings,
    *,
    variant: str,
    k: int,
    repeat: int,
    workdir: Path,
    stamp: str,
    codec: AvroCodec,
    inputs: Mapping[str, Sequence[tuple[str, bytes, bytes]]],
    build_router: Callable[..., Any],
    init: Callable[[Settings], Any],
    rate: float,
    warmup_s: float,
    echo: Echo,
) -> RunResult:
    prefix = f"bench-{stamp}-r{repeat}k{k}{variant[0]}."
    home = workdir / prefix.rstrip(".")
    settings = base.model_copy(update={"home": home, "topic_prefix": prefix, "database_url": None})
    topics = Topics(prefix=prefix)
    audiences = AUDIENCES[k]
    bench = inputs["bench"]
    n = len(bench)
    if variant == "router":
        init(settings)
        produce(settings.bootstrap_servers, topics, inputs["setup"])
        setup_router, setup_bus = build_router(settings)
        setup_loop = Loop(functools.partial(setup_router.run, setup_bus), setup_bus).start()
        for agency in ("police", "probation_crc", "mals"):
            committed_all(settings.bootstrap_servers, f"{prefix}hub-router",
                          topics.ingest(agency), 120, setup_loop)  # fmt: skip
        setup_loop.stop()
        router, bus = build_router(settings)
        router.audiences = list(audiences)  # the k audiences under test
        clocked = ClockedBus(bus, n)
        loop = Loop(functools.partial(router.run, clocked), clocked)
    else:
        ensure_topics(settings.bootstrap_servers,
                      {topics.ingest(SOURCE[0]): 3, topics.audit: 1,
                       **{topics.deliver(a): 3 for a in audiences}})  # fmt: skip
        clocked = ClockedBus(new_bus(settings, "bench-baseline"), n)
        loop = Loop(baseline_loop(clocked, codec, topics, audiences, audit_sized(codec)), clocked)
    produce(settings.bootstrap_servers, topics, bench)
    loop.start()
    deadline = time.monotonic() + max(300.0, n / 20)
    while clocked.done is None:
        loop.check()
        if time.monotonic() > deadline:
            loop.stop()
            raise TimeoutError(f"{variant} k={k}: {clocked.committed} of {n} committed")
        time.sleep(0.1)
    assert clocked.warm is not None
    (w_wall, w_cpu, w_count), (d_wall, d_cpu) = clocked.warm, clocked.done
    timed = clocked.committed - w_count
    seconds = d_wall - w_wall
    result = RunResult(variant, k, repeat, timed, seconds, timed / seconds,
                       timed / max(d_cpu - w_cpu, 1e-9), True)  # fmt: skip
    seen = read_deliveries(settings.bootstrap_servers, [topics.deliver(a) for a in audiences])
    ids = {event_id_of(value) for _, _, value in bench}
    wrong = [(t, e, c) for (t, e), c in seen.items() if e in ids and c != 1]
    got = sum(1 for (_, e) in seen if e in ids)
    if wrong or got != n * k:
        result.exactly_once = False
        result.problems = f"{got} of {n * k} deliveries, {len(wrong)} duplicated"
    if rate > 0:
        result.latencies, result.missing = measure_latency(
            settings.bootstrap_servers, topics, audiences, inputs["latency"], rate, warmup_s, loop
        )
    loop.stop()
    lat = sorted(result.latencies)
    echo(f"  r{repeat} k={k} {variant:<8} {result.per_s:8,.0f} ev/s ({timed:,} in {seconds:.1f} s,"
         f" {result.per_cpu_s:,.0f} per CPU-s of the loop)"
         f"{'' if result.exactly_once else ' NOT EXACTLY ONCE: ' + result.problems}"
         + (f"; latency p50 {_pct(lat, 50) * 1000:.0f} ms p99 {_pct(lat, 99) * 1000:.0f} ms"
            f" over {len(lat):,}" if lat else ""))  # fmt: skip
    return result


# -- the whole benchmark ---------------------------------------------------------------------------


def _pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    index = min(len(values) - 1, max(0, round(q / 100 * len(values) + 0.5) - 1))
    return values[index]


def _spread(values: Sequence[float], fmt: str = ",.0f") -> str:
    if not values:
        return "-"
    return (f"{statistics.median(values):{fmt}} [{min(values):{fmt}} .. {max(values):{fmt}}]")


def bench_router(
    base: Settings,
    *,
    build_router: Callable[..., Any],
    init: Callable[[Settings], Any],
    n: int = 20_000,
    repeats: int = 3,
    rate: float = 100.0,
    seconds: float = 15.0,
    warmup_s: float = 3.0,
    ks: Sequence[int] = (3, 5),
    echo: Echo = print,
) -> dict[str, Any]:
    """Run the benchmark against the broker and registry ``base`` names; return the figures."""
    if n < 4 * BATCH_SIZE:
        raise ValueError(f"n must be at least {4 * BATCH_SIZE} (the first batch is warm-up)")
    stamp = dt.datetime.now().strftime("%Y%m%d%H%M%S")
    workdir = Path(tempfile.mkdtemp(prefix="hub-bench-router-"))
    codec = AvroCodec(Catalogue.load(), _registry(base.schema_registry_url))
    codec.register_all()
    events = Events(codec)
    inputs = {
        "setup": events.setup(),
        "bench": events.custody(n, "bench"),
        "latency": events.custody(int(rate * (warmup_s + seconds)), "latency") if rate else [],
    }
    size = statistics.mean(len(v) for _, _, v in inputs["bench"])
    echo(f"router benchmark: n={n:,} events pre-loaded per run (~{size:.0f} B each), "
         f"{repeats} repeats of (baseline, router) per k, latency at {rate:g} events/s for "
         f"{seconds:g} s after {warmup_s:g} s warm-up; broker {base.bootstrap_servers}")
    results: list[RunResult] = []
    prefixes = []
    try:
        for repeat in range(1, repeats + 1):
            for k in ks:
                for variant in ("baseline", "router"):
                    prefixes.append(f"bench-{stamp}-r{repeat}k{k}{variant[0]}.")
                    results.append(one_run(
                        base, variant=variant, k=k, repeat=repeat, workdir=workdir,
                        stamp=stamp, codec=codec, inputs=inputs, build_router=build_router,
                        init=init, rate=rate, warmup_s=warmup_s, echo=echo))  # fmt: skip
    finally:
        delete_topics(base.bootstrap_servers, prefixes)
        shutil.rmtree(workdir, ignore_errors=True)
    return summarise(results, n=n, rate=rate, seconds=seconds, warmup_s=warmup_s, size=size,
                     ks=ks, echo=echo)  # fmt: skip


def summarise(results: Sequence[RunResult], *, n: int, rate: float, seconds: float,
              warmup_s: float, size: float, ks: Sequence[int], echo: Echo) -> dict[str, Any]:
    import confluent_kafka

    figures: dict[str, Any] = {
        "events_per_run": n, "event_bytes": round(size), "repeats": max(r.repeat for r in results),
        "latency_rate_per_s": rate, "latency_seconds": seconds, "warmup_seconds": warmup_s,
        "exactly_once": all(r.exactly_once for r in results),
        "python": platform.python_version(),
        "confluent_kafka": _version(confluent_kafka.version()),
        "librdkafka": confluent_kafka.libversion()[0], "cpus": os.cpu_count(),
        "batch_size": BATCH_SIZE, "poll_timeout_s": POLL_TIMEOUT_S,
    }  # fmt: skip
    echo("")
    echo(f"throughput, events/s: median [min .. max] of {figures['repeats']} runs; "
         "per CPU-s = per CPU-second of the loop's thread")  # fmt: skip
    echo(f"{'k':>2}  {'baseline':<26} {'router':<26} {'router/baseline':<22} "
         f"{'router per CPU-s':<22} {'baseline per CPU-s':<26} ratio per CPU-s")  # fmt: skip
    for k in ks:
        base_runs = [r for r in results if r.k == k and r.variant == "baseline"]
        router_runs = [r for r in results if r.k == k and r.variant == "router"]
        ratios = [r.per_s / b.per_s for b, r in zip(base_runs, router_runs, strict=False)]
        cpu_ratios = [r.per_cpu_s / b.per_cpu_s
                      for b, r in zip(base_runs, router_runs, strict=False)]  # fmt: skip
        figures[f"k{k}"] = {
            "audiences": list(AUDIENCES[k]),
            "baseline_per_s": [round(r.per_s) for r in base_runs],
            "router_per_s": [round(r.per_s) for r in router_runs],
            "ratio": [round(x, 3) for x in ratios],
            "ratio_cpu": [round(x, 3) for x in cpu_ratios],
            "baseline_per_cpu_s": [round(r.per_cpu_s) for r in base_runs],
            "router_per_cpu_s": [round(r.per_cpu_s) for r in router_runs],
        }
        echo(f"{k:>2}  {_spread([r.per_s for r in base_runs]):<26} "
             f"{_spread([r.per_s for r in router_runs]):<26} {_spread(ratios, '.3f'):<22} "
             f"{_spread([r.per_cpu_s for r in router_runs]):<22} "
             f"{_spread([r.per_cpu_s for r in base_runs]):<26} {_spread(cpu_ratios, '.3f')}")
    if rate:
        echo("")
        echo(f"end-to-end latency at {rate:g} events/s (scheduled send -> read_committed consumer "
             "of deliver.*), every delivery pooled over the runs; ms")  # fmt: skip
        echo(f"{'k':>2}  {'variant':<9} {'deliveries':>10} {'p50':>7} {'p99':>7} {'p99.9':>7} "
             f"{'max':>7}  p50 / p99 of each run   missing")  # fmt: skip
        for k in ks:
            for variant in ("baseline", "router"):
                runs = [r for r in results if r.k == k and r.variant == variant]
                pooled = sorted(x for r in runs for x in r.latencies)
                each = ", ".join(f"{_pct(sorted(r.latencies), 50) * 1000:.0f}/"
                                 f"{_pct(sorted(r.latencies), 99) * 1000:.0f}" for r in runs)
                missing = sum(r.missing for r in runs)
                row = {q: round(_pct(pooled, q) * 1000, 1) for q in (50, 99, 99.9)}
                row["max"] = round(pooled[-1] * 1000, 1) if pooled else float("nan")
                row["samples"] = len(pooled)
                row["missing"] = missing
                figures[f"k{k}"][f"{variant}_latency_ms"] = row
                echo(f"{k:>2}  {variant:<9} {len(pooled):>10,} {row[50]:>7.0f} {row[99]:>7.0f} "
                     f"{row[99.9]:>7.0f} {row['max']:>7.0f}  {each}   {missing}")  # fmt: skip
    echo("")
    echo("exactly once: " + ("every delivery of every run seen exactly once"
                             if figures["exactly_once"] else "FAILED in some run (figures void)"))
    echo(f"python {figures['python']}, confluent-kafka {figures['confluent_kafka']} "
         f"(librdkafka {figures['librdkafka']}), {figures['cpus']} CPUs, batches of "
         f"{BATCH_SIZE}, poll {POLL_TIMEOUT_S} s, linger.ms 5, lz4, acks=all, read_committed")
    return figures


def _version(value: Any) -> str:
    return str(value[0] if isinstance(value, tuple) else value)


def _registry(url: str) -> Any:
    from hub.adapters.schema_registry import HttpSchemaRegistry

    return HttpSchemaRegistry(url)


def main_bench(
    base: Settings,
    *,
    build_router: Callable[..., Any],
    init: Callable[[Settings], Any],
    echo: Echo = print,
    **options: Any,
) -> dict[str, Any]:
    """``hub bench router``: the local broker (started if needed, and left running) or
    ``HUB_KAFKA_BOOTSTRAP``, a registry served in this process, then :func:`bench_router`."""
    from hub import logsetup
    from hub.adapters.broker import LocalBroker, answers_metadata
    from hub.adapters.registry_server import running_registry
    from hub.domain.errors import InfraError

    if "HUB_LOG_LEVEL" not in os.environ:
        logsetup.configure("ERROR")
    if base.kafka_bootstrap:
        if not answers_metadata(base.kafka_bootstrap, timeout=10):
            raise InfraError(f"HUB_KAFKA_BOOTSTRAP={base.kafka_bootstrap} does not answer")
    else:
        echo(f"broker {LocalBroker(base).start().describe()}")
    with tempfile.TemporaryDirectory(prefix="hub-bench-registry-") as tmp:
        with running_registry(f"sqlite:///{tmp}/registry.db") as url:
            settings = base.model_copy(update={
                "kafka_bootstrap": base.bootstrap_servers, "registry_url": url})  # fmt: skip
            return bench_router(settings, build_router=build_router, init=init, echo=echo,
                                **options)  # fmt: skip
