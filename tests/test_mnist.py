"""`pipeline ingest mnist`: the real idx sample (test split only, train labels without images),
and idx files that are wrong in each of the ways the source must explain."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pipeline.data.sources.mnist import MnistSource
from tests.shard_checks import (
    assert_one_line_error,
    hashes_by_workers,
    manifest_of,
    measured_command,
    read_plain,
)


def parse_idx(path: Path) -> np.ndarray:
    """An idx file read by hand: big-endian header, then uint8 data."""
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    magic = magic if magic is not None else 0x00000800 | array.ndim
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture(scope="module")
def t10k_images() -> np.ndarray:
    from tests.conftest import require_shared

    return parse_idx(require_shared("mnist", "t10k-images-idx3-ubyte.gz"))


@pytest.fixture(scope="module")
def t10k_labels() -> np.ndarray:
    from tests.conftest import require_shared

    return parse_idx(require_shared("mnist", "t10k-labels-idx1-ubyte.gz"))


def small_mnist(folder: Path, images: np.ndarray, labels: np.ndarray, gz: bool = True) -> Path:
    """A folder with a t10k split of the given arrays (real MNIST slices)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in (("t10k-images-idx3-ubyte", images), ("t10k-labels-idx1-ubyte", labels)):
        data = idx_bytes(array)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data, mtime=0))
        else:
            (folder / name).write_bytes(data)
    return folder


# -- the real sample -----------------------------------------------------------------------


def test_real_sample_test_split(cli, mnist_root, tmp_path, t10k_images, t10k_labels):
    out = Path(os.environ["PIPELINE_DATA"]) / "mnist-32"  # the default name and place
    result = cli("ingest", "mnist", "--root", mnist_root, "--workers", "1")
    assert result.exit_code == 0, result.output

    manifest = manifest_of(out)
    assert manifest["name"] == "mnist-32"
    assert list(manifest["splits"]) == ["test"]
    assert (manifest["image"]["height"], manifest["image"]["channels"]) == (32, 1)
    assert manifest["recipe"]["mode"] == "L" and manifest["recipe"]["crop"] == "none"
    assert manifest["labels"]["groups"] == [
        {"name": "label", "column": "label", "classes": [str(d) for d in range(10)]}
    ]
    assert manifest["counts"]["train_labels_without_images"] == 60_000
    assert any(
        "train-labels-idx1-ubyte.gz" in note and "no train split" in note
        for note in manifest["notes"]
    )
    assert "train-labels-idx1-ubyte.gz" in result.stdout

    table = read_plain(out / "test")
    assert table.num_rows == 10_000
    assert table.schema.field("image").type == pa.binary(32 * 32)
    assert table.schema.field("label").type == pa.int16()
    assert table.column("key")[0].as_py() == "test-00000"
    assert np.array_equal(table.column("label").to_numpy(), t10k_labels)

    from PIL import Image

    pixels = np.frombuffer(b"".join(table.column("image").to_pylist()), np.uint8)
    pixels = pixels.reshape(-1, 32, 32)
    for i in range(0, 10_000, 97):
        direct = Image.fromarray(t10k_images[i]).resize((32, 32), Image.Resampling.LANCZOS)
        difference = np.abs(pixels[i].astype(int) - np.asarray(direct, dtype=int))
        assert difference.max() <= 1, i


def test_workers_reload_the_images_lazily(mnist_root, tmp_path):
    """The arrays are not pickled to the workers, and more workers change no byte."""
    import pickle

    source = MnistSource(mnist_root, size=28)
    source.plan()
    assert len(pickle.dumps(source)) < 100_000  # labels only, not 7.8 MB of images
    hashes = hashes_by_workers(
        lambda: MnistSource(mnist_root, size=28), tmp_path, size=28, limit=600, shard_rows=256
    )
    assert hashes[0] == hashes[1] and len(hashes[0]) == 3


def test_plain_and_kaggle_spelled_files(tmp_path, t10k_images, t10k_labels):
    """Uncompressed files, the `.idx3-ubyte` spelling, and a `.gz` name over plain bytes."""
    root = small_mnist(tmp_path / "plain", t10k_images[:20], t10k_labels[:20], gz=False)
    assert MnistSource(root).plan().splits == {"test": 20}

    root = tmp_path / "kaggle"
    root.mkdir()
    (root / "train-images.idx3-ubyte").write_bytes(idx_bytes(t10k_images[:30]))
    (root / "train-labels-idx1-ubyte.gz").write_bytes(idx_bytes(t10k_labels[:30]))  # not gzip
    plan = MnistSource(root).plan()
    assert plan.splits == {"train": 30} and not plan.notes


# -- what can be wrong ---------------------------------------------------------------------


def test_missing_root_says_where_to_get_mnist(cli, tmp_path):
    result = cli("ingest", "mnist")
    assert_one_line_error(result, str(tmp_path / "data" / "mnist"), "yann.lecun.com", "--root")
    result = cli("ingest", "mnist", "--root", tmp_path)
    assert_one_line_error(result, "no MNIST images files", "--root")


def break_images(root: Path, how: str, t10k_labels: np.ndarray) -> None:
    images = root / "t10k-images-idx3-ubyte.gz"
    data = gzip.decompress(images.read_bytes())
    if how == "labels file as images":
        shutil.copy(root / "t10k-labels-idx1-ubyte.gz", images)
    elif how == "not idx":
        images.write_bytes(gzip.compress(b"<html>404 Not Found</html>" + data))
    elif how == "truncated":
        images.write_bytes(gzip.compress(data[:-100]))
    elif how == "truncated gzip":
        compressed = images.read_bytes()
        images.write_bytes(compressed[: len(compressed) // 2])
    elif how == "count mismatch":
        (root / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(t10k_labels[:19])))


@pytest.mark.parametrize(
    "how, words",
    [
        ("labels file as images", ["t10k-images-idx3-ubyte.gz", "idx labels file", "0x00000803"]),
        ("not idx", ["not an idx file", "magic"]),
        ("truncated", ["truncated", "20 x 28 x 28", "15,580"]),
        ("truncated gzip", ["truncated gzip"]),
        ("count mismatch", ["19 labels", "20 images"]),
    ],
)
def test_bad_files_fail_with_one_line(cli, tmp_path, t10k_images, t10k_labels, how, words):
    root = small_mnist(tmp_path / "mnist", t10k_images[:20], t10k_labels[:20])
    break_images(root, how, t10k_labels)
    out = tmp_path / "out"
    result = cli("ingest", "mnist", "--root", root, "--out", out)
    assert_one_line_error(result, *words)
    assert not out.exists()


def test_a_gzip_bomb_is_refused_before_it_fills_memory(tmp_path, t10k_images, t10k_labels):
    root = small_mnist(tmp_path / "mnist", t10k_images[:20], t10k_labels[:20])
    images = root / "t10k-images-idx3-ubyte.gz"
    header = gzip.decompress(images.read_bytes())[:16]
    with gzip.open(images, "wb", compresslevel=9) as stream:  # 1 GiB of zeros in ~1 MB
        stream.write(header)
        for _ in range(1024):
            stream.write(bytes(2**20))
    assert images.stat().st_size < 2**21
    done, peak_mib = measured_command("ingest", "mnist", "--root", root, "--out", tmp_path / "o")
    assert_one_line_error(done, "decompresses to over 256 MiB: not an MNIST idx file")
    assert peak_mib < 700  # the old gunzip held the whole GiB
    assert not (tmp_path / "o").exists()
