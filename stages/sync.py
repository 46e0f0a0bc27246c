"""`pipeline sync`: deliver to MLflow what a run's journal still holds (pipeline.tracking)."""

from __future__ import annotations

from typing import Annotated

import typer

from stages.common import cli_errors


@cli_errors
def sync(
    target: Annotated[
        str,
        typer.Argument(
            metavar="PATH|RUN",
            help="A journal folder (as a command printed it), or a run's id or name.",
        ),
    ],
) -> None:
    """Deliver what a run logged while MLflow was away: its metrics, params, tags, artifacts
    and, last, its status, from the journal on this node's disk. Run it twice: nothing
    doubles. `pipeline doctor` lists the journals not delivered yet.

    Example: pipeline sync runs/journals/4de69053fd9c45baa81c077382ee61dc
    """
    from pipeline.tracking.delivery import find_run_folder
    from pipeline.tracking.delivery import sync as deliver

    folder = find_run_folder(target)
    run, sent = deliver(folder)
    where = f"run {run.get('name') or run['run_id']} ({run['run_id']}) at {run['uri']}"
    if sent:
        typer.echo(f"delivered {sent} event(s) of {where}; the record is whole")
    else:
        typer.echo(f"nothing to deliver: {where} already holds everything in {folder}")
