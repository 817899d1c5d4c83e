"""Client-side Kafka security: the credentials file and the librdkafka keys for each mode.

``HUB_HOME/security/kafka-credentials.json`` (0600) maps each SCRAM principal the hub created to
its generated password: ``hub-admin`` (the broker's own principal and the only super user, written
by ``hub broker start --secure``), one per agency and one per hub service (``hub agencies
provision``). Hand each agency only its own entry.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from hub.adapters.tls import write_private
from hub.domain.errors import InfraError
from hub.settings import Settings

ADMIN = "hub-admin"
MECHANISM = "SCRAM-SHA-512"
PLAINTEXT_LABEL = "PLAINTEXT (development only)"


def security_dir(home: Path) -> Path:
    return home / "security"


def credentials_path(home: Path) -> Path:
    return security_dir(home) / "kafka-credentials.json"


def ca_path(home: Path) -> Path:
    return security_dir(home) / "ca.pem"


def new_password() -> str:
    return secrets.token_urlsafe(24)


class Credentials:
    """The credentials file: principal → password; written whole, 0600, on every change."""

    def __init__(self, home: Path) -> None:
        self.path = credentials_path(home)
        try:
            self.passwords: dict[str, str] = json.loads(self.path.read_text())
        except FileNotFoundError:
            self.passwords = {}
        except ValueError as exc:
            raise InfraError(f"{self.path}: not a JSON object of principal → password") from exc

    def get(self, principal: str) -> str | None:
        return self.passwords.get(principal)

    def ensure(self, principal: str) -> tuple[str, bool]:
        """The principal's password, generating one when it has none: (password, created)."""
        if principal in self.passwords:
            return self.passwords[principal], False
        self.passwords[principal] = new_password()
        return self.passwords[principal], True

    def remove(self, principal: str) -> bool:
        return self.passwords.pop(principal, None) is not None

    def save(self) -> None:
        text = json.dumps(dict(sorted(self.passwords.items())), indent=2) + "\n"
        write_private(self.path, text.encode())


def principal(settings: Settings) -> str:
    return settings.kafka_security.username or ADMIN


def client_security(settings: Settings, *, username: str | None = None) -> dict[str, Any]:
    """The librdkafka keys that make a client authenticate as the settings say (as ``username``
    when given, with its password from the credentials file): nothing for plaintext; SASL_SSL with
    SCRAM-SHA-512, the CA and host-name verification otherwise."""
    sec = settings.kafka_security
    if sec.mode == "plaintext":
        return {}
    user = username or principal(settings)
    password = sec.password.get_secret_value() if sec.password and not username else None
    if password is None:
        password = Credentials(settings.home).get(user)
    if password is None:
        raise InfraError(
            f"no Kafka password for {user!r}: set HUB_KAFKA_SECURITY__PASSWORD, or run "
            f"`hub agencies provision` to write it to {credentials_path(settings.home)}"
        )
    ca = sec.ca_file or ca_path(settings.home)
    if not ca.exists():
        raise InfraError(
            f"the CA file {ca} does not exist: set HUB_KAFKA_SECURITY__CA_FILE, or start the "
            "local broker with `hub broker start --secure`"
        )
    return {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": MECHANISM,
        "sasl.username": user,
        "sasl.password": password,
        "ssl.ca.location": str(ca),
        # librdkafka's default has changed between versions: say it (RELIABILITY.md A7).
        "ssl.endpoint.identification.algorithm": "https",
    }


def mode_label(settings: Settings) -> str:
    """How a service names its Kafka security in the log line that starts it."""
    if settings.kafka_security.mode == "plaintext":
        return PLAINTEXT_LABEL
    return f"SASL_SSL ({MECHANISM}, principal {principal(settings)})"
