"""`pipeline ingest celeba` on the real CelebA sample (../shared/datasets/celeba) and on
variations of it built in tmp_path: zip, CRLF/LF, missing, malformed and truncated annotation
files, images without a partition row, and in-the-wild photos cut by bounding boxes."""

from __future__ import annotations

import functools
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from tests.sample_data import SHARED
from tests.shard_checks import assert_one_line_error, manifest_of, measured_command, read_plain

SAMPLE = SHARED / "celeba"
ATTR, IDENTITY, PARTITION, BBOX = (
    "list_attr_celeba.txt",
    "identity_CelebA.txt",
    "list_eval_partition.txt",
    "list_bbox_celeba.txt",
)
SPLITS = ("train", "val", "test")


# -- helpers: independent readers (plain pyarrow, plain text) ------------------------------


@functools.lru_cache
def real_lines(name: str) -> tuple[str, ...]:
    return tuple((SAMPLE / name).read_text().splitlines())


@functools.lru_cache
def real_rows(name: str) -> dict[str, list[str]]:
    """The sample's annotation rows as file name -> values (whole rows only)."""
    lines = real_lines(name)[2:] if name == ATTR else real_lines(name)
    rows = {}
    for line in lines:
        parts = line.split()
        if name != ATTR or len(parts) == 41:
            rows[parts[0]] = parts[1:]
    return rows


def expected_attrs(name: str) -> list[int] | None:
    values = real_rows(ATTR).get(name)
    return None if values is None else [1 if v == "1" else 0 for v in values]


def sample_names() -> list[str]:
    """40 sample images: 16 with attribute rows (all train), 8 train, 8 val, 8 test without."""
    names = sorted(os.listdir(SAMPLE / "img_align_celeba"))
    split = {n: int(real_rows(PARTITION)[n][0]) for n in names}
    with_attrs = [n for n in names if n in real_rows(ATTR)][:16]
    rest = [n for n in names if n not in real_rows(ATTR)]
    return sorted(
        with_attrs
        + [n for n in rest if split[n] == 0][:8]
        + [n for n in rest if split[n] == 1][:8]
        + [n for n in rest if split[n] == 2][:8]
    )


def write_annotations(
    folder: Path,
    names: list[str],
    *,
    newline: str = "\r\n",
    released: bool = False,
    skip: tuple[str, ...] = (),
) -> None:
    """The sample's annotation rows for `names` (attr file complete: count = rows present)."""
    anno, evals = (folder / "Anno", folder / "Eval") if released else (folder, folder)
    anno.mkdir(parents=True, exist_ok=True)
    evals.mkdir(parents=True, exist_ok=True)
    if ATTR not in skip:
        rows = [line for line in real_lines(ATTR)[2:] if line.split()[0] in names]
        header = [str(len(rows)), real_lines(ATTR)[1]]
        (anno / ATTR).write_bytes(newline.join(header + rows + [""]).encode())
    for name, where in ((IDENTITY, anno), (PARTITION, evals)):
        if name not in skip:
            rows = [line for line in real_lines(name) if line.split()[0] in names]
            (where / name).write_bytes(newline.join(rows + [""]).encode())


def make_root(
    folder: Path, names: list[str] | None = None, *, zipped: bool = False, **annotations
) -> Path:
    """A CelebA root holding `names` (default: sample_names()) and their annotation rows."""
    names = names or sample_names()
    folder.mkdir(parents=True)
    if zipped:
        with zipfile.ZipFile(folder / "img_align_celeba.zip", "w", zipfile.ZIP_DEFLATED) as z:
            for name in names:
                z.write(SAMPLE / "img_align_celeba" / name, f"img_align_celeba/{name}")
    else:
        (folder / "img_align_celeba").mkdir()
        for name in names:
            shutil.copy(SAMPLE / "img_align_celeba" / name, folder / "img_align_celeba" / name)
    write_annotations(folder, names, **annotations)
    return folder


def flat(text: str) -> str:
    """Rich wraps long lines; compare text with whitespace runs joined."""
    return " ".join(text.split())


def assert_nothing_written(out: Path) -> None:
    assert not out.exists()
    data = Path(os.environ["PIPELINE_DATA"])
    assert not data.exists() or not any(data.iterdir())


def dcgan_crop(path: Path, size: int) -> np.ndarray:
    """DCGAN's CelebA crop by hand: the 108x108 box at the centre of 178x218, Lanczos."""
    photo = Image.open(path).convert("RGB")
    left, top = (photo.width - 108) // 2, (photo.height - 108) // 2
    crop = photo.crop((left, top, left + 108, top + 108))
    return np.asarray(crop.resize((size, size), Image.Resampling.LANCZOS))


def pixels(table: pa.Table, row: int, size: int) -> np.ndarray:
    return np.frombuffer(table.column("image")[row].as_py(), np.uint8).reshape(size, size, 3)


# -- 1. acceptance: the real sample ----------------------------------------------------------


def test_real_sample_splits_attrs_and_truncation_report(cli, celeba_root, tmp_path):
    out = tmp_path / "celeba-64"
    result = cli("ingest", "celeba", "--root", celeba_root, "--out", out, "--size", "64")
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output

    images = sorted(os.listdir(celeba_root / "img_align_celeba"))
    partition = {n: SPLITS[int(real_rows(PARTITION)[n][0])] for n in images}
    tables = {split: read_plain(out / split) for split in SPLITS}
    assert {s: t.num_rows for s, t in tables.items()} == {"train": 1800, "val": 600, "test": 600}
    with_attrs = 0
    for split, table in tables.items():
        assert table.schema.field("image").type == pa.binary(64 * 64 * 3)
        assert table.schema.field("attrs").type == pa.list_(pa.int8(), 40)
        keys = table.column("key").to_pylist()
        assert keys == sorted(n for n in images if partition[n] == split)
        for key, attrs, identity, part in zip(
            keys,
            table.column("attrs").to_pylist(),
            table.column("identity").to_pylist(),
            table.column("partition").to_pylist(),
            strict=True,
        ):
            assert attrs == expected_attrs(key), key
            with_attrs += attrs is not None
            assert identity == int(real_rows(IDENTITY)[key][0])
            assert part == SPLITS.index(split)
    assert with_attrs == 548
    first = tables["val"].column("key")[0].as_py()
    assert np.array_equal(
        pixels(tables["val"], 0, 64), dcgan_crop(celeba_root / "img_align_celeba" / first, 64)
    )

    manifest = manifest_of(out)
    assert manifest["name"] == out.name  # the folder is the name
    assert manifest["labels"] is None
    assert manifest["attributes"] == {"column": "attrs", "names": real_lines(ATTR)[1].split()}
    assert manifest["recipe"]["crop"] == "center"
    assert (manifest["recipe"]["crop_width"], manifest["recipe"]["crop_height"]) == (108, 108)
    counts = manifest["counts"]
    assert counts["images_without_attrs"] == 3000 - 548
    assert (counts["attr_rows"], counts["attr_rows_declared"]) == (20000, 202599)
    for text in (flat(result.stdout), " ".join(manifest["notes"])):
        assert "list_attr_celeba.txt is TRUNCATED" in text
        assert "declares 202599 rows but holds 20000" in text
        assert "2452 of the 3000 ingested images have no attribute row" in text


# -- 2. zip as downloaded == extracted folder ---------------------------------------------------


def test_zip_gives_the_same_rows_as_the_folder(cli, celeba_root, tmp_path):
    folder = make_root(tmp_path / "folder")
    zipped = make_root(tmp_path / "zipped", zipped=True, released=True)
    assert (zipped / "Anno" / ATTR).is_file() and (zipped / "Eval" / PARTITION).is_file()
    (zipped / "Img").mkdir()  # where the release has it
    (zipped / "img_align_celeba.zip").rename(zipped / "Img" / "img_align_celeba.zip")
    for root, workers in ((folder, "1"), (zipped, "2")):  # 2: the zip opened in spawned workers
        result = cli(
            "ingest", "celeba", "--root", root, "--out", root / "out", "--size", "32", "-j", workers
        )
        assert result.exit_code == 0, result.output
    for split in SPLITS:
        a, b = read_plain(folder / "out" / split), read_plain(zipped / "out" / split)
        assert a.num_rows == (16 + 8 if split == "train" else 8)
        assert a.equals(b), split
    assert manifest_of(zipped / "out")["source"]["images"] == str(
        zipped / "Img" / "img_align_celeba.zip"
    )


def test_zip_source_pickles_without_its_handle(celeba_root, tmp_path):
    from pipeline.data.sources.celeba import CelebaSource

    source = CelebaSource(make_root(tmp_path / "zipped", zipped=True), size=32)
    source.plan()
    record = source.read("val", 0)
    assert source._zip is not None  # opened lazily by read
    clone = pickle.loads(pickle.dumps(source))
    assert clone._zip is None
    assert clone.read("val", 0) == record
    assert record.payload == (SAMPLE / "img_align_celeba" / record.key).read_bytes()
    source.close()
    clone.close()


# -- 3. line endings ----------------------------------------------------------------------------


def test_crlf_and_lf_annotations_give_the_same_dataset(cli, celeba_root, tmp_path):
    for newline, name in (("\r\n", "crlf"), ("\n", "lf")):
        root = make_root(tmp_path / name, newline=newline)
        result = cli(
            "ingest",
            "celeba",
            "--root",
            root,
            "--out",
            tmp_path / f"out-{name}",
            "--size",
            "16",
            "-j",
            "1",
        )
        assert result.exit_code == 0, result.output
    assert b"\r\n" in (tmp_path / "crlf" / ATTR).read_bytes()
    assert b"\r" not in (tmp_path / "lf" / ATTR).read_bytes()
    for split in SPLITS:
        a, b = read_plain(tmp_path / "out-crlf" / split), read_plain(tmp_path / "out-lf" / split)
        assert a.equals(b)
    crlf, lf = manifest_of(tmp_path / "out-crlf"), manifest_of(tmp_path / "out-lf")
    assert crlf["attributes"] == lf["attributes"] and crlf["counts"] == lf["counts"]
    assert crlf["counts"]["images_without_attrs"] == 24


# -- 4. missing annotation files ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("missing", "hint"), [(ATTR, "--no-attrs"), (IDENTITY, "--no-identity"), (PARTITION, "Eval")]
)
def test_missing_annotation_file_is_one_line_and_writes_nothing(
    cli, celeba_root, tmp_path, missing, hint
):
    root = make_root(tmp_path / "root", sample_names()[:20], skip=(missing,))
    out = tmp_path / "out"
    result = cli("ingest", "celeba", "--root", root, "--out", out)
    assert_one_line_error(result, missing, str(root), hint)
    assert_nothing_written(out)
    result = cli("ingest", "celeba", "--root", root)  # default output under the data dir
    assert_one_line_error(result, missing)
    assert_nothing_written(out)


def test_no_attrs_and_no_identity_drop_the_columns(cli, celeba_root, tmp_path):
    root = make_root(tmp_path / "root", sample_names()[:20], skip=(ATTR, IDENTITY))
    result = cli(
        "ingest", "celeba", "--root", root, "--no-attrs", "--no-identity", "--size", "16", "-j", "1"
    )
    assert result.exit_code == 0, result.output
    out = Path(os.environ["PIPELINE_DATA"]) / "celeba-16"
    assert read_plain(out / "train").column_names == ["key", "image", "partition"]
    manifest = manifest_of(out)
    assert manifest["attributes"] is None and "images_without_attrs" not in manifest["counts"]


def test_no_root_says_where_to_get_celeba(cli):
    result = cli("ingest", "celeba")
    assert_one_line_error(
        result,
        "mmlab.ie.cuhk.edu.hk/projects/CelebA.html",
        "--root",
        str(Path(os.environ["PIPELINE_DATA"]) / "celeba"),
    )


# -- 5. malformed attribute file ----------------------------------------------------------------


def _edit_attrs(path: Path, edit) -> None:
    lines = path.read_bytes().decode().split("\r\n")
    edit(lines)
    path.write_bytes("\r\n".join(lines).encode())


def _bad_value(lines):
    lines[4] = lines[4].replace(" 1", " 0", 1)


def _missing_value(lines):
    lines[5] = lines[5].rsplit(" ", 1)[0]


def _short_header(lines):
    lines[1] = lines[1].replace("Young ", "")


def _bad_count(lines):
    lines[0] = "about 16"


@pytest.mark.parametrize(
    ("edit", "line", "words"),
    [
        (_bad_value, 5, "'0' is not -1 or 1"),
        (_missing_value, 6, "39 values after the file name, expected 40"),
        (_short_header, 2, "39 column names, expected 40"),
        (_bad_count, 1, "is not the row count"),
    ],
)
def test_malformed_attribute_file_names_file_and_line(
    cli, celeba_root, tmp_path, edit, line, words
):
    root = make_root(tmp_path / "root", sample_names()[:20])
    _edit_attrs(root / ATTR, edit)
    out = tmp_path / "out"
    result = cli("ingest", "celeba", "--root", root, "--out", out)
    assert_one_line_error(result, f"{root / ATTR}, line {line}:", words, "malformed")
    assert_nothing_written(out)


def test_bad_last_row_is_malformed_when_the_file_is_complete(cli, celeba_root, tmp_path):
    """A short last row is a cut only in a file short of its count that ends without a line
    break; in a complete file it is an error, never a silent null."""
    root = make_root(tmp_path / "root", sample_names()[:20])
    _edit_attrs(root / ATTR, lambda lines: lines.__setitem__(-2, lines[-2][:40]))
    result = cli("ingest", "celeba", "--root", root, "--out", tmp_path / "out")
    assert_one_line_error(result, f"{ATTR}, line 18:")


# -- 6. truncated attribute file ------------------------------------------------------------


@pytest.mark.parametrize("cut", [60, 7], ids=["mid-values", "mid-name"])
def test_truncated_attribute_file_cut_mid_line(cli, celeba_root, tmp_path, cut):
    names = sample_names()
    root = make_root(tmp_path / "root", names)
    text = (root / ATTR).read_bytes().decode()
    lines = text.split("\r\n")  # 16 rows: count, header, rows, ""
    assert lines[0] == "16" and len(lines) == 19
    lines[0] = "202599"  # as released; the file ends inside row 12
    cut_row = lines[13].split()[0]
    (root / ATTR).write_bytes("\r\n".join(lines[:13] + [lines[13][:cut]]).encode())
    out = tmp_path / "out"
    result = cli("ingest", "celeba", "--root", root, "--out", out, "--size", "16", "-j", "1")
    assert result.exit_code == 0, result.output

    table = read_plain(out / "train")
    attrs = dict(
        zip(table.column("key").to_pylist(), table.column("attrs").to_pylist(), strict=True)
    )
    with_rows = sorted(n for n in names if n in real_rows(ATTR))
    assert with_rows.index(cut_row) == 11
    for name in with_rows[:11]:
        assert attrs[name] == expected_attrs(name)
    for name in with_rows[11:]:
        assert attrs[name] is None, name  # the cut row and the rows past the end
    manifest = manifest_of(out)
    assert manifest["counts"]["images_without_attrs"] == 40 - 11
    assert (manifest["counts"]["attr_rows"], manifest["counts"]["attr_rows_declared"]) == (
        11,
        202599,
    )
    for text in (flat(result.stdout), " ".join(manifest["notes"])):
        assert "TRUNCATED: it declares 202599 rows but holds 11" in text
        assert "line 14" in text and "cut mid-row" in text
        assert "29 of the 40 ingested images have no attribute row" in text


# -- 7. in-the-wild photos cut by their bounding boxes ------------------------------------------


def _wild_root(folder: Path, names: list[str]) -> tuple[Path, dict[str, np.ndarray]]:
    """Aligned faces pasted into 400x300 grey photos; boxes give where (so only a crop that
    uses the box on the uncropped photo finds the face). Returns the pasted squares."""
    (folder / "img_celeba").mkdir(parents=True)
    faces, rows = {}, []
    rng = np.random.default_rng(0)
    for i, name in enumerate(names):
        face = Image.open(SAMPLE / "img_align_celeba" / name).convert("RGB").crop((0, 20, 178, 198))
        x, y = (0, 0) if i == 0 else (int(rng.integers(0, 222)), int(rng.integers(0, 122)))
        canvas = Image.new("RGB", (400, 300), (128, 128, 128))
        canvas.paste(face, (x, y))
        canvas.save(folder / "img_celeba" / name, quality=95)
        faces[name] = np.asarray(face)
        # a box narrower than tall, centred on the face: its square (side = height) is the face
        rows.append(f"{name} {x + 10:5d} {y:4d} {158:4d} {178:4d}")
    anno = folder / "Anno"
    anno.mkdir()
    (anno / BBOX).write_text(
        "\r\n".join([str(len(rows)), "image_id x_1 y_1 width height"] + rows + [""])
    )
    write_annotations(folder, names, released=True)
    return folder, faces


def test_bbox_crop_cuts_the_box_from_the_uncropped_photo(cli, celeba_root, tmp_path):
    names = sample_names()[::5]
    root, faces = _wild_root(tmp_path / "wild", names)
    result = cli("ingest", "celeba", "--root", root, "--crop", "bbox", "--size", "32", "-j", "1")
    assert result.exit_code == 0, result.output
    out = Path(os.environ["PIPELINE_DATA"]) / "celeba-wild-32"
    manifest = manifest_of(out)
    assert manifest["recipe"]["crop"] == "box" and manifest["source"]["bbox_margin"] == 1.0
    rows = 0
    for split in SPLITS:
        table = read_plain(out / split)
        for i, key in enumerate(table.column("key").to_pylist()):
            expected = np.asarray(
                Image.fromarray(faces[key]).resize((32, 32), Image.Resampling.LANCZOS)
            )
            got = pixels(table, i, 32).astype(int)
            assert np.abs(got - expected).mean() < 3, key
            photo = Image.open(root / "img_celeba" / key)
            centre = np.asarray(photo.crop((50, 0, 350, 300)).resize((32, 32)))
            assert np.abs(got - centre).mean() > 10, key  # not a crop that ignores the box
            rows += 1
    assert rows == len(names)

    # A margin beyond the photo's border is padded with black (the first face is at 0, 0).
    result = cli(
        "ingest",
        "celeba",
        "--root",
        root,
        "--crop",
        "bbox",
        "--bbox-margin",
        "2",
        "--size",
        "32",
        "-j",
        "1",
        "--out",
        tmp_path / "margin2",
    )
    assert result.exit_code == 0, result.output
    table = read_plain(tmp_path / "margin2" / "train")
    first = table.column("key").to_pylist().index(names[0])
    corner = pixels(table, first, 32)[:6, :6]
    assert corner.max() < 10
    face = np.asarray(Image.fromarray(faces[names[0]]).resize((16, 16), Image.Resampling.LANCZOS))
    inner = pixels(table, first, 32)[9:23, 9:23].astype(int)  # away from the ringing at the edge
    assert np.abs(inner - face[1:15, 1:15]).mean() < 5


def test_bbox_crop_needs_the_box_file_and_the_wild_photos(cli, celeba_root, tmp_path):
    root, _ = _wild_root(tmp_path / "wild", sample_names()[:3])
    (root / "Anno" / BBOX).unlink()
    result = cli("ingest", "celeba", "--root", root, "--crop", "bbox", "--out", tmp_path / "o")
    assert_one_line_error(result, BBOX, "--crop bbox")
    shutil.rmtree(root / "img_celeba")
    result = cli("ingest", "celeba", "--root", root, "--crop", "bbox", "--out", tmp_path / "o")
    assert_one_line_error(result, "img_celeba", "7z")
    result = cli("ingest", "celeba", "--root", root, "--bbox-margin", "1.5")
    assert_one_line_error(result, "--bbox-margin applies to --crop bbox only")
    assert_nothing_written(tmp_path / "o")


# -- 8. images without a partition row --------------------------------------------------------


def test_image_without_partition_row_is_counted_and_reported(cli, celeba_root, tmp_path):
    root = make_root(tmp_path / "root", sample_names()[:20])
    shutil.copy(
        SAMPLE / "img_align_celeba" / sample_names()[0], root / "img_align_celeba" / "999999.jpg"
    )
    out = tmp_path / "out"
    result = cli("ingest", "celeba", "--root", root, "--out", out, "--size", "16", "-j", "1")
    assert result.exit_code == 0, result.output
    note = "1 of the 21 images have no row in list_eval_partition.txt and are not ingested"
    manifest = manifest_of(out)
    assert note in flat(result.stdout)
    assert any(note in n and "999999.jpg" in n for n in manifest["notes"])
    assert manifest["counts"]["images_without_partition"] == 1
    assert sum(s["rows"] for s in manifest["splits"].values()) == 20
    keys = [k for s in manifest["splits"] for k in read_plain(out / s).column("key").to_pylist()]
    assert "999999.jpg" not in keys


# -- 9. dry run ---------------------------------------------------------------------------------


def test_dry_run_prints_the_config_and_writes_nothing(cli, celeba_root, tmp_path):
    import yaml

    out = tmp_path / "out"
    result = cli(
        "ingest",
        "celeba",
        "--root",
        celeba_root,
        "--out",
        out,
        "--crop",
        "square",
        "--size",
        "128",
        "--dry-run",
    )
    assert result.exit_code == 0, result.output
    config = yaml.safe_load(result.stdout)
    assert config["source"]["kind"] == "celeba" and config["source"]["crop"] == "square"
    assert config["source"]["images"] == str(celeba_root.resolve() / "img_align_celeba")
    assert config["source"]["attrs"] == str(celeba_root.resolve() / ATTR)
    assert config["options"]["size"] == 128 and config["options"]["out"] == str(out)
    assert_nothing_written(out)


# -- the parts --------------------------------------------------------------------------------


def test_square_box_is_centred_on_the_box():
    from pipeline.data.sources.celeba_crops import square_box

    assert square_box((95, 71, 226, 313), 1.0) == (51, 71, 364, 384)  # odd slack: floor
    left, top, right, bottom = square_box((95, 71, 226, 313), 1.3)
    assert right - left == bottom - top == 407
    assert abs((left + right) / 2 - (95 + 113)) <= 1 and abs((top + bottom) / 2 - (71 + 156.5)) <= 1


def test_default_names_and_limit(celeba_root, tmp_path):
    from pipeline.data.sources.celeba import CelebaSource

    root = make_root(tmp_path / "root")
    assert CelebaSource(root).default_name(64) == "celeba-64"
    assert CelebaSource(root, crop="square").default_name(32) == "celeba-square-32"
    plan = CelebaSource(root, crop="square", size=32).plan(limit=3)
    assert plan.splits == {"train": 3, "val": 3, "test": 3}
    assert plan.recipe.crop == "center-square"


# -- the release's lossless PNG copy of the aligned faces ------------------------------------------


def png_copy(root: Path, names: list[str]) -> None:
    """img_align_celeba_png/ as the release's .7z extracts it: NNNNNN.png, the same pixels."""
    folder = root / "img_align_celeba_png"
    folder.mkdir()
    for name in names:
        with Image.open(SAMPLE / "img_align_celeba" / name) as image:
            image.save(folder / f"{Path(name).stem}.png")


def test_png_folder_is_found_read_and_named_in_the_manifest(cli, celeba_root, tmp_path):
    """PNGs converted from the real sample: the same pixels, so the same shard bytes as the
    JPEG ingest; found by default when it is the only copy; JPEG when both; refused for the
    in-the-wild crop (JPEG only) and when only the .7z is there."""
    names = sample_names()
    jpg_root = make_root(tmp_path / "jpg", names)
    png_root = tmp_path / "png"
    png_root.mkdir()
    png_copy(png_root, names)
    write_annotations(png_root, names)
    args = ["--size", "32", "-j", "1"]
    first = cli("ingest", "celeba", "--root", jpg_root, "--out", tmp_path / "a", *args)
    assert first.exit_code == 0, first.output
    result = cli("ingest", "celeba", "--root", png_root, "--out", tmp_path / "b", *args)
    assert result.exit_code == 0, result.output
    jpg, png = manifest_of(tmp_path / "a"), manifest_of(tmp_path / "b")
    assert png["source"]["image_format"] == "png" and jpg["source"]["image_format"] == "jpg"
    for split in png["splits"]:  # the same pixels in the same order, attributes and all
        assert [s["sha256"] for s in png["splits"][split]["shards"]] == [
            s["sha256"] for s in jpg["splits"][split]["shards"]
        ]

    png_copy(jpg_root, names)  # both copies: JPEG unless asked
    both = cli("ingest", "celeba", "--root", jpg_root, "--out", tmp_path / "c", *args, "--dry-run")
    assert both.exit_code == 0 and "image_format: jpg" in both.output, both.output
    asked = cli("ingest", "celeba", "--root", jpg_root, "--out", tmp_path / "c", *args, "--images",
                "png", "--dry-run")  # fmt: skip
    assert asked.exit_code == 0 and "image_format: png" in asked.output, asked.output

    wild = cli("ingest", "celeba", "--root", png_root, "--crop", "bbox", "--images", "png", *args)
    assert_one_line_error(wild, "--crop bbox", "JPEG only")
    bare = tmp_path / "only-7z"
    bare.mkdir()
    (bare / "img_align_celeba_png.7z").write_bytes(b"7z\xbc\xaf\x27\x1c")
    write_annotations(bare, names)
    packed = cli("ingest", "celeba", "--root", bare, "--images", "png", *args)
    assert_one_line_error(packed, "no img_align_celeba_png/ folder", "extract", "7z x")
    unknown = cli("ingest", "celeba", "--root", png_root, "--images", "tiff", *args)
    assert_one_line_error(unknown, "--images tiff", "auto, jpg, png")


def encrypted_flag(archive: Path, member: str) -> None:
    """Mark `member` encrypted (flag bit 0, in its local and central headers), as a zip made
    with a password has it: zipfile then refuses to read it (RuntimeError)."""
    blob = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as z:
        blob[z.getinfo(member).header_offset + 6] |= 0x01
    name = member.encode()
    at = blob.find(b"PK\x01\x02")
    while at != -1:
        length = int.from_bytes(blob[at + 28 : at + 30], "little")
        if blob[at + 46 : at + 46 + length] == name:
            blob[at + 8] |= 0x01
        at = blob.find(b"PK\x01\x02", at + 4)
    archive.write_bytes(bytes(blob))


def test_a_huge_or_encrypted_zip_member_is_a_bad_record(celeba_root, tmp_path):
    names = sample_names()[:20]
    root = make_root(tmp_path / "root", names, zipped=True)
    huge, locked = (sorted(names)[0], sorted(names)[1])  # both in the train split
    archive = root / "img_align_celeba.zip"
    with (
        zipfile.ZipFile(archive) as old,
        zipfile.ZipFile(tmp_path / "new.zip", "w", zipfile.ZIP_DEFLATED) as new,
    ):
        for info in old.infolist():
            if info.filename == f"img_align_celeba/{huge}":  # 300 MB of zeros in ~300 KB
                with new.open(info.filename, "w", force_zip64=True) as member:
                    for _ in range(300):
                        member.write(bytes(2**20))
            else:
                new.writestr(info, old.read(info))
    (tmp_path / "new.zip").replace(archive)
    assert archive.stat().st_size < 2**20
    encrypted_flag(archive, f"img_align_celeba/{locked}")
    out = tmp_path / "out"
    done, peak_mib = measured_command(
        "ingest", "celeba", "--root", root, "--out", out, "--workers", "1", "--size", "32",
        "--max-bad", "2",
    )  # fmt: skip
    assert done.exit_code == 0, done.stderr
    skipped = {r["key"]: r["reason"] for r in manifest_of(out)["skipped"]["records"]}
    assert skipped[huge] == (
        f"too large: zip member img_align_celeba/{huge} declares 300 MiB, over the 64 MiB a "
        "record may be"
    )
    assert (
        skipped[locked].startswith("damaged zip member: File ") and "encrypted" in skipped[locked]
    )
    assert peak_mib < 500  # reading the member whole cost 694 MB
