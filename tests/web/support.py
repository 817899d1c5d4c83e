"""Helpers the portal tests share: users, a clock, an in-memory audit sink, signing in."""

from __future__ import annotations

import re
from pathlib import Path

from hub.audit.entry import AuditEntry
from hub.domain.errors import InfraError
from hub.web.config import WebConfig
from hub.web.users import UserStore

PASSWORD = "correct horse battery staple"
USERS = {
    # name: (audience, role, mentor id)
    "iom.officer": ("police.iom", "practitioner", None),
    "mals.worker": ("mals", "practitioner", None),
    "mentor17": ("mals.mentor", "mentor", "MENTOR-17"),
    "mentor99": ("mals.mentor", "mentor", "MENTOR-99"),
    "dpo": ("hub", "auditor", None),
}
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def add_users(store: UserStore) -> None:
    for name, (audience, role, mentor_id) in USERS.items():
        store.add(name, audience, role, PASSWORD, mentor_id)


def config(home: Path, views_url: str, users_url: str, **extra: object) -> WebConfig:
    return WebConfig(
        home=home,
        views_url=views_url,
        users_url=users_url,
        bootstrap_servers="127.0.0.1:1",  # unused: the tests give the recorder a sink
        audit_topic="hub.audit",
        **extra,  # type: ignore[arg-type]
    )


class Clock:
    """A settable clock (seconds since the epoch)."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class ListSink:
    """Collects what the portal produces to the audit topic; ``fail`` makes ``flush`` raise."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes]] = []
        self.fail = False

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.records.append((topic, value))

    def flush(self, timeout: float = 0.0) -> None:
        if self.fail:
            self.records.clear()
            raise InfraError("hub.audit: 1 record(s) not delivered; first: broker down")

    def entries(self, kind: str | None = None) -> list[AuditEntry]:
        parsed = [AuditEntry.from_json_bytes(value) for _, value in self.records]
        return [e for e in parsed if kind is None or e.kind == kind]


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def sign_in(client, name: str, password: str = PASSWORD):  # type: ignore[no-untyped-def]
    token = csrf_of(client.get("/login").text)
    return client.post(
        "/login",
        data={"username": name, "password": password, "csrf_token": token},
        follow_redirects=False,
    )
