"""docker-compose.yml cannot boot here (no Docker engine), so check it agrees with the code."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from hub.cli import app
from hub.settings import Settings

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
    for name in HUB_SERVICES[service]["environment"]:
        assert name.startswith("HUB_"), name
        assert _setting_exists(name), f"{service}: {name} is not a field of hub.settings.Settings"
