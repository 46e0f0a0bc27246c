"""The command line as a user meets it: help, speed of --help, errors as one line."""

from __future__ import annotations

import subprocess
import sys


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
