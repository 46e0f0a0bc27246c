"""How much of a sweep's time is not training: `pipeline tune` start-up and per-trial overhead.

Runs the real command (`pipeline tune acgan`, a subprocess, its own local Ray and MLflow store)
on the anime hair/eye sample at 64 px: one trial of 2 DDP workers, FIFO, long enough to be a
"short trial" of about 2 minutes on a 2-core CPU. It measures:

  - time from the command's start to the first trial result (the progress line the sweep
    prints when a trial reports its metric), and to the end of the command;
  - the trial's wall time (its MLflow child run, created when the trial starts and ended when
    it finishes), split into training (the loop's own step time: each report's images over
    its images/s, which the loop measures from the last report to this one, before FID),
    FID evaluation (`fid_seconds`), and the rest: Ray Train's controller and worker start-up,
    the DDP process group, data loading set-up, checkpoints, sample grids, MLflow logging and
    the wind-down.

The goal (issue #5): overhead under 20% of a 2-minute trial on CPU.

    python benchmarks/tune_overhead.py                 # ~3 min
    python benchmarks/tune_overhead.py --epochs 4 --fid-every 2
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time

from _common import REPO, SHARED, print_machine, workdir

ANIME = SHARED / "anime-mlds2018" / "extra_data"
GOAL = 0.20  # issue #5: overhead under 20% of a 2-minute trial on CPU


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=12, help="epochs of the trial (12 ~ 2 min)")
    parser.add_argument("--fid-every", type=int, default=4, help="FID every N epochs")
    parser.add_argument("--workers", type=int, default=2, help="DDP workers of the trial")
    parser.add_argument("--quick", action="store_true", help="2 epochs: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.fid_every = 2, 2
    if not ANIME.is_dir():
        sys.exit(f"error: needs the anime sample at {ANIME} (the project's ../shared/datasets)")
    print_machine()

    with workdir() as folder:
        from pipeline.data.ingest import IngestOptions, ingest
        from pipeline.data.sources.images import ImageFolderSource

        data = folder / "anime-64"
        ingest(ImageFolderSource(ANIME, ANIME / "tags.csv", size=64),
               IngestOptions(out=str(data), size=64, workers=2))  # fmt: skip
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PIPELINE_RUNS": str(folder / "runs"),
               "PIPELINE_DATA": str(folder)}  # fmt: skip
        command = [
            sys.executable, "-m", "stages.cli", "tune", "acgan", "--data", str(data),
            "--samples", "1", "--max-epochs", str(args.epochs), "--scheduler", "fifo",
            "--workers-per-trial", str(args.workers), "--name", "overhead",
            "--set", "batch_size=64", "--set", f"fid.every={args.fid_every}",
            "--set", "fid.samples=256", "--set", "fid.dims=64",
        ]  # fmt: skip
        lines: list[tuple[float, str]] = []
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)  # fmt: skip

        def read() -> None:
            for line in process.stdout:
                lines.append((time.perf_counter() - started, line.rstrip()))

        reader = threading.Thread(target=read)
        reader.start()
        process.wait()
        reader.join()
        total = time.perf_counter() - started
        if process.returncode:
            print("\n".join(line for _, line in lines[-30:]))
            sys.exit(f"error: pipeline tune exited with {process.returncode}")
        first = next(t for t, line in lines if line.startswith("trial ") and " epoch " in line)

        from mlflow import MlflowClient

        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("anime-64/acgan")
        (trial,) = client.search_runs([experiment.experiment_id], "tags.`mlflow.parentRunId` != ''")
        wall = (trial.info.end_time - trial.info.start_time) / 1000
        seen = client.get_metric_history(trial.info.run_id, "images_seen")
        rates = client.get_metric_history(trial.info.run_id, "images_per_s")
        fid = client.get_metric_history(trial.info.run_id, "fid_seconds")
        training, last = 0.0, 0.0
        for images, rate in zip(seen, rates, strict=True):
            training += (images.value - last) / rate.value
            last = images.value
        evaluation = sum(m.value for m in fid)
        other = wall - training - evaluation
        # Where the rest goes: before the first report (less that epoch's training and FID),
        # between reports (checkpoints, grids, logging), after the last one (wind-down).
        first_fid = next((m.value for m in fid if m.step == seen[0].step), 0.0)
        startup = (seen[0].timestamp - trial.info.start_time) / 1000 - (
            seen[0].value / rates[0].value + first_fid
        )
        winddown = (trial.info.end_time - seen[-1].timestamp) / 1000
        between = other - startup - winddown

    per_epoch = int(last / args.epochs)
    print(f"\npipeline tune acgan, 1 trial x {args.workers} workers x {args.epochs} epochs "
          f"(anime 64 px, {per_epoch} images/epoch), FID every {args.fid_every}")  # fmt: skip
    print(f"  command start -> first trial result   {first:7.1f} s")
    print(f"  command start -> end                  {total:7.1f} s")
    print(f"  trial wall time (MLflow child run)    {wall:7.1f} s")
    print(f"    training steps                      {training:7.1f} s  {training / wall:6.1%}")
    print(f"    FID evaluation ({len(fid)}x)".ljust(40) + f"{evaluation:7.1f} s  "
          f"{evaluation / wall:6.1%}")  # fmt: skip
    print(f"    everything else                     {other:7.1f} s  {other / wall:6.1%}")
    for name, seconds in (("start-up to the first step (Ray Train", startup),
                          ("  workers, DDP, data, MLflow run)", None),
                          ("per report (checkpoint, grid, MLflow)", between),
                          ("after the last report (wind-down)", winddown)):  # fmt: skip
        if seconds is None:
            print(f"      {name}")
        else:
            print(f"      {name:<34}{seconds:7.1f} s  {seconds / wall:6.1%}")
    print(f"  sweep overhead outside the trial      {total - wall:7.1f} s  "
          "(Ray start, checks, MLflow parent, summary)")  # fmt: skip
    share = (wall - training) / wall
    verdict = "met" if share < GOAL else "NOT MET"
    print(f"  not training, share of the trial      {share:7.1%}   goal < {GOAL:.0%}  {verdict}")


if __name__ == "__main__":
    main()
