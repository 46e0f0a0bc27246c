"""`pipeline quickstart`, the README's main job, end to end on drawn demo data."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from pipeline.data.reader import ShardDataset


def test_quickstart_draws_ingests_and_shows(cli, tmp_path):
    result = cli("quickstart", "--data", tmp_path, "--images", "40", "--size", "32", "--no-train")
    assert result.exit_code == 0, result.output
    celeba, lsun = tmp_path / "demo-celeba-32", tmp_path / "demo-lsun-bedroom-32"
    manifest = json.loads((celeba / "manifest.json").read_text())
    assert {s: v["rows"] for s, v in manifest["splits"].items()} == {
        "train": 32,
        "val": 4,
        "test": 4,
    }
    assert manifest["notes"] == []  # the demo's annotation files are complete
    faces = ShardDataset(celeba, "train")
    attrs = faces.take(range(len(faces)))["attrs"]
    male = manifest["attributes"]["names"].index("Male")
    assert 0 < attrs[:, male].sum() < len(faces)  # drawn attributes vary, none missing
    rooms = pa.ipc.open_file(str(next((lsun / "train").glob("*.arrow")))).read_all()
    assert rooms.num_rows == 40
    for grid in ("demo-celeba-32.png", "demo-lsun-bedroom-32.png"):
        assert (tmp_path / "demo-grids" / grid).stat().st_size > 0
    assert "sample grid" in result.stdout

    again = cli("quickstart", "--data", tmp_path, "--images", "40", "--size", "32", "--no-train")
    assert again.exit_code == 0
    assert again.stdout.count("up to date") == 2


def test_quickstart_rejects_a_tiny_demo(cli, tmp_path):
    result = cli("quickstart", "--data", tmp_path, "--images", "3")
    assert result.exit_code == 1 and "at least 20" in result.stderr
    result = cli("quickstart", "--data", tmp_path, "--images", "60")  # too few for the sweep
    assert result.exit_code == 1 and "at least 100, or --no-tune" in result.stderr
    assert not (tmp_path / "demo-sources").exists()  # refused before anything is drawn


@pytest.mark.slow
@pytest.mark.ray  # its training and sweep
def test_quickstart_trains_on_the_demo_faces(cli, tmp_path, monkeypatch):
    """The README's main job as written: ingest, a 2-worker DCGAN run, then a small ACGAN
    sweep (a parent run with one nested child per trial), all in ./mlflow.db."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("PIPELINE_RUNS", str(tmp_path / "runs"))
    result = cli("quickstart", "--data", tmp_path / "data", "--images", "100", "--epochs", "1")
    assert result.exit_code == 0, result.output
    assert "FINISHED" in result.stdout
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")  # MLflow's default, here
    runs = client.search_runs([client.get_experiment_by_name("quickstart").experiment_id])
    assert all(run.info.status == "FINISHED" for run in runs)
    training = [r for r in runs if "pipeline.sweep" not in r.data.tags]
    assert len(training) == 1 and training[0].data.params["family"] == "dcgan"
    parents = [r for r in runs if r.data.tags.get("pipeline.kind") == "sweep"]
    assert len(parents) == 1 and "pipeline.best_run_id" in parents[0].data.tags
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(trials) == 2 and all(t.data.params["family"] == "acgan" for t in trials)
    # Ranked on FID and class_acc: a judge of the faces' attributes read the trials' images,
    # its own accuracy on the real val faces logged beside; the parent keeps the front.
    for trial in trials:
        assert 0 <= trial.data.metrics["class_acc"] <= 1
        assert {"class_acc/Male", "class_acc/Smiling", "judge_val_acc"} <= set(trial.data.metrics)
    parent_files = {f.path for f in client.list_artifacts(parents[0].info.run_id)}
    assert "pareto.csv" in parent_files, parent_files
    assert "swept quickstart-" in result.stdout and "pipeline ui" in result.stdout
    # The console: the live line of the run (off a terminal, where it ended) and no Tune
    # chatter (its configuration box, a TensorBoard hint) unless --verbose.
    assert "epoch 1/1 · step " in result.stderr, result.stderr[-2000:]
    for noise in ("Configuration for experiment", "tensorboard", "View detailed results"):
        assert noise not in result.output, noise
