"""The rank-0 `Tracker`: logs one run from the training loop and never stops training.

Rank 0 wraps the run's `RunHandle` in a `Tracker`; every other rank wraps `None` and logs
nothing (and never imports mlflow). A transient failure (server unreachable, sqlite locked)
is retried a few times, quickly, then dropped with a warning: losing a point of a chart is
better than losing hours of training.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import one_line
from pipeline.tracking.runs import (
    MAX_METRICS_PER_BATCH,
    MAX_PARAMS_PER_BATCH,
    RunHandle,
    log_params,
    mlflow_key,
    tag_values,
)
from pipeline.tracking.store import mlflow_client, uri_scheme

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from PIL.Image import Image

log = logging.getLogger(__name__)

STATUSES = ("FINISHED", "FAILED", "KILLED")

# Waits before the retries of a transient failure. MLflow's own HTTP retries (7, exponential,
# up to ~4 min per call) are turned off for these calls, so a dead server costs seconds per
# call, not minutes.
RETRY_WAITS_S = (0.5, 2.0)
HTTP_TIMEOUT_S = 15


class Tracker:
    """Logs to one run. `Tracker(None)` (ranks other than 0, tracking off) does nothing.

    Cheap to build: the MLflow client is made on first use. Metric values that are not finite
    (NaN, inf) are not logged as points: MLflow would store inf as +-1.8e308, which flattens
    every chart of the run. The first one of each metric is kept as the tag
    `nonfinite.<metric>` ("nan at step 1234") with a warning, so the blow-up stays on record.
    Characters MLflow refuses in metric, param and tag names (`D(x)`) become `_` (`D_x_`).
    """

    def __init__(self, handle: RunHandle | None):
        self.handle = handle
        self._client: MlflowClient | None = None
        self._nonfinite: set[str] = set()

    @property
    def enabled(self) -> bool:
        return self.handle is not None

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """One batch of metrics at `step` (images seen)."""
        if self.handle is None:
            return
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        points, blown = [], {}
        for key, value in metrics.items():
            name, value = mlflow_key(key), float(value)
            if math.isfinite(value):
                points.append(Metric(name, value, timestamp, int(step)))
            elif name not in self._nonfinite:
                self._nonfinite.add(name)
                blown[f"nonfinite.{name}"] = f"{value} at step {int(step)}"
        if blown:
            log.warning(
                "MLflow run %s: not logging non-finite %s",
                self.handle.run_id,
                ", ".join(f"{k.removeprefix('nonfinite.')} ({v})" for k, v in blown.items()),
            )
            self.set_tags(blown)
        for start in range(0, len(points), MAX_METRICS_PER_BATCH):
            batch = points[start : start + MAX_METRICS_PER_BATCH]
            self._call("log metrics", lambda c, b=batch: c.log_batch(self.handle.run_id, b))

    def log_params(self, params: Mapping[str, Any]) -> None:
        """More params (MLflow refuses to change a logged param's value: use tags or metrics)."""
        self._call("log params", lambda c: log_params(c, self.handle.run_id, params))

    def log_image(
        self,
        image: Image,
        artifact_file: str,
        key: str | None = None,
        step: int | None = None,
    ) -> None:
        """`image` as the artifact `artifact_file` (`samples/epoch-003.png`); with `key`, also
        as an MLflow image series, which the UI shows with a step slider."""
        run_id = self.handle.run_id if self.handle else ""
        self._call("log an image", lambda c: c.log_image(run_id, image, artifact_file))
        if key is not None:
            self._call(
                "log an image",
                lambda c: c.log_image(run_id, image, key=mlflow_key(key), step=int(step or 0)),
            )

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """A file, or a folder's contents, under `artifact_path` of the run's artifacts."""
        run_id = self.handle.run_id if self.handle else ""
        if Path(path).is_dir():
            self._call("log artifacts", lambda c: c.log_artifacts(run_id, str(path), artifact_path))
        else:
            self._call(
                "log an artifact", lambda c: c.log_artifact(run_id, str(path), artifact_path)
            )

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        """`data` as JSON or YAML (by the file's extension), e.g. the resolved config."""
        run_id = self.handle.run_id if self.handle else ""
        self._call("log a dict", lambda c: c.log_dict(run_id, dict(data), artifact_file))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if self.handle is None:
            return
        from mlflow.entities import RunTag

        items = [RunTag(mlflow_key(k), v) for k, v in tag_values(tags).items()]
        for start in range(0, len(items), MAX_PARAMS_PER_BATCH):
            batch = items[start : start + MAX_PARAMS_PER_BATCH]
            self._call("set tags", lambda c, b=batch: c.log_batch(self.handle.run_id, tags=b))

    def finish(self, status: str = "FINISHED") -> None:
        """End the run: FINISHED, FAILED or KILLED."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {status!r}")
        self._call(
            f"end the run ({status})", lambda c: c.set_terminated(self.handle.run_id, status)
        )

    def _call(self, what: str, call) -> bool:
        """`call(client)`, retried on transient failures; False (and a warning) when it fails."""
        if self.handle is None:
            return False
        import requests
        from mlflow.exceptions import MlflowException

        for attempt in range(len(RETRY_WAITS_S) + 1):
            try:
                if self._client is None:
                    self._client = mlflow_client(self.handle.uri)
                with _quick_http(self.handle.uri):
                    call(self._client)
                return True
            except (MlflowException, requests.RequestException, OSError) as error:
                if attempt == len(RETRY_WAITS_S) or not _transient(error):
                    log.warning(
                        "MLflow run %s: could not %s (%s); training goes on",
                        self.handle.run_id,
                        what,
                        one_line(error),
                    )
                    return False
                time.sleep(RETRY_WAITS_S[attempt])
        return False


@contextlib.contextmanager
def _quick_http(uri: str) -> Iterator[None]:
    """Within the block, MLflow's HTTP calls fail fast (our own few retries follow) unless the
    user chose their own settings. Process-wide while it lasts: MLflow reads these per call."""
    if uri_scheme(uri) not in ("http", "https"):
        yield
        return
    quick = {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(HTTP_TIMEOUT_S),
    }
    added = [name for name in quick if name not in os.environ]
    os.environ.update({name: quick[name] for name in added})
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def _transient(error: BaseException) -> bool:
    """Worth retrying: the network, a busy server or a locked sqlite database."""
    from mlflow.exceptions import MlflowException

    if isinstance(error, MlflowException):
        status = error.get_http_status_code()
        return status >= 500 or status == 429
    return not isinstance(error, (FileNotFoundError, PermissionError, IsADirectoryError))
