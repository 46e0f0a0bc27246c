"""Latent arithmetic (Radford et al. 2015, sec. 6.3): `pipeline sample RUN --pick NAME=I,J
--arithmetic "A - B + C"`: groups of the tiles of a numbered grid, averaged in z, combined, the
result decoded with the label kept or changed; a trained generator of the real anime sample."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.errors import PipelineError
from pipeline.tasks.generation.arithmetic import combine, parse_expression, parse_picks
from tests.shard_checks import assert_one_line_error


def test_expressions_picks_and_the_sum_of_group_means():
    assert parse_expression("smiling_woman - neutral_woman + neutral_man") == [
        (1, "smiling_woman"), (-1, "neutral_woman"), (1, "neutral_man"),
    ]  # fmt: skip
    assert parse_expression("-a+b") == [(-1, "a"), (1, "b")]
    for bad in ("a -", "a b", "a * b", ""):
        with pytest.raises(PipelineError, match="joined by"):
            parse_expression(bad)
    assert parse_picks(["a=0,1", "b=2"], 4) == {"a": [0, 1], "b": [2]}
    with pytest.raises(PipelineError, match="index 9 is not a tile of the --n 4 grid"):
        parse_picks(["a=9"], 4)
    with pytest.raises(PipelineError, match="NAME=I,J,K"):
        parse_picks(["a=x"], 4)
    z = torch.randn(6, 5)
    groups = {"a": [0, 1], "b": [2], "c": [3, 4, 5]}
    result, _ = combine(z, parse_expression("a - b + c"), groups)
    assert torch.allclose(result, z[[0, 1]].mean(0) - z[2] + z[[3, 4, 5]].mean(0))
    with pytest.raises(PipelineError, match="names 'd', which no --pick gives"):
        combine(z, parse_expression("a - d"), groups)


@pytest.fixture(scope="module")
def generator(tmp_path_factory):
    """A 1-epoch ACGAN of the anime sample (hair and eyes), as a checkpoint file."""
    from pipeline.training.config import load_train_config
    from pipeline.training.runner import LocalContext, run_worker
    from tests.conftest import require_shared
    from tests.train_fixtures import TINY, anime_dataset

    require_shared("anime-mlds2018")
    folder = tmp_path_factory.mktemp("arithmetic")
    data = anime_dataset(folder / "data")
    config = load_train_config(
        "acgan", options={"data.dataset": str(data), "workers": 1, "epochs": 1, **TINY}
    )
    run_worker(config, LocalContext(folder / "run"), str(data))
    return next((folder / "run").rglob("checkpoint.pt"))


def test_numbered_grid_then_arithmetic_on_its_tiles(cli, generator, tmp_path):
    plain, numbered = tmp_path / "plain.png", tmp_path / "numbered.png"
    assert cli("sample", generator, "--n", "16", "--out", plain).exit_code == 0
    result = cli("sample", generator, "--n", "16", "--numbered", "--out", numbered)
    assert result.exit_code == 0, result.output
    assert Image.open(numbered).height > Image.open(plain).height  # the index captions

    out = tmp_path / "sum.png"
    args = ["sample", generator, "--n", "16", "--pick", "a=0,1,2", "--pick", "b=3",
            "--pick", "c=4,5", "--arithmetic", "a - b + c", "--out", out]  # fmt: skip
    result = cli(*args)
    assert result.exit_code == 0, result.output
    grid = np.asarray(Image.open(out).convert("RGB"))
    tile = 64 + 2  # 32 px drawn at 2x
    assert (grid.shape[1] - 2) // tile == 8  # a row of 8 (3 groups, the result, padding)
    changed = tmp_path / "blonde.png"
    result = cli(*args[:-1], changed, "--result-class", "hair=blonde")
    assert result.exit_code == 0, result.output
    # Only the result's label changed: its tile moves far more than the group averages',
    # which move a little only through G's batch statistics (decoded as one batch).
    row = slice(2, 2 + 64)
    moved = np.abs(np.asarray(Image.open(changed).convert("RGB")).astype(int) - grid)
    groups, result = moved[row, 2 : 2 + 3 * tile].mean(), moved[row, 2 + 3 * tile : 2 + 4 * tile]
    assert result.mean() > 2 * groups, (result.mean(), groups)


def test_bad_arithmetic_input_is_one_line(cli, generator, tmp_path):
    out = tmp_path / "x.png"
    result = cli("sample", generator, "--pick", "a=0", "--out", out)
    assert_one_line_error(result, "--pick and --result-class go with --arithmetic")
    result = cli("sample", generator, "--arithmetic", "a - b", "--pick", "a=0", "--out", out)
    assert_one_line_error(result, "names 'b', which no --pick gives")
    result = cli("sample", generator, "--n", "8", "--arithmetic", "a", "--pick", "a=8",
                 "--out", out)  # fmt: skip
    assert_one_line_error(result, "index 8 is not a tile of the --n 8 grid")
    result = cli("sample", generator, "--arithmetic", "a", "--pick", "a=0", "--out", out,
                 "--result-class", "hair=plaid")  # fmt: skip
    assert_one_line_error(result, "no class 'plaid' in group hair")
    assert not out.exists()
