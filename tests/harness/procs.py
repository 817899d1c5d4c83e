"""The fault injector's processes: routers run as real subprocesses (``hub router run``), signalled
only by the PIDs this harness started (SIGKILL, SIGTERM, SIGSTOP/SIGCONT)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from hub.settings import Settings
from tests.harness.workload import partitions_of, retrying

REPO = Path(__file__).resolve().parents[2]
HUB = str(Path(sys.executable).with_name("hub"))


def router_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that gives ``hub router run`` these settings (and nothing else of ours)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUB_", "HUBTEST_"))}
    env.update(
        HUB_HOME=str(settings.home),
        HUB_KAFKA_BOOTSTRAP=settings.bootstrap_servers,
        HUB_REGISTRY_URL=settings.schema_registry_url,
        HUB_TOPIC_PREFIX=settings.topic_prefix,
        HUB_ROUTER__TRANSACTION_TIMEOUT_MS=str(settings.router.transaction_timeout_ms),
        HUB_ROUTER__SESSION_TIMEOUT_MS=str(settings.router.session_timeout_ms),
        HUB_ROUTER__BATCH_SIZE=str(settings.router.batch_size),
        HUB_LOG_LEVEL="WARNING",
    )
    if settings.database_url:
        env["HUB_DATABASE_URL"] = settings.database_url
    env.update(extra)
    return env


class RouterProcess:
    """One router process. ``faulty=True`` runs it through ``tests.harness.router_main`` (the same
    CLI command with the test-only fault hooks of its ``HUBTEST_*`` variables)."""

    count = 0

    def __init__(
        self, settings: Settings, logs: Path, *, slot: int = 0, faulty: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> None:  # fmt: skip
        RouterProcess.count += 1
        self.name = f"router-{slot}-{RouterProcess.count}"
        logs.mkdir(parents=True, exist_ok=True)
        self.out_path = logs / f"{self.name}.out"
        self.err_path = logs / f"{self.name}.err"
        if faulty:
            argv = [sys.executable, "-m", "tests.harness.router_main", "--slot", str(slot)]
        else:
            argv = [HUB, "router", "run", "--slot", str(slot)]
        self._out = self.out_path.open("wb")
        self._err = self.err_path.open("wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(  # noqa: S603 - our own CLI
            argv, env=router_env(settings, **dict(env or {})), cwd=REPO, stdout=self._out,
            stderr=self._err,
        )  # fmt: skip
        self.pid = self.proc.pid

    def signal(self, sig: signal.Signals) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, sig)  # only the PID this harness started

    def kill(self) -> int:
        self.signal(signal.SIGKILL)
        return self.wait(30)

    def terminate(self, timeout: float = 60) -> int:
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout)
        finally:
            self._out.flush()
            self._err.flush()
        return code

    def alive(self) -> bool:
        return self.proc.poll() is None

    def exited(self) -> str:
        return f"{self.name} exited {self.proc.returncode}: {self.stderr[-3000:]}"

    @property
    def stdout(self) -> str:
        self._out.flush()
        return self.out_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        self._err.flush()
        return self.err_path.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            # a stopped process must be continued before it can handle anything but SIGKILL
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGKILL)
            self.proc.wait(30)
        self._out.close()
        self._err.close()


class GroupProgress:
    """The router group's committed input offsets against the ingest topics' ends."""

    def __init__(self, bootstrap: str, group: str, ingest_topics: Sequence[str]) -> None:
        self.parts = partitions_of(bootstrap, ingest_topics)
        # committed() and watermarks only: this consumer never subscribes, so never joins
        self._consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
        )

    def committed(self) -> dict[tuple[str, int], int]:
        wanted = [TopicPartition(p.topic, p.partition) for p in self.parts]
        got = retrying(lambda: self._consumer.committed(wanted, timeout=15))
        return {(tp.topic, tp.partition): max(tp.offset, 0) for tp in got}

    def ends(self) -> dict[tuple[str, int], int]:
        return {
            (tp.topic, tp.partition): retrying(
                lambda tp=tp: self._consumer.get_watermark_offsets(tp, timeout=15)
            )[1]
            for tp in self.parts
        }

    def total(self) -> int:
        return sum(self.committed().values())

    def done(self) -> bool:
        committed = self.committed()
        return all(committed.get(k, 0) >= end for k, end in self.ends().items())

    def wait_advance(self, beyond: int, timeout_s: float, proc: RouterProcess | None = None) -> int:
        """Wait until the committed total is past ``beyond``; return it."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            total = self.total()
            if total > beyond:
                return total
            if proc is not None and not proc.alive():
                raise AssertionError(proc.exited())
            time.sleep(0.05)
        raise AssertionError(f"no committed progress past {beyond} in {timeout_s}s")

    def wait_done(self, timeout_s: float, proc: RouterProcess | None = None) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.done():
                return
            if proc is not None and not proc.alive():
                raise AssertionError(proc.exited())
            time.sleep(0.2)
        committed, ends = self.committed(), self.ends()
        raise AssertionError(f"not done in {timeout_s}s: committed {committed} ends {ends}")

    def wait_idle(self, idle_s: float, timeout_s: float, proc: RouterProcess | None = None) -> int:
        """Wait until the committed total has not moved for ``idle_s``; return it. (For runs
        that are not expected to reach the end, such as a mutation.)"""
        deadline = time.monotonic() + timeout_s
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            total = self.total()
            if total != last:
                last, since = total, time.monotonic()
            elif time.monotonic() - since >= idle_s:
                return total
            if proc is not None and not proc.alive():
                raise AssertionError(proc.exited())
            time.sleep(0.2)
        raise AssertionError(f"committed offsets still moving after {timeout_s}s")

    def close(self) -> None:
        self._consumer.close()


def router_stats(stdout: str) -> dict[str, int]:
    """The figures ``hub router run`` prints on a clean stop:
    ``routed R, delivered D, rejected X, duplicates U, aborted batches A``."""
    import re

    lines = [line for line in stdout.strip().splitlines() if line.startswith("routed ")]
    out = {}
    for name, value in re.findall(r"([a-z][a-z ]*?) (\d+)", lines[-1] if lines else ""):
        out[name.strip()] = int(value)
    return {
        "routed": out.get("routed", -1),
        "delivered": out.get("delivered", -1),
        "rejected": out.get("rejected", -1),
        "duplicates": out.get("duplicates", -1),
        "aborted": out.get("aborted batches", -1),
    }
