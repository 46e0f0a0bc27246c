"""The shard format, what ingest writes and training reads: Arrow IPC files plus a manifest
written last.

A dataset is a folder: `manifest.json` and `<split>/shard-NNNNN-of-MMMMM.arrow`. Each shard is
one Arrow IPC file holding ONE record batch, uncompressed, so that a memory map of it gives
zero-copy numpy views of the pixels (several batches per file would make every random fetch a
`ChunkedArray.take` across chunks, about 50x slower than one index into a single batch).
Plain pyarrow reads it: `pyarrow.ipc.open_file(path).read_all()`.

Columns: `key` (the source's id), `image` (raw uint8 HxWxC as fixed_size_binary, or encoded
bytes), then the source's own columns (`label`, `attrs`, `identity`, ...). A shard's schema
metadata says which split, which source records it covers and which of them were skipped, so a
resumed ingest can rebuild the manifest from the shards themselves.

Shards are written under a working name and renamed when complete; the manifest goes last,
also atomically. Nothing here depends on how many processes produced the rows.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

FORMAT = "pipeline-shards"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Column:
    """An extra column a source adds to every row: name, Arrow type, and what it means."""

    name: str
    type: pa.DataType
    doc: str = ""


def image_type(size: int, channels: int, encoding: str) -> pa.DataType:
    if encoding == "raw":
        return pa.binary(size * size * channels)
    return pa.binary()


def shard_schema(image: pa.DataType, columns: list[Column], metadata: dict) -> pa.Schema:
    fields = [
        pa.field("key", pa.string(), nullable=False),
        pa.field("image", image, nullable=False),
    ]
    fields += [pa.field(c.name, c.type, nullable=True) for c in columns]
    return pa.schema(
        fields, metadata={k: json.dumps(v, sort_keys=True) for k, v in metadata.items()}
    )


def shard_name(index: int, count: int) -> str:
    return f"shard-{index:05d}-of-{count:05d}.arrow"


@dataclass
class ShardInfo:
    """One finished shard, as the manifest lists it."""

    file: str
    rows: int
    bytes: int
    sha256: str
    records: tuple[int, int]
    skipped: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "file": self.file,
            "rows": self.rows,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "records": list(self.records),
        }


def write_shard(path: Path, schema: pa.Schema, columns: dict[str, pa.Array]) -> None:
    """Write one shard as a single record batch under a working name, then rename it."""
    batch = pa.record_batch([columns[f.name] for f in schema], schema=schema)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        writer.write_batch(batch)
    _fsync(tmp)
    os.replace(tmp, path)


def read_shard_info(path: Path, root: Path) -> ShardInfo:
    """Rows, hash and record range of a finished shard (a resumed ingest trusts these)."""
    reader = pa.ipc.open_file(pa.memory_map(str(path)))
    meta = {k.decode(): json.loads(v) for k, v in (reader.schema.metadata or {}).items()}
    rows = sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))
    return ShardInfo(
        file=str(path.relative_to(root)),
        rows=rows,
        bytes=path.stat().st_size,
        sha256=sha256_file(path),
        records=tuple(meta["pipeline.records"]),
        skipped=meta.get("pipeline.skipped", []),
    )


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    _fsync(tmp)
    os.replace(tmp, path)


def read_manifest(root: str | Path) -> dict:
    """The manifest of the dataset at `root` (a folder or a URI); a `PipelineError` when there
    is none or it is bad."""
    from pipeline import storage
    from pipeline.data.validate import check_manifest
    from pipeline.errors import PipelineError

    if storage.is_uri(root):
        r = storage.remote(str(root))
        manifest = storage.read_json(r, r.at(MANIFEST))
        if manifest is None:
            raise PipelineError(
                f"dataset {r.uri} does not exist or is not finished (no {MANIFEST}); ingest it "
                f"with `pipeline ingest ... --out {r.uri}`"
            )
        path = f"{r.uri}/{MANIFEST}"
    else:
        path = Path(root) / MANIFEST
        if not path.is_file():
            if Path(root).is_dir():
                raise PipelineError(
                    f"{root} has no {MANIFEST}: it is not a finished dataset (an ingest that "
                    "did not complete? rerun it to resume)"
                )
            raise PipelineError(f"dataset {root} does not exist (see `pipeline datasets list`)")
        if path.stat().st_size > storage.MAX_JSON_BYTES:
            raise PipelineError(f"{path} is over {storage.MAX_JSON_BYTES >> 20} MiB: no manifest")
        try:
            manifest = json.loads(path.read_text())
        except ValueError as exc:  # not JSON, or not UTF-8
            why = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
            raise PipelineError(f"{path} is not valid JSON ({why}); re-run the ingest") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise PipelineError(f"{path} is not a pipeline dataset manifest")
    version = manifest.get("schema_version", 0)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise PipelineError(
            f"{path} has shard format version {version!r}, not one this pipeline understands "
            f"(up to {SCHEMA_VERSION}); upgrade pipeline"
        )
    return check_manifest(manifest, str(path))


def dataset_fingerprint(recipe: dict, splits: dict[str, list[ShardInfo]]) -> str:
    """A hash of what the dataset holds: its recipe and the hash of every shard."""
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode())
    for split in sorted(splits):
        for shard in splits[split]:
            digest.update(f"{split}/{shard.file}:{shard.sha256}".encode())
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())
