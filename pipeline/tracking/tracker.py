"""The `Tracker`: logs one run and never stops or slows training, and loses nothing.

Rank 0 wraps the run's `RunHandle` in a `Tracker`; every other rank wraps `None` and logs
nothing (and never imports mlflow). Each event goes to the run's journal on this node's disk
first (`pipeline.tracking.journal`); a background sender delivers it to MLflow in order
(`pipeline.tracking.delivery`). While the server is away the run goes on at full speed and
the record waits on disk; `finish` (the run's status, sent last) and `close` (a worker's end)
wait a bounded time for the backlog (PIPELINE_TRACKING_WAIT_S, default 60 s), then name
`pipeline sync`, which delivers what is left.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.console import say
from pipeline.errors import PipelineError
from pipeline.tracking import delivery, journal
from pipeline.tracking.journal import Journal
from pipeline.tracking.runs import (
    MAX_METRICS_PER_BATCH,
    MAX_PARAMS_PER_BATCH,
    RunHandle,
    mlflow_key,
    param_values,
    tag_values,
)

if TYPE_CHECKING:
    from PIL.Image import Image

STATUSES = ("FINISHED", "FAILED", "KILLED")


class Outbox:
    """This process's journal of one run and its sender (started on the first event)."""

    def __init__(self, handle: RunHandle):
        self.handle = handle
        self.journal = Journal(handle)
        self.sender: delivery.Sender | None = None
        self.lock = threading.Lock()
        self.named = False  # `pipeline sync` was named for it once: at exit, only a last try

    def append(
        self, kind: str, keep: Path | Image | None = None, name: str | None = None, **fields: Any
    ) -> None:
        with self.lock:
            if keep is not None:
                fields["file"] = self.journal.keep(keep, name)
            self.journal.append(kind, **fields)
            if self.sender is None:
                self.sender = delivery.Sender(self.journal.path, self.handle.uri,
                                              self.journal.folder)  # fmt: skip
        self.sender.wake()


_outboxes: dict[tuple[str, str], Outbox] = {}
_outboxes_lock = threading.Lock()
_gave_up: set[str] = set()  # the servers this process already waited its time for
_ended: dict[str, str] = {}  # run id -> the status this process ended it with


def outbox(handle: RunHandle) -> Outbox:
    with _outboxes_lock:
        if not _outboxes:
            atexit.register(deliver_all)
        key = (handle.uri, handle.run_id)
        if key not in _outboxes:
            _outboxes[key] = Outbox(handle)
        return _outboxes[key]


def deliver_all() -> None:
    """A command ending (called at exit too): what this process's senders (daemon threads,
    about to stop) have not delivered yet is delivered now, within the bounded wait, or named
    for `pipeline sync`. A function that logs to runs it does not finish (a sweep's summary,
    `evaluate`) calls it before it returns, so its caller reads a whole record."""
    for box in list(_outboxes.values()):
        if box.sender is None or not journal.undelivered(box.journal.path):
            continue
        if box.named:
            delivery.flush_run(box.journal.folder, box.handle.uri, 0.0)
        else:
            _flush(box.handle, box.journal.folder)


class Tracker:
    """Logs to one run. `Tracker(None)` (ranks other than 0, tracking off) does nothing.

    Cheap to build: trackers of one run in one process share its journal. Metric values that
    are not finite (NaN, inf) are not logged as points: MLflow would store inf as +-1.8e308,
    which flattens every chart of the run. The first one of each metric is kept as the tag
    `nonfinite.<metric>` ("nan at step 1234") with a warning, so the blow-up stays on record.
    Characters MLflow refuses in metric, param and tag names (`D(x)`) become `_` (`D_x_`).
    """

    def __init__(self, handle: RunHandle | None):
        self.handle = handle
        self._nonfinite: set[str] = set()

    @property
    def enabled(self) -> bool:
        return self.handle is not None

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """One batch of metrics at `step` (images seen), each point with its own timestamp
        (a point delivered twice is one point in MLflow)."""
        if self.handle is None:
            return
        timestamp = int(time.time() * 1000)
        points, blown = [], {}
        for key, value in metrics.items():
            name, value = mlflow_key(key), float(value)
            if math.isfinite(value):
                points.append([name, value, timestamp, int(step)])
            elif name not in self._nonfinite:
                self._nonfinite.add(name)
                blown[f"nonfinite.{name}"] = f"{value} at step {int(step)}"
        if blown:
            import logging

            logging.getLogger(__name__).warning(
                "MLflow run %s: not logging non-finite %s",
                self.handle.run_id,
                ", ".join(f"{k.removeprefix('nonfinite.')} ({v})" for k, v in blown.items()),
            )
            self.set_tags(blown)
        for start in range(0, len(points), MAX_METRICS_PER_BATCH):
            self._append("metrics", points=points[start : start + MAX_METRICS_PER_BATCH])

    def log_params(self, params: Mapping[str, Any]) -> None:
        """More params (MLflow refuses to change a logged param's value: use tags or metrics)."""
        items = list(param_values(params).items())
        for start in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self._append("params", params=dict(items[start : start + MAX_PARAMS_PER_BATCH]))

    def log_image(
        self,
        image: Image,
        artifact_file: str,
        key: str | None = None,
        step: int | None = None,
    ) -> None:
        """`image` as the artifact `artifact_file` (`samples/epoch-003.png`); with `key`, also
        as an MLflow image series, which the UI shows with a step slider."""
        if self.handle is None:
            return
        series = {"key": mlflow_key(key), "step": int(step or 0)} if key is not None else {}
        name, now = Path(artifact_file).name, int(time.time() * 1000)
        self._append("image", keep=image, name=name, artifact_file=artifact_file, timestamp=now,
                     **series)  # fmt: skip

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """A file, or a folder's contents, under `artifact_path` of the run's artifacts (a
        copy is kept until it is delivered: the run may overwrite the original)."""
        if self.handle is None:
            return
        path = Path(path).resolve()
        if not path.exists():
            import logging

            logging.getLogger(__name__).warning(
                "MLflow run %s: no artifact at %s; not logged", self.handle.run_id, path
            )
            return
        self._append("artifact", keep=path, artifact_path=artifact_path)

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        """`data` as JSON or YAML (by the file's extension), e.g. the resolved config."""
        self._append("dict", data=json.loads(json.dumps(dict(data), default=str)),
                     artifact_file=artifact_file)  # fmt: skip

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        items = [(mlflow_key(k), v) for k, v in tag_values(tags).items()]
        for start in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self._append("tags", tags=dict(items[start : start + MAX_PARAMS_PER_BATCH]))

    def finish(self, status: str = "FINISHED") -> None:
        """End the run: FINISHED, FAILED or KILLED, delivered after everything else this node
        holds of the run (waits a bounded time for an absent server, then names `pipeline
        sync`)."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {status!r}")
        if self.handle is None:
            return
        self._append("status", status=status, end_time=int(time.time() * 1000))
        _ended[self.handle.run_id] = status
        box = outbox(self.handle)
        _flush(self.handle, box.journal.folder)

    def close(self) -> None:
        """A worker's end: wait a bounded time until what it logged is delivered."""
        if self.handle is None:
            return
        box = outbox(self.handle)
        if box.sender is not None and not box.sender.drain(_wait(self.handle.uri)):
            _kept(self.handle, box.journal.folder)

    def _append(self, kind: str, **fields: Any) -> None:
        if self.handle is not None:
            outbox(self.handle).append(kind, **fields)


def last_status(handle: RunHandle) -> str | None:
    """A run's status as this process last set it (delivered or still in its journal), else
    the server's; None when the server is away and this process never ended the run (a
    sweep's summary must not wait minutes on MLflow's own retries for it). A run the server
    does not have is an error."""
    if handle.run_id in _ended:
        return _ended[handle.run_id]
    from pipeline.tracking.runs import run_status

    try:
        with delivery.quick_http(handle.uri):
            return run_status(handle.uri, handle.run_id)
    except PipelineError as error:  # the MLflow error is its cause; none: no such run
        if error.__cause__ is not None and delivery.transient(error.__cause__):
            return None
        raise


def _flush(handle: RunHandle, folder: Path) -> None:
    if delivery.flush_run(folder, handle.uri, _wait(handle.uri)):
        _gave_up.discard(handle.uri)
    else:
        _kept(handle, folder)


def _wait(uri: str) -> float:
    """The setting's wait; short once this process waited it out for `uri` in vain (a sweep
    ending with the server away must not wait a minute per trial) until it answers again."""
    return 1.0 if uri in _gave_up else delivery.wait_s()


def _kept(handle: RunHandle, folder: Path) -> None:
    _gave_up.add(handle.uri)
    outbox(handle).named = True
    say(f"MLflow at {handle.uri} still unreachable: run {handle.name} ({handle.run_id}) is "
        f"kept in {folder}; deliver it with: pipeline sync {folder}")  # fmt: skip
