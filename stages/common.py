"""What every stage shares: the error boundary, option types, progress bars and summaries.

Heavy imports (pyarrow, torch, ray, mlflow) stay inside functions so `pipeline --help` is fast.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import sys
import typing
from typing import Annotated

import typer

from pipeline.errors import PipelineError

INTERRUPTED = "interrupted"  # Ctrl-C, where nothing more can be said


def fail(message: str) -> None:
    """Print one line on stderr and exit with status 1."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def cli_errors(fn=None, *, interrupted: str = INTERRUPTED):
    """Turn a `PipelineError` into one line on stderr and exit 1, and Ctrl-C into the line
    `interrupted` and exit 130: what an interruption leaves behind differs by command, so
    each says its own (`@cli_errors(interrupted="interrupted: ...")`; bare `@cli_errors`
    says only "interrupted")."""
    if fn is None:
        return functools.partial(cli_errors, interrupted=interrupted)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PipelineError as exc:
            fail(" ".join(str(exc).split()))
        except KeyboardInterrupt:
            typer.echo(interrupted, err=True)
            raise typer.Exit(130) from None

    return wrapper


# -- options shared by the ingest commands -------------------------------------------------

Out = Annotated[
    str | None,
    typer.Option(
        "--out",
        help="Dataset folder or URI (s3://bucket/prefix) to write. "
        "Default: <data dir>/<source>-<size>.",
    ),
]
Size = Annotated[int, typer.Option("--size", help="Output image side in pixels.")]
Encoding = Annotated[
    str, typer.Option("--encoding", help="raw (uint8 pixels, fastest to read) | png | jpeg | webp.")
]
Quality = Annotated[
    int, typer.Option("--quality", help="JPEG/WebP quality for --encoding jpeg|webp.")
]
Workers = Annotated[int, typer.Option("--workers", "-j", help="Worker processes; 0 = all cores.")]
Limit = Annotated[int | None, typer.Option("--limit", help="Ingest at most N records per split.")]
MaxBad = Annotated[
    float,
    typer.Option(
        "--max-bad", help="Fail when more records are undecodable: a fraction (<1) or a count."
    ),
]
ShardRows = Annotated[
    int,
    typer.Option(
        "--shard-rows", help="Source records per shard; 0 = about 128 MiB of pixels per shard."
    ),
]
Overwrite = Annotated[
    bool, typer.Option("--overwrite", help="Replace a different dataset already in --out.")
]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Print the resolved config and exit.")]
Verbose = Annotated[
    bool,
    typer.Option(
        "--verbose",
        "-v",
        help="Show Ray's own output too (its logs, Ray Train's and Tune's messages).",
    ),
]


def set_verbose(on: bool) -> None:
    """--verbose: Ray's own output reaches the console (pipeline.settings.verbose)."""
    if on:
        os.environ["PIPELINE_VERBOSE"] = "1"


# -- options shared by train, tune and evaluate ---------------------------------------------

Data = Annotated[
    str | None,
    typer.Option("--data", help="Dataset name under the data dir, a path, or a URI (s3://...)."),
]
GpusPerWorker = Annotated[
    float | None, typer.Option("--gpus-per-worker", help="GPUs per worker (0 = CPU).")
]
Experiment = Annotated[str | None, typer.Option("--experiment", help="MLflow experiment name.")]
FidWeights = Annotated[
    str | None,
    typer.Option(
        "--fid-weights",
        help="pt_inception-2015-12-05-6726825d.pth; default $PIPELINE_FID_WEIGHTS, the "
        "torch hub cache, or a download (offline: a labelled stand-in).",
    ),
]


@dataclasses.dataclass(frozen=True)
class IngestArgs:
    """The options every ingest command takes, declared once here.

    `@ingest_command` puts them in each command's signature after its own options, so Typer
    shows them in every `--help` with the same names, defaults and help, and hands them to
    the command as one `shared: IngestArgs` argument.
    """

    out: Out = None
    size: Size = 64
    encoding: Encoding = "raw"
    quality: Quality = 95
    workers: Workers = 0
    limit: Limit = None
    max_bad: MaxBad = 0.05
    shard_rows: ShardRows = 0
    overwrite: Overwrite = False
    dry_run: DryRun = False

    def options(self):
        """The engine's `IngestOptions` (checked: a bad value is a `ConfigError`)."""
        from pipeline.config import from_dict
        from pipeline.data.ingest import IngestOptions

        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(IngestOptions)}
        return from_dict(IngestOptions, values)


def ingest_command(*, size: int = 64):
    """Give an ingest command the shared `IngestArgs` options; `size` is their default side
    (MNIST's is 32). The command declares its own options and `shared: IngestArgs`."""
    types = typing.get_type_hints(IngestArgs, include_extras=True)
    defaults = {**{f.name: f.default for f in dataclasses.fields(IngestArgs)}, "size": size}
    shared_parameters = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=types[name], default=d)
        for name, d in defaults.items()
    ]

    def decorate(fn):
        signature = inspect.signature(fn, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != "shared"]

        @functools.wraps(fn)
        def command(*args, **kwargs):
            shared = IngestArgs(**{name: kwargs.pop(name, defaults[name]) for name in defaults})
            return fn(*args, shared=shared, **kwargs)

        command.__signature__ = signature.replace(parameters=own + shared_parameters)
        command.__annotations__ = {p.name: p.annotation for p in own + shared_parameters}
        return command

    return decorate


def run_ingest(source_factory, options, dry_run: bool, source_config: dict) -> None:
    """Build the source, run the ingest with a progress bar, print the summary."""
    from pipeline.config import to_dict

    if dry_run:
        import yaml

        typer.echo(
            yaml.safe_dump(
                {"source": source_config, "options": to_dict(options)}, sort_keys=False
            ).rstrip()
        )
        return
    from pipeline.data.ingest import ingest

    source = source_factory()
    with RichProgress() as progress:
        result = ingest(source, options, progress=progress)
    print_summary(result)


class RichProgress:
    """The engine's `Progress` drawn as a Rich bar with images/s and ETA, on stderr."""

    def __enter__(self):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            ProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.text import Text

        class Rate(ProgressColumn):
            def render(self, task):
                speed = task.finished_speed or task.speed
                return Text(f"{speed:,.0f} img/s" if speed else "- img/s", style="cyan")

        console = Console(stderr=True)
        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            Rate(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
            # Off the terminal (CI logs, pipes) a live bar is only noise: the summary says it all.
            disable=not console.is_terminal,
        )
        self._task = None
        return self

    def start(self, description: str, total: int, completed: int) -> None:
        # The live display (and its refresh thread) starts only now, after the engine has
        # started its worker pool: see pipeline.data.ingest._start_method.
        self._bar.start()
        self._task = self._bar.add_task(description, total=total, completed=completed)

    def advance(self, n: int) -> None:
        self._bar.advance(self._task, n)

    def __exit__(self, exc_type, exc, tb):
        if self._task is None:
            return None
        if exc_type is not None:
            # A failed ingest ends with its one error line only, not a half-drawn bar.
            self._bar.update(self._task, visible=False)
            self._bar.live.transient = True
        self._bar.stop()
        return None


def print_summary(result) -> None:
    """Rows per split, skipped records with reasons, notes, bytes and time."""
    from rich.console import Console
    from rich.table import Table

    manifest = result.manifest
    console = Console()
    if result.up_to_date:
        console.print(f"{result.path} is up to date (same source and options); nothing to do.")
    table = Table(title=f"{manifest['name']}  ({result.path})")
    for column in ("split", "rows", "skipped", "shards"):
        table.add_column(column, justify="right" if column != "split" else "left")
    for split, info in manifest["splits"].items():
        table.add_row(split, f"{info['rows']:,}", f"{info['skipped']:,}", str(len(info["shards"])))
    console.print(table)
    image = manifest["image"]
    timings = manifest.get("timings", {})
    console.print(
        f"{image['width']}x{image['height']}x{image['channels']} {image['encoding']}, "
        f"{manifest['bytes'] / 2**20:,.1f} MiB, {timings.get('images_per_s', 0):,.0f} img/s with "
        f"{timings.get('workers', '?')} worker(s)"
        + (
            f", {result.resumed_shards} shard(s) kept from an earlier run"
            if result.resumed_shards
            else ""
        )
        + (f", {result.seconds:.1f} s" if result.seconds else "")
    )
    skipped = manifest["skipped"]
    if skipped["total"]:
        reasons = ", ".join(f"{n} {reason}" for reason, n in skipped["reasons"].items())
        console.print(f"[yellow]skipped {skipped['total']} bad record(s): {reasons}[/yellow]")
        for record in skipped["records"][:5]:
            console.print(
                f"  [yellow]{record['split']}/{record['key']}: {record['reason']}[/yellow]"
            )
        if skipped["total"] > 5:
            console.print(f"  ... all {skipped['total']} listed in {result.path}/manifest.json")
    for note in manifest.get("notes", []):
        console.print(f"[yellow]note: {note}[/yellow]")


def echo_err(message: str) -> None:
    print(message, file=sys.stderr)


def data_dir_option(what: str):
    """`--data`, a folder that defaults to the data dir; `what` opens its help
    (`Annotated[Path | None, data_dir_option("Folder to scan.")] = None`)."""
    return typer.Option("--data", help=f"{what} Default: the data dir ($PIPELINE_DATA or ./data).")
