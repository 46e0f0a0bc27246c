"""`pipeline tune` end to end: real Ray Tune sweeps of real Ray Train trials, a real MLflow
store, the anime hair/eye sample at 32 px, FID on the stand-in backbone (offline).

Slow: every trial pays Ray Train's start-up (~15 s here). On 2 CPUs, trials of 1 worker run
two at a time; the resume test runs trials of 2 workers (DDP over gloo), one at a time.

The ASHA sweep (`asha_sweep`, shared by several tests) ranks on two objectives as the shipped
acgan space does: FID and class_acc (how often the dataset's class judge, trained on the real
labels, reads a trial's images as the hair and eyes G was asked for; higher is better).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import require_shared
from tests.train_fixtures import anime_dataset

pytestmark = [pytest.mark.slow, pytest.mark.ray]

REPO = Path(__file__).resolve().parents[1]
SECOND = "class_acc"  # the sweeps' second objective: the anime judge's reading of the trials
SMALL = [
    "--set", "model.width_g=16", "--set", "model.width_d=16", "--set", "model.z_dim=32",
    "--set", "batch_size=32", "--set", "fid.samples=96", "--set", "fid.dims=64",
    "--set", "fid.every=1", "--set", "model.arch=dcgan",  # SRResNet: 10x the CPU step
]  # fmt: skip


@pytest.fixture(scope="module")
def anime(tmp_path_factory):
    """The anime faces with a val split and a (briefly trained) class judge of hair and eyes,
    so trials report class_acc."""
    from pipeline.judge import train_judge

    require_shared("anime-mlds2018")
    dataset = anime_dataset(tmp_path_factory.mktemp("tune-data"), val=0.15)
    train_judge(dataset, epochs=3, say=lambda line: None)
    return dataset


def children(client, parent_id: str) -> list:
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, f"tags.`mlflow.parentRunId` = '{parent_id}'")


def parent_run(client, sweep: str):
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, f"tags.`pipeline.sweep` = '{sweep}'")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1, [r.info.run_name for r in parents]
    return parents[0]


def artifacts(client, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return found


@pytest.fixture(scope="module")
def asha_sweep(anime, tmp_path_factory):
    """The acgan space as shipped (rung at epoch 1, so ASHA can stop a trial in 2 epochs; its
    second objective SECOND): 4 trials x 2 epochs, 1 worker each, two at a time; the best
    exported and registered."""
    from typer.testing import CliRunner

    from stages.cli import app

    folder = tmp_path_factory.mktemp("asha")
    space = yaml.safe_load((REPO / "tune_spaces" / "acgan.yaml").read_text())
    space["asha"]["grace_period"] = 1
    assert space["metric"] == ["fid", SECOND] and space["mode"] == ["min", "max"]
    (folder / "acgan.yaml").write_text(yaml.safe_dump(space))
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", uri)
        env.setenv("PIPELINE_RUNS", str(folder / "runs"))
        env.setenv("PIPELINE_DATA", str(folder / "data"))
        result = CliRunner().invoke(
            app,
            ["tune", "acgan", "--data", str(anime), "--space", str(folder / "acgan.yaml"),
             "--samples", "4", "--max-epochs", "2", "--workers-per-trial", "1",
             "--scheduler", "asha", "--name", "asha", *SMALL,
             "--export-best", str(folder / "best"), "--register", "anime-acgan"],
            env={"COLUMNS": "200"},
            catch_exceptions=False,
        )  # fmt: skip
    return {"result": result, "uri": uri, "folder": folder}


def test_asha_sweep_leaves_a_readable_sweep_in_mlflow(asha_sweep):
    from mlflow import MlflowClient

    result = asha_sweep["result"]
    assert result.exit_code == 0, result.output
    assert "ranking trials by fid_standin" in result.stdout  # offline: the stand-in backbone
    assert "best trials by fid_standin" in result.stdout  # the Rich table
    client = MlflowClient(asha_sweep["uri"])
    parent = parent_run(client, "asha")
    assert parent.info.status == "FINISHED"
    params = parent.data.params
    assert params["sweep.scheduler"] == "asha" and params["sweep.trials"] == "4"
    assert params["sweep.metric"] == f"fid_standin, {SECOND}"
    assert params["sweep.mode"] == "min, max"
    assert params["space.lambda_cls"] == "loguniform(0.1, 10.0)"
    assert params["fixed.fid.samples"] == "96"  # the value in force (--set beat the file)

    trials = children(client, parent.info.run_id)
    assert len(trials) == 4
    assert len({t.data.tags["ray.trial_id"] for t in trials}) == 4
    for trial in trials:
        p = trial.data.params
        assert p["family"] == "acgan" and p["workers"] == "1" and p["epochs"] == "2"
        assert 0.1 <= float(p["lambda_cls"]) <= 10.0
        assert p["model.norm_g"] in ("batch", "instance", "layer")
        history = client.get_metric_history(trial.info.run_id, "fid_standin")
        epochs = [m.value for m in client.get_metric_history(trial.info.run_id, "epoch")]
        assert len(history) == len(epochs) >= 1 and epochs == sorted(set(epochs))
        # each evaluation of an ACGAN trial: the judge's reading, and its own val accuracy
        # beside it, stepped as FID is
        judged = client.get_metric_history(trial.info.run_id, "class_acc")
        own = client.get_metric_history(trial.info.run_id, "judge_val_acc")
        assert [m.step for m in judged] == [m.step for m in own] == [m.step for m in history]
        assert all(0 <= m.value <= 1 for m in judged) and "class_acc/hair" in trial.data.metrics
        # FINISHED ran the budget; KILLED was stopped by ASHA at its rung (epoch 1)
        assert trial.info.status == ("FINISHED" if epochs[-1] == 2 else "KILLED"), epochs
        files = artifacts(client, trial.info.run_id)
        assert {"config.yaml", "best/checkpoint.pt", "checkpoints/checkpoint.pt"} <= files
        assert any(f.startswith("samples/epoch-001") for f in files)

    best_id = parent.data.tags["pipeline.best_run_id"]
    best = client.get_run(best_id)
    assert best.data.tags["pipeline.best"] == "true"
    assert parent.data.tags["pipeline.best_trial"] == best.data.tags["ray.trial_id"]
    best_value = min(
        min(m.value for m in client.get_metric_history(t.info.run_id, "fid_standin"))
        for t in trials
    )
    assert parent.data.metrics["best_fid_standin"] == pytest.approx(best_value)

    files = artifacts(client, parent.info.run_id)
    assert {"trials.csv", "sweep.json", "space/acgan.yaml"} <= files
    assert "plots/fid_standin-curves.png" in files
    for key in ("lambda_cls", "optim.lr_g", "optim.lr_d", "model.norm_g", "model.norm_d"):
        assert f"plots/fid_standin-vs-{key}.png" in files
    summary = asha_sweep["folder"] / "runs" / "sweeps" / "asha" / "summary"
    from PIL import Image

    with Image.open(summary / "plots" / "fid_standin-curves.png") as plot:
        assert plot.size[0] > 300 and plot.getextrema()[0][0] < 255  # something drawn
    rows = (summary / "trials.csv").read_text().splitlines()
    assert len(rows) == 5 and rows[0].startswith(
        "trial_id,run_id,status,epochs,best_fid_standin,best_epoch,last_fid_standin,"
        f"last_{SECOND},pareto_epoch,pareto_fid_standin,pareto_{SECOND},on_front,"
    )


def test_two_objectives_leave_their_pareto_front_on_the_parent_run(asha_sweep, tmp_path):
    """pareto.csv holds the front computed here from what MLflow has of each trial (its point:
    the epoch best on FID, and SECOND at that epoch); the front's runs are tagged; the plot
    is on the parent run."""
    import csv

    from mlflow import MlflowClient

    result = asha_sweep["result"]
    assert result.exit_code == 0, result.output
    assert "asha stops trials by fid_standin alone (the first objective)" in result.stdout
    assert f"Pareto front of fid_standin (min) and {SECOND} (max): " in result.stdout
    client = MlflowClient(asha_sweep["uri"])
    parent = parent_run(client, "asha")
    trials = {t.data.tags["ray.trial_id"]: t for t in children(client, parent.info.run_id)}

    def by_epoch(run_id: str, key: str) -> dict[int, float]:
        epoch = {m.step: int(m.value) for m in client.get_metric_history(run_id, "epoch")}
        return {epoch[m.step]: m.value for m in client.get_metric_history(run_id, key)}

    points = {}
    for trial_id, trial in trials.items():
        fid = by_epoch(trial.info.run_id, "fid_standin")
        second = by_epoch(trial.info.run_id, SECOND)
        epoch = min((e for e in fid if e in second), key=lambda e: (fid[e], e))
        points[trial_id] = (epoch, fid[epoch], second[epoch])

    def dominates(q, p):  # lower FID, higher SECOND
        return q[1] <= p[1] and q[2] >= p[2] and (q[1] < p[1] or q[2] > p[2])

    front = {t for t, p in points.items() if not any(dominates(q, p) for q in points.values())}
    assert front, points
    table = Path(client.download_artifacts(parent.info.run_id, "pareto.csv", str(tmp_path)))
    rows = list(csv.DictReader(table.read_text().splitlines()))
    assert {row["trial_id"] for row in rows} == front
    assert [float(r["fid_standin"]) for r in rows] == sorted(points[t][1] for t in front)
    for row in rows:
        epoch, fid, second = points[row["trial_id"]]
        assert int(row["epoch"]) == epoch
        assert float(row["fid_standin"]) == pytest.approx(fid, rel=1e-6)
        assert float(row[SECOND]) == pytest.approx(second, rel=1e-6)
        trial = trials[row["trial_id"]]
        assert row["run_id"] == trial.info.run_id
        assert float(row["lambda_cls"]) == pytest.approx(float(trial.data.params["lambda_cls"]))
        assert row["model.norm_g"] == trial.data.params["model.norm_g"]
    for trial_id, trial in trials.items():
        assert trial.data.tags["pipeline.pareto"] == ("true" if trial_id in front else "false")
    assert "plots/pareto.png" in artifacts(client, parent.info.run_id)


def test_best_generator_exported_and_registered(asha_sweep, tmp_path):
    from mlflow import MlflowClient

    from pipeline.training import checkpoint as ckpt

    assert asha_sweep["result"].exit_code == 0
    exported = asha_sweep["folder"] / "best" / "generator.pt"
    state = ckpt.load(exported)
    assert {"G_ema", "config", "labels"} <= set(state) and "D" not in state
    assert state["config"]["family"] == "acgan"
    client = MlflowClient(asha_sweep["uri"])
    versions = client.search_model_versions("name = 'anime-acgan'")
    assert len(versions) == 1
    best_id = parent_run(client, "asha").data.tags["pipeline.best_run_id"]
    assert versions[0].run_id == best_id
    assert "best/generator.pt" in artifacts(client, best_id)

    # The exported generator draws, conditioned on a class, with the trained label names.
    from typer.testing import CliRunner

    from stages.cli import app

    out = tmp_path / "grid.png"
    drawn = CliRunner().invoke(
        app, ["sample", str(exported), "--out", str(out), "--class", "eyes=red", "--n", "8"]
    )
    assert drawn.exit_code == 0 and out.stat().st_size > 0, drawn.output


def test_mlflow_ui_shows_the_sweep_in_a_browser(asha_sweep):
    """`pipeline ui` on a free loopback port, opened in headless Chromium: the experiment page
    shows the sweep and, expanded, its trials; each trial's page shows its FID; the sweep's
    run shows its Pareto plot."""
    from tests.browser import Browser, compare_url, pipeline_ui, require_chromium

    chromium = require_chromium()
    from mlflow import MlflowClient

    client = MlflowClient(asha_sweep["uri"])
    parent = parent_run(client, "asha")
    trials = children(client, parent.info.run_id)
    with pipeline_ui(asha_sweep["uri"]) as url, Browser(*chromium) as browser:
        browser.open(f"{url}/#/experiments/{parent.info.experiment_id}/runs")
        browser.wait_for_text("asha")
        browser.run(  # expand the sweep's parent run: its trials are nested under it
            "const row = Array.from(document.querySelectorAll('[role=row]'))"
            ".find(r => r.innerText.split('\\n').includes('asha'));"
            "row.querySelector('button').click();"
        )
        browser.wait_for_text(*(t.info.run_name for t in trials))
        ids = [t.info.run_id for t in trials]
        browser.open(compare_url(url, parent.info.experiment_id, ids))  # side by side
        text = browser.wait_for_text("Comparing 4 Runs", "lambda_cls")
        for trial in trials:
            assert trial.info.run_name in text
        browser.scroll_to_text("fid_standin")  # the metrics table shows a dozen rows at a time
        for trial in trials:
            browser.open(f"{url}/#/experiments/{parent.info.experiment_id}/runs/"
                         f"{trial.info.run_id}")  # fmt: skip
            value = repr(trial.data.metrics["fid_standin"])
            browser.wait_for_text(trial.info.run_name, "fid_standin", value[:8])
        from PIL import Image

        plot = asha_sweep["folder"] / "runs" / "sweeps" / "asha" / "summary" / "plots"
        with Image.open(plot / "pareto.png") as image:
            width = image.size[0]
        browser.open(f"{url}/#/experiments/{parent.info.experiment_id}/runs/"
                     f"{parent.info.run_id}/artifacts/plots/pareto.png")  # fmt: skip
        browser.wait_for_text("plots/pareto.png")
        browser.wait_for_image(width)  # downloaded and drawn


def test_interrupted_sweep_resumes_without_duplicates(cli, anime, tmp_path):
    """Ctrl-C in the middle of a sweep of 2-worker trials, then `--resume --name`: the finished
    trial is not rerun, no child run is duplicated, every trial ends with both epochs."""
    from mlflow import MlflowClient

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    command = [sys.executable, "-m", "stages.cli", "tune", "acgan", "--data", str(anime),
               "--samples", "2", "--max-epochs", "2", "--workers-per-trial", "2",
               "--scheduler", "fifo", "--name", "resumable", *SMALL]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            try:
                runs = children(client, parent_run(client, "resumable").info.run_id)
            except Exception:  # noqa: BLE001 - the store or the parent is not there yet
                runs = []
            if any(r.info.status == "FINISHED" for r in runs) and len(runs) >= 2:
                break
            time.sleep(1)
        time.sleep(3)  # into the second trial's training
        process.send_signal(signal.SIGINT)  # Ctrl-C: Tune saves its state and stops
        output, _ = process.communicate(timeout=180)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 1, output[-3000:]
    last = output.strip().splitlines()[-1]
    assert last.startswith("error: sweep resumable interrupted"), output[-3000:]
    assert "--resume --name resumable" in last
    parent = parent_run(client, "resumable")
    assert parent.info.status == "KILLED"
    before = {r.data.tags["ray.trial_id"]: r for r in children(client, parent.info.run_id)}
    finished = [r for r in before.values() if r.info.status == "FINISHED"]
    assert finished, [r.info.status for r in before.values()]

    result = cli("tune", "--resume", "--name", "resumable")
    assert result.exit_code == 0, result.output
    parent = parent_run(client, "resumable")  # still one parent
    assert parent.info.status == "FINISHED"
    after = children(client, parent.info.run_id)
    ids = [r.data.tags["ray.trial_id"] for r in after]
    assert len(ids) == 2 and len(set(ids)) == 2  # no child run duplicated
    for run in after:
        assert run.info.status == "FINISHED"
        epochs = [m.value for m in client.get_metric_history(run.info.run_id, "epoch")]
        assert epochs == [1, 2], (run.data.tags["ray.trial_id"], epochs)  # nothing twice
        assert run.data.params["workers"] == "2"
    for run in finished:  # not rerun: its run ended when it first finished
        assert client.get_run(run.info.run_id).info.end_time == run.info.end_time


def test_pbt_mutation_reaches_the_optimizer(cli, anime, tmp_path):
    """PBT (synchronous, 2 trials, perturbing after epoch 1): the worse trial takes over the
    better one's checkpoint with mutated learning rates, and the rates its optimizers then
    use (the loop reports the optimizer's own lr_g / lr_d) are the mutated ones."""
    from mlflow import MlflowClient

    space = tmp_path / "pbt.yaml"
    space.write_text(
        yaml.safe_dump(
            {
                "metric": "fid",
                "pbt": {"perturbation_interval": 1, "quantile_fraction": 0.5, "synch": True,
                        "mutate": ["optim.lr_g", "optim.lr_d"]},
                "fixed": {"fid.every": 1},
                "search": {"optim.lr_g": {"loguniform": [1e-4, 1e-3]},
                           "optim.lr_d": {"loguniform": [1e-4, 1e-3]}},
            }
        )
    )  # fmt: skip
    result = cli(
        "tune", "acgan", "--data", anime, "--space", space, "--scheduler", "pbt",
        "--samples", "2", "--max-epochs", "2", "--workers-per-trial", "1", "--name", "pbt",
        *SMALL,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    parent = parent_run(client, "pbt")
    assert parent.data.params["sweep.scheduler"] == "pbt"
    trials = children(client, parent.info.run_id)
    assert len(trials) == 2
    exploited = [t for t in trials if "pipeline.pbt.exploited" in t.data.tags]
    assert len(exploited) == 1, [t.data.tags for t in trials]
    trial = exploited[0]
    donor = next(t for t in trials if t is not trial)
    assert trial.data.tags["pipeline.pbt.exploited"] == donor.data.tags["ray.trial_id"]
    assert f"PBT took over trial {donor.data.tags['ray.trial_id']}" in result.stdout
    # synchronous PBT pauses and restarts both trials after epoch 1, and never after the
    # last epoch (a restart there would have nothing to train and report no metric)
    assert result.stdout.count(" started: ") == 4, result.stdout
    for key in ("lr_g", "lr_d"):
        used = [m.value for m in client.get_metric_history(trial.info.run_id, key)]
        searched = [m.value for m in client.get_metric_history(trial.info.run_id,
                                                               f"pbt.optim.{key}")]  # fmt: skip
        assert len(used) == 2 and len(searched) == 2
        initial = float(trial.data.params[f"optim.{key}"])
        assert used[0] == pytest.approx(initial) and searched[0] == pytest.approx(initial)
        assert searched[1] != pytest.approx(initial)  # PBT mutated it ...
        assert used[1] == pytest.approx(searched[1])  # ... and the optimizer used it
    # the exploited trial went on from the donor's weights: its step count continued
    steps = [m.value for m in client.get_metric_history(trial.info.run_id, "step")]
    assert steps == [15, 30]  # 502 training faces (64 held out for the judge), batch 32
    assert trial.info.status == "FINISHED" and donor.info.status == "FINISHED"


def test_optuna_search_where_installed(cli, anime):
    """The optuna extra (`pip install 'pipeline[optuna]'`): Optuna proposes the trials, here
    on two objectives given on the command line (a multi-objective study)."""
    pytest.importorskip("optuna", reason="the optuna extra is not installed")
    from mlflow import MlflowClient

    result = cli(
        "tune", "acgan", "--data", anime, "--search", "optuna", "--samples", "2",
        "--max-epochs", "1", "--workers-per-trial", "1", "--name", "optuna",
        "--scheduler", "fifo", "--metric", f"fid,{SECOND}", "--mode", "min,max", *SMALL,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"optuna searches fid_standin and {SECOND} together" in result.stdout
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    parent = parent_run(client, "optuna")
    assert parent.data.params["sweep.search"] == "optuna"
    assert parent.data.params["sweep.metric"] == f"fid_standin, {SECOND}"
    assert len(children(client, parent.info.run_id)) == 2
    assert "pareto.csv" in artifacts(client, parent.info.run_id)
