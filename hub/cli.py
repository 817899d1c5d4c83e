"""The ``hub`` command line: a thin shell over ``hub.bootstrap``.

Exit codes: 0 ok, 1 error, 2 usage, 3 integrity failure.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pydantic
import typer

from hub import bootstrap, logsetup
from hub.domain.errors import HubError, InfraError

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="The reducing-reoffending data-sharing hub."
)
broker_app = typer.Typer(no_args_is_help=True, help="The local Kafka broker (KRaft, single node).")
registry_app = typer.Typer(no_args_is_help=True, help="The Confluent-compatible schema registry.")
schemas_app = typer.Typer(no_args_is_help=True, help="The Avro event catalogue in schemas/.")
app.add_typer(broker_app, name="broker")
app.add_typer(registry_app, name="registry")
app.add_typer(schemas_app, name="schemas")


# -- broker ------------------------------------------------------------------------------------


def _progress_printer():  # type: ignore[no-untyped-def]
    from rich.console import Console

    console = Console(stderr=True)

    def show(count: int, artifact: str) -> None:
        console.print(f"[dim]downloaded {count:3d}[/dim] {artifact}", highlight=False)

    return show


@broker_app.command("fetch")
def broker_fetch() -> None:
    """Resolve Apache Kafka's jars through Maven into the cache (once)."""
    from hub.adapters import broker

    s = bootstrap.settings()
    if broker.jars_ready(s):
        typer.echo(f"Kafka {s.broker.kafka_version} jars already cached in {broker.jars_dir(s)}")
        return
    typer.echo(f"fetching Apache Kafka {s.broker.kafka_version} from Maven Central...", err=True)
    path = broker.fetch_jars(s, _progress_printer())
    typer.echo(f"Kafka {s.broker.kafka_version} jars cached in {path}")


@broker_app.command("start")
def broker_start() -> None:
    """Start the local broker (idempotent); returns once it answers a metadata request."""
    from hub.adapters import broker

    s = bootstrap.settings()
    if s.kafka_bootstrap:
        if not broker.answers_metadata(s.kafka_bootstrap, timeout=10):
            raise InfraError(f"HUB_KAFKA_BOOTSTRAP={s.kafka_bootstrap} does not answer")
        typer.echo(f"using the existing cluster at {s.kafka_bootstrap} (HUB_KAFKA_BOOTSTRAP)")
        return
    status = broker.LocalBroker(s).start(_progress_printer())
    typer.echo(f"broker {status.describe()} [plaintext: development mode]")


@broker_app.command("stop")
def broker_stop() -> None:
    """Stop the local broker cleanly."""
    from hub.adapters import broker

    stopped = broker.LocalBroker(bootstrap.settings()).stop()
    typer.echo("broker stopped" if stopped else "broker was not running")


@broker_app.command("status")
def broker_status() -> None:
    """Say whether the local broker runs and answers; exit 1 when it does not."""
    from hub.adapters import broker

    status = broker.LocalBroker(bootstrap.settings()).status()
    typer.echo(f"broker {status.describe()}")
    if not status.answering:
        raise typer.Exit(1)


@broker_app.command("logs")
def broker_logs(lines: int = typer.Option(50, "--lines", "-n", help="how many lines")) -> None:
    """Print the end of the local broker's log."""
    from hub.adapters import broker

    for line in broker.LocalBroker(bootstrap.settings()).logs(lines):
        typer.echo(line)


# -- registry ----------------------------------------------------------------------------------


@registry_app.command("serve")
def registry_serve(
    host: str = typer.Option(None, "--host", help="address to listen on [default: 127.0.0.1]"),
    port: int = typer.Option(None, "--port", help="port to listen on [default: 18081]"),
) -> None:
    """Serve the Confluent-compatible schema registry from the hub database."""
    from hub.adapters.registry_server import serve

    s = bootstrap.settings()
    s.home.mkdir(parents=True, exist_ok=True)
    serve(s.hub_database_url, host or s.registry.host, port or s.registry.port)


# -- schemas -----------------------------------------------------------------------------------


def _catalogue(root: Path | None):  # type: ignore[no-untyped-def]
    from hub.serde.catalogue import Catalogue

    return Catalogue.load(root)


@schemas_app.command("list")
def schemas_list(root: Path = typer.Option(None, "--schemas", help="catalogue directory")) -> None:
    """List the event types of the catalogue."""
    from rich.console import Console
    from rich.table import Table

    catalogue = _catalogue(root)
    table = Table("event type", "Avro name (subject)", "required", "sensitive")
    for name in catalogue.names():
        table.add_row(
            catalogue.event_type_for(name), name,
            ", ".join(catalogue.required_fields(name)), ", ".join(catalogue.sensitive_fields(name)),
        )  # fmt: skip
    Console().print(table)


@schemas_app.command("register")
def schemas_register(
    root: Path = typer.Option(None, "--schemas", help="catalogue directory"),
) -> None:
    """Register every schema of the catalogue with the schema registry (record name strategy)."""
    from hub import schematool
    from hub.adapters.schema_registry import HttpSchemaRegistry

    s = bootstrap.settings()
    ids = schematool.register(_catalogue(root), HttpSchemaRegistry(s.schema_registry_url))
    typer.echo(f"registered {len(ids)} schemas with {s.schema_registry_url}")


@schemas_app.command("check")
def schemas_check(
    root: Path = typer.Option(None, "--schemas", help="catalogue directory"),
    against: Path = typer.Option(
        None, "--against", help="compare with this copy of the catalogue instead of the registry"
    ),
) -> None:
    """Exit 1 on an amplification risk or a change incompatible with the registered version."""
    from hub import schematool
    from hub.adapters.schema_registry import HttpSchemaRegistry

    s = bootstrap.settings()
    registry = None if against else HttpSchemaRegistry(s.schema_registry_url)
    report = schematool.check(_catalogue(root), registry=registry, against=against)
    for problem in report.problems:
        typer.secho(problem, fg=typer.colors.RED, err=True)
    if not report.ok:
        raise typer.Exit(1)
    where = against or s.schema_registry_url
    typer.echo(f"{report.checked} schemas checked against {where}: compatible")


def main() -> None:
    try:
        logsetup.configure(bootstrap.settings().log_level)
        app()
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"HUB_{'__'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()
        )
        typer.secho(f"error: configuration: {problems}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except HubError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
