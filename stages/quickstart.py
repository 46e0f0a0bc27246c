"""`pipeline quickstart`: a real, small end-to-end run on data the program draws itself."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stages.common import RichProgress, Workers, cli_errors, print_summary


@cli_errors
def quickstart(
    data: Annotated[
        Path | None,
        typer.Option(
            "--data", help="Where datasets go. Default: the data dir ($PIPELINE_DATA or ./data)."
        ),
    ] = None,
    images: Annotated[int, typer.Option("--images", help="Images drawn per demo source.")] = 400,
    size: Annotated[int, typer.Option("--size", help="Image side in pixels.")] = 64,
    workers: Workers = 0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the drawn demo data.")] = 0,
    train: Annotated[
        bool, typer.Option("--train/--no-train", help="Train a small DCGAN on the demo faces.")
    ] = True,
    epochs: Annotated[int, typer.Option("--epochs", help="Epochs of the demo training.")] = 2,
) -> None:
    """Draw demo CelebA- and LSUN-format sources, ingest them, and show what was made."""
    from rich.console import Console

    from pipeline.config import from_dict
    from pipeline.quickstart import QuickstartConfig
    from pipeline.quickstart import quickstart as run

    config = from_dict(
        QuickstartConfig,
        {
            "data": str(data) if data else None,
            "images": images,
            "size": size,
            "workers": workers,
            "seed": seed,
            "train": train,
            "epochs": epochs,
        },
    )
    result = run(config, progress_factory=RichProgress)
    console = Console()
    for name, path in result.sources.items():
        console.print(f"demo source {name}: {path}")
    for dataset in result.datasets:
        print_summary(dataset)
    for grid in result.grids:
        console.print(f"sample grid: {grid}")
    if result.training is not None:
        run = result.training
        console.print(
            f"trained {run.run_name}: {run.status}, epoch {run.metrics.get('epoch')}, "
            f"loss_d {run.metrics.get('loss_d', float('nan')):.3f}, "
            f"loss_g {run.metrics.get('loss_g', float('nan')):.3f}; MLflow run {run.run_id} in "
            f"{run.tracking_uri}"
        )
        console.print(f"next: `mlflow ui` here, or `pipeline sample {run.run_id} --out faces.png`")
    else:
        console.print(
            "next: `pipeline datasets list`, `pipeline datasets show demo-celeba-64 --grid "
            "faces.png`"
        )
