"""The parts of `pipeline train` and `pipeline tune` around Ray that need no Ray running:
resource checks and sizing (`pipeline.cluster`), Ray's errors as one line, the search-space
domains table, the Ray run folders, and the sweep plan that Tune pickles."""

from __future__ import annotations

import pickle
from dataclasses import FrozenInstanceError, replace
from types import SimpleNamespace

import pytest

from pipeline import cluster
from pipeline.config import ConfigError
from pipeline.errors import PipelineError
from pipeline.settings import verbose
from pipeline.training.driver import claim_run_folder
from pipeline.tuning.plan import SweepPlan
from pipeline.tuning.space import KINDS, Param, Space


def run(workers=2, cpus=1, gpus=0.0):
    return SimpleNamespace(workers=workers, cpus_per_worker=cpus, gpus_per_worker=gpus)


MACHINE = cluster.Resources(cpu=4, gpu=0, where="this machine")
GPU_BOX = cluster.Resources(cpu=16, gpu=2, where="the Ray cluster")


def test_a_run_that_fits_passes():
    cluster.check_fits(run(workers=4), MACHINE)
    cluster.check_fits(run(workers=2, gpus=1), GPU_BOX)


def test_a_run_asking_too_many_gpus_or_cpus_is_refused():
    with pytest.raises(
        PipelineError, match="2 worker.* x 1 GPU = 2 GPUs asked, this machine has 0"
    ):
        cluster.check_fits(run(gpus=1), MACHINE)
    with pytest.raises(PipelineError, match="8 CPUs asked, this machine has 4; lower --workers"):
        cluster.check_fits(run(workers=8), MACHINE)
    with pytest.raises(PipelineError, match="the Ray cluster has 2; lower --workers or --gpus"):
        cluster.check_fits(run(workers=3, gpus=1), GPU_BOX)


def test_trials_at_once_is_as_many_as_fit_or_as_asked():
    assert cluster.trials_at_once(run(workers=2), 0, MACHINE) == 2
    assert cluster.trials_at_once(run(workers=1), 3, MACHINE) == 3
    assert cluster.trials_at_once(run(workers=2, gpus=1), 0, GPU_BOX) == 1  # GPUs bound it
    assert cluster.trials_at_once(run(workers=1, cpus=0), 0, MACHINE) == 10**6


def test_trials_that_cannot_fit_are_refused():
    with pytest.raises(PipelineError, match="a trial needs 8 CPU .*this machine has 4 CPU"):
        cluster.trials_at_once(run(workers=8), 0, MACHINE)
    with pytest.raises(PipelineError, match="a trial needs 2 CPU and 1 GPU"):
        cluster.trials_at_once(run(workers=2, gpus=0.5), 0, MACHINE)
    with pytest.raises(PipelineError, match="--concurrent 3: .*holds 2 at a time"):
        cluster.trials_at_once(run(workers=2), 3, MACHINE)


class WorkerDied(Exception):
    pass


class Trainer:
    def __init__(self, error: BaseException | None = None):
        self.error = error

    def fit(self):
        if self.error is not None:
            raise self.error
        return "result"


def test_fit_returns_the_result_and_shows_a_worker_error_as_one_line():
    assert cluster.fit(Trainer()) == "result"
    inner = WorkerDied("CUDA out of\nmemory")
    wrapped = RuntimeError("Training failed: pages of traceback")
    wrapped.__cause__ = inner
    with pytest.raises(PipelineError, match="^training failed: WorkerDied: CUDA out of memory$"):
        cluster.fit(Trainer(wrapped))


def test_fit_keeps_our_own_errors_and_finds_ray_worker_failures():
    with pytest.raises(PipelineError, match="^bad input$"):
        cluster.fit(Trainer(PipelineError("bad input")))
    group = RuntimeError("worker group failed")
    group.worker_failures = {0: ValueError("rank 0 broke")}
    assert cluster.root_cause(group) == "ValueError: rank 0 broke"


def test_each_fit_gets_a_fresh_ray_run_folder(tmp_path):
    """Ray Train resumes from a run folder that exists; each fit claims its own."""
    storage = tmp_path / "runs"
    assert claim_run_folder(storage, "dcgan-anime") == "dcgan-anime"
    assert claim_run_folder(storage, "dcgan-anime") == "dcgan-anime-2"
    assert claim_run_folder(storage, "dcgan-anime") == "dcgan-anime-3"
    assert sorted(p.name for p in storage.iterdir()) == [
        "dcgan-anime", "dcgan-anime-2", "dcgan-anime-3"
    ]  # fmt: skip


def test_every_distribution_has_a_ray_domain():
    from ray import tune as ray_tune

    from pipeline.tuning.tuner import DOMAINS, ray_space

    assert set(DOMAINS) == set(KINDS)
    space = Space(
        file="space.yaml",
        params=(
            Param("lambda_cls", "loguniform", (0.1, 10.0)),
            Param("z_std", "uniform", (0.5, 1.5)),
            Param("model.width_g", "randint", (32, 65)),
            Param("model.norm_g", "choice", ("batch", "instance")),
            Param("seed", "grid", (0, 1)),
        ),
    )
    domains = ray_space(space, "random")
    assert isinstance(domains["lambda_cls"], ray_tune.search.sample.Float)
    assert isinstance(domains["model.width_g"], ray_tune.search.sample.Integer)
    assert isinstance(domains["model.norm_g"], ray_tune.search.sample.Categorical)
    assert domains["seed"] == {"grid_search": [0, 1]}
    assert ray_space(space, "grid")["model.norm_g"] == {"grid_search": ["batch", "instance"]}


def test_an_unknown_distribution_is_refused():
    from pipeline.tuning.tuner import ray_space

    space = Space(file="space.yaml", params=(Param("z_std", "gaussian", (0.0, 1.0)),))
    with pytest.raises(ConfigError, match="search.z_std: unknown distribution 'gaussian'"):
        ray_space(space, "random")


def plan() -> SweepPlan:
    return SweepPlan(
        name="s", family="acgan", dataset_path="/d", dataset_name="d", uri="sqlite:///m.db",
        experiment="e", storage="/runs/sweeps", space_file="/space.yaml", space={}, base={},
        scheduler="asha", search="random", samples=2, max_epochs=3, metric="fid_standin",
        requested_metric="fid", mode="min", workers_per_trial=1, concurrent=0, trials=2,
        parent={"run_id": "abc"},
    )  # fmt: skip


def test_the_plan_is_frozen_and_the_callback_pickles_with_it():
    from pipeline.tuning.callbacks import TrialStatus

    with pytest.raises(FrozenInstanceError):
        plan().concurrent = 2
    assert replace(plan(), concurrent=2).concurrent == 2
    assert SweepPlan.from_dict(plan().to_dict()) == plan()
    callback = pickle.loads(pickle.dumps(TrialStatus(plan())))
    assert callback.plan == plan() and callback.plan.parent_run_id == "abc"


def test_a_callback_pickled_with_the_plan_as_a_dict_still_loads():
    """Sweeps saved before the plan was a dataclass resume with their pickled callback."""
    from pipeline.tuning.callbacks import TrialStatus

    old = TrialStatus(plan())
    old.plan = plan().to_dict()
    assert pickle.loads(pickle.dumps(old)).plan == plan()


def test_workers_get_the_storage_and_tracking_variables(monkeypatch):
    from pipeline.cluster import FORWARDED, worker_env

    for name in FORWARDED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:8333")
    monkeypatch.setenv("PIPELINE_RUNS", "s3://pipeline/runs")
    monkeypatch.setenv("UNRELATED", "x")
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert worker_env() == {
        "RAY_ADDRESS": "10.0.0.1:6379",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:8333",
        "PIPELINE_RUNS": "s3://pipeline/runs",
    }


def test_a_dashboard_url_as_ray_address_is_one_line(cli, monkeypatch, tmp_path):
    from tests.conftest import require_shared
    from tests.shard_checks import assert_one_line_error
    from tests.train_fixtures import anime_dataset

    require_shared("anime-mlds2018", "extra_data")
    data = anime_dataset(tmp_path)
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")
    result = cli("train", "dcgan", "--data", data, "--workers", "1", "--batch-size", "32")
    assert_one_line_error(result, "RAY_ADDRESS=http://127.0.0.1:8265", "RAY_API_SERVER_ADDRESS")


def test_a_submitted_jobs_own_variables_are_not_forwarded_again(monkeypatch):
    """Inside `ray job submit --runtime-env-json '{"env_vars": ...}'` Ray refuses a driver
    whose runtime env names the same variables: those are left to the job."""
    import json

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:8333")
    monkeypatch.setenv("PIPELINE_RUNS", "s3://bucket/runs")
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert {"AWS_ENDPOINT_URL", "PIPELINE_RUNS"} <= set(cluster.worker_env())
    job = {"runtime_env": {"env_vars": {"AWS_ENDPOINT_URL": "http://127.0.0.1:8333"}}}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(job))
    forwarded = cluster.worker_env()
    assert "AWS_ENDPOINT_URL" not in forwarded and forwarded["PIPELINE_RUNS"] == "s3://bucket/runs"


def test_ray_worker_pool_warning_is_kept_off_the_console(capsys, monkeypatch):
    """Ray's raylet warns when many worker processes have started; a sweep on a small machine
    has a Tune function, a Train controller and workers per trial by design, so the driver's
    console drops that warning (and keeps every other line) unless --verbose."""
    from ray._private import worker

    monkeypatch.setattr(worker, "print_to_stdstream", worker.print_to_stdstream)  # restored
    cluster.quiet_ray_console()
    cluster.quiet_ray_console()  # twice: wrapped once
    noise = (
        "WARNING: 8 PYTHON worker processes have been started on node: abc with address: "
        "127.0.0.1, which is 4x the maximum expected startup concurrency (2)."
    )
    worker.print_to_stdstream(
        {"lines": [noise, "a worker's own line"], "pid": "raylet", "is_err": False},
        ignore_prefix=False,
    )
    worker.print_to_stdstream({"lines": [noise], "pid": "raylet", "is_err": False}, False)
    out = capsys.readouterr().out
    assert "a worker's own line" in out and "PYTHON worker processes" not in out


def test_verbose_is_an_option_of_the_commands_that_start_ray(cli, monkeypatch):
    monkeypatch.delenv("PIPELINE_VERBOSE", raising=False)
    assert not verbose()
    for command in ("train", "tune", "quickstart"):
        result = cli(command, "--help")
        assert "--verbose" in result.output, command
    monkeypatch.setenv("PIPELINE_VERBOSE", "1")
    assert verbose()


def test_a_local_rays_token_is_written_for_this_user_alone(monkeypatch, tmp_path):
    """Before a local Ray starts, a missing token is written mode 600 (Ray itself would write a
    world-readable one); an existing token, RAY_AUTH_TOKEN or RAY_AUTH_MODE=disabled: nothing."""
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cluster.own_token()
    token = tmp_path / "home" / ".ray" / "auth_token"
    assert token.stat().st_mode & 0o777 == 0o600
    assert len(token.read_text()) == 64 and int(token.read_text(), 16) >= 0
    first = token.read_text()
    cluster.own_token()
    assert token.read_text() == first and sorted(token.parent.iterdir()) == [token]

    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "team" / "token"))
    cluster.own_token()
    assert (tmp_path / "team" / "token").stat().st_mode & 0o777 == 0o600
    for name, value in (("RAY_AUTH_MODE", "disabled"), ("RAY_AUTH_TOKEN", "x" * 64)):
        with monkeypatch.context() as scoped:
            scoped.setenv(name, value)
            scoped.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / name))
            cluster.own_token()
            assert not (tmp_path / name).exists()
