"""Two `pipeline` commands at once on one machine, each with its own local Ray: a `pipeline
tune` ASHA sweep started while a `pipeline train` runs. Before each local Ray knew its own
address, Ray Train's placement-group cleaner in the second instance died with "Found multiple
active Ray instances", and the sweep's next trial waited on CPUs never freed ("worker group
startup timed out")."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import require_shared
from tests.ray_cluster import TwoNodeRay
from tests.train_fixtures import anime_dataset

pytestmark = pytest.mark.ray  # starts Ray: in the one group of such tests

SMALL = ["--set", "model.width_g=16", "--set", "model.width_d=16", "--set", "model.z_dim=32",
         "--set", "batch_size=32"]  # fmt: skip
FID = ["--set", "fid.samples=96", "--set", "fid.dims=64", "--set", "fid.every=1"]
SYMPTOMS = ("Found multiple active Ray instances", "worker group startup timed out")


def start(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "stages.cli", *args],
        env={**env, "COLUMNS": "200"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def finish(process: subprocess.Popen, timeout: float) -> str:
    try:
        output, _ = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return output


@pytest.mark.slow  # a local Ray
def test_a_fresh_homes_local_ray_runs_on_a_token_for_this_user_alone(tmp_path):
    """A machine where Ray never ran (no ~/.ray): the local Ray a command starts uses the token
    `start_ray` wrote, mode 600; Ray's own would be readable by every user."""
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env = {k: v for k, v in env.items() if k != "RAY_ADDRESS"} | {"HOME": str(home)}
    script = ("import ray; from pipeline import cluster; cluster.start_ray(dashboard=False); "
              "print(ray.get(ray.remote(lambda: 'answered').remote(), timeout=120))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0 and "answered" in done.stdout, done.stderr[-2000:]
    assert (home / ".ray" / "auth_token").stat().st_mode & 0o777 == 0o600


@pytest.mark.slow  # two Ray instances
def test_the_workers_of_a_local_ray_reach_their_own_instance(tmp_path, monkeypatch):
    """What Ray Train's placement-group cleaner does in its actor (Ray's state API with no
    address) answers from a worker of `start_ray`'s instance while a `ray start` instance
    runs beside it; with a plain `ray.init()` it raises "Found multiple active Ray
    instances"."""
    import ray

    from pipeline import cluster

    monkeypatch.delenv("RAY_ADDRESS", raising=False)

    @ray.remote(num_cpus=0)
    def actors_seen() -> tuple[str | None, int]:
        from ray.util.state import list_actors

        return os.environ.get("RAY_ADDRESS"), len(list_actors())

    with TwoNodeRay(tmp_path, private=[], second_node=False) as other:
        cluster.start_ray()
        try:
            own = ray.get_runtime_context().gcs_address
            address, _ = ray.get(actors_seen.remote(), timeout=120)
        finally:
            ray.shutdown()
        assert other.token.stat().st_mode & 0o777 == 0o600  # the script's new token: yours alone
    assert address is not None and address.split(":")[1] == own.split(":")[1] != str(other.port)
    assert "RAY_ADDRESS" not in os.environ  # given back: the next start_ray starts afresh


@pytest.mark.slow
def test_a_sweep_beside_a_training_run_both_finish(tmp_path):
    require_shared("anime-mlds2018")
    data = anime_dataset(tmp_path / "data")
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env |= {"PIPELINE_RUNS": str(tmp_path / "runs"), "PIPELINE_DATA": str(tmp_path / "data")}
    train_env = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'train.db'}"}
    tune_env = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'tune.db'}"}

    # On Ray Train (solo=false), whose placement-group cleaner is what two instances broke.
    ray_train = ["--set", "solo=false"]
    train = start(["train", "dcgan", "--data", data, "--epochs", "4", "--workers", "1", *SMALL,
                   *ray_train], train_env)  # fmt: skip
    try:
        time.sleep(20)  # its Ray is up and it trains
        assert train.poll() is None, finish(train, 10)[-3000:]
        # Two trials one at a time: the second needs the CPUs the first one freed.
        tune = start(["tune", "dcgan", "--data", data, "--samples", "2", "--max-epochs", "1",
                      "--workers-per-trial", "1", "--concurrent", "1", "--scheduler", "asha",
                      "--name", "sweep-beside", *SMALL, *FID, *ray_train], tune_env)  # fmt: skip
        tune_output = finish(tune, 600)
    finally:
        train_output = finish(train, 600)
    assert tune.returncode == 0, tune_output[-3000:]
    assert train.returncode == 0, train_output[-3000:]
    for output in (tune_output, train_output):
        for symptom in SYMPTOMS:
            assert symptom not in output, output[-3000:]
