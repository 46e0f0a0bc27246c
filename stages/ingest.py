"""`pipeline ingest ...`: turn a released dataset into Arrow shards (pipeline.data.ingest)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stages.common import IngestArgs, cli_errors, ingest_command, run_ingest

# A killed ingest keeps its complete shards, and a rerun resumes from them (pipeline.data.ingest).
SHARDS_KEPT = "interrupted: finished shards are kept; rerun the same command to resume"

app = typer.Typer(
    help="Ingest a dataset into Arrow shards under the data dir ($PIPELINE_DATA, default ./data).",
    no_args_is_help=True,
)


# -- LSUN ----------------------------------------------------------------------------------


@app.command(
    "lsun",
    epilog="""Examples:\n
  pipeline ingest lsun bedroom --lmdb ~/lsun/bedroom_train_lmdb --size 64\n
  pipeline ingest lsun church_outdoor --download --limit 100000""",
)
@cli_errors(interrupted=SHARDS_KEPT)
@ingest_command()
def lsun(
    category: Annotated[str, typer.Argument(help="LSUN scene category, e.g. bedroom.")],
    lmdb: Annotated[
        Path | None,
        typer.Option(
            "--lmdb",
            help="The released LMDB folder (holding data.mdb). "
            "Default: <data dir>/lsun/<category>_train_lmdb.",
        ),
    ] = None,
    val_lmdb: Annotated[
        Path | None,
        typer.Option("--val-lmdb", help="The *_val_lmdb folder, ingested as the val split."),
    ] = None,
    download: Annotated[
        bool,
        typer.Option(
            "--download", help="Fetch the official zip into <data dir>/lsun first (resumable)."
        ),
    ] = False,
    url: Annotated[
        str | None, typer.Option("--url", help="Download URL template with {category} and {split}.")
    ] = None,
    *,
    shared: IngestArgs,
) -> None:
    """Ingest an LSUN scene category from its released LMDB."""
    ingest_lsun(category, lmdb, val_lmdb, download, url, shared)


def ingest_lsun(
    category: str,
    lmdb: Path | None,
    val_lmdb: Path | None,
    download: bool,
    url: str | None,
    shared: IngestArgs,
) -> None:
    """`pipeline ingest lsun` and its alias `lsun-bedroom`."""
    from pipeline.data.sources import lsun as lsun_source

    options = shared.options()
    if category not in lsun_source.CATEGORIES:
        from pipeline.config import ConfigError

        raise ConfigError(
            f"unknown LSUN category {category!r}; choose one of: "
            f"{', '.join(lsun_source.CATEGORIES)}"
        )
    train, val = lsun_source.locate(
        category, lmdb, val_lmdb, download=download and not shared.dry_run, url=url
    )
    config = {
        "kind": "lsun",
        "category": category,
        "lmdb": str(train),
        "val_lmdb": str(val) if val else None,
    }
    run_ingest(
        lambda: lsun_source.LsunSource(category, train, val, size=options.size),
        options,
        shared.dry_run,
        config,
    )


@app.command(
    "lsun-bedroom",
    epilog="Example:\n\n  pipeline ingest lsun-bedroom --lmdb ~/lsun/bedroom_train_lmdb --size 64",
)
@cli_errors(interrupted=SHARDS_KEPT)
@ingest_command()
def lsun_bedroom(
    lmdb: Annotated[
        Path | None, typer.Option("--lmdb", help="The bedroom_train_lmdb folder.")
    ] = None,
    val_lmdb: Annotated[Path | None, typer.Option("--val-lmdb", help="bedroom_val_lmdb.")] = None,
    download: Annotated[
        bool, typer.Option("--download", help="Fetch the official zip first.")
    ] = False,
    url: Annotated[str | None, typer.Option("--url", help="Download URL template.")] = None,
    *,
    shared: IngestArgs,
) -> None:
    """Ingest LSUN bedroom (same as `pipeline ingest lsun bedroom`)."""
    ingest_lsun("bedroom", lmdb, val_lmdb, download, url, shared)


# -- CelebA --------------------------------------------------------------------------------


@app.command(
    "celeba",
    epilog="""Examples:\n
  pipeline ingest celeba --root ~/celeba --size 64          # DCGAN: 108x108 centre crop\n
  pipeline ingest celeba --root ~/celeba --crop square --size 128\n
  pipeline ingest celeba --root ~/celeba --crop bbox        # in the wild: Img/img_celeba/\n\n"""
    "ROOT holds img_align_celeba/ or img_align_celeba.zip as downloaded (read in place, "
    "flat or under Img/) and the annotation files, flat or in Anno/ and Eval/ as "
    "released (https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html).",
)
@cli_errors(interrupted=SHARDS_KEPT)
@ingest_command()
def celeba(
    root: Annotated[
        Path | None,
        typer.Option(
            "--root",
            help="The CelebA folder (images plus annotation files). Default: <data dir>/celeba.",
        ),
    ] = None,
    crop: Annotated[
        str,
        typer.Option(
            "--crop",
            help="dcgan: the 108x108 centre of the aligned image (DCGAN's CelebA); "
            "square: its centred 178x178 square; bbox: the in-the-wild img_celeba/ photos cut by "
            "list_bbox_celeba.txt.",
        ),
    ] = "dcgan",
    bbox_margin: Annotated[
        float | None,
        typer.Option(
            "--bbox-margin",
            help="With --crop bbox: the square's side is max(box width, height) x "
            "margin. Default 1.0: the released boxes already hold the whole head.",
        ),
    ] = None,
    no_attrs: Annotated[
        bool,
        typer.Option(
            "--no-attrs", help="Leave out the attrs column (list_attr_celeba.txt not needed)."
        ),
    ] = False,
    no_identity: Annotated[
        bool,
        typer.Option(
            "--no-identity", help="Leave out the identity column (identity_CelebA.txt not needed)."
        ),
    ] = False,
    images: Annotated[
        str,
        typer.Option(
            "--images",
            help="jpg: img_align_celeba/ (or .zip); png: the lossless img_align_celeba_png/; "
            "auto: whichever is present, JPEG when both.",
        ),
    ] = "auto",
    *,
    shared: IngestArgs,
) -> None:
    """Ingest CelebA: the official train/val/test splits, 40 attributes and identities."""
    from pipeline.data.sources import celeba as celeba_source
    from pipeline.data.sources.celeba_crops import CROPS, check_bbox_margin
    from pipeline.data.sources.celeba_files import locate

    options = shared.options()
    margin = check_bbox_margin(crop, bbox_margin)
    files = locate(root, crop, attrs=not no_attrs, identity=not no_identity, images=images)
    config = {
        "kind": "celeba",
        "crop": crop,
        **({"bbox_margin": margin} if CROPS[crop].boxes else {}),
        **files.describe(),
    }
    run_ingest(
        lambda: celeba_source.CelebaSource(
            files.root,
            crop=crop,
            size=options.size,
            bbox_margin=bbox_margin,
            attrs=not no_attrs,
            identity=not no_identity,
            images=images,
        ),
        options,
        shared.dry_run,
        config,
    )


# -- a folder of images --------------------------------------------------------------------


@app.command(
    "images",
    epilog="""Examples:\n
  pipeline ingest images --root ~/photos/cats-vs-dogs      # labels = sub-folder names\n
  pipeline ingest images --root extra_data --labels extra_data/tags.csv --name anime-64\n\n"""
    "Labels CSV: `id,hair,eyes` or `file,label` with a header (one label group per "
    "column); or no header and rows `id,<value> <group> <value> <group>` (`0,aqua hair "
    "aqua eyes`: groups hair and eyes); or `id,class`. Ids are file stems or paths "
    "relative to --root.",
)
@cli_errors(interrupted=SHARDS_KEPT)
@ingest_command()
def images(
    root: Annotated[
        Path,
        typer.Option(
            "--root",
            help="Folder of images (searched recursively: jpg, jpeg, png, webp, bmp, gif).",
        ),
    ],
    labels: Annotated[
        Path | None,
        typer.Option(
            "--labels",
            help="CSV of labels per image id. Default: the sub-folder names, "
            "when there are two or more.",
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="Dataset name (folder under the data dir). Default: <root folder>-<size>, "
            "or <parent folder>-<size> for a generic root such as extra_data or images.",
        ),
    ] = None,
    val: Annotated[
        float,
        typer.Option(
            "--val",
            help="Fraction of the images to hold out as a val split (by a hash of each path; "
            "what a GAN's overfitting measure compares with). Default 0: all train.",
        ),
    ] = 0.0,
    *,
    shared: IngestArgs,
) -> None:
    """Ingest a folder of images, labelled by sub-folder or by a CSV (e.g. anime hair/eye tags)."""
    from pipeline.data.sources import images as images_source

    options = shared.options()
    folder = images_source.check_root(root)
    labels_file = images_source.check_labels_file(labels) if labels is not None else None
    val = images_source.check_val(val)
    if name is not None:
        name = images_source.check_name(name)
    config = {
        "kind": "images",
        "root": str(folder),
        "labels": str(labels_file) if labels_file else None,
        "name": name or images_source.default_dataset_name(folder, options.size),
        "val": val,
    }
    run_ingest(
        lambda: images_source.ImageFolderSource(
            folder, labels_file, name=name, size=options.size, val=val
        ),
        options,
        shared.dry_run,
        config,
    )


# -- MNIST ---------------------------------------------------------------------------------


@app.command(
    "mnist",
    epilog="""Examples:\n
  pipeline ingest mnist                       # idx files in <data dir>/mnist\n
  pipeline ingest mnist --root ~/mnist --size 28""",
)
@cli_errors(interrupted=SHARDS_KEPT)
@ingest_command(size=32)
def mnist(
    root: Annotated[
        Path | None,
        typer.Option(
            "--root",
            help="Folder holding the idx files (train-images-idx3-ubyte.gz, ...). "
            "Default: <data dir>/mnist.",
        ),
    ] = None,
    *,
    shared: IngestArgs,
) -> None:
    """Ingest MNIST from its idx files: train and test splits, one channel, digits 0-9."""
    from pipeline.data.sources import mnist as mnist_source

    options = shared.options()
    folder = mnist_source.locate(root)
    run_ingest(
        lambda: mnist_source.MnistSource(folder, size=options.size),
        options,
        shared.dry_run,
        {"kind": "mnist", "root": str(folder)},
    )
