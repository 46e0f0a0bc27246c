"""A 40 s outage of the bucket in the middle of a run (issue 20, part 4): a 2-worker
`pipeline train dcgan` (Ray Train, DDP) on the real anime sample at 32 px, its Ray run (every
checkpoint, Ray Train's own bookkeeping) in an S3-compatible store (SeaweedFS on 127.0.0.1)
that is stopped for `--outage` seconds once the first epoch has landed in MLflow, then
started again on the same data.

Printed: what the run said about the store, then the epochs expected against those found in
MLflow (each epoch's `loss_d` point exactly once, one grid per epoch), the checkpoints in the
bucket, the run's status and the command's exit code and time. With `--wait 0`
(PIPELINE_STORAGE_WAIT_S=0: no waiting, as Ray Train alone behaves) the run ends FAILED: Ray
Train's controller cannot write `checkpoint_manager_snapshot.json`, a controller error that
FailureConfig does not restart.

    python benchmarks/storage_outage.py                   # ~2 CPU minutes
    python benchmarks/storage_outage.py --workers 1       # a solo run (no worker group)
    python benchmarks/storage_outage.py --wait 0          # Ray Train on its own
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from _common import REPO, anime_32, print_machine, start_training, workdir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--outage", type=float, default=40.0, help="seconds the store is away")
    parser.add_argument("--wait", default=None, help="PIPELINE_STORAGE_WAIT_S for the run")
    args = parser.parse_args()
    print_machine()
    sys.path.insert(0, str(REPO))
    from mlflow import MlflowClient

    from pipeline import storage
    from tests.s3_server import BUCKET, S3Server

    with workdir() as folder, S3Server(folder / "s3") as s3:
        runs = f"s3://{BUCKET}/runs"
        os.environ.update(s3.env)  # this process lists the bucket at the end
        env = {**os.environ, **s3.env, "PIPELINE_RUNS": runs, "COLUMNS": "200",
               "PIPELINE_DATA": str(folder / "data"), "PIPELINE_CACHE": str(folder / "cache"),
               "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"}  # fmt: skip
        if args.wait is not None:
            env["PIPELINE_STORAGE_WAIT_S"] = args.wait
        data = anime_32(folder / "data", env)
        started = time.monotonic()
        train = start_training(data, args.epochs, args.workers, env)
        client = MlflowClient(env["MLFLOW_TRACKING_URI"])
        try:
            run = None
            while run is None and train.poll() is None:
                time.sleep(0.5)
                found = client.search_runs(
                    [e.experiment_id for e in client.search_experiments()], max_results=1
                )
                if found and client.get_metric_history(found[0].info.run_id, "loss_d"):
                    run = found[0]
            if run is None:
                raise SystemExit("error: the run ended before its first epoch landed")
            s3.stop()
            print(f"store stopped after epoch 1 landed; away for {args.outage:.0f} s", flush=True)
            time.sleep(args.outage)
            s3.start_again()
            print("store started again on the same data", flush=True)
            output, _ = train.communicate(timeout=1800)
        finally:
            if train.poll() is None:
                os.killpg(train.pid, signal.SIGKILL)
        seconds = time.monotonic() - started
        said = [line for line in output.splitlines() if "storage s3://" in line]
        print("\nthe run said:\n  " + "\n  ".join(said or ["(nothing about the store)"]))
        failed = [line for line in output.splitlines() if line.startswith("error:")]
        if failed:
            print("  " + "\n  ".join(line[:400] for line in failed))
        run_id = run.info.run_id
        steps = [p.step for p in client.get_metric_history(run_id, "loss_d")]
        grids = [a for a in client.list_artifacts(run_id, "samples") if a.path.endswith(".png")]
        r = storage.remote(runs)
        kept = [p for p, _ in storage.listing(r, r.at(run.info.run_name)) if p.endswith(".pt")]
        print(f"\nloss_d points: {len(steps)} found, {args.epochs} expected "
              f"({len(set(steps))} distinct steps)")  # fmt: skip
        print(f"sample grids:  {len(grids)} found, {args.epochs} expected")
        print(f"checkpoints in the bucket: {len(kept)}")
        print(f"run status:    {client.get_run(run_id).info.status}")
        print(f"pipeline train: exit {train.returncode} after {seconds:.0f} s")
        whole = len(steps) == len(set(steps)) == len(grids) == args.epochs
        print("no epoch lost" if whole else "EPOCHS LOST")


if __name__ == "__main__":
    main()
