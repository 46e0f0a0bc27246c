"""The interface between a dataset source and the ingest engine."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from pipeline.data.shards import Column
from pipeline.data.transforms import Recipe
from pipeline.errors import PipelineError


@dataclass
class Record:
    """One source record as a worker reads it: bytes or pixels, plus its column values."""

    key: str
    payload: Any
    values: dict[str, Any] = field(default_factory=dict)
    box: tuple | None = None


@dataclass
class Plan:
    """What a source holds, decided once in the main process before any worker starts.

    `splits` maps split name -> number of records, in the source's fixed order (the order
    decides which shard each record lands in, so it must not depend on anything but the input).
    `notes` are things the user must hear about (a truncated annotation file), `counts` the
    numbers behind them; both go to the manifest and the summary.
    """

    splits: dict[str, int]
    recipe: Recipe
    fingerprint: str
    columns: list[Column] = field(default_factory=list)
    labels: dict | None = None
    attributes: dict | None = None
    description: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


class Source(ABC):
    """A dataset source. Instances are pickled to worker processes: keep handles lazy."""

    kind: str = "source"

    @abstractmethod
    def default_name(self, size: int) -> str:
        """The dataset's folder name under the data dir, e.g. `celeba-64`."""

    @abstractmethod
    def plan(self, limit: int | None = None) -> Plan:
        """Enumerate the records (at most `limit` per split) and describe the dataset."""

    @abstractmethod
    def read(self, split: str, index: int) -> Record:
        """Read record `index` of `split` (called in worker processes)."""

    def close(self) -> None:  # noqa: B027 (optional hook: sources without handles skip it)
        """Release handles opened by `read` (LMDB environments, zip files)."""


def fingerprint(*parts: Any) -> str:
    """A stable hash of the given parts (strings, numbers, bytes, nested lists)."""
    digest = hashlib.sha256()

    def feed(part: Any) -> None:
        if isinstance(part, (list, tuple)):
            digest.update(b"[")
            for item in part:
                feed(item)
            digest.update(b"]")
        elif isinstance(part, bytes):
            digest.update(len(part).to_bytes(8, "little") + part)
        else:
            text = str(part).encode()
            digest.update(len(text).to_bytes(8, "little") + text)

    feed(list(parts))
    return digest.hexdigest()


def check_val(val: float) -> float:
    """`--val`: the fraction of a source's records to hold out as a `val` split."""
    if not 0.0 <= val < 1.0:
        raise PipelineError(f"--val {val} must be a fraction in [0, 1) of the images to hold out")
    return float(val)


def held_out_key(key: str, fraction: float) -> bool:
    """Whether the record `key` belongs to the held-out split: its hash as a number in [0, 1)
    below `fraction`. A hash, not a position: the same records are held out whatever order the
    source lists them in and whatever records it gains later."""
    if not fraction:
        return False
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction
