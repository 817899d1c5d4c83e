"""What the two entry points share: connection options, falling back to the hub's settings, and
a clean stop on SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Connection:
    bootstrap: str
    registry_url: str
    topic_prefix: str
    log_level: str = "INFO"


def add_connection_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", required=True, help="SQLAlchemy URL of MALS' database")
    parser.add_argument(
        "--bootstrap", default=None, help="Kafka bootstrap servers (default: HUB_KAFKA_BOOTSTRAP)"
    )
    parser.add_argument(
        "--registry-url", default=None, help="schema registry URL (default: HUB_REGISTRY_URL)"
    )
    parser.add_argument(
        "--topic-prefix",
        default=None,
        help="prefix of every topic name (default: HUB_TOPIC_PREFIX)",
    )


def connection(args: argparse.Namespace) -> Connection:
    """The options given, else the hub's settings from the environment."""
    from hub.settings import Settings

    settings = Settings()
    return Connection(
        bootstrap=args.bootstrap or settings.bootstrap_servers,
        registry_url=args.registry_url or settings.schema_registry_url,
        topic_prefix=settings.topic_prefix if args.topic_prefix is None else args.topic_prefix,
        log_level=settings.log_level,
    )


def stop_on_signals() -> Callable[[], bool]:
    stopping: list[int] = []

    def handler(signum: int, _frame: Any) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return lambda: bool(stopping)
