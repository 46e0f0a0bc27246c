"""Shared fixtures: the real dataset samples in ../shared/datasets, LSUN-format LMDBs built
from them, and a CLI runner that shows stderr separately."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.sample_data import SHARED, lsun_lmdb_from_celeba

# A command's bounded wait for an absent MLflow server at its end (a user's default: 60 s):
# short here, so a test that leaves a record undelivered (a server it stopped) does not hold
# the session's exit for a minute. Tests of the wait set their own.
os.environ.setdefault("PIPELINE_TRACKING_WAIT_S", "10")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two test processes share the machine's cores: each gets its share of torch's threads (two
    # processes each using every core oversubscribe them: the tier ran slower than in one).
    import torch

    processes = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    torch.set_num_threads(max(1, (os.cpu_count() or processes) // processes))


def require_shared(*parts: str) -> Path:
    """The path under ../shared/datasets, or skip: a user's clone has no ../shared."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(
            f"needs the real dataset samples at {path} (present in the project's "
            "workspace and CI, absent in a plain clone)"
        )
    return path


@pytest.fixture
def celeba_root() -> Path:
    return require_shared("celeba")


@pytest.fixture
def anime_root() -> Path:
    return require_shared("anime-mlds2018", "extra_data")


@pytest.fixture
def mnist_root() -> Path:
    return require_shared("mnist")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config, items):
    """For pytest-xdist's `-n 2 --dist loadgroup` (the fast tier's command). Two Ray instances on
    one machine must never overlap (shared/notes' collision, and two cores), so every test
    marked `ray` is in one group: one process runs them one after another. Every other test is
    grouped by its module, so a module's fixtures are built once, and runs beside them."""
    for item in items:
        group = "ray" if item.get_closest_marker("ray") else item.module.__name__
        item.add_marker(pytest.mark.xdist_group(group))


def pytest_collection_finish(session):
    """The groups must reach pytest-xdist's scheduler through the node ids (`test@ray`): a
    pytest or xdist that drops them would run Ray tests beside one another, so the run stops."""
    if not getattr(session.config.option, "loadgroup", False):
        return
    for item in session.items:
        if item.get_closest_marker("ray") and not item.nodeid.endswith("@ray"):
            raise pytest.UsageError(
                f"pytest-xdist's --dist loadgroup is not honoured here ({item.nodeid} has no "
                "@ray): install the versions of .ci/constraints.txt, or run with -n 0"
            )


def _ray_is_up() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


@pytest.fixture(autouse=True)
def _ray_only_where_marked(request):
    """A test that starts Ray in this process without the `ray` mark would run beside the Ray
    group: it fails, saying so (a command's own process is the mark's to declare: the
    test's author knows it)."""
    before = _ray_is_up()
    yield
    if not before and _ray_is_up() and request.node.get_closest_marker("ray") is None:
        pytest.fail(f"{request.node.nodeid} started Ray: mark it @pytest.mark.ray", False)


@pytest.fixture(scope="session")
def lsun_lmdb(tmp_path_factory) -> Path:
    """An LSUN-format LMDB of 200 real CelebA photos (re-encoded as LSUN ships them) plus
    three broken records: not an image, a truncated JPEG, an empty value."""
    require_shared("celeba")
    return lsun_lmdb_from_celeba(
        tmp_path_factory.mktemp("lsun") / "bedroom_train_lmdb", 200, broken=True
    )


@pytest.fixture(autouse=True)
def _isolated_data_dir(tmp_path, monkeypatch):
    """Every test gets its own data dir, so nothing lands in the checkout."""
    monkeypatch.setenv("PIPELINE_DATA", str(tmp_path / "data"))
    # and its own MLflow store and Ray Train runs folder: nothing lands in the checkout
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("PIPELINE_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("PIPELINE_CACHE", str(tmp_path / "cache"))  # staged copies, hash markers
    monkeypatch.setenv("COLUMNS", "200")  # Rich wraps less in captured output
    # FID: no user's Inception weights, no download (tests are offline): the stand-in, unless
    # a test serves weights itself.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("PIPELINE_FID_URL", "")
    monkeypatch.delenv("PIPELINE_FID_WEIGHTS", raising=False)
    monkeypatch.delenv("PIPELINE_FID_SHA256", raising=False)
    yield


@pytest.fixture
def cli():
    """Run the `pipeline` command in-process: cli("ingest", "celeba", ...) -> result."""
    from typer.testing import CliRunner

    from stages.cli import app

    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(
            app,
            [str(a) for a in args],
            catch_exceptions=False,
            env={"COLUMNS": "200", **os.environ},
        )

    return invoke


@contextmanager
def killed_at_exit(process: subprocess.Popen) -> Iterator[subprocess.Popen]:
    """A command started with `start_new_session=True`: whatever is left of it when the block
    ends (a failed assertion, a timeout), its Ray workers included, is killed by its group."""
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
