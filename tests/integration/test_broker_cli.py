"""`hub broker start | stop | status | logs` as a user runs them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hub.adapters.broker import _alive
from tests.conftest import free_port

HUB = str(Path(sys.executable).with_name("hub"))


def run(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HUB, *args], env=env, capture_output=True, text=True, timeout=timeout)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env.update(HUB_HOME=str(tmp_path / "home"), **extra)
    return env


@pytest.mark.kafka
def test_start_is_idempotent_and_stop_is_clean(tmp_path: Path) -> None:
    env = _env(
        tmp_path, HUB_BROKER__PORT=str(free_port()), HUB_BROKER__CONTROLLER_PORT=str(free_port())
    )
    first = run(env, "broker", "start")
    assert first.returncode == 0, first.stderr
    assert "[PLAINTEXT (development only)]" in first.stdout
    pid = (tmp_path / "home" / "kafka" / "broker.pid").read_text().strip()
    try:
        second = run(env, "broker", "start")
        assert second.returncode == 0, second.stderr
        assert (tmp_path / "home" / "kafka" / "broker.pid").read_text().strip() == pid
        assert f"pid {pid}" in second.stdout
        status = run(env, "broker", "status")
        assert status.returncode == 0 and "running" in status.stdout
        config = (tmp_path / "home" / "kafka" / "server.properties").read_text()
        assert "process.roles=broker,controller" in config
        assert "transaction.state.log.replication.factor=1" in config
        assert "transaction.state.log.min.isr=1" in config
        assert "offsets.topic.replication.factor=1" in config
        assert "127.0.0.1" in config and "0.0.0.0" not in config
        logs = run(env, "broker", "logs", "-n", "200")
        assert "Kafka Server started" in logs.stdout
    finally:
        stop = run(env, "broker", "stop")
    assert stop.returncode == 0 and "stopped" in stop.stdout
    assert not _alive(int(pid))
    after = run(env, "broker", "status")
    assert after.returncode == 1 and "stopped" in after.stdout
    assert run(env, "broker", "stop").stdout.strip() == "broker was not running"


def _path_without(*commands: str) -> str:
    """A PATH with the directories of python and java but none that holds ``commands``."""
    keep = []
    for entry in os.environ["PATH"].split(os.pathsep):
        if not any((Path(entry) / c).exists() for c in commands):
            keep.append(entry)
    keep.append(str(Path(sys.executable).parent))
    return os.pathsep.join(keep)


def test_start_without_maven_says_what_is_missing(tmp_path: Path) -> None:
    java = shutil.which("java")
    assert java, "the test machine has Java"
    env = _env(tmp_path, HUB_CACHE_DIR=str(tmp_path / "empty-cache"), PATH=_path_without("mvn"))
    env["JAVA_HOME"] = str(Path(os.path.realpath(java)).parents[1])
    result = run(env, "broker", "start", timeout=30)
    assert result.returncode == 1
    assert "Maven" in result.stderr and "mvn" in result.stderr
    assert "HUB_KAFKA_BOOTSTRAP" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_start_without_java_says_what_is_missing(tmp_path: Path) -> None:
    env = _env(tmp_path, PATH=_path_without("java"))
    env.pop("JAVA_HOME", None)
    result = run(env, "broker", "start", timeout=30)
    assert result.returncode == 1
    assert "Java" in result.stderr and "HUB_KAFKA_BOOTSTRAP" in result.stderr
