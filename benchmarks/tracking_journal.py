"""Does the journal cost the training loop anything? The same DCGAN loop, in one process, three
ways, alternated `--repeats` times: no tracking (the baseline), logging to a real `mlflow
server` on 127.0.0.1 through the journal and its sender (`pipeline.tracking`), and logging to
a server that is away (nothing answers at the URI: every report waits in the journal).

Input: the real CelebA sample, `--images` photos at 32 px (`_training.celeba_train_set`).
Loop: `pipeline.training.worker.run_loop`, what rank 0 of a run executes (each report logs
the metrics, the sample grid as an artifact and an image-series entry, the checkpoint as an
artifact), dcgan at width 32, batch 32, a report per epoch.

Measured: the step time, as the runner reports it in `images_per_s` (the images trained
between two reports over the time between them, the report's own work left out: what the
sender thread and the server, on this same machine, take from the steps that follow a report
is in it). Each run's median over its reports after the first (warm-up).

The server runs on this machine; on a cluster it is elsewhere. So that its own work (storing
the uploads) is not counted against the loop, the loop is pinned to CPU 0 (one torch thread)
and the server to the other CPUs (`--no-pin`: both share every CPU). The sender thread runs
in the loop's process, on its CPU: its cost is counted.

Printed: images/s of each (best and median of the runs), then journal / off and away / off.
Goal: >= 0.98 (the record costs the steps at most 2 %).

    python benchmarks/tracking_journal.py                # ~5 CPU minutes
    python benchmarks/tracking_journal.py --quick
"""

from __future__ import annotations

import argparse
import os
import statistics

from _common import (
    Measurement,
    MlflowServer,
    add_options,
    free_port,
    print_machine,
    print_ratio,
    timed,
    workdir,
)
from _training import celeba_train_set

from pipeline import tracking
from pipeline.config import to_dict
from pipeline.training.config import load_train_config
from pipeline.training.context import LocalContext
from pipeline.training.worker import run_loop

SIZE = 32


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_options(parser, images=1024, repeats=3)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--no-pin", action="store_true", help="loop and server share the CPUs")
    args = parser.parse_args()
    if args.quick:
        args.images, args.repeats, args.epochs = 128, 1, 3
    print_machine()
    with workdir() as folder:
        os.environ["PIPELINE_RUNS"] = str(folder / "runs")  # the journals go under it
        os.environ["PIPELINE_TRACKING_WAIT_S"] = "0"  # the away runs end without waiting
        data = celeba_train_set(folder, SIZE, args.images)
        config = load_train_config("dcgan", options={
            "data.dataset": str(data), "workers": 1, "epochs": args.epochs, "batch_size": 32,
            "model.width_g": 32, "model.width_d": 32, "fid.every": 0,
        })  # fmt: skip
        loop_config = {"config": to_dict(config), "dataset": str(data)}
        cpus = sorted(os.sched_getaffinity(0))
        pinned = not args.no_pin and len(cpus) >= 2
        server = MlflowServer(folder, set(cpus[1:]) if pinned else None)
        server.start()
        uri = server.uri
        if pinned:
            import torch

            os.sched_setaffinity(0, {cpus[0]})
            torch.set_num_threads(1)
            print(f"loop on CPU {cpus[0]} (1 torch thread), server on CPUs {cpus[1:]}")
        away = f"http://127.0.0.1:{free_port()}"
        try:
            runs = {"off": Measurement("no tracking"),
                    "journal": Measurement("journal -> mlflow server"),
                    "away": Measurement("journal, server away")}  # fmt: skip
            for repeat in range(args.repeats):
                for name, measurement in runs.items():
                    handle = None
                    if name != "off":  # the run is made on the server; "away" then logs elsewhere
                        handle = tracking.start_run(uri, "bench/dcgan", f"{name}-{repeat}", {})
                        if name == "away":
                            handle = tracking.RunHandle(
                                away, handle.run_id, handle.experiment_id, handle.name
                            )
                    context = LocalContext(folder / "loop" / f"{name}-{repeat}")
                    seconds, _ = timed(lambda h=handle, c=context: run_loop(loop_config, c, h))
                    rate = statistics.median(r["images_per_s"] for r in context.reports[1:])
                    measurement.add(1.0, rate)  # images per second, as a 1-second run
                    if handle is not None and name == "journal":
                        os.environ["PIPELINE_TRACKING_WAIT_S"] = "120"  # delivered, untimed
                        tracking.Tracker(handle).finish()
                        os.environ["PIPELINE_TRACKING_WAIT_S"] = "0"
                    print(f"{name} #{repeat + 1}: {seconds:.1f} s, {rate:,.0f} img/s between "
                          "reports", flush=True)  # fmt: skip
        finally:
            server.stop()
    print()
    for m in runs.values():
        rates = " ".join(f"{r:,.0f}" for r in m.rates)
        print(f"{m.name:<26} best {m.best:7,.0f} img/s  median {m.median:7,.0f}  runs: {rates}")
    print()
    for kind in ("best", "median"):  # the best runs are the least disturbed; medians steadier
        off = getattr(runs["off"], kind)
        for name, what in (("journal", "journal -> server"), ("away", "journal, server away")):
            ratio = getattr(runs[name], kind) / off
            print_ratio(f"{what} / no tracking ({kind} img/s)", ratio, 0.98)


if __name__ == "__main__":
    main()
