"""Reading shards for training: random access, rank slices, per-epoch shuffles, torch batches.

Fetched in the training process itself, from memory-mapped shards: with raw encoding the
images are a zero-copy numpy view of the mapped file, and a batch is one fancy-index per
shard touched. That measured ~450k images/s at 64 px, against ~90k with DataLoader workers
(which only add pickling here) and ~15k with Ray Data streaming (every batch passes through
Ray's object store; benchmarks/loader.py measures the reader against DataLoader workers).
Never hand a mapped table to DataLoader workers: open the dataset inside each process.

    data = ShardDataset("data/celeba-64", split="train")
    loader = data.loader(batch_size=64, seed=0, rank=rank, world_size=world_size)
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for batch in loader:            # {"image": uint8 NHWC tensor, "label": int64, ...}
            ...
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.data import shard_check, shards
from pipeline.errors import PipelineError
from pipeline.settings import resolve_dataset

MISSING = -1  # the value of a null label or attribute in numpy / torch batches


class ShardDataset:
    """One split of a dataset, memory-mapped. Rows are addressed 0..len-1 across shards."""

    def __init__(self, root: str | Path, split: str = "train", *, verify: bool = True):
        """`verify`: check each shard's sha256 once per file identity on this node
        (`pipeline.data.shard_check`); its structure is checked on every open."""
        from pipeline.data.staging import local_copy

        self.root = local_copy(resolve_dataset(root))
        self.manifest = shards.read_manifest(self.root)
        splits = self.manifest["splits"]
        if split not in splits:
            raise PipelineError(
                f"dataset {self.root.name} has no split {split!r}; it has: {', '.join(splits)}"
            )
        self.split = split
        image = self.manifest["image"]
        self.shape = (image["height"], image["width"], image["channels"])
        self.encoding = image["encoding"]
        self.column_names: list[str] = []
        self._images: list = []
        self._keys: list[pa.Array] = []
        parts: dict[str, list[np.ndarray]] = {}
        counts = []
        for shard in splits[split]["shards"]:
            path = self.root / shard["file"]
            batch = shard_check.open_checked(path, shard, self.manifest)
            if verify:
                shard_check.hashed_once(path, shard["sha256"])
            if shard["rows"] == 0:
                continue
            counts.append(batch.num_rows)
            self._keys.append(batch.column("key"))
            self._images.append(self._image_view(batch.column("image")))
            for name in batch.schema.names[2:]:
                parts.setdefault(name, []).append(_numeric_view(batch.column(name)))
        # Labels and attributes are small (bytes per row): one array each, indexed directly.
        self._columns = {name: np.concatenate(arrays) for name, arrays in parts.items()}
        self.column_names = list(self._columns)
        self.offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        batch = self.take(np.array([index % len(self)]), keys=True)
        return {name: value[0] for name, value in batch.items()}

    @property
    def labels(self) -> dict | None:
        return self.manifest.get("labels")

    def take(
        self,
        indices: Sequence[int] | np.ndarray,
        columns: Sequence[str] | None = None,
        keys: bool = False,
    ) -> dict[str, np.ndarray]:
        """Rows `indices` as numpy arrays: `image` (N, H, W, C) uint8 plus the extra columns."""
        indices = np.asarray(indices, dtype=np.int64)
        shard_ids = np.searchsorted(self.offsets, indices, side="right") - 1
        local = indices - self.offsets[shard_ids]
        images = np.empty((len(indices), *self.shape), dtype=np.uint8)
        # Row by row: a batch of a big dataset touches ~100 shards, and one boolean mask per
        # shard cost 3x more than these copies (benchmarks/loader.py).
        fetch = self._images if self.encoding == "raw" else None
        for row, (s, i) in enumerate(zip(shard_ids.tolist(), local.tolist(), strict=True)):
            images[row] = fetch[s][i] if fetch is not None else self._decode(s, i)
        out = {"image": images}
        for name in self.column_names if columns is None else columns:
            out[name] = self._columns[name][indices]
        if keys:
            out["key"] = np.array(
                [self._keys[s][int(i)].as_py() for s, i in zip(shard_ids, local, strict=True)]
            )
        return out

    def loader(self, batch_size: int, **options) -> ShardLoader:
        """A `ShardLoader` over this split; `options` as `ShardLoader` takes them (seed, rank,
        world_size, shuffle, drop_last, columns, rows)."""
        return ShardLoader(self, batch_size, **options)

    def _image_view(self, column: pa.Array):
        if self.encoding != "raw":
            return column
        row = int(np.prod(self.shape))
        data = np.frombuffer(column.buffers()[1], dtype=np.uint8)
        start = column.offset * row
        return data[start : start + len(column) * row].reshape(len(column), *self.shape)

    def _decode(self, shard: int, index: int) -> np.ndarray:
        from PIL import Image

        image = Image.open(io.BytesIO(self._images[shard][int(index)].as_py()))
        if image.size != (self.shape[1], self.shape[0]):  # before decoding: never a bomb
            raise PipelineError(
                f"{self.root}/{self.split} shard {shard} row {index} holds a {image.size[0]}x"
                f"{image.size[1]} image, not the dataset's {self.shape[1]}x{self.shape[0]}"
            )
        pixels = np.asarray(image.convert(self.manifest["image"]["mode"]), dtype=np.uint8)
        return pixels.reshape(self.shape)


class ShardLoader:
    """Batches of one rank's slice of a split, reshuffled each epoch (call `set_epoch`).

    Every rank gets the same number of rows (the tail that does not divide is dropped), so
    DDP ranks run the same number of steps. The shuffle depends only on (seed, epoch): all
    ranks draw the same permutation and take disjoint strided slices of it.
    """

    def __init__(
        self,
        dataset: ShardDataset,
        batch_size: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        drop_last: bool = True,
        columns: Sequence[str] | None = None,
        rows: np.ndarray | None = None,
    ):
        """`rows`: the subset of the split to draw from (e.g. the rows that have labels)."""
        if batch_size < 1:
            raise PipelineError(f"batch size {batch_size} must be at least 1")
        if not 0 <= rank < world_size:
            raise PipelineError(f"rank {rank} is outside world size {world_size}")
        self.dataset, self.batch_size = dataset, batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.shuffle, self.drop_last, self.columns = shuffle, drop_last, columns
        self.epoch = 0
        self.rows = np.arange(len(dataset)) if rows is None else np.asarray(rows, dtype=np.int64)
        self.rows_per_rank = len(self.rows) // world_size
        if self.rows_per_rank < (batch_size if drop_last else 1):
            raise PipelineError(
                f"{dataset.root.name}/{dataset.split} has {len(self.rows)} usable rows: too few "
                f"for {world_size} rank(s) with batches of {batch_size}"
            )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self) -> np.ndarray:
        """This rank's rows for the current epoch, in order."""
        order = self.rows
        if self.shuffle:
            order = order[np.random.default_rng([self.seed, self.epoch]).permutation(len(order))]
        return order[self.rank : self.rows_per_rank * self.world_size : self.world_size]

    def __len__(self) -> int:
        if self.drop_last:
            return self.rows_per_rank // self.batch_size
        return -(-self.rows_per_rank // self.batch_size)

    def __iter__(self) -> Iterator[dict]:
        import torch

        indices = self.indices()
        for b in range(len(self)):
            rows = indices[b * self.batch_size : (b + 1) * self.batch_size]
            batch = self.dataset.take(rows, self.columns)
            yield {name: torch.from_numpy(value) for name, value in batch.items()}

    def numpy_batches(self) -> Iterator[dict]:
        indices = self.indices()
        for b in range(len(self)):
            yield self.dataset.take(
                indices[b * self.batch_size : (b + 1) * self.batch_size], self.columns
            )


def _numeric_view(column: pa.Array) -> np.ndarray:
    """A column as numpy, nulls as MISSING: ints stay ints, fixed-size lists become 2-D."""
    if pa.types.is_fixed_size_list(column.type):
        width = column.type.list_size
        flat = column.flatten() if column.null_count == 0 else None
        if flat is not None:
            return flat.to_numpy(zero_copy_only=False).reshape(len(column), width)
        filled = np.full(
            (len(column), width), MISSING, dtype=column.type.value_type.to_pandas_dtype()
        )
        valid = column.is_valid().to_numpy(zero_copy_only=False)
        if valid.any():
            values = column.filter(column.is_valid()).flatten().to_numpy(zero_copy_only=False)
            filled[valid] = values.reshape(-1, width)
        return filled
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        if column.null_count:
            column = column.fill_null(MISSING)
        return column.to_numpy(zero_copy_only=False)
    if pa.types.is_boolean(column.type):
        return column.fill_null(False).to_numpy(zero_copy_only=False)
    return np.array(column.to_pylist(), dtype=object)
