"""A shard is checked when it is opened, so a damaged or crafted one is one line, never a bus
error or a segfault in the middle of a run.

Measured before this check: one patched offset in a png-encoded shard ended `pipeline datasets
show` with SIGBUS, a patched key offset with SIGSEGV, a truncated shard with a raw
`ArrowInvalid` traceback, and overwritten pixel bytes passed silently. So, on open:

- the file must be one Arrow IPC record batch whose columns and row count are what the
  manifest says (`open_checked`); Arrow's full validation checks every offset against its
  buffer, which costs a pass over the offsets (not the pixels);
- its sha256 must be the manifest's, checked once per file identity (device, inode, size,
  modification time): the first open on a node hashes the file and leaves a marker in the
  cache, later opens only `stat` it (`hashed_once`). A staged copy was hashed as it arrived.

`pipeline datasets verify NAME` hashes every shard again, whatever the markers say.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa

from pipeline.data import shards
from pipeline.errors import PipelineError


def open_checked(path: Path, entry: dict, manifest: dict) -> pa.RecordBatch:
    """The one record batch of the shard at `path` (its manifest `entry`), memory-mapped and
    checked: readable, one batch, the manifest's rows and image column, offsets in bounds."""
    if not path.is_file():
        raise PipelineError(f"shard {path} is missing; re-run the ingest to restore it")
    try:
        reader = pa.ipc.open_file(pa.memory_map(str(path)))
        if reader.num_record_batches != 1:
            raise PipelineError(
                f"shard {path} has {reader.num_record_batches} record batches, expected 1; "
                "re-run the ingest"
            )
        batch = reader.get_batch(0)
        batch.validate(full=True)
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
        raise PipelineError(f"shard {path} is damaged ({_first_line(exc)}); {REPAIR}") from None
    if batch.num_rows != entry["rows"]:
        raise PipelineError(
            f"shard {path} holds {batch.num_rows} rows, its manifest says {entry['rows']}; {REPAIR}"
        )
    image = manifest["image"]
    pixels = image["height"] * image["width"] * image["channels"]
    expected = pa.binary(pixels) if image["encoding"] == "raw" else pa.binary()
    names = batch.schema.names
    if names[:2] != ["key", "image"] or batch.schema.field("image").type != expected:
        raise PipelineError(
            f"shard {path} does not hold the manifest's columns (key, image {expected}); {REPAIR}"
        )
    return batch


REPAIR = "re-run the ingest (`pipeline datasets verify` checks every shard)"


def hashed_once(path: Path, sha256: str) -> None:
    """A `PipelineError` when the file at `path` does not hash to `sha256`; hashed once per
    file identity on this node (a marker in the cache), since hashing a big dataset costs
    seconds to minutes and its shards do not change between runs."""
    from pipeline import storage

    stat = path.stat()
    identity = f"{path.resolve()}:{stat.st_dev}:{stat.st_ino}:{stat.st_size}:{stat.st_mtime_ns}"
    name = hashlib.sha256(f"{identity}:{sha256}".encode()).hexdigest()
    marker = storage.cache_dir() / "verified" / name[:2] / name
    if marker.is_file():
        return
    if shards.sha256_file(path) != sha256:
        raise PipelineError(
            f"shard {path} does not match its sha256 in the manifest (changed or damaged "
            f"since the ingest); {REPAIR}"
        )
    try:  # a cache that cannot be written costs a hash next time, nothing more
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    except OSError:
        pass


def verify(root: Path, say) -> int:
    """Check every shard of the dataset at `root` in full (structure, rows, sha256), saying
    one line per split and one per bad shard; the number of bad shards."""
    manifest = shards.read_manifest(root)
    bad = 0
    for split, entry in manifest["splits"].items():
        problems = 0
        for shard in entry["shards"]:
            path = root / shard["file"]
            try:
                open_checked(path, shard, manifest)
                if shards.sha256_file(path) != shard["sha256"]:
                    raise PipelineError(f"shard {path} does not match its sha256 in the manifest")
            except PipelineError as exc:
                say(f"  {exc}")
                problems += 1
        bad += problems
        verdict = "ok" if not problems else f"{problems} bad"
        say(f"{split}: {len(entry['shards'])} shards, {entry['rows']:,} rows: {verdict}")
    return bad


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
