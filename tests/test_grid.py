"""Sample grids: a conditional model's rows named in a band on the left (one class per row),
so a reader can tell the blonde row from the pink one."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.grid import make_grid


def tiles(rows: int, cols: int, side: int = 32) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, size=(rows * cols, side, side, 3), dtype=np.uint8)


def dark(region: np.ndarray) -> int:
    return int((region.min(axis=-1) < 100).sum())


def test_row_labels_add_a_band_with_each_rows_name():
    images = tiles(3, 4)
    plain = make_grid(images, nrow=4, padding=2, scale=2)
    named = make_grid(images, nrow=4, padding=2, scale=2, row_labels=["blonde", "pink", "aqua"])
    assert named.height == plain.height
    band = named.width - plain.width
    assert 64 <= band <= 3 * 64  # between one and three tiles wide
    pixels = np.asarray(named)
    assert (pixels[:, band + 2 :][: plain.height, : plain.width - 2] ==
            np.asarray(plain)[:, 2:]).all()  # fmt: skip
    cell = 64 + 2
    for row in range(3):  # text in the band, at the height of each row
        assert dark(pixels[2 + row * cell : 2 + row * cell + 64, :band]) > 10, row
    assert dark(pixels[:, :band]) > 0 and dark(np.asarray(plain)[:, :2]) == 0


def test_a_label_per_row_is_required():
    with pytest.raises(ValueError, match="2 row labels for 3 rows"):
        make_grid(tiles(3, 4), nrow=4, row_labels=["a", "b"])
