"""The parallel ingest engine: any `Source` -> Arrow shards + manifest.

How the work is cut, and why the bytes never depend on it:
- A split's records, in the source's fixed order, are cut into shards of `shard_rows`
  consecutive records: shard i holds records [i*S, (i+1)*S) minus the ones that failed to
  decode. Which records land in which shard is decided before any worker starts.
- Workers (processes, `--workers`, default all cores) decode, crop and resize chunks of a few
  dozen records; the main process receives the chunks in order, assembles each shard and writes
  it under a working name, renamed when complete. More or fewer workers change the speed,
  never a byte.
- A rerun after a kill finds the completed shards (final names only exist for complete
  files), checks they were made from the same source and options (`.ingest.json` holds that
  key), and processes only the missing ones. The manifest is written last, atomically.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import os
import shutil
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import pyarrow as pa

from pipeline import __version__
from pipeline.config import ConfigError
from pipeline.data import shards
from pipeline.data.output import STATE, claim_output, claim_remote, publish, remove_dataset
from pipeline.data.sources.base import Plan, Source, fingerprint
from pipeline.data.transforms import BadRecord, encode, prepare
from pipeline.errors import PipelineError, one_line

CHUNK_RECORDS = 64
TARGET_SHARD_BYTES = 128 * 2**20


@dataclass(frozen=True)
class IngestOptions:
    """Options every ingest shares (the source's own options live on the source)."""

    out: str | None = None
    size: int = 64
    encoding: Literal["raw", "png", "jpeg", "webp"] = "raw"
    quality: int = 95
    workers: int = 0
    limit: int | None = None
    max_bad: float = 0.05
    shard_rows: int = 0
    overwrite: bool = False

    def check(self) -> None:
        if not 8 <= self.size <= 1024:
            raise ConfigError(f"size={self.size} is out of range; choose 8..1024 pixels")
        if self.workers < 0:
            raise ConfigError(f"workers={self.workers} must be 0 (all cores) or more")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit={self.limit} must be at least 1")
        if not (math.isfinite(self.max_bad) and self.max_bad >= 0):
            raise ConfigError(
                f"max_bad={self.max_bad} must be a number >= 0 (a fraction < 1 or a count)"
            )
        if self.shard_rows < 0:
            raise ConfigError(f"shard_rows={self.shard_rows} must be 0 (automatic) or more")
        if not 1 <= self.quality <= 100:
            raise ConfigError(f"quality={self.quality} must be within 1..100")


@dataclass
class IngestResult:
    """What an ingest made: the dataset folder, its manifest, and how the run went."""

    path: Path | str  # a folder, or the URI of a dataset in a bucket
    manifest: dict
    up_to_date: bool = False
    resumed_shards: int = 0
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)


class Progress(Protocol):
    def start(self, description: str, total: int, completed: int) -> None: ...
    def advance(self, n: int) -> None: ...


def ingest(
    source: Source, options: IngestOptions, progress: Progress | None = None
) -> IngestResult:
    """Ingest `source` into Arrow shards under `options.out` (default: the data root), a local
    folder or a URI. To a URI, the shards are written to a local working folder (which a
    killed run resumes), then uploaded; the manifest is uploaded last, as the commit point."""
    from pipeline import storage
    from pipeline.settings import data_root

    options.check()
    started = time.perf_counter()
    plan = source.plan(options.limit)
    total = sum(plan.splits.values())
    if total == 0:
        raise PipelineError(f"the {source.kind} source holds no images: nothing to ingest")
    recipe = plan.recipe
    target = options.out or storage.join(data_root(), source.default_name(recipe.size))
    if not storage.is_uri(target):
        target = str(Path(target).expanduser().resolve())
    row_bytes = recipe.size * recipe.size * recipe.channels
    shard_rows = options.shard_rows or max(256, TARGET_SHARD_BYTES // row_bytes)
    key = fingerprint(
        shards.SCHEMA_VERSION,
        plan.fingerprint,
        recipe.describe(),
        options.encoding,
        options.quality if options.encoding in ("jpeg", "webp") else 0,
        shard_rows,
        options.limit,
        [(c.name, str(c.type)) for c in plan.columns],
    )
    # The folder (or the URI's last part) is the dataset's name, as `pipeline datasets` lists it.
    job = _Job(source, plan, options, storage.name_of(target), key, shard_rows, started)
    if not storage.is_uri(target):
        return _write(job, Path(target), progress)

    bucket = storage.remote(target)
    storage.check_bucket(bucket)
    existing = claim_remote(bucket, key, options.overwrite)
    if existing is not None:
        return IngestResult(path=target, manifest=existing, up_to_date=True)
    work = storage.cache_dir() / "ingest" / storage.slug(target)
    result = _write(job, work, progress)
    publish(work, bucket, result.manifest, key)
    shutil.rmtree(work)
    return dataclasses.replace(result, path=target, up_to_date=False)


@dataclass(frozen=True)
class _Job:
    """One ingest, planned: what `_write` needs beside the folder."""

    source: Source
    plan: Plan
    options: IngestOptions
    name: str
    key: str
    shard_rows: int
    started: float


def _write(job: _Job, out: Path, progress: Progress | None) -> IngestResult:
    """The shards and the manifest of `job` in the local folder `out` (resumed where a killed
    run left it)."""
    source, plan, options, name, key = job.source, job.plan, job.options, job.name, job.key
    shard_rows, started, planned = job.shard_rows, job.started, time.perf_counter()
    total = sum(plan.splits.values())
    recipe = plan.recipe
    image_type = shards.image_type(recipe.size, recipe.channels, options.encoding)

    created = not out.exists()
    existing = claim_output(out, key, options.overwrite)
    if existing is not None:
        return IngestResult(path=out, manifest=existing, up_to_date=True)
    shards.write_json_atomic(out / STATE, {"ingest_key": key, "name": name, "source": source.kind})

    # Lay out every shard; keep the ones a killed run already finished.
    layout, done = _lay_out(out, plan.splits, shard_rows)
    resumed = len(done)
    bad_allowed = (
        int(options.max_bad) if options.max_bad >= 1 else math.floor(options.max_bad * total)
    )
    bad_seen = sum(len(info.skipped) for info in done.values())

    # Cut the missing shards into chunks for the workers.
    chunks = [
        (split, index, lo, min(stop, lo + CHUNK_RECORDS))
        for split, entries in layout.items()
        for index, start, stop in entries
        if (split, index) not in done
        for lo in range(start, stop, CHUNK_RECORDS)
    ]
    remaining = sum(hi - lo for _, _, lo, hi in chunks)

    workers = options.workers or os.cpu_count() or 1
    workers = max(1, min(workers, len(chunks)))
    state = (source, recipe, options.encoding, options.quality)
    pending: dict[tuple[str, int], list] = {}
    pool = None
    try:
        # The pool starts before the progress bar, whose refresh thread would rule out fork.
        if workers == 1:
            _init_worker(*state)
            results = map(_process_chunk, chunks)
        else:
            source.close()  # no open handle may be shared with forked workers
            pool = _start_method().Pool(workers, initializer=_init_worker, initargs=state)
            results = pool.imap(_process_chunk, chunks)
        if progress is not None:
            progress.start(f"ingest {name}", total, total - remaining)
        for result in results:
            split, index = result["split"], result["shard"]
            pending.setdefault((split, index), []).append(result)
            bad_seen += len(result["skipped"])
            if bad_seen > bad_allowed:
                first = result["skipped"][0]
                raise PipelineError(
                    f"{bad_seen} bad records, more than --max-bad allows ({bad_allowed}); "
                    f"e.g. {first['key']}: {first['reason']}. Is this the right source? "
                    "Raise --max-bad to accept them"
                )
            if progress is not None:
                progress.advance(result["stop"] - result["start"])
            entries = layout[split]
            _, start, stop = entries[index]
            if result["stop"] == stop:
                parts = pending.pop((split, index))
                done[split, index] = _write_shard(
                    out,
                    split,
                    index,
                    len(entries),
                    (start, stop),
                    parts,
                    plan,
                    options,
                    image_type,
                )
    except BaseException:
        if not done:  # nothing worth resuming: leave no trace of this run
            remove_dataset(out)
            if created:
                out.rmdir()
        raise
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        source.close()
    finished = time.perf_counter()

    split_infos = {s: [done[s, i] for i, _, _ in entries] for s, entries in layout.items()}
    manifest = _manifest(
        name,
        source,
        plan,
        options,
        key,
        shard_rows,
        split_infos,
        out,
        timings={
            "plan_s": round(planned - started, 3),
            "ingest_s": round(finished - planned, 3),
            "images_per_s": round(remaining / max(finished - planned, 1e-9), 1),
            "workers": workers,
        },
    )
    shards.write_json_atomic(out / shards.MANIFEST, manifest)
    (out / STATE).unlink()
    return IngestResult(
        path=out,
        manifest=manifest,
        resumed_shards=resumed,
        seconds=time.perf_counter() - started,
        warnings=list(plan.notes),
    )


Layout = dict[str, list[tuple[int, int, int]]]  # split -> (shard index, first, stop record)


def _lay_out(
    out: Path, splits: dict[str, int], shard_rows: int
) -> tuple[Layout, dict[tuple[str, int], shards.ShardInfo]]:
    """Every shard of every split, and the ones a killed run already finished (checked to
    cover the records they should); stale working files are removed."""
    layout: Layout = {}
    done: dict[tuple[str, int], shards.ShardInfo] = {}
    for split, n in splits.items():
        count = math.ceil(n / shard_rows)
        layout[split] = [(i, i * shard_rows, min(n, (i + 1) * shard_rows)) for i in range(count)]
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(".shard-*.tmp-*"):
            stale.unlink()
        for index, start, stop in layout[split]:
            path = folder / shards.shard_name(index, count)
            if path.exists():
                info = shards.read_shard_info(path, out)
                if info.records != (start, stop):
                    raise PipelineError(
                        f"{path} covers records {info.records}, expected "
                        f"{(start, stop)}; rerun with --overwrite"
                    )
                done[split, index] = info
    return layout, done


# -- workers -----------------------------------------------------------------------------


def _start_method():
    """fork when this process runs a single thread, else spawn.

    fork starts a worker in ~5 ms and shares the source (LSUN's key list: 116 MiB for bedroom)
    and the imported modules, where spawn pays ~0.25 s per worker, or ~2.5 s when the caller
    has imported torch. But fork copies locks held by other threads at that instant, so with
    any other thread alive (a progress bar, a Ray or MLflow client) spawn is the safe choice.
    Either way the shards are the same bytes.
    """
    if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


_WORKER: tuple | None = None


def _init_worker(source: Source, recipe, encoding: str, quality: int) -> None:
    global _WORKER
    _WORKER = (source, recipe, encoding, quality)


def _process_chunk(chunk: tuple[str, int, int, int]) -> dict:
    """Decode, crop, resize and encode records [lo, hi) of a split (in a worker process)."""
    source, recipe, encoding, quality = _WORKER
    split, shard, lo, hi = chunk
    keys, images, skipped = [], [], []
    values: dict[str, list] = {}
    for index in range(lo, hi):
        record = None
        try:
            record = source.read(split, index)
            pixels = prepare(record.payload, recipe, record.box)
        except BadRecord as exc:
            key = record.key if record is not None else exc.key
            skipped.append({"split": split, "key": key, "reason": str(exc)})
            continue
        except Exception as exc:  # noqa: BLE001 - one odd record must not end the ingest
            # A decoder's own error (Pillow's NotImplementedError for a DDS pixel format, a
            # zip's RuntimeError for an encrypted member) is that record's reason to be
            # skipped, counted against --max-bad like any other: a bug in a source shows up
            # as every record skipped with the same reason.
            key = record.key if record is not None else f"{split}[{index}]"
            reason = f"unreadable: {type(exc).__name__}: {one_line(exc)}"
            skipped.append({"split": split, "key": key, "reason": reason})
            continue
        keys.append(record.key)
        images.append(encode(pixels, encoding, quality))
        for name, value in record.values.items():
            values.setdefault(name, []).append(value)
    return {
        "split": split,
        "shard": shard,
        "start": lo,
        "stop": hi,
        "keys": keys,
        "images": images,
        "values": values,
        "skipped": skipped,
    }


# -- shards and manifest -----------------------------------------------------------------


def _write_shard(
    out: Path,
    split: str,
    index: int,
    count: int,
    records: tuple[int, int],
    parts: list[dict],
    plan: Plan,
    options: IngestOptions,
    image_type: pa.DataType,
) -> shards.ShardInfo:
    keys = [k for p in parts for k in p["keys"]]
    images = [b for p in parts for b in p["images"]]
    skipped = [s for p in parts for s in p["skipped"]]
    if options.encoding == "raw":
        image_array = pa.Array.from_buffers(
            image_type, len(images), [None, pa.py_buffer(b"".join(images))]
        )
    else:
        image_array = pa.array(images, type=image_type)
    columns = {"key": pa.array(keys, pa.string()), "image": image_array}
    for column in plan.columns:
        column_values = [v for p in parts for v in p["values"].get(column.name, [])]
        if len(column_values) != len(keys):
            raise AssertionError(
                f"source gave {len(column_values)} {column.name} for {len(keys)} rows"
            )
        columns[column.name] = pa.array(column_values, type=column.type)
    schema = shards.shard_schema(
        image_type,
        plan.columns,
        {
            "pipeline.format": shards.FORMAT,
            "pipeline.split": split,
            "pipeline.shard": [index, count],
            "pipeline.records": list(records),
            "pipeline.skipped": skipped,
            "pipeline.image": {
                "size": plan.recipe.size,
                "channels": plan.recipe.channels,
                "encoding": options.encoding,
            },
        },
    )
    path = out / split / shards.shard_name(index, count)
    shards.write_shard(path, schema, columns)
    return shards.ShardInfo(
        file=str(path.relative_to(out)),
        rows=len(keys),
        bytes=path.stat().st_size,
        sha256=shards.sha256_file(path),
        records=records,
        skipped=skipped,
    )


def _manifest(
    name: str,
    source: Source,
    plan: Plan,
    options: IngestOptions,
    key: str,
    shard_rows: int,
    split_infos: dict[str, list[shards.ShardInfo]],
    out: Path,
    timings: dict,
) -> dict:
    recipe = plan.recipe.describe()
    skipped = [s for infos in split_infos.values() for info in infos for s in info.skipped]
    reasons = Counter(s["reason"].split(":")[0] for s in skipped)
    return {
        "format": shards.FORMAT,
        "schema_version": shards.SCHEMA_VERSION,
        "name": name,
        "fingerprint": shards.dataset_fingerprint(recipe, split_infos),
        "ingest_key": key,
        "source": {"kind": source.kind, "fingerprint": plan.fingerprint, **plan.description},
        "image": {
            "height": plan.recipe.size,
            "width": plan.recipe.size,
            "channels": plan.recipe.channels,
            "mode": plan.recipe.mode,
            "encoding": options.encoding,
            "layout": "HWC uint8",
            **({"quality": options.quality} if options.encoding in ("jpeg", "webp") else {}),
        },
        "recipe": recipe,
        "columns": [
            {"name": "key", "type": "string"},
            {
                "name": "image",
                "type": str(
                    shards.image_type(plan.recipe.size, plan.recipe.channels, options.encoding)
                ),
            },
        ]
        + [{"name": c.name, "type": str(c.type), "doc": c.doc} for c in plan.columns],
        "labels": plan.labels,
        "attributes": plan.attributes,
        "shard_rows": shard_rows,
        "limit": options.limit,
        "splits": {
            split: {
                "rows": sum(i.rows for i in infos),
                "records": infos[-1].records[1] if infos else 0,
                "skipped": sum(len(i.skipped) for i in infos),
                "shards": [i.to_json() for i in infos],
            }
            for split, infos in split_infos.items()
        },
        "skipped": {
            "total": len(skipped),
            "reasons": dict(sorted(reasons.items())),
            "records": skipped,
        },
        "notes": plan.notes,
        "counts": plan.counts,
        "bytes": sum(i.bytes for infos in split_infos.values() for i in infos),
        "tool": {"name": "pipeline", "version": __version__, "pyarrow": pa.__version__},
        "timings": timings,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
