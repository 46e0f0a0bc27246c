"""What a sweep costs beyond its training: `pipeline tune` against the same training work done
with no Tune and no per-trial start-up.

On the anime hair/eye sample at 64 px, in one run of this script (so the machine's noise
falls on both):

  - the sweep: `pipeline tune acgan` of `--trials` trials of `--epochs` epochs each (2 epochs
    of the anime sample: about a minute of training on one core), FIFO,
    one worker per trial, `--concurrent` trials at a time (each its own MLflow child run,
    FID every 2 epochs as the shipped space does);
  - the baseline: the same epochs as `--concurrent` plain `pipeline train` commands started
    together, one per core, each training (trials / concurrent) x epochs epochs: the same
    steps, the same FID evaluations, one start-up per core instead of one per trial.

Both train the same model at the same cost per step (the searched values are rates and the
class-loss weight, not architectures), so the ratio of wall times is the sweep's overhead:
trial start-up, Tune, MLflow child runs, the summary. `--ray-train` measures the sweep a
second time with trials on Ray Train worker groups (`--set solo=false`), as every trial ran
before solo trials. Goal (issue #13): ratio <= 1.15.

    python benchmarks/tune_overhead.py                       # ~5 min
    python benchmarks/tune_overhead.py --ray-train           # ~8 min
    python benchmarks/tune_overhead.py --concurrent 1        # one trial at a time, one core
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import REPO, SHARED, print_machine, workdir

ANIME = SHARED / "anime-mlds2018" / "extra_data"
GOAL = 1.15  # issue #13: a sweep costs at most 15% more than its training work alone
SPACE = """\
metric: fid
mode: min
fixed: {fid.every: 2, fid.samples: 256, fid.dims: 64, model.arch: dcgan}
search:
  lambda_cls: {loguniform: [0.1, 10.0]}
  optim.lr_g: {loguniform: [1.0e-4, 4.0e-4]}
  optim.lr_d: {loguniform: [1.0e-4, 4.0e-4]}
"""
FIXED = ["--set", "fid.every=2", "--set", "fid.samples=256", "--set", "fid.dims=64",
         "--set", "model.arch=dcgan", "--set", "batch_size=64"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=4, help="trials of the sweep (default 4)")
    parser.add_argument(
        "--epochs", type=int, default=2, help="epochs per trial, even (default 2: about a minute)"
    )
    parser.add_argument("--concurrent", type=int, default=2, help="trials at a time (default 2)")
    parser.add_argument("--ray-train", action="store_true", help="also: trials on Ray Train")
    args = parser.parse_args()
    if not ANIME.is_dir():
        sys.exit(f"error: needs the anime sample at {ANIME} (the project's ../shared/datasets)")
    if args.trials % args.concurrent or args.epochs % 2:
        sys.exit("error: --trials must be a multiple of --concurrent, --epochs even (FID every 2)")
    print_machine()

    with workdir() as folder:
        # Offline: FID on the stand-in backbone (as tests do), the same in every command.
        os.environ.update({"TORCH_HOME": str(folder / "torch"), "PIPELINE_FID_URL": ""})
        data = prepare(folder)
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
               "PIPELINE_RUNS": str(folder / "runs"), "PIPELINE_DATA": str(folder)}  # fmt: skip
        (folder / "space.yaml").write_text(SPACE)
        per_run = args.trials // args.concurrent * args.epochs
        train = [sys.executable, "-m", "stages.cli", "train", "acgan", "--data", str(data),
                 "--workers", "1", "--epochs", str(per_run), *FIXED]  # fmt: skip
        runs = [train + ["--set", f"run_name=base-{i}"] for i in range(args.concurrent)]
        baseline = timed(runs, env)
        print(f"  baseline: {args.concurrent} x train of {per_run} epochs: {baseline:.0f} s")
        walls = {}
        for label, extra in (("solo trials", []), ("Ray Train trials", ["--set", "solo=false"])):
            if extra and not args.ray_train:
                continue
            tune = [sys.executable, "-m", "stages.cli", "tune", "acgan", "--data", str(data),
                    "--space", str(folder / "space.yaml"), "--samples", str(args.trials),
                    "--max-epochs", str(args.epochs), "--scheduler", "fifo",
                    "--workers-per-trial", "1", "--concurrent", str(args.concurrent),
                    "--name", label.split()[0].lower(), "--set", "batch_size=64",
                    *extra]  # fmt: skip
            walls[label] = timed([tune], env)
            print(f"  sweep, {label}: {walls[label]:.0f} s")

    print(f"\n{args.trials} trials x {args.epochs} epochs, {args.concurrent} at a time, one "
          "worker each (acgan, anime 64 px, batch 64, FID every 2 epochs, 64-d)")  # fmt: skip
    print(f"  baseline (no Tune, one start-up per core)  {baseline:7.1f} s")
    for label, wall in walls.items():
        ratio = wall / baseline
        verdict = "met" if ratio <= GOAL else "NOT MET"
        print(f"  sweep, {label:<18}               {wall:7.1f} s  ratio {ratio:5.2f}"
              f"   goal <= {GOAL}  {verdict}")  # fmt: skip


def prepare(folder: Path) -> Path:
    """The anime sample at 64 px, and its FID reference statistics computed once (every
    command below reads them from the dataset's cache)."""
    from pipeline.data.ingest import IngestOptions, ingest
    from pipeline.data.sources.images import ImageFolderSource
    from pipeline.training.config import load_train_config
    from pipeline.training.driver import precompute_fid_reference, prepare_fid

    data = folder / "anime-64"
    ingest(ImageFolderSource(ANIME, ANIME / "tags.csv", size=64),
           IngestOptions(out=str(data), size=64, workers=2))  # fmt: skip
    config = load_train_config("acgan", overrides=[f"data.dataset={data}", *FIXED[1::2]])
    config, _ = prepare_fid(config)
    precompute_fid_reference(config, data, say=lambda line: None)
    return data


def timed(commands: list[list[str]], env: dict) -> float:
    """Wall time of `commands` started together, until the last one ends."""
    started = time.perf_counter()
    processes = [
        subprocess.Popen(
            c, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )  # fmt: skip
        for c in commands
    ]
    outputs = [p.communicate()[0] for p in processes]
    wall = time.perf_counter() - started
    for process, output in zip(processes, outputs, strict=True):
        if process.returncode:
            print(output[-3000:])
            sys.exit(f"error: {' '.join(process.args[3:6])} exited with {process.returncode}")
    return wall


if __name__ == "__main__":
    main()
