"""A real two-node Ray cluster on this machine, through `infra/local/two-node.sh` (the script a
user tries the cluster path with): a head and a worker node (1 CPU each), the worker under
`unshare --mount` with a tmpfs over `private` folders, so that a local folder of the head is
really not on the worker's disk. Stopped by the script (process groups), then anything left
under its state folder is killed; nothing is left running.

    with TwoNodeRay(tmp_path, private=[tmp_path / "runs"]) as cluster:
        env = {**os.environ, **cluster.driver_env}  # what a driver joining it needs

`TwoNodeRay(tmp_path, private=[], second_node=False)` is a one-node `ray start` cluster (a
second Ray instance on this machine, beside the one a `pipeline` command starts).

Each cluster has a token file of its own that does not exist beforehand (`RAY_AUTH_TOKEN_PATH`
in its state folder), so the script's first-start path, a machine with no token yet, is the
one every test takes.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.browser import free_port

SCRIPT = Path(__file__).resolve().parents[1] / "infra" / "local" / "two-node.sh"


class TwoNodeRay:
    def __init__(self, folder: Path, private: list[Path], second_node: bool = True):
        self.folder, self.private, self.second_node = folder, private, second_node
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.dashboard = free_port()
        # Ray's socket paths must stay short: its state goes under /tmp, not pytest's folder.
        self.state = Path(tempfile.mkdtemp(prefix="rn-", dir="/tmp"))
        self.token = self.state / "auth" / "token"
        # Worker-port ranges of their own, below the ephemeral ports free_port hands out.
        base = 10000 + (self.port % 10) * 2000
        self.env = {
            **{k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")},
            "RAY_AUTH_TOKEN_PATH": str(self.token),
            "STATE_DIR": str(self.state),
            "PRIVATE": ":".join(str(p) for p in private),
            "NUM_CPUS": "1",
            "RAY_PORT": str(self.port),
            "DASHBOARD_PORT": str(self.dashboard),
            "CLIENT_PORT": str(free_port()),
            "HEAD_AGENT_PORT": str(free_port()),
            "WORKER_AGENT_PORT": str(free_port()),
            "WORKER_PORTS": str(base),
        }

    @property
    def driver_env(self) -> dict[str, str]:
        """The variables a driver (`pipeline train`, `ray.init`) needs to join this cluster."""
        return {"RAY_ADDRESS": self.address, "RAY_AUTH_MODE": "token",
                "RAY_AUTH_TOKEN_PATH": str(self.token)}  # fmt: skip

    def run(self, *command: str) -> None:
        done = subprocess.run(
            [str(SCRIPT), *command], env=self.env, capture_output=True, text=True, timeout=300
        )
        if done.returncode != 0:
            logs = {n: (self.state / n).read_text()[-2000:] for n in ("head.log", "worker.log")
                    if (self.state / n).is_file()}  # fmt: skip
            raise RuntimeError(f"two-node.sh {' '.join(command)}: {done.stderr[-2000:]} {logs}")

    def __enter__(self) -> TwoNodeRay:
        if shutil.which("ray") is None or shutil.which("unshare") is None or os.geteuid() != 0:
            pytest.skip("needs the ray command, unshare and root (a mount namespace)")
        try:
            self.run("up", "--detach", *([] if self.second_node else ["--head-only"]))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def start_worker(self) -> None:
        """The worker node (again): a fresh tmpfs over the private folders, as a new machine."""
        self.run("start-worker")

    def kill_worker(self) -> None:
        """The worker node lost at once (SIGKILL to its raylet and every process of it)."""
        self.run("kill-worker")

    def __exit__(self, *exc) -> None:
        subprocess.run([str(SCRIPT), "stop"], env=self.env, capture_output=True, timeout=300)
        left = subprocess.run(
            ["pgrep", "-f", str(self.state)], capture_output=True, text=True
        ).stdout.split()
        for pid in left:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.state, ignore_errors=True)
