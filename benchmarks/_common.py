"""What the benchmarks share: the real CelebA sample, its LSUN-format LMDB, timing, tables.

Every benchmark times a candidate and its baseline in the same run, several times each, and
prints ratios: on a shared, noisy machine the absolute rates mean little, the ratios much more.
A measurement keeps every run; the table shows the best (least disturbed) and the median, and
ratios use the best. Inputs are built in a temporary folder that is removed at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"
CELEBA_IMAGES = SHARED / "celeba" / "img_align_celeba"
T = TypeVar("T")


def add_options(parser: argparse.ArgumentParser, *, images: int, repeats: int) -> None:
    """The options every benchmark takes: how many photos, how many runs, a quick smoke run."""
    parser.add_argument(
        "--images",
        type=int,
        default=images,
        help=f"CelebA sample photos to use (default {images}; the sample has 3000)",
    )
    parser.add_argument(
        "--repeats", type=int, default=repeats, help=f"runs of each measurement (default {repeats})"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a fast smoke run: few images, one run each (numbers mean little)",
    )


def celeba_photos(count: int) -> list[Path]:
    """The first `count` CelebA sample photos (sorted, as tests/sample_data.py takes them).

    Exits with a message saying what is missing when the shared samples are not there.
    """
    if not CELEBA_IMAGES.is_dir():
        sys.exit(
            f"error: the benchmarks need the real CelebA sample photos at {CELEBA_IMAGES} "
            "(the project's ../shared/datasets, present in the workspace, absent in a plain "
            "clone)"
        )
    photos = sorted(CELEBA_IMAGES.glob("*.jpg"))
    if count < 1 or count > len(photos):
        sys.exit(f"error: --images must be within 1..{len(photos)} (photos in {CELEBA_IMAGES})")
    return photos[:count]


def build_lsun_lmdb(folder: Path, count: int, copies: int = 1) -> Path:
    """An LSUN-format LMDB of the first `count` CelebA photos, re-encoded as LSUN ships them
    (short side 256, JPEG quality 75) by the test suite's own helpers (tests/sample_data.py).

    With `copies` > 1 every photo is stored that many times under distinct keys: a longer input
    on which fixed costs (process start-up) weigh less.
    """
    photos = celeba_photos(count)  # exits with a clear message when the sample is missing
    if str(REPO) not in sys.path:  # `tests` is a package of the checkout, not installed
        sys.path.insert(0, str(REPO))
    from pipeline.data.sources.lsun import write_lmdb
    from tests.sample_data import lsun_jpeg, lsun_lmdb_from_celeba

    started = time.perf_counter()
    path = folder / "bedroom_train_lmdb"
    if copies == 1:
        lsun_lmdb_from_celeba(path, count)
    else:
        encoded = [(photo.name, lsun_jpeg(photo)) for photo in photos]
        write_lmdb(
            path,
            [
                (hashlib.sha1(f"{name}#{copy}".encode()).hexdigest(), value)
                for copy in range(copies)
                for name, value in encoded
            ],
        )
    size = (path / "data.mdb").stat().st_size
    print(
        f"input: LSUN-format LMDB of {count} CelebA photos"
        + (f" x {copies} copies" if copies > 1 else "")
        + f", {size / 2**20:.1f} MiB, built in {time.perf_counter() - started:.1f} s"
    )
    return path


@contextmanager
def workdir() -> Iterator[Path]:
    """A temporary folder for inputs and outputs, removed afterwards (also on Ctrl-C)."""
    with tempfile.TemporaryDirectory(prefix="pipeline-bench-") as name:
        yield Path(name)


@dataclass
class Measurement:
    """Every run of one measurement: (seconds, images) pairs, rates in images per second."""

    name: str
    runs: list[tuple[float, int]] = field(default_factory=list)

    def add(self, seconds: float, images: int) -> None:
        self.runs.append((seconds, images))

    @property
    def rates(self) -> list[float]:
        return [images / max(seconds, 1e-9) for seconds, images in self.runs]

    @property
    def best(self) -> float:
        return max(self.rates)

    @property
    def median(self) -> float:
        return statistics.median(self.rates)


def timed(function: Callable[[], T]) -> tuple[float, T]:
    """Seconds a call takes, and what it returned (for `Measurement.add`: an image count)."""
    started = time.perf_counter()
    value = function()
    return time.perf_counter() - started, value


def print_machine() -> None:
    """One line of context: a ratio measured on a loaded machine is worth less."""
    load = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    print(
        f"machine: {os.cpu_count()} CPUs, load average {load} (1/5/15 min), "
        f"Python {platform.python_version()}"
    )


def print_table(measurements: list[Measurement]) -> None:
    """Best and median images/s of each measurement, and every run's seconds."""
    rows = [("measurement", "best img/s", "median img/s", "runs (s)")]
    for m in measurements:
        rows.append(
            (
                m.name,
                f"{m.best:,.0f}",
                f"{m.median:,.0f}",
                " ".join(f"{seconds:.3f}" for seconds, _ in m.runs),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        numbers = zip(row[1:-1], widths[1:-1], strict=True)
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in numbers]
        print("  ".join(cells + [row[-1]]))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def print_ratio(name: str, value: float, goal: float) -> bool:
    """A ratio against its goal; True when it is met."""
    met = value >= goal
    print(f"{name:<52} {value:7.2f}x   goal >= {f'{goal:g}x':<6} {'met' if met else 'NOT MET'}")
    return met


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class MlflowServer:
    """A real `mlflow server` on 127.0.0.1 over a sqlite store and an artifact folder in
    `folder`; `stop()` then `start()` again is an outage (same port, same store). `cpus`: pin
    it to those CPUs (so its own work is not counted against a loop on the others)."""

    def __init__(self, folder: Path, cpus: set[int] | None = None):
        self.folder, self.port, self.cpus = folder, free_port(), cpus
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        import urllib.request

        pin = ["taskset", "-c", ",".join(map(str, sorted(self.cpus)))] if self.cpus else []
        self.process = subprocess.Popen(
            [*pin, sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port",
             str(self.port), "--backend-store-uri", f"sqlite:///{self.folder / 'server.db'}",
             "--artifacts-destination", str(self.folder / "mlartifacts"), "--workers", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        for _ in range(180):
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=3):
                    return
            except OSError:
                time.sleep(0.5)
        raise SystemExit("error: mlflow server did not start in 90 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # the server and its workers
            self.process.wait(30)


# The outage benchmarks' run: a small DCGAN on the real anime sample at 32 px.
TINY_DCGAN = ["--set", "model.width_g=16", "--set", "model.width_d=16", "--set", "model.z_dim=32"]


def anime_32(data: Path, env: dict) -> Path:
    """The real anime sample ingested at 32 px as `data`/anime-32 (`pipeline ingest images`)."""
    anime = SHARED / "anime-mlds2018" / "extra_data"
    if not anime.is_dir():
        raise SystemExit(f"error: the anime sample is missing at {anime} (../shared/datasets)")
    out = data / "anime-32"
    subprocess.run([sys.executable, "-m", "stages.cli", "ingest", "images", "--root",
                    str(anime), "--labels", str(anime / "tags.csv"), "--size", "32",
                    "--out", str(out)], env=env, check=True, cwd=REPO,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    return out


def start_training(data: Path, epochs: int, workers: int, env: dict) -> subprocess.Popen:
    """`pipeline train dcgan` (TINY_DCGAN, batch 32) in its own session, its output captured."""
    return subprocess.Popen(
        [sys.executable, "-m", "stages.cli", "train", "dcgan", "--data", str(data),
         "--epochs", str(epochs), "--workers", str(workers), "--batch-size", "32",
         *TINY_DCGAN], env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
