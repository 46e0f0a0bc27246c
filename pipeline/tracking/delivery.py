"""Delivering journals to MLflow: the background `Sender` of a live run, `flush_run` when a run
ends, and `sync` (`pipeline sync`) for what is left afterwards.

One rule everywhere: a run's final status goes last, after every other event of every journal
of the run on this node (a FINISHED run with its record still arriving would mislead). A
transient failure (the server or network away, a busy server, a locked sqlite) stops delivery
where it is; a permanent one for a single event (MLflow refuses a changed param) is said once
and passed over, as the old direct calls did; a run the server no longer has stops it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from pipeline.console import say
from pipeline.errors import PipelineError, one_line
from pipeline.tracking import journal
from pipeline.tracking.journal import Event
from pipeline.tracking.store import mlflow_client, uri_scheme

log = logging.getLogger(__name__)

HTTP_TIMEOUT_S = 15
BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)  # then every 15 s, for as long as the run lives
DEFAULT_WAIT_S = 60.0
# A failure this short is not worth a console line (a sqlite store locked by another writer
# for a moment, a server's brief restart): the sender says "unreachable" after this long.
SAY_AFTER_S = 2.0


class Unreachable(Exception):
    """MLflow did not answer, or answered that it cannot now: try again later."""


def wait_s() -> float:
    """How long a command waits at its end for its record to reach MLflow
    (PIPELINE_TRACKING_WAIT_S, default 60 s)."""
    value = os.environ.get("PIPELINE_TRACKING_WAIT_S", "")
    try:
        return max(0.0, float(value)) if value else DEFAULT_WAIT_S
    except ValueError:
        raise PipelineError(
            f"PIPELINE_TRACKING_WAIT_S={value!r} is not a number of seconds"
        ) from None


def send(client, folder: Path, header: dict, event: Event) -> None:
    """One event to MLflow."""
    from mlflow.entities import Metric, Param, RunTag

    run_id, fields = header["run_id"], event.fields
    if event.kind == "metrics":
        points = [Metric(k, v, t, s) for k, v, t, s in fields["points"]]
        client.log_batch(run_id, metrics=points)
    elif event.kind == "params":
        client.log_batch(run_id, params=[Param(k, v) for k, v in fields["params"].items()])
    elif event.kind == "tags":
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in fields["tags"].items()])
    elif event.kind == "dict":
        client.log_dict(run_id, fields["data"], fields["artifact_file"])
    elif event.kind == "artifact":
        path = folder / fields["file"]
        if path.is_dir():
            client.log_artifacts(run_id, str(path), fields.get("artifact_path"))
        else:
            client.log_artifact(run_id, str(path), fields.get("artifact_path"))
    elif event.kind == "image":  # kept under the artifact's own name: sent as it is
        where = str(Path(fields["artifact_file"]).parent)
        client.log_artifact(run_id, str(folder / fields["file"]), None if where == "." else where)
        if fields.get("key") is not None:  # also an entry of the UI's image series
            _log_series_image(client, run_id, folder / fields["file"], fields)
    elif event.kind == "status":
        client.set_terminated(run_id, fields["status"], end_time=fields["end_time"])
    else:
        raise PipelineError(f"unknown journal event {event.kind!r}")


def _log_series_image(client, run_id: str, kept: Path, fields: dict) -> None:
    """`client.log_image(run_id, image, key=, step=, timestamp=)` under a name fixed by the
    event: MLflow names each entry with a fresh uuid, so a delivery retried after a partial
    failure (the image sent, its preview not) would show twice in the UI's slider. Here a
    retry overwrites the same two files. The names follow MLflow 3's (the UI parses them):
    images/<key, / as ~>+step+<step>+timestamp+<ms>+<uuid>.png and ...+compressed.webp."""
    import tempfile
    import uuid

    from mlflow.tracking.multimedia import compress_image_size
    from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_IMAGES

    entry = uuid.uuid5(uuid.NAMESPACE_URL, f"pipeline:{run_id}:{fields['file']}")
    name = (f"{fields['key'].replace('/', '~')}+step+{fields['step']}+timestamp+"
            f"{fields['timestamp']}+{entry}")  # fmt: skip
    from PIL import Image

    with tempfile.TemporaryDirectory() as folder, Image.open(kept) as image:
        shutil.copyfile(kept, Path(folder) / f"{name}.png")
        compress_image_size(image.convert("RGB")).save(Path(folder) / f"{name}+compressed.webp")
        client.log_artifact(run_id, str(Path(folder) / f"{name}.png"), "images")
        client.log_artifact(run_id, str(Path(folder) / f"{name}+compressed.webp"), "images")
    client.set_tag(run_id, MLFLOW_LOGGED_IMAGES, True)


def deliver(path: Path, client, statuses: bool = False) -> int:
    """Send `path`'s pending events in order, moving its acknowledged offset after each; stop
    before a status event unless `statuses`. Raises `Unreachable` where MLflow is away.
    Returns how many events went."""
    header = journal.header(path)
    sent = 0
    with journal.locked(path):
        events = list(journal.pending(path))
        # An artifact overwritten later in the backlog (the last checkpoint, each report) is
        # sent once, at its last version.
        last = {_destination(e): i for i, e in enumerate(events) if e.kind == "artifact"}
        for i, event in enumerate(events):
            if event.kind == "status" and not statuses:
                break
            if event.kind != "artifact" or last[_destination(event)] == i:
                _send_one(client, path, header, event)
                sent += 1
            journal.mark_sent(path, event.end)
            journal.forget_files(path, event)
    return sent


def waits_for_status(path: Path) -> bool:
    """Nothing pending, or the next event is a status (what `deliver` leaves)."""
    return next(journal.pending(path), Event("status", {}, 0)).kind == "status"


def deliver_run(folder: Path, client) -> int:
    """Every journal of a run, oldest first, the statuses after all the rest (and whatever a
    process logged after its status). Raises `Unreachable`."""
    files = journal.run_journals(folder)
    sent = sum(deliver(path, client) for path in files)
    if all(waits_for_status(path) for path in files):
        sent += sum(deliver(path, client, statuses=True) for path in files)
    return sent


def flush_run(folder: Path, uri: str, timeout: float) -> bool:
    """Deliver a run's journals on this node, waiting at most `timeout` s for MLflow; True
    when nothing is left."""
    deadline = time.monotonic() + timeout
    client, attempt = None, 0
    while True:
        try:
            client = client or mlflow_client(uri)
            deliver_run(folder, client)
            if not any(map(journal.undelivered, journal.run_journals(folder))):
                return True
        except Unreachable:
            pass
        except PipelineError as error:  # the run is gone from the server: waiting cannot help
            say(f"MLflow: {error}")
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(left, _backoff(attempt)))
        attempt += 1


def find_run_folder(target: str, root: Path | None = None) -> Path:
    """`pipeline sync PATH|RUN`: a journal folder (or a file in it), or a run's id or name
    among this node's journals."""
    path = Path(target).expanduser()
    if path.is_file():
        path = path.parent
    if path.is_dir():
        if not journal.run_journals(path):
            raise PipelineError(f"{path} holds no pipeline journal (*{journal.SUFFIX} files)")
        return path
    root = root or journal.journals_root()
    if (root / target).is_dir() and "/" not in target and target not in (".", ".."):
        return root / target
    named = [f for f in (root.iterdir() if root.is_dir() else []) if _named(f, target)]
    if len(named) == 1:
        return named[0]
    if named:
        raise PipelineError(f"{len(named)} journals in {root} are of runs named {target!r}: "
                            "give the run id or the folder")  # fmt: skip
    raise PipelineError(f"no journal of run {target!r} in {root}, and no such folder")


def sync(folder: Path) -> tuple[dict, int]:
    """Deliver what a run's journals still hold (`pipeline sync`): its header and how many
    events went. Running it again sends nothing. Raises PipelineError when MLflow is away or
    no longer has the run."""
    files = journal.run_journals(folder)
    header = journal.header(files[0])
    client = mlflow_client(header["uri"])
    _check_run(client, header, folder)
    try:
        return header, deliver_run(folder, client)
    except Unreachable as error:
        raise _away(header, folder, error) from None


def deliver_kept(uri: str, parent_run_id: str, say) -> int:
    """`tune --resume`: deliver what this node's journals kept of the sweep (its parent run and
    the trials nested under it) while MLflow was away; returns how many runs. A run that
    cannot be delivered now is said, not fatal: `pipeline sync` remains."""
    client, delivered = mlflow_client(uri), 0
    for folder in journal.all_undelivered():
        try:
            header = journal.header(journal.run_journals(folder)[0])
            if header["uri"] != uri:
                continue
            tags = client.get_run(header["run_id"]).data.tags
            if parent_run_id not in (header["run_id"], tags.get("mlflow.parentRunId")):
                continue
            _, sent = sync(folder)
        except PipelineError as error:
            say(f"warning: {error}")
            continue
        except Exception:  # noqa: BLE001 - not a run of this server (any more): not ours to say
            continue
        delivered += 1
        say(f"delivered {sent} event(s) of run {header.get('name')} kept in {folder} while "
            "MLflow was away")  # fmt: skip
    return delivered


def _check_run(client, header: dict, folder: Path) -> None:
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(header["run_id"])
    except MlflowException as error:
        if transient(error):
            raise _away(header, folder, one_line(error)) from None
        raise _gone(header, folder) from None
    except Exception as error:  # noqa: BLE001 - requests' and the OS's network errors
        raise _away(header, folder, one_line(error)) from None
    if run.info.lifecycle_stage == "deleted":
        raise PipelineError(f"run {header['run_id']} is deleted on {header['uri']}: its "
                            f"journal {folder} is kept (restore the run, then sync)")  # fmt: skip


def _named(folder: Path, name: str) -> bool:
    files = journal.run_journals(folder) if folder.is_dir() else []
    try:
        return bool(files) and journal.header(files[0]).get("name") == name
    except PipelineError:
        return False


class Sender:
    """Delivers one journal of this process in the background: the training step only appends
    to the file. While MLflow is away it retries without end (a growing wait, at most 15 s)
    and, once the failures have lasted SAY_AFTER_S, says so on the console once, and once
    more when the backlog is delivered."""

    def __init__(self, path: Path, uri: str, folder: Path):
        self.path, self.uri, self.folder = path, uri, folder
        self.away_since: float | None = None  # the first failure of the present outage
        self.announced = False
        self.waited_on = False  # a run's end waits for this sender: retry every second
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mlflow-sender", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._idle.clear()
        self._wake.set()

    def drain(self, timeout: float) -> bool:
        """Wait (at most `timeout` s) until everything but the status is delivered."""
        deadline = time.monotonic() + timeout
        self.waited_on = True
        try:
            while True:
                self.wake()
                left = max(0.0, deadline - time.monotonic())
                if self._idle.wait(left) and waits_for_status(self.path):
                    return True
                if time.monotonic() >= deadline:
                    return False
        finally:
            self.waited_on = False

    def _run(self) -> None:
        client, attempt = None, 0
        while True:
            backoff = _backoff(attempt)
            self._wake.wait((min(backoff, 1.0) if self.waited_on else backoff) if attempt else None)
            self._wake.clear()
            try:
                client = client or mlflow_client(self.uri)
                deliver(self.path, client)
            except Unreachable as error:
                attempt += 1
                now = time.monotonic()
                self.away_since = self.away_since or now
                if not self.announced and now - self.away_since >= SAY_AFTER_S:
                    self.announced = True
                    say(f"MLflow at {self.uri} unreachable: keeping the record in "
                        f"{self.folder}, delivering when it is back")  # fmt: skip
                    log.debug("MLflow at %s: %s", self.uri, error)
                continue
            except PipelineError as error:  # the run is gone from the server: nothing to retry
                say(f"MLflow: {error}")
                self._idle.set()
                return
            except Exception as error:  # noqa: BLE001 - the sender must never take training down
                attempt += 1
                log.warning("MLflow run journal %s: %s", self.path, one_line(error))
                continue
            if self.announced:
                away = time.monotonic() - (self.away_since or 0.0)
                say(f"MLflow at {self.uri} is back: the record kept for {away:.0f} s is "
                    "delivered")  # fmt: skip
            self.away_since, self.announced = None, False
            attempt = 0
            if waits_for_status(self.path):
                self._idle.set()
            else:
                self._wake.set()  # appended meanwhile


def _send_one(client, path: Path, header: dict, event: Event) -> None:
    import requests
    from mlflow.exceptions import MlflowException

    try:
        with quick_http(header["uri"]):
            send(client, path.parent, header, event)
    except (MlflowException, requests.RequestException, OSError) as error:
        if transient(error):
            raise Unreachable(one_line(error)) from None
        if _run_gone(error):
            raise _gone(header, path.parent) from None
        log.warning("MLflow run %s: could not log %s (%s); passed over",
                    header["run_id"], event.kind, one_line(error))  # fmt: skip


def _backoff(attempt: int) -> float:
    return BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)]


def _away(header: dict, folder: Path, error) -> PipelineError:
    return PipelineError(f"MLflow at {header['uri']} unreachable ({error}): the record stays in "
                         f"{folder}; run `pipeline sync` again later")  # fmt: skip


def _gone(header: dict, folder: Path) -> PipelineError:
    return PipelineError(f"run {header['run_id']} is not on {header['uri']} (deleted?): its "
                         f"journal {folder} is kept")  # fmt: skip


def _destination(event: Event) -> tuple[str, str]:
    return event.fields.get("artifact_path") or "", Path(event.fields["file"]).name


def _run_gone(error: BaseException) -> bool:
    from mlflow.exceptions import MlflowException

    if not isinstance(error, MlflowException):
        return False
    text = str(error)
    return error.error_code == "RESOURCE_DOES_NOT_EXIST" or "must be in the 'active' state" in text


@contextlib.contextmanager
def quick_http(uri: str) -> Iterator[None]:
    """Within the block, MLflow's HTTP calls fail fast (our own retries follow) unless the
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


def transient(error: BaseException) -> bool:
    """Worth retrying: the network, a busy server or a locked sqlite database."""
    from mlflow.exceptions import MlflowException

    if isinstance(error, MlflowException):
        status = error.get_http_status_code()
        return status >= 500 or status == 429
    return not isinstance(error, (FileNotFoundError, PermissionError, IsADirectoryError))
