"""Resumable downloads against a real HTTP server on 127.0.0.1, and `ingest lsun --download`."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

from pipeline.data.download import download, extract_zip
from pipeline.errors import PipelineError
from tests.http_fixtures import FileServer
from tests.sample_data import lsun_lmdb_from_celeba
from tests.shard_checks import manifest_of


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


def test_ingest_lsun_download_end_to_end(cli, tmp_path, celeba_root):
    """`--download` fetches the category's zips (train and val) from a mirror URL, extracts
    them under <data>/lsun and ingests both splits."""
    served = tmp_path / "mirror"
    served.mkdir()
    for split, count in (("train", 24), ("val", 6)):
        folder = lsun_lmdb_from_celeba(tmp_path / "build" / f"bedroom_{split}_lmdb", count)
        with zipfile.ZipFile(served / f"bedroom_{split}_lmdb.zip", "w") as zf:
            for file in folder.iterdir():
                zf.write(file, f"bedroom_{split}_lmdb/{file.name}")
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
