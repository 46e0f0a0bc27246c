"""Secrets stay where the user put them: a password in the tracking URI is kept in no file,
artifact, param or message; credentials go only to the store the user names, never to one a
sweep folder names or a redirect points to; a sweep folder others can write is not resumed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeline import tracking
from pipeline.errors import PipelineError
from pipeline.tracking.store import _check_credentials, connectable, redacted
from pipeline.tuning.plan import SweepPlan, sweeps_dir
from pipeline.ui import server_command, server_env

SECRET = "pw-Secret-4711"


def test_a_password_in_the_tracking_uri_is_hidden_and_given_back_only_to_its_store(
    monkeypatch,
):
    uri = f"postgresql+psycopg://mlflow:{SECRET}@127.0.0.1:5432/mlflow"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    shown = "postgresql+psycopg://mlflow:***@127.0.0.1:5432/mlflow"
    assert tracking.tracking_uri() == shown == redacted(uri)
    assert connectable(shown) == uri
    with pytest.raises(PipelineError, match="needs its password, which is kept nowhere but in"):
        connectable("postgresql+psycopg://mlflow:***@10.0.0.9:5432/mlflow")  # another store
    assert redacted("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"
    assert redacted("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert redacted("http://ann@127.0.0.1:5000") == "http://ann@127.0.0.1:5000"


def test_the_ui_server_gets_its_store_in_the_environment_not_on_its_command_line(monkeypatch):
    uri = f"postgresql+psycopg://mlflow:{SECRET}@127.0.0.1:5432/mlflow"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    command = server_command(tracking.tracking_uri(), "127.0.0.1", 5000)
    assert not any(SECRET in part or "postgresql" in part for part in command)  # ps shows these
    assert server_env(tracking.tracking_uri())["MLFLOW_BACKEND_STORE_URI"] == uri


class Recorder(BaseHTTPRequestHandler):
    """Answers /health, redirects the API (when `to` is set) and records what it was sent."""

    to: str | None = None
    seen: list

    def do_GET(self):  # noqa: N802 - http.server's name
        self.seen.append((self.path, self.headers.get("Authorization")))
        if self.to and self.path.startswith("/api/"):
            self.send_response(302)
            self.send_header("Location", self.to + self.path)
            self.end_headers()
            return
        body = json.dumps({"experiments": []}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def recording_server(to: str | None = None):
    handler = type("Handler", (Recorder,), {"to": to, "seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, handler.seen, f"http://127.0.0.1:{server.server_address[1]}"


def test_credentials_do_not_follow_a_redirect_to_another_host(monkeypatch):
    other, other_saw, other_url = recording_server()
    home, home_saw, home_url = recording_server(to=other_url)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "ann")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", SECRET)
    try:
        _check_credentials(home_url)
    finally:
        home.shutdown()
        other.shutdown()
    assert home_saw[0][1] is not None  # the server named by the user gets them
    assert other_saw and all(auth is None for _, auth in other_saw)


def plan_naming(uri: str, name: str) -> dict:
    return SweepPlan(
        name=name, family="dcgan", dataset_path="x", dataset_name="x", uri=uri,
        experiment="x", storage=sweeps_dir(), space_file="x", space={}, base={},
        scheduler="asha", search="random", samples=1, max_epochs=1, metric="fid",
        requested_metric="fid", mode="min", workers_per_trial=1, concurrent=1, trials=1,
        parent={"uri": uri, "run_id": "r", "experiment_id": "1", "name": name},
    ).to_dict()  # fmt: skip


def write_sweep(name: str, plan: dict) -> Path:
    folder = Path(sweeps_dir()) / name
    folder.mkdir(parents=True)
    (folder / "sweep.json").write_text(json.dumps(plan))
    return folder


def test_a_sweep_json_naming_another_store_gets_no_credentials(cli, monkeypatch):
    evil, evil_saw, evil_url = recording_server()
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "ann")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", SECRET)
    write_sweep("s1", plan_naming(evil_url, "s1"))
    try:
        resumed = cli("tune", "--resume", "--name", "s1")
    finally:
        evil.shutdown()
    assert resumed.exit_code == 1
    assert f"sweep s1 logs to the MLflow store {evil_url}, but MLFLOW_TRACKING_URI names" in (
        resumed.stderr
    )
    assert len(resumed.stderr.strip().splitlines()) == 1
    assert evil_saw == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda plan: plan.update(name="other"), "is the plan of sweep 'other', not 's2'"),
        (lambda plan: plan.update(storage="/elsewhere"), "keeps its state in /elsewhere"),
        (lambda plan: plan.update(evil=1), "not a sweep plan this pipeline wrote (fields: evil)"),
        (lambda plan: plan.update(samples="1"), "samples is not a int"),
    ],
    ids=["name", "storage", "field", "type"],
)
def test_a_crafted_sweep_json_is_one_line(cli, change, message):
    plan = plan_naming(tracking.tracking_uri(), "s2")
    change(plan)
    write_sweep("s2", plan)
    resumed = cli("tune", "--resume", "--name", "s2")
    assert resumed.exit_code == 1 and message in resumed.stderr, resumed.output
    assert len(resumed.stderr.strip().splitlines()) == 1


def test_a_sweep_folder_every_user_can_write_is_not_resumed(cli):
    folder = write_sweep("s3", plan_naming(tracking.tracking_uri(), "s3"))
    (folder / "tuner.pkl").write_bytes(b"not unpickled")
    (folder / "tuner.pkl").chmod(0o666)
    resumed = cli("tune", "--resume", "--name", "s3")
    assert resumed.exit_code == 1
    assert "tuner.pkl is writable by every user (mode 666): --resume unpickles" in resumed.stderr


@pytest.mark.slow  # PostgreSQL and a training run
@pytest.mark.ray
def test_a_database_password_is_in_no_file_param_artifact_or_line(tmp_path):
    """A run logged straight to PostgreSQL with the password in MLFLOW_TRACKING_URI: nothing
    the run writes anywhere (runs folder, journal, cache, MLflow params, tags and artifacts,
    its console) holds the password."""
    from mlflow import MlflowClient

    from tests.conftest import require_shared
    from tests.postgres_server import postgres_server
    from tests.train_fixtures import TINY, anime_dataset

    require_shared("anime-mlds2018")
    data = anime_dataset(tmp_path / "data")
    with postgres_server() as uri:  # trust auth: a password in the URI is accepted, unused
        secret_uri = uri.replace("mlflow@", f"mlflow:{SECRET}@", 1)
        assert SECRET in secret_uri
        home = tmp_path / "home"
        env = {**os.environ, "MLFLOW_TRACKING_URI": secret_uri, "HOME": str(home)}
        env["PIPELINE_RUNS"] = str(tmp_path / "runs")
        env["PIPELINE_CACHE"] = str(tmp_path / "cache")
        sets = [arg for key, value in TINY.items() for arg in ("--set", f"{key}={value}")]
        done = subprocess.run(
            [sys.executable, "-m", "stages.cli", "train", "dcgan", "--data", str(data),
             "--epochs", "1", "--workers", "1", *sets],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        assert SECRET not in done.stdout + done.stderr
        client = MlflowClient(secret_uri)
        runs = client.search_runs(
            [e.experiment_id for e in client.search_experiments()], max_results=10
        )
        assert len(runs) == 1
        run = runs[0]
        assert SECRET not in json.dumps(run.data.params) + json.dumps(run.data.tags)
        artifacts = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "a")))
    leaks = [
        str(path)
        for root in (tmp_path, artifacts)
        for path in root.rglob("*")
        if path.is_file() and SECRET.encode() in path.read_bytes()
    ]
    assert leaks == []
