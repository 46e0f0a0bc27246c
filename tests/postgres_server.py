"""A real PostgreSQL for tests: Debian's PostgreSQL 15, a fresh cluster on 127.0.0.1 (initdb
refuses root, so the cluster belongs to the `postgres` user), a database `mlflow` owned by the
role `mlflow`; stopped by its process id, its folder removed.

    with postgres_server() as uri:   # postgresql+psycopg://mlflow@127.0.0.1:PORT/mlflow
        with mlflow_server(uri, "s3://bucket/mlartifacts") as tracking_uri: ...
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser import free_port


def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    bin_dir = postgres_bin()
    if bin_dir is None or os.geteuid() != 0:
        pytest.skip("needs Debian's PostgreSQL (apt install postgresql) and root")
    try:
        import psycopg  # noqa: F401 - what MLflow's SQLAlchemy URI below loads
    except ImportError:
        pytest.skip("needs psycopg (pip install 'psycopg[binary]', in the test extra)")
    owner = pwd.getpwnam("postgres")
    folder = Path(tempfile.mkdtemp(prefix="pg-", dir="/tmp"))  # short: it holds the socket
    os.chown(folder, owner.pw_uid, owner.pw_gid)
    data, port = folder / "data", free_port()

    def as_postgres(*command: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *command],
            check=True,
            capture_output=True,
            cwd=folder,
        )

    server = None
    try:
        as_postgres(str(bin_dir / "initdb"), "-D", str(data), "-U", "mlflow", "--auth=trust")
        server = subprocess.Popen(
            ["runuser", "-u", "postgres", "--", str(bin_dir / "postgres"), "-D", str(data),
             "-p", str(port), "-k", str(folder), "-c", "listen_addresses=127.0.0.1"],
            stdout=subprocess.DEVNULL, stderr=open(folder / "server.log", "wb"),  # noqa: SIM115
            start_new_session=True, cwd=folder,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            ready = subprocess.run(
                [str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                capture_output=True,
            )
            if ready.returncode == 0:
                break
            assert server.poll() is None, (folder / "server.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "PostgreSQL not ready in 60 s"
            time.sleep(0.3)
        as_postgres(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U",
                    "mlflow", "mlflow")  # fmt: skip
        yield f"postgresql+psycopg://mlflow@127.0.0.1:{port}/mlflow"
    finally:
        if server is not None and server.poll() is None:
            pid = int((data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGINT)  # PostgreSQL's fast shutdown
            server.wait(60)
        shutil.rmtree(folder, ignore_errors=True)
