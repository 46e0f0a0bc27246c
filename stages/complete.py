"""`pipeline complete RUN_ID|CHECKPOINT`: fill holes in images with a GLCIC run's network
(pipeline.tasks.completion.complete)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stages.common import cli_errors


@cli_errors
def complete(
    run: Annotated[str, typer.Argument(help="MLflow run id of a glcic run, or its checkpoint.")],
    images: Annotated[
        Path, typer.Option("--images", help="An image, or a folder of images, to complete.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder for the completed PNGs.")],
    box: Annotated[
        str | None,
        typer.Option("--box", help="The hole: X,Y,W,H in pixels of the image C completes."),
    ] = None,
    masks: Annotated[
        Path | None,
        typer.Option(
            "--masks",
            help="Folder of binary masks (white = hole) of the network's size: the one named "
            "as the image, else in turn.",
        ),
    ] = None,
    random_boxes: Annotated[
        int | None,
        typer.Option("--random-boxes", help="N completions per image, random holes (NAME-k.png)."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of --random-boxes.")] = 0,
    blend: Annotated[
        str | None,
        typer.Option("--blend", help="Post-processing: poisson (OpenCV's seamlessClone)."),
    ] = None,
) -> None:
    """Complete images: C fills the holes, every pixel outside them is the input's.

    Examples:

      pipeline complete 3f2a... --images face.jpg --out done/ --box 16,20,28,24

      pipeline complete 3f2a... --images photos/ --out done/ --masks irregular-64/

      pipeline complete runs/.../checkpoint.pt --images photos/ --out done/ --random-boxes 4
    """
    from pipeline.tasks.completion.complete import complete as run_completion

    written = run_completion(
        run,
        images,
        out,
        box=box,
        masks=masks,
        random_boxes=random_boxes,
        seed=seed,
        blend=blend,
        say=lambda line: typer.echo(line, err=True),
    )
    typer.echo(f"wrote {len(written)} completed image(s) to {out}")
