"""PostgreSQL for tests: one throwaway cluster per test session, and a fresh database per test.

``postgres_url`` is ``HUB_TEST_POSTGRES_URL`` when set; otherwise a cluster is made with the local
``initdb`` and started with ``pg_ctl`` (as the ``postgres`` user when the tests run as root, since
PostgreSQL refuses root) on a free port, with ``fsync=off``, and stopped at the end of the
session. Where PostgreSQL is missing the tests that need it are skipped, except in CI
(``CI`` or ``HUB_REQUIRE_POSTGRES`` set), where that is a failure: the view and registry tests must
run on PostgreSQL there.

Import the fixtures into a test module (``from tests.pg import postgres_url, fresh_postgres_url``)
or into ``tests/conftest.py``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _unavailable(why: str) -> None:
    if os.environ.get("CI") or os.environ.get("HUB_REQUIRE_POSTGRES"):
        pytest.fail(f"PostgreSQL is required in CI: {why}", pytrace=False)
    pytest.skip(why)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A SQLAlchemy URL (``postgresql+psycopg://``) of a running PostgreSQL server."""
    external = os.environ.get("HUB_TEST_POSTGRES_URL")
    if external:
        yield external
        return
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if not (initdb and pg_ctl):
        _unavailable("PostgreSQL not available: set HUB_TEST_POSTGRES_URL or install initdb/pg_ctl")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg not installed (pip install '.[postgres]')")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="hub-pg-"))
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        if not shutil.which("runuser"):
            _unavailable("running as root without runuser to start PostgreSQL as another user")
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, user="postgres")
    data, port = root / "data", _free_port()
    subprocess.run(
        [*as_user, initdb, "-D", str(data), "-U", "hub", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        [*as_user, pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql+psycopg://hub@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)


def create_database(server_url: str) -> str:
    """Create an empty database on the server of ``server_url``; return its URL."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"t_{uuid.uuid4().hex[:12]}"
    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture
def fresh_postgres_url(postgres_url: str) -> str:
    """A new, empty database for one test."""
    return create_database(postgres_url)
