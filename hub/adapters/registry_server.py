"""Running the registry's HTTP API with uvicorn: in the foreground (``hub registry serve``) or in a
background thread for tests (``running_registry``).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import structlog
import uvicorn
from fastapi import FastAPI

from hub.adapters.registry_store import open_registry_store
from hub.domain.errors import InfraError
from hub.registry.api import create_app
from hub.registry.service import RegistryService

log = structlog.get_logger(__name__)

START_TIMEOUT_S = 15.0


def serve(database_url: str, host: str, port: int) -> None:
    """Serve the registry over ``database_url`` on ``host:port`` until interrupted."""
    store = open_registry_store(database_url)
    try:
        sock = _listen(host, port)
        server = uvicorn.Server(_config(create_app(RegistryService(store)), log_level="info"))
        log.info("registry_started", url=_url(host, sock))
        server.run(sockets=[sock])
        log.info("registry_stopped", url=_url(host, sock))
    finally:
        store.close()


@contextmanager
def running_registry(database_url: str, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run the registry over ``database_url`` in a background thread; yields its base URL.

    ``port`` 0 picks a free port. The server stops when the block exits.
    """
    store = open_registry_store(database_url)
    try:
        with running_app(create_app(RegistryService(store)), host, port) as url:
            yield url
    finally:
        store.close()


@contextmanager
def running_app(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a daemon thread until the block exits; yields its URL."""
    sock = _listen(host, port)
    server = uvicorn.Server(_config(app, log_level="warning"))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="registry-server", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise InfraError(f"registry server on {_url(host, sock)} did not start")
        time.sleep(0.01)
    url = _url(host, sock)
    log.debug("registry_started", url=url)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=START_TIMEOUT_S)
        sock.close()
        log.debug("registry_stopped", url=url)


def _config(app: FastAPI, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(app, log_level=log_level, lifespan="off", access_log=False)


def _listen(host: str, port: int) -> socket.socket:
    """Bind before uvicorn starts, so a busy port is a clear error and port 0 is known."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        raise InfraError(
            f"registry cannot listen on {host}:{port}: {exc.strerror or exc} "
            "(choose another port, e.g. HUB_REGISTRY__PORT)"
        ) from exc


def _url(host: str, sock: socket.socket) -> str:
    try:
        port = sock.getsockname()[1]
    except OSError:
        port = "?"
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"
