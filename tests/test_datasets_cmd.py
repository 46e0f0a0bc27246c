"""`pipeline datasets list|show` and the sample grid."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.grid import make_grid
from tests.sample_data import lsun_lmdb_from_celeba


def test_list_and_show_with_grid(cli, tmp_path):
    lmdb_path = lsun_lmdb_from_celeba(tmp_path / "bedroom_train_lmdb", 20)
    assert cli("ingest", "lsun-bedroom", "--lmdb", lmdb_path, "--size", "32").exit_code == 0
    data = Path(os.environ["PIPELINE_DATA"])
    (data / "half-done").mkdir()
    (data / "half-done" / ".ingest.json").write_text('{"source": "celeba"}')
    listed = cli("datasets", "list")
    assert listed.exit_code == 0
    assert "lsun-bedroom-32" in listed.stdout and "train:20" in listed.stdout
    assert "incomplete" in listed.stdout
    grid = tmp_path / "grid.png"
    shown = cli("datasets", "show", "lsun-bedroom-32", "--grid", grid, "--n", "12")
    assert shown.exit_code == 0, shown.output
    assert "train 20 rows" in shown.stdout
    image = Image.open(grid)
    # 8 tiles of 32 px + padding in a row, 2 rows: no captions for an unlabelled dataset
    assert image.size == (8 * 34 + 2, 2 * 34 + 2)
    bad = cli("datasets", "show", "lsun-bedroom-32", "--grid", tmp_path / "grid.jpg")
    assert bad.exit_code == 1 and "must be a .png" in bad.stderr


def test_make_grid_places_tiles_in_rows():
    tiles = np.stack([np.full((4, 4, 3), v, np.uint8) for v in (10, 20, 30)])
    grid = np.asarray(make_grid(tiles, nrow=2, padding=1))
    assert grid.shape == (1 + 2 * 5, 1 + 2 * 5, 3)
    assert grid[1, 1, 0] == 10 and grid[1, 6, 0] == 20 and grid[6, 1, 0] == 30
    assert grid[6, 6, 0] == 255  # empty cell keeps the background


def test_anime_grid_is_captioned_with_hair_and_eyes(cli, anime_root, tmp_path):
    """The acceptance check: tags.csv becomes hair and eye labels, and the grid shows them."""
    from pipeline.data.catalog import captions
    from pipeline.data.reader import ShardDataset

    out = tmp_path / "anime-64"
    result = cli(
        "ingest", "images", "--root", anime_root, "--labels", anime_root / "tags.csv", "--out", out
    )
    assert result.exit_code == 0, result.output
    data = ShardDataset(out)
    batch = data.take(range(len(data)), keys=True)
    tags = {}
    for line in (anime_root / "tags.csv").read_text().splitlines():
        image_id, text = line.split(",", 1)
        hair, _, eyes, _ = text.split()
        tags[image_id] = f"{hair} hair\n{eyes} eyes"
    texts = captions(data.manifest, batch)
    for key, text in zip(batch["key"], texts, strict=True):
        assert text == tags[Path(key).stem], key
    grid = tmp_path / "anime.png"
    shown = cli("datasets", "show", out, "--grid", grid, "--n", "16")
    assert shown.exit_code == 0, shown.output
    assert "hair (label_hair): 12 classes" in shown.stdout
    width, height = Image.open(grid).size
    assert width == 8 * (64 + 2) + 2 and height > 2 * (64 + 2)  # captions under the tiles
