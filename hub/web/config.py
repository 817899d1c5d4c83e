"""What the portal needs to know, taken from the hub's settings once (``WebConfig.from_settings``).

The auditor pages read the audit trail and the policy state in ``hub_database_url``.
Views are read from ``views_url`` with ``{audience}`` replaced (default: the SQLite file that
``hub view run --audience X`` writes under ``HUB_HOME/views``); users live in ``users_url``
(default ``HUB_HOME/web/users.db``); the session signing key in ``HUB_HOME/keys/web_session.key``.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import structlog

from hub.domain.errors import InputError
from hub.settings import Settings
from hub.topics import Topics

log = structlog.get_logger(__name__)

ROLES = ("practitioner", "mentor", "auditor")


@dataclass(frozen=True)
class WebConfig:
    home: Path
    views_url: str  # a database URL with "{audience}" in it
    users_url: str
    bootstrap_servers: str
    audit_topic: str
    idle_timeout_s: int = 30 * 60
    max_session_s: int = 8 * 60 * 60
    max_failures: int = 5
    lockout_s: int = 15 * 60
    secure_cookies: bool = False  # set behind TLS: HTTPS-only session cookie, and HSTS
    audit_timeout_s: float = 10.0
    login_attempts: int = 20  # sign-in attempts per client address within login_window_s
    login_window_s: int = 60
    hub_database_url: str = ""  # the audit trail and policy state the auditor pages read

    @classmethod
    def from_settings(
        cls, s: Settings, *, views_url: str | None = None, users_url: str | None = None,
        secure_cookies: bool = False,
    ) -> WebConfig:  # fmt: skip
        views = views_url or f"sqlite:///{s.home / 'views'}/{{audience}}.db"
        if "{audience}" not in views:
            raise InputError(
                f"views URL {views!r} has no {{audience}} placeholder "
                "(expected e.g. sqlite:///var/hub/views/{audience}.db)"
            )
        return cls(
            home=s.home,
            views_url=views,
            users_url=users_url or f"sqlite:///{s.home / 'web' / 'users.db'}",
            bootstrap_servers=s.bootstrap_servers,
            audit_topic=Topics(prefix=s.topic_prefix).audit,
            secure_cookies=secure_cookies,
            hub_database_url=s.hub_database_url,
        )

    def view_url(self, audience: str) -> str:
        return self.views_url.replace("{audience}", audience)

    @property
    def session_key_path(self) -> Path:
        return self.home / "keys" / "web_session.key"


def session_key(path: Path) -> str:
    """The secret that signs session cookies: made on first use (32 random bytes, mode 0600)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first
        else:
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(secrets.token_hex(32))
            log.info("web_session_key_created", path=str(path))
    key = path.read_text(encoding="ascii").strip()
    if len(key) < 32:
        raise InputError(f"{path}: the session key is {len(key)} characters (at least 32)")
    return key
