"""Shared fixtures: one real Kafka broker per test session, a fresh topic prefix per test.

The broker is, in order of preference: the cluster named by ``HUB_KAFKA_BOOTSTRAP``; testcontainers'
Kafka where a Docker engine answers; otherwise the hub's own local KRaft broker (``hub broker``),
started here on free ports with its state in a temporary ``HUB_HOME``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.settings import BrokerSettings, Settings
from hub.topics import Topics

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _docker_engine() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("HUB_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    if _docker_engine():
        try:
            from testcontainers.kafka import KafkaContainer  # type: ignore[import-not-found]
        except ImportError:
            pass
        else:
            with KafkaContainer().with_kraft() as container:
                yield container.get_bootstrap_server()
            return
    from hub.adapters.broker import LocalBroker

    settings = Settings(
        home=tmp_path_factory.mktemp("hub-home"),
        broker=BrokerSettings(port=free_port(), controller_port=free_port()),
    )
    broker = LocalBroker(settings)
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def topics() -> Topics:
    """A fresh topic prefix per test, so tests sharing the broker never see each other's data."""
    return Topics(prefix=f"t{uuid.uuid4().hex[:10]}.")


@pytest.fixture(scope="session")
def catalogue():  # type: ignore[no-untyped-def]
    from hub.serde.catalogue import Catalogue

    return Catalogue.load()


@pytest.fixture(scope="session")
def registry_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The hub's own schema registry, served over HTTP from a SQLite file, once per session."""
    from hub.adapters.registry_server import running_registry

    db = tmp_path_factory.mktemp("registry") / "registry.db"
    with running_registry(f"sqlite:///{db}") as url:
        yield url


@pytest.fixture(scope="session")
def codec(catalogue, registry_url):  # type: ignore[no-untyped-def]
    from hub.adapters.schema_registry import HttpSchemaRegistry
    from hub.serde.codec import AvroCodec

    codec = AvroCodec(catalogue, HttpSchemaRegistry(registry_url))
    codec.register_all()
    return codec


# PostgreSQL for the store contract tests: one throwaway server per session (tests/pg.py).
from tests.pg import fresh_postgres_url, postgres_url  # noqa: E402, F401
