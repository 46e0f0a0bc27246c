"""The root `pipeline` command: one Typer app, each stage adds its commands."""

from __future__ import annotations

import os
import time

import typer

from stages import (
    complete,
    datasets,
    doctor,
    evaluate,
    ingest,
    judge,
    quickstart,
    sync,
    train,
    tune,
    ui,
)

app = typer.Typer(
    name="pipeline",
    help="A distributed experiment pipeline for GANs: ingest datasets into Arrow shards, "
    "train and sweep GANs (and GLCIC image completion) with Ray, compare runs in MLflow.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(ingest.app, name="ingest")
app.add_typer(datasets.app, name="datasets")
app.add_typer(judge.app, name="judge")
app.command("quickstart")(quickstart.quickstart)
app.command("train")(train.train)
app.command("sample")(train.sample)
app.command("tune")(tune.tune)
app.command("ui")(ui.ui)
app.command("evaluate")(evaluate.evaluate)
app.command("complete")(complete.complete)
app.command("doctor")(doctor.doctor)
app.command("sync")(sync.sync)


def main() -> None:
    # A command's start-up (the runs' `startup_s`) counts from here, its heavy imports included
    # (Python's start and this module's import, ~0.1 s, come before); `app` called from
    # Python (tests, a notebook) counts from its train() call.
    os.environ["PIPELINE_COMMAND_STARTED"] = str(time.time())
    app()


if __name__ == "__main__":
    main()
