"""Builders of test inputs from the real samples in ../shared/datasets."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

from PIL import Image

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
CELEBA_IMAGES = SHARED / "celeba" / "img_align_celeba"

BROKEN_RECORDS = {
    "f" * 40: b"this value is not an image",
    "e" * 40: b"",
}


def lsun_jpeg(path: Path) -> bytes:
    """A photo encoded the way LSUN ships it: short side 256, JPEG quality 75."""
    image = Image.open(path).convert("RGB")
    scale = 256 / min(image.size)
    image = image.resize(
        (round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC
    )
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=75)
    return buffer.getvalue()


def lsun_lmdb_from_celeba(path: Path, count: int, broken: bool = False) -> Path:
    """An LSUN-format LMDB (40-hex keys) of the first `count` CelebA sample photos.

    With `broken`, three bad records join them: not an image, an empty value, and a JPEG cut
    in half (keys listed in `broken_keys(path)`).
    """
    from pipeline.data.sources.lsun import write_lmdb

    photos = sorted(CELEBA_IMAGES.glob("*.jpg"))[:count]
    records = [(hashlib.sha1(p.name.encode()).hexdigest(), lsun_jpeg(p)) for p in photos]
    if broken:
        truncated = records[0][1][: len(records[0][1]) // 2]
        records += list(BROKEN_RECORDS.items()) + [("0" * 40, truncated)]
    return write_lmdb(path, records)


def broken_keys() -> set[str]:
    return set(BROKEN_RECORDS) | {"0" * 40}
