"""Settings: one pydantic-settings object, read once in bootstrap and passed down.

Environment variables use the ``HUB_`` prefix and ``__`` for nesting, e.g.
``HUB_KAFKA_BOOTSTRAP=host:9092`` or ``HUB_BROKER__HEAP=512m``. Unknown keys are an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

KAFKA_VERSION = "4.1.1"


def _default_home() -> Path:
    return Path.home() / ".local" / "state" / "hub"


def _default_cache() -> Path:
    return Path.home() / ".cache" / "hub"


class BrokerSettings(BaseModel):
    """The local single-node KRaft broker that ``hub broker start`` runs."""

    model_config = ConfigDict(extra="forbid")

    kafka_version: str = KAFKA_VERSION
    port: int = 19092
    controller_port: int = 19093
    heap: str = "512m"
    node_id: int = 1
    start_timeout_s: float = 90.0
    max_reauth_ms: int = Field(
        default=20_000, ge=1_000, description="secure mode: clients re-authenticate this often"
    )


class KafkaSecuritySettings(BaseModel):
    """How the hub's Kafka clients authenticate (RELIABILITY.md A7): ``plaintext`` for development
    only, or ``sasl_ssl`` (SCRAM-SHA-512 over TLS, the broker's certificate checked against the
    CA and the host name). With the local secure broker the defaults work: the admin principal,
    its password from ``HUB_HOME/security/kafka-credentials.json``, the CA ``HUB_HOME/security/
    ca.pem``; a service sets its own ``username`` (e.g. ``hub-router``) and ``password``."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["plaintext", "sasl_ssl"] = "plaintext"
    username: str | None = Field(default=None, description="SCRAM principal [default: hub-admin]")
    password: SecretStr | None = Field(
        default=None, description="[default: the credentials file under HUB_HOME]"
    )
    ca_file: Path | None = Field(default=None, description="[default: HUB_HOME/security/ca.pem]")


class RegistrySettings(BaseModel):
    """The Confluent-compatible schema registry that ``hub registry serve`` runs."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = 18081


class RouterSettings(BaseModel):
    """The router's Kafka transaction (RELIABILITY.md A1, B.7)."""

    model_config = ConfigDict(extra="forbid")

    transaction_timeout_ms: int = Field(default=60_000, le=60_000)
    batch_size: int = 500
    storm_threshold: int = 100
    session_timeout_ms: int = 10_000
    # the router producer's message.max.bytes; a larger delivery goes to the DLQ instead
    max_record_bytes: int = Field(default=1_000_000, ge=4_096, le=1_000_000)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="HUB_", env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    home: Path = Field(default_factory=_default_home, description="the hub's state directory")
    cache_dir: Path = Field(default_factory=_default_cache, description="downloaded Kafka jars")
    kafka_bootstrap: str | None = Field(
        default=None, description="an existing Kafka cluster; when set, no local broker is used"
    )
    registry_url: str | None = Field(
        default=None, description="an existing schema registry; default: the hub's own"
    )
    database_url: str | None = Field(
        default=None, description="the hub database; default: SQLite under HUB_HOME"
    )
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR")
    topic_prefix: str = Field(
        default="", description="prepended to every topic name (tests, shared clusters)"
    )
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    kafka_security: KafkaSecuritySettings = Field(default_factory=KafkaSecuritySettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    router: RouterSettings = Field(default_factory=RouterSettings)
    field_encryption: bool = Field(
        default=False,
        description="encrypt sensitive fields on ingest.* and deliver.* (keys under HUB_HOME/keys)",
    )

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap or f"127.0.0.1:{self.broker.port}"

    @property
    def schema_registry_url(self) -> str:
        return self.registry_url or f"http://{self.registry.host}:{self.registry.port}"

    @property
    def hub_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'hub.db'}"
