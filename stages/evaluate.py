"""`pipeline evaluate RUN_ID|CHECKPOINT`: FID and KID of a generator (pipeline.metrics)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stages.common import FidWeights, cli_errors


@cli_errors
def evaluate(
    run: Annotated[str, typer.Argument(help="MLflow run id, or a checkpoint file or folder.")],
    data: Annotated[
        str | None,
        typer.Option("--data", help="Dataset to compare with (default: the run's own)."),
    ] = None,
    samples: Annotated[
        int, typer.Option("--samples", help="Generated images (and real ones, up to the split).")
    ] = 10000,
    split: Annotated[
        str | None, typer.Option("--split", help="Split of the real images (default: training's).")
    ] = None,
    real: Annotated[
        str | None,
        typer.Option(
            "--real",
            help="Compare with a folder of images, or a .npz of published mu/sigma, instead.",
        ),
    ] = None,
    dims: Annotated[
        int, typer.Option("--dims", help="Inception features: 2048 (standard), 768, 192, 64.")
    ] = 2048,
    batch: Annotated[int, typer.Option("--batch", help="Images per Inception forward.")] = 50,
    fid_weights: FidWeights = None,
    kid_subsets: Annotated[int, typer.Option("--kid-subsets", help="KID subsets.")] = 100,
    kid_subset_size: Annotated[
        int, typer.Option("--kid-subset-size", help="Images per KID subset.")
    ] = 1000,
    device: Annotated[
        str | None, typer.Option("--device", help="cpu | cuda (default: cuda when present).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of z and of the real subset.")] = 0,
    intra_fid: Annotated[
        bool,
        typer.Option("--intra-fid", help="Conditional runs: FID per class too (intra-FID)."),
    ] = False,
    inception_score: Annotated[
        bool,
        typer.Option(
            "--inception-score", help="IS below 2048-d too (costs the rest of the network)."
        ),
    ] = False,
    masks: Annotated[
        Path | None,
        typer.Option("--masks", help="GLCIC runs: a folder of binary masks for the holes."),
    ] = None,
) -> None:
    """FID, KID, precision / recall, density / coverage and IS of a run's generator (for a
    conditional one also the class judge's accuracy, and with --intra-fid FID per class),
    logged into its MLflow run; for a GLCIC run, hole and image L1 / PSNR / SSIM and the
    FID of its completions.

    Examples:

      pipeline evaluate 3f2a... --samples 10000

      pipeline evaluate runs/.../checkpoint.pt --data celeba-64 --split test

      pipeline evaluate 3f2a... --real ~/fid_stats_celeba.npz

      pipeline evaluate 3f2a... --dims 64 --samples 2000 --intra-fid
    """
    from pipeline.metrics.config import FidConfig
    from pipeline.training.evaluate import evaluate as run_evaluation

    fid = FidConfig(
        samples=samples,
        dims=dims,
        split=split or "",
        batch=batch,
        weights=fid_weights or "",
        kid_subsets=kid_subsets,
        kid_subset_size=kid_subset_size,
        seed=seed,
        intra=intra_fid,
        inception_score=inception_score,
    )
    result = run_evaluation(
        run,
        data=data,
        fid=fid,
        real=real,
        device=device,
        say=lambda line: typer.echo(line, err=True),
        masks=str(masks) if masks else None,
    )
    line = "  ".join(f"{name} {value:.6g}" for name, value in result.scores.items())
    typer.echo(line)
    p = result.protocol
    typer.echo(
        f"protocol: {p['backbone']} weights sha256 {p['weights_sha256'][:12]}, {p['dims']}-d, "
        f"{p['resize']}; {p['n_fake']} generated vs {p['real']} ({p['reference']})"
    )
    if not p["comparable_with_published_fid"]:
        typer.echo(
            "note: not comparable with published FID ("
            + ("stand-in backbone" if p["backbone"] == "standin" else f"{p['dims']}-d features")
            + ")"
        )
    if result.run_id:
        typer.echo(f"logged into MLflow run {result.run_id} at step {result.step}")
