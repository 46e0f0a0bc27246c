"""What comes from a bucket or folder others write to cannot hurt the reader: a crafted
manifest is one line naming its bad field, and nothing is written outside the cache."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.data.ingest import IngestOptions, ingest
from pipeline.data.reader import ShardDataset
from pipeline.data.sources.lsun import LsunSource
from pipeline.data.validate import joined_inside, relative_inside
from pipeline.errors import PipelineError


@pytest.fixture(scope="module")
def dataset(lsun_lmdb, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("untrusted") / "bedroom-16"
    ingest(
        LsunSource("bedroom", lsun_lmdb, size=16),
        IngestOptions(out=str(out), size=16, workers=1, limit=20, shard_rows=8),
    )
    return out


def crafted(dataset: Path, at: Path, change) -> Path:
    """A copy of `dataset` at `at` whose manifest `change(manifest)` rewrote."""
    shutil.copytree(dataset, at)
    manifest = json.loads((at / "manifest.json").read_text())
    manifest = change(manifest) or manifest
    (at / "manifest.json").write_text(json.dumps(manifest))
    return at


def first_shard(manifest: dict) -> dict:
    return manifest["splits"]["train"]["shards"][0]


def test_a_fingerprint_that_climbs_out_of_the_cache_writes_nothing(
    cli, dataset, tmp_path, monkeypatch
):
    """The reproduction of the finding: staged from a URI, the old code wrote the shard named
    `.bashrc` to cache/datasets/<slug>/<fingerprint[:16]>, four folders above the cache."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("the user's own\n")
    monkeypatch.setenv("PIPELINE_CACHE", str(tmp_path / "a" / "cache"))
    evil = b"echo owned\n"

    def climb(manifest):
        manifest["fingerprint"] = "../../../../home" + "0" * 48
        shard = first_shard(manifest)
        shard.update(file=".bashrc", sha256=hashlib.sha256(evil).hexdigest(), bytes=len(evil))

    ds = crafted(dataset, tmp_path / "bucket" / "ds", climb)
    (ds / ".bashrc").write_bytes(evil)
    shown = cli("datasets", "show", f"file://{ds}", "--grid", tmp_path / "g.png")
    assert shown.exit_code == 1
    assert "not a valid dataset manifest: fingerprint '../../../../home000" in shown.stderr
    assert len(shown.stderr.strip().splitlines()) == 1
    assert (home / ".bashrc").read_text() == "the user's own\n"
    assert not (tmp_path / "g.png").exists()


def edit(path: str, value):
    """A change to one field of a manifest, at a dotted path."""

    def change(manifest):
        *parents, last = path.split(".")
        target = manifest
        for key in parents:
            target = first_shard(target) if key == "shard" else target[key]
        target[last] = value

    return change


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (edit("shard.file", "../../outside.arrow"), "splits.train.shards[0].file '../../outside"),
        (edit("shard.file", "/etc/passwd"), "splits.train.shards[0].file '/etc/passwd'"),
        (edit("shard.file", "val/shard-00000-of-00003.arrow"), "shards[0].file 'val/shard-"),
        (edit("name", "../runs-of-others"), "name '../runs-of-others' is not a plain folder"),
        (edit("fingerprint", "abc"), "fingerprint 'abc' is not 64 hex digits"),
        (edit("image.height", 10**6), "image.height 1000000 is not 1..8192 pixels"),
        (edit("image.channels", 7), "image.channels 7 is not 1, 3 or 4"),
        (edit("shard.sha256", None), "splits.train.shards[0].sha256 is not 64 hex digits"),
        (edit("shard.rows", -1), "splits.train.shards[0].rows is not a count"),
        (edit("splits", {"../x": {"rows": 0, "shards": []}}), "has a split named '../x'"),
        (lambda manifest: [manifest], "is not a pipeline dataset manifest"),
        (edit("schema_version", "1"), "shard format version '1'"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_a_crafted_manifest_is_one_line_naming_its_field(dataset, tmp_path, change, message):
    ds = crafted(dataset, tmp_path / "ds", change)
    with pytest.raises(PipelineError, match="manifest") as caught:
        ShardDataset(ds)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_manifest_that_is_not_utf8_is_one_line(dataset, tmp_path):
    ds = crafted(dataset, tmp_path / "ds", lambda m: None)
    (ds / "manifest.json").write_bytes(b'{"name": "\xff"}')
    with pytest.raises(PipelineError, match=r"is not valid JSON \(not UTF-8\)"):
        ShardDataset(ds)


def test_the_datasets_list_shows_a_crafted_manifest_as_unreadable(cli, dataset, monkeypatch):
    data = dataset.parent / "listed"
    monkeypatch.setenv("PIPELINE_DATA", str(data))
    crafted(dataset, data / "good", lambda m: None)
    crafted(dataset, data / "evil", edit("shard.file", "../../x.arrow"))
    listed = cli("datasets", "list")
    assert listed.exit_code == 0, listed.output
    assert "unreadable: " in listed.stdout and "train:19" in listed.stdout  # and the good one


@pytest.mark.parametrize(
    "relative", ["../x", "a/../../x", "/etc/passwd", "a//b", "./a", "a\\..\\x", "", "a/."]
)
def test_a_listed_path_that_leaves_its_folder_is_refused(relative, tmp_path):
    with pytest.raises(PipelineError, match="a path that leaves its folder"):
        relative_inside(relative, "s3://b/ds/stats")
    with pytest.raises(PipelineError, match="a path that leaves its folder"):
        joined_inside(tmp_path, relative, "s3://b/ds/stats")


def test_a_listed_path_inside_its_folder_is_joined(tmp_path):
    assert joined_inside(tmp_path, "fid/a.npz", "x") == tmp_path / "fid" / "a.npz"
    (tmp_path / "link").symlink_to("/etc")
    with pytest.raises(PipelineError, match="leaves its folder"):
        joined_inside(tmp_path, "link/passwd", "x")


@pytest.mark.parametrize("state", [b"{not json", b"[1, 2]", b"\xff\xfe"])
def test_a_damaged_ingest_state_is_listed_and_refused_in_one_line(cli, lsun_lmdb, state):
    data = Path(os.environ["PIPELINE_DATA"])
    (data / "lsun-bedroom-16").mkdir(parents=True)
    (data / "lsun-bedroom-16" / ".ingest.json").write_bytes(state)
    listed = cli("datasets", "list")
    assert listed.exit_code == 0 and "incomplete" in listed.stdout
    again = cli("ingest", "lsun-bedroom", "--lmdb", lsun_lmdb, "--size", "16")
    assert again.exit_code == 1
    assert "holds an unfinished ingest of '?' with other options" in again.stderr
    assert (data / "lsun-bedroom-16" / ".ingest.json").read_bytes() == state  # nothing lost


# Shards: checked when opened, so damage is one line naming the shard, never a signal.


@pytest.fixture(scope="module")
def png_dataset(lsun_lmdb, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("untrusted-png") / "bedroom-16-png"
    ingest(
        LsunSource("bedroom", lsun_lmdb, size=16),
        IngestOptions(out=str(out), size=16, workers=1, limit=20, shard_rows=8, encoding="png"),
    )
    return out


def patched_offset(shard: Path, column: str, row: int, value: int) -> None:
    """Overwrite one entry of `column`'s offsets buffer in the shard file, in place."""
    import numpy as np
    import pyarrow as pa

    batch = pa.ipc.open_file(pa.BufferReader(shard.read_bytes())).get_batch(0)
    offsets = np.frombuffer(batch.column(column).buffers()[1], np.int32)[: batch.num_rows + 1]
    blob = bytearray(shard.read_bytes())
    at = blob.find(offsets.tobytes())
    assert at > 0 and blob.find(offsets.tobytes(), at + 1) == -1
    blob[at + 4 * row : at + 4 * row + 4] = np.int32(value).tobytes()
    shard.write_bytes(bytes(blob))


def pipeline_cmd(*args) -> subprocess.CompletedProcess:
    """The installed command in a process of its own: a crash is a signal here, not a test's."""
    return subprocess.run(
        [sys.executable, "-m", "stages.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def damaged(dataset: Path, at: Path, damage) -> Path:
    shutil.copytree(dataset, at)
    damage(sorted((at / "train").glob("shard-*.arrow"))[0])
    return at


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda s: s.write_bytes(s.read_bytes()[: s.stat().st_size // 2]), "is damaged"),
        (lambda s: patched_offset(s, "image", 3, 2**30), "is damaged"),
        (lambda s: patched_offset(s, "key", 2, 2**30), "is damaged"),
        (lambda s: s.write_bytes(b"ARROW1" + bytes(64)), "is damaged"),
    ],
    ids=["truncated", "image-offset", "key-offset", "not-arrow"],
)
def test_a_damaged_shard_is_one_line_never_a_signal(png_dataset, tmp_path, damage, message):
    ds = damaged(png_dataset, tmp_path / "ds", damage)
    shown = pipeline_cmd("datasets", "show", ds, "--grid", tmp_path / "g.png", "--n", "20")
    assert shown.returncode == 1, (shown.returncode, shown.stderr[-2000:])
    assert message in shown.stderr and "shard-00000-of-00003.arrow" in shown.stderr
    assert len(shown.stderr.strip().splitlines()) == 1, shown.stderr


def test_overwritten_pixels_are_caught_by_the_hash_and_verify_names_the_shard(
    cli, dataset, tmp_path
):
    def flip(shard: Path) -> None:
        blob = bytearray(shard.read_bytes())
        blob[len(blob) // 2] ^= 0xFF  # inside the pixels: the structure stays valid
        shard.write_bytes(bytes(blob))

    assert cli("datasets", "verify", dataset).exit_code == 0
    ds = damaged(dataset, tmp_path / "ds", flip)
    with pytest.raises(PipelineError, match="does not match its sha256"):
        ShardDataset(ds)
    checked = cli("datasets", "verify", ds)
    assert checked.exit_code == 1
    assert "train: 3 shards, 19 rows: 1 bad" in checked.stdout
    assert "shard-00000-of-00003.arrow does not match its sha256" in checked.stdout
    assert "1 bad shard(s)" in checked.stderr


def test_a_shard_is_hashed_once_per_file_identity(dataset, tmp_path, monkeypatch):
    ds = damaged(dataset, tmp_path / "ds", lambda shard: None)
    ShardDataset(ds)
    markers = list((Path(os.environ["PIPELINE_CACHE"]) / "verified").rglob("*"))
    assert len([m for m in markers if m.is_file()]) == 3
    shard = ds / "train" / "shard-00001-of-00003.arrow"
    blob = bytearray(shard.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    shard.write_bytes(bytes(blob))  # a new modification time: a new identity, hashed again
    with pytest.raises(PipelineError, match="shard-00001-of-00003.arrow does not match"):
        ShardDataset(ds)


def test_a_png_row_of_another_size_is_refused_before_decoding(png_dataset, tmp_path):
    import io

    import numpy as np
    import pyarrow as pa
    from PIL import Image

    ds = damaged(png_dataset, tmp_path / "ds", lambda shard: None)
    shard = ds / "train" / "shard-00000-of-00003.arrow"
    batch = pa.ipc.open_file(pa.memory_map(str(shard))).get_batch(0)
    big = io.BytesIO()
    Image.fromarray(np.zeros((4000, 4000), np.uint8)).save(big, format="PNG")
    images = [big.getvalue(), *batch.column("image").to_pylist()[1:]]
    columns = [
        pa.array(images, pa.binary()) if n == "image" else batch.column(n)
        for n in batch.schema.names
    ]
    swapped = pa.record_batch(columns, schema=batch.schema)
    with pa.OSFile(str(shard), "wb") as sink, pa.ipc.new_file(sink, batch.schema) as writer:
        writer.write_batch(swapped)
    data = ShardDataset(ds, verify=False)  # the crafted shard's hash would be in its manifest
    with pytest.raises(PipelineError, match="holds a 4000x4000 image, not the dataset's 16x16"):
        data.take([0])
