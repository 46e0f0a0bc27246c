"""A run's Ray folder and its MLflow run name are the same readable string (Ray Train V2
resumes from a run folder that already holds checkpoints, so each fit claims a fresh one).

Slow: three short Ray Train fits of one worker.
"""

from __future__ import annotations

import pytest

from tests.conftest import require_shared
from tests.train_fixtures import anime_dataset

pytestmark = [pytest.mark.slow, pytest.mark.ray]

SMALL = ["--set", "model.width_g=16", "--set", "model.width_d=16", "--set", "model.z_dim=32"]


def test_folder_and_mlflow_name_match_and_a_resume_gets_its_own_folder(cli, tmp_path, monkeypatch):
    require_shared("anime-mlds2018")
    anime = anime_dataset(tmp_path / "data")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runs = tmp_path / "runs"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("PIPELINE_RUNS", str(runs))
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    base = ["--data", anime, "--workers", "1", "--batch-size", "32", "--epochs", "1", *SMALL]
    for _ in range(2):  # the same --set run_name twice: the second is NAME-2, not a resume
        result = cli("train", "dcgan", *base, "--set", "run_name=anime-small")
        assert result.exit_code == 0, result.output
    found = client.search_runs([e.experiment_id for e in client.search_experiments()])
    by_name = {run.info.run_name: run for run in found}
    assert set(by_name) == {"anime-small", "anime-small-2"}
    for name, run in by_name.items():
        assert run.data.tags["pipeline.ray_run"] == name
        assert list((runs / name).glob("checkpoint-*")), name

    first = by_name["anime-small"].info.run_id
    result = cli("train", "dcgan", "--resume", first, "--epochs", "2")
    assert result.exit_code == 0, result.output
    resumed = client.get_run(first)
    assert resumed.info.run_name == "anime-small"  # the MLflow run keeps its name
    assert resumed.data.tags["pipeline.ray_run"] == "anime-small-resume"
    assert list((runs / "anime-small-resume").glob("checkpoint-*"))
