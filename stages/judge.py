"""`pipeline judge train DATASET`: an independent class judge of a labelled dataset
(pipeline.judge), to grade whether a conditional generator's images show the intended class."""

from __future__ import annotations

from typing import Annotated

import typer

from stages.common import cli_errors

app = typer.Typer(
    help="Class judges: classifiers of a dataset's real labels that grade a conditional G.",
    no_args_is_help=True,
)


@app.command(
    "train",
    epilog="Examples:\n\n  pipeline judge train anime-64                  # hair and eyes\n\n"
    "  pipeline judge train celeba-64 --attr Male --attr Smiling",
)
@cli_errors
def train(
    dataset: Annotated[
        str, typer.Argument(help="Dataset name under the data dir, a path, or a URI (s3://...).")
    ],
    group: Annotated[
        list[str] | None,
        typer.Option("--group", help="Label group to judge (repeat; default: every group)."),
    ] = None,
    attr: Annotated[
        list[str] | None,
        typer.Option("--attr", help="Binary attribute to judge (repeat), e.g. CelebA's Male."),
    ] = None,
    epochs: Annotated[int, typer.Option("--epochs", help="Training epochs.")] = 30,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the weights and batches.")] = 0,
    device: Annotated[
        str | None, typer.Option("--device", help="cpu | cuda (default: cuda when present).")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Train again even when this judge is cached.")
    ] = False,
) -> None:
    """Train a class judge on a dataset's labels and grade it on held-out images.

    Held out: the val split (MNIST's test split). The judge is cached beside the dataset
    (`judges/`), keyed by the dataset, the judged labels and the recipe; conditional training
    runs find it there."""
    from pipeline.judge import train_judge

    info = train_judge(
        dataset,
        groups=tuple(group or ()),
        attrs=tuple(attr or ()),
        epochs=epochs,
        seed=seed,
        device=device,
        say=typer.echo,
        overwrite=overwrite,
    )
    if info.reused:
        typer.echo(
            f"this judge is already cached at {info.weights} (trained in {info.seconds:.0f} s "
            "with the same data, labels and recipe): reusing it; --overwrite trains it again"
        )
    typer.echo(
        f"{info.held_out} accuracy on {info.val_rows} images ({info.train_rows} trained on):"
    )
    for name, accuracy in info.accuracy.items():
        typer.echo(
            f"  {name:<16} {accuracy:.3f}   chance {info.uniform[name]:.3f}, "
            f"always the most frequent class {info.majority[name]:.3f}"
        )
    if len(info.accuracy) > 1:
        typer.echo(f"  {'mean':<16} {info.val_acc:.3f}")
    if not info.reused:
        typer.echo(f"judge cached at {info.weights} ({info.seconds:.0f} s)")
