"""MLflow tracking (being split into store, runs and tracker: see the next commit)."""

from pipeline.tracking.runs import *  # noqa: F403
from pipeline.tracking.runs import _sqlite_path  # noqa: F401
