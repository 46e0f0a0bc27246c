"""A 40 s outage of the tracking server in the middle of a run, as issue 20 tried it: a
2-worker `pipeline train dcgan` (Ray Train, DDP) of `--epochs` epochs on the real anime sample
at 32 px, logging to an `mlflow server` on 127.0.0.1 that is stopped for `--outage` seconds
once the first epoch has landed, then started again on the same store.

Printed: the console lines the run said about the outage, then the points and grids expected
against those found in MLflow (each epoch's `loss_d` point exactly once; one grid per epoch),
the run's status, and the command's exit code and time. Before the journal this found 6 of 10
`loss_d` points and 7 of 10 grids.

    python benchmarks/tracking_outage.py                 # ~2 CPU minutes
    python benchmarks/tracking_outage.py --outage 40 --epochs 10 --workers 2
"""

from __future__ import annotations

import argparse
import os
import signal
import time

from _common import MlflowServer, anime_32, print_machine, start_training, workdir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--outage", type=float, default=40.0, help="seconds the server is away")
    args = parser.parse_args()
    print_machine()
    from mlflow import MlflowClient

    with workdir() as folder:
        env = {**os.environ, "PIPELINE_RUNS": str(folder / "runs"), "COLUMNS": "200",
               "PIPELINE_DATA": str(folder / "data")}  # fmt: skip
        data = anime_32(folder / "data", env)
        server = MlflowServer(folder)
        server.start()
        env["MLFLOW_TRACKING_URI"] = server.uri
        started = time.monotonic()
        train = start_training(data, args.epochs, args.workers, env)
        try:
            client, run_id = MlflowClient(server.uri), None
            while run_id is None or not client.get_metric_history(run_id, "loss_d"):
                runs = client.search_runs(
                    [e.experiment_id for e in client.search_experiments()], max_results=1
                )
                run_id = runs[0].info.run_id if runs else None
                time.sleep(0.5)
            server.stop()
            print(f"server stopped after epoch 1 landed; away for {args.outage:.0f} s", flush=True)
            time.sleep(args.outage)
            server.start()
            print("server started again on the same store", flush=True)
            output, _ = train.communicate(timeout=1800)
            seconds = time.monotonic() - started
            said = [line for line in output.splitlines() if "MLflow at" in line]
            print("\nthe run said:\n  " + "\n  ".join(said or ["(nothing about MLflow)"]))
            points = client.get_metric_history(run_id, "loss_d")
            grids = [a for a in client.list_artifacts(run_id, "samples") if a.path.endswith(".png")]
            steps = [p.step for p in points]
            print(f"\nloss_d points: {len(points)} found, {args.epochs} expected "
                  f"({len(set(steps))} distinct steps)")  # fmt: skip
            print(f"sample grids:  {len(grids)} found, {args.epochs} expected")
            print(f"run status:    {client.get_run(run_id).info.status}")
            print(f"pipeline train: exit {train.returncode} after {seconds:.0f} s")
            whole = len(points) == len(set(steps)) == len(grids) == args.epochs
            print("the record is whole" if whole else "HOLES in the record")
        finally:
            if train.poll() is None:
                os.killpg(train.pid, signal.SIGKILL)
            server.stop()


if __name__ == "__main__":
    main()
