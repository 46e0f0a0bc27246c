"""`pipeline train MODEL`: one training run on Ray Train (pipeline.training.driver)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.errors import PipelineError
from pipeline.training.config import FAMILIES  # torch-free: --help stays fast
from stages.common import (
    Data,
    DryRun,
    Experiment,
    FidWeights,
    GpusPerWorker,
    Verbose,
    cli_errors,
    set_verbose,
)


@cli_errors(
    interrupted="interrupted: the MLflow run, if it had started, is marked KILLED; continue it "
    "from its last checkpoint with `pipeline train MODEL --resume RUN_ID`"
)
def train(
    model: Annotated[str, typer.Argument(help=f"Model family: {', '.join(FAMILIES)}.")],
    data: Data = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Epochs to train.")] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", help="Ray Train workers (DDP ranks).")
    ] = None,
    gpus_per_worker: GpusPerWorker = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="Global batch size, split across workers.")
    ] = None,
    report_every: Annotated[
        int | None,
        typer.Option("--report-every", help="Report, sample and checkpoint every N steps."),
    ] = None,
    fid_every: Annotated[
        int | None,
        typer.Option("--fid-every", help="FID/KID every K epochs (and at the end); 0 = off."),
    ] = None,
    fid_samples: Annotated[
        int | None,
        typer.Option("--fid-samples", help="Generated (and real) images per FID evaluation."),
    ] = None,
    fid_dims: Annotated[
        int | None,
        typer.Option("--fid-dims", help="Inception features: 2048 (standard), 768, 192, 64."),
    ] = None,
    fid_weights: FidWeights = None,
    intra_fid: Annotated[
        bool | None,
        typer.Option(
            "--intra-fid/--no-intra-fid", help="Conditional runs: FID per class at each FID."
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML file of config values.")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Dotted override, e.g. --set optim.lr_g=1e-4 (repeatable)."),
    ] = None,
    experiment: Experiment = None,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume", help="MLflow run id to continue (its step count, optimizers, run)."
        ),
    ] = None,
    dry_run: DryRun = False,
    verbose: Verbose = False,
) -> None:
    """Train a GAN (or GLCIC image completion) with DDP on Ray Train, logged to MLflow.

    Examples:

      pipeline train dcgan --data celeba-64 --epochs 20 --workers 2

      pipeline train acgan --data anime-64 --set lambda_cls=0.5 --set model.heads=decoupled

      pipeline train wgan-gp --data lsun-bedroom-64 --gpus-per-worker 1 --workers 4

      pipeline train dcgan --data celeba-64 --fid-every 5 --fid-samples 10000

      pipeline train glcic --data celeba-64 --epochs 20 --set completion.alpha=4e-4
    """
    set_verbose(verbose)
    from pipeline.config import to_dict
    from pipeline.training.config import load_train_config

    options = {
        "data.dataset": data,
        "epochs": epochs,
        "workers": workers,
        "gpus_per_worker": gpus_per_worker,
        "batch_size": batch_size,
        "report_every": report_every,
        "experiment": experiment,
        "fid.every": fid_every,
        "fid.samples": fid_samples,
        "fid.dims": fid_dims,
        "fid.weights": fid_weights,
        "fid.intra": intra_fid,
    }
    base = None
    if resume is not None:  # the run's own config, with this command's options on top
        from pipeline import tracking

        base = tracking.run_config(tracking.tracking_uri(), resume)
    cfg = load_train_config(model, config, list(set_ or []), options=options, base=base)
    if dry_run:
        import yaml

        typer.echo(yaml.safe_dump(to_dict(cfg), sort_keys=False).rstrip())
        return
    from pipeline.training.driver import train as run

    result = run(cfg, resume=resume)
    m = result.metrics
    shown = (
        ("loss_d", "loss_c", "psnr_hole", "ssim_hole") if model == "glcic" else ("loss_d", "loss_g")
    )
    typer.echo(
        f"run {result.run_name} ({result.run_id}) {result.status}: epoch "
        f"{m.get('epoch')}, {m.get('images_seen')} images, "
        + ", ".join(f"{name} {m.get(name, float('nan')):.3f}" for name in shown)
        + "".join(
            f", {name} {result.metrics[name]:.4g}"
            for base in ("fid", "kid", "precision", "recall", "is", "intra_fid")
            for name in (base, f"{base}_standin")
            if name in result.metrics
        )
        + "".join(
            f", {name} {result.metrics[name]:.3f}"
            for name in ("class_acc", "judge_val_acc")
            if name in result.metrics
        )
        + f"; MLflow {result.tracking_uri}"
    )
    if "fid_standin" in result.metrics:
        typer.echo(
            "note: the *_standin metrics come from the random-weight stand-in Inception "
            "(no weights found): compare them only with each other"
        )


@cli_errors
def sample(
    run: Annotated[str, typer.Argument(help="MLflow run id, or a checkpoint file or folder.")],
    out: Annotated[Path, typer.Option("--out", help="PNG file to write.")] = Path("samples.png"),
    n: Annotated[int, typer.Option("--n", help="Number of samples.")] = 64,
    class_name: Annotated[
        str | None,
        typer.Option(
            "--class",
            help="Conditional models: a class (blue), group=class (eyes=red), or attributes "
            "to switch on (Male,Smiling).",
        ),
    ] = None,
    interpolate: Annotated[
        bool, typer.Option("--interpolate", help="Rows of slerp interpolations between z.")
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of z.")] = 0,
    numbered: Annotated[
        bool, typer.Option("--numbered", help="Caption each tile with its index (for --pick).")
    ] = False,
    arithmetic: Annotated[
        str | None,
        typer.Option(
            "--arithmetic",
            help='Latent arithmetic on picked groups, e.g. "smiling_woman - neutral_woman + '
            'neutral_man" (Radford et al. 2015); the groups from --pick.',
        ),
    ] = None,
    pick: Annotated[
        list[str] | None,
        typer.Option(
            "--pick",
            help="NAME=I,J,K: tiles of the grid the same --n/--seed/--class draw, averaged in z.",
        ),
    ] = None,
    result_class: Annotated[
        str | None,
        typer.Option(
            "--result-class",
            help="Conditional models: the arithmetic result's class (default: kept from the "
            "first picked sample).",
        ),
    ] = None,
) -> None:
    """Draw samples from a run's G_ema into a PNG grid, or do latent arithmetic on them.

    Examples:

      pipeline sample 3f2a... --n 64 --out grid.png --class blonde

      pipeline sample 3f2a... --n 64 --numbered --out grid.png

      pipeline sample 3f2a... --n 64 --pick a=3,17,40 --pick b=5,9,22 --pick c=1,30,51
      --arithmetic "a - b + c" --out sum.png
    """
    if arithmetic is None and (pick or result_class):
        raise PipelineError("--pick and --result-class go with --arithmetic")
    if arithmetic is not None:
        if interpolate or numbered:
            raise PipelineError("--arithmetic writes its own grid: drop --interpolate/--numbered")
        from pipeline.tasks.generation.arithmetic import latent_arithmetic

        path = latent_arithmetic(run, out, arithmetic, list(pick or []), n=n, seed=seed,
                                 class_name=class_name, result_class=result_class)  # fmt: skip
    else:
        from pipeline.tasks.generation.sample import sample as draw

        path = draw(run, out, n=n, class_name=class_name, interpolate=interpolate, seed=seed,
                    numbered=numbered)  # fmt: skip
    typer.echo(f"wrote {path}")
