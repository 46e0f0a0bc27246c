"""`pipeline ui`: the MLflow UI over the store the other commands use.

The browser test (a sweep opened in headless Chromium) is in test_tune_ray.py, beside the
sweep it opens.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request

import pytest

from tests.browser import free_port
from tests.conftest import killed_at_exit
from tests.shard_checks import assert_one_line_error


def test_busy_port_is_a_one_line_error(cli):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("ui", "--port", port)
    assert_one_line_error(result, f"127.0.0.1:{port}", "pass another --port")
    assert_one_line_error(cli("ui", "--port", "70000"), "--port 70000")


def test_a_tracking_server_is_its_own_ui(cli, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    result = cli("ui")
    assert result.exit_code == 0 and "http://127.0.0.1:5999" in result.stdout


@pytest.mark.slow
def test_ui_serves_the_default_store_and_stops_on_ctrl_c(tmp_path, monkeypatch):
    """With no MLFLOW_TRACKING_URI: ./mlflow.db (created), on 127.0.0.1, the URL printed."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "stages.cli", "ui", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ),
        start_new_session=True,
    )  # fmt: skip
    with killed_at_exit(server):  # its `mlflow server` too, if it outlives the wait below
        try:
            line = ""
            while "MLflow UI:" not in line:
                line = server.stdout.readline()
                assert line or server.poll() is None, "pipeline ui exited early"
            assert f"http://127.0.0.1:{port}" in line and str(tmp_path / "mlflow.db") in line
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as answer:
                assert answer.status == 200
            assert (tmp_path / "mlflow.db").stat().st_size > 0
        finally:
            server.send_signal(signal.SIGINT)
            server.communicate(timeout=120)  # MLflow winds down slowly on a loaded machine
    assert server.returncode == 0
    with pytest.raises(OSError):  # the server went with it
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
