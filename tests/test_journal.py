"""The record survives the tracking server going away: every event goes to the run's journal
on this node's disk first and reaches a real `mlflow server` (on 127.0.0.1, stopped and
started again by its process id) when it is back; `pipeline sync` delivers what is left,
idempotently, the status last."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import tracking
from pipeline.doctor import check_journals
from pipeline.tracking import Tracker, journal
from tests.conftest import killed_at_exit
from tests.mlflow_server import MlflowServer

pytestmark = pytest.mark.slow  # each test starts an mlflow server (seconds) at least twice


@pytest.fixture
def server(tmp_path):
    server = MlflowServer(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "mlartifacts")
    server.start()
    yield server
    server.stop()


def client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(uri)


def history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client(uri).get_metric_history(run_id, key))


def artifacts(uri: str, run_id: str, folder: str) -> list[str]:
    return sorted(a.path for a in client(uri).list_artifacts(run_id, folder))


def image(color: str):
    from PIL import Image

    return Image.new("RGB", (24, 16), color)


def wait_for(condition, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.25)


def report(tracker: Tracker, step: int, folder: Path) -> None:
    """What a training report logs: metrics, a grid (artifact and image series), the last
    checkpoint (one artifact path, overwritten each time)."""
    tracker.log_metrics({"loss_d": float(step), "loss_g": -float(step)}, step=step)
    grid = image(["red", "green", "blue", "white", "black", "gray"][step % 6])
    tracker.log_image(grid, f"samples/epoch-{step:03d}.png", key="samples", step=step)
    (folder / "checkpoint.pt").write_text(f"the checkpoint of step {step}")
    tracker.log_artifact(folder / "checkpoint.pt", "checkpoints")


def whole(uri: str, run_id: str, steps: range) -> None:
    """Every report exactly once, the last checkpoint, FINISHED."""
    expected = [(s, float(s)) for s in steps]
    assert history(uri, run_id, "loss_d") == expected
    assert history(uri, run_id, "loss_g") == [(s, -v) for s, v in expected]
    assert artifacts(uri, run_id, "samples") == [f"samples/epoch-{s:03d}.png" for s in steps]
    series = [p for p in artifacts(uri, run_id, "images") if p.endswith(".png")]
    assert len(series) == len(steps)  # the slider's images, one per report
    kept = client(uri).download_artifacts(run_id, "checkpoints/checkpoint.pt")
    assert Path(kept).read_text() == f"the checkpoint of step {steps[-1]}"
    assert client(uri).get_run(run_id).info.status == "FINISHED"


def test_an_outage_mid_run_costs_a_delay_never_a_hole(server, tmp_path, capsys, monkeypatch):
    """The server stopped for several reports and started again: the run goes on (logging
    returns at once), says so once each way, and ends whole: every point once, every grid."""
    monkeypatch.setenv("PIPELINE_TRACKING_WAIT_S", "60")
    handle = tracking.start_run(server.uri, "outage/dcgan", "outage", {"lr_g": 2e-4})
    tracker = Tracker(handle)
    said = []

    def console() -> str:
        said.append(capsys.readouterr().out)
        return "".join(said)

    report(tracker, 1, tmp_path)
    wait_for(lambda: history(server.uri, handle.run_id, "loss_d"), "the first report landed")
    server.stop()
    for step in range(2, 6):
        report(tracker, step, tmp_path)
    wait_for(lambda: "unreachable" in console(), "the outage said")
    server.start()
    # "is back:" is the return's own line ("... delivering when it is back" is the outage's).
    wait_for(lambda: "is back:" in console(), "the return said", timeout=120)
    report(tracker, 6, tmp_path)
    tracker.finish()
    out = console()
    folder = journal.journals_root() / handle.run_id
    assert f"MLflow at {server.uri} unreachable" in out
    assert f"keeping the record in {folder}, delivering when it is back" in out
    assert out.count("unreachable") == 1 and out.count("is back:") == 1
    whole(server.uri, handle.run_id, range(1, 7))
    assert not journal.all_undelivered()
    assert not list((folder / "files").rglob("*.*"))  # the kept copies went once delivered


def test_the_server_away_at_the_end_then_pipeline_sync(server, tmp_path, capsys, monkeypatch, cli):
    """The server down when the run ends: the command ends (a bounded wait) naming `pipeline
    sync`; once it is back, sync delivers everything, the status last; a second sync sends
    nothing (point counts unchanged)."""
    monkeypatch.setenv("PIPELINE_TRACKING_WAIT_S", "2")
    handle = tracking.start_run(server.uri, "outage/dcgan", "ends-away", {"lr_g": 2e-4})
    tracker = Tracker(handle)
    report(tracker, 1, tmp_path)
    wait_for(lambda: history(server.uri, handle.run_id, "loss_d"), "the first report landed")
    server.stop()
    for step in range(2, 4):
        report(tracker, step, tmp_path)
    tracker.finish()
    folder = journal.journals_root() / handle.run_id
    out = capsys.readouterr().out
    assert f"deliver it with: pipeline sync {folder}" in out
    assert journal.all_undelivered() == [folder]
    (listed,) = check_journals({})  # `pipeline doctor` names it
    assert listed.status == "warn" and f"{folder} (ends-away)" in listed.detail

    server.start()
    assert client(server.uri).get_run(handle.run_id).info.status == "RUNNING"
    synced = cli("sync", str(folder))
    assert synced.exit_code == 0 and "delivered" in synced.output, synced.output
    whole(server.uri, handle.run_id, range(1, 4))
    again = cli("sync", handle.run_id)  # by the run's id this time
    assert again.exit_code == 0 and "nothing to deliver" in again.output, again.output
    whole(server.uri, handle.run_id, range(1, 4))
    assert journal.all_undelivered() == [] and check_journals({})[0].status == "ok"


KILLED_WRITER = """
import os, signal, sys
from pipeline import tracking
from pipeline.doctor import check_journals
handle = tracking.RunHandle(*sys.argv[1:5])
tracker = tracking.Tracker(handle)
for step in (1, 2, 3):
    tracker.log_metrics({"loss_d": float(step)}, step=step)
tracker.set_tags({"pipeline.note": "written before the kill"})
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_journal_survives_a_sigkill(server, tmp_path, cli):
    """The command killed (SIGKILL) while the server is away: what it journalled is on disk,
    and `pipeline sync RUN` (by name) delivers it."""
    handle = tracking.start_run(server.uri, "outage/dcgan", "killed", {"lr_g": 2e-4})
    server.stop()
    args = [handle.uri, handle.run_id, handle.experiment_id, handle.name]
    done = subprocess.run([sys.executable, "-c", KILLED_WRITER, *args], env=os.environ.copy(),
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == -signal.SIGKILL, done.stderr
    server.start()
    synced = cli("sync", "killed")
    assert synced.exit_code == 0 and "delivered" in synced.output, synced.output
    assert history(server.uri, handle.run_id, "loss_d") == [(1, 1.0), (2, 2.0), (3, 3.0)]
    run = client(server.uri).get_run(handle.run_id)
    assert run.data.tags["pipeline.note"] == "written before the kill"


def logged_by_an_ended_process(handles, metrics: dict, step: int) -> None:
    """`metrics` logged into each run by another process that ends while the server is away:
    what is left is its journal, with no live sender to deliver it."""
    script = (
        "import sys, json; from pipeline.tracking import RunHandle, Tracker\n"
        "points, step = json.loads(sys.argv[2]), int(sys.argv[3])\n"
        "for fields in json.loads(sys.argv[1]):\n"
        "    Tracker(RunHandle(*fields)).log_metrics(points, step=step)"
    )
    ended = subprocess.run(
        [sys.executable, "-c", script, json.dumps([list(h.to_dict().values()) for h in handles]),
         json.dumps(metrics), str(step)],
        env={**os.environ, "PIPELINE_TRACKING_WAIT_S": "0"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert ended.returncode == 0, ended.stderr[-2000:]


def test_sync_refuses_what_is_no_journal_and_a_deleted_run(server, tmp_path, cli):
    (tmp_path / "not-a-journal").mkdir()
    (tmp_path / "not-a-journal" / "notes.txt").write_text("hello")
    for target, message in (
        (str(tmp_path / "not-a-journal"), "holds no pipeline journal"),
        ("no-such-run", "no journal of run 'no-such-run'"),
    ):
        result = cli("sync", target)
        assert result.exit_code != 0 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1

    handle = tracking.start_run(server.uri, "outage/dcgan", "deleted", {"lr_g": 2e-4})
    folder = journal.journals_root() / handle.run_id
    server.stop()
    # Not by a live tracker here: its sender could deliver the point the moment the server is
    # back, before the run is deleted (it did, once in a loaded CI run).
    logged_by_an_ended_process([handle], {"loss_d": 1.0}, step=1)
    server.start()
    client(server.uri).delete_run(handle.run_id)
    result = cli("sync", str(folder))
    assert result.exit_code != 0 and "is deleted on" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert journal.undelivered(journal.run_journals(folder)[0])  # nothing lost: still kept


SMALL = ["--set", "model.width_g=16", "--set", "model.width_d=16", "--set", "model.z_dim=32"]


def journalled(folder: Path, key: str) -> int:
    """How many reports of `key` a run's journals hold (delivered or not)."""
    import json

    count = 0
    for path in journal.run_journals(folder):
        for line in path.read_text().splitlines():
            event = json.loads(line)
            if event["kind"] == "metrics" and any(p[0] == key for p in event["points"]):
                count += 1
    return count


@pytest.mark.ray
@pytest.mark.parametrize("workers", [2, 1], ids=["ray-train-2-workers", "solo"])
def test_a_training_run_through_an_outage_ends_whole(server, tmp_path, workers):
    """`pipeline train` whose server is stopped after the first epoch landed and started again
    several reports later: FINISHED, every epoch's metrics exactly once, every grid."""
    from tests.conftest import require_shared
    from tests.train_fixtures import anime_dataset

    require_shared("anime-mlds2018")
    data, epochs = anime_dataset(tmp_path / "data"), 8
    env = {**os.environ, "MLFLOW_TRACKING_URI": server.uri, "PIPELINE_TRACKING_WAIT_S": "180"}
    command = [
        sys.executable,
        "-m",
        "stages.cli",
        "train",
        "dcgan",
        "--data",
        str(data),
        "--epochs",
        str(epochs),
        "--workers",
        str(workers),
        "--batch-size",
        "32",
        *SMALL,
    ]
    train = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, start_new_session=True)  # fmt: skip
    with killed_at_exit(train):
        root = journal.journals_root()
        wait_for(lambda: root.is_dir() and any(root.iterdir()), "a journal", timeout=300)
        folder = next(root.iterdir())
        run_id = folder.name
        wait_for(lambda: history(server.uri, run_id, "loss_d"), "epoch 1 in MLflow", timeout=300)
        server.stop()
        wait_for(lambda: journalled(folder, "loss_d") >= 4, "3 reports while away", timeout=300)
        server.start()
        output, _ = train.communicate(timeout=600)
    assert train.returncode == 0, output[-3000:]
    assert "unreachable: keeping the record in" in output, output[-3000:]
    steps = [step for step, _ in history(server.uri, run_id, "loss_d")]
    assert len(steps) == epochs and len(set(steps)) == epochs  # every epoch, each once
    grids = artifacts(server.uri, run_id, "samples")
    assert len([g for g in grids if g.endswith(".png")]) == epochs
    assert client(server.uri).get_run(run_id).info.status == "FINISHED"
    assert not journal.all_undelivered()


def test_tune_resume_delivers_what_the_sweep_kept(server):
    """What a sweep's parent and trials kept while the server was away is delivered when the
    sweep is resumed (`deliver_kept`, called by `tune --resume`); another run's journal is
    left for its own `pipeline sync`."""
    from pipeline.tracking.delivery import deliver_kept, sync

    parent = tracking.start_run(server.uri, "sweeps/acgan", "asha", {"sweep.samples": 2})
    trial = tracking.start_run(server.uri, "sweeps/acgan", "asha-0", {"lambda_cls": 1.0},
                               parent_run_id=parent.run_id)  # fmt: skip
    other = tracking.start_run(server.uri, "celeba-64/dcgan", "other", {"lr_g": 2e-4})
    server.stop()
    # The sweep's parent and trial, and another run, each logged by a process that ended while
    # the server was away (as an interrupted sweep did): no live sender is left to deliver
    # them the moment the server is back (in this process, theirs raced deliver_kept and won
    # one run in several), only their journals.
    logged_by_an_ended_process((parent, trial, other), {"fid_standin": 3.0}, step=64)
    server.start()
    said: list[str] = []
    assert deliver_kept(server.uri, parent.run_id, said.append) == 2
    assert all("kept in" in line for line in said) and len(said) == 2
    for handle in (parent, trial):
        assert history(server.uri, handle.run_id, "fid_standin") == [(64, 3.0)]
    assert journal.all_undelivered() == [journal.journals_root() / other.run_id]
    sync(journal.journals_root() / other.run_id)  # what `pipeline sync` does
    assert journal.all_undelivered() == []


SWEEP = ["--set", "batch_size=32", "--set", "fid.samples=96", "--set", "fid.dims=64",
         "--set", "fid.every=1", "--set", "model.arch=dcgan"]  # fmt: skip


@pytest.mark.ray
def test_a_sweep_through_an_outage_then_tune_resume_ends_whole(server, tmp_path, cli, monkeypatch):
    """A 2-trial sweep whose server goes away in the middle is interrupted (Ctrl-C) while it
    is still away; with the server back, `tune --resume` delivers what the sweep kept and
    finishes it: one parent and two children, FINISHED, every epoch of each exactly once."""
    from tests.conftest import require_shared
    from tests.test_tune_ray import children, parent_run
    from tests.train_fixtures import anime_dataset

    require_shared("anime-mlds2018")
    data, epochs = anime_dataset(tmp_path / "data"), 5
    env = {**os.environ, "MLFLOW_TRACKING_URI": server.uri, "PIPELINE_TRACKING_WAIT_S": "3"}
    command = [sys.executable, "-m", "stages.cli", "tune", "acgan", "--data", str(data),
               "--samples", "2", "--max-epochs", str(epochs), "--workers-per-trial", "1",
               "--scheduler", "fifo", "--name", "away", *SMALL, *SWEEP]  # fmt: skip
    sweep = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, start_new_session=True)  # fmt: skip
    mlflow = client(server.uri)

    def an_epoch_landed() -> bool:
        assert sweep.poll() is None, sweep.communicate()[0][-3000:]
        try:
            runs = children(mlflow, parent_run(mlflow, "away").info.run_id)
        except Exception:  # noqa: BLE001 - the store or the parent is not there yet
            return False
        return any(mlflow.get_metric_history(r.info.run_id, "epoch") for r in runs)

    with killed_at_exit(sweep):
        wait_for(an_epoch_landed, "a trial's first epoch in MLflow", timeout=300)
        server.stop()
        root = journal.journals_root()
        wait_for(lambda: sum(journalled(f, "loss_d") for f in root.iterdir()) >= 4,
                 "more reports while away", timeout=300)  # fmt: skip
        sweep.send_signal(signal.SIGINT)  # Ctrl-C while the server is away
        output, _ = sweep.communicate(timeout=180)
    assert sweep.returncode == 1, output[-3000:]
    assert "unreachable: keeping the record in" in output, output[-3000:]
    assert "pipeline sync" in output, output[-3000:]
    assert journal.all_undelivered()

    server.start()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    result = cli("tune", "--resume", "--name", "away")
    assert result.exit_code == 0, result.output
    parent = parent_run(mlflow, "away")  # still one parent
    assert parent.info.status == "FINISHED"
    runs = children(mlflow, parent.info.run_id)
    assert len({r.data.tags["ray.trial_id"] for r in runs}) == len(runs) == 2
    for run in runs:
        assert run.info.status == "FINISHED"
        epochs_logged = [m.value for m in mlflow.get_metric_history(run.info.run_id, "epoch")]
        assert sorted(epochs_logged) == [1, 2, 3, 4, 5], (run.info.run_name, epochs_logged)
        steps = [m.step for m in mlflow.get_metric_history(run.info.run_id, "loss_d")]
        assert len(steps) == len(set(steps)) == epochs
    assert not journal.all_undelivered()
