"""How long `pipeline train` takes to its first training step on a local Ray, beside `ray.init`.

Each measurement is the real command in a fresh process (its own local Ray, a sqlite MLflow
store), a 1-epoch DCGAN on the anime sample at 64 px. The run's `startup_s` metric is the time
from the process's start (Python's imports included) to the end of its first step. Three ways
to train, alternated so that the machine's noise falls on all of them:

  - solo:            --workers 1: one worker without a Ray Train worker group
  - ray-train x1:    --workers 1 --set solo=false: the same worker in a Ray Train worker group
                     (how every run started before solo runs)
  - ray-train x2:    --workers 2: two DDP workers, a Ray Train worker group (the default)

and, as the floor, a fresh process doing `import ray; ray.init()` and nothing else.

    python benchmarks/first_step.py              # 3 runs of each, ~4 min
    python benchmarks/first_step.py --repeats 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from _common import REPO, SHARED, print_machine, workdir

ANIME = SHARED / "anime-mlds2018" / "extra_data"
GOAL = 0.5  # issue #13: half of today's ~25 s (a 2-worker run on Ray Train)
WAYS = {
    "solo": ["--workers", "1"],
    "ray-train x1": ["--workers", "1", "--set", "solo=false"],
    "ray-train x2": ["--workers", "2"],
}
RAY_INIT = (
    "import time; t = time.perf_counter(); import ray; ray.init(logging_level='ERROR'); "
    "print(time.perf_counter() - t)"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each way (default 3)")
    args = parser.parse_args()
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
        startup: dict[str, list[float]] = {way: [] for way in ["ray.init alone", *WAYS]}
        for repeat in range(args.repeats):
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", RAY_INIT], env=env, cwd=folder,
                                  capture_output=True, text=True, check=True)  # fmt: skip
            startup["ray.init alone"].append(float(done.stdout.split()[-1]))
            for way, options in WAYS.items():
                name = f"{way.replace(' ', '-')}-{repeat}"
                command = [sys.executable, "-m", "stages.cli", "train", "dcgan", "--data",
                           str(data), "--epochs", "1", "--batch-size", "32", "--set",
                           f"run_name={name}", *options]  # fmt: skip
                done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
                if done.returncode:
                    print(done.stdout[-3000:], done.stderr[-3000:])
                    sys.exit(f"error: {way} exited with {done.returncode}")
                startup[way].append(run_metric(uri, name, "startup_s"))
            print(f"  round {repeat + 1}/{args.repeats} took {time.perf_counter() - started:.0f} s")

    print("\nseconds from the command's start to its first training step (best / median)")
    for way, values in startup.items():
        print(f"  {way:<16}{min(values):7.1f} {statistics.median(values):7.1f}")
    today = min(startup["ray-train x2"])
    solo = min(startup["solo"])
    print(f"\n  solo / ray-train x1              {solo / min(startup['ray-train x1']):6.2f}")
    ratio = solo / today
    verdict = "met" if ratio <= GOAL else "NOT MET"
    print(f"  solo / ray-train x2 (default)    {ratio:6.2f}   goal <= {GOAL}  {verdict}")
    floor = min(startup["ray.init alone"])
    print(f"  solo beyond ray.init alone       {solo - floor:6.1f} s")


def run_metric(uri: str, run_name: str, key: str) -> float:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    (run,) = client.search_runs(experiments, f"attributes.run_name = '{run_name}'")
    return run.data.metrics[key]


if __name__ == "__main__":
    main()
