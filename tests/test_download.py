"""Resumable downloads against a real HTTP server on 127.0.0.1, and `ingest lsun --download`."""

from __future__ import annotations

import hashlib
import os
import shutil
import zipfile
from pathlib import Path

import pytest

from pipeline.data.download import download, extract_zip
from pipeline.errors import PipelineError
from tests.http_fixtures import FileServer
from tests.sample_data import lsun_lmdb_from_celeba
from tests.shard_checks import assert_one_line_error, manifest_of


def test_interrupted_download_resumes_with_range(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    payload = os.urandom(3 * 2**20 + 123)
    (served / "big.bin").write_bytes(payload)
    dest = tmp_path / "got" / "big.bin"
    with FileServer(served) as server:
        server.cut_after = 2**20 + 7
        with pytest.raises(PipelineError, match="rerun to resume"):
            download(f"{server.url}/big.bin", dest, progress=False)
        assert not dest.exists()
        part = dest.with_name("big.bin.part")
        assert part.stat().st_size == 2**20 + 7
        server.cut_after = None
        download(f"{server.url}/big.bin", dest, progress=False)
        assert server.requests[-1]["range"] == f"bytes={2**20 + 7}-"
    assert dest.read_bytes() == payload
    assert not part.exists()


def test_server_ignoring_range_restarts_cleanly(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    payload = os.urandom(100_000)
    (served / "f.bin").write_bytes(payload)
    dest = tmp_path / "f.bin"
    dest.with_name("f.bin.part").write_bytes(payload[:5000])
    with FileServer(served) as server:
        server.honour_range = False
        download(f"{server.url}/f.bin", dest, progress=False)
    assert dest.read_bytes() == payload


def test_http_errors_are_one_line(tmp_path):
    with FileServer(tmp_path) as server:
        with pytest.raises(PipelineError, match="HTTP 404"):
            download(f"{server.url}/missing.zip", tmp_path / "x.zip", progress=False)
    with pytest.raises(PipelineError, match="cannot reach"):
        download("http://127.0.0.1:9/nothing.zip", tmp_path / "y.zip", progress=False, timeout=2)


def test_corrupt_zip_is_reported(tmp_path):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK not really")
    with pytest.raises(PipelineError, match="not a valid zip"):
        extract_zip(bad, tmp_path / "into")


def zip_of(path: Path, members: dict[str, bytes | Path]) -> Path:
    """A zip at `path` holding `members` (name -> bytes, or a file whose bytes to store)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in members.items():
            zf.writestr(name, content.read_bytes() if isinstance(content, Path) else content)
    return path


def lmdb_members(folder: Path, name: str) -> dict[str, Path]:
    """The members of a release zip: `name/data.mdb` and `name/lock.mdb` from `folder`."""
    return {f"{name}/{file.name}": file for file in sorted(folder.iterdir())}


def test_extract_refuses_a_path_beside_its_working_folder(tmp_path):
    """`../.extract-x-evil/` shares the working folder's string prefix (`.extract-x`)."""
    archive = zip_of(tmp_path / "x.zip", {"../.extract-x-evil/pwned": b"boo"})
    into = tmp_path / "into"
    with pytest.raises(PipelineError, match="unsafe path"):
        extract_zip(archive, into)
    assert list(into.iterdir()) == []


def test_extract_never_replaces_what_is_there(tmp_path):
    archive = zip_of(tmp_path / "x.zip", {"data/new.txt": b"new", "other.txt": b"other"})
    into = tmp_path / "into"
    (into / "data").mkdir(parents=True)
    (into / "data" / "mine.txt").write_text("precious")
    with pytest.raises(PipelineError, match="already exists"):
        extract_zip(archive, into)
    assert sorted(p.name for p in into.iterdir()) == ["data"]  # nothing half-placed
    assert [p.name for p in (into / "data").iterdir()] == ["mine.txt"]
    assert (into / "data" / "mine.txt").read_text() == "precious"


def test_extract_bounds_declared_sizes_by_the_limit_and_free_disk(tmp_path, monkeypatch):
    """64 MiB of zeros deflates to some KiB: the sizes the headers declare are what count."""
    archive = zip_of(tmp_path / "x.zip", {"zeros.bin": bytes(64 * 2**20)})
    assert archive.stat().st_size < 2**20
    into = tmp_path / "into"
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=2**20))
    with pytest.raises(PipelineError, match="only 1.0 MiB is free"):
        extract_zip(archive, into)
    assert list(into.iterdir()) == []
    monkeypatch.undo()
    with pytest.raises(PipelineError, match="more than the 1048576 expected"):
        extract_zip(archive, into, max_bytes=2**20)
    assert list(into.iterdir()) == []
    assert [p.name for p in extract_zip(archive, into)] == ["zeros.bin"]


def test_ingest_lsun_download_end_to_end(cli, tmp_path, celeba_root):
    """`--download` fetches the category's zips (train and val) from a mirror URL, extracts
    them under <data>/lsun and ingests both splits."""
    served = tmp_path / "mirror"
    served.mkdir()
    for split, count in (("train", 24), ("val", 6)):
        folder = lsun_lmdb_from_celeba(tmp_path / "build" / f"bedroom_{split}_lmdb", count)
        zip_of(served / f"bedroom_{split}_lmdb.zip", lmdb_members(folder, f"bedroom_{split}_lmdb"))
    data = Path(os.environ["PIPELINE_DATA"])
    with FileServer(served) as server:
        result = cli(
            "ingest",
            "lsun-bedroom",
            "--download",
            "--size",
            "16",
            "--url",
            server.url + "/{category}_{split}_lmdb.zip",
        )
    assert result.exit_code == 0, result.output
    assert (data / "lsun" / "bedroom_train_lmdb" / "data.mdb").is_file()
    assert not list((data / "lsun").glob("*.zip*"))
    manifest = manifest_of(data / "lsun-bedroom-16")
    assert {s: v["rows"] for s, v in manifest["splits"].items()} == {"train": 24, "val": 6}


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_refused(result, *words: str) -> None:
    """Exit 1 and one `error: ...` line holding `words`, the last on stderr (the download's
    progress bar may come before it), no traceback."""
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: "), result.stderr
    assert [line for line in lines if "error" in line] == lines[-1:], result.stderr
    assert "Traceback" not in result.output
    for word in words:
        assert word in lines[-1], lines[-1]


@pytest.mark.parametrize("case", ["extra entry", "other folder", "not an lmdb", "too large"])
def test_lsun_download_refused_and_nothing_replaced(case, cli, tmp_path, celeba_root, monkeypatch):
    """The train LMDB is there; the val zip the mirror serves is wrong. One line, exit 1, the
    train data.mdb untouched, no val folder placed, nothing ingested. The "extra entry" zip
    carries its own bedroom_train_lmdb/data.mdb, which replaced the real one before."""
    data = Path(os.environ["PIPELINE_DATA"])
    train = lsun_lmdb_from_celeba(data / "lsun" / "bedroom_train_lmdb", 12)
    before = sha256_of(train / "data.mdb")
    val = lsun_lmdb_from_celeba(tmp_path / "build" / "bedroom_val_lmdb", 4)
    impostor = lsun_lmdb_from_celeba(tmp_path / "build" / "impostor", 2)
    members, words = lmdb_members(val, "bedroom_val_lmdb"), []
    if case == "extra entry":
        members["bedroom_train_lmdb/data.mdb"] = impostor / "data.mdb"
        words = ["'bedroom_train_lmdb/data.mdb'", "does not belong"]
    elif case == "other folder":
        members = lmdb_members(val, "kitchen_val_lmdb")
        words = ["'kitchen_val_lmdb/data.mdb'", "does not belong"]
    elif case == "not an lmdb":
        members["bedroom_val_lmdb/data.mdb"] = os.urandom(64 * 1024)
        words = ["bedroom_val_lmdb is not a readable LMDB"]
    else:
        from pipeline.data.sources import lsun

        monkeypatch.setattr(lsun, "MAX_ZIP_BYTES", 10_000, raising=False)
        words = ["more than the 10000 expected"]
    served = tmp_path / "mirror"
    served.mkdir()
    zip_of(served / "bedroom_val_lmdb.zip", members)
    with FileServer(served) as server:
        result = cli(
            "ingest",
            "lsun-bedroom",
            "--download",
            "--url",
            server.url + "/{category}_{split}_lmdb.zip",
        )
    assert_refused(result, *words)
    assert sha256_of(train / "data.mdb") == before
    assert sorted(p.name for p in train.iterdir()) == ["data.mdb", "lock.mdb"]
    assert not (data / "lsun" / "bedroom_val_lmdb").exists()
    assert not list((data / "lsun").glob(".extract-*"))
    assert not (data / "lsun-bedroom-64").exists()


def test_lsun_download_never_deletes_a_folder_in_the_way(cli, tmp_path, celeba_root):
    """A `bedroom_train_lmdb/` without data.mdb is the user's: refused before downloading."""
    home = Path(os.environ["PIPELINE_DATA"]) / "lsun"
    (home / "bedroom_train_lmdb").mkdir(parents=True)
    (home / "bedroom_train_lmdb" / "notes.txt").write_text("precious")
    with FileServer(tmp_path) as server:
        result = cli(
            "ingest",
            "lsun-bedroom",
            "--download",
            "--url",
            server.url + "/{category}_{split}_lmdb.zip",
        )
        assert server.requests == []
    assert_one_line_error(result, "bedroom_train_lmdb exists but holds no data.mdb")
    assert (home / "bedroom_train_lmdb" / "notes.txt").read_text() == "precious"


@pytest.mark.parametrize(
    "template, words",
    [
        ("/{category}_{spilt}_lmdb.zip", ["unknown placeholder {spilt}"]),
        ("/{0}.zip", ["unknown placeholder {0}"]),
        ("/{category.upper}.zip", ["unknown placeholder {category.upper}"]),
        ("/{category", ["not a valid template"]),
    ],
)
def test_an_unknown_url_placeholder_is_one_line(cli, tmp_path, template, words):
    """--url's placeholders are {category} and {split}: another was a KeyError (IndexError,
    AttributeError) traceback from str.format. Refused before anything is fetched."""
    home = Path(os.environ["PIPELINE_DATA"]) / "lsun"
    with FileServer(tmp_path) as server:
        result = cli("ingest", "lsun-bedroom", "--download", "--url", server.url + template)
        assert server.requests == []
    assert_one_line_error(result, *words, "the placeholders allowed are {category} and {split}")
    assert not home.exists()
