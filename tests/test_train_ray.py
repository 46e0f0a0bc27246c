"""`pipeline train` end to end: Ray Train with 2 workers (DDP over gloo), one worker solo,
MLflow, real data.

Slow: each fit pays Ray Train's start-up (~15 s here). Ray is started once per session in
this process and reused.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import require_shared
from tests.shard_checks import assert_one_line_error
from tests.train_fixtures import anime_dataset

pytestmark = [pytest.mark.slow, pytest.mark.ray]

SMALL = ["--set", "model.width_g=16", "--set", "model.width_d=16", "--set", "model.z_dim=32"]


def train_args(family: str, data, epochs: int, *extra: str) -> list[str]:
    """`pipeline train` of a small model on 2 workers, batch 32."""
    return [
        "train",
        family,
        "--data",
        str(data),
        "--epochs",
        str(epochs),
        "--workers",
        "2",
        "--batch-size",
        "32",
        *SMALL,
        *extra,
    ]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    require_shared("celeba")
    from pipeline.data.ingest import IngestOptions, ingest
    from pipeline.data.sources.celeba import CelebaSource

    folder = tmp_path_factory.mktemp("train-data")
    celeba = folder / "celeba-32"
    ingest(
        CelebaSource(require_shared("celeba"), size=32),
        IngestOptions(out=str(celeba), size=32, workers=2, limit=600),
    )
    return {"celeba": celeba, "anime": anime_dataset(folder)}


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A fresh MLflow store and runs folder for each test."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("PIPELINE_RUNS", str(tmp_path / "runs"))
    from mlflow import MlflowClient

    return MlflowClient(uri)


def only_run(client):
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return runs[0]


def artifacts(client, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return found


@pytest.mark.parametrize(
    "family, data, extra",
    [
        ("dcgan", "celeba", []),
        ("acgan", "anime", ["--set", "lambda_cls=0.5", "--set", "model.heads=decoupled"]),
        ("wgan-gp", "anime", ["--set", "model.arch=resnet"]),
    ],
)
def test_train_runs_end_to_end_with_two_workers(
    cli, datasets, store, tmp_path, family, data, extra
):
    result = cli(*train_args(family, datasets[data], 2, *extra))
    assert result.exit_code == 0, result.output
    run = only_run(store)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["family"] == family and params["workers"] == "2"
    assert params["optim.lr_g"] and params["model.norm_d"]
    history = store.get_metric_history(run.info.run_id, "loss_d")
    assert len(history) == 2 and history[0].step < history[1].step  # stepped by images seen
    for key in ("D_x", "D_G_z", "images_per_s", "color_gap", "diversity", "grad_norm_d"):
        assert key in run.data.metrics, key
    if family == "acgan":
        assert {"acc_real", "acc_fake", "loss_d_cls"} <= set(run.data.metrics)
        assert params["lambda_cls"] == "0.5"
        out = tmp_path / "blonde.png"
        drawn = cli("sample", run.info.run_id, "--out", out, "--class", "eyes=red", "--n", "8")
        assert drawn.exit_code == 0 and out.exists(), drawn.output
        wrong = cli("sample", run.info.run_id, "--out", out, "--class", "hair=plaid")
        assert_one_line_error(wrong, "plaid", "blonde")
        assert_grid_rows_are_named(store, run.info.run_id, tmp_path)
    if family == "wgan-gp":
        assert "loss_gp" in run.data.metrics and params["optim.n_critic"] == "5"
    assert not [t for t in run.data.tags if t.startswith("pipeline.warning.")]  # healthy
    files = artifacts(store, run.info.run_id)
    assert {"config.yaml", "generator.pt", "checkpoints/checkpoint.pt"} <= files
    assert len([f for f in files if f.startswith("samples/epoch-")]) == 2


def assert_grid_rows_are_named(store, run_id: str, folder: Path) -> None:
    """The conditional grid in MLflow: its row names logged beside it (one per hair colour),
    and a band on the left of the PNG wider than a plain grid of its tiles, with text in it."""
    import json

    import numpy as np
    from PIL import Image

    rows = json.loads(
        Path(store.download_artifacts(run_id, "samples/rows.json", folder)).read_text()
    )
    assert rows["rows"][:3] == ["aqua", "black", "blonde"], rows  # the hair classes, in order
    grid = sorted(f for f in artifacts(store, run_id) if f.startswith("samples/epoch-"))[-1]
    pixels = np.asarray(Image.open(store.download_artifacts(run_id, grid, folder)).convert("RGB"))
    tile = 64 + 2  # 32 px samples drawn at 2x, 2 px apart
    assert (pixels.shape[0] - 2) // tile == len(rows["rows"])  # one row per class
    columns = 64 // len(rows["rows"])  # `samples` (64) split over the rows
    band = pixels.shape[1] - (columns * tile + 2)
    assert 64 <= band <= 3 * 64
    assert (pixels[:, :band].min(axis=-1) < 100).sum() > 10 * len(rows["rows"])  # the names


def test_resume_continues_the_same_run(cli, datasets, store, tmp_path):
    base = ["--data", datasets["anime"], "--workers", "2", "--batch-size", "32", *SMALL]
    assert cli("train", "dcgan", *base, "--epochs", "1").exit_code == 0
    run_id = only_run(store).info.run_id
    result = cli("train", "dcgan", "--resume", run_id, "--epochs", "2")
    assert result.exit_code == 0, result.output
    run = only_run(store)  # no second run
    assert run.info.run_id == run_id and run.info.status == "FINISHED"
    steps = [m.value for m in store.get_metric_history(run_id, "step")]
    assert steps == [17, 34]  # the step count went on
    # the optimizers went on too: Adam's own step counter is in the checkpoint
    from pipeline import tracking
    from pipeline.training import checkpoint as ckpt

    handle = tracking.find_run(tracking.tracking_uri(), run_id)
    state = ckpt.load(tracking.download_artifact(handle, "checkpoints/checkpoint.pt"))
    assert float(next(iter(state["opt_g"]["state"].values()))["step"]) == 34
    out = tmp_path / "grid.png"
    sampled = cli("sample", run_id, "--out", out, "--n", "16", "--interpolate")
    assert sampled.exit_code == 0 and out.stat().st_size > 0


def ray_train_workers() -> list[int]:
    """Pids of the Ray Train worker processes on this machine (their title names them)."""
    return processes_named(b"RayTrainWorker")


def processes_named(title: bytes) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if title in cmdline:
                pids.append(int(entry.name))
    return sorted(pids)


def test_worker_killed_mid_run_finishes_from_checkpoint(datasets, store, tmp_path):
    """SIGKILL one Ray Train worker once a checkpoint exists; FailureConfig restarts the worker
    group from it and the run finishes all its epochs in the same MLflow run."""
    runs = Path(os.environ["PIPELINE_RUNS"])
    command = [sys.executable, "-m", "stages.cli", *train_args("dcgan", datasets["anime"], 10)]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 240
        while len(list(runs.glob("*/checkpoint-*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3)  # Ray Train's controller registers a reported checkpoint within ~2 s
        workers = ray_train_workers()
        assert workers, "no Ray Train worker found"
        os.kill(workers[-1], signal.SIGKILL)
        output, _ = process.communicate(timeout=400)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, output[-3000:]
    assert_finished_after_a_restart(store, output, "worker group", epochs=10)


def test_one_worker_trains_solo_with_the_numbers_of_ray_train(cli, datasets, store):
    """A one-worker run trains without a Ray Train worker group (solo), with the same losses
    for the same seed as the same worker inside one (--set solo=false), its live line on the
    console and its start-up time on the run."""
    losses = {}
    for solo in ("true", "false"):
        args = train_args("dcgan", datasets["anime"], 2, "--set", f"run_name=solo-{solo}")
        args[args.index("--workers") + 1] = "1"
        result = cli(*args, "--set", f"solo={solo}")
        assert result.exit_code == 0, result.output
        # Off a terminal the live line is printed at each epoch, and where the run ended.
        assert "epoch 2/2 · step 34/34 · " in result.stderr, result.stderr[-2000:]
        assert "loss_d " in result.stderr and "ETA " in result.stderr
        (run,) = store.search_runs(
            [e.experiment_id for e in store.search_experiments()],
            f"attributes.run_name = 'solo-{solo}'",
        )
        assert run.info.status == "FINISHED" and run.data.metrics["epoch"] == 2
        assert 0 < run.data.metrics["startup_s"] < 300
        assert {"config.yaml", "generator.pt", "checkpoints/checkpoint.pt"} <= artifacts(
            store, run.info.run_id
        )
        losses[solo] = {
            key: sorted((m.step, m.value) for m in store.get_metric_history(run.info.run_id, key))
            for key in ("loss_d", "loss_g", "D_x")
        }
    for key, history in losses["true"].items():
        other = losses["false"][key]
        # The same points at the same steps, the values equal up to float noise (pytest >= 9.2
        # refuses approx over nested (step, value) pairs: compare each half for what it means).
        assert [step for step, _ in history] == [step for step, _ in other], key
        assert [value for _, value in history] == pytest.approx(
            [value for _, value in other], rel=1e-6
        ), key
    folders = sorted(p.name for p in (Path(os.environ["PIPELINE_RUNS"]) / "solo-true").iterdir())
    assert folders == ["checkpoint-00000017", "checkpoint-00000034"]  # as Ray Train names them


def solo_workers() -> list[int]:
    """Pids of solo runs' processes on this machine (Ray titles them with the task's name)."""
    return processes_named(b"pipeline-solo")


def test_solo_worker_killed_mid_run_is_retried_from_its_checkpoint(datasets, store):
    """SIGKILL the one process of a solo run once it has checkpoints: Ray runs the task again
    (`max_failures` retries), which goes on from the run folder's last checkpoint in the same
    MLflow run."""
    runs = Path(os.environ["PIPELINE_RUNS"])
    args = train_args("dcgan", datasets["anime"], 4)
    args[args.index("--workers") + 1] = "1"
    process = subprocess.Popen(
        [sys.executable, "-m", "stages.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while len(list(runs.glob("*/checkpoint-*/checkpoint.pt"))) < 2:
            assert time.monotonic() < deadline and process.poll() is None, "no checkpoints"
            time.sleep(0.2)
        (worker,) = solo_workers()
        os.kill(worker, signal.SIGKILL)
        output, _ = process.communicate(timeout=400)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, output[-3000:]
    assert_finished_after_a_restart(store, output, "worker", epochs=4)


def assert_finished_after_a_restart(store, output: str, restarted: str, epochs: int) -> None:
    """The command said its worker (group) restarted from a checkpoint, and its one MLflow run
    finished every epoch of 17 batches of 32, tagged with where it went on from."""
    assert f"{restarted} restarted: resuming from checkpoint-" in output
    run = only_run(store)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["epoch"] == epochs
    assert run.data.metrics["images_seen"] == epochs * 17 * 32
    assert run.data.tags["pipeline.restored_from"].startswith("checkpoint-")


def test_a_diagnostic_warning_is_said_and_tagged_on_the_run(cli, datasets, store):
    """Every z the same (z_std 0): mode collapse, said on the console once and kept as the
    run's tag `pipeline.warning.collapse`; the healthy runs above carry no warning tag."""
    result = cli(*train_args("dcgan", datasets["anime"], 1, "--set", "z_std=0",
                             "--report-every", "4"))  # fmt: skip
    assert result.exit_code == 0, result.output
    # Said by rank 0 once (test_diagnostics); Ray's log forwarding may echo the line.
    assert "warning: mode collapse" in result.output, result.output[-2000:]
    tags = only_run(store).data.tags
    assert tags["pipeline.warning.collapse"].startswith("from step ")
    assert "mode collapse" in tags["pipeline.warning.collapse"]


def test_nonfinite_loss_fails_the_run_with_a_clear_message(cli, datasets, store):
    result = cli(*train_args("dcgan", datasets["anime"], 2, "--set", "z_std=.inf"))
    # Ray streams its workers' logs to stderr; the command's own verdict is the last line.
    assert result.exit_code == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "NaN or infinite" in last and "FAILED" in last
    assert only_run(store).info.status == "FAILED"


def test_bad_inputs_fail_before_anything_starts(cli, datasets, store):
    mnist_like = datasets["celeba"]
    result = cli("train", "stylegan", "--data", mnist_like)
    assert result.exit_code == 1 and "dcgan, acgan, wgan, wgan-gp" in result.stderr
    result = cli("train", "dcgan", "--data", mnist_like, "--set", "model.norm_g=weird")
    assert_one_line_error(result, "weird")
    result = cli("train", "dcgan", "--data", mnist_like, "--batch-size", "33", "--workers", "2")
    assert_one_line_error(result, "divide evenly")
    result = cli("train", "acgan", "--data", mnist_like, "--set", "data.attrs=[Male,Wings]")
    assert_one_line_error(result, "Wings", "Smiling")
    result = cli("train", "dcgan", "--data", mnist_like, "--gpus-per-worker", "1")
    assert_one_line_error(result, "GPUs asked")
    result = cli("train", "dcgan", "--resume", "0123456789abcdef0123456789abcdef")
    assert_one_line_error(result, "no MLflow run")
    result = cli("train", "dcgan", "--data", "no-such-dataset")
    assert_one_line_error(result, "does not exist")
    result = cli("train", "dcgan", "--data", mnist_like, "--set", "run_name=../escaped")
    assert_one_line_error(result, "run_name", "is not a run name")
    assert store.search_runs([e.experiment_id for e in store.search_experiments()]) == []


def test_conditional_model_needs_labels(cli, tmp_path, store):
    from tests.sample_data import lsun_lmdb_from_celeba

    lmdb_path = lsun_lmdb_from_celeba(tmp_path / "bedroom_train_lmdb", 40)
    out = tmp_path / "rooms-32"
    assert (
        cli("ingest", "lsun-bedroom", "--lmdb", lmdb_path, "--out", out, "--size", "32").exit_code
        == 0
    )
    result = cli("train", "acgan", "--data", out)
    assert_one_line_error(result, "no labels", "conditional")


def test_fid_every_epoch_with_two_workers_then_evaluate_logs_into_the_run(cli, datasets, store):
    """Issue 4's acceptance: `--fid-every 1` logs (stand-in) FID each epoch from 2 workers,
    the reference statistics are computed once, and `pipeline evaluate` logs into the run."""
    anime = datasets["anime"]
    for old in (anime / "stats").glob("*.npz") if (anime / "stats").exists() else []:
        old.unlink()  # another test of this module may have cached them
    fid = ["--fid-every", "1", "--fid-samples", "96", "--fid-dims", "64"]
    base = ["--data", anime, "--workers", "2", "--batch-size", "32", *SMALL, *fid]
    result = cli("train", "dcgan", *base, "--epochs", "2")
    assert result.exit_code == 0, result.output
    assert "fid_standin" in result.stdout and "stand-in" in result.stdout
    run = only_run(store)
    run_id = run.info.run_id
    history = store.get_metric_history(run_id, "fid_standin")
    assert len(history) == 2 and all(h.value > 0 for h in history)
    assert len(store.get_metric_history(run_id, "kid_standin")) == 2
    assert "fid" not in run.data.metrics  # the stand-in's numbers never use the real name
    assert run.data.params["fid.weights"] == "standin"
    assert run.data.tags["pipeline.fid_backbone"] == "standin"
    assert "fid/protocol.json" in artifacts(store, run_id)
    # computed once, by the driver before the (CPU) workers started; they read it
    assert "FID reference statistics of" in result.output
    (cache,) = (anime / "stats").glob("*.npz")
    stamp = cache.stat().st_mtime_ns

    evaluated = cli("evaluate", run_id, "--samples", "96", "--dims", "64", "--kid-subsets", "5")
    assert evaluated.exit_code == 0, evaluated.output
    assert "(cached)" in evaluated.stdout and f"logged into MLflow run {run_id}" in evaluated.stdout
    assert cache.stat().st_mtime_ns == stamp
    history = store.get_metric_history(run_id, "fid_standin")
    assert len(history) == 3 and history[-1].step == history[-2].step  # at the images seen
    assert any(a.startswith("fid/evaluate-") for a in artifacts(store, run_id))
    assert store.get_run(run_id).info.status == "FINISHED"
