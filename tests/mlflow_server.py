"""A real `mlflow server` for tests: on 127.0.0.1 over a backend store, artifacts proxied to a
folder or a bucket (clients anywhere log through it, with no storage credentials of their
own), stopped by its process id with its workers.

    with mlflow_server("sqlite:///.../mlflow.db", tmp_path / "mlartifacts") as uri:
        ... MLFLOW_TRACKING_URI=uri ...
    with mlflow_server(postgres_uri, "s3://bucket/mlartifacts", env=s3.env) as uri: ...
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tests.browser import free_port


class MlflowServer:
    """An `mlflow server` that can be stopped and started again on the same port and store
    (an outage): `start()`, `stop()`, `uri`."""

    def __init__(self, backend_uri: str, artifacts: Path | str, env: dict | None = None):
        self.backend_uri, self.artifacts, self.env = backend_uri, str(artifacts), env or {}
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port",
             str(self.port), "--backend-store-uri", self.backend_uri, "--artifacts-destination",
             self.artifacts, "--workers", "1"],
            env={**os.environ, **self.env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=3):
                    return
            except OSError:
                assert self.process.poll() is None, "mlflow server exited"
                assert time.monotonic() < deadline, "mlflow server not ready in 90 s"
                time.sleep(0.5)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # the server and its workers
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(30)
        self.process = None


@contextlib.contextmanager
def mlflow_server(
    backend_uri: str, artifacts: Path | str, env: dict[str, str] | None = None
) -> Iterator[str]:
    server = MlflowServer(backend_uri, artifacts, env)
    try:
        server.start()
        yield server.uri
    finally:
        server.stop()
