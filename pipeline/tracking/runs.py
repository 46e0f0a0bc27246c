"""MLflow tracking: the one place that talks to MLflow (rank 0 only).

The driver resolves the tracking URI to an absolute one (`tracking_uri`), creates the store
once before Ray starts (`prepare_store`: a fresh sqlite store created by several processes at
once fails with "duplicate column name"), and creates the run before the trainer starts
(`start_run`), so a restarted trainer keeps logging into the same run. The run travels to the
Ray workers as a `RunHandle` (plain fields, picklable) inside the config; rank 0 wraps it in a
`Tracker`, every other rank wraps `None` and logs nothing.

Everything goes through plain `MlflowClient` calls on an explicit URI, never the fluent
`mlflow.start_run` global state: workers and trials must not share hidden state. mlflow is
imported inside functions (`import mlflow` takes ~1.5 s; `pipeline --help` must not pay it).

Failures: creating, finding and reopening runs are `PipelineError`s with one clear line. Logging
from the training loop never stops training: a transient failure (server unreachable, sqlite
locked) is retried a few times, quickly, then dropped with a warning.

Layout (DESIGN.md, contract 4): one experiment per dataset and model family
(`default_experiment`), one run per `pipeline train`, one parent run per sweep with one nested
child per trial (tag `mlflow.parentRunId`). With a local store, artifacts live beside the
database, `<folder of mlflow.db>/mlruns/<experiment name>/<run id>/artifacts`, as an absolute
path fixed when the experiment is created, so workers with another current directory (Ray's)
write to the same place and a bare `mlflow ui` in that folder shows them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config import flatten
from pipeline.errors import PipelineError

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from PIL.Image import Image

log = logging.getLogger(__name__)

DEFAULT_DB = "mlflow.db"  # MLflow 3's own default store: sqlite:///mlflow.db in the cwd
ARTIFACTS_DIR = "mlruns"  # MLflow's default artifact root for a database store
STATUSES = ("FINISHED", "FAILED", "KILLED")

# MLflow's limits (mlflow.utils.validation): a log_batch takes at most 100 params + tags and
# 1000 metrics; longer param and tag values are rejected.
MAX_PARAMS_PER_BATCH = 100
# MLflow draws a tqdm bar on stderr for every artifact download when tqdm is installed (optuna
# brings it): noise before our one-line messages and errors. Users can turn it back on.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
MAX_METRICS_PER_BATCH = 1000
MAX_PARAM_LENGTH = 6000
MAX_TAG_LENGTH = 8000

# Logging from training: waits before the retries of a transient failure. MLflow's own HTTP
# retries (7, exponential, up to ~4 min per call) are turned off for these calls, so a dead
# server costs seconds per call, not minutes.
RETRY_WAITS_S = (0.5, 2.0)
HTTP_TIMEOUT_S = 15
PROBE_TIMEOUT_S = 3.0

_DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


# ---------------------------------------------------------------------------------------------
# Where the store is.


def tracking_uri() -> str:
    """The tracking URI, absolute: `$MLFLOW_TRACKING_URI` or MLflow's default store.

    Relative sqlite and file paths are resolved against the current directory here, in the
    driver, because Ray workers run elsewhere. Unset, this is MLflow's own default made
    absolute, `sqlite:///<cwd>/mlflow.db`, so a bare `mlflow ui` in that folder shows the runs.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    return absolute_uri(uri) if uri else _sqlite_uri(Path(DEFAULT_DB))


def absolute_uri(uri: str) -> str:
    """`uri` with a relative sqlite or file path made absolute; other URIs unchanged."""
    scheme = _scheme(uri)
    if scheme == "sqlite":
        path, query = _sqlite_path(uri)
        return _sqlite_uri(path, query) if path is not None else uri
    if scheme == "file":
        parsed = urllib.parse.urlparse(uri)
        if parsed.netloc not in ("", "localhost"):
            return uri
        return _file_uri(Path(urllib.parse.unquote(parsed.path)))
    if scheme == "" and uri != "databricks":
        return _file_uri(Path(uri))  # a bare path is a file store to MLflow
    return uri


def default_experiment(dataset_name: str, model: str) -> str:
    """The experiment of a dataset and model family: `celeba-64/dcgan`."""
    return f"{Path(dataset_name).name}/{model}"


def prepare_store(uri: str) -> None:
    """Make the store ready before Ray starts: create a database store (once), probe a server.

    A fresh sqlite store created by several processes at once fails (migration races), so the
    driver calls this first; it holds a lock on the database's folder while MLflow creates the
    tables, which also makes two drivers starting together safe. An existing store is only
    opened. A server that does not answer is a `PipelineError` within a few seconds.
    """
    scheme = _scheme(uri)
    if scheme in ("http", "https"):
        _probe_server(uri)
        return
    if scheme.startswith("databricks") or uri == "databricks":
        return  # needs Databricks credentials; the first real call says what is wrong
    try:
        path, _ = _sqlite_path(uri) if scheme == "sqlite" else (None, "")
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with _folder_lock(path.parent):
                if not _sqlite_has_tables(path):
                    _client(uri).search_experiments(max_results=1)  # creates the tables
        _client(uri).search_experiments(max_results=1)
    except Exception as error:  # any failure to open the store is the user's to fix
        raise PipelineError(f"cannot open the MLflow store {uri}: {_one_line(error)}") from error


def _sqlite_has_tables(path: Path) -> bool:
    """Whether MLflow has created its tables in this sqlite file (all of them: creators hold
    the folder lock until done, and this is asked under that lock)."""
    import sqlite3

    if not path.is_file() or path.stat().st_size == 0:
        return False
    with contextlib.closing(sqlite3.connect(_file_uri(path) + "?mode=ro", uri=True)) as db:
        try:
            return db.execute("SELECT count(*) FROM alembic_version").fetchone()[0] > 0
        except sqlite3.DatabaseError:  # no such table (or not a database: MLflow will say)
            return False


def _probe_server(uri: str) -> None:
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S):
            pass
    except urllib.error.HTTPError:
        return  # something answers (maybe behind auth); the API calls will say more
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise PipelineError(
            f"the MLflow tracking server {uri} is not reachable ({reason}): start it "
            "(`mlflow server --host 127.0.0.1 --port PORT`, see mlflow/) or unset "
            "MLFLOW_TRACKING_URI to use the local store ./mlflow.db"
        ) from None


# ---------------------------------------------------------------------------------------------
# Experiments and runs (driver side: failures are PipelineErrors).


@dataclass(frozen=True)
class RunHandle:
    """An MLflow run, passed to the Ray workers in the config (plain fields, picklable)."""

    uri: str
    run_id: str
    experiment_id: str
    name: str

    def to_dict(self) -> dict[str, str]:
        return {
            "uri": self.uri,
            "run_id": self.run_id,
            "experiment_id": self.experiment_id,
            "name": self.name,
        }


def experiment_id(uri: str, name: str) -> str:
    """The id of experiment `name`, created when missing (artifacts at an absolute location)."""
    from mlflow.exceptions import MlflowException

    client = _client(uri)
    try:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            try:
                return client.create_experiment(
                    name, artifact_location=_artifact_location(uri, name)
                )
            except MlflowException as error:
                if error.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                experiment = client.get_experiment_by_name(name)  # another process won the race
    except MlflowException as error:
        raise PipelineError(
            f"cannot open MLflow experiment {name!r} in {uri}: {_one_line(error)}"
        ) from error
    if experiment.lifecycle_stage == "deleted":
        raise PipelineError(
            f"MLflow experiment {name!r} in {uri} is deleted: restore it (`mlflow experiments "
            f"restore --experiment-id {experiment.experiment_id}`) or choose another --experiment"
        )
    return experiment.experiment_id


def start_run(
    uri: str,
    experiment: str,
    run_name: str,
    params: Mapping[str, Any],
    tags: Mapping[str, Any] | None = None,
    parent_run_id: str | None = None,
) -> RunHandle:
    """Create a RUNNING run with its params (nested dicts are flattened), before training starts.

    `parent_run_id` nests the run under a sweep's parent run (tag `mlflow.parentRunId`).
    """
    from mlflow.exceptions import MlflowException

    if parent_run_id is not None:
        find_run(uri, parent_run_id)  # a clear error for an unknown parent
    experiment_id_ = experiment_id(uri, experiment)
    all_tags = {"mlflow.source.name": "pipeline", **_user_tag(), **(tags or {})}
    if parent_run_id is not None:
        all_tags["mlflow.parentRunId"] = parent_run_id
    client = _client(uri)
    try:
        run = client.create_run(experiment_id_, run_name=run_name, tags=_tag_values(all_tags))
    except MlflowException as error:
        raise PipelineError(
            f"cannot create MLflow run {run_name!r} in {uri}: {_one_line(error)}"
        ) from error
    handle = RunHandle(uri, run.info.run_id, experiment_id_, run.info.run_name)
    try:
        _log_params(client, handle.run_id, params)
    except MlflowException as error:
        with contextlib.suppress(MlflowException):
            client.set_terminated(handle.run_id, "FAILED")
        raise PipelineError(
            f"cannot log the params of MLflow run {handle.run_id} in {uri}: {_one_line(error)}"
        ) from error
    return handle


def find_run(uri: str, run_id: str) -> RunHandle:
    """The run `run_id` (for `--resume`); a `PipelineError` when there is none."""
    run = _get_run(uri, run_id)
    if run.info.lifecycle_stage == "deleted":
        raise PipelineError(
            f"MLflow run {run_id} in {uri} is deleted: restore it (`mlflow runs restore "
            f"--run-id {run_id}`) to continue it"
        )
    return RunHandle(uri, run.info.run_id, run.info.experiment_id, run.info.run_name)


def find_run_by_tags(
    uri: str, experiment: str, tags: Mapping[str, str], parent_run_id: str | None = None
) -> RunHandle | None:
    """The newest live run of `experiment` carrying all `tags` (e.g. a sweep trial's id), or None.

    Lets a restarted trial find the child run it created before instead of making another.
    """
    from mlflow.exceptions import MlflowException

    client = _client(uri)
    wanted = dict(tags)
    if parent_run_id is not None:
        wanted["mlflow.parentRunId"] = parent_run_id
    terms = [f"tags.`{key}` = {_quote(str(value))}" for key, value in wanted.items()]
    try:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            return None
        runs = client.search_runs(
            [found.experiment_id],
            filter_string=" and ".join(terms),
            max_results=1,
            order_by=["attributes.start_time DESC"],
        )
    except MlflowException as error:
        raise PipelineError(f"cannot search MLflow runs in {uri}: {_one_line(error)}") from error
    if not runs:
        return None
    info = runs[0].info
    return RunHandle(uri, info.run_id, info.experiment_id, info.run_name)


def find_trial_run(
    uri: str, experiment: str, sweep: str, parent_run_id: str, trial_id: str
) -> RunHandle | None:
    """A sweep trial's child run, by its Tune trial id under the sweep's parent run, or None."""
    tags = {"ray.trial_id": trial_id, "pipeline.sweep": sweep}
    return find_run_by_tags(uri, experiment, tags, parent_run_id=parent_run_id)


def reopen_run(handle: RunHandle) -> None:
    """Mark a resumed run RUNNING again (MLflow keeps its old end time until it ends again)."""
    from mlflow.exceptions import MlflowException

    find_run(handle.uri, handle.run_id)
    try:
        _client(handle.uri).update_run(handle.run_id, status="RUNNING")
    except MlflowException as error:
        raise PipelineError(
            f"cannot reopen MLflow run {handle.run_id} in {handle.uri}: {_one_line(error)}"
        ) from error


def download_artifact(handle: RunHandle, artifact_path: str) -> Path | None:
    """A run's artifact, downloaded to a fresh temporary folder; None when it has none."""
    import tempfile

    from mlflow.exceptions import MlflowException

    folder = Path(tempfile.mkdtemp(prefix="pipeline-artifact-"))
    try:
        local = _client(handle.uri).download_artifacts(handle.run_id, artifact_path, str(folder))
    except (MlflowException, OSError):
        return None
    return Path(local)


def run_config(uri: str, run_id: str) -> dict:
    """The resolved config a training run saved as its `config.yaml` artifact."""
    import yaml

    handle = find_run(uri, run_id)
    path = download_artifact(handle, "config.yaml")
    if path is None:
        raise PipelineError(f"MLflow run {run_id} has no config.yaml: not a `pipeline train` run")
    return yaml.safe_load(path.read_text())


def run_status(uri: str, run_id: str) -> str:
    """RUNNING, FINISHED, FAILED, KILLED or SCHEDULED."""
    return _get_run(uri, run_id).info.status


def run_metrics(handle: RunHandle) -> dict[str, float]:
    """A run's latest value of each metric (a restarted sweep trial checks how far it got)."""
    return dict(_get_run(handle.uri, handle.run_id).data.metrics)


def artifact_files(handle: RunHandle, folder: str | None = None) -> list[str]:
    """The artifact paths directly under `folder` of a run (empty when there are none)."""
    from mlflow.exceptions import MlflowException

    try:
        return [item.path for item in _client(handle.uri).list_artifacts(handle.run_id, folder)]
    except (MlflowException, OSError):
        return []


def register_model(handle: RunHandle, artifact_path: str, name: str) -> str:
    """Register a run's artifact folder (a generator file) as a new version of model `name`
    in the MLflow model registry; returns the version."""
    from mlflow.exceptions import MlflowException

    client = _client(handle.uri)
    try:
        if not client.search_registered_models(filter_string=f"name = {_quote(name)}"):
            client.create_registered_model(name)
        source = f"{_get_run(handle.uri, handle.run_id).info.artifact_uri}/{artifact_path}"
        version = client.create_model_version(name, source, run_id=handle.run_id)
    except MlflowException as error:
        raise PipelineError(
            f"cannot register model {name!r} in {handle.uri}: {_one_line(error)}"
        ) from error
    return str(version.version)


def _get_run(uri: str, run_id: str):
    from mlflow.exceptions import MlflowException

    try:
        return _client(uri).get_run(run_id)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise PipelineError(f"no MLflow run {run_id} in {uri}") from None
        raise PipelineError(
            f"cannot read MLflow run {run_id} from {uri}: {_one_line(error)}"
        ) from error


# ---------------------------------------------------------------------------------------------
# Logging from training (rank 0): failures are warnings, never the end of training.


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
            name, value = _key(key), float(value)
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
        self._call("log params", lambda c: _log_params(c, self.handle.run_id, params))

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
                lambda c: c.log_image(run_id, image, key=_key(key), step=int(step or 0)),
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

        items = [RunTag(_key(k), v) for k, v in _tag_values(tags).items()]
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
                    self._client = _client(self.handle.uri)
                with _quick_http(self.handle.uri):
                    call(self._client)
                return True
            except (MlflowException, requests.RequestException, OSError) as error:
                if attempt == len(RETRY_WAITS_S) or not _transient(error):
                    log.warning(
                        "MLflow run %s: could not %s (%s); training goes on",
                        self.handle.run_id,
                        what,
                        _one_line(error),
                    )
                    return False
                time.sleep(RETRY_WAITS_S[attempt])
        return False


# ---------------------------------------------------------------------------------------------
# Helpers.


def _client(uri: str) -> MlflowClient:
    # MLflow caches the store per URI, so a client per call is cheap after the first.
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _scheme(uri: str) -> str:
    match = _SCHEME.match(uri)
    if match is None or len(match.group(1)) == 1:  # "C:\..." is a Windows path
        return ""
    return match.group(1).lower().split("+")[0]  # postgresql+psycopg2 -> postgresql


def _sqlite_path(uri: str) -> tuple[Path | None, str]:
    """The database file of a sqlite URI (None for in-memory) and its query string."""
    rest = uri.split(":", 1)[1]
    rest, _, query = rest.partition("?")
    if not rest.startswith("///") or rest == "///" or rest.startswith("///:memory:"):
        return None, query
    return Path(urllib.parse.unquote(rest[3:])).expanduser(), query


def _sqlite_uri(path: Path, query: str = "") -> str:
    uri = "sqlite:///" + os.path.abspath(path)
    return f"{uri}?{query}" if query else uri


def _file_uri(path: Path) -> str:
    return Path(os.path.abspath(path.expanduser())).as_uri()


def _artifact_location(uri: str, experiment: str) -> str | None:
    """Where a new experiment's artifacts go: absolute, beside a local database.

    None lets the store decide: a server has its own artifact root (`mlflow-artifacts:/`),
    a file store keeps artifacts inside itself.
    """
    scheme = _scheme(uri)
    if scheme not in _DATABASE_SCHEMES:
        return None
    root = Path.cwd()
    if scheme == "sqlite":
        path, _ = _sqlite_path(uri)
        root = path.parent if path is not None else root
    parts = [re.sub(r"[^\w.-]+", "_", part) for part in experiment.split("/")]
    parts = [part for part in parts if part.strip(".")] or ["experiment"]
    return str(Path(os.path.abspath(root), ARTIFACTS_DIR, *parts))


@contextlib.contextmanager
def _folder_lock(folder: Path | None) -> Iterator[None]:
    """An exclusive lock on a folder (POSIX flock) for the length of the block."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock; create the store from one process
        fcntl = None
    if folder is None or fcntl is None:
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def _quick_http(uri: str) -> Iterator[None]:
    """Within the block, MLflow's HTTP calls fail fast (our own few retries follow) unless the
    user chose their own settings. Process-wide while it lasts: MLflow reads these per call."""
    if _scheme(uri) not in ("http", "https"):
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


def _log_params(client: MlflowClient, run_id: str, params: Mapping[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(_key(k), _param_value(v)) for k, v in flatten(params).items()]
    for start in range(0, len(items), MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, params=items[start : start + MAX_PARAMS_PER_BATCH])


def _param_value(value: Any) -> str:
    if isinstance(value, (list, tuple, dict)):
        text = json.dumps(value, default=str)
    else:
        text = str(value)
    return _truncate(text, MAX_PARAM_LENGTH)


def _tag_values(tags: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): _truncate(str(v), MAX_TAG_LENGTH) for k, v in tags.items()}


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _key(name: str) -> str:
    """A metric or param name MLflow accepts: alphanumerics, `_ - . / ` and spaces."""
    return re.sub(r"[^\w./ -]", "_", str(name))


def _quote(value: str) -> str:
    return f'"{value}"' if "'" in value else f"'{value}'"


def _user_tag() -> dict[str, str]:
    import getpass

    try:
        return {"mlflow.user": getpass.getuser()}
    except (KeyError, OSError):  # no login name in some containers
        return {}


def _one_line(error: BaseException) -> str:
    """An exception's message on one line, shortened (MLflow's can run to pages)."""
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    return _truncate(" ".join(str(message).split()), 300)
