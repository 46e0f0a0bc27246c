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


@contextlib.contextmanager
def mlflow_server(
    backend_uri: str, artifacts: Path | str, env: dict[str, str] | None = None
) -> Iterator[str]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", backend_uri, "--artifacts-destination", str(artifacts),
         "--workers", "1"],
        env={**os.environ, **(env or {}), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=3):
                    break
            except OSError:
                assert server.poll() is None, "mlflow server exited"
                assert time.monotonic() < deadline, "mlflow server not ready in 90 s"
                time.sleep(0.5)
        yield uri
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its workers
        server.wait(30)
