"""Where things live, from the standard environment variables.

`PIPELINE_DATA` is the data directory (default `./data`); datasets are folders in it, named by
the ingest (`celeba-64`, `lsun-bedroom-64`). Nothing is created at import time.
"""

from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    """The data directory: `$PIPELINE_DATA` or `./data`, absolute."""
    return Path(os.environ.get("PIPELINE_DATA", "data")).expanduser().resolve()


def resolve_dataset(name_or_path: str | os.PathLike) -> Path:
    """A dataset named by path, or by its folder name under the data directory."""
    path = Path(name_or_path).expanduser()
    if path.exists() or path.is_absolute() or os.sep in str(name_or_path):
        return path.resolve()
    return data_dir() / path
