"""`pipeline ingest ...`: turn a released dataset into Arrow shards (pipeline.data.ingest)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stages.common import (DryRun, Encoding, Limit, MaxBad, Out, Overwrite, Quality, ShardRows,
                           Size, Workers, cli_errors, ingest_options, run_ingest)

app = typer.Typer(
    help="Ingest a dataset into Arrow shards under the data dir ($PIPELINE_DATA, default ./data).",
    no_args_is_help=True,
)


# -- LSUN ----------------------------------------------------------------------------------

@app.command("lsun", epilog="""Examples:\n
  pipeline ingest lsun bedroom --lmdb ~/lsun/bedroom_train_lmdb --size 64\n
  pipeline ingest lsun church_outdoor --download --limit 100000""")
@cli_errors
def lsun(
    category: Annotated[str, typer.Argument(help="LSUN scene category, e.g. bedroom.")],
    lmdb: Annotated[Path | None, typer.Option(
        "--lmdb", help="The released LMDB folder (holding data.mdb). "
        "Default: <data dir>/lsun/<category>_train_lmdb.")] = None,
    val_lmdb: Annotated[Path | None, typer.Option(
        "--val-lmdb", help="The *_val_lmdb folder, ingested as the val split.")] = None,
    download: Annotated[bool, typer.Option(
        "--download", help="Fetch the official zip into <data dir>/lsun first (resumable).")] = False,
    url: Annotated[str | None, typer.Option(
        "--url", help="Download URL template with {category} and {split}.")] = None,
    out: Out = None, size: Size = 64, encoding: Encoding = "raw", quality: Quality = 95,
    workers: Workers = 0, limit: Limit = None, max_bad: MaxBad = 0.05, shard_rows: ShardRows = 0,
    overwrite: Overwrite = False, dry_run: DryRun = False,
) -> None:
    """Ingest an LSUN scene category from its released LMDB."""
    from pipeline.data.sources import lsun as lsun_source

    options = ingest_options(out=out, size=size, encoding=encoding, quality=quality,
                             workers=workers, limit=limit, max_bad=max_bad,
                             shard_rows=shard_rows, overwrite=overwrite)
    if category not in lsun_source.CATEGORIES:
        from pipeline.config import ConfigError

        raise ConfigError(f"unknown LSUN category {category!r}; choose one of: "
                          f"{', '.join(lsun_source.CATEGORIES)}")
    train, val = lsun_source.locate(category, lmdb, val_lmdb, download=download and not dry_run,
                                    url=url)
    config = {"kind": "lsun", "category": category, "lmdb": str(train),
              "val_lmdb": str(val) if val else None}
    run_ingest(lambda: lsun_source.LsunSource(category, train, val, size=size), options, dry_run,
               config)


@app.command("lsun-bedroom", epilog="Example:\n\n  pipeline ingest lsun-bedroom --lmdb "
             "~/lsun/bedroom_train_lmdb --size 64")
def lsun_bedroom(
    lmdb: Annotated[Path | None, typer.Option("--lmdb", help="The bedroom_train_lmdb folder.")] = None,
    val_lmdb: Annotated[Path | None, typer.Option("--val-lmdb", help="bedroom_val_lmdb.")] = None,
    download: Annotated[bool, typer.Option("--download", help="Fetch the official zip first.")] = False,
    url: Annotated[str | None, typer.Option("--url", help="Download URL template.")] = None,
    out: Out = None, size: Size = 64, encoding: Encoding = "raw", quality: Quality = 95,
    workers: Workers = 0, limit: Limit = None, max_bad: MaxBad = 0.05, shard_rows: ShardRows = 0,
    overwrite: Overwrite = False, dry_run: DryRun = False,
) -> None:
    """Ingest LSUN bedroom (same as `pipeline ingest lsun bedroom`)."""
    lsun("bedroom", lmdb=lmdb, val_lmdb=val_lmdb, download=download, url=url, out=out, size=size,
         encoding=encoding, quality=quality, workers=workers, limit=limit, max_bad=max_bad,
         shard_rows=shard_rows, overwrite=overwrite, dry_run=dry_run)


# -- more sources are added below this line ------------------------------------------------
