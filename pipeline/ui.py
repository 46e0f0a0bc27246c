"""The MLflow UI over the same tracking store every other command uses.

`serve()` resolves the store as the driver does (`tracking.tracking_uri()`: the
`MLFLOW_TRACKING_URI`, else ./mlflow.db made absolute), creates it if it is new, and runs
`mlflow server` on a loopback address in the foreground. When the store is itself a server
(an http URI), that server is the UI: its URL is all there is to say.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from pipeline.errors import PipelineError

READY_TIMEOUT_S = 90


def server_command(uri: str, host: str, port: int, workers: int = 1) -> list[str]:
    """`mlflow server` over `uri` (given in its environment: `server_env`); new experiments'
    artifacts beside a local database."""
    from pipeline.tracking.store import local_artifact_root

    # The store's URI (maybe with a database password) goes in the environment, never on the
    # command line, where `ps` shows it to every user of the machine.
    command = [sys.executable, "-m", "mlflow", "server",
               "--host", host, "--port", str(port), "--workers", str(workers)]  # fmt: skip
    artifacts = local_artifact_root(uri)
    if artifacts is not None:
        command += ["--artifacts-destination", str(artifacts)]
    return command


def server_env(uri: str) -> dict[str, str]:
    """This process's environment with the store `server_command` serves, password included."""
    from pipeline.tracking.store import connectable

    return {**os.environ, "MLFLOW_BACKEND_STORE_URI": connectable(uri)}


def serve(
    host: str = "127.0.0.1",
    port: int = 5000,
    say: Callable[[str], None] = print,
    on_ready: Callable[[str], None] | None = None,
) -> int:
    """Run the UI until it stops (Ctrl-C stops it); returns its exit status."""
    from pipeline import tracking

    uri = tracking.tracking_uri()
    if uri.startswith(("http://", "https://")):
        say(f"the tracking store is an MLflow server: its UI is {uri}")
        return 0
    _check_port(host, port)
    tracking.prepare_store(uri)
    url = f"http://{host}:{port}"
    env = {**server_env(uri), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # 5 processes, not 13
    process = subprocess.Popen(server_command(uri, host, port), env=env, start_new_session=True)
    # SIGTERM (a service manager, `kill`) ends the server too, as Ctrl-C does.
    previous = signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        _wait_ready(url, process)
        say(f"MLflow UI: {url}  (store {uri}; Ctrl-C stops it)")
        if on_ready is not None:
            on_ready(url)
        return process.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        if process.poll() is None:
            # `mlflow server` forwards SIGTERM to its uvicorn, which stops its workers and
            # frees the port; a SIGKILL would leave them running, holding it.
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


def _exit_on_signal(signum, frame) -> None:
    raise SystemExit(0)


def _check_port(host: str, port: int) -> None:
    if not 0 < port < 65536:
        raise PipelineError(f"--port {port} is not a port number (1-65535)")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as error:
            raise PipelineError(
                f"cannot listen on {host}:{port} ({error.strerror or error}); pass another --port"
            ) from None


def _wait_ready(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise PipelineError(
                f"mlflow server exited with status {process.returncode} before it was ready "
                "(its messages are above)"
            )
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    raise PipelineError(f"mlflow server did not answer at {url} within {READY_TIMEOUT_S} s")
