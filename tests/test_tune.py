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
    if family == "acgan":  # lambda_cls trades FID against class accuracy: a Pareto front
        assert (space.metrics, space.modes) == (("fid", "class_acc"), ("min", "max"))
        assert space.to_dict()["metric"] == ["fid", "class_acc"]
    else:
        assert (space.metrics, space.modes) == (("fid",), ("min",))
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
        (
            "metric: [fid, acc_fake]\nmode: min\nsearch: {seed: {choice: [1]}}",
            ["mode:", "1 mode(s) (min) for 2 metric(s) (fid, acc_fake)", "mode: [min, max]"],
        ),
        (
            "metric: fid\nmode: [min, max]\nsearch: {seed: {choice: [1]}}",
            ["mode:", "2 mode(s) (min, max) for 1 metric(s) (fid)"],
        ),
        (
            "metric: [fid, acc_fake, loss_g]\nmode: [min, max, min]\nsearch: {seed: {choice: [1]}}",
            ["metric:", "names 3 metrics", "by two on a Pareto front"],
        ),
        (
            "metric: [fid, acc_fake]\nmode: [min, up]\nsearch: {seed: {choice: [1]}}",
            ["mode:", "'up' is not allowed", "min, max"],
        ),
        (
            "metric: [fid, fid]\nmode: [min, min]\nsearch: {seed: {choice: [1]}}",
            ["metric:", "names a metric twice"],
        ),
        ("metric: []\nsearch: {seed: {choice: [1]}}", ["metric:", "a metric name"]),
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
    assert str(path) in message and "\n" not in message
    for word in words:
        assert word in message, message


def test_two_objectives_in_a_space_file_and_on_the_command_line(tmp_path):
    from pipeline.tuning.space import options_objectives

    path = write_space(
        tmp_path, "metric: [fid, acc_fake]\nmode: [min, max]\nsearch: {seed: {choice: [1]}}"
    )
    space = load_space(path)
    assert (space.metrics, space.modes) == (("fid", "acc_fake"), ("min", "max"))
    assert (space.metric, space.mode) == ("fid", "min")  # the first ranks and schedules
    assert space.to_dict()["metric"] == ["fid", "acc_fake"]
    assert space.to_dict()["mode"] == ["min", "max"]
    single = load_space(write_space(tmp_path, "metric: loss_g\nsearch: {seed: {choice: [1]}}"))
    assert (single.metrics, single.modes) == (("loss_g",), ("min",))
    assert single.to_dict()["metric"] == "loss_g"  # a single one stays a string

    # --metric / --mode: the same rules, each option over the space's value
    assert options_objectives(space, None, None) == (("fid", "acc_fake"), ("min", "max"))
    assert options_objectives(single, "fid, acc_fake", "min,max") == (
        ("fid", "acc_fake"), ("min", "max"))  # fmt: skip
    assert options_objectives(space, "loss_g,acc_real", None) == (
        ("loss_g", "acc_real"), ("min", "max"))  # fmt: skip
    assert options_objectives(space, "loss_g", None) == (("loss_g",), ("min",))  # as before
    assert options_objectives(space, None, "max,max") == (("fid", "acc_fake"), ("max", "max"))
    for metric, mode, words in [
        ("fid,acc_fake", None, ["--mode", "1 mode(s) (min) for 2 metric(s)", "--mode min,max"]),
        ("fid,acc_fake", "min", ["--mode min:", "1 mode(s)"]),
        ("a,b,c", "min,max,min", ["--metric a,b,c:", "names 3 metrics"]),
        ("fid,acc_fake", "min,up", ["--mode min,up:", "'up' is not allowed"]),
    ]:
        with pytest.raises(ConfigError) as caught:
            options_objectives(single, metric, mode)
        for word in words:
            assert word in str(caught.value), str(caught.value)


def pareto_by_hand(points, modes) -> set[int]:
    """The front as its definition reads: the points no other point dominates."""
    signs = [1 if mode == "min" else -1 for mode in modes]

    def valid(p):
        return p is not None and p[0] == p[0] and p[1] == p[1]  # NaN != NaN

    def dominates(q, p):
        better_or_equal = all(s * a <= s * b for s, a, b in zip(signs, q, p, strict=True))
        return better_or_equal and any(s * a < s * b for s, a, b in zip(signs, q, p, strict=True))

    on = set()
    for i, p in enumerate(points):
        if valid(p) and not any(valid(q) and dominates(q, p) for q in points):
            on.add(i)
    return on


NAN = float("nan")


@pytest.mark.parametrize(
    "points, modes, expected",
    [
        # FID (min) against class accuracy (max): a trade-off of three, a tie, the dominated
        (
            [(10, 0.5), (12, 0.7), (9, 0.4), (11, 0.5), (10, 0.5), (15, 0.65), (9, 0.3)],
            ["min", "max"],
            [2, 0, 4, 1],
        ),
        ([(3.0, 1.0)], ["min", "max"], [0]),  # a single trial is its own front
        ([None, (NAN, 0.9), (8.0, NAN), (20.0, 0.1)], ["min", "max"], [3]),  # missing, NaN
        ([None], ["min", "min"], []),
        ([(1, 5), (1, 3), (2, 3), (3, 1), (3, 1)], ["min", "min"], [1, 3, 4]),
        ([(1, 5), (3, 2), (2, 2)], ["max", "max"], [1, 0]),
        ([(1, 1), (3, 2), (2, 9)], ["max", "min"], [1, 0]),
    ],
)
def test_pareto_front_on_fixed_numbers(points, modes, expected):
    from pipeline.tuning.pareto import front

    assert front(points, modes) == expected  # best on the first objective first
    assert set(expected) == pareto_by_hand(points, modes)


@pytest.mark.parametrize("modes", [["min", "max"], ["min", "min"], ["max", "max"], ["max", "min"]])
def test_pareto_front_equals_the_definition_on_many_ties(modes):
    import random

    from pipeline.tuning.pareto import front

    draw = random.Random(21)
    for _ in range(200):
        points = [
            None if draw.random() < 0.1 else (draw.randint(0, 5), draw.choice([NAN, 0, 1, 2, 3]))
            for _ in range(draw.randint(1, 12))
        ]
        assert set(front(points, modes)) == pareto_by_hand(points, modes), points


def test_a_trials_point_is_one_evaluation():
    """The epoch best on the first objective among those that report both, and the second's
    value at that same epoch (not the trial's best of each, which may be two checkpoints)."""
    from pipeline.tuning.pareto import trial_point

    fid = [(1, 90.0), (2, 60.0), (3, 70.0), (4, 60.0)]
    acc = [(1, 0.2), (2, 0.5), (3, 0.9), (4, 0.6)]
    assert trial_point(fid, acc, "min") == (2, 60.0, 0.5)  # the earliest of equal bests
    assert trial_point(fid, [(3, 0.9), (4, 0.6)], "min") == (4, 60.0, 0.6)  # both reported
    assert trial_point(fid, acc, "max") == (1, 90.0, 0.2)
    assert trial_point(fid, [(2, NAN)], "min") is None
    assert trial_point([], acc, "min") is None


def test_the_front_is_coloured_by_the_parameter_that_varies_most_along_it(tmp_path):
    from types import SimpleNamespace

    from PIL import Image

    from pipeline.tuning.pareto import most_varied, plot_front, write_front_csv

    search = load_space(REPO / "tune_spaces" / "acgan.yaml").to_dict()["search"]
    along = [  # lambda_cls spans 2 of its 2 decades; lr_g a sixth of its range; one norm
        {"lambda_cls": 0.1, "optim.lr_g": 2e-4, "model.norm_g": "batch"},
        {"lambda_cls": 10.0, "optim.lr_g": 3e-4, "model.norm_g": "batch"},
        {"lambda_cls": 1.0, "optim.lr_g": 2.5e-4, "model.norm_g": "batch"},
    ]
    assert most_varied(search, along) == "lambda_cls"
    assert most_varied(search, [dict(p, lambda_cls=1.0) for p in along]) == "optim.lr_g"
    names = [dict(p, lambda_cls=1.0, **{"optim.lr_g": 2e-4}) for p in along]
    names[0]["model.norm_g"] = "layer"
    assert most_varied(search, names) == "model.norm_g"  # a choice when no number varies
    assert most_varied(search, along[:1]) is None

    rows = [
        SimpleNamespace(trial_id=f"a_0000{i}", run_id=f"r{i}", params=p, point=point)
        for i, (p, point) in enumerate(
            zip(along, [(2, 50.0, 0.2), (4, 80.0, 0.9), (4, 60.0, 0.1)], strict=True)
        )
    ]
    front = rows[:2]
    plot = plot_front(tmp_path / "plots" / "pareto.png", rows, front, ["fid_standin",
                      "acc_fake"], ["min", "max"], search)  # fmt: skip
    with Image.open(plot) as image:
        assert image.size[0] > 300 and image.getextrema()[0][0] < 255
    table = write_front_csv(tmp_path / "pareto.csv", front, ["fid_standin", "acc_fake"])
    lines = table.read_text().splitlines()
    assert (
        lines[0] == "trial_id,run_id,epoch,fid_standin,acc_fake,lambda_cls,model.norm_g,optim.lr_g"
    )
    assert lines[1] == "a_00000,r0,2,50.0,0.2,0.1,batch,0.0002"


def test_a_metric_no_trial_reports_is_one_line_naming_what_they_do():
    from pipeline.tuning.summary import TrialRow, _no_front

    plan = sweep_plan("/tmp", objectives=[
        {"metric": "fid_standin", "requested": "fid", "mode": "min"},
        {"metric": "class_acc", "requested": "class_acc", "mode": "max"},
    ])  # fmt: skip
    rows = [
        TrialRow("t1", "r1", "FINISHED", 2, {}, 50.0, 2, 50.0, None,
                 reported=("acc_fake", "epoch", "fid_standin")),
        TrialRow("t2", None, "FAILED", 0, {}, None, None, None, None),
    ]  # fmt: skip
    line = _no_front(plan, rows)
    assert line == (
        "no trial reported class_acc, so the sweep has no Pareto front (pareto.csv, "
        "plots/pareto.png); the trials report: acc_fake, epoch, fid_standin"
    )
    rows[0].reported += ("class_acc",)  # both, but never at the same epoch
    assert _no_front(plan, rows).startswith("no trial reported fid_standin and class_acc at")


def test_optuna_searches_both_objectives_and_asha_pbt_judge_by_the_first():
    """Tune's own metric stays unset (it would replace Optuna's list): the searcher and the
    scheduler get theirs."""
    pytest.importorskip("optuna", reason="the optuna extra is not installed")
    from ray.tune.schedulers import ASHAScheduler, PopulationBasedTraining
    from ray.tune.search.optuna import OptunaSearch

    from pipeline.tuning.space import Param, Space
    from pipeline.tuning.tuner import scheduler, searcher

    two = [{"metric": "fid_standin", "requested": "fid", "mode": "min"},
           {"metric": "acc_fake", "requested": "acc_fake", "mode": "max"}]  # fmt: skip
    plan = sweep_plan("/runs", search="optuna", objectives=two)
    found = searcher(plan)
    assert isinstance(found, OptunaSearch)
    assert (found.metric, found.mode) == (["fid_standin", "acc_fake"], ["min", "max"])
    single = searcher(sweep_plan("/runs", search="optuna", metric="loss_g"))
    assert (single.metric, single.mode) == ("loss_g", "min")
    assert searcher(sweep_plan("/runs", objectives=two)) is None  # random: Tune's own
    space = Space(file="s", params=(Param("optim.lr_g", "loguniform", (1e-4, 1e-3)),))
    asha = scheduler(plan, space)
    assert isinstance(asha, ASHAScheduler) and (asha._metric, asha._mode) == ("fid_standin", "min")
    pbt = scheduler(sweep_plan("/runs", scheduler="pbt", objectives=two), space)
    assert isinstance(pbt, PopulationBasedTraining) and pbt._metric == "fid_standin"


def test_a_plan_from_before_two_objectives_still_reads():
    """sweep.json and the pickled callback of a sweep started before `objectives` existed:
    --resume reads them as the one objective they had."""
    import pickle
    from dataclasses import asdict

    from pipeline.tuning.callbacks import TrialStatus
    from pipeline.tuning.plan import SweepPlan
    from pipeline.tuning.trust import check_plan

    plan = sweep_plan("/runs")
    old = {k: v for k, v in asdict(plan).items() if k != "objectives"}
    checked = check_plan(old, "sweep.json", SweepPlan, name="lam", storage=plan.storage,
                         uri=plan.uri)  # fmt: skip
    assert SweepPlan.from_dict(checked).metrics == ("fid",)
    crafted = {**old, "objectives": [{"metric": "fid", "requested": "fid", "mode": "up"}]}
    with pytest.raises(PipelineError, match="objectives holds"):
        check_plan(crafted, "sweep.json", SweepPlan, name="lam", storage=plan.storage,
                   uri=plan.uri)  # fmt: skip
    callback = TrialStatus(plan)
    del callback.plan.__dict__["objectives"]  # as an older version pickled it
    restored = pickle.loads(pickle.dumps(callback))
    assert restored.plan.metrics == ("fid",) and restored.plan.modes == ("min",)


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
    one_mode = cli(*base, "--mode", "min")  # the acgan space ranks on two metrics
    assert_one_line_error(
        one_mode, "--mode min:", "1 mode(s) (min) for 2 metric(s) (fid, class_acc)"
    )
    assert_one_line_error(cli(*base, "--metric", "fid,a,b"), "--metric fid,a,b:", "3 metrics")
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
    assert plan["objectives"] == [  # the acgan space's two, FID as the stand-in names it
        {"metric": "fid_standin", "requested": "fid", "mode": "min"},
        {"metric": "class_acc", "requested": "class_acc", "mode": "max"},
    ]
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

    plan = sweep_plan(tmp_path)
    handle = RunHandle(plan.uri, "0123456789abcdef0123456789abcdef", "1", "lam-a1b2c_00000")
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


def sweep_plan(folder, **fields):
    """A plan as plan_sweep makes one (the first objective is also metric and mode)."""
    from pipeline.tuning.plan import SweepPlan

    uri = f"sqlite:///{Path(folder) / 'mlflow.db'}"
    first = (fields.get("objectives") or [{}])[0]
    return SweepPlan(**{
        "name": "lam", "family": "acgan", "dataset_path": "d", "dataset_name": "d", "uri": uri,
        "experiment": "sweeps/acgan", "storage": str(Path(folder) / "sweeps"), "space_file": "s",
        "space": {}, "base": {}, "scheduler": "asha", "search": "random", "samples": 2,
        "max_epochs": 2, "metric": first.get("metric", "fid"),
        "requested_metric": first.get("requested", "fid"), "mode": first.get("mode", "min"),
        "workers_per_trial": 1, "concurrent": 1, "trials": 2,
        "parent": {"uri": uri, "run_id": "f" * 32, "experiment_id": "1", "name": "lam"},
        **fields,
    })  # fmt: skip


@pytest.mark.slow  # a fresh MLflow store: its migrations take ~9 s here
def test_a_two_objective_summary_in_mlflow_without_ray(tmp_path):
    """summarise() on trials written here: pareto.csv and plots/pareto.png on the parent
    run, the front's runs tagged; and with a metric no trial reports, one line naming what
    they do report while trials.csv and the other plots are still written."""
    from mlflow import MlflowClient

    from pipeline import tracking
    from pipeline.tuning.pareto import trial_point
    from pipeline.tuning.summary import TrialRow, summarise

    objectives = [
        {"metric": "fid_standin", "requested": "fid", "mode": "min"},
        {"metric": "acc_fake", "requested": "acc_fake", "mode": "max"},
    ]
    space = {"search": {"lambda_cls": {"loguniform": [0.1, 10.0]}}}
    uri = sweep_plan(tmp_path).uri
    tracking.prepare_store(uri)
    client = MlflowClient(uri)

    def summary(name: str, curves: dict, second: str):
        parent = tracking.start_run(uri, "sweeps/acgan", name, params={})
        both = [objectives[0], {**objectives[1], "metric": second}]
        plan = sweep_plan(tmp_path, name=name, parent=parent.to_dict(), space=space,
                          objectives=both)  # fmt: skip
        rows = []
        for trial_id, (lam, fid, acc) in curves.items():
            run = tracking.start_run(uri, "sweeps/acgan", f"{name}-{trial_id}", params={},
                                     parent_run_id=parent.run_id)  # fmt: skip
            plan.record_trial_run(trial_id, run)
            got = acc if second == "acc_fake" else []
            best = min(fid, key=lambda point: point[1])
            rows.append(TrialRow(
                trial_id, run.run_id, "FINISHED", 2, {"lambda_cls": lam}, best[1], best[0],
                fid[-1][1], None, curve=fid, second=got, point=trial_point(fid, got, "min"),
                reported=("acc_fake", "epoch", "fid_standin"),
            ))  # fmt: skip
        result = summarise(plan, rows, "FINISHED")
        tracking.deliver_all()
        return parent, result

    trials = {  # (lambda_cls, FID per epoch, acc_fake per epoch)
        "t_00000": (0.2, [(1, 40.0), (2, 30.0)], [(1, 0.3), (2, 0.4)]),  # (30, 0.4)
        "t_00001": (5.0, [(1, 45.0), (2, 50.0)], [(1, 0.9), (2, 0.95)]),  # (45, 0.9)
        "t_00002": (1.0, [(1, 46.0), (2, 47.0)], [(1, 0.5), (2, 0.8)]),  # dominated
    }
    parent, result = summary("two", trials, "acc_fake")
    assert [row.trial_id for row in result.front] == ["t_00000", "t_00001"] and not result.notes
    files = {item.path for item in client.list_artifacts(parent.run_id)}
    assert {"trials.csv", "pareto.csv", "plots"} <= files
    plots = {item.path for item in client.list_artifacts(parent.run_id, "plots")}
    assert "plots/pareto.png" in plots
    for trial_id, expected in [("t_00000", "true"), ("t_00001", "true"), ("t_00002", "false")]:
        run = client.get_run(next(r.run_id for r in result.trials if r.trial_id == trial_id))
        assert run.data.tags["pipeline.pareto"] == expected
    table = (result.summary / "pareto.csv").read_text().splitlines()
    assert table[1:] == [f"t_00000,{result.front[0].run_id},2,30.0,0.4,0.2",
                         f"t_00001,{result.front[1].run_id},1,45.0,0.9,5.0"]  # fmt: skip

    parent, result = summary("missing", trials, "class_acc")
    assert result.front == [] and result.notes == [
        "no trial reported class_acc, so the sweep has no Pareto front (pareto.csv, "
        "plots/pareto.png); the trials report: acc_fake, epoch, fid_standin"
    ]
    files = {item.path for item in client.list_artifacts(parent.run_id)}
    assert "trials.csv" in files and "pareto.csv" not in files
    assert result.best.trial_id == "t_00000"  # still ranked by the first objective
    assert "pipeline.pareto" not in client.get_run(result.best.run_id).data.tags
