"""`pipeline datasets list|show`: what is in the data dir, and a look at a dataset's samples."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stages.common import cli_errors, data_dir_option

app = typer.Typer(help="List and inspect ingested datasets.", no_args_is_help=True)


@app.command("list")
@cli_errors
def list_cmd(
    data: Annotated[Path | None, data_dir_option("Folder to scan.")] = None,
) -> None:
    """The datasets under the data dir, as a table."""
    from rich.console import Console
    from rich.table import Table

    from pipeline.data.catalog import scan
    from pipeline.settings import data_dir

    root = Path(data) if data else data_dir()
    entries = scan(root)
    console = Console()
    if not entries:
        console.print(
            f"no datasets under {root} (make one with `pipeline ingest ...` or "
            "`pipeline quickstart`)"
        )
        return
    table = Table(title=f"datasets in {root}")
    for column in ("name", "source", "image", "splits", "labels", "MiB", "status"):
        table.add_column(column)
    for entry in entries:
        table.add_row(
            entry.name,
            entry.source,
            entry.image,
            entry.splits,
            entry.labels,
            entry.mib,
            entry.status,
        )
    console.print(table)


@app.command("show", epilog="Example:\n\n  pipeline datasets show anime-64 --grid anime.png")
@cli_errors
def show(
    dataset: Annotated[str, typer.Argument(help="Dataset name under the data dir, or its path.")],
    grid: Annotated[
        Path | None,
        typer.Option("--grid", help="Write a PNG grid of random samples with their labels."),
    ] = None,
    n: Annotated[int, typer.Option("--n", help="Samples in the grid.")] = 64,
    split: Annotated[str, typer.Option("--split", help="Split to sample from.")] = "train",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random choice.")] = 0,
) -> None:
    """A dataset's manifest in short; with --grid, a picture of its samples."""
    from rich.console import Console

    from pipeline.data.catalog import describe, sample_grid
    from pipeline.settings import resolve_dataset

    root = resolve_dataset(dataset)
    console = Console()
    for line in describe(root):
        console.print(line, highlight=False)
    if grid is not None:
        written = sample_grid(root, grid, n=n, split=split, seed=seed)
        console.print(f"wrote {written}")


@app.command("verify", epilog="Example:\n\n  pipeline datasets verify celeba-64")
@cli_errors
def verify(
    dataset: Annotated[str, typer.Argument(help="Dataset name under the data dir, or its path.")],
) -> None:
    """Check every shard in full: readable, the manifest's rows and columns, its sha256.
    Exits 1 when one is bad (re-run the ingest to repair it)."""
    from pipeline.console import say
    from pipeline.data.shard_check import verify as verify_shards
    from pipeline.data.staging import local_copy
    from pipeline.errors import PipelineError
    from pipeline.settings import resolve_dataset

    root = local_copy(resolve_dataset(dataset))
    bad = verify_shards(root, say)
    if bad:
        raise PipelineError(f"{bad} bad shard(s) in {root}; re-run its ingest to repair them")
    say(f"{root}: every shard matches its manifest")
