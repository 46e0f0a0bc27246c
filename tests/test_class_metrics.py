"""What a conditional run measures beyond FID: the class judge's `class_acc` beside the judge's
own val accuracy (training and `pipeline evaluate`), the hint when a dataset has no judge,
and intra-FID (per class) with its refusals. Real anime faces and real MNIST digits."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.training.runner import LocalContext, run_worker
from tests.conftest import require_shared
from tests.test_training_loop import config
from tests.train_fixtures import anime_dataset

SMALL = ("--samples", "96", "--dims", "64", "--kid-subsets", "5")
FID = {"fid.every": 1, "fid.samples": 96, "fid.dims": 64, "fid.kid_subsets": 5}


@pytest.fixture(scope="module")
def anime(tmp_path_factory):
    """The anime faces with a val split (64 images): what a judge is graded on."""
    require_shared("anime-mlds2018")
    return anime_dataset(tmp_path_factory.mktemp("judged"), val=0.15)


@pytest.fixture(scope="module")
def judge_info(anime):
    """A judge of both label groups (what an acgan run conditions on), trained briefly."""
    from pipeline.judge import train_judge

    return train_judge(anime, epochs=3, say=lambda line: None)


@pytest.fixture(scope="module")
def acgan(anime, judge_info, tmp_path_factory):
    """A 1-epoch ACGAN of the anime faces, evaluated at its end: (reports, protocols, ckpt)."""
    protocols = []
    ctx = LocalContext(tmp_path_factory.mktemp("acgan"))
    run_worker(
        config("acgan", anime, epochs=1, **FID),
        ctx,
        str(anime),
        lambda report: protocols.append(report.fid_protocol),
    )
    return ctx.reports, protocols, ctx.resume_from / "checkpoint.pt"


@pytest.mark.slow  # trains a judge and a 1-epoch ACGAN (module fixtures)
def test_a_conditional_run_logs_class_acc_beside_the_judges_own_accuracy(acgan, judge_info):
    reports, protocols, _ = acgan
    metrics = reports[-1]
    for name in ("class_acc", "class_acc/hair", "class_acc/eyes"):
        assert 0 <= metrics[name] <= 1, name
    assert metrics["class_acc"] == pytest.approx(
        (metrics["class_acc/hair"] + metrics["class_acc/eyes"]) / 2
    )
    assert metrics["judge_val_acc"] == pytest.approx(judge_info.val_acc)
    assert metrics["judge_val_acc/hair"] == pytest.approx(judge_info.accuracy["hair"])
    about = protocols[-1]["class_acc"]
    assert about["held_out"] == "val" and about["judge"].startswith("judge-")
    assert about["chance_uniform"]["hair"] == pytest.approx(1 / 12)
    assert "balanced" in about["labels"]
    # the judge is real, the Inception a stand-in: only the Inception's numbers say so
    assert "precision_standin" in metrics and "class_acc_standin" not in metrics


@pytest.mark.slow  # trains a judge and a 1-epoch ACGAN (module fixtures)
def test_evaluate_prints_class_acc_with_the_judges_accuracy(cli, anime, acgan):
    _, _, checkpoint = acgan
    result = cli("evaluate", checkpoint, "--data", anime, "--inception-score", *SMALL)
    assert result.exit_code == 0, result.stderr
    line = result.stdout.splitlines()[0]
    assert "class_acc " in line and "class_acc/hair " in line and "judge_val_acc " in line
    assert "is_standin " in line and "precision_standin " in line  # asked for at 64-d
    assert "pipeline judge train" not in result.stderr


@pytest.mark.slow  # trains a judge and a 1-epoch ACGAN (module fixtures)
def test_a_dataset_without_a_judge_says_how_to_train_one_once(cli, acgan, tmp_path):
    _, _, checkpoint = acgan
    unjudged = anime_dataset(tmp_path)  # no val split: another dataset, no judge
    result = cli("evaluate", checkpoint, "--data", unjudged, *SMALL)
    assert result.exit_code == 0, result.stderr
    assert "class_acc" not in result.stdout
    assert result.stderr.count("pipeline judge train") == 1
    assert f"pipeline judge train {unjudged.name} --group hair --group eyes" in result.stderr


@pytest.mark.slow  # trains a judge and a 1-epoch ACGAN (module fixtures)
def test_intra_fid_refuses_classes_too_small_and_unconditional_runs(cli, anime, acgan, tmp_path):
    _, _, checkpoint = acgan
    result = cli("evaluate", checkpoint, "--data", anime, "--intra-fid", *SMALL)
    assert result.exit_code == 1
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: intra-FID against anime-32-val0.15/train: class hair=")
    assert "real images among the 96 compared, 64-d features need more than 64" in line

    ctx = LocalContext(tmp_path)
    run_worker(config("dcgan", anime, epochs=1), ctx, str(anime))
    dcgan = ctx.resume_from / "checkpoint.pt"
    plain = cli("evaluate", dcgan, "--data", anime, "--intra-fid", *SMALL)
    assert plain.exit_code == 1
    assert "intra-FID needs a conditional generator" in plain.stderr.strip().splitlines()[-1]


def test_train_refuses_intra_fid_before_anything_starts(cli, anime, tmp_path, monkeypatch):
    """Checked by the command, before Ray or an MLflow run: one line, nothing logged."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    fid = ["--fid-every", "1", "--fid-samples", "96", "--fid-dims", "64", "--intra-fid"]
    for family, words in (
        ("dcgan", "intra-FID needs a conditional model (acgan); dcgan is not"),
        ("acgan", "intra-FID against anime-32-val0.15/train: class hair="),
    ):
        result = cli("train", family, "--data", anime, "--epochs", "1", *fid)
        assert result.exit_code == 1
        assert result.stderr.strip().splitlines()[-1].startswith(f"error: {words}")
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_intra_fid_of_every_digit_during_training(tmp_path):
    """MNIST's 10 digits have enough images each for 64-d intra-FID: the first 800 test
    digits hold 68 to 99 of each, the balanced labels give G 80 of each to draw."""
    from pipeline.data.ingest import IngestOptions, ingest
    from pipeline.data.sources.mnist import MnistSource

    mnist = tmp_path / "mnist-32"
    ingest(MnistSource(require_shared("mnist")), IngestOptions(out=str(mnist), size=32, limit=800))
    protocols = []
    ctx = LocalContext(tmp_path / "run")
    cfg = config(
        "acgan",
        mnist,
        epochs=1,
        **{**FID, "data.split": "test", "fid.samples": 800, "fid.intra": True},
    )
    run_worker(cfg, ctx, str(mnist), lambda report: protocols.append(report.fid_protocol))
    metrics, per_class = ctx.reports[-1], protocols[-1]["intra_fid"]["per_class"]
    assert sorted(per_class) == [f"label={d}" for d in range(10)]
    assert metrics["intra_fid_standin"] == pytest.approx(np.mean(list(per_class.values())))
    assert metrics["intra_fid_worst_standin"] == pytest.approx(max(per_class.values()))
    assert json.loads(json.dumps(protocols[-1]))["intra_fid"]["per_class"] == per_class
