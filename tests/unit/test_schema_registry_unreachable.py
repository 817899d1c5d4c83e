"""An unreachable schema registry is an InfraError naming the registry, whichever HTTP library
the stock client uses underneath, for every call the hub makes through the port."""

from __future__ import annotations

import socket

import pytest

from hub.adapters.schema_registry import HttpSchemaRegistry
from hub.domain.errors import InfraError


@pytest.fixture
def closed_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # bound then released: nothing listens there


@pytest.mark.parametrize(
    "call",
    [
        lambda r: r.register("hub.events.X", '"string"'),
        lambda r: r.schema_by_id(1),
        lambda r: r.latest("hub.events.X"),
    ],
    ids=["register", "schema_by_id", "latest"],
)
def test_unreachable_registry_is_an_infra_error(closed_url: str, call) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InfraError, match=f"registry {closed_url} is unreachable"):
        call(HttpSchemaRegistry(closed_url, retries=0))
