"""The shard reader: random access, rank slices, per-epoch shuffles, torch batches."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.data.ingest import IngestOptions, ingest
from pipeline.data.reader import ShardDataset
from pipeline.data.sources.lsun import LsunSource
from pipeline.errors import PipelineError
from tests.shard_checks import read_plain


@pytest.fixture(scope="module")
def bedroom(lsun_lmdb, tmp_path_factory):
    out = tmp_path_factory.mktemp("reader") / "bedroom-32"
    ingest(
        LsunSource("bedroom", lsun_lmdb, size=32),
        IngestOptions(out=str(out), size=32, workers=1, shard_rows=45),
    )
    return out


def test_rows_match_plain_pyarrow(bedroom):
    data = ShardDataset(bedroom)
    assert len(data) == 200 and data.shape == (32, 32, 3)
    plain = read_plain(bedroom / "train")
    for i in (0, 44, 45, 199, -1):
        row = data[i]
        expected = np.frombuffer(plain.column("image")[i].as_py(), np.uint8).reshape(32, 32, 3)
        assert np.array_equal(row["image"], expected)
        assert row["key"] == plain.column("key")[i].as_py()


def test_images_are_zero_copy_views_of_the_mapped_shards(bedroom):
    data = ShardDataset(bedroom)
    view = data._images[0]
    assert not view.flags.owndata and not view.flags.writeable


def test_ranks_get_disjoint_equal_slices_reshuffled_each_epoch(bedroom):
    data = ShardDataset(bedroom)
    loaders = [data.loader(batch_size=16, seed=3, rank=r, world_size=3) for r in range(3)]
    slices = [set(loader.indices()) for loader in loaders]
    assert all(len(s) == 200 // 3 for s in slices)
    assert not (slices[0] & slices[1]) and not (slices[1] & slices[2])
    first = loaders[0].indices().copy()
    loaders[0].set_epoch(1)
    assert not np.array_equal(first, loaders[0].indices())
    loaders[0].set_epoch(0)
    assert np.array_equal(first, loaders[0].indices())  # same seed and epoch: same order
    assert len(loaders[0]) == (200 // 3) // 16


def test_torch_batches(bedroom):
    import torch

    data = ShardDataset(bedroom)
    loader = data.loader(batch_size=32, seed=0)
    batches = list(loader)
    assert len(batches) == 6
    assert batches[0]["image"].dtype == torch.uint8
    assert batches[0]["image"].shape == (32, 32, 32, 3)
    rows = loader.indices()[:32]
    assert torch.equal(batches[0]["image"], torch.from_numpy(data.take(rows)["image"]))


def test_encoded_shards_decode_to_the_same_size(lsun_lmdb, tmp_path):
    out = tmp_path / "png"
    ingest(
        LsunSource("bedroom", lsun_lmdb, size=16),
        IngestOptions(out=str(out), size=16, workers=1, encoding="png", limit=20, max_bad=5),
    )
    raw = tmp_path / "raw"
    ingest(
        LsunSource("bedroom", lsun_lmdb, size=16),
        IngestOptions(out=str(raw), size=16, workers=1, limit=20, max_bad=5),
    )
    png, pixels = ShardDataset(out), ShardDataset(raw)
    assert len(png) == len(pixels)
    assert np.array_equal(png.take([0, 5])["image"], pixels.take([0, 5])["image"])  # lossless


def test_bad_requests(bedroom, tmp_path):
    with pytest.raises(PipelineError, match="no split 'val'"):
        ShardDataset(bedroom, "val")
    with pytest.raises(PipelineError, match="too few"):
        ShardDataset(bedroom).loader(batch_size=128, world_size=2)
    with pytest.raises(PipelineError, match="does not exist"):
        ShardDataset(tmp_path / "nothing")
    (tmp_path / "half").mkdir()
    with pytest.raises(PipelineError, match="no manifest.json"):
        ShardDataset(tmp_path / "half")


def test_verify_detects_a_changed_shard(lsun_lmdb, tmp_path):
    out = tmp_path / "d"
    ingest(
        LsunSource("bedroom", lsun_lmdb, size=16),
        IngestOptions(out=str(out), size=16, workers=1, limit=20, max_bad=5),
    )
    shard = next((out / "train").glob("*.arrow"))
    blob = bytearray(shard.read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # in the pixels: the structure stays valid
    shard.write_bytes(bytes(blob))
    with pytest.raises(PipelineError, match="sha256"):
        ShardDataset(out, verify=True)
