"""`pipeline quickstart`: a real, small end-to-end run on data the program draws itself."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stages.common import (
    RichProgress,
    Verbose,
    Workers,
    cli_errors,
    data_dir_option,
    print_summary,
    set_verbose,
)


@cli_errors
def quickstart(
    data: Annotated[Path | None, data_dir_option("Where datasets go.")] = None,
    images: Annotated[int, typer.Option("--images", help="Images drawn per demo source.")] = 400,
    size: Annotated[int, typer.Option("--size", help="Image side in pixels.")] = 64,
    workers: Workers = 0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the drawn demo data.")] = 0,
    train: Annotated[
        bool,
        typer.Option(
            "--train/--no-train",
            help="Train a small DCGAN on the demo faces (--no-train: ingest only, no sweep).",
        ),
    ] = True,
    epochs: Annotated[
        int, typer.Option("--epochs", help="Epochs of the demo training and of each trial.")
    ] = 2,
    tune: Annotated[
        bool, typer.Option("--tune/--no-tune", help="Then sweep a small ACGAN with Ray Tune.")
    ] = True,
    trials: Annotated[int, typer.Option("--trials", help="Trials of the demo sweep.")] = 2,
    verbose: Verbose = False,
) -> None:
    """Draw demo CelebA- and LSUN-format sources, ingest them, and show what was made."""
    set_verbose(verbose)
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
            "tune": tune,
            "trials": trials,
        },
    )
    result = run(config, progress_factory=RichProgress, say=typer.echo)
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
        if result.sweep is None:
            console.print(
                f"next: `pipeline ui` here, or `pipeline sample {run.run_id} --out faces.png`"
            )
    if result.sweep is not None:
        sweep, best = result.sweep, result.sweep.best
        console.print(
            f"swept {sweep.name}: {len(sweep.trials)} ACGAN trials, best {best.trial_id} with "
            f"{sweep.metric} {best.best:.4g} (MLflow run {best.run_id}; parent "
            f"{sweep.parent_run_id}); table and plots in {sweep.summary}"
        )
        console.print(
            "next: `pipeline ui` here and open the experiment 'quickstart' (the sweep's trials "
            f"are nested under {sweep.name}), or `pipeline sample {best.run_id} --class Male "
            "--out faces.png`"
        )
    if result.training is None:
        console.print(
            "next: `pipeline datasets list`, `pipeline datasets show demo-celeba-64 --grid "
            "faces.png`"
        )
