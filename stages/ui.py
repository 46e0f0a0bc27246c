"""`pipeline ui`: the MLflow UI over the tracking store the other commands use (pipeline.ui)."""

from __future__ import annotations

from typing import Annotated

import typer

from stages.common import cli_errors


@cli_errors
def ui(
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 5000,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (loopback: only this machine).")
    ] = "127.0.0.1",
) -> None:
    """Start the MLflow UI on 127.0.0.1 over the same store as `pipeline train` and
    `pipeline tune` ($MLFLOW_TRACKING_URI, else ./mlflow.db), and print its URL.

    Example: pipeline ui --port 5000   # then open http://127.0.0.1:5000
    """
    from pipeline.ui import serve

    status = serve(host=host, port=port, say=lambda line: typer.echo(line))
    if status:
        raise typer.Exit(status)
