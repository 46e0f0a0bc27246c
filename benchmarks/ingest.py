"""Ingest throughput: the parallel engine against a bare decode loop, and 2 workers against 1.

Input: an LSUN-format LMDB of the real CelebA sample photos (default all 3000), re-encoded as
LSUN ships them (short side 256, JPEG quality 75) by the test suite's builder.

Measured, each `--repeats` times, interleaved so that load drifting over the run hits all alike:
- ceiling: a bare loop in this one process that reads the records from the LMDB with a cursor
  and only decodes, crops and resizes them to 64 px with `pipeline.data.transforms.prepare` and
  the LSUN source's own Recipe: the work no ingest can avoid, with nothing around it;
- the real ingest, `pipeline.data.ingest.ingest(LsunSource, size 64, raw)`, with 1 worker (in
  process) and with 2 workers (forked: the engine forks when no other thread runs, see
  `pipeline.data.ingest._start_method`), each into a fresh folder, `--shard-rows` records per
  shard. Its rate over the whole call (planning, worker start-up, shard writing, fsync and
  hashing included) and over the manifest's `ingest_s` (everything but planning).

Goals (whole-run rates; ratios of the best runs, the table shows medians too):
- ingest(1 worker) / ceiling >= 0.85: the engine costs little beyond decoding;
- ingest(2 workers) / ingest(1 worker) >= 1.7 on a 2-core machine: it scales with cores.
And a project acceptance point: the shards of every 1-worker and 2-worker run are
byte-identical (equal sha256), as the engine promises that workers change speed, never bytes.

    python benchmarks/ingest.py                  # 3000 photos, 3 runs each (about 40 s)
    python benchmarks/ingest.py --copies 3       # 9000 records: a longer run
    python benchmarks/ingest.py --quick          # smoke run: 300 photos, 1 run each

The exit status is 1 when the shards differ; unmet ratio goals are reported, not failed
(a busy machine misses them).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import time
from pathlib import Path

from _common import (
    Measurement,
    add_options,
    build_lsun_lmdb,
    celeba_photos,
    print_machine,
    print_ratio,
    print_table,
    timed,
    workdir,
)

from pipeline.data.ingest import IngestOptions, ingest
from pipeline.data.sources.lsun import LsunSource, open_lmdb
from pipeline.data.transforms import Recipe, prepare

SIZE = 64
WORKER_COUNTS = (1, 2)


def bare_loop(lmdb_path: Path, recipe: Recipe) -> int:
    """Decode, crop and resize every record of the LMDB in this process; returns the count."""
    env = open_lmdb(lmdb_path)
    count = 0
    try:
        with env.begin(buffers=False) as txn:
            for _key, value in txn.cursor():
                prepare(value, recipe)
                count += 1
    finally:
        env.close()
    return count


def run_ingest(
    lmdb_path: Path, out: Path, workers: int, shard_rows: int, limit: int | None = None
) -> dict:
    """One real ingest into the fresh folder `out`; returns its manifest."""
    source = LsunSource("bedroom", lmdb_path, size=SIZE)
    options = IngestOptions(
        out=str(out), size=SIZE, encoding="raw", workers=workers, shard_rows=shard_rows, limit=limit
    )
    return ingest(source, options).manifest


def shard_hashes(out: Path, manifest: dict) -> dict[str, str]:
    """sha256 of every shard file, read back from disk and checked against the manifest."""
    hashes = {}
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            digest = hashlib.sha256((out / shard["file"]).read_bytes()).hexdigest()
            if digest != shard["sha256"]:
                sys.exit(f"error: {shard['file']} does not match the sha256 in its manifest")
            hashes[shard["file"]] = digest
    return hashes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_options(parser, images=3000, repeats=3)
    parser.add_argument(
        "--shard-rows",
        type=int,
        default=500,
        help="source records per shard (default 500: several shards)",
    )
    parser.add_argument(
        "--copies",
        type=int,
        default=1,
        help="store each photo this many times (default 1); e.g. 3 for a longer run",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.repeats = min(args.images, 300), 1
        args.shard_rows = min(args.shard_rows, 100)
    if min(args.repeats, args.shard_rows, args.copies) < 1:
        parser.error("--repeats, --shard-rows and --copies must be at least 1")
    records = args.images * args.copies

    celeba_photos(args.images)  # exits with a clear message when the sample is missing
    print_machine()
    with workdir() as tmp:
        lmdb_path = build_lsun_lmdb(tmp, args.images, args.copies)
        recipe = LsunSource("bedroom", lmdb_path, size=SIZE).plan().recipe
        print(
            f"recipe: {recipe.describe()}; raw encoding, {args.shard_rows} records per shard; "
            f"{args.repeats} run(s) of each measurement"
        )
        # Pay one-off lazy imports (pyarrow imports pandas on its first `pa.array`, ~0.25 s)
        # before timing, so that they do not land in whichever run happens to come first.
        run_ingest(lmdb_path, tmp / "warm-up", 1, args.shard_rows, limit=1)

        ceiling = Measurement("ceiling: bare prepare loop, 1 process")
        whole = {w: Measurement(f"ingest, {w} worker(s), whole run") for w in WORKER_COUNTS}
        working = {w: Measurement(f"ingest, {w} worker(s), excl. planning") for w in WORKER_COUNTS}
        plan_seconds: list[float] = []
        hashes: dict[str, dict[str, str]] = {}
        for run in range(args.repeats):
            ceiling.add(*timed(lambda: bare_loop(lmdb_path, recipe)))
            for workers in WORKER_COUNTS:
                out = tmp / f"out-{workers}w-run{run}"
                seconds, manifest = timed(
                    lambda out=out, workers=workers: run_ingest(
                        lmdb_path, out, workers, args.shard_rows
                    )
                )
                rows, timings = manifest["splits"]["train"]["rows"], manifest["timings"]
                if rows != records or timings["workers"] != workers:
                    sys.exit(
                        f"error: the ingest made {rows} rows with {timings['workers']} "
                        f"worker(s); expected {records} with {workers}"
                    )
                whole[workers].add(seconds, rows)
                working[workers].add(timings["ingest_s"], rows)
                plan_seconds.append(timings["plan_s"])
                hashes[out.name] = shard_hashes(out, manifest)
                shutil.rmtree(out)
            print(f"  run {run + 1}/{args.repeats} done ({time.strftime('%H:%M:%S')})")

    print()
    print_table([ceiling, whole[1], working[1], whole[2], working[2]])
    print(f"planning (listing the LMDB keys): {max(plan_seconds):.3f} s at most")
    print(
        "ratios use the best run of each; the goals apply to the whole-run rates"
        + (
            ""
            if os.cpu_count() == 2
            else f"; the 2-worker goal assumes 2 cores, this machine has {os.cpu_count()}"
        )
    )
    print()
    print_ratio("ingest(1 worker) / ceiling, whole run", whole[1].best / ceiling.best, 0.85)
    print_ratio("ingest(1 worker) / ceiling, excl. planning", working[1].best / ceiling.best, 0.85)
    print_ratio(
        "ingest(2 workers) / ingest(1 worker), whole run", whole[2].best / whole[1].best, 1.7
    )
    print_ratio(
        "ingest(2 workers) / ingest(1 worker), excl. planning",
        working[2].best / working[1].best,
        1.7,
    )

    first, *others = hashes.values()
    identical = all(h == first for h in others)
    print()
    print(
        f"shards byte-identical across all {len(hashes)} ingest runs (1 and 2 workers, "
        f"{len(first)} shards each, sha256): {'yes' if identical else 'NO'}"
    )
    if not identical:
        for name, h in hashes.items():
            print(f"  {name}: " + " ".join(f"{f.split('/')[-1]}={d[:12]}" for f, d in h.items()))
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
