"""A run's storage that waits out an outage: a pyarrow filesystem whose calls, when the store
is unreachable, are tried again until it is back (up to PIPELINE_STORAGE_WAIT_S, default
600 s) instead of failing the run.

Why: with `PIPELINE_RUNS` in a bucket, Ray Train writes every checkpoint and its own
bookkeeping (`checkpoint_manager_snapshot.json`) there. Measured with Ray 2.60 and a
SeaweedFS store stopped for 40 s in the middle of a 2-worker run: the controller's snapshot
write raised `OSError ... NETWORK_CONNECTION`, which Ray Train treats as a controller error,
not a worker failure, so FailureConfig's restarts never happen and the run ends FAILED at
its third epoch. A store that is away for a while (a restart, a failover, a network blip)
should cost the run a delay, not the run.

    fs = waiting(pafs.S3FileSystem(...), "s3://pipeline/runs")   # hand it to Ray's RunConfig

Only a run in progress waits: a command checks its locations first with the plain
filesystem (`pipeline.storage`), so a wrong endpoint or bucket is still one line at once.
Errors that are no outage (access denied, not found, a bad path) are raised at once.
"""

from __future__ import annotations

import os
import tempfile
import time

import pyarrow as pa
import pyarrow.fs as pafs

from pipeline import console
from pipeline.errors import PipelineError, one_line

# What an S3 client (pyarrow's AWS SDK) says when the store cannot be reached or is busy.
TRANSIENT = (
    "NETWORK_CONNECTION",
    "curlCode",
    "Could not connect",
    "Connection refused",
    "SERVICE_UNAVAILABLE",
    "SLOW_DOWN",
    "SlowDown",
    "REQUEST_TIMEOUT",
    "INTERNAL_FAILURE",
    "timed out",
)
SPOOL_BYTES = 64 * 2**20  # an upload kept in memory up to this, then in a temporary file


def wait_s() -> float:
    """How long one storage call may wait for the store to come back (PIPELINE_STORAGE_WAIT_S)."""
    value = os.environ.get("PIPELINE_STORAGE_WAIT_S", "")
    try:
        seconds = float(value) if value else 600.0
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise PipelineError(f"PIPELINE_STORAGE_WAIT_S={value!r} is not a number of seconds")
    return seconds


def is_transient(error: BaseException) -> bool:
    """An outage (try again later) rather than a mistake (access denied, not found)."""
    if isinstance(error, FileNotFoundError | PermissionError | NotADirectoryError):
        return False
    return isinstance(error, OSError) and any(word in str(error) for word in TRANSIENT)


class Patience:
    """Calls `fn` until it succeeds, the error is no outage, or `limit_s` has passed since the
    first failure; says one line when the store goes away and one when it is back."""

    def __init__(self, where: str, limit_s: float | None = None, say=None):
        self.where = where
        self.limit_s = wait_s() if limit_s is None else limit_s
        self.say = say or (lambda line: console.say(line, err=True))

    def call(self, what: str, fn, *args):
        first = None
        delay = 0.5
        while True:
            try:
                result = fn(*args)
            except OSError as error:
                if not is_transient(error):
                    raise
                now = time.monotonic()
                if first is None:
                    first = now
                    self.say(
                        f"storage {self.where} unreachable ({what}): waiting for it, up to "
                        f"{self.limit_s:.0f} s (PIPELINE_STORAGE_WAIT_S)"
                    )
                if now - first + delay > self.limit_s:
                    raise OSError(
                        f"storage {self.where} still unreachable after "
                        f"{now - first:.0f} s ({what}): {one_line(error)}"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            if first is not None:
                self.say(f"storage {self.where} is back after {time.monotonic() - first:.0f} s")
            return result


class _SpooledUpload:
    """An output stream that keeps what is written and uploads it whole at close, again from
    the start when the store drops the connection half-way."""

    def __init__(self, inner: pafs.FileSystem, path: str, metadata, patience: Patience):
        self.inner, self.path, self.metadata, self.patience = inner, path, metadata, patience
        self.spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
        self.closed = False

    def write(self, data) -> int:
        return self.spool.write(data)

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.spool.tell()

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.patience.call(f"writing {self.path}", self._upload)
        finally:
            self.spool.close()

    def _upload(self) -> None:
        self.spool.seek(0)
        with self.inner.open_output_stream(self.path, metadata=self.metadata) as stream:
            while block := self.spool.read(8 * 2**20):
                stream.write(block)


class _ResumingRead:
    """An input file that, when the store drops it half-way, opens the object again and goes on
    from the byte it had reached (a checkpoint read while the store restarts; a first read on a
    pooled connection to a server that has just come back)."""

    def __init__(self, inner: pafs.FileSystem, path: str, patience: Patience, open_first):
        self.inner, self.path, self.patience = inner, path, patience
        self.file = patience.call(f"reading {path}", open_first, path)
        self.offset = 0
        self.closed = False

    def _file(self):
        if self.file is None:  # dropped: random access, to start where the last read ended
            self.file = self.inner.open_input_file(self.path)
            self.file.seek(self.offset)
        return self.file

    def _attempt(self, fn):
        try:
            return fn(self._file())
        except OSError:
            if self.file is not None:
                self.file.close()
            self.file = None
            raise

    def read(self, nbytes: int = -1) -> bytes:
        def read(f):
            return f.read() if nbytes is None or nbytes < 0 else f.read(nbytes)

        data = self.patience.call(f"reading {self.path}", self._attempt, read)
        self.offset += len(data)
        return data

    def seek(self, position: int, whence: int = 0) -> int:
        if whence == 1:
            position += self.offset
        elif whence == 2:
            position += self.size()
        self.offset = position
        if self.file is not None and self.file.seekable():
            self.file.seek(position)
        elif self.file is not None:  # a stream cannot seek: the next read opens a file
            self.file.close()
            self.file = None
        return position

    def size(self) -> int:
        info = self.patience.call(f"reading {self.path}", self.inner.get_file_info, self.path)
        return info.size

    def tell(self) -> int:
        return self.offset

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed and self.file is not None:
            self.file.close()
        self.closed = True


class WaitingHandler(pafs.FileSystemHandler):
    """`FileSystemHandler` over another pyarrow filesystem, each call through `Patience`.
    Picklable (Ray sends it to its controller and workers): the inner filesystem pickles, and
    the wait is read again where it is unpickled."""

    def __init__(self, inner: pafs.FileSystem, where: str):
        self.inner, self.where = _synchronous(inner), where
        self.patience = Patience(where)

    def __reduce__(self):
        return WaitingHandler, (self.inner, self.where)

    def __eq__(self, other):
        return isinstance(other, WaitingHandler) and self.inner.equals(other.inner)

    def __ne__(self, other):
        return not self == other

    def _call(self, what: str, fn, *args):
        return self.patience.call(what, fn, *args)

    def get_type_name(self) -> str:
        return self.inner.type_name

    def normalize_path(self, path):
        return self.inner.normalize_path(path)

    def get_file_info(self, paths):
        return self._call(f"reading {paths[0] if paths else ''}", self.inner.get_file_info, paths)

    def get_file_info_selector(self, selector):
        return self._call(f"listing {selector.base_dir}", self.inner.get_file_info, selector)

    def create_dir(self, path, recursive):
        self._call(f"creating {path}", lambda: self.inner.create_dir(path, recursive=recursive))

    def delete_dir(self, path):
        self._call(f"deleting {path}", self.inner.delete_dir, path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self._call(
            f"deleting {path}",
            lambda: self.inner.delete_dir_contents(path, missing_dir_ok=missing_dir_ok),
        )

    def delete_root_dir_contents(self):
        self._call("deleting /", lambda: self.inner.delete_dir_contents("/", accept_root_dir=True))

    def delete_file(self, path):
        self._call(f"deleting {path}", self.inner.delete_file, path)

    def move(self, src, dest):
        self._call(f"moving {src}", self.inner.move, src, dest)

    def copy_file(self, src, dest):
        self._call(f"copying {src}", self.inner.copy_file, src, dest)

    def open_input_stream(self, path):
        read = _ResumingRead(self.inner, path, self.patience, self.inner.open_input_stream)
        return pa.PythonFile(read, mode="r")

    def open_input_file(self, path):
        read = _ResumingRead(self.inner, path, self.patience, self.inner.open_input_file)
        return pa.PythonFile(read, mode="r")

    def open_output_stream(self, path, metadata):
        return pa.PythonFile(_SpooledUpload(self.inner, path, metadata, self.patience), mode="w")

    def open_append_stream(self, path, metadata):
        return self._call(
            f"appending {path}", lambda: self.inner.open_append_stream(path, metadata=metadata)
        )


def _synchronous(fs: pafs.FileSystem) -> pafs.FileSystem:
    """An S3 filesystem that uploads on the calling thread. pyarrow closes a Python stream on
    its IO thread pool, and an S3 stream's close waits for its background part uploads on the
    same pool: with `copy_files(use_threads=True)` (Ray's upload of Tune's state) every pool
    thread ended up waiting in a close, and the sweep hung (apache/arrow#32372 is the same
    deadlock; Ray avoids it for a plain S3FileSystem only)."""
    if not isinstance(fs, pafs.S3FileSystem):
        return fs
    rebuild, (options,) = fs.__reduce__()
    return rebuild({**options, "background_writes": False})


def waiting(fs: pafs.FileSystem, where: str) -> pafs.FileSystem:
    """`fs` waiting out outages; `where` names the store in its console lines."""
    return pafs.PyFileSystem(WaitingHandler(fs, where))


def name_of_store(uri: str) -> str:
    """A store as its console lines name it: scheme://bucket, and the endpoint it is at."""
    scheme, rest = uri.split("://", 1)
    bucket = f"{scheme}://{rest.split('/', 1)[0]}"
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    return f"{bucket} at {endpoint}" if endpoint else bucket


def ray_storage(location: str) -> dict:
    """Ray's `storage_path` (and `storage_filesystem`) for a runs location: a URI's path on
    a filesystem that waits out outages; a local folder as it is."""
    from pipeline import storage

    if not storage.is_uri(location):
        return {"storage_path": str(location)}
    r = storage.remote(location)
    return {"storage_path": r.path, "storage_filesystem": waiting(r.fs, name_of_store(r.uri))}


def remote(uri: str):
    """`pipeline.storage.remote(uri)` on a filesystem that waits out outages (a run's own
    writes: its checkpoints)."""
    from dataclasses import replace

    from pipeline import storage

    r = storage.remote(uri)
    return replace(r, fs=waiting(r.fs, name_of_store(r.uri)))
