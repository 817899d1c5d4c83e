"""The ``hub`` command line: a thin shell over ``hub.bootstrap``.

Exit codes: 0 ok, 1 error, 2 usage, 3 integrity failure.
"""

from __future__ import annotations

import sys

import typer

from hub.domain.errors import HubError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="The reducing-reoffending data-sharing hub.")
broker_app = typer.Typer(no_args_is_help=True, help="The local Kafka broker (KRaft, single node).")
registry_app = typer.Typer(no_args_is_help=True, help="The Confluent-compatible schema registry.")
schemas_app = typer.Typer(no_args_is_help=True, help="The Avro event catalogue in schemas/.")
app.add_typer(broker_app, name="broker")
app.add_typer(registry_app, name="registry")
app.add_typer(schemas_app, name="schemas")


def main() -> None:
    try:
        app()
    except HubError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
