"""Locations: a local path or a URI (`s3://bucket/prefix`, `gs://bucket/prefix`), through one
filesystem layer, `pyarrow.fs`.

    storage.is_uri("s3://pipeline/data/celeba-64")      # True
    storage.join("s3://pipeline/data", "celeba-64")     # "s3://pipeline/data/celeba-64"

S3-compatible servers are reached through the standard variables `AWS_ENDPOINT_URL`,
`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_DEFAULT_REGION` (boto3, Ray and MLflow
read the same ones). A URI is kept as a string end to end: `Path("s3://b/x")` is `s3:/b/x`.

A dataset at a URI is read from a node-local copy under `cache_dir()`
(`pipeline.data.staging`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError, one_line

_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
CHUNK = 8 * 2**20  # bytes per read while copying


def is_uri(location: str | os.PathLike) -> bool:
    return bool(_URI.match(str(location)))


def join(location: str | os.PathLike, *parts: str) -> str:
    """`location / parts` for a URI (with "/") or a local path."""
    if is_uri(location):
        return "/".join([str(location).rstrip("/"), *parts])
    return str(Path(location, *parts))


def name_of(location: str | os.PathLike) -> str:
    """The last part of a location: a dataset's name is its folder's."""
    return str(location).rstrip("/").rsplit("/", 1)[-1] if is_uri(location) else Path(location).name


def cache_dir() -> Path:
    """Node-local copies of remote datasets: `$PIPELINE_CACHE` or ~/.cache/pipeline."""
    return Path(os.environ.get("PIPELINE_CACHE", "~/.cache/pipeline")).expanduser().resolve()


@dataclass(frozen=True)
class Remote:
    """A URI opened with pyarrow: its filesystem and the path inside it."""

    uri: str
    fs: Any  # pyarrow.fs.FileSystem
    path: str

    def at(self, *parts: str) -> str:
        return "/".join([self.path, *parts])

    @property
    def bucket(self) -> str:
        return self.path.split("/", 1)[0]


def remote(uri: str) -> Remote:
    """Open `uri`; a one-line error for a scheme pyarrow does not know."""
    import pyarrow as pa
    import pyarrow.fs as pafs

    uri = str(uri).rstrip("/")
    try:
        fs, path = pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, ValueError, OSError) as error:
        raise PipelineError(
            f"{uri}: {one_line(error)}; a location is a local path or a URI such as "
            "s3://bucket/prefix"
        ) from None
    return Remote(uri, fs, path.rstrip("/"))


def explain(error: BaseException, uri: str) -> str:
    """What a failed call on `uri` means, on one line, with what to check."""
    text = one_line(error)
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "the default endpoint")
    if any(w in text for w in ("ACCESS_DENIED", "InvalidAccessKeyId", "SignatureDoesNotMatch")):
        hint = "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    elif any(w in text for w in ("NETWORK_CONNECTION", "curlCode", "Could not connect")):
        hint = f"is the storage server at {endpoint} up? (AWS_ENDPOINT_URL)"
    else:
        hint = "check the location and the AWS_* variables"
    return f"cannot use {uri}: {text}; {hint}"


@contextlib.contextmanager
def calling(uri: str) -> Iterator[None]:
    """Storage errors (OSError from pyarrow) as one-line PipelineErrors."""
    try:
        yield
    except OSError as error:
        raise PipelineError(explain(error, uri)) from None


def exists(r: Remote, path: str) -> bool:
    import pyarrow.fs as pafs

    with calling(r.uri):
        return r.fs.get_file_info(path).type != pafs.FileType.NotFound


def check_bucket(r: Remote) -> None:
    """Refuse a bucket that does not exist: some servers would create it on the first write,
    others fail half-way."""
    if not exists(r, r.bucket):
        endpoint = os.environ.get("AWS_ENDPOINT_URL", "the default endpoint")
        raise PipelineError(
            f"bucket {r.bucket!r} of {r.uri} does not exist at {endpoint}; create it first "
            f"(e.g. `aws s3 mb s3://{r.bucket}`) or fix the location"
        )


def check_location(location: str | os.PathLike) -> None:
    """A location a command is about to write: at a URI, its bucket must exist (one line if
    not, before anything starts); a local folder is made when needed."""
    if is_uri(location):
        check_bucket(remote(str(location)))


def listing(r: Remote, path: str) -> list[tuple[str, int]]:
    """(path relative to `path`, size) of every file under `path` (none when it is absent)."""
    import pyarrow.fs as pafs

    with calling(r.uri):
        infos = r.fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    return [
        (info.path[len(path) + 1 :], info.size) for info in infos if info.type == pafs.FileType.File
    ]


def children(r: Remote, path: str) -> set[str]:
    """The names directly under `path` (files and "folders" alike; none when it is absent)."""
    import pyarrow.fs as pafs

    with calling(r.uri):
        infos = r.fs.get_file_info(pafs.FileSelector(path, recursive=False, allow_not_found=True))
    return {info.base_name for info in infos}


def read_json(r: Remote, path: str) -> dict | None:
    """The JSON object at `path`, or None when there is none."""
    if not exists(r, path):
        return None
    with calling(r.uri), r.fs.open_input_stream(path) as stream:
        data = stream.read(MAX_JSON_BYTES + 1)  # bounded: others write to a shared bucket
    if len(data) > MAX_JSON_BYTES:
        raise PipelineError(f"{r.uri}/{path} is over {MAX_JSON_BYTES >> 20} MiB: not a manifest")
    try:
        data = json.loads(data)
    except ValueError as error:  # not JSON, or not UTF-8
        why = error.msg if isinstance(error, json.JSONDecodeError) else "not UTF-8"
        raise PipelineError(f"{r.uri}/{path} is not valid JSON ({why})") from None
    if not isinstance(data, dict):
        raise PipelineError(f"{r.uri}/{path} is not a JSON object")
    return data


# Each shard takes about 200 bytes of a manifest: a million shards fit; a file others wrote to
# fill the reader's memory does not.
MAX_JSON_BYTES = 256 * 2**20


def write_json(r: Remote, path: str, data: dict) -> None:
    """One PUT: an object store shows the whole object or none of it."""
    with calling(r.uri), r.fs.open_output_stream(path) as stream:
        stream.write(json.dumps(data, indent=1).encode())


def upload(local: Path, r: Remote, path: str) -> None:
    """Copy a local file to `path`; the object appears only once it is complete."""
    with calling(r.uri), open(local, "rb") as src, r.fs.open_output_stream(path) as dst:
        while block := src.read(CHUNK):
            dst.write(block)


def delete(r: Remote, path: str) -> None:
    with calling(r.uri):
        r.fs.delete_file(path)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between the processes of this node (the workers staging one dataset)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def download(r: Remote, path: str, target: Path, sha256: str | None = None) -> None:
    """Copy `path` to `target` via a working name (never a partial `target`); with `sha256`,
    bytes that do not hash to it are refused."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    digest = hashlib.sha256()
    try:
        with calling(r.uri), r.fs.open_input_stream(path) as src, open(tmp, "wb") as dst:
            while block := src.read(CHUNK):
                digest.update(block)
                dst.write(block)
        if sha256 is not None and digest.hexdigest() != sha256:
            raise PipelineError(
                f"{r.uri}/{path.removeprefix(r.path + '/')} does not match its sha256 in the "
                "manifest (a damaged or replaced upload?); re-run the ingest to that location"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def slug(uri: str) -> str:
    """A folder name for a URI: readable, and unique by a hash of the whole URI."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", uri.split("://", 1)[-1]).strip("_")[-80:]
    return f"{readable}-{hashlib.sha256(uri.encode()).hexdigest()[:8]}"
