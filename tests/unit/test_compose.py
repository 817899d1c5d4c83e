"""docker-compose.yml cannot boot here (no Docker engine), so check it agrees with the code."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from hub.adapters.acl import plan
from hub.cli import app
from hub.settings import Settings
from hub.topics import Topics

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
HUB_SERVICES = {
    name: spec for name, spec in COMPOSE["services"].items() if spec.get("image") == "hub:latest"
}


def test_compose_has_the_production_pieces() -> None:
    assert {"kafka", "postgres", "registry"} <= set(COMPOSE["services"])
    kafka_env = COMPOSE["services"]["kafka"]["environment"]
    assert kafka_env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    assert str(kafka_env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"]) == "1"


def test_compose_kafka_is_secure_like_hub_broker_start_secure() -> None:
    """RELIABILITY.md A7 and B.7: SASL_SSL with SCRAM-SHA-512 only, the StandardAuthorizer with
    no allow-everyone, one super user, the admin's SCRAM credential written at format time."""
    kafka = COMPOSE["services"]["kafka"]
    env = kafka["environment"]
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    listeners = [entry.split("://")[0] for entry in env["KAFKA_LISTENERS"].split(",")]
    assert {protocols[name] for name in listeners} == {"SASL_SSL"}
    assert "PLAINTEXT" not in env["KAFKA_ADVERTISED_LISTENERS"]
    assert env["KAFKA_LISTENER_NAME_SASL__SSL_SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-512"
    assert env["KAFKA_AUTHORIZER_CLASS_NAME"].endswith("metadata.authorizer.StandardAuthorizer")
    assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    assert env["KAFKA_SUPER_USERS"] == "User:hub-admin"
    assert "--add-scram" in " ".join(kafka["command"])


def test_every_kafka_service_uses_sasl_ssl_as_a_provisioned_principal() -> None:
    from hub import bootstrap

    principals = set(plan(bootstrap.agency_registry(), Topics())) | {"hub-admin"}
    for name, spec in HUB_SERVICES.items():
        if name == "tls":  # makes the certificates, before Kafka exists
            assert "environment" not in spec
            continue
        env = spec["environment"]
        assert env["HUB_KAFKA_SECURITY__MODE"] == "sasl_ssl", name
        assert str(env["HUB_FIELD_ENCRYPTION"]).lower() == "true", name
        assert env["HUB_KAFKA_BOOTSTRAP"] == COMPOSE["services"]["kafka"]["environment"][
            "KAFKA_ADVERTISED_LISTENERS"].removeprefix("SASL_SSL://")  # fmt: skip
        if "HUB_KAFKA_SECURITY__USERNAME" in env:
            assert env["HUB_KAFKA_SECURITY__USERNAME"] in principals, name
    for service, principal in (("router", "hub-router"), ("audit", "hub-audit"),
                               ("view-mals", "hub-view-mals"), ("web", "hub-web")):  # fmt: skip
        assert HUB_SERVICES[service]["environment"]["HUB_KAFKA_SECURITY__USERNAME"] == principal


@pytest.mark.parametrize("service", sorted(HUB_SERVICES))
def test_every_service_command_exists_in_the_cli(service: str) -> None:
    command = HUB_SERVICES[service]["command"]
    assert command[0] == "hub"
    path = list(itertools.takewhile(lambda word: not word.startswith("-"), command[1:]))
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, f"`hub {' '.join(path)}` is not a CLI command: {result.output}"
    for option in (w for w in command if w.startswith("--")):
        assert option in result.output, f"`hub {' '.join(path)}` has no option {option}"


def _setting_exists(name: str) -> bool:
    parts = name.removeprefix("HUB_").lower().split("__")
    model: Any = Settings
    for part in parts:
        fields = model.model_fields
        if part not in fields:
            return False
        model = fields[part].annotation
    return True


@pytest.mark.parametrize("service", sorted(HUB_SERVICES))
def test_every_environment_name_is_a_setting(service: str) -> None:
    for name in HUB_SERVICES[service].get("environment", {}):
        assert name.startswith("HUB_"), name
        assert _setting_exists(name), f"{service}: {name} is not a field of hub.settings.Settings"
