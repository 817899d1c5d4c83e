"""Exactly-once and recovery of the router under faults: RELIABILITY.md B.1, CI tier.

Every test publishes a mixed workload (``tests.harness.workload``: two agencies, subjects keyed to
one partition each, 1 % defective records that must go to the DLQ), runs the router as a real
subprocess (``hub router run``, settings from the environment, transaction timeout 15 s, session
timeout 6 s), injects faults only into the PIDs it started, and then runs the checker of B.0
(``tests.harness.checker``) against the oracle computed with the pure policy function. A
read_committed consumer runs concurrently with the faults. Pass means every counter is 0.

Kill points are random from a seed that is printed (``HUBTEST_EO_SEED`` replays a run).

Sizes: the CI tier of this file runs in about 3 minutes on 2 cores (2:53 measured at a load
average of 1.5: EO-1 43 s, EO-8 29 s, EO-5 23 s, EO-2 19 s, EO-7 12 s + 12 s, about 5 s of
``hub init`` per test and 12 s for the session broker; 3:16 at a load average of 3). The sizes set
the runtime, not sleeps; ``HUBTEST_TIER=soak`` runs RELIABILITY.md's sizes with the same code.

| test | CI here | RELIABILITY CI | soak here |
|------|---------|----------------|-----------|
| EO-1 hard kill | N=3,000, K=4 | N=10,000, K=5 | N=100,000, K=20 |
| EO-2 SIGTERM | N=2,000, ×3 | ×5 | N=10,000, ×5 |
| EO-5 zombie | N=2,000, stop 10 s | stop 30 s | N=10,000, stop 30 s |
| EO-7 abort + rewind | N=1,000, 1 in 4 batches of 50 | 1 in 200 batches | N=20,000, 1 in 200 |
| EO-8 re-run | N=3,000 ×3 | 10,000 ×3 | 10,000 ×3 |

The CI sizes are below RELIABILITY's because the router routes about 250 events/s here (each
event makes about ten audit entries) and each hard kill costs the 6 s session timeout of the dead
member before the restart gets its partitions. EO-4 (commit in doubt) is in
``test_eo_commit_in_doubt.py``: it needs a broker of its own.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hub import bootstrap
from hub.settings import RouterSettings, Settings
from tests.harness.checker import LiveReader, Report, check, oracle, output_topics
from tests.harness.procs import GroupProgress, RouterProcess, router_stats
from tests.harness.workload import (
    Input,
    build_workload,
    ingest_topics,
    publish,
    read_ingest_log,
)

pytestmark = pytest.mark.kafka

SOAK = os.environ.get("HUBTEST_TIER") == "soak"
SEED = int(os.environ.get("HUBTEST_EO_SEED") or time.time_ns() % 1_000_000)
CI_SIZES: dict[str, dict[str, int]] = {
    "eo1": {"n": 3_000, "k": 4},
    "eo2": {"n": 2_000, "k": 3},
    "eo5": {"n": 2_000, "stop_s": 10},
    "eo7": {"n": 1_000, "every": 4, "batch": 50},
    "eo8": {"n": 3_000},
}
SOAK_SIZES: dict[str, dict[str, int]] = {
    "eo1": {"n": 100_000, "k": 20},
    "eo2": {"n": 10_000, "k": 5},
    "eo5": {"n": 10_000, "stop_s": 30},
    "eo7": {"n": 20_000, "every": 200, "batch": 50},
    "eo8": {"n": 10_000},
}
SIZES = SOAK_SIZES if SOAK else CI_SIZES
ROUTE_TIMEOUT_S = 900 if SOAK else 120


@dataclass
class EoRun:
    """One test's hub: settings, topics, the live reader, the routers it started."""

    settings: Settings
    codec: Any
    agreements: Any
    topics: Any
    logs: Path
    progress: GroupProgress
    live: LiveReader
    rng: random.Random
    routers: list[RouterProcess]

    def router(self, **kwargs: Any) -> RouterProcess:
        proc = RouterProcess(self.settings, self.logs, **kwargs)
        self.routers.append(proc)
        return proc

    def publish(self, inputs: list[Input]) -> None:
        publish(self.settings.bootstrap_servers, self.topics, inputs)

    def finish(self, proc: RouterProcess) -> dict[str, int]:
        """Wait until ``proc`` has committed every input, stop it with SIGTERM, return its stats."""
        self.progress.wait_done(ROUTE_TIMEOUT_S, proc)
        code = proc.terminate()
        assert code == 0, f"{proc.name} exited {code} on SIGTERM: {proc.stderr[-3000:]}"
        return router_stats(proc.stdout)

    def check(self, workload: Any) -> Report:
        bootstrap_servers = self.settings.bootstrap_servers
        self.live.wait_caught_up()
        self.live.stop()
        log = read_ingest_log(bootstrap_servers, ingest_topics(self.topics))
        expected = oracle(workload, log, self.codec, self.agreements, self.topics)
        report = check(bootstrap_servers, self.topics, self.codec, self.agreements, expected,
                       self.live)  # fmt: skip
        print(f"seed {SEED}: {report}")
        return report


@pytest.fixture
def eo(kafka_bootstrap, registry_url, topics, codec, tmp_path, request) -> Iterator[EoRun]:  # type: ignore[no-untyped-def]
    batch = getattr(request, "param", None) or 100
    settings = Settings(
        home=tmp_path / "home",
        kafka_bootstrap=kafka_bootstrap,
        registry_url=registry_url,
        topic_prefix=topics.prefix,
        router=RouterSettings(
            transaction_timeout_ms=15_000, session_timeout_ms=6_000, batch_size=batch
        ),
    )
    bootstrap.init(settings)
    agreements = bootstrap.agreements(codec.catalogue)
    progress = GroupProgress(kafka_bootstrap, f"{topics.prefix}hub-router", ingest_topics(topics))
    live = LiveReader(kafka_bootstrap, output_topics(topics, agreements))
    run = EoRun(settings, codec, agreements, topics, tmp_path / "logs", progress, live,
                random.Random(SEED), [])  # fmt: skip
    print(f"HUBTEST_EO_SEED={SEED} prefix={topics.prefix} logs={run.logs}")
    live.__enter__()
    try:
        yield run
    finally:
        for proc in run.routers:
            proc.close()
        live.stop()
        progress.close()


def _fault_points(rng: random.Random, n: int, k: int) -> list[int]:
    """K random points of the input stream (committed input offsets), from the logged seed."""
    return sorted(rng.sample(range(n // 10, n * 8 // 10), k))


def _reach(eo: EoRun, proc: RouterProcess, point: int) -> None:
    """Wait until ``proc`` committed a transaction with input offsets and the group's committed
    offsets passed ``point``, then a random part of a batch more."""
    eo.progress.wait_advance(eo.progress.total(), 90, proc)
    if eo.progress.total() < point:
        eo.progress.wait_advance(point - 1, ROUTE_TIMEOUT_S, proc)
    time.sleep(eo.rng.uniform(0.0, 0.3))
    assert not eo.progress.done(), "the workload ran out before the fault: raise N"


def _assert_clean(report: Report) -> None:
    assert report.ok, f"seed {SEED}: {report}"
    assert report.deliveries == report.expected_deliveries > 0


# -- EO-1 ----------------------------------------------------------------------------------------


def test_eo1_router_hard_kill(eo: EoRun) -> None:
    """SIGKILL the router K times at random points of the input stream, each after it
    committed at least one transaction with input offsets, and restart it; the restart's
    init_transactions (same transactional.id) aborts the dead one's open transaction at once."""
    n, k = SIZES["eo1"]["n"], SIZES["eo1"]["k"]
    workload = build_workload(eo.codec, n, seed=SEED)
    eo.publish(workload.inputs)
    for point in _fault_points(eo.rng, n, k):
        proc = eo.router()
        _reach(eo, proc, point)
        assert proc.kill() == -signal.SIGKILL
    eo.finish(eo.router())
    report = eo.check(workload)
    _assert_clean(report)
    # the kills left open transactions that were aborted, and nobody read them
    assert report.attempts_aborted >= 1, report


# -- EO-2 ----------------------------------------------------------------------------------------


def test_eo2_router_clean_stop(eo: EoRun) -> None:
    """SIGTERM the router K times at random points: it finishes the batch in flight, commits it
    and exits 0; no transaction is ever aborted."""
    n, k = SIZES["eo2"]["n"], SIZES["eo2"]["k"]
    workload = build_workload(eo.codec, n, seed=SEED + 2)
    eo.publish(workload.inputs)
    for point in _fault_points(eo.rng, n, k):
        proc = eo.router()
        _reach(eo, proc, point)
        started = time.monotonic()
        code = proc.terminate(60)
        assert code == 0, f"exit {code} on SIGTERM: {proc.stderr[-3000:]}"
        assert time.monotonic() - started < 30
        assert router_stats(proc.stdout)["aborted"] == 0, proc.stdout
    eo.finish(eo.router())
    report = eo.check(workload)
    _assert_clean(report)
    assert report.attempts_aborted == 0, f"a clean stop aborted a transaction: {report}"


# -- EO-5 ----------------------------------------------------------------------------------------


def test_eo5_zombie_router_is_fenced(eo: EoRun) -> None:
    """SIGSTOP router A; start B with the same slot (same transactional.id); SIGCONT A. A is
    fenced and exits non-zero at its next transactional step; B finishes; checker 0."""
    n, stop_s = SIZES["eo5"]["n"], SIZES["eo5"]["stop_s"]
    workload = build_workload(eo.codec, n, seed=SEED + 5)
    first, second = workload.inputs[: n * 3 // 4], workload.inputs[n * 3 // 4 :]
    eo.publish(first)
    a = eo.router()
    _reach(eo, a, _fault_points(eo.rng, len(first), 1)[0])
    a.signal(signal.SIGSTOP)
    stopped = time.monotonic()
    b = eo.router()  # same slot: init_transactions bumps the epoch and fences A
    time.sleep(max(0.0, stop_s - (time.monotonic() - stopped)))
    a.signal(signal.SIGCONT)
    resumed = time.monotonic()
    # new input after the resume: whichever partitions A gets back when it rejoins the group,
    # it has records to route, so it reaches a transactional step (and is fenced there)
    eo.publish(second)
    code = a.wait(60)
    fenced_after = time.monotonic() - resumed
    print(f"zombie exited {code} {fenced_after:.1f}s after SIGCONT")
    assert code != 0, f"zombie exited {code}: {a.stderr[-2000:]}"
    # fenced at whichever call the zombie made first after SIGCONT: a produce (librdkafka's
    # "fenced by newer producer instance") or the commit (the bus's Fenced "was fenced during")
    assert any(
        text in a.stderr for text in ("fenced by newer producer instance", "was fenced during")
    ), a.stderr[-2000:]
    last = a.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "hub-router-0" in last, f"not stopped by it: {last}"
    # a zombie that built a new producer with the same transactional.id would fence B in turn
    assert "producer_recreated" not in a.stderr, a.stderr[-2000:]
    assert fenced_after < 30, f"the zombie took {fenced_after:.1f}s to notice it was fenced"
    eo.finish(b)
    _assert_clean(eo.check(workload))


# -- EO-7 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("eo", [SIZES["eo7"]["batch"]], indirect=True)
def test_eo7_abort_then_rewind(eo: EoRun) -> None:
    """The policy engine raises in 1 of every n batches: the batch is aborted, the consumer
    rewound to the committed offsets and the batch reprocessed; nothing is lost or doubled.
    Then a connector re-run of the same events through a fresh router process: the events of
    the aborted batches must be known as routed too (dropped as duplicates)."""
    n, every = SIZES["eo7"]["n"], SIZES["eo7"]["every"]
    workload = build_workload(eo.codec, n, seed=SEED + 7)
    eo.publish(workload.inputs)
    proc = eo.router(faulty=True, env={"HUBTEST_FAIL_EVERY_N_BATCHES": str(every)})
    stats = eo.finish(proc)
    injected = proc.stderr.count("hubtest: injected policy-engine fault")
    assert injected >= 2, proc.stderr[-2000:]
    # librdkafka may fail the transaction after an abort once more on its own (a purged produce
    # request leaves a sequence gap: "requires epoch bump"); that one is aborted and redone too
    assert stats["aborted"] >= injected, stats
    eo.publish(workload.valid)  # the re-run
    rerun = eo.finish(eo.router())
    assert rerun["duplicates"] == len(workload.valid), rerun
    report = eo.check(workload)
    _assert_clean(report)
    assert report.attempts_aborted >= injected, report  # the aborted batches were in the log


@pytest.mark.parametrize("eo", [SIZES["eo7"]["batch"]], indirect=True)
def test_eo7_mutation_without_rewind_the_checker_fails(eo: EoRun) -> None:
    """The mutation check of EO-7 itself: with the rewind disabled, an aborted batch is skipped
    and the checker must report missing deliveries."""
    n = 600
    workload = build_workload(eo.codec, n, seed=SEED + 70)
    eo.publish(workload.inputs)
    proc = eo.router(faulty=True, env={"HUBTEST_FAIL_EVERY_N_BATCHES": "3",
                                       "HUBTEST_DISABLE_REWIND": "1"})  # fmt: skip
    eo.progress.wait_idle(5.0, ROUTE_TIMEOUT_S, proc)  # it never reaches the end: it skipped
    assert not eo.progress.done()
    assert proc.terminate() == 0, proc.stderr[-3000:]
    assert "hubtest: rewind skipped" in proc.stderr
    report = eo.check(workload)
    assert not report.ok
    assert report.missing > 0, report
    assert report.audit_mismatch > 0, report


# -- EO-8 ----------------------------------------------------------------------------------------


def test_eo8_connector_rerun(eo: EoRun) -> None:
    """Publish the same export (same event ids, same bytes) twice, then a third time with the
    router killed half-way: one delivery each, the router's duplicates counter equals the export
    on run 2, and no new DLQ record."""
    n = SIZES["eo8"]["n"]
    workload = build_workload(eo.codec, n, seed=SEED + 8)
    export = workload.valid
    eo.publish(workload.inputs)
    first = eo.finish(eo.router())
    assert first["duplicates"] == 0 and first["rejected"] >= len(workload.defective), first
    eo.publish(export)
    second = eo.finish(eo.router())
    assert second["duplicates"] == len(export), second
    assert second["routed"] == 0 and second["delivered"] == 0 and second["rejected"] == 0, second
    eo.publish(export)
    third = eo.router()
    half = eo.progress.total() + len(export) // 2
    eo.progress.wait_advance(half, ROUTE_TIMEOUT_S, third)
    assert not eo.progress.done()
    assert third.kill() == -signal.SIGKILL
    last = eo.finish(eo.router())
    assert last["routed"] == 0 and last["rejected"] == 0, last
    report = eo.check(workload)
    _assert_clean(report)
    assert report.dlq_records == len(workload.defective), report
