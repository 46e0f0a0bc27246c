"""CelebA as released (Liu et al., "Deep Learning Face Attributes in the Wild", ICCV 2015).

The release (https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html, Google Drive) is a folder:

    Img/img_align_celeba.zip      202,599 aligned 178x218 JPEGs under img_align_celeba/
    Img/img_celeba.7z             the same photos in the wild (uncropped), extract to img_celeba/
    Anno/list_attr_celeba.txt     40 binary attributes per image, -1 / 1
    Anno/identity_CelebA.txt      celebrity id per image
    Anno/list_bbox_celeba.txt     face box per image, in the coordinates of the in-the-wild photo
    Eval/list_eval_partition.txt  0 train, 1 val, 2 test

The images may be an extracted folder or the zip as downloaded; the zip is read in place, each
worker opening its own handle (an open ZipFile must not cross a pickle). Annotation files may lie
flat in the root or in Anno/ and Eval/. Only images that exist become records, sorted by file
name within each split, so the order depends on nothing but the input.

Annotation files are checked, never trusted blindly: a row with the wrong number of values or a
value outside the format is an error naming the file and line. A partial download is noticed:
the attribute and box files declare their row count on line 1, and a file that ends early (its
last line perhaps cut mid-row) is reported with numbers; images past the end keep their pixels
and get null attributes, never a guessed label.

Crops (the recipe is recorded in the manifest):
- `dcgan` (default): the 108x108 box at the centre of the aligned image, the crop of the DCGAN
  CelebA experiments (carpedm20/DCGAN-tensorflow, pytorch/examples), then Lanczos to --size.
- `square`: the centred 178x178 square of the aligned image (face plus hair and background).
- `bbox`: the in-the-wild photos cut by list_bbox_celeba.txt: a square centred on the box, side
  max(width, height) * margin. The default margin is 1.0 because the released boxes are already
  loose head boxes (a fixed height/width ratio of about 1.39), so the square of side max(w, h)
  holds the whole box and widens it to a square; a larger margin adds background, and more
  black padding where a face is near the photo's border.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline.config import ConfigError
from pipeline.data.shards import Column
from pipeline.data.sources.base import Plan, Record, Source, fingerprint
from pipeline.data.transforms import BadRecord, Recipe
from pipeline.errors import PipelineError

URL = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
ATTR_FILE = "list_attr_celeba.txt"
IDENTITY_FILE = "identity_CelebA.txt"
PARTITION_FILE = "list_eval_partition.txt"
BBOX_FILE = "list_bbox_celeba.txt"
SPLITS = ("train", "val", "test")  # partition values 0, 1, 2
CROPS = ("dcgan", "square", "bbox")
ATTRIBUTES = 40
DCGAN_CROP = 108
DEFAULT_BBOX_MARGIN = 1.0
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
EXAMPLES = 3  # file names quoted in a note


# -- finding the files ---------------------------------------------------------------------


@dataclass(frozen=True)
class CelebaFiles:
    """Where the images and annotation files of one CelebA root are."""

    root: Path
    images: Path  # a folder of images, or a zip holding them under `image_folder`/
    image_folder: str  # img_align_celeba (aligned) or img_celeba (in the wild)
    partition: Path
    attrs: Path | None
    identity: Path | None
    bbox: Path | None

    @property
    def zipped(self) -> bool:
        return self.images.suffix.lower() == ".zip"

    def describe(self) -> dict:
        return {
            "root": str(self.root),
            "images": str(self.images),
            "partition": str(self.partition),
            "attrs": str(self.attrs) if self.attrs else None,
            "identity": str(self.identity) if self.identity else None,
            **({"bbox": str(self.bbox)} if self.bbox else {}),
        }


def locate(
    root: str | Path | None, crop: str = "dcgan", *, attrs: bool = True, identity: bool = True
) -> CelebaFiles:
    """Find the images and annotation files under `root` (default: <data dir>/celeba)."""
    from pipeline.settings import data_dir

    check_crop(crop)
    if root is None:
        root = data_dir() / "celeba"
        if not root.is_dir():
            raise PipelineError(
                f"CelebA not found at {root}; download img_align_celeba.zip and the Anno/ and "
                f"Eval/ files from {URL} (Google Drive link there) and pass --root FOLDER"
            )
    root = Path(root).expanduser()
    if not root.is_dir():
        raise PipelineError(
            f"CelebA root {root} is not a folder; pass --root FOLDER holding "
            "img_align_celeba/ (or img_align_celeba.zip) and the annotation files"
        )
    root = root.resolve()
    folder = "img_celeba" if crop == "bbox" else "img_align_celeba"
    return CelebaFiles(
        root=root,
        images=_find_images(root, folder),
        image_folder=folder,
        partition=_find_annotation(root, PARTITION_FILE, "Eval", " (it gives each image's split)"),
        attrs=_find_annotation(
            root, ATTR_FILE, "Anno", ", or pass --no-attrs to ingest without attributes"
        )
        if attrs
        else None,
        identity=_find_annotation(
            root, IDENTITY_FILE, "Anno", ", or pass --no-identity to ingest without identities"
        )
        if identity
        else None,
        bbox=_find_annotation(
            root, BBOX_FILE, "Anno", " (--crop bbox needs it), or choose --crop dcgan|square"
        )
        if crop == "bbox"
        else None,
    )


def _find_images(root: Path, folder: str) -> Path:
    candidates = [
        root / folder,
        root / "Img" / folder,
        root / f"{folder}.zip",
        root / "Img" / f"{folder}.zip",
    ]
    for path in candidates:
        if path.is_dir():
            nested = path / folder  # some mirrors (Kaggle) nest the folder in itself
            return nested if nested.is_dir() and not _has_images(path) else path
        if path.is_file():
            return path
    hint = (
        " (the release ships the in-the-wild photos as Img/img_celeba.7z: extract it)"
        if folder == "img_celeba"
        else f" (download it from {URL})"
    )
    raise PipelineError(f"no {folder}/ folder or {folder}.zip in {root} or {root / 'Img'}{hint}")


def _has_images(path: Path) -> bool:
    return any(_is_image(entry.name) for entry in os.scandir(path))


def _find_annotation(root: Path, name: str, subfolder: str, remedy: str) -> Path:
    for path in (root / name, root / subfolder / name):
        if path.is_file():
            return path
    raise PipelineError(
        f"{name} not found in {root} or {root / subfolder}; download "
        f"{subfolder}/{name} from {URL}{remedy}"
    )


def check_crop(crop: str) -> None:
    if crop not in CROPS:
        raise ConfigError(f"unknown crop {crop!r}; choose one of: {', '.join(CROPS)}")


def check_bbox_margin(crop: str, margin: float | None) -> float:
    """The margin to use (the default when None); only --crop bbox takes one."""
    if margin is None:
        return DEFAULT_BBOX_MARGIN
    if crop != "bbox":
        raise ConfigError(f"--bbox-margin applies to --crop bbox only, not --crop {crop}")
    if not 0 < margin <= 10:
        raise ConfigError(f"--bbox-margin {margin} must be within (0, 10]")
    return float(margin)


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith(".")


# -- annotation files ----------------------------------------------------------------------


@dataclass
class Annotation:
    """One parsed annotation file: a value per image file name, and how complete it is.

    `declared` is the row count line 1 states (attribute and box files), `cut` the line number
    of an unterminated last line that was dropped because it may be cut mid-row.
    """

    path: Path
    rows: dict[str, Any]
    names: list[str] | None = None
    declared: int | None = None
    cut: int | None = None
    last_key: str | None = None
    sha256: str = ""

    @property
    def truncated(self) -> bool:
        return self.declared is not None and len(self.rows) < self.declared


def _attr_values(values: list[str]) -> bytes:
    if len(values) != ATTRIBUTES:
        raise ValueError(f"{len(values)} values after the file name, expected {ATTRIBUTES}")
    if not set(values) <= {"1", "-1"}:
        bad = next(v for v in values if v not in ("1", "-1"))
        raise ValueError(f"value {bad!r} is not -1 or 1")
    return bytes(v == "1" for v in values)  # -1/1 -> 0/1


def _identity_value(values: list[str]) -> int:
    if len(values) != 1:
        raise ValueError(f"{len(values)} values after the file name, expected 1 (the identity)")
    if not values[0].isdigit() or int(values[0]) >= 2**31:
        raise ValueError(f"identity {values[0]!r} is not a non-negative integer")
    return int(values[0])


def _partition_value(values: list[str]) -> int:
    if len(values) != 1:
        raise ValueError(f"{len(values)} values after the file name, expected 1 (the partition)")
    if values[0] not in ("0", "1", "2"):
        raise ValueError(f"partition {values[0]!r} is not 0, 1 or 2")
    return int(values[0])


def _bbox_value(values: list[str]) -> tuple[int, int, int, int]:
    if len(values) != 4:
        raise ValueError(
            f"{len(values)} values after the file name, expected 4 (x_1 y_1 width height)"
        )
    try:
        x, y, w, h = (int(v) for v in values)
    except ValueError:
        raise ValueError(f"box {' '.join(values)!r} is not four integers") from None
    if w <= 0 or h <= 0:
        raise ValueError(f"box {' '.join(values)!r} has no area")
    return x, y, w, h


def parse_annotation(
    path: Path,
    row: Callable[[list[str]], Any],
    *,
    header: int | None = None,
    exact_last_row: bool = True,
) -> Annotation:
    """Parse a CelebA annotation file: rows `<file name> <values...>`, split on whitespace.

    `header`: the file opens with a row count (line 1) and `header` column names (line 2).
    `exact_last_row`: a last row without a line break can be trusted when it parses, because
    no cut can turn its values into other valid ones (-1/1, 0/1/2). Multi-digit numbers can be
    cut into other numbers ("5570" -> "55"), so files of those drop such a row, with a note.
    A last line without a line break that does not parse is a cut row when the file is short
    of its declared count (or declares none); anywhere else a bad row is an error.
    """
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PipelineError(
            f"{path} is not a text annotation file (byte {exc.start} is not UTF-8); re-download it"
        ) from None
    lines = text.splitlines()  # CRLF and LF alike
    terminated = text.rstrip(" \t").endswith(("\n", "\r"))  # does the last row end?
    table = Annotation(path=path, rows={}, sha256=hashlib.sha256(data).hexdigest())
    first = 0
    if header is not None:
        if len(lines) < 2:
            raise _malformed(
                path,
                len(lines) + 1,
                "the file ends before its two header lines (row count, column names)",
            )
        count = lines[0].strip()
        if not count.isdigit():
            raise _malformed(path, 1, f"{count[:30]!r} is not the row count")
        table.declared = int(count)
        table.names = lines[1].split()
        if len(table.names) != header:
            raise _malformed(
                path, 2, f"the header has {len(table.names)} column names, expected {header}"
            )
        first = 2
    last = len(lines) - 1
    while last >= first and not lines[last].strip():
        last -= 1
    rows = table.rows
    for i in range(first, last + 1):
        parts = lines[i].split()
        if not parts:
            continue
        unterminated = i == last and not terminated
        try:
            value = row(parts[1:])
        except ValueError as exc:
            short = table.declared is None or len(rows) < table.declared
            if unterminated and short:
                table.cut = i + 1
                break
            raise _malformed(path, i + 1, str(exc)) from None
        if unterminated and not exact_last_row:
            table.cut = i + 1
            break
        key = parts[0]
        if key in rows:
            raise _malformed(path, i + 1, f"{key} is listed twice")
        rows[key] = value
        table.last_key = key
    if table.declared is not None and len(rows) > table.declared:
        raise _malformed(path, 1, f"it declares {table.declared} rows but holds {len(rows)}")
    return table


def _malformed(path: Path, line: int, reason: str) -> PipelineError:
    return PipelineError(
        f"{path}, line {line}: {reason}; the file is malformed (re-download it from {URL})"
    )


def read_attributes(path: Path) -> Annotation:
    """list_attr_celeba.txt: count, 40 names, rows of 40 values -1/1 (kept as bytes of 0/1)."""
    return parse_annotation(path, _attr_values, header=ATTRIBUTES)


def read_identities(path: Path) -> Annotation:
    return parse_annotation(path, _identity_value, exact_last_row=False)


def read_partitions(path: Path) -> Annotation:
    return parse_annotation(path, _partition_value)


def read_boxes(path: Path) -> Annotation:
    """list_bbox_celeba.txt: count, `image_id x_1 y_1 width height`, rows of four integers."""
    return parse_annotation(path, _bbox_value, header=5, exact_last_row=False)


def square_box(box: tuple[int, int, int, int], margin: float) -> tuple[int, int, int, int]:
    """The square (left, top, right, bottom) centred on box (x, y, w, h), side max(w, h)*margin."""
    x, y, w, h = box
    side = max(1, round(max(w, h) * margin))
    left, top = x + (w - side) // 2, y + (h - side) // 2
    return left, top, left + side, top + side


# -- the source ----------------------------------------------------------------------------


class CelebaSource(Source):
    """CelebA images with their official split, 40 attributes and identity."""

    kind = "celeba"

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        crop: str = "dcgan",
        size: int = 64,
        bbox_margin: float | None = None,
        attrs: bool = True,
        identity: bool = True,
    ):
        self.files = locate(root, crop, attrs=attrs, identity=identity)
        self.bbox_margin = check_bbox_margin(crop, bbox_margin)
        self.crop = crop
        self.size = size
        self._records: dict[str, list[tuple]] = {}
        self._zip: zipfile.ZipFile | None = None

    def default_name(self, size: int) -> str:
        return {"dcgan": "celeba", "square": "celeba-square", "bbox": "celeba-wild"}[
            self.crop
        ] + f"-{size}"

    @property
    def recipe(self) -> Recipe:
        if self.crop == "dcgan":
            return Recipe(
                size=self.size,
                mode="RGB",
                crop="center",
                crop_width=DCGAN_CROP,
                crop_height=DCGAN_CROP,
            )
        if self.crop == "square":
            return Recipe(size=self.size, mode="RGB", crop="center-square")
        return Recipe(size=self.size, mode="RGB", crop="box")

    def plan(self, limit: int | None = None) -> Plan:
        files = self.files
        images, listing = self._list_images()
        partitions = read_partitions(files.partition)
        attrs = read_attributes(files.attrs) if files.attrs else None
        identities = read_identities(files.identity) if files.identity else None
        boxes = read_boxes(files.bbox) if files.bbox else None
        notes: list[str] = []
        counts: dict[str, int] = {"images_found": len(images)}

        # Split by the official partition; an image with no row there has no split.
        by_split: dict[str, list[str]] = {split: [] for split in SPLITS}
        unassigned = []
        for name in sorted(images):
            partition = partitions.rows.get(name)
            if partition is None:
                unassigned.append(name)
            else:
                by_split[SPLITS[partition]].append(name)
        counts["images_without_partition"] = len(unassigned)
        if unassigned:
            notes.append(
                f"{len(unassigned)} of the {len(images)} images have no row in "
                f"{files.partition.name} and are not ingested (no split): "
                f"{_examples(unassigned)}{_cut_note(partitions)}"
            )
        if boxes is not None:
            boxless = [n for names in by_split.values() for n in names if n not in boxes.rows]
            counts["images_without_bbox"] = len(boxless)
            if boxless:
                notes.append(
                    f"{len(boxless)} image(s) have no box in {files.bbox.name} and are "
                    f"not ingested: {_examples(boxless)}{_cut_note(boxes)}"
                )
                by_split = {
                    s: [n for n in names if n in boxes.rows] for s, names in by_split.items()
                }
        if limit is not None:
            by_split = {s: names[:limit] for s, names in by_split.items()}
        by_split = {s: names for s, names in by_split.items() if names}
        ingested = [n for names in by_split.values() for n in names]
        if not ingested:
            lacking = files.partition if len(unassigned) == len(images) else files.bbox
            raise PipelineError(
                f"none of the {len(images)} images in {files.images} has a row "
                f"in {lacking} (e.g. {_examples(sorted(images))}): are these the "
                "annotation files of these images?"
            )

        columns = []
        attributes = None
        if attrs is not None:
            columns.append(
                Column(
                    "attrs",
                    pa.list_(pa.int8(), ATTRIBUTES),
                    "CelebA's 40 binary attributes as 0/1 (file: -1/1), named in manifest "
                    "attributes.names; null when the image has no row in list_attr_celeba.txt",
                )
            )
            attributes = {"column": "attrs", "names": attrs.names}
            missing = sum(1 for n in ingested if n not in attrs.rows)
            counts.update(
                images_without_attrs=missing,
                attr_rows=len(attrs.rows),
                attr_rows_declared=attrs.declared,
            )
            notes += _attr_notes(attrs, missing, len(ingested))
        if identities is not None:
            columns.append(
                Column(
                    "identity",
                    pa.int32(),
                    "celebrity id from identity_CelebA.txt; null when the image has no row",
                )
            )
            missing = sum(1 for n in ingested if n not in identities.rows)
            counts["images_without_identity"] = missing
            if missing:
                notes.append(
                    f"{missing} of the {len(ingested)} ingested images have no row in "
                    f"{files.identity.name}: their identity is null"
                    f"{_cut_note(identities)}"
                )
        columns.append(
            Column(
                "partition",
                pa.int8(),
                "official partition from list_eval_partition.txt: 0 train, 1 val, 2 test",
            )
        )

        # The records, in order; workers get them with the source (a few MB for all of CelebA).
        self._records = {}
        for split, names in by_split.items():
            records = []
            for name in names:
                values: dict[str, Any] = {}
                if attrs is not None:
                    values["attrs"] = attrs.rows.get(name)
                if identities is not None:
                    values["identity"] = identities.rows.get(name)
                values["partition"] = SPLITS.index(split)
                box = square_box(boxes.rows[name], self.bbox_margin) if boxes else None
                records.append((name, images[name], values, box))
            self._records[split] = records

        annotations = [t for t in (partitions, attrs, identities, boxes) if t is not None]
        return Plan(
            splits={split: len(records) for split, records in self._records.items()},
            recipe=self.recipe,
            fingerprint=fingerprint(
                self.kind,
                self.crop,
                self.bbox_margin if boxes else None,
                listing,
                [[t.path.name, t.sha256] for t in annotations],
            ),
            columns=columns,
            labels=None,  # attributes are not classes
            attributes=attributes,
            description={
                **files.describe(),
                "crop": self.crop,
                **({"bbox_margin": self.bbox_margin} if boxes else {}),
            },
            notes=notes,
            counts=counts,
        )

    def _list_images(self) -> tuple[dict[str, str], bytes]:
        """Image file name -> path in the folder or member in the zip, plus a cheap listing
        (names and sizes, or zip member names, CRCs and sizes) for the fingerprint."""
        files = self.files
        images: dict[str, str] = {}
        lines = []
        if files.zipped:
            try:
                with zipfile.ZipFile(files.images) as archive:
                    infos = archive.infolist()
            except (zipfile.BadZipFile, OSError) as exc:
                raise PipelineError(f"cannot read {files.images}: {exc}; re-download it") from None
            for info in infos:
                parts = info.filename.split("/")
                if (
                    info.is_dir()
                    or len(parts) < 2
                    or parts[-2] != files.image_folder
                    or parts[0] == "__MACOSX"
                    or not _is_image(parts[-1])
                ):
                    continue
                if parts[-1] in images:
                    raise PipelineError(
                        f"{files.images} holds {parts[-1]} twice "
                        f"({images[parts[-1]]}, {info.filename})"
                    )
                images[parts[-1]] = info.filename
                lines.append(f"{info.filename}\t{info.CRC}\t{info.file_size}")
            where = f"{files.images} (under {files.image_folder}/)"
        else:
            with os.scandir(files.images) as entries:
                for entry in entries:
                    if _is_image(entry.name) and entry.is_file():
                        images[entry.name] = entry.name
                        lines.append(f"{entry.name}\t{entry.stat().st_size}")
            where = str(files.images)
        if not images:
            raise PipelineError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {where}")
        lines.sort()
        return images, "\n".join(lines).encode()

    def read(self, split: str, index: int) -> Record:
        name, location, values, box = self._records[split][index]
        if self.files.zipped:
            if self._zip is None:
                self._zip = zipfile.ZipFile(self.files.images)
            try:
                payload = self._zip.read(location)
            except (zipfile.BadZipFile, OSError) as exc:
                raise BadRecord(f"damaged zip member: {exc}", key=name) from None
        else:
            path = self.files.images / location
            try:
                payload = path.read_bytes()
            except OSError as exc:
                raise BadRecord(f"unreadable file: {exc.strerror or exc}", key=name) from None
        if values.get("attrs") is not None:
            values = {**values, "attrs": list(values["attrs"])}
        return Record(key=name, payload=payload, values=values, box=box)

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_zip": None}


def _examples(names: list[str]) -> str:
    return ", ".join(names[:EXAMPLES]) + (", ..." if len(names) > EXAMPLES else "")


def _cut_note(table: Annotation) -> str:
    if table.cut is None:
        return ""
    return (
        f" ({table.path.name} ends without a line break and its last line, line {table.cut}, "
        "may be cut short: it was ignored; is the file truncated?)"
    )


def _attr_notes(attrs: Annotation, missing: int, ingested: int) -> list[str]:
    name = attrs.path.name
    if attrs.truncated:
        cut = (
            f"; its last line (line {attrs.cut}) is cut mid-row and was ignored"
            if attrs.cut is not None
            else ""
        )
        last = f"the last complete row is {attrs.last_key}" if attrs.rows else "no complete row"
        effect = (
            f"{missing} of the {ingested} ingested images have no attribute row and get "
            "null attrs (re-download the file to label them)"
            if missing
            else f"all {ingested} ingested images have their row"
        )
        return [
            f"{name} is TRUNCATED: it declares {attrs.declared} rows but holds "
            f"{len(attrs.rows)} ({last}){cut}; {effect}"
        ]
    if missing:
        return [
            f"{missing} of the {ingested} ingested images have no row in {name}: their "
            "attrs are null"
        ]
    return []
