"""`pipeline ingest images`: the real anime sample with its tags.csv, sub-folder labels, header
CSVs, and the ways a folder or a labels file can be wrong."""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pipeline.data.sources.images import ImageFolderSource, read_labels_csv
from pipeline.errors import PipelineError
from tests.shard_checks import (
    assert_one_line_error,
    hashes_by_workers,
    manifest_of,
    measured_command,
    read_plain,
)


def anime_tags(anime_root: Path) -> dict[str, tuple[str, str]]:
    """tags.csv parsed by hand: id -> (hair, eyes)."""
    tags = {}
    for line in (anime_root / "tags.csv").read_text().splitlines():
        ident, text = line.split(",")
        hair, hair_word, eyes, eyes_word = text.split()
        assert (hair_word, eyes_word) == ("hair", "eyes")
        tags[ident] = (hair, eyes)
    return tags


def copy_images(anime_root: Path, folder: Path, names: list[str]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(anime_root / "images" / name, folder / name)) for name in names]


# -- the real anime sample -----------------------------------------------------------------


def test_anime_tags_become_hair_and_eyes_groups(cli, anime_root, tmp_path):
    out = tmp_path / "anime"
    result = cli(
        "ingest",
        "images",
        "--root",
        anime_root,
        "--labels",
        anime_root / "tags.csv",
        "--out",
        out,
        "--workers",
        "1",
    )
    assert result.exit_code == 0, result.output

    manifest = manifest_of(out)
    tags = anime_tags(anime_root)
    groups = {g["name"]: g for g in manifest["labels"]["groups"]}
    assert [g["column"] for g in manifest["labels"]["groups"]] == ["label_hair", "label_eyes"]
    assert groups["hair"]["classes"] == sorted({hair for hair, _ in tags.values()})
    assert groups["eyes"]["classes"] == sorted({eyes for _, eyes in tags.values()})
    assert list(manifest["splits"]) == ["train"]

    table = read_plain(out / "train")
    assert table.num_rows == 566
    assert table.schema.field("image").type == pa.binary(64 * 64 * 3)
    assert table.schema.field("label_hair").type == pa.int16()
    assert table.schema.field("label_eyes").type == pa.int16()
    keys = table.column("key").to_pylist()
    assert keys == sorted(keys)
    hair = table.column("label_hair").to_pylist()
    eyes = table.column("label_eyes").to_pylist()
    for key, h, e in zip(keys, hair, eyes, strict=True):
        ident = Path(key).stem
        assert (groups["hair"]["classes"][h], groups["eyes"]["classes"][e]) == tags[ident], key

    # 64x64 sources are stored as decoded: no crop, no resize.
    from PIL import Image

    first = np.frombuffer(table.column("image")[0].as_py(), np.uint8).reshape(64, 64, 3)
    direct = np.asarray(Image.open(anime_root / keys[0]).convert("RGB"))
    assert np.array_equal(first, direct)

    assert manifest["counts"]["rows_without_image"] == 36_174
    assert manifest["counts"]["images_without_row"] == 0
    assert any("36,174" in note for note in manifest["notes"])
    assert "36,174" in result.stdout


def test_anime_folder_default_name_and_single_subfolder(cli, anime_root, tmp_path):
    """Without --labels the one `images/` folder is no class; the name comes from the parent."""
    result = cli(
        "ingest", "images", "--root", anime_root, "--limit", "10", "--workers", "1", "--size", "32",
        "--max-bad", "1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = tmp_path / "data" / "anime-mlds2018-32"
    manifest = manifest_of(out)
    assert manifest["labels"] is None
    assert manifest["splits"]["train"]["rows"] == 10
    assert [c["name"] for c in manifest["columns"]] == ["key", "image"]
    assert any("one sub-folder 'images'" in note for note in manifest["notes"])

    result = cli(
        "ingest",
        "images",
        "--root",
        anime_root,
        "--limit",
        "10",
        "--workers",
        "1",
        "--name",
        "anime",
        "--dry-run",
    )
    assert result.exit_code == 0 and "name: anime" in result.stdout


# -- labels from sub-folders and header CSVs -----------------------------------------------


def test_subfolder_names_are_classes(cli, anime_root, tmp_path):
    root = tmp_path / "pets"
    names = sorted(p.name for p in (anime_root / "images").glob("*.jpg"))[:10]
    copy_images(anime_root, root / "dog", names[:3])
    copy_images(anime_root, root / "cat", names[3:6])
    copy_images(anime_root, root / "owl" / "nested", names[6:9])
    copy_images(anime_root, root, names[9:])  # outside any class folder
    out = Path(os.environ["PIPELINE_DATA"]) / "pets-64"  # the default name and place
    result = cli("ingest", "images", "--root", root, "--workers", "1")
    assert result.exit_code == 0, result.output

    manifest = manifest_of(out)
    assert manifest["name"] == "pets-64"
    assert manifest["labels"] == {
        "groups": [{"name": "label", "column": "label", "classes": ["cat", "dog", "owl"]}]
    }
    table = read_plain(out / "train")
    rows = dict(
        zip(table.column("key").to_pylist(), table.column("label").to_pylist(), strict=True)
    )
    assert len(rows) == 10
    for key, label in rows.items():
        expected = {"cat": 0, "dog": 1, "owl": 2}.get(key.split("/")[0]) if "/" in key else None
        assert label == expected, key
    assert manifest["counts"]["images_without_label"] == 1


@pytest.mark.parametrize("header", ["file,hair,eyes", "id,Hair,Eyes"])
def test_header_csv_gives_a_group_per_column(cli, anime_root, tmp_path, header):
    root = tmp_path / "faces"
    copy_images(anime_root, root, ["0.jpg", "1.jpg", "2.jpg", "3.jpg"])
    labels = tmp_path / "labels.csv"
    labels.write_text(
        f"{header}\n0.jpg,blue,red\n1,green,\n2,blue,green\n999,white,gold\n"
    )  # 3.jpg has no row; 999 has no image
    out = tmp_path / "out"
    result = cli(
        "ingest", "images", "--root", root, "--labels", labels, "--out", out, "--workers", "1"
    )
    assert result.exit_code == 0, result.output

    manifest = manifest_of(out)
    groups = manifest["labels"]["groups"]
    assert [g["column"] for g in groups] == ["label_hair", "label_eyes"]
    # classes come from the whole CSV, the row without an image included
    assert groups[0]["classes"] == ["blue", "green", "white"]
    assert groups[1]["classes"] == ["gold", "green", "red"]
    table = read_plain(out / "train")
    assert table.column("key").to_pylist() == ["0.jpg", "1.jpg", "2.jpg", "3.jpg"]
    assert table.column("label_hair").to_pylist() == [0, 1, 0, None]
    assert table.column("label_eyes").to_pylist() == [2, None, 1, None]
    assert manifest["counts"]["images_without_row"] == 1
    assert manifest["counts"]["rows_without_image"] == 1
    assert any("3.jpg" in note and "null labels" in note for note in manifest["notes"])


def test_single_column_csv_is_the_label_column(tmp_path, anime_root):
    root = tmp_path / "digits"
    copy_images(anime_root, root / "a", ["0.jpg", "1.jpg"])
    copy_images(anime_root, root / "b", ["2.jpg"])
    labels = tmp_path / "labels.csv"
    labels.write_text("file,digit\na/0,10\na/1.jpg,2\n\nb/2.jpg,9\n")
    plan = ImageFolderSource(root, labels).plan()
    assert plan.labels == {
        "groups": [
            {"name": "label", "column": "label", "classes": ["2", "9", "10"], "header": "digit"}
        ]
    }
    assert [c.name for c in plan.columns] == ["label"]


# -- the labels-file rules, without ingesting ----------------------------------------------


def test_csv_forms(tmp_path):
    path = tmp_path / "tags.csv"
    path.write_text("0,aqua hair aqua eyes\n1,red hair blue eyes\n2,\n")
    table = read_labels_csv(path)
    assert (table.groups, table.columns) == (["hair", "eyes"], ["label_hair", "label_eyes"])
    assert table.rows[1] == (2, "1", ["red", "blue"])
    assert table.rows[2] == (3, "2", [None, None])

    path.write_text("cat_1,tabby cat\ncat_2,black cat\n")  # one value with a space: one group
    table = read_labels_csv(path)
    assert (table.groups, table.columns) == (["label"], ["label"])
    assert [values for _, _, values in table.rows] == [["tabby cat"], ["black cat"]]

    path.write_text("Image_Name,Breed\nimg_001,tabby\n")  # a header: its first cell is words
    table = read_labels_csv(path)
    assert table.headers == ["Breed"] and table.rows == [(2, "img_001", ["tabby"])]
    path.write_text("img_001,tabby\n")  # no header: img_001 is an id
    assert read_labels_csv(path).rows == [(1, "img_001", ["tabby"])]

    path.write_text("id;hair;eyes\n0;blue;red\n")  # not comma-separated
    with pytest.raises(PipelineError, match="no label column"):
        read_labels_csv(path)


@pytest.mark.parametrize(
    "line, words",
    [
        ("7,aqua hair aqua", ["line 9", "'<value> hair <value> eyes'"]),
        ("7,aqua hair aqua eyes tall height", ["line 9"]),
        ("7,aqua eyes aqua hair", ["line 9"]),
        ("7,aqua,hair", ["line 9", "3 columns"]),
        (",aqua hair aqua eyes", ["line 9", "id is empty"]),
        ("3,aqua hair aqua eyes", ["line 9", "repeats line 4"]),
    ],
)
def test_malformed_row_fails_naming_file_and_line(cli, anime_root, tmp_path, line, words):
    lines = (anime_root / "tags.csv").read_text().splitlines()[:8]
    lines += [line, "8,red hair red eyes"]
    labels = tmp_path / "bad-tags.csv"
    labels.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    result = cli("ingest", "images", "--root", anime_root, "--labels", labels, "--out", out)
    assert_one_line_error(result, "bad-tags.csv", *words)
    assert not out.exists()


@pytest.mark.parametrize(
    "text, words",
    [
        ('id,label\na/0,"dog\nb/0,cat\na/1,cat\n', ["line 2", "unexpected end of data"]),
        ('id,label\na/0,"dog"s\nb/0,cat\n', ["line 2", "not valid CSV"]),
        ('id,label\nb/0,cat\na/0,"dog\na/1,cat"\n', ["line 3", "runs over several lines"]),
    ],
    ids=["not closed", "text after it", "over two lines"],
)
def test_a_stray_quote_is_refused_naming_the_line(cli, anime_root, tmp_path, text, words):
    """A quote that does not close took the rest of the file as one class ('dog\\nb/0,cat...')
    and the ingest went on (exit 0); a quoted cell over several lines likewise."""
    root = tmp_path / "root"
    copy_images(anime_root, root / "a", ["0.jpg", "1.jpg"])
    copy_images(anime_root, root / "b", ["0.jpg"])
    labels = tmp_path / "labels.csv"
    labels.write_text(text)
    out = tmp_path / "out"
    result = cli("ingest", "images", "--root", root, "--labels", labels, "--out", out)
    assert_one_line_error(result, "labels.csv", *words)
    assert not out.exists()


def test_more_classes_than_a_label_column_holds(cli, anime_root, tmp_path):
    """Class indices are int16: 32,769 classes were an OverflowError traceback."""
    root = tmp_path / "root"
    copy_images(anime_root, root, ["0.jpg", "1.jpg"])
    labels = tmp_path / "ids.csv"
    labels.write_text("id,label\n0,32768\n" + "".join(f"x{i},{i}\n" for i in range(32768)))
    out = tmp_path / "out"
    result = cli("ingest", "images", "--root", root, "--labels", labels, "--out", out)
    assert_one_line_error(result, "ids.csv", "32,769 classes", "32,768 a label column holds")
    assert not out.exists()
    # Sub-folders: 32,768 classes fit (indices 0..32767), one more does not.
    from pipeline.data.sources.images import MAX_CLASSES, folder_labels

    _, indices = folder_labels([f"c{i:05}/x.jpg" for i in range(MAX_CLASSES)], [], {})
    assert indices["label"].max() == 32767
    with pytest.raises(PipelineError, match="sub-folders of --root: group 'label' has 32,769"):
        folder_labels([f"c{i:05}/x.jpg" for i in range(MAX_CLASSES + 1)], [], {})


def test_a_file_name_that_is_not_utf8_is_one_line(cli, anime_root, tmp_path):
    """A name the file system holds as bytes that are not UTF-8 was a UnicodeEncodeError
    traceback (in the plan's fingerprint)."""
    root = tmp_path / "root"
    copy_images(anime_root, root, ["0.jpg", "1.jpg"])
    try:
        os.rename(os.fsencode(root / "1.jpg"), os.fsencode(root) + b"/caf\xe9.jpg")
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")
    out = tmp_path / "out"
    result = cli("ingest", "images", "--root", root, "--out", out)
    assert_one_line_error(result, "'caf\\xe9.jpg'", "is not UTF-8", "rename it")
    assert not out.exists()


def test_ambiguous_stem_is_an_error(tmp_path, anime_root):
    copy_images(anime_root, tmp_path / "root" / "a", ["0.jpg"])
    copy_images(anime_root, tmp_path / "root" / "b", ["0.jpg"])
    labels = tmp_path / "labels.csv"
    labels.write_text("id,label\n0,x\n")
    with pytest.raises(PipelineError, match="line 2: id '0' matches several images"):
        ImageFolderSource(tmp_path / "root", labels).plan()
    labels.write_text("id,label\na/0,x\nb/0.jpg,y\n")
    plan = ImageFolderSource(tmp_path / "root", labels).plan()
    assert plan.counts["images_without_row"] == 0


# -- bad folders and bad images ------------------------------------------------------------


def test_missing_root_and_labels(cli, tmp_path, anime_root):
    result = cli("ingest", "images", "--root", tmp_path / "nope")
    assert_one_line_error(result, "nope", "does not exist")
    result = cli("ingest", "images", "--root", anime_root, "--labels", tmp_path / "tags.csv")
    assert_one_line_error(result, "tags.csv", "does not exist")
    result = cli("ingest", "images", "--root", anime_root, "--name", "a/b")
    assert_one_line_error(result, "--name")


def test_empty_folder(cli, tmp_path):
    root = tmp_path / "empty"
    (root / "sub").mkdir(parents=True)
    (root / "readme.txt").write_text("no pictures here")
    (root / ".hidden.jpg").write_bytes(b"ignored")
    out = tmp_path / "out"
    result = cli("ingest", "images", "--root", root, "--out", out)
    assert_one_line_error(result, "no images", str(root))
    assert not out.exists()


# A DDS file (named .jpg) whose header names a pixel format Pillow does not implement: its
# decoder raises NotImplementedError, not an OSError (issue 22: it ended the ingest).
DDS_UNKNOWN_FORMAT = (
    b"DDS " + struct.pack("<7I", 124, 0x1007, 4, 4, 0, 0, 0) + bytes(44)
    + struct.pack("<2I", 32, 4) + b"ATI9" + bytes(20) + struct.pack("<5I", 0x1000, 0, 0, 0, 0)
    + bytes(64)
)  # fmt: skip


def test_corrupt_images_are_skipped_and_listed(cli, anime_root, tmp_path):
    root = tmp_path / "mixed"
    good = copy_images(anime_root, root, [f"{i}.jpg" for i in range(6)])
    (root / "notes.JPG").write_text("this is text, not a picture")
    data = good[0].read_bytes()
    (root / "half.jpeg").write_bytes(data[: len(data) // 2])
    (root / "odd.jpg").write_bytes(DDS_UNKNOWN_FORMAT)  # Pillow: NotImplementedError
    out = tmp_path / "out"
    result = cli(
        "ingest", "images", "--root", root, "--out", out, "--workers", "1", "--max-bad", "3"
    )
    assert result.exit_code == 0, result.output
    manifest = manifest_of(out)
    assert manifest["splits"]["train"]["rows"] == 6
    skipped = {r["key"]: r["reason"] for r in manifest["skipped"]["records"]}
    assert set(skipped) == {"notes.JPG", "half.jpeg", "odd.jpg"}
    assert "not an image" in skipped["notes.JPG"]
    assert "NotImplementedError" in skipped["odd.jpg"]
    assert "half.jpeg" in result.stdout

    out = tmp_path / "strict"
    result = cli(
        "ingest", "images", "--root", root, "--out", out, "--workers", "1", "--max-bad", "0"
    )
    assert_one_line_error(result, "--max-bad")
    assert not (out / "manifest.json").exists()


def test_workers_give_the_same_bytes(anime_root, tmp_path):
    """The source survives the pickle to worker processes; shards do not depend on workers."""
    hashes = hashes_by_workers(
        lambda: ImageFolderSource(anime_root, anime_root / "tags.csv", size=32),
        tmp_path,
        size=32,
        limit=200,
        shard_rows=64,
    )
    assert hashes[0] == hashes[1] and len(hashes[0]) == 4


def test_val_holds_out_images_by_a_hash_of_their_path(cli, anime_root, tmp_path):
    """--val 0.15: a val split of the images whose path hashes into the fraction, labels kept
    with their images; the same split whatever else the folder holds; a new fingerprint."""
    from pipeline.data.sources.base import held_out_key

    out = tmp_path / "anime"
    result = cli("ingest", "images", "--root", anime_root, "--labels", anime_root / "tags.csv",
                 "--out", out, "--size", "32", "--val", "0.15", "--workers", "1")  # fmt: skip
    assert result.exit_code == 0, result.output
    manifest = manifest_of(out)
    assert list(manifest["splits"]) == ["train", "val"]
    train, val = read_plain(out / "train"), read_plain(out / "val")
    assert (train.num_rows, val.num_rows) == (502, 64)
    val_keys = val.column("key").to_pylist()
    assert all(held_out_key(key, 0.15) for key in val_keys)
    assert not any(held_out_key(key, 0.15) for key in train.column("key").to_pylist())
    tags, groups = anime_tags(anime_root), manifest["labels"]["groups"]
    for key, h, e in zip(val_keys, val.column("label_hair").to_pylist(),
                         val.column("label_eyes").to_pylist(), strict=True):  # fmt: skip
        assert (groups[0]["classes"][h], groups[1]["classes"][e]) == tags[Path(key).stem]
    assert manifest["source"]["val_fraction"] == 0.15

    # Half the folder: each image that stays keeps its split.
    half = tmp_path / "half"
    names = sorted(p.name for p in (anime_root / "images").iterdir())[::2]
    copy_images(anime_root, half / "images", names)
    source = ImageFolderSource(half, val=0.15)
    plan = source.plan()
    kept = {f"images/{n}" for n in names}
    assert plan.splits["val"] == len({k for k in val_keys if k in kept})
    whole = ImageFolderSource(half).plan()
    assert plan.fingerprint != whole.fingerprint and list(whole.splits) == ["train"]


def test_val_out_of_range_or_holding_out_nothing(cli, anime_root, tmp_path):
    result = cli("ingest", "images", "--root", anime_root, "--val", "1.5", "--out", tmp_path / "a")
    assert_one_line_error(result, "--val 1.5 must be a fraction in [0, 1)")
    one = tmp_path / "one"
    copy_images(anime_root, one, ["0.jpg"])
    result = cli("ingest", "images", "--root", one, "--val", "0.0001", "--out", tmp_path / "b")
    assert_one_line_error(result, "--val 0.0001 holds out none of the 1 images")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def bomb_png(path: Path, side: int = 13000) -> Path:
    """A PNG of side x side black pixels in a few hundred KB, written without ever holding
    the pixels: what a decompression bomb is."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    squeeze = zlib.compressobj(9)
    row = bytes(side + 1)  # filter byte 0, then the row
    idat = b"".join(squeeze.compress(row) for _ in range(side)) + squeeze.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit greyscale
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


def test_a_decompression_bomb_is_skipped_before_decoding(anime_root, tmp_path):
    root = tmp_path / "bombed"
    copy_images(anime_root, root, [f"{i}.jpg" for i in range(6)])
    bomb = bomb_png(root / "bomb.png")
    assert bomb.stat().st_size < 400_000  # 169 Mpx in a small file
    out = tmp_path / "out"
    done, peak_mib = measured_command(
        "ingest", "images", "--root", root, "--out", out, "--workers", "1", "--size", "32",
        "--max-bad", "1",
    )  # fmt: skip
    assert done.exit_code == 0, done.stderr
    skipped = {r["key"]: r["reason"] for r in manifest_of(out)["skipped"]["records"]}
    cap = "over the 64,000,000-pixel cap (PIPELINE_MAX_PIXELS)"
    assert skipped == {"bomb.png": f"too large: 13000x13000 pixels, {cap}"}
    assert peak_mib < 500  # decoding it cost 858 MB (greyscale, then RGB)


def test_the_pixel_cap_is_a_setting(anime_root, tmp_path, monkeypatch):
    root = tmp_path / "faces"
    copy_images(anime_root, root, [f"{i}.jpg" for i in range(4)])
    monkeypatch.setenv("PIPELINE_MAX_PIXELS", "1000")  # the anime faces are 96 x 96
    from pipeline.data.ingest import IngestOptions, ingest

    with pytest.raises(PipelineError, match="--max-bad"):
        ingest(ImageFolderSource(root, size=32), IngestOptions(out=str(tmp_path / "o"), workers=1))
    monkeypatch.setenv("PIPELINE_MAX_PIXELS", "lots")
    with pytest.raises(PipelineError, match="PIPELINE_MAX_PIXELS='lots' is not a positive"):
        ingest(ImageFolderSource(root, size=32), IngestOptions(out=str(tmp_path / "p"), workers=1))
