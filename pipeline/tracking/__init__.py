"""MLflow tracking: the one place that talks to MLflow (rank 0 only).

- `store`: where the store is (`tracking_uri`, absolute sqlite and file URIs) and making it
  ready before Ray starts (`prepare_store`: created once under a folder lock, a server probed).
- `runs`: the driver's side: experiments and runs created, found, reopened and read, their
  artifacts, the model registry; a run travels to the Ray workers as a `RunHandle`.
- `tracker`: the rank-0 `Tracker` that logs from the training loop and never stops training.

Importing this package is cheap: mlflow (~1.5 s to import) is imported inside functions, so
`pipeline --help` and the ranks that log nothing never pay it.
"""

from pipeline.tracking.runs import (
    RunHandle,
    artifact_files,
    download_artifact,
    experiment_id,
    find_run,
    find_run_by_tags,
    find_trial_run,
    register_model,
    reopen_run,
    run_config,
    run_metrics,
    run_status,
    start_run,
)
from pipeline.tracking.store import (
    ARTIFACTS_DIR,
    DEFAULT_DB,
    absolute_uri,
    default_experiment,
    prepare_store,
    tracking_uri,
)
from pipeline.tracking.tracker import STATUSES, Tracker, deliver_all, last_status

__all__ = [
    "ARTIFACTS_DIR",
    "DEFAULT_DB",
    "STATUSES",
    "RunHandle",
    "Tracker",
    "absolute_uri",
    "artifact_files",
    "default_experiment",
    "deliver_all",
    "download_artifact",
    "experiment_id",
    "find_run",
    "last_status",
    "find_run_by_tags",
    "find_trial_run",
    "prepare_store",
    "register_model",
    "reopen_run",
    "run_config",
    "run_metrics",
    "run_status",
    "start_run",
    "tracking_uri",
]
