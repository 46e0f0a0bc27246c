"""A manifest is checked before anything is joined to a path or sized from it.

A dataset in a shared bucket or folder is written by whoever can write there, and its manifest
decides where a staged copy goes (`fingerprint`), which files are read and written (each
shard's `file`), what a run folder is called (`name`) and how much memory a reader maps
(`image`). The sha256 of a shard does not help: whoever writes the manifest writes the hash.
So every field the pipeline joins into a path or sizes memory from is checked here, against
exactly what ingest writes, and a manifest that differs is one line naming the field.

    check_manifest(json.loads(text), "data/celeba-64/manifest.json")
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from pipeline.errors import PipelineError

NAME = re.compile(r"[A-Za-z0-9][\w.-]{0,199}")  # a dataset's name: one plain folder name
SPLIT = re.compile(r"[A-Za-z0-9][\w-]{0,63}")
HEX64 = re.compile(r"[0-9a-f]{64}")
SHARD_FILE = r"{split}/shard-\d{{5}}-of-\d{{5}}\.arrow"
ENCODINGS = ("raw", "png", "jpeg", "webp")
MAX_SIDE = 8192  # pixels: far above any GAN dataset, far below a size that overflows a buffer
MAX_ROWS = 2**31  # per shard and per split
MAX_SHARD_BYTES = 2**40


def check_manifest(manifest, where: str) -> dict:
    """`manifest` when every field the pipeline relies on is as ingest writes it; otherwise a
    `PipelineError` naming `where` and the field."""

    def bad(field: str, why: str) -> PipelineError:
        return PipelineError(f"{where} is not a valid dataset manifest: {field} {why}")

    if not isinstance(manifest, dict):
        raise PipelineError(f"{where} is not a pipeline dataset manifest (not a JSON object)")
    name = manifest.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise bad("name", f"{_shown(name)} is not a plain folder name")
    fingerprint = manifest.get("fingerprint")
    if not isinstance(fingerprint, str) or not HEX64.fullmatch(fingerprint):
        raise bad("fingerprint", f"{_shown(fingerprint)} is not 64 hex digits")
    _check_image(manifest.get("image"), bad)
    splits = manifest.get("splits")
    if not isinstance(splits, dict) or not splits:
        raise bad("splits", "is not a mapping of split names")
    for split, entry in splits.items():
        if not SPLIT.fullmatch(split):
            raise bad("splits", f"has a split named {_shown(split)}")
        _check_split(split, entry, bad)
    for field, kind in (("source", dict), ("skipped", dict), ("bytes", int)):
        if not isinstance(manifest.get(field), kind):
            raise bad(field, "is missing or of the wrong type")
    if not isinstance(manifest["source"].get("kind"), str):
        raise bad("source.kind", "is missing")
    if not _count(manifest["skipped"].get("total")):
        raise bad("skipped.total", "is not a count")
    return manifest


def _check_image(image, bad) -> None:
    if not isinstance(image, dict):
        raise bad("image", "is missing")
    for side in ("height", "width"):
        if not _count(image.get(side)) or not 1 <= image[side] <= MAX_SIDE:
            raise bad(f"image.{side}", f"{_shown(image.get(side))} is not 1..{MAX_SIDE} pixels")
    if image.get("channels") not in (1, 3, 4):
        raise bad("image.channels", f"{_shown(image.get('channels'))} is not 1, 3 or 4")
    if image.get("encoding") not in ENCODINGS:
        raise bad("image.encoding", f"{_shown(image.get('encoding'))} is not one of {ENCODINGS}")


def _check_split(split: str, entry, bad) -> None:
    if not isinstance(entry, dict) or not isinstance(entry.get("shards"), list):
        raise bad(f"splits.{split}", "has no list of shards")
    if not _count(entry.get("rows")) or entry["rows"] > MAX_ROWS:
        raise bad(f"splits.{split}.rows", "is not a count")
    pattern = re.compile(SHARD_FILE.format(split=re.escape(split)))
    for i, shard in enumerate(entry["shards"]):
        field = f"splits.{split}.shards[{i}]"
        if not isinstance(shard, dict):
            raise bad(field, "is not an object")
        file = shard.get("file")
        if not isinstance(file, str) or not pattern.fullmatch(file):
            raise bad(f"{field}.file", f"{_shown(file)} is not {split}/shard-NNNNN-of-NNNNN.arrow")
        if not isinstance(shard.get("sha256"), str) or not HEX64.fullmatch(shard["sha256"]):
            raise bad(f"{field}.sha256", "is not 64 hex digits")
        for count, most in (("rows", MAX_ROWS), ("bytes", MAX_SHARD_BYTES)):
            if not _count(shard.get(count)) or shard[count] > most:
                raise bad(f"{field}.{count}", "is not a count")


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def relative_inside(relative: str, where: str) -> str:
    """`relative` (a path from a listing of a bucket or folder others write to) when it stays
    inside the folder it is joined to: no empty, `.` or `..` part, not absolute, no backslash.
    A `PipelineError` naming `where` otherwise."""
    parts = relative.split("/")
    if (
        not relative
        or "\\" in relative
        or "\x00" in relative
        or any(part in ("", ".", "..") for part in parts)
    ):
        raise PipelineError(f"{where} holds {_shown(relative)}, a path that leaves its folder")
    return relative


def joined_inside(folder: Path, relative: str, where: str) -> Path:
    """`folder / relative`, checked to stay inside `folder` (see `relative_inside`)."""
    path = folder.joinpath(*PurePosixPath(relative_inside(relative, where)).parts)
    if not path.resolve().is_relative_to(folder.resolve()):
        raise PipelineError(f"{where} holds {_shown(relative)}, a path that leaves its folder")
    return path
