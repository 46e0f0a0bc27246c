"""Checks the ingest tests share: shards read back with plain pyarrow, manifests, hashes, and
what a bad input must look like at the command line."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa


def read_plain(folder: Path) -> pa.Table:
    """All shards of a split with plain pyarrow, no project code."""
    tables = [pa.ipc.open_file(str(p)).read_all() for p in sorted(folder.glob("shard-*.arrow"))]
    return pa.concat_tables(tables)


def manifest_of(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def shard_hashes(root: Path) -> dict[str, str]:
    """sha256 of every shard under a dataset folder, by relative path."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.arrow"))
    }


def hashes_by_workers(make_source, out: Path, **options) -> list[dict[str, str]]:
    """The shard hashes of the same ingest with 1 worker and with 2, into `out`/w1 and
    `out`/w2; `make_source()` gives a fresh source each time (the engine pickles it to the
    workers) and `options` are the rest of its `IngestOptions`."""
    from pipeline.data.ingest import IngestOptions, ingest

    hashes = []
    for workers in (1, 2):
        result = ingest(
            make_source(), IngestOptions(out=str(out / f"w{workers}"), workers=workers, **options)
        )
        hashes.append(shard_hashes(result.path))
    return hashes


def assert_one_line_error(result, *words: str) -> None:
    """Exit status 1, one `error: ...` line on stderr holding `words`, no traceback."""
    assert result.exit_code == 1, result.output
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ")
    assert "Traceback" not in result.output
    for word in words:
        assert word in err, err


@dataclass
class Ran:
    """A command run in its own process, read as typer's CliRunner result is."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def measured_command(*args, timeout: float = 300) -> tuple[Ran, float]:
    """`pipeline ARGS` in a process of its own (an ingest with --workers 1 runs there, not in
    workers) and its peak resident memory in MiB, for the tests that bound what an input may
    cost."""
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork and exec, so a child of a big
    # pytest process (1.9 GB late in the suite) would report the parent's peak as its own.
    code = (
        "import runpy, sys\n"
        "sys.argv = ['pipeline', *sys.argv[1:]]\n"
        "try:\n"
        "    runpy.run_module('stages.cli', run_name='__main__')\n"
        "finally:\n"
        "    with open('/proc/self/status') as status:\n"
        "        peak = next(l.split()[1] for l in status if l.startswith('VmHWM:'))\n"
        "    print(f'peak-rss-kib {peak}', file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = done.stderr.splitlines()
    peak = int(lines[-1].split()[1]) / 1024
    stderr = "".join(f"{line}\n" for line in lines[:-1])
    return Ran(done.returncode, done.stdout, stderr), peak
