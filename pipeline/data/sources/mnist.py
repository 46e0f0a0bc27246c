"""MNIST in its original idx files (LeCun, Cortes and Burges), as `pipeline ingest mnist`.

The release is four files, gzipped or not: `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
`t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte` (the Kaggle spelling `train-images.idx3-ubyte`
is accepted too). An idx file is a big-endian header, magic 0x00000803 (uint8, 3 dims) for
images and 0x00000801 (uint8, 1 dim) for labels, one uint32 per dimension, then the data. A
split (`train`, `test`) exists when its images file does; its labels file must hold as many
labels, digits 0..9. A labels file without its images is reported in the notes, not an error.
Gzip is recognised by content: browsers often save a decompressed download under the `.gz` name.

The images are one channel (mode "L"), resized from 28 to the dataset size with Lanczos and no
crop. The decoded arrays are NOT shipped to the worker processes (60,000 x 28 x 28 is 47 MB,
pickled once per worker): a worker re-reads its split's images file on first use, which costs
a fraction of a second, and checks that it is still the file the plan read (same sha256). The
labels (one byte per image) travel with the source.
"""

from __future__ import annotations

import hashlib
import zlib
from pathlib import Path

import numpy as np

from pipeline.data import limits
from pipeline.data.sources.base import Plan, Record, Source, fingerprint
from pipeline.data.transforms import Recipe
from pipeline.errors import PipelineError

URL = "http://yann.lecun.com/exdb/mnist/"
MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"
SPLITS = {"train": "train", "test": "t10k"}  # split -> file name prefix
IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801
CLASSES = [str(d) for d in range(10)]


def where_to_get() -> str:
    return f"get the idx files from {URL} or a mirror such as {MIRROR}"


def locate(root: str | Path | None) -> Path:
    """The MNIST folder: `root`, or `<data dir>/mnist`; a `PipelineError` when it is missing."""
    from pipeline.settings import data_dir

    path = Path(root).expanduser() if root is not None else data_dir() / "mnist"
    if not path.is_dir():
        what = "is not a folder" if path.exists() else "does not exist"
        raise PipelineError(
            f"MNIST folder {path} {what}; {where_to_get()} and pass --root DIR "
            "(the folder that holds them)"
        )
    return path.resolve()


def find_file(root: Path, prefix: str, kind: str) -> Path | None:
    """`<prefix>-<kind>-idxN-ubyte`, plain or .gz (or the `.idxN-ubyte` spelling)."""
    ndim = 3 if kind == "images" else 1
    for name in (f"{prefix}-{kind}-idx{ndim}-ubyte", f"{prefix}-{kind}.idx{ndim}-ubyte"):
        for candidate in (root / name, root / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def read_idx(path: Path, magic: int) -> tuple[np.ndarray, str]:
    """The uint8 array in idx file `path` and the sha256 of the file's bytes."""
    try:
        data = limits.read_file(path, MAX_IDX_BYTES)
    except limits.TooLarge:
        raise PipelineError(
            f"{path} is over {MAX_IDX_BYTES >> 20} MiB: not an MNIST idx file"
        ) from None
    except OSError as exc:
        raise PipelineError(f"cannot read {path}: {exc.strerror or exc}") from None
    digest = hashlib.sha256(data).hexdigest()
    if data[:2] == b"\x1f\x8b":
        try:
            data = limits.gunzip(data, MAX_IDX_BYTES)
        except limits.TooLarge:
            raise PipelineError(
                f"{path} decompresses to over {MAX_IDX_BYTES >> 20} MiB: not an MNIST idx file"
            ) from None
        except EOFError:
            raise PipelineError(
                f"{path} is a truncated gzip file; download it again ({where_to_get()})"
            ) from None
        except (OSError, zlib.error) as exc:
            raise PipelineError(
                f"{path} is a corrupt gzip file ({exc}); download it again"
            ) from None
    kind = "images" if magic == IMAGES_MAGIC else "labels"
    ndim = magic & 0xFF
    if len(data) < 4:
        raise PipelineError(
            f"{path} is truncated ({len(data)} bytes, shorter than an idx "
            "header); download it again"
        )
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        other = {IMAGES_MAGIC: "an idx images file", LABELS_MAGIC: "an idx labels file"}
        what = other.get(found, "not an idx file")
        if data[:1] == b"<":
            what += " but a web page (a failed download?)"
        raise PipelineError(
            f"{path} is {what} (magic number 0x{found:08x}), expected MNIST "
            f"{kind} (0x{magic:08x}); check the file"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise PipelineError(f"{path} is truncated inside its header; download it again")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims))
    body = len(data) - header
    if body < expected:
        shape = " x ".join(f"{d:,}" for d in dims)
        raise PipelineError(
            f"{path} is truncated: its header declares {shape} bytes of {kind} "
            f"({expected:,} bytes) but only {body:,} follow; download it again"
        )
    if body > expected:
        raise PipelineError(
            f"{path} has {body - expected:,} bytes more than its header declares "
            "(not an MNIST idx file?); download it again"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims), digest


# MNIST's largest file (the training images) is 47 MB unpacked: a file far over that is
# something else, and is refused before it fills memory.
MAX_IDX_BYTES = 256 * 2**20


class MnistSource(Source):
    """MNIST's idx files: `train` and `test` splits (those whose images file is present)."""

    kind = "mnist"

    def __init__(self, root: str | Path, size: int = 32):
        self.root = locate(root)
        self.size = size
        self._files: dict[str, Path] = {}  # split -> images file
        self._digests: dict[str, str] = {}  # split -> sha256 of the images file
        self._counts: dict[str, int] = {}
        self._labels: dict[str, np.ndarray | None] = {}
        self._images: dict[str, np.ndarray] = {}  # loaded lazily in workers

    def default_name(self, size: int) -> str:
        return f"mnist-{size}"

    def plan(self, limit: int | None = None) -> Plan:
        notes: list[str] = []
        counts: dict[str, int] = {}
        parts = []
        files: dict[str, dict] = {}
        for split, prefix in SPLITS.items():
            images_path = find_file(self.root, prefix, "images")
            labels_path = find_file(self.root, prefix, "labels")
            labels = labels_digest = None
            if labels_path is not None:
                labels, labels_digest = read_idx(labels_path, LABELS_MAGIC)
                if labels.size and labels.max() > 9:
                    where = int(np.argmax(labels > 9))
                    raise PipelineError(
                        f"{labels_path} holds label {labels[where]} at index "
                        f"{where}: not a digit 0..9 (not MNIST?)"
                    )
            if images_path is None:
                if labels_path is not None:
                    counts[f"{split}_labels_without_images"] = len(labels)
                    notes.append(
                        f"{labels_path.name} ({len(labels):,} labels) has no "
                        f"{prefix}-images-idx3-ubyte(.gz) next to it: no {split} split; "
                        f"put the images file in {self.root} to ingest it"
                    )
                continue
            images, images_digest = read_idx(images_path, IMAGES_MAGIC)
            if labels is None:
                notes.append(
                    f"{images_path.name} has no {prefix}-labels-idx1-ubyte(.gz) next to "
                    f"it: the {split} split has null labels"
                )
                counts[f"{split}_images_without_labels"] = len(images)
            elif len(labels) != len(images):
                raise PipelineError(
                    f"{labels_path} holds {len(labels):,} labels but "
                    f"{images_path.name} holds {len(images):,} images; the "
                    "files do not belong together (download them again)"
                )
            n = len(images) if limit is None else min(limit, len(images))
            self._files[split] = images_path
            self._digests[split] = images_digest
            self._counts[split] = n
            self._labels[split] = None if labels is None else labels[:n].copy()
            self._images[split] = images
            counts[f"{split}_images"] = len(images)
            files[split] = {
                "images": images_path.name,
                "labels": labels_path.name if labels_path else None,
                "shape": list(images.shape[1:]),
            }
            parts.append([split, images_path.name, images_digest, labels_digest])
        if not self._files:
            raise PipelineError(
                f"no MNIST images files in {self.root} (train-images-idx3-ubyte.gz "
                f"or t10k-images-idx3-ubyte.gz); {where_to_get()} and pass --root"
            )
        labelled = any(labels is not None for labels in self._labels.values())
        return Plan(
            splits=dict(self._counts),
            recipe=Recipe(size=self.size, mode="L", crop="none"),
            fingerprint=fingerprint(self.kind, parts),
            columns=[_label_column()] if labelled else [],
            labels=(
                {"groups": [{"name": "label", "column": "label", "classes": CLASSES}]}
                if labelled
                else None
            ),
            description={"root": str(self.root), "files": files},
            notes=notes,
            counts=counts,
        )

    def read(self, split: str, index: int) -> Record:
        images = self._images.get(split)
        if images is None:
            images, digest = read_idx(self._files[split], IMAGES_MAGIC)
            if digest != self._digests[split]:
                raise PipelineError(f"{self._files[split]} changed while it was ingested; rerun")
            self._images[split] = images
        labels = self._labels[split]
        values = {"label": None if labels is None else int(labels[index])}
        return Record(key=f"{split}-{index:05d}", payload=images[index], values=values)

    def close(self) -> None:
        self._images.clear()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_images": {}}


def _label_column():
    import pyarrow as pa

    from pipeline.data.shards import Column

    return Column("label", pa.int16(), doc="the digit, an index into labels.groups[label].classes")
