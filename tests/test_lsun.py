"""`pipeline ingest lsun-bedroom` on LSUN-format LMDBs built from the real CelebA photos."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.data.ingest import IngestOptions, ingest
from pipeline.data.sources.lsun import LsunSource, write_lmdb
from tests.sample_data import broken_keys, lsun_lmdb_from_celeba
from tests.shard_checks import assert_one_line_error, manifest_of, read_plain, shard_hashes


def ingest_bedroom(cli, lmdb: Path, out: Path, *options):
    """`pipeline ingest lsun-bedroom --lmdb LMDB --out OUT OPTIONS...` through `cli`."""
    return cli("ingest", "lsun-bedroom", "--lmdb", lmdb, "--out", out, *options)


def test_ingests_every_good_record_and_lists_the_bad(cli, lsun_lmdb, tmp_path):
    out = tmp_path / "bedroom"
    result = ingest_bedroom(cli, lsun_lmdb, out, "--size", "32", "--shard-rows", "64")
    assert result.exit_code == 0, result.output
    table = read_plain(out / "train")
    assert table.num_rows == 200
    assert table.schema.field("image").type == pa.binary(32 * 32 * 3)
    keys = set(table.column("key").to_pylist())
    assert not keys & broken_keys()
    assert len(keys) == 200 and all(len(k) == 40 for k in keys)
    manifest = manifest_of(out)
    assert {r["key"] for r in manifest["skipped"]["records"]} == broken_keys()
    assert manifest["splits"]["train"]["rows"] == 200
    assert manifest["splits"]["train"]["skipped"] == 3
    for shard in manifest["splits"]["train"]["shards"]:
        path = out / shard["file"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == shard["sha256"]
    assert "skipped 3 bad record(s)" in result.stdout
    assert "ffffffff" in result.stdout


def test_pixels_are_center_square_lanczos(lsun_lmdb, tmp_path):
    """Row content equals the recipe applied by hand to the LMDB value."""
    import io

    import lmdb
    import numpy as np
    from PIL import Image

    result = ingest(
        LsunSource("bedroom", lsun_lmdb, size=32),
        IngestOptions(out=str(tmp_path / "d"), size=32, workers=1, limit=5, max_bad=10),
    )
    table = read_plain(result.path / "train")
    env = lmdb.open(str(lsun_lmdb), readonly=True, lock=False)
    with env.begin() as txn:
        key = table.column("key")[0].as_py()
        photo = Image.open(io.BytesIO(txn.get(key.encode()))).convert("RGB")
    side = min(photo.size)
    left, top = (photo.width - side) // 2, (photo.height - side) // 2
    expected = np.asarray(
        photo.crop((left, top, left + side, top + side)).resize((32, 32), Image.Resampling.LANCZOS)
    )
    got = np.frombuffer(table.column("image")[0].as_py(), np.uint8).reshape(32, 32, 3)
    assert np.array_equal(got, expected)


def test_val_lmdb_becomes_val_split(tmp_path):
    train = lsun_lmdb_from_celeba(tmp_path / "bedroom_train_lmdb", 30)
    val = lsun_lmdb_from_celeba(tmp_path / "bedroom_val_lmdb", 10)
    result = ingest(
        LsunSource("bedroom", train, val, size=32),
        IngestOptions(out=str(tmp_path / "d"), size=32, workers=1),
    )
    assert {s: v["rows"] for s, v in result.manifest["splits"].items()} == {"train": 30, "val": 10}


def test_found_under_data_dir_or_says_how_to_get_it(cli, tmp_path, monkeypatch):
    result = cli("ingest", "lsun-bedroom")
    assert_one_line_error(result, "bedroom_train_lmdb", "--lmdb", "--download")
    data = Path(os.environ["PIPELINE_DATA"])
    lsun_lmdb_from_celeba(data / "lsun" / "bedroom_train_lmdb", 12)
    lsun_lmdb_from_celeba(data / "lsun" / "bedroom_val_lmdb", 4)
    result = cli("ingest", "lsun", "bedroom", "--size", "16")
    assert result.exit_code == 0, result.output
    manifest = manifest_of(data / "lsun-bedroom-16")
    assert manifest["splits"]["val"]["rows"] == 4


def test_limit(lsun_lmdb, tmp_path):
    result = ingest(
        LsunSource("bedroom", lsun_lmdb, size=16),
        IngestOptions(out=str(tmp_path / "d"), size=16, limit=7, workers=1, max_bad=10),
    )
    train = result.manifest["splits"]["train"]
    assert (train["records"], train["rows"], train["skipped"]) == (7, 6, 1)  # records, not rows


# -- bad input: one line, non-zero exit, nothing half-written --------------------------------


def test_missing_path(cli, tmp_path):
    result = ingest_bedroom(cli, tmp_path / "nope", tmp_path / "d")
    assert_one_line_error(result, "does not exist")
    assert not (tmp_path / "d").exists()


def test_folder_without_data_mdb(cli, tmp_path):
    (tmp_path / "empty_lmdb").mkdir()
    result = ingest_bedroom(cli, tmp_path / "empty_lmdb", tmp_path / "d")
    assert_one_line_error(result, "no data.mdb")
    assert not (tmp_path / "d").exists()


def test_unknown_category_and_option_values(cli, lsun_lmdb, tmp_path):
    result = cli("ingest", "lsun", "kitchens", "--lmdb", lsun_lmdb)
    assert_one_line_error(result, "kitchen", "choose one of")
    result = cli("ingest", "lsun-bedroom", "--lmdb", lsun_lmdb, "--encoding", "gif")
    assert_one_line_error(result, "encoding", "raw, png, jpeg, webp")
    result = cli("ingest", "lsun-bedroom", "--lmdb", lsun_lmdb, "--size", "3")
    assert_one_line_error(result, "size")


def test_values_that_are_not_images(cli, tmp_path):
    lmdb_path = write_lmdb(
        tmp_path / "text_lmdb", [(f"{i:040x}", f"plain text {i}".encode()) for i in range(20)]
    )
    out = tmp_path / "d"
    result = ingest_bedroom(cli, lmdb_path, out)
    assert_one_line_error(result, "bad records", "--max-bad", "not an image")
    assert not out.exists()  # nothing worth resuming was made: no trace left


def test_max_bad_threshold(cli, lsun_lmdb, tmp_path):
    result = ingest_bedroom(cli, lsun_lmdb, tmp_path / "d", "--size", "16", "--max-bad", "2")
    assert_one_line_error(result, "3 bad records", "(2)")
    assert not (tmp_path / "d" / "manifest.json").exists()
    result = ingest_bedroom(cli, lsun_lmdb, tmp_path / "d", "--size", "16", "--max-bad", "3")
    assert result.exit_code == 0, result.output


def test_empty_source(cli, tmp_path):
    lmdb_path = write_lmdb(tmp_path / "empty_lmdb", [])
    result = ingest_bedroom(cli, lmdb_path, tmp_path / "d")
    assert_one_line_error(result, "no images")
    assert not (tmp_path / "d").exists()


def test_output_holding_another_dataset(cli, lsun_lmdb, tmp_path):
    out = tmp_path / "d"
    assert ingest_bedroom(cli, lsun_lmdb, out, "--size", "16", "--limit", "20").exit_code == 0
    before = shard_hashes(out)
    result = ingest_bedroom(cli, lsun_lmdb, out, "--size", "32", "--limit", "20")
    assert_one_line_error(result, "already holds", "--overwrite")
    assert shard_hashes(out) == before  # nothing lost
    same = ingest_bedroom(cli, lsun_lmdb, out, "--size", "16", "--limit", "20")
    assert same.exit_code == 0 and "up to date" in same.stdout
    result = ingest_bedroom(cli, lsun_lmdb, out, "--size", "32", "--limit", "20", "--overwrite")
    assert result.exit_code == 0, result.output
    assert manifest_of(out)["image"]["height"] == 32


def test_refuses_a_folder_that_is_not_a_dataset(cli, lsun_lmdb, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    for extra in ([], ["--overwrite"]):
        result = ingest_bedroom(cli, lsun_lmdb, out, *extra)
        assert_one_line_error(result, "not a pipeline dataset")
    assert (out / "thesis.tex").read_text() == "precious"


def test_dry_run_writes_nothing(cli, lsun_lmdb, tmp_path):
    result = ingest_bedroom(cli, lsun_lmdb, tmp_path / "d", "--dry-run")
    assert result.exit_code == 0
    assert "category: bedroom" in result.stdout and "size: 64" in result.stdout
    assert not (tmp_path / "d").exists()


# -- determinism and resume ---------------------------------------------------------------


@pytest.mark.slow
def test_shards_do_not_depend_on_worker_count_or_start_method(lsun_lmdb, tmp_path):
    """1 worker, 2 forked workers, and 2 spawned ones (spawn is chosen while another thread
    runs) write the same bytes."""
    import threading

    from pipeline.data.ingest import _start_method

    def run(name: str, workers: int) -> dict[str, str]:
        out = tmp_path / name
        ingest(
            LsunSource("bedroom", lsun_lmdb, size=32),
            IngestOptions(out=str(out), size=32, workers=workers, shard_rows=50),
        )
        return shard_hashes(out)

    one, forked = run("one", 1), run("forked", 2)
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert _start_method().get_start_method() == "spawn"
        spawned = run("spawned", 2)
    finally:
        stop.set()
        other.join()
    assert one == forked == spawned and len(one) == 5


@pytest.mark.slow
def test_killed_ingest_resumes_to_the_same_bytes(lsun_lmdb, tmp_path):
    """SIGKILL a 2-worker ingest once some shards are written; a 1-worker rerun finishes it,
    and the shards equal those of a clean run."""
    clean = tmp_path / "clean"
    ingest(
        LsunSource("bedroom", lsun_lmdb, size=48),
        IngestOptions(out=str(clean), size=48, workers=2, shard_rows=10),
    )
    for attempt in range(5):
        out = tmp_path / f"killed{attempt}"
        command = [
            sys.executable,
            "-m",
            "stages.cli",
            "ingest",
            "lsun-bedroom",
            "--lmdb",
            str(lsun_lmdb),
            "--out",
            str(out),
            "--size",
            "48",
            "--shard-rows",
            "10",
            "--workers",
            "2",
        ]
        process = subprocess.Popen(
            command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 60
        while not list(out.glob("train/shard-*.arrow")) and time.monotonic() < deadline:
            time.sleep(0.005)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        if not (out / "manifest.json").exists():
            break
    else:
        pytest.fail("the ingest always finished before it could be killed")
    written = len(list(out.glob("train/shard-*.arrow")))
    assert 0 < written < 21
    result = ingest(
        LsunSource("bedroom", lsun_lmdb, size=48),
        IngestOptions(out=str(out), size=48, workers=1, shard_rows=10),
    )
    assert result.resumed_shards >= 1
    assert shard_hashes(out) == shard_hashes(clean)
    assert not list(out.rglob(".*.tmp-*"))
    assert manifest_of(out)["fingerprint"] == manifest_of(clean)["fingerprint"]
