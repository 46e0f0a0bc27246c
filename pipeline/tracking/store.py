"""Where the MLflow store is, and making it ready: tracking URIs, store creation, the folder lock.

The driver resolves the tracking URI to an absolute one (`tracking_uri`) because Ray workers
run with another current directory, and creates the store once before Ray starts
(`prepare_store`: a fresh sqlite store created by several processes at once fails with
"duplicate column name"). With a local database, artifacts live beside it,
`<folder of mlflow.db>/mlruns/<experiment name>/<run id>/artifacts`, as an absolute path fixed
when the experiment is created (`artifact_location`), so workers with another current
directory write to the same place and a bare `mlflow ui` in that folder shows them.

mlflow is imported inside functions (`import mlflow` takes ~1.5 s; `pipeline --help` must not
pay it); every client is made by `mlflow_client`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import PipelineError, one_line
from pipeline.settings import verbose

if TYPE_CHECKING:
    from mlflow import MlflowClient

DEFAULT_DB = "mlflow.db"  # MLflow 3's own default store: sqlite:///mlflow.db in the cwd
ARTIFACTS_DIR = "mlruns"  # MLflow's default artifact root for a database store
PROBE_TIMEOUT_S = 3.0

_DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


# ---------------------------------------------------------------------------------------------
# Tracking URIs.


def tracking_uri() -> str:
    """The tracking URI, absolute: `$MLFLOW_TRACKING_URI` or MLflow's default store.

    Relative sqlite and file paths are resolved against the current directory here, in the
    driver, because Ray workers run elsewhere. Unset, this is MLflow's own default made
    absolute, `sqlite:///<cwd>/mlflow.db`, so a bare `mlflow ui` in that folder shows the runs.
    A password in it is hidden (`redacted`): this is the form every run handle, sweep file and
    message carries; `connectable` gives the real one to whatever connects.
    """
    return redacted(_configured_uri())


def _configured_uri() -> str:
    """MLFLOW_TRACKING_URI (made absolute), password included, or the default store."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    return absolute_uri(uri) if uri else sqlite_uri(Path(DEFAULT_DB))


REDACTED = "***"


def redacted(uri: str) -> str:
    """`uri` with the password in its user part hidden (`postgresql://ml:***@db/mlflow`): the
    form kept in run handles, sweep files, journals and MLflow artifacts, and printed. The
    password lives only in MLFLOW_TRACKING_URI, which `connectable` takes it back from."""
    parts = urllib.parse.urlsplit(uri)
    try:
        password = parts.password
    except ValueError:  # a netloc urllib cannot parse: no user part to hide
        return uri
    if not password or password == REDACTED:
        return uri
    user, host = parts.netloc.rsplit("@", 1)
    return urllib.parse.urlunsplit(
        parts._replace(netloc=f"{user.split(':', 1)[0]}:{REDACTED}@{host}")
    )


def connectable(uri: str) -> str:
    """The URI to connect to the store `uri` names: itself, or for a redacted one the
    MLFLOW_TRACKING_URI that redacts to it (the password never comes from anywhere else)."""
    if f":{REDACTED}@" not in uri:
        return uri
    current = _configured_uri()
    if redacted(current) == uri:
        return current
    raise PipelineError(
        f"the MLflow store {uri} needs its password, which is kept nowhere but in "
        "MLFLOW_TRACKING_URI: set MLFLOW_TRACKING_URI to that store, password included"
    )


def absolute_uri(uri: str) -> str:
    """`uri` with a relative sqlite or file path made absolute; other URIs unchanged."""
    scheme = uri_scheme(uri)
    if scheme == "sqlite":
        path, query = sqlite_path(uri)
        return sqlite_uri(path, query) if path is not None else uri
    if scheme == "file":
        parsed = urllib.parse.urlparse(uri)
        if parsed.netloc not in ("", "localhost"):
            return uri
        return file_uri(Path(urllib.parse.unquote(parsed.path)))
    if scheme == "" and uri != "databricks":
        return file_uri(Path(uri))  # a bare path is a file store to MLflow
    return uri


def uri_scheme(uri: str) -> str:
    """The scheme of a URI, lower case and without a driver (`postgresql+psycopg2` ->
    `postgresql`); "" for a bare path."""
    match = _SCHEME.match(uri)
    if match is None or len(match.group(1)) == 1:  # "C:\..." is a Windows path
        return ""
    return match.group(1).lower().split("+")[0]


def sqlite_path(uri: str) -> tuple[Path | None, str]:
    """The database file of a sqlite URI (None for in-memory) and its query string."""
    rest = uri.split(":", 1)[1]
    rest, _, query = rest.partition("?")
    if not rest.startswith("///") or rest == "///" or rest.startswith("///:memory:"):
        return None, query
    return Path(urllib.parse.unquote(rest[3:])).expanduser(), query


def sqlite_uri(path: Path, query: str = "") -> str:
    uri = "sqlite:///" + os.path.abspath(path)
    return f"{uri}?{query}" if query else uri


def file_uri(path: Path) -> str:
    return Path(os.path.abspath(path.expanduser())).as_uri()


# ---------------------------------------------------------------------------------------------
# Experiments and their artifacts.


def default_experiment(dataset_name: str, model: str) -> str:
    """The experiment of a dataset and model family: `celeba-64/dcgan`."""
    return f"{Path(dataset_name).name}/{model}"


def local_artifact_root(uri: str) -> Path | None:
    """The artifact root beside a local sqlite database, `<folder of mlflow.db>/mlruns`;
    None for any other store (and for an in-memory database)."""
    path, _ = sqlite_path(uri) if uri_scheme(uri) == "sqlite" else (None, "")
    return path.parent / ARTIFACTS_DIR if path is not None else None


def artifact_location(uri: str, experiment: str) -> str | None:
    """Where a new experiment's artifacts go: absolute, beside a local database.

    None lets the store decide: a server has its own artifact root (`mlflow-artifacts:/`),
    a file store keeps artifacts inside itself.
    """
    if uri_scheme(uri) not in _DATABASE_SCHEMES:
        return None
    root = local_artifact_root(uri) or Path.cwd() / ARTIFACTS_DIR
    parts = [re.sub(r"[^\w.-]+", "_", part) for part in experiment.split("/")]
    parts = [part for part in parts if part.strip(".")] or ["experiment"]
    return str(Path(os.path.abspath(root), *parts))


# ---------------------------------------------------------------------------------------------
# Making the store ready, and the client.


@contextlib.contextmanager
def _quiet(*loggers: str) -> Iterator[None]:
    """These loggers' INFO lines kept off the console for a while (PIPELINE_VERBOSE=1: not)."""
    if verbose():
        yield
        return
    levels = {name: logging.getLogger(name).level for name in loggers}
    for name in loggers:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def prepare_store(uri: str) -> None:
    """Make the store ready before Ray starts: create a database store (once), probe a server.

    A fresh sqlite store created by several processes at once fails (migration races), so the
    driver calls this first; it holds a lock on the database's folder while MLflow creates the
    tables, which also makes two drivers starting together safe. An existing store is only
    opened. A server that does not answer is a `PipelineError` within a few seconds.
    """
    uri = connectable(uri)
    scheme = uri_scheme(uri)
    if scheme in ("http", "https"):
        _probe_server(uri)
        return
    if scheme.startswith("databricks") or uri == "databricks":
        return  # needs Databricks credentials; the first real call says what is wrong
    try:
        path, _ = sqlite_path(uri) if scheme == "sqlite" else (None, "")
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with folder_lock(path.parent):
                if not _sqlite_has_tables(path):
                    with _quiet("mlflow.store.db.utils", "alembic"):  # "Creating tables..."
                        mlflow_client(uri).search_experiments(max_results=1)  # makes them
        mlflow_client(uri).search_experiments(max_results=1)
    except Exception as error:  # any failure to open the store is the user's to fix
        shown, why = redacted(uri), one_line(error).replace(uri, redacted(uri))
        raise PipelineError(f"cannot open the MLflow store {shown}: {why}") from error


def mlflow_client(uri: str) -> MlflowClient:
    """A client of the store at `uri`. MLflow caches the store per URI, so a client per call
    is cheap after the first."""
    from mlflow import MlflowClient

    _quiet_artifact_downloads()
    return MlflowClient(tracking_uri=connectable(uri))


def _quiet_artifact_downloads() -> None:
    """MLflow draws a tqdm bar on stderr for every artifact download when tqdm is installed
    (optuna brings it): noise before our one-line messages and errors. Off unless the user
    chose otherwise; MLflow reads the variable at each download, and processes started later
    (Ray workers, `mlflow server`) inherit it."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@contextlib.contextmanager
def folder_lock(folder: Path | None) -> Iterator[None]:
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


def _sqlite_has_tables(path: Path) -> bool:
    """Whether MLflow has created its tables in this sqlite file (all of them: creators hold
    the folder lock until done, and this is asked under that lock)."""
    import sqlite3

    if not path.is_file() or path.stat().st_size == 0:
        return False
    with contextlib.closing(sqlite3.connect(file_uri(path) + "?mode=ro", uri=True)) as db:
        try:
            return db.execute("SELECT count(*) FROM alembic_version").fetchone()[0] > 0
        except sqlite3.DatabaseError:  # no such table (or not a database: MLflow will say)
            return False


def _probe_server(uri: str) -> None:
    """A server that answers, and takes this client's credentials, within a few seconds."""
    shown = redacted(uri)
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=PROBE_TIMEOUT_S):
            pass
    except urllib.error.HTTPError:
        pass  # something answers (maybe behind auth); the API call below says more
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise PipelineError(
            f"the MLflow tracking server {shown} is not reachable ({reason}): start it "
            "(`mlflow server --host 127.0.0.1 --port PORT`, see mlflow/) or unset "
            "MLFLOW_TRACKING_URI to use the local store ./mlflow.db"
        ) from None
    _check_credentials(uri)


def _check_credentials(uri: str) -> None:
    """Refuse, in one line, a server that does not take this client's credentials (MLflow's
    basic auth: MLFLOW_TRACKING_USERNAME/PASSWORD or ~/.mlflow/credentials, or a bearer
    MLFLOW_TRACKING_TOKEN)."""
    import base64

    from mlflow.utils.credentials import get_default_host_creds

    shown = redacted(uri)

    request = urllib.request.Request(
        uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1"
    )
    creds = get_default_host_creds(uri)  # the variables, or ~/.mlflow/credentials
    user, password = creds.username, creds.password
    if user and password:
        pair = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {pair}")
    elif creds.token:
        request.add_header("Authorization", f"Bearer {creds.token}")
    opener = urllib.request.build_opener(CredentialsStayHome)
    try:
        with opener.open(request, timeout=PROBE_TIMEOUT_S * 3):
            return
    except urllib.error.HTTPError as error:
        if error.code == 401 and user and password:
            raise PipelineError(
                f"the MLflow server {shown} refused user {user!r} (HTTP 401): check "
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
            ) from None
        if error.code == 401:
            raise PipelineError(
                f"the MLflow server {shown} wants a user (HTTP 401, basic auth): set "
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
            ) from None
        if error.code == 403:
            raise PipelineError(
                f"the MLflow server {shown} refused this request (HTTP 403): "
                f"{'user ' + repr(user) if user else 'this client'} may not read experiments "
                "there, or the server's --allowed-hosts does not name the host in the URI"
            ) from None
    except (urllib.error.URLError, OSError):
        return  # answered /health a moment ago; the API calls will say what is wrong


class CredentialsStayHome(urllib.request.HTTPRedirectHandler):
    """Redirects followed, but the Authorization header sent only where it was meant to go:
    urllib's own handler copies it to whatever host a redirect names, so a server (or a proxy
    in front of it) could collect the team's password by redirecting the probe."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        old, to = urllib.parse.urlsplit(req.full_url), urllib.parse.urlsplit(newurl)
        upgraded = (old.scheme, to.scheme) == ("http", "https")
        if new is not None and (
            to.netloc != old.netloc or (to.scheme != old.scheme and not upgraded)
        ):
            new.remove_header("Authorization")
        return new
