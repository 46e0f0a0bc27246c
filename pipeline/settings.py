"""Where things live, from the standard environment variables.

`PIPELINE_DATA` is the data directory (default `./data`); datasets are folders in it, named by
the ingest (`celeba-64`, `lsun-bedroom-64`). Nothing is created at import time.
"""

from __future__ import annotations

import os
from pathlib import Path


def verbose() -> bool:
    """`--verbose` (PIPELINE_VERBOSE=1): Ray's and MLflow's own output on the console too."""
    return os.environ.get("PIPELINE_VERBOSE", "") not in ("", "0")


def data_root() -> str:
    """Where datasets live: `$PIPELINE_DATA` (a local folder or a URI such as
    s3://bucket/data) or `./data`; a local folder absolute."""
    from pipeline.storage import is_uri

    root = os.environ.get("PIPELINE_DATA", "data")
    return root.rstrip("/") if is_uri(root) else str(Path(root).expanduser().resolve())


def runs_root() -> str:
    """Where Ray Train and Tune keep runs and checkpoints: `$PIPELINE_RUNS` (a local folder,
    made absolute, or a URI such as s3://bucket/runs) or ./runs."""
    from pipeline.storage import is_uri

    root = os.environ.get("PIPELINE_RUNS", "runs")
    return root.rstrip("/") if is_uri(root) else str(Path(root).expanduser().resolve())


def data_dir() -> Path:
    """The local data directory (where raw downloads such as `lsun/` go): `$PIPELINE_DATA`
    when it is a folder, else ./data."""
    from pipeline.storage import is_uri

    root = os.environ.get("PIPELINE_DATA", "data")
    return Path("data" if is_uri(root) else root).expanduser().resolve()


def resolve_dataset(name_or_path: str | os.PathLike) -> str | Path:
    """A dataset named by path or URI, or by its folder name under the data root (a URI stays
    a string)."""
    from pipeline.storage import is_uri, join

    if is_uri(name_or_path):
        return str(name_or_path).rstrip("/")
    path = Path(name_or_path).expanduser()
    if path.exists() or path.is_absolute() or os.sep in str(name_or_path):
        return path.resolve()
    root = data_root()
    return join(root, str(path)) if is_uri(root) else Path(root) / path
