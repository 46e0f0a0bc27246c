"""On a real two-node Ray cluster (this machine, the second node with its own view of the
disk): what the other nodes cannot reach is refused in one line before training starts."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.mlflow_server import mlflow_server
from tests.ray_cluster import TwoNodeRay
from tests.train_fixtures import anime_dataset

SMALL = ["--set", "model.width_g=16", "--set", "model.width_d=16", "--set", "model.z_dim=32"]


def pipeline(*args, env: dict) -> tuple[int, str]:
    """`pipeline ARGS` in its own process, as a user runs it: (exit status, last stderr line)
    (Ray may log above the command's own verdict)."""
    done = subprocess.run(
        [sys.executable, "-m", "stages.cli", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = done.stderr.strip().splitlines()
    return done.returncode, lines[-1] if lines else ""


@pytest.mark.slow
@pytest.mark.shared
def test_what_other_nodes_cannot_reach_is_refused(tmp_path):
    from tests.conftest import require_shared

    require_shared("anime-mlds2018", "extra_data")
    private, shared = tmp_path / "head-only", tmp_path / "shared"
    private_data = anime_dataset(private / "data")
    shared_data = anime_dataset(shared / "data")
    with TwoNodeRay(tmp_path, private=[private]) as cluster:
        env = {**os.environ, "RAY_ADDRESS": cluster.address, "RAY_AUTH_MODE": "token"}
        train = ["train", "dcgan", "--epochs", "1", "--workers", "2", "--batch-size", "32", *SMALL]
        started = time.monotonic()

        env["PIPELINE_RUNS"] = str(private / "runs")
        status, last = pipeline(*train, "--data", shared_data, env=env)
        assert status == 1 and last.startswith("error: PIPELINE_RUNS"), last
        assert "1 of the cluster's 2 nodes cannot see" in last

        env["PIPELINE_RUNS"] = str(shared / "runs")  # every node sees it
        status, last = pipeline(*train, "--data", private_data, env=env)
        assert status == 1 and last.startswith("error: the dataset"), last
        assert "cannot see" in last and "s3://bucket/prefix" in last

        status, last = pipeline(*train, "--data", shared_data, env=env)  # conftest's sqlite
        assert status == 1 and "MLFLOW_TRACKING_URI=sqlite" in last, last
        assert "run an MLflow server" in last
        assert time.monotonic() - started < 240  # refused before any training
        assert not (shared / "runs").exists() or not any((shared / "runs").iterdir())

        with mlflow_server(f"sqlite:///{shared / 'mlflow.db'}", shared / "mlartifacts") as uri:
            env["MLFLOW_TRACKING_URI"] = uri
            env["PIPELINE_DATA"] = str(shared / "data")
            status, said = doctor(env)
            assert status == 0 and "seen by all 2 nodes" in said, said
            status, said = doctor({**env, "PIPELINE_RUNS": str(private / "runs")})
            assert status == 1 and "1 of the cluster's 2 nodes cannot see" in said, said

            # One DDP worker on each node (1 CPU each), data and runs on the shared folder.
            status, last = pipeline(*train, "--data", shared_data, env=env)
            assert status == 0, last
            from mlflow import MlflowClient

            client = MlflowClient(uri)
            (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
            assert run.info.status == "FINISHED" and "loss_d" in run.data.metrics
            assert list((shared / "runs" / run.info.run_name).glob("checkpoint-*/checkpoint.pt"))


def doctor(env: dict) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "stages.cli", "doctor"],
        env={**env, "COLUMNS": "400"},
        capture_output=True,
        text=True,
        timeout=180,
    )
    return done.returncode, " ".join((done.stdout + done.stderr).split())
