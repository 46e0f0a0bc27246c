"""Datasets at a URI, read from a node-local copy.

A dataset at `s3://...` is staged once per node into `PIPELINE_CACHE` (default
~/.cache/pipeline) under a file lock, so the workers of one node copy it once; every shard is
checked against the manifest's sha256 and the manifest is written last, so an interrupted copy
is finished by the next caller. It is then memory-mapped as a local dataset is: random reads
through S3 are two orders of magnitude slower than a memory map. A local dataset (a shared
mount included) is read in place.

The copy remembers where it came from (`origin.json`), so what is computed from it on one node
is put back beside the dataset for the others: the FID reference statistics
(`fetch_beside`, `put_beside`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pipeline import storage
from pipeline.data.shards import MANIFEST, read_manifest, sha256_file, write_json_atomic
from pipeline.data.validate import joined_inside
from pipeline.errors import PipelineError


def local_copy(location: str | os.PathLike, say: Callable[[str], None] | None = None) -> Path:
    """A dataset as a local folder: a local path as it is; a dataset at a URI copied once per
    node into the cache (each shard verified against the manifest's sha256; the manifest
    written last, so an interrupted copy is finished by the next caller)."""
    if not storage.is_uri(location):
        return Path(location)
    r = storage.remote(str(location))
    manifest = read_manifest(r.uri)
    folder = storage.cache_dir() / "datasets" / storage.slug(r.uri) / manifest["fingerprint"][:16]
    local_manifest = folder / MANIFEST
    with storage.file_lock(folder.with_name(folder.name + ".lock")):
        if local_manifest.is_file() and json.loads(local_manifest.read_text()) == manifest:
            if not (folder / ORIGIN).is_file():  # staged before copies remembered it
                write_json_atomic(folder / ORIGIN, {"uri": r.uri})
            return folder
        if say is not None:
            say(f"staging {r.uri} into {folder}")
        missing = [
            shard
            for split in manifest["splits"].values()
            for shard in split["shards"]
            if not _verified(folder / shard["file"], shard["sha256"])
        ]

        # Several objects at once: one stream at a time left the copy at about half of what
        # boto3's download_file reaches on the same objects (benchmarks/loader.py --staged).
        def copy(shard: dict) -> None:
            storage.download(r, r.at(shard["file"]), folder / shard["file"], shard["sha256"])

        with ThreadPoolExecutor(max_workers=max(1, min(COPIES_AT_ONCE, len(missing)))) as pool:
            list(pool.map(copy, missing))  # list: a failed copy raises here
        for relative, _size in storage.listing(r, r.at("stats")):  # cached FID reference statistics
            target = joined_inside(folder / "stats", relative, f"{r.uri}/stats")
            if not target.is_file():
                storage.download(r, r.at("stats", relative), target)
        write_json_atomic(folder / ORIGIN, {"uri": r.uri})
        write_json_atomic(local_manifest, manifest)
    return folder


COPIES_AT_ONCE = 8  # shard downloads in flight while staging


def _verified(target: Path, sha256: str) -> bool:
    """A shard an interrupted staging already copied whole."""
    return target.is_file() and sha256_file(target) == sha256


ORIGIN = "origin.json"  # in a staged copy: {"uri": where the dataset lives}


def origin(folder: str | os.PathLike) -> str | None:
    """The URI a staged copy was taken from; None for a dataset read in place."""
    try:
        return json.loads((Path(folder) / ORIGIN).read_text())["uri"]
    except (OSError, ValueError, KeyError):
        return None


def fetch_beside(folder: str | os.PathLike, relative: str) -> bool:
    """Copy `relative` (e.g. stats/fid-....npz) from beside the dataset a staged copy came from
    into the copy, when it is there (another node computed it since); False otherwise."""
    uri = origin(folder)
    if uri is None:
        return False
    r = storage.remote(uri)
    if not storage.exists(r, r.at(relative)):
        return False
    storage.download(r, r.at(relative), Path(folder) / relative)
    return True


def put_beside(folder: str | os.PathLike, relative: str, say: Callable[[str], None]) -> None:
    """Put a file computed from a staged copy (its `relative` path) back beside the dataset at
    its URI, for every other node; a bucket that refuses it costs only a recomputation there."""
    uri = origin(folder)
    if uri is None:
        return
    r = storage.remote(uri)
    try:
        storage.upload(Path(folder) / relative, r, r.at(relative))
    except PipelineError as exc:
        say(f"could not put {relative} beside {uri} ({exc})")
