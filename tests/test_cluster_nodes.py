"""On a real two-node Ray cluster (this machine, the second node with its own view of the
disk): what the other nodes cannot reach is refused in one line before training starts; with
the dataset and the runs in a bucket and an MLflow server on PostgreSQL (artifacts in the
bucket), a run survives losing a node and a sweep spreads over both."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.mlflow_server import mlflow_server
from tests.postgres_server import postgres_server
from tests.ray_cluster import TwoNodeRay
from tests.s3_server import BUCKET, S3Server
from tests.train_fixtures import anime_dataset

pytestmark = pytest.mark.ray  # starts Ray: in the one group of such tests

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--set", "model.width_g=16", "--set", "model.width_d=16", "--set", "model.z_dim=32"]


def pipeline(*args, env: dict, cwd=None) -> tuple[int, str]:
    """`pipeline ARGS` in its own process, as a user runs it: (exit status, last stderr line)
    (Ray may log above the command's own verdict)."""
    done = subprocess.run(
        [sys.executable, "-m", "stages.cli", *map(str, args)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = done.stderr.strip().splitlines()
    return done.returncode, lines[-1] if lines else ""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One two-node cluster for the module (starting one is a good part of each test): the
    worker node has its own, empty view of `head-only` (a folder only the head has) and of
    `node-local` (each node's own staging cache)."""
    folder = tmp_path_factory.mktemp("nodes")
    with TwoNodeRay(folder, private=[folder / "head-only", folder / "node-local"]) as nodes:
        yield nodes


@pytest.mark.slow
@pytest.mark.shared
def test_what_other_nodes_cannot_reach_is_refused(cluster, tmp_path):
    from tests.conftest import require_shared

    require_shared("anime-mlds2018", "extra_data")
    private, shared = cluster.folder / "head-only", tmp_path / "shared"
    private_data = anime_dataset(private / "data")
    shared_data = anime_dataset(shared / "data")
    env = {**os.environ, **cluster.driver_env}
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


@pytest.mark.slow
@pytest.mark.shared
def test_two_nodes_on_a_bucket_and_a_team_server(cluster, tmp_path, monkeypatch):
    """`pipeline ingest celeba --out s3://...`; `pipeline train` with 2 DDP workers (one per
    node) from the bucket, its checkpoints in the bucket, logging through an MLflow server on
    PostgreSQL whose artifacts land in the bucket; the worker node killed once a checkpoint
    exists and started again: the run finishes from that checkpoint, in the same MLflow run.
    Then a 2-trial `pipeline tune` on the same cluster, both children in the server, and a
    `ray job submit` of a `pipeline train` whose run lands there too."""
    from mlflow import MlflowClient

    from pipeline import storage
    from tests.conftest import require_shared

    celeba = require_shared("celeba")
    node_local = cluster.folder / "node-local"  # each node's own disk: its staging cache
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    data, runs = f"s3://{BUCKET}/data/celeba-32", f"s3://{BUCKET}/runs"
    with (
        S3Server(tmp_path / "s3") as s3,
        postgres_server() as database,
        mlflow_server(database, f"s3://{BUCKET}/mlartifacts", env=s3.env) as tracking,
    ):
        env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
        env |= s3.env | {"MLFLOW_TRACKING_URI": tracking, "PIPELINE_RUNS": runs,
                         "PIPELINE_CACHE": str(node_local / "cache")}  # fmt: skip
        status, last = pipeline("ingest", "celeba", "--root", celeba, "--out", data,
                                "--size", "32", "-j", "1", env=env, cwd=cwd)  # fmt: skip
        assert status == 0, last
        for name, value in s3.env.items():
            monkeypatch.setenv(name, value)  # this test reads the bucket too
        bucket = storage.remote(runs)
        env |= cluster.driver_env
        train = subprocess.Popen(
            [sys.executable, "-m", "stages.cli", "train", "dcgan", "--data", data,
             "--epochs", "6", "--workers", "2", "--batch-size", "32", *SMALL],
            env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and train.poll() is None:
                found = storage.listing(bucket, bucket.path)
                if sum(p.endswith("checkpoint.pt") for p, _ in found) >= 2:
                    break
                time.sleep(0.5)
            time.sleep(3)  # Ray Train registers a reported checkpoint within ~2 s
            assert train.poll() is None, train.communicate()[0][-3000:]
            cluster.kill_worker()
            cluster.start_worker()
            output, _ = train.communicate(timeout=600)
        finally:
            if train.poll() is None:
                os.killpg(train.pid, signal.SIGKILL)
        assert train.returncode == 0, output[-3000:]
        assert "worker group restarted: resuming from checkpoint-" in output

        client = MlflowClient(tracking)
        (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
        assert run.info.status == "FINISHED" and run.data.metrics["epoch"] == 6
        assert run.data.metrics["images_seen"] == 6 * (1800 // 32) * 32
        assert run.data.tags["pipeline.restored_from"].startswith("checkpoint-")
        stored = [path for path, _ in storage.listing(bucket, bucket.at(run.info.run_name))]
        assert any(p.endswith("checkpoint.pt") for p in stored), stored
        artifacts = storage.remote(f"s3://{BUCKET}/mlartifacts")
        grids = [p for p, size in storage.listing(artifacts, artifacts.path)
                 if run.info.run_id in p and p.endswith(".png") and size > 0]  # fmt: skip
        assert grids  # the grids' bytes are in the bucket, through the server

        # The run's checkpoint and grids come back through the server, from the bucket.
        status, last = pipeline("sample", run.info.run_id, "--n", "16", "--out",
                                tmp_path / "grid.png", env=env, cwd=cwd)  # fmt: skip
        assert status == 0 and (tmp_path / "grid.png").stat().st_size > 0, last
        status, last = pipeline("evaluate", run.info.run_id, "--samples", "96", "--dims",
                                "64", "--device", "cpu", env=env, cwd=cwd)  # fmt: skip
        assert status == 0, last
        assert "fid" in "".join(client.get_run(run.info.run_id).data.metrics)

        status, last = pipeline(
            "tune", "dcgan", "--data", data, "--samples", "2", "--max-epochs", "1",
            "--workers-per-trial", "1", "--scheduler", "fifo", "--name", "on-two-nodes",
            *SMALL, "--set", "fid.samples=96", "--set", "fid.dims=64", "--set", "fid.every=1",
            env=env, cwd=cwd,
        )  # fmt: skip
        assert status == 0, last
        sweep = [r for r in client.search_runs(
            [e.experiment_id for e in client.search_experiments()],
            "tags.`pipeline.sweep` = 'on-two-nodes'")]  # fmt: skip
        assert len(sweep) == 3 and all(r.info.status == "FINISHED" for r in sweep)

        # `ray job submit` through the dashboard, as infra/kuberay/README.md shows: the
        # job's variables in its runtime env, `pipeline` run on the cluster by Ray.
        job_env = {k: env[k] for k in (*s3.env, "MLFLOW_TRACKING_URI", "PIPELINE_RUNS",
                                       "PIPELINE_CACHE")}  # fmt: skip
        submit = subprocess.run(
            ["ray", "job", "submit", "--working-dir", str(REPO),
             "--runtime-env-json", json.dumps({"env_vars": job_env}), "--",
             "pipeline", "train", "dcgan", "--data", data, "--epochs", "1", "--workers", "2",
             "--set", "run_name=submitted", *SMALL],
            env={**env, "RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{cluster.dashboard}"},
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        said = submit.stdout + submit.stderr
        assert submit.returncode == 0 and "succeeded" in said, said[-3000:]
        submitted = client.search_runs(
            [e.experiment_id for e in client.search_experiments()],
            "tags.`mlflow.runName` = 'submitted'",
        )
        assert [r.info.status for r in submitted] == ["FINISHED"]

        env["PIPELINE_DATA"] = f"s3://{BUCKET}/data"
        status, said = doctor(env)
        assert status == 0 and "2 node(s)" in said, said
        s3.stop()
        status, said = doctor(env)
        assert status == 1 and "PIPELINE_DATA, PIPELINE_RUNS" in said, said
        assert "is the storage server" in said
    assert not any(cwd.iterdir())  # nothing written to a local folder named like a URI
