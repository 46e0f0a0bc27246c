"""`pipeline doctor`: what this machine and cluster offer, and what is wrong (pipeline.doctor)."""

from __future__ import annotations

from typing import Annotated

import typer

from stages.common import cli_errors

MARKS = {"ok": "[green]ok[/green]", "warn": "[yellow]warn[/yellow]", "fail": "[red]FAIL[/red]"}


@cli_errors
def doctor(
    no_ray: Annotated[
        bool, typer.Option("--no-ray", help="Do not reach the Ray cluster at RAY_ADDRESS.")
    ] = False,
) -> None:
    """Check torch and CUDA, the Ray cluster, the data / runs / cache locations (readable,
    writable, seen from every node), the MLflow store and the FID weights; exit 1 when a
    check fails.

    Example: `RAY_ADDRESS=head:6379 PIPELINE_DATA=s3://bucket/data pipeline doctor`
    """
    from rich.console import Console
    from rich.table import Table

    from pipeline.doctor import doctor as run_checks

    findings = run_checks(connect_ray=not no_ray)
    table = Table(title="pipeline doctor", show_lines=False)
    for column in ("check", "", "what was found"):
        table.add_column(column, overflow="fold")
    for finding in findings:
        table.add_row(finding.name, MARKS[finding.status], finding.detail)
    Console().print(table)
    failed = [f.name for f in findings if f.status == "fail"]
    if failed:
        typer.echo(f"error: {len(failed)} check(s) failed: {', '.join(failed)}", err=True)
        raise typer.Exit(1)
