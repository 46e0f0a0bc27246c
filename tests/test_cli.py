"""The command line as a user meets it: help, speed of --help, errors as one line."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

from tests.shard_checks import assert_one_line_error


def test_help_lists_the_stages(cli):
    result = cli("--help")
    assert result.exit_code == 0
    for stage in ("ingest", "datasets", "quickstart"):
        assert stage in result.stdout
    result = cli("ingest", "--help")
    for command in ("lsun-bedroom", "lsun", "celeba", "images", "mnist"):
        assert command in result.stdout


def test_help_imports_no_heavy_framework():
    """`pipeline --help` must stay fast: no torch, ray, mlflow (or pyarrow) at import."""
    code = (
        "import sys; from stages.cli import app; "
        "from typer.testing import CliRunner; CliRunner().invoke(app, ['ingest', '--help']); "
        "print(sorted(m for m in ('torch', 'ray', 'mlflow', 'pyarrow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_unknown_command_is_a_usage_error(cli):
    result = cli("ingest", "cifar")
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_datasets_list_empty_and_show_missing(cli, tmp_path):
    result = cli("datasets", "list")
    assert result.exit_code == 0 and "no datasets" in result.stdout
    result = cli("datasets", "show", "nope-64")
    assert result.exit_code == 1
    assert result.stderr.strip().startswith("error: ") and len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_max_bad_that_is_not_a_number_is_one_line(cli, tmp_path, value):
    """`--max-bad nan` passed the `< 0` check: a ValueError traceback once the shards were
    being written, and a half-made dataset folder left behind."""
    from PIL import Image

    root = tmp_path / "images"
    root.mkdir()
    for i in range(2):
        Image.new("RGB", (16, 16), (60 * i, 0, 0)).save(root / f"{i}.png")
    out = tmp_path / "out"
    result = cli("ingest", "images", "--root", root, "--out", out, "--max-bad", value)
    assert_one_line_error(result, f"max_bad={value}", "must be a number >= 0")
    assert not out.exists()


def interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def test_ctrl_c_says_what_the_command_leaves(cli, monkeypatch, tmp_path):
    """Ctrl-C ends with one line that is true for the command: ingest keeps its shards,
    train's MLflow run can be resumed."""
    import pipeline.data.ingest

    monkeypatch.setattr(pipeline.data.ingest, "ingest", interrupt)
    result = cli("ingest", "images", "--root", tmp_path, "--out", tmp_path / "out")
    assert result.exit_code == 130
    assert result.stderr.strip() == (
        "interrupted: finished shards are kept; rerun the same command to resume"
    )

    # The driver stands in for a training run cut short (no torch, no Ray).
    driver = types.ModuleType("pipeline.training.driver")
    driver.train = interrupt
    monkeypatch.setitem(sys.modules, "pipeline.training.driver", driver)
    result = cli("train", "dcgan")
    assert result.exit_code == 130
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1 and "shards" not in err, err
    assert err.startswith("interrupted: the MLflow run, if it had started, is marked KILLED")
    assert "pipeline train MODEL --resume RUN_ID" in err
