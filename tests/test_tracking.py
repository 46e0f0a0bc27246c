"""pipeline.tracking against a real MLflow store: sqlite in tmp_path (and one real server, slow).

Other processes are started with `spawn`, as Ray starts its workers: nothing is inherited but
the RunHandle they are given.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pipeline import tracking
from pipeline.errors import PipelineError
from pipeline.tracking import RunHandle, Tracker
from tests.browser import free_port
from tests.mlflow_server import mlflow_server


@pytest.fixture(scope="session")
def _template_store(tmp_path_factory) -> Path:
    """An empty, migrated sqlite store, made once: MLflow's migrations take seconds."""
    folder = tmp_path_factory.mktemp("template")
    tracking.prepare_store(f"sqlite:///{folder}/mlflow.db")
    return folder / "mlflow.db"


@pytest.fixture
def store(_template_store, tmp_path, monkeypatch) -> str:
    """A ready sqlite store at MLflow's default place, ./mlflow.db in the test's cwd."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    shutil.copy(_template_store, tmp_path / "mlflow.db")
    return tracking.tracking_uri()


@pytest.fixture(scope="module")
def processes():
    """Four spawned processes, as Ray starts its workers (spawned once: each imports mlflow)."""
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        yield pool


def client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(uri)


def grid_image(color: str = "red"):
    from PIL import Image

    return Image.new("RGB", (24, 16), color)


# ---------------------------------------------------------------------------------------------
# The tracking URI.


def test_default_uri_is_mlflows_own_default_made_absolute(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    uri = tracking.tracking_uri()
    assert uri == f"sqlite:///{tmp_path}/mlflow.db"
    assert uri == mlflow.get_tracking_uri()  # a bare `mlflow ui` here shows the same store
    assert not (tmp_path / "mlflow.db").exists()  # resolving creates nothing


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ("sqlite:///runs/m.db", "sqlite:///{cwd}/runs/m.db"),
        ("sqlite:///m.db?timeout=30", "sqlite:///{cwd}/m.db?timeout=30"),
        ("sqlite:////abs/m.db", "sqlite:////abs/m.db"),
        ("file:./mlruns", "file://{cwd}/mlruns"),
        ("file:///abs/mlruns", "file:///abs/mlruns"),
        ("./mlruns", "file://{cwd}/mlruns"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("https://mlflow.example.org", "https://mlflow.example.org"),
        ("databricks", "databricks"),
        ("postgresql://user@db/mlflow", "postgresql://user@db/mlflow"),
    ],
)
def test_env_uri_made_absolute(env, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env)
    assert tracking.tracking_uri() == expected.format(cwd=tmp_path)


def test_importing_tracking_and_a_silent_tracker_do_not_import_mlflow():
    code = (
        "import sys; from pipeline.tracking import Tracker; t = Tracker(None);"
        "t.log_metrics({'a': 1.0}, 1); t.log_params({'a': 1}); t.log_image(None, 'a.png', 'a', 1);"
        "t.log_artifact('x'); t.log_dict({}, 'a.json'); t.set_tags({'a': 1}); t.finish();"
        "print('mlflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_default_experiment_names_dataset_and_family():
    assert tracking.default_experiment("celeba-64", "dcgan") == "celeba-64/dcgan"
    assert tracking.default_experiment("/data/anime-64", "acgan") == "anime-64/acgan"


# ---------------------------------------------------------------------------------------------
# The store.


def _start_log_finish(uri: str, index: int) -> str:
    """A process acting as one driver: prepare, start a run, log, finish."""
    tracking.prepare_store(uri)
    handle = tracking.start_run(uri, "mp/dcgan", f"run-{index}", {"index": index})
    tracker = Tracker(handle)
    for step in range(20):
        tracker.log_metrics({"loss_d": step * 0.1, "worker": index}, step=step)
    tracker.finish()
    return handle.run_id


@pytest.mark.slow  # several processes
def test_concurrent_processes_on_a_fresh_store(processes, tmp_path):
    """Four processes create (prepare_store: locked), then write to, one fresh store."""
    uri = f"sqlite:///{tmp_path}/fresh/mlflow.db"  # the folder does not exist yet either
    run_ids = processes.starmap(_start_log_finish, [(uri, i) for i in range(4)])

    mlflow_client = client(uri)
    experiment = mlflow_client.get_experiment_by_name("mp/dcgan")
    runs = {run.info.run_id: run for run in mlflow_client.search_runs([experiment.experiment_id])}
    assert set(runs) == set(run_ids)
    for run in runs.values():
        assert run.info.status == "FINISHED"
        history = mlflow_client.get_metric_history(run.info.run_id, "loss_d")
        assert [m.step for m in history] == list(range(20))

    started = time.perf_counter()
    tracking.prepare_store(uri)  # already there: only opened
    tracking.prepare_store(uri)
    assert time.perf_counter() - started < 1.0


def test_prepare_store_on_a_closed_port_is_one_clear_line():
    uri = f"http://127.0.0.1:{free_port()}"
    started = time.perf_counter()
    with pytest.raises(PipelineError) as error:
        tracking.prepare_store(uri)
    assert time.perf_counter() - started < 5
    message = str(error.value)
    assert "\n" not in message
    assert uri in message and "mlflow server" in message and "MLFLOW_TRACKING_URI" in message


def test_prepare_store_refuses_an_unusable_store(tmp_path):
    (tmp_path / "mlflow.db").write_text("not a database")
    with pytest.raises(PipelineError, match="cannot open the MLflow store"):
        tracking.prepare_store(f"sqlite:///{tmp_path}/mlflow.db")


# ---------------------------------------------------------------------------------------------
# Runs.


def test_a_run_with_params_metrics_images_and_artifacts(store, tmp_path, caplog):
    params = {"train": {f"p{i:03d}": i for i in range(150)}}  # more than one batch of 100
    params["model"] = {"long": "x" * 7000, "attrs": ["Male", "Smiling"], "norm_d": None}
    handle = tracking.start_run(store, "celeba-64/dcgan", "dcgan-1", params, tags={"seed": 3})
    assert handle == pickle_round_trip(handle)
    assert tracking.run_status(store, handle.run_id) == "RUNNING"

    tracker = Tracker(handle)
    tracker.log_metrics({"loss_d": 1.5, "D(x)": 0.75}, step=64)
    tracker.log_metrics({"loss_d": 1.0, "loss_g": float("nan")}, step=128)
    tracker.log_metrics({"loss_d": 0.5, "loss_g": float("inf")}, step=192)
    tracker.log_image(grid_image(), "samples/epoch-001.png", key="samples", step=128)
    tracker.log_dict({"train": {"lr_g": 2e-4}}, "config.yaml")
    (tmp_path / "notes.txt").write_text("hello")
    tracker.log_artifact(tmp_path / "notes.txt", "extra")
    tracker.set_tags({"best_fid": 12.5})
    tracker.finish()

    run = client(store).get_run(handle.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "dcgan-1" == handle.name
    logged = run.data.params
    assert len(logged) == 153
    assert logged["train.p149"] == "149"
    assert len(logged["model.long"]) == 6000 and logged["model.long"].endswith("...")
    assert logged["model.attrs"] == '["Male", "Smiling"]'
    assert logged["model.norm_d"] == "None"
    tags = run.data.tags
    assert tags["mlflow.runName"] == "dcgan-1" and tags["seed"] == "3"
    assert tags["best_fid"] == "12.5"
    assert "mlflow.parentRunId" not in tags

    history = client(store).get_metric_history(handle.run_id, "loss_d")
    assert [(m.step, m.value) for m in history] == [(64, 1.5), (128, 1.0), (192, 0.5)]
    assert run.data.metrics["D_x_"] == 0.75  # a name MLflow accepts
    assert client(store).get_metric_history(handle.run_id, "loss_g") == []
    assert tags["nonfinite.loss_g"] == "nan at step 128"  # the first blow-up is on record
    assert "non-finite loss_g" in caplog.text

    # Artifacts beside the store, absolute, in a folder named after the experiment.
    experiment = client(store).get_experiment(handle.experiment_id)
    assert experiment.artifact_location == str(tmp_path / "mlruns" / "celeba-64" / "dcgan")
    artifacts = Path(run.info.artifact_uri)
    assert artifacts == tmp_path / "mlruns" / "celeba-64" / "dcgan" / handle.run_id / "artifacts"
    assert (artifacts / "samples" / "epoch-001.png").is_file()
    assert (artifacts / "extra" / "notes.txt").read_text() == "hello"
    assert "lr_g" in (artifacts / "config.yaml").read_text()
    series = sorted(p.name for p in (artifacts / "images").iterdir())
    assert any(name.startswith("samples+step+128+") and name.endswith(".png") for name in series)
    assert tags["mlflow.loggedImages"] == "True"  # the UI's image step slider


def pickle_round_trip(value):
    import pickle

    return pickle.loads(pickle.dumps(value))


def test_nested_runs_and_finding_a_trial_again(store):
    parent = tracking.start_run(store, "anime-64/acgan", "sweep", {"samples": 4})
    child = tracking.start_run(
        store,
        "anime-64/acgan",
        "trial-0",
        {"lambda_cls": 1.0},
        tags={"ray.trial_id": "abc_00000"},
        parent_run_id=parent.run_id,
    )
    tags = client(store).get_run(child.run_id).data.tags
    assert tags["mlflow.parentRunId"] == parent.run_id
    assert child.experiment_id == parent.experiment_id

    again = tracking.find_run_by_tags(
        store, "anime-64/acgan", {"ray.trial_id": "abc_00000"}, parent_run_id=parent.run_id
    )
    assert again == child
    assert tracking.find_run_by_tags(store, "anime-64/acgan", {"ray.trial_id": "nope"}) is None
    assert tracking.find_run_by_tags(store, "no/such", {"ray.trial_id": "abc_00000"}) is None

    with pytest.raises(PipelineError, match="no MLflow run 0123"):
        tracking.start_run(store, "anime-64/acgan", "x", {}, parent_run_id="0123" * 8)


def test_unknown_run_id_is_a_clear_error(store):
    for run_id in ("0123456789abcdef0123456789abcdef", "not-a-run"):
        with pytest.raises(PipelineError) as error:
            tracking.find_run(store, run_id)
        assert str(error.value) == f"no MLflow run {run_id} in {store}"
        with pytest.raises(PipelineError, match="no MLflow run"):
            tracking.run_status(store, run_id)


def test_resume_reopens_the_same_run(store):
    handle = tracking.start_run(store, "celeba-64/dcgan", "r", {"lr_g": 2e-4})
    Tracker(handle).log_metrics({"loss_d": 1.0}, step=1)
    Tracker(handle).finish("KILLED")
    assert tracking.run_status(store, handle.run_id) == "KILLED"

    found = tracking.find_run(store, handle.run_id)
    assert found == handle
    tracking.reopen_run(found)
    assert tracking.run_status(store, handle.run_id) == "RUNNING"
    Tracker(found).log_metrics({"loss_d": 0.5}, step=2)
    Tracker(found).finish()
    history = client(store).get_metric_history(handle.run_id, "loss_d")
    assert [m.step for m in history] == [1, 2]
    assert tracking.run_status(store, handle.run_id) == "FINISHED"


def test_deleted_experiment_is_a_clear_error(store):
    experiment = tracking.experiment_id(store, "old/dcgan")
    assert tracking.experiment_id(store, "old/dcgan") == experiment  # get, not create again
    client(store).delete_experiment(experiment)
    with pytest.raises(PipelineError, match="is deleted: restore it"):
        tracking.start_run(store, "old/dcgan", "r", {})


# ---------------------------------------------------------------------------------------------
# The tracker in training.


def test_tracker_of_none_does_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    tracker = Tracker(None)
    assert not tracker.enabled
    tracker.log_metrics({"loss_d": 1.0}, step=1)
    tracker.log_params({"a": 1})
    tracker.log_image(grid_image(), "samples/epoch-001.png", key="samples", step=1)
    tracker.log_artifact(tmp_path / "missing.txt")
    tracker.log_dict({"a": 1}, "config.yaml")
    tracker.set_tags({"a": 1})
    tracker.finish("FAILED")
    assert list(tmp_path.iterdir()) == []  # no store, no artifacts


class FlakyClient:
    """Stands in for MlflowClient: log_batch fails `failures` times with `code`, then works."""

    def __init__(self, failures: int, code: str):
        from mlflow.protos import databricks_pb2

        self.failures, self.code, self.calls, self.sent = (
            failures,
            getattr(databricks_pb2, code),
            0,
            [],
        )

    def log_batch(self, run_id, metrics=(), params=(), tags=()):
        from mlflow.exceptions import MlflowException

        self.calls += 1
        if self.calls <= self.failures:
            raise MlflowException("store trouble", error_code=self.code)
        self.sent.extend(metrics)


def test_a_transient_failure_keeps_the_event_a_refusal_passes_it_over(tmp_path, caplog):
    """Delivery stops at a transient failure (the event stays in the journal, sent once when
    the store answers) and passes over one MLflow refuses, with a warning."""
    from pipeline.tracking import delivery, journal

    handle = RunHandle("sqlite:////nowhere/mlflow.db", "r" * 32, "1", "run")
    book = journal.Journal(handle, root=tmp_path)
    book.append("metrics", points=[["loss_d", 1.0, 1000, 1]])
    book.append("metrics", points=[["loss_d", 2.0, 2000, 2]])

    locked = FlakyClient(failures=1, code="TEMPORARILY_UNAVAILABLE")  # a locked sqlite store
    with pytest.raises(delivery.Unreachable, match="store trouble"):
        delivery.deliver(book.path, locked)
    assert journal.undelivered(book.path) and locked.sent == []
    assert delivery.deliver(book.path, locked) == 2
    assert [(m.step, m.value) for m in locked.sent] == [(1, 1.0), (2, 2.0)]
    assert delivery.deliver(book.path, locked) == 0 and not journal.undelivered(book.path)

    book.append("metrics", points=[["loss_d", 3.0, 3000, 3]])
    refused = FlakyClient(failures=99, code="INVALID_PARAMETER_VALUE")  # no use retrying
    delivery.deliver(book.path, refused)
    assert (
        refused.calls == 1 and "could not log metrics (store trouble); passed over" in caplog.text
    )
    assert not journal.undelivered(book.path)


def test_a_dead_server_costs_the_loop_nothing_and_names_pipeline_sync(
    monkeypatch, capsys, tmp_path
):
    """Nothing answers at the URI: logging returns at once (the journal takes it), and the
    run's end waits the bounded time, then names `pipeline sync` with the journal's folder."""
    from pipeline.tracking import journal

    monkeypatch.setenv("PIPELINE_TRACKING_WAIT_S", "1")
    handle = RunHandle(f"http://127.0.0.1:{free_port()}", "d" * 32, "1", "dead")
    tracker = Tracker(handle)
    tracker.log_metrics({"loss_d": 1.0}, step=1)
    tracker.finish()  # returns after the bounded wait (MLflow's own retries: minutes per call)
    folder = journal.journals_root() / handle.run_id
    assert f"deliver it with: pipeline sync {folder}" in capsys.readouterr().out
    assert journal.all_undelivered() == [folder]
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ  # put back after the calls


def _log_from_elsewhere(handle: RunHandle, cwd: str, runs: str) -> None:
    """A Ray worker's view: another current directory, only the handle from the driver (and
    PIPELINE_RUNS, which the driver hands its workers)."""
    os.environ["PIPELINE_RUNS"] = runs
    os.chdir(cwd)
    Path("local.txt").write_text("from the worker")
    tracker = Tracker(handle)
    tracker.log_metrics({"loss_g": 2.0}, step=256)
    tracker.log_image(grid_image("blue"), "samples/epoch-002.png", key="samples", step=256)
    tracker.log_artifact("local.txt", "worker")
    tracker.close()  # a worker's end: what it logged is delivered before it goes


def test_another_process_with_another_cwd_logs_into_the_same_run(processes, store, tmp_path):
    handle = tracking.start_run(store, "celeba-64/dcgan", "ddp", {"workers": 2})
    elsewhere = tmp_path / "ray-worker-cwd"
    elsewhere.mkdir()
    processes.apply(_log_from_elsewhere, (handle, str(elsewhere), os.environ["PIPELINE_RUNS"]))
    Tracker(handle).finish()

    run = client(store).get_run(handle.run_id)
    assert run.data.metrics["loss_g"] == 2.0 and run.info.status == "FINISHED"
    artifacts = tmp_path / "mlruns" / "celeba-64" / "dcgan" / handle.run_id / "artifacts"
    assert (artifacts / "samples" / "epoch-002.png").is_file()
    assert (artifacts / "worker" / "local.txt").read_text() == "from the worker"
    assert sorted(p.name for p in elsewhere.iterdir()) == ["local.txt"]  # nothing else there


# ---------------------------------------------------------------------------------------------
# A real tracking server.


@pytest.mark.slow
def test_real_server_and_the_ui_over_a_local_store(store, tmp_path, monkeypatch):
    """`mlflow server` over the sqlite store: runs logged directly (local artifact paths) show
    through it, and runs logged through it (proxied artifacts) land in its artifact folder."""
    direct = tracking.start_run(store, "celeba-64/dcgan", "direct", {"lr_g": 2e-4})
    Tracker(direct).log_image(grid_image(), "samples/epoch-001.png")
    Tracker(direct).finish()

    with mlflow_server(store, tmp_path / "mlartifacts") as uri:
        # What the UI reads for the run logged straight into sqlite.
        url = f"{uri}/get-artifact?path=samples/epoch-001.png&run_uuid={direct.run_id}"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.read()[:8] == b"\x89PNG\r\n\x1a\n"

        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        assert tracking.tracking_uri() == uri
        handle = tracking.start_run(uri, "served/dcgan", "served", {"lr_d": 1e-4})
        tracker = Tracker(handle)
        tracker.log_metrics({"loss_d": 0.25, "loss_g": float("nan")}, step=64)
        tracker.log_image(grid_image(), "samples/epoch-001.png", key="samples", step=64)
        tracker.finish()

        run = client(uri).get_run(handle.run_id)
        assert run.info.status == "FINISHED" and run.data.params["lr_d"] == "0.0001"
        assert run.data.metrics == {"loss_d": 0.25}
        assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
        listed = {a.path for a in client(uri).list_artifacts(handle.run_id, "samples")}
        assert listed == {"samples/epoch-001.png"}
        stored = list((tmp_path / "mlartifacts").rglob("epoch-001.png"))
        assert len(stored) == 1 and handle.run_id in str(stored[0])
        with pytest.raises(PipelineError, match=f"no MLflow run {'f' * 32} in {uri}"):
            tracking.find_run(uri, "f" * 32)


def test_bad_journals_and_a_bad_wait_are_one_line(cli, tmp_path, monkeypatch):
    """A folder holding some other .jsonl is no journal; a damaged journal line names its file
    and byte; a wait that is no number of seconds is refused."""
    from pipeline.tracking import delivery, journal

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.jsonl").write_text('{"a": 1}\n')
    result = cli("sync", str(tmp_path / "other"))
    assert result.exit_code != 0 and "holds no pipeline journal" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1

    handle = RunHandle("sqlite:////nowhere/mlflow.db", "b" * 32, "1", "run")
    book = journal.Journal(handle, root=tmp_path)
    book.append("metrics", points=[["loss_d", 1.0, 1000, 1]])
    with open(book.path, "ab") as file:
        file.write(b"\x00\x00 not json\n")
    with pytest.raises(PipelineError, match=r"no JSON event at byte \d+ \(damaged\?\)"):
        list(journal.pending(book.path))

    monkeypatch.setenv("PIPELINE_TRACKING_WAIT_S", "a minute")
    with pytest.raises(PipelineError, match="'a minute' is not a number of seconds"):
        delivery.wait_s()
