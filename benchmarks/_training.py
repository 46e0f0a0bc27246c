"""What the training benchmarks share: the real CelebA sample ingested as one training split.

The sample's official partition puts 1800 of its 3000 photos in `train` and the rest in `val`
and `test`; a benchmark that trains wants them all (or an exact number of them, so that an
epoch is an exact number of steps). So the photos are ingested through the real CelebA source
(`pipeline.data.sources.celeba.CelebaSource`, DCGAN crop: the 108x108 centre box, Lanczos
to the size) from a small root built in a temporary folder: a link to the sample's image folder
and a partition file that lists the first `count` photos (sorted by name) as train.
"""

from __future__ import annotations

import time
from pathlib import Path

from _common import celeba_photos

from pipeline.data.ingest import IngestOptions, ingest
from pipeline.data.sources.celeba import CelebaSource


def celeba_train_set(folder: Path, size: int, count: int) -> Path:
    """Ingest the first `count` CelebA sample photos at `size` px, all as split `train`.

    Returns the dataset folder (raw encoding, as `pipeline ingest` writes by default).
    Exits with a message when the shared sample is missing.
    """
    photos = celeba_photos(count)  # exits with a clear message when the sample is missing
    root = folder / f"celeba-root-{count}"
    root.mkdir(parents=True, exist_ok=True)
    link = root / "img_align_celeba"
    if not link.exists():
        link.symlink_to(photos[0].parent, target_is_directory=True)
    # CRLF as the released file has it; 0 = train. Photos left out have no row: not ingested.
    (root / "list_eval_partition.txt").write_bytes(
        "".join(f"{photo.name} 0\r\n" for photo in photos).encode()
    )
    out = folder / f"celeba-{size}-{count}"
    started = time.perf_counter()
    result = ingest(
        CelebaSource(root, crop="dcgan", size=size, attrs=False, identity=False),
        IngestOptions(out=str(out), size=size),
    )
    rows = result.manifest["splits"]["train"]["rows"]
    if rows != count:
        raise SystemExit(f"error: the ingest made {rows} training rows, expected {count}")
    print(
        f"input: {count} CelebA sample photos, DCGAN crop, {size} px, ingested in "
        f"{time.perf_counter() - started:.1f} s"
    )
    return out
