"""`pipeline tune`: the space file format and every bad input, refused before anything starts.

Each bad input ends with one `error:` line and exit status 1, and leaves nothing behind: no
sweep folder, no MLflow run. The real sweeps (Ray) are in test_tune_ray.py.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from pipeline.config import ConfigError
from pipeline.errors import PipelineError
from pipeline.tuning.space import load_space
from tests.conftest import require_shared
from tests.shard_checks import assert_one_line_error
from tests.train_fixtures import anime_dataset

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def anime(tmp_path_factory):
    require_shared("anime-mlds2018")
    return anime_dataset(tmp_path_factory.mktemp("tune-data"))


def write_space(folder: Path, text: str) -> Path:
    path = folder / "space.yaml"
    path.write_text(text)
    return path


def nothing_written() -> None:
    """No sweep folder and no MLflow run: a failed command leaves nothing half-written."""
    assert not (Path(os.environ["PIPELINE_RUNS"]) / "sweeps").exists()
    uri = os.environ["MLFLOW_TRACKING_URI"]
    db = Path(uri.removeprefix("sqlite:///"))
    if db.exists():
        from mlflow import MlflowClient

        client = MlflowClient(uri)
        ids = [e.experiment_id for e in client.search_experiments()]
        assert client.search_runs(ids) == []


def test_every_family_ships_a_space():
    from pipeline.training.config import FAMILIES

    assert sorted(p.stem for p in (REPO / "tune_spaces").glob("*.yaml")) == sorted(FAMILIES)


@pytest.mark.parametrize("family", ["acgan", "dcgan", "wgan", "wgan-gp"])
def test_shipped_spaces_load(family):
    space = load_space(REPO / "tune_spaces" / f"{family}.yaml")
    assert space.metric == "fid" and space.mode == "min"
    assert space.fixed["fid.every"] >= 1  # the metric exists
    assert space.grace_period % space.fixed["fid.every"] == 0  # ASHA's first rung has it
    assert set(space.mutate) <= {p.key for p in space.params}
    if family == "acgan":
        keys = {p.key for p in space.params}
        assert {"lambda_cls", "optim.lr_g", "optim.lr_d", "model.norm_g", "model.norm_d"} <= keys
        assert "srresnet" in next(p for p in space.params if p.key == "model.arch").values


def test_a_key_set_on_the_command_line_is_pinned_not_searched():
    from pipeline.tuning.plan import pin

    space = load_space(REPO / "tune_spaces" / "acgan.yaml")
    said: list[str] = []
    pinned = pin(space, ["model.arch=dcgan", "batch_size=32", "optim.lr_g=1e-4"], said.append)
    keys = {p.key for p in pinned.params}
    assert "model.arch" not in keys and "optim.lr_g" not in keys and "lambda_cls" in keys
    assert "optim.lr_g" not in pinned.mutate
    assert said == ["--set pins optim.lr_g, model.arch: not searched in this sweep"]
    assert pin(space, ["batch_size=32"], said.append) is space


def test_space_format(tmp_path):
    space = load_space(
        write_space(
            tmp_path,
            """
metric: color_gap
mode: min
defaults: {scheduler: pbt, search: grid, samples: 3, max_epochs: 4, workers_per_trial: 1}
pbt: {perturbation_interval: 2, mutate: [optim.lr_g]}
fixed: {model.width_g: 16}
search:
  optim.lr_g: {choice: [1.0e-4, 2e-4]}
  seed: {grid: [0, 1]}
  z_std: {uniform: [0.5, 1.5]}
  lambda_cls: {loguniform: [0.1, 10]}
  model.width_d: {randint: [8, 17]}
""",
        )
    )
    assert (space.scheduler, space.search, space.samples, space.max_epochs) == ("pbt", "grid", 3, 4)
    assert space.fixed == {"model.width_g": 16}
    kinds = {p.key: (p.kind, p.values) for p in space.params}
    assert kinds["optim.lr_g"] == ("choice", (1e-4, "2e-4"))
    assert kinds["lambda_cls"] == ("loguniform", (0.1, 10.0))
    assert space.param("model.width_d").candidates() == (8, 16)  # randint's high is exclusive


@pytest.mark.parametrize(
    "text, words",
    [
        ("serach: {}", ["serach", "unknown key"]),
        ("search: {lr_g: {uniform: [1, 2]}}", ["search.lr_g", "did you mean optim.lr_g"]),
        ("search: {model.norm_g: {choice: []}}", ["search.model.norm_g", "non-empty list"]),
        ("search: {optim.lr_g: {loguniform: [1e-3, 1e-4]}}", ["search.optim.lr_g", "below high"]),
        ("search: {optim.lr_g: {loguniform: [0, 1]}}", ["search.optim.lr_g", "low > 0"]),
        ("search: {seed: {randint: [0.5, 3]}}", ["search.seed", "two integers"]),
        ("search: {seed: {normal: [0, 1]}}", ["search.seed", "unknown distribution"]),
        ("search: {seed: 3}", ["search.seed", "under fixed"]),
        ("search: {epochs: {choice: [1, 2]}}", ["search.epochs", "--max-epochs"]),
        ("search: {}", ["search", "names no config key"]),
        ("mode: up\nsearch: {seed: {choice: [1]}}", ["mode", "min, max"]),
        ("defaults: {scheduler: hyperband}\nsearch: {seed: {choice: [1]}}", ["asha, pbt, fifo"]),
        ("defaults: {samples: 0}\nsearch: {seed: {choice: [1]}}", ["defaults.samples"]),
        ("pbt: {mutate: [z_std]}\nsearch: {seed: {choice: [1]}}", ["pbt.mutate", "z_std"]),
        ("fixed: {model.widht_g: 3}\nsearch: {seed: {choice: [1]}}", ["fixed.model.widht_g"]),
        ("[1, 2]", ["must hold a mapping"]),
    ],
)
def test_bad_space_file_names_file_and_key(tmp_path, text, words):
    path = write_space(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_space(path)
    message = str(caught.value)
    assert str(path) in message
    for word in words:
        assert word in message, message


def test_bad_inputs_fail_before_anything_starts(cli, anime, tmp_path):
    base = ["tune", "acgan", "--data", anime, "--samples", "2", "--max-epochs", "1",
            "--set", "fid.samples=96", "--set", "fid.dims=64"]  # fmt: skip
    rejected = write_space(
        tmp_path, "search: {model.norm_g: {choice: [batch, plaid]}, lambda_cls: {choice: [1]}}"
    )
    result = cli(*base, "--space", rejected, "--metric", "loss_g")
    assert_one_line_error(result, str(rejected), "search.model.norm_g", "'plaid' is rejected")
    wrong_type = write_space(tmp_path, "search: {model.width_g: {choice: [16, wide]}}")
    result = cli(*base, "--space", wrong_type, "--metric", "loss_g")
    assert_one_line_error(result, "search.model.width_g", "'wide' is rejected", "integer")
    negative = write_space(tmp_path, "search: {lambda_cls: {uniform: [-1, 1]}}")
    result = cli(*base, "--space", negative, "--metric", "loss_g")
    assert_one_line_error(result, "search.lambda_cls", "-1.0 is rejected", ">= 0")

    assert_one_line_error(cli(*base, "--scheduler", "hyperband"), "hyperband", "asha, pbt, fifo")
    assert_one_line_error(cli(*base, "--search", "bayes"), "bayes", "random, grid, optuna")
    assert_one_line_error(cli(*base, "--search", "grid"), "--search grid", "lambda_cls")
    too_many = cli(*base, "--workers-per-trial", "64")
    assert_one_line_error(too_many, "a trial needs 64 CPU", "lower --workers-per-trial")
    assert_one_line_error(cli(*base, "--workers-per-trial", "1", "--concurrent", "9"),
                          "--concurrent 9", "holds")  # fmt: skip
    assert_one_line_error(cli(*base, "--gpus-per-worker", "1"), "GPU")
    assert_one_line_error(cli(*base, "--set", "fid.every=0"), "--metric fid", "fid.every")
    assert_one_line_error(cli(*base, "--set", "fid.dims=999"), "fid.dims", "64, 192")
    full_size = cli(*base, "--set", "fid.samples=5000", "--set", "fid.dims=2048")
    assert_one_line_error(full_size, "566 real images are too few")  # the anime sample
    assert_one_line_error(cli(*base, "--name", "../escape"), "--name", "letters")
    assert_one_line_error(cli(*base, "--samples", "0"), "--samples 0")
    assert_one_line_error(
        cli(*base, "--scheduler", "pbt", "--set", "optim.schedule=linear"), "PBT", "linear"
    )
    assert_one_line_error(cli("tune", "stylegan", "--data", anime), "stylegan", "dcgan, acgan")
    assert_one_line_error(cli("tune", "--data", anime), "missing MODEL")
    assert_one_line_error(cli("tune", "acgan"), "no dataset")
    assert_one_line_error(cli("tune", "acgan", "--data", "no-such-data"), "does not exist")
    assert_one_line_error(cli(*base, "--space", tmp_path / "none.yaml"), "none.yaml")
    assert_one_line_error(cli("tune", "--resume"), "--resume needs --name")
    changed = cli("tune", "--resume", "--name", "x", "--samples", "9", "--set", "seed=1")
    assert_one_line_error(changed, "--resume continues sweep x", "--samples, --set")
    unknown = cli("tune", "--resume", "--name", "never-ran")
    assert_one_line_error(unknown, "no sweep named never-ran")
    nothing_written()


def test_optuna_is_an_optional_extra(cli, anime, monkeypatch):
    """A user without the extra: `import optuna` fails (None in sys.modules makes it fail
    here, where the test extra installs it)."""
    monkeypatch.setitem(sys.modules, "optuna", None)
    result = cli("tune", "acgan", "--data", anime, "--search", "optuna", "--samples", "2")
    assert_one_line_error(result, "optuna", "pip install 'pipeline[optuna]'")
    nothing_written()


def test_dry_run_prints_the_plan(cli, anime):
    result = cli(
        "tune", "acgan", "--data", anime, "--samples", "3", "--max-epochs", "2",
        "--set", "fid.samples=96", "--set", "fid.dims=64", "--name", "dry", "--dry-run",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    import yaml

    plan = yaml.safe_load(result.stdout[result.stdout.index("name: dry") :])
    assert plan["scheduler"] == "asha" and plan["samples"] == 3 and plan["trials"] == 3
    assert plan["metric"] == "fid_standin"  # no Inception weights offline: the stand-in
    assert plan["requested_metric"] == "fid"
    assert plan["base"]["fid"]["every"] == 2 and plan["base"]["fid"]["samples"] == 96
    assert plan["base"]["epochs"] == 2 and plan["base"]["family"] == "acgan"
    nothing_written()


def test_tune_and_ui_help_stay_light(cli):
    """Listed by `pipeline --help`; their help imports no torch, ray, mlflow or matplotlib."""
    import subprocess
    import sys

    listed = cli("--help").stdout
    assert "tune" in listed and "ui" in listed
    code = (
        "import sys; from stages.cli import app; from typer.testing import CliRunner; "
        "[CliRunner().invoke(app, [c, '--help']) for c in ('tune', 'ui')]; "
        "print(sorted(m for m in ('torch', 'ray', 'mlflow', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_trial_run_is_recorded_beside_the_sweep_and_checked_when_read(tmp_path):
    """The driver ends a trial's MLflow run from `<sweep>/trials/<trial id>.json` (no server
    needed while MLflow is away); what is in a sweep folder others can write is checked."""
    import json

    from pipeline.tracking import RunHandle
    from pipeline.tuning.plan import SweepPlan

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    plan = SweepPlan(
        name="lam", family="acgan", dataset_path="d", dataset_name="d", uri=uri,
        experiment="sweeps/acgan", storage=str(tmp_path / "sweeps"), space_file="s", space={},
        base={}, scheduler="asha", search="random", samples=2, max_epochs=2, metric="fid",
        requested_metric="fid", mode="min", workers_per_trial=1, concurrent=1, trials=2,
        parent={"uri": uri, "run_id": "f" * 32, "experiment_id": "1", "name": "lam"},
    )  # fmt: skip
    handle = RunHandle(uri, "0123456789abcdef0123456789abcdef", "1", "lam-a1b2c_00000")
    plan.record_trial_run("a1b2c_00000", handle)
    assert plan.trial_run("a1b2c_00000") == handle
    recorded = tmp_path / "sweeps" / "lam" / "trials" / "a1b2c_00000.json"
    recorded.write_text(json.dumps({**handle.to_dict(), "uri": "http://elsewhere:5000"}))
    with pytest.raises(PipelineError, match=r"is not a run of sweep lam in sqlite:") as raised:
        plan.trial_run("a1b2c_00000")
    assert "\n" not in str(raised.value)
    recorded.write_text(json.dumps({**handle.to_dict(), "name": "other-run"}))  # not this trial
    with pytest.raises(PipelineError, match=r"is not a run of sweep lam"):
        plan.trial_run("a1b2c_00000")
    recorded.write_text("[1, 2]")
    with pytest.raises(PipelineError, match="holds no JSON object"):
        plan.trial_run("a1b2c_00000")
    recorded.write_text("{not json")
    with pytest.raises(PipelineError, match="is not valid JSON"):
        plan.trial_run("a1b2c_00000")
    with pytest.raises(PipelineError, match="is not a Tune trial id"):
        plan.trial_run("../../etc/passwd")
