"""Small real datasets for training tests: the anime sample (hair/eye labels) at 32 px."""

from __future__ import annotations

from pathlib import Path

from pipeline.data.ingest import IngestOptions, ingest
from pipeline.data.sources.images import ImageFolderSource
from tests.sample_data import SHARED

ANIME = SHARED / "anime-mlds2018" / "extra_data"


def anime_dataset(folder: Path, size: int = 32, val: float = 0.0) -> Path:
    """The 566 real anime faces with hair and eye groups, ingested at `size` px (`val`: that
    fraction held out as a val split, 64 images at 0.15)."""
    out = folder / (f"anime-{size}" + (f"-val{val}" if val else ""))
    if not (out / "manifest.json").exists():
        ingest(
            ImageFolderSource(ANIME, ANIME / "tags.csv", size=size, val=val),
            IngestOptions(out=str(out), size=size, workers=1),
        )
    return out


def celeba_dataset(folder: Path, size: int, limit: int) -> Path:
    """The first `limit` real CelebA sample faces, ingested at `size` px."""
    from pipeline.data.sources.celeba import CelebaSource

    out = folder / f"celeba-{size}"
    ingest(CelebaSource(SHARED / "celeba", size=size),
           IngestOptions(out=str(out), size=size, workers=2, limit=limit))  # fmt: skip
    return out


TINY = {  # a DCGAN small enough for CPU tests
    "model.width_g": 16,
    "model.width_d": 16,
    "model.z_dim": 32,
    "batch_size": 32,
}
