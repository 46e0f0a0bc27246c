"""A real two-node Ray cluster on this machine: a head and a worker node (1 CPU each), the
worker under `unshare --mount` with a tmpfs over `private` folders, so that a local folder of
the head is really not on the worker's disk. Started with `ray start --block`, stopped by
process id; nothing is left running.

    with TwoNodeRay(tmp_path, private=[tmp_path / "runs"]) as cluster:
        monkeypatch.setenv("RAY_ADDRESS", cluster.address)

`TwoNodeRay(tmp_path, private=[], second_node=False)` is a one-node `ray start` cluster (a
second Ray instance on this machine, beside the one a `pipeline` command starts).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.browser import free_port


class TwoNodeRay:
    def __init__(self, folder: Path, private: list[Path], second_node: bool = True):
        self.folder, self.private, self.second_node = folder, private, second_node
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.processes: list[subprocess.Popen] = []
        # Ray's socket paths must stay short: its temp dirs go under /tmp, not pytest's.
        self.temp = Path(tempfile.mkdtemp(prefix="rn-", dir="/tmp"))

    def _start(self, command: list[str], log: str) -> subprocess.Popen:
        env = {**os.environ, "RAY_AUTH_MODE": "token"}
        env.pop("RAY_ADDRESS", None)
        out = open(self.folder / log, "ab")  # noqa: SIM115 - the process holds it
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        self.processes.append(process)
        return process

    def __enter__(self) -> TwoNodeRay:
        ray = shutil.which("ray")
        unshare = shutil.which("unshare")
        if ray is None or unshare is None or os.geteuid() != 0:
            pytest.skip("needs the ray command, unshare and root (a mount namespace)")
        base = 20000 + (self.port % 20) * 2000  # worker-port ranges of their own
        self._start(
            [
                ray, "start", "--head", "--block", f"--port={self.port}", "--num-cpus=1",
                f"--temp-dir={self.temp / 'head'}", "--dashboard-host=127.0.0.1",
                f"--dashboard-port={free_port()}", f"--ray-client-server-port={free_port()}",
                f"--dashboard-agent-listen-port={free_port()}",
                f"--min-worker-port={base}", f"--max-worker-port={base + 999}",
            ],
            "head.log",
        )  # fmt: skip
        self._wait_for_nodes(1)
        if not self.second_node:
            return self
        self.worker_command = [
            shutil.which("unshare"), "--mount", "--propagation", "private", "sh", "-c",
            " && ".join(
                [*(f"mount -t tmpfs tmpfs {p}" for p in self.private),
                 "exec " + " ".join([
                     ray, "start", "--block", f"--address={self.address}", "--num-cpus=1",
                     f"--temp-dir={self.temp / 'worker'}",
                     f"--dashboard-agent-listen-port={free_port()}",
                     f"--min-worker-port={base + 1000}", f"--max-worker-port={base + 1999}",
                 ])]
            ),
        ]  # fmt: skip
        for path in self.private:
            path.mkdir(parents=True, exist_ok=True)
        self.start_worker()
        return self

    def start_worker(self) -> None:
        """The worker node (again): a fresh tmpfs over the private folders, as a new machine."""
        self.worker = self._start(self.worker_command, "worker.log")
        self._wait_for_nodes(2)

    def kill_worker(self) -> None:
        """The worker node lost at once (SIGKILL to its raylet and every process of it)."""
        os.killpg(self.worker.pid, signal.SIGKILL)
        self.worker.wait()
        self.processes.remove(self.worker)

    def _wait_for_nodes(self, count: int) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status = subprocess.run(
                ["ray", "status", f"--address={self.address}"],
                capture_output=True,
                text=True,
                env={**os.environ, "RAY_AUTH_MODE": "token"},
            )
            active = status.stdout.split("Active:")[-1].split("Pending:")[0]
            if status.returncode == 0 and active.count("node_") >= count:
                return
            if any(p.poll() is not None for p in self.processes):
                break
            time.sleep(1)
        self.__exit__(None, None, None)
        logs = ", ".join(str(self.folder / n) for n in ("head.log", "worker.log"))
        raise RuntimeError(f"the two-node Ray cluster did not come up; see {logs}")

    def __exit__(self, *exc) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in reversed(self.processes):
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        # `ray start --block` stops its node's processes when it ends; make sure of it.
        left = subprocess.run(
            ["pgrep", "-f", str(self.temp)], capture_output=True, text=True
        ).stdout.split()
        for pid in left:
            with __import__("contextlib").suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        shutil.rmtree(self.temp, ignore_errors=True)
