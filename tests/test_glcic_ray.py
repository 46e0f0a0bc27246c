"""GLCIC end to end on Ray: `pipeline train glcic` with 2 DDP workers on the real CelebA
sample at 64 px (narrow nets), its phases and metrics in MLflow, then `pipeline complete` and
`pipeline evaluate` from the run id; and a sweep of `pipeline tune glcic` ranked by hole PSNR.

Slow: each fit pays Ray Train's start-up.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from tests.conftest import require_shared
from tests.shard_checks import assert_one_line_error
from tests.train_fixtures import celeba_dataset

pytestmark = [pytest.mark.slow, pytest.mark.shared, pytest.mark.ray]

NARROW = ["--set", "model.width_g=8", "--set", "model.width_d=8",
          "--set", "completion.eval_images=16"]  # fmt: skip


@pytest.fixture(scope="module")
def celeba64(tmp_path_factory):
    require_shared("celeba")
    return celeba_dataset(tmp_path_factory.mktemp("glcic-ray"), 64, limit=320)


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A fresh MLflow store and runs folder for each test."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("PIPELINE_RUNS", str(tmp_path / "runs"))
    from mlflow import MlflowClient

    return MlflowClient(uri)


def test_train_glcic_with_two_workers_then_complete_and_evaluate(cli, celeba64, store, tmp_path):
    result = cli("train", "glcic", "--data", celeba64, "--epochs", "2", "--workers", "2",
                 "--batch-size", "16", *NARROW)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "psnr_hole" in result.stdout
    runs = store.search_runs([e.experiment_id for e in store.search_experiments()])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.params["family"] == "glcic"
    phases = [m.value for m in store.get_metric_history(run.info.run_id, "phase")]
    assert phases[:3] == [1.0, 2.0, 3.0], phases  # the three phases, each ending in a report
    for key in ("l1_hole", "psnr_hole", "ssim_hole", "psnr", "ssim", "d_acc_local_fake"):
        assert key in run.data.metrics, key
    run_id = run.info.run_id

    photo = tmp_path / "face.png"
    pixels = np.asarray(Image.open(sorted((require_shared("celeba") / "img_align_celeba")
                                          .glob("*.jpg"))[0]).resize((64, 64)))  # fmt: skip
    Image.fromarray(pixels).save(photo)
    done = cli("complete", run_id, "--images", photo, "--out", tmp_path / "out",
               "--box", "20,24,24,20")  # fmt: skip
    assert done.exit_code == 0, done.output
    completed = np.asarray(Image.open(tmp_path / "out" / "face.png"))
    hole = np.zeros((64, 64), bool)
    hole[24:44, 20:44] = True
    assert np.array_equal(completed[~hole], pixels[~hole])

    scored = cli("evaluate", run_id, "--samples", "80", "--dims", "64", "--batch", "16")
    assert scored.exit_code == 0, scored.output
    metrics = store.get_run(run_id).data.metrics
    split = next(k for k in metrics if k.endswith("_psnr_hole") and k != "psnr_hole")
    assert {f"{split[:-10]}_{m}" for m in ("l1_hole", "ssim", "fid_standin")} <= set(metrics)

    assert_one_line_error(cli("sample", run_id, "--out", tmp_path / "s.png"), "pipeline complete")


def test_tune_glcic_sweep_compares_in_the_mlflow_ui(cli, celeba64, store):
    """A 4-trial ASHA sweep of the shipped space (phases pinned short), then `pipeline ui` in
    headless Chromium: the trials side by side with their alpha and hole PSNR."""
    result = cli("tune", "glcic", "--data", celeba64, "--samples", "4", "--max-epochs", "1",
                 "--workers-per-trial", "1", "--name", "glcic-sweep", "--set", "batch_size=16",
                 "--set", "completion.tc=0.2", "--set", "completion.td=0.1", *NARROW)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "psnr_hole" in result.stdout  # the per-trial lines and the table rank by it
    runs = store.search_runs([e.experiment_id for e in store.search_experiments()])
    trials = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(trials) == 4 and all(r.info.status == "FINISHED" for r in trials)
    assert all("psnr_hole" in r.data.metrics for r in trials)
    assert len({r.data.params["completion.alpha"] for r in trials}) == 4  # searched

    from tests.browser import Browser, compare_url, pipeline_ui, require_chromium

    chromium = require_chromium()
    with pipeline_ui(os.environ["MLFLOW_TRACKING_URI"]) as url, Browser(*chromium) as browser:
        experiment = trials[0].info.experiment_id
        browser.open(compare_url(url, experiment, [t.info.run_id for t in trials]))
        text = browser.wait_for_text("Comparing 4 Runs", "completion.alpha")
        for trial in trials:
            assert trial.info.run_name in text
        best = max(trials, key=lambda t: t.data.metrics["psnr_hole"])
        browser.open(f"{url}/#/experiments/{experiment}/runs/{best.info.run_id}")
        value = repr(best.data.metrics["psnr_hole"])
        browser.wait_for_text(best.info.run_name, "psnr_hole", value[:6])
