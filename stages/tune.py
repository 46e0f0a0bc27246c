"""`pipeline tune MODEL`: a Ray Tune sweep over tune_spaces/MODEL.yaml (pipeline.tuning)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.training.config import FAMILIES  # torch-free: --help stays fast
from stages.common import Data, DryRun, Experiment, GpusPerWorker, Verbose, cli_errors, set_verbose


@cli_errors(
    interrupted="interrupted: the sweep's MLflow run is marked KILLED; continue it with "
    "`pipeline tune --resume --name SWEEP`"
)
def tune(
    model: Annotated[
        str | None,
        typer.Argument(help=f"Model family: {', '.join(FAMILIES)} (not needed with --resume)."),
    ] = None,
    data: Data = None,
    space: Annotated[
        Path | None,
        typer.Option("--space", help="Space file. Default: tune_spaces/MODEL.yaml."),
    ] = None,
    samples: Annotated[
        int | None, typer.Option("--samples", help="Trials (x the grid, if the space has one).")
    ] = None,
    max_epochs: Annotated[
        int | None, typer.Option("--max-epochs", help="Epochs of a trial that is not stopped.")
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option("--scheduler", help="asha (stop weak trials) | pbt (mutate rates) | fifo."),
    ] = None,
    search: Annotated[
        str | None,
        typer.Option("--search", help="random | grid | optuna (pip install 'pipeline\\[optuna]')."),
    ] = None,
    workers_per_trial: Annotated[
        int | None, typer.Option("--workers-per-trial", help="Ray Train workers (DDP ranks).")
    ] = None,
    gpus_per_worker: GpusPerWorker = None,
    concurrent: Annotated[
        int, typer.Option("--concurrent", help="Trials at once; 0 = as many as the cluster holds.")
    ] = 0,
    metric: Annotated[
        str | None,
        typer.Option(
            "--metric",
            help="Metric to rank trials by, or two for a Pareto front: fid,class_acc "
            "(default: the space's).",
        ),
    ] = None,
    mode: Annotated[
        str | None,
        typer.Option("--mode", help="min or max, one per metric: min,max (default: the space's)."),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option("--name", help="Sweep name (its MLflow parent run, its folder)."),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the interrupted sweep --name.")
    ] = False,
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML file of config values for every trial.")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Dotted override for every trial, e.g. --set fid.dims=64."),
    ] = None,
    experiment: Experiment = None,
    export_best: Annotated[
        Path | None,
        typer.Option("--export-best", help="Write the best trial's generator.pt into this folder."),
    ] = None,
    register: Annotated[
        str | None,
        typer.Option("--register", help="Register the best generator in the MLflow registry."),
    ] = None,
    dry_run: DryRun = False,
    verbose: Verbose = False,
) -> None:
    """Sweep a GAN's hyper-parameters with Ray Tune; each trial is a DDP run on Ray Train,
    one nested MLflow run per trial under the sweep's parent run.

    Examples:

      pipeline tune acgan --data anime-64

      pipeline tune acgan --data anime-64 --samples 8 --max-epochs 10 --scheduler pbt

      pipeline tune dcgan --data celeba-64 --search grid --space my-space.yaml

      pipeline tune --resume --name acgan-anime-64-20260101-120000
    """
    set_verbose(verbose)
    from pipeline.config import ConfigError
    from pipeline.tuning.plan import SweepConfig

    if not resume and model is None:
        raise ConfigError(f"missing MODEL: one of {', '.join(FAMILIES)} (or --resume --name SWEEP)")
    sweep = SweepConfig(
        model=model or "",
        dataset=data or "",
        space=str(space) if space else None,
        samples=samples,
        max_epochs=max_epochs,
        scheduler=scheduler,
        search=search,
        workers_per_trial=workers_per_trial,
        gpus_per_worker=gpus_per_worker,
        concurrent=concurrent,
        metric=metric,
        mode=mode,
        name=name,
        overrides=tuple(set_ or ()),
        config_file=str(config) if config else None,
        experiment=experiment,
        export_best=str(export_best) if export_best else None,
        register=register,
    )
    if dry_run:
        import yaml

        from pipeline.tuning.plan import plan_sweep

        plan, _ = plan_sweep(sweep, say=_say)
        typer.echo(yaml.safe_dump(plan.to_dict(), sort_keys=False).rstrip())
        return
    from pipeline.tuning.sweep import tune as run

    result = run(sweep, resume=resume, say=_say)
    _print_summary(result)


def _say(line: str) -> None:
    typer.echo(line)


def _print_summary(result) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:  # a log file: room for every column
        console = Console(width=max(console.width, 160))
    table = Table(title=f"sweep {result.name}: best trials by {result.metric} ({result.mode})")
    keys = sorted({key for row in result.trials for key in row.params})
    # A second objective: its value at the trial's point (the best epoch on the first).
    second = [f"{result.objectives[1][0]} there", "front"] if len(result.objectives) > 1 else []
    columns = ("#", "trial", "status", "epochs", result.metric, *second, *keys, "MLflow run")
    for column in columns:
        header = column.rsplit(".", 1)[-1]  # optim.lr_g -> lr_g
        table.add_column(header, justify="right" if column in ("#", "epochs") else "left")
    for rank, row in enumerate(result.trials[:10], 1):
        point = [f"{row.point[2]:.4g}" if row.point else "-", "*" if row.on_front else ""]
        table.add_row(
            str(rank) if row.best is not None else "-",
            row.trial_id,
            row.status,
            str(row.epochs),
            f"{row.best:.4g}" if row.best is not None else "-",
            *(point if second else []),
            *(_fmt(row.params.get(key)) for key in keys),
            row.run_id or "-",
        )
    console.print(table)
    if result.front:
        (first, mode1), (other, mode2) = result.objectives
        console.print(
            f"Pareto front of {first} ({mode1}) and {other} ({mode2}): "
            f"{', '.join(row.trial_id for row in result.front)} (pareto.csv, plots/pareto.png; "
            "their runs are tagged pipeline.pareto)"
        )
    best = result.best
    console.print(
        f"best: trial {best.trial_id} ({result.metric} {best.best:.4g} at epoch "
        f"{best.best_epoch}), MLflow run {best.run_id}; parent run {result.parent_run_id} in "
        f"{result.tracking_uri}"
    )
    console.print(f"table and plots: {result.summary} (and on the parent run)")
    if result.exported:
        console.print(f"best generator: {result.exported}")
    if result.registered:
        console.print(f"registered: {result.registered}")
    console.print("next: `pipeline ui`, then open the sweep's experiment")


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return "-" if value is None else str(value)
