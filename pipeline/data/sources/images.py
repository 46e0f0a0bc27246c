"""A folder of images, optionally labelled by sub-folder or by a CSV (`pipeline ingest images`).

Images are found recursively (extensions jpg, jpeg, png, webp, bmp, gif in any case; hidden
files and folders are ignored; symlinked folders are not followed) and taken in the order of
their path relative to the root, so the same folder always gives the same shards. The name is
only a filter: decoding is by content (`transforms.prepare`), and a file that turns out not to
be an image is skipped and listed in the manifest like any bad record. Each image is cut to its
largest centred square and resized with Lanczos. Everything is the `train` split, unless
`--val FRACTION` holds out as `val` the images whose relative path hashes into the fraction.

Labels, one or more groups of classes (at most 32,768 each), each an int16 column holding a
class index:

- No `--labels`: when the images sit in two or more sub-folders, the top-level sub-folder is
  the class (one group `label`, classes = the sorted folder names; images directly in the
  root get a null label). A single sub-folder (e.g. `extra_data/images/`) is no class at all.
- `--labels CSV` with a header row (its first cell made of the words in
  `labels_csv.ID_HEADER_WORDS`, e.g. `id,hair,eyes`, `file,label`, `image_name,breed`): one
  group per column after the first.
- `--labels CSV` without a header: rows are `id,<tags>`. When the first row's tags are two or
  more `<value> <group>` pairs of single words (the anime set's `0,aqua hair aqua eyes`), each
  group word is a group (`hair`, `eyes`) and every row must carry the same groups in the same
  order. Otherwise the whole tag text is the class of a single group.

One group is the column `label`; several are `label_<group>` (`label_hair`, `label_eyes`).
A group's classes are the values seen in the WHOLE CSV, sorted (numerically when they are all
integers), so the class indices do not depend on which images are present. An empty cell is a
missing label (null). Blank lines are ignored. Any other row out of form (a quote that does
not close, a quoted cell over several lines, wrong number of columns, tags not in the form of
the first row, an empty id, an id given twice) is an error naming the file and line: a label
file that is half right is not applied half-way.

CSV ids match images by relative path (`images/0.jpg`), by relative path without extension
(`images/0`), or by bare file stem (`0`) when that stem is unique. Rows whose id names no image
and images that no row names are counted and reported in the manifest's notes; such images
keep a null label.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.data import limits
from pipeline.data.sources.base import Plan, Record, Source, check_val, fingerprint, held_out_key
from pipeline.data.sources.labels_csv import LabelTable, read_labels_csv
from pipeline.data.transforms import BadRecord, Recipe
from pipeline.errors import PipelineError

EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
# Root folder names that say nothing about the dataset: the default name uses the parent's.
GENERIC_ROOTS = ("extra_data", "images", "imgs", "img", "data", "train", "all", "photos")
MISSING = -1
MAX_CLASSES = np.iinfo(np.int16).max + 1  # class indices 0..32767 in an int16 column
EXAMPLES = 3


@dataclass
class LabelGroup:
    """One group of classes and, per image, the index of its class (MISSING for none)."""

    name: str
    column: str
    classes: list[str]
    header: str | None = None

    def spec(self) -> dict:
        spec = {"name": self.name, "column": self.column, "classes": self.classes}
        if self.header is not None:
            spec["header"] = self.header
        return spec


def check_root(root: str | Path) -> Path:
    """The image folder `root`, absolute; a `PipelineError` when it is not a folder."""
    path = Path(root).expanduser()
    if not path.exists():
        raise PipelineError(
            f"image folder {path} does not exist; pass --root DIR, the folder that holds the images"
        )
    if not path.is_dir():
        raise PipelineError(
            f"--root {path} is a file, not a folder; pass the folder that holds the images"
        )
    return path.resolve()


def check_labels_file(labels: str | Path) -> Path:
    path = Path(labels).expanduser()
    if not path.is_file():
        raise PipelineError(
            f"labels file {path} does not exist; pass --labels FILE.csv or leave it out"
        )
    return path.resolve()


def check_name(name: str) -> str:
    if not name.strip() or "/" in name or "\\" in name or name.strip() in (".", ".."):
        raise PipelineError(
            f"--name {name!r} must be a plain folder name (no slashes); use --out "
            "to choose another place"
        )
    return name.strip()


def default_dataset_name(root: Path, size: int) -> str:
    """`<root folder>-<size>`, or `<parent folder>-<size>` when the root's own name is generic."""
    folder = root.name
    if folder.lower() in GENERIC_ROOTS and root.parent.name:
        folder = root.parent.name
    slug = re.sub(r"[^a-z0-9.]+", "-", folder.lower()).strip("-.") or "images"
    return f"{slug}-{size}"


class ImageFolderSource(Source):
    """A folder of images (all `train`), labelled by sub-folder, by a CSV, or not at all."""

    kind = "images"

    def __init__(
        self,
        root: str | Path,
        labels: str | Path | None = None,
        name: str | None = None,
        size: int = 64,
        val: float = 0.0,
    ):
        self.root = check_root(root)
        self.val = check_val(val)
        self.labels_path = check_labels_file(labels) if labels is not None else None
        self.name = check_name(name) if name is not None else None
        self.size = size
        # Per split: a list of paths (a numpy str array pads every path to the longest) and
        # the label columns of the same rows.
        self._paths: dict[str, list[str]] = {}
        self._groups: list[LabelGroup] = []
        self._labels: dict[str, dict[str, np.ndarray]] = {}

    def default_name(self, size: int) -> str:
        return self.name or default_dataset_name(self.root, size)

    def plan(self, limit: int | None = None) -> Plan:
        files = find_images(self.root)
        if not files:
            raise PipelineError(
                f"no images in {self.root} (looked for {', '.join(EXTENSIONS)} files in it and "
                "its sub-folders); check --root"
            )
        paths = [rel for rel, _, _ in files]
        notes: list[str] = []
        counts: dict[str, int] = {"images": len(paths)}
        labels_digest = None
        if self.labels_path is not None:
            table = read_labels_csv(self.labels_path)
            groups, indices = match_labels(table, paths, notes, counts)
            labels_digest = table.sha256
        else:
            groups, indices = folder_labels(paths, notes, counts)

        held_out = np.array([held_out_key(path, self.val) for path in paths], dtype=bool)
        self._groups = groups
        for split, rows in (("train", ~held_out), ("val", held_out))[: 2 if self.val else 1]:
            chosen = np.flatnonzero(rows)[:limit]
            self._paths[split] = [paths[i] for i in chosen]
            self._labels[split] = {g.column: indices[g.column][chosen] for g in groups}
        if self.val and not self._paths["val"]:
            raise PipelineError(
                f"--val {self.val} holds out none of the {len(paths)} images in {self.root}: "
                "raise it, or leave it out"
            )
        columns = [_column(g, self.labels_path) for g in groups]
        description = {
            "root": str(self.root),
            "extensions": list(EXTENSIONS),
            "val_fraction": self.val,
            "labels_from": (
                "csv" if self.labels_path is not None else "folders" if groups else None
            ),
        }
        if self.labels_path is not None:
            description["labels_file"] = str(self.labels_path)
        return Plan(
            splits={split: len(rows) for split, rows in self._paths.items()},
            recipe=Recipe(size=self.size, mode="RGB", crop="center-square"),
            fingerprint=fingerprint(
                self.kind,
                [list(f) for f in files],
                labels_digest,
                [g.spec() for g in groups],
                *([["val", self.val]] if self.val else []),  # without it, as before --val
            ),
            columns=columns,
            labels={"groups": [g.spec() for g in groups]} if groups else None,
            description=description,
            notes=notes,
            counts=counts,
        )

    def read(self, split: str, index: int) -> Record:
        relative = self._paths[split][index]
        path = self.root / relative
        try:
            payload = limits.read_file(path)
        except limits.TooLarge as exc:
            raise BadRecord(str(exc), key=relative) from None
        except OSError as exc:
            raise BadRecord(f"unreadable file: {exc.strerror or exc}", key=relative) from None
        values = {}
        for column, indices in self._labels[split].items():
            value = int(indices[index])
            values[column] = None if value == MISSING else value
        return Record(key=relative, payload=payload, values=values)


def _column(group: LabelGroup, labels_path: Path | None):
    import pyarrow as pa

    from pipeline.data.shards import Column

    origin = f"{labels_path.name}" if labels_path is not None else "its sub-folder"
    return Column(
        group.column,
        pa.int16(),
        doc=f"{group.name} class index into labels.groups[{group.name}].classes, from "
        f"{origin}; null when unknown",
    )


# -- finding images ------------------------------------------------------------------------


def find_images(root: Path) -> list[tuple[str, int, int]]:
    """(relative posix path, size, mtime_ns) of every image file under `root`, sorted by path."""

    def fail(exc: OSError) -> None:
        raise PipelineError(
            f"cannot list {exc.filename}: {exc.strerror}; fix its permissions "
            "or choose another --root"
        )

    found = []
    for folder, dirs, names in os.walk(root, onerror=fail):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if name.startswith(".") or not name.lower().endswith(EXTENSIONS):
                continue
            path = Path(folder, name)
            relative = path.relative_to(root).as_posix()
            try:
                relative.encode("utf-8")
            except UnicodeEncodeError:
                shown = os.fsencode(relative).decode("utf-8", "backslashreplace")
                raise PipelineError(
                    f"the file name '{shown}' under {root} is not UTF-8; rename it (e.g. with "
                    "convmv) or move it out of --root"
                ) from None
            try:
                stat = path.stat()
            except OSError as exc:
                raise PipelineError(
                    f"cannot read {path}: {exc.strerror} (a broken link?); fix or remove it"
                ) from None
            if not path.is_file():
                continue
            found.append((relative, stat.st_size, stat.st_mtime_ns))
    found.sort()
    return found


def folder_labels(paths: list[str], notes: list[str], counts: dict) -> tuple[list, dict]:
    """One group `label` from the top-level sub-folders, when there are two or more."""
    top = [p.split("/", 1)[0] if "/" in p else None for p in paths]
    classes = sorted({t for t in top if t is not None})
    if len(classes) < 2:
        if classes:
            notes.append(
                f"all images sit in the one sub-folder {classes[0]!r}: no class labels "
                "(sub-folder labels need two or more class folders; or pass --labels)"
            )
        return [], {}
    check_class_count("label", classes, "the sub-folders of --root")
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index[t] if t is not None else MISSING for t in top], dtype=np.int16)
    loose = int((labels == MISSING).sum())
    counts["classes"] = len(classes)
    if loose:
        counts["images_without_label"] = loose
        notes.append(
            f"{loose:,} image(s) sit directly in the root, outside the class folders: "
            f"kept with a null label (e.g. {', '.join(_examples(paths, labels))})"
        )
    return [LabelGroup("label", "label", classes)], {"label": labels}


# -- labels from a CSV ---------------------------------------------------------------------


def match_labels(
    table: LabelTable, paths: list[str], notes: list[str], counts: dict
) -> tuple[list[LabelGroup], dict[str, np.ndarray]]:
    """Class indices per image from the CSV rows; counts rows without image and vice versa."""
    by_path = {p: i for i, p in enumerate(paths)}
    by_relstem: dict[str, list[int]] = defaultdict(list)
    by_stem: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(paths):
        relstem = _strip_extension(p)
        by_relstem[relstem].append(i)
        by_stem[relstem.rsplit("/", 1)[-1]].append(i)

    classes = [
        _sorted_classes({v[g] for _, _, v in table.rows if v[g] is not None})
        for g in range(len(table.groups))
    ]
    for group, cs in zip(table.groups, classes, strict=True):
        check_class_count(group, cs, f"labels file {table.path}")
    class_index = [{c: i for i, c in enumerate(cs)} for cs in classes]
    labels = np.full((len(table.groups), len(paths)), MISSING, dtype=np.int16)
    seen_ids: dict[str, int] = {}
    seen_images: dict[int, tuple[int, str]] = {}
    unmatched: list[str] = []
    for line, row_id, values in table.rows:
        if row_id in seen_ids:
            raise PipelineError(
                f"labels file {table.path} line {line}: id {row_id!r} repeats "
                f"line {seen_ids[row_id]}; keep one row per image"
            )
        seen_ids[row_id] = line
        ident = row_id.replace("\\", "/").removeprefix("./")
        if ident in by_path:
            found = [by_path[ident]]
        else:
            base = _strip_extension(ident)
            found = by_relstem.get(base) or ([] if "/" in base else by_stem.get(base, []))
        if len(found) > 1:
            names = ", ".join(paths[i] for i in found[:EXAMPLES])
            raise PipelineError(
                f"labels file {table.path} line {line}: id {row_id!r} matches "
                f"several images ({names}); use the path relative to the root"
            )
        if not found:
            unmatched.append(row_id)
            continue
        image = found[0]
        if image in seen_images:
            other_line, other_id = seen_images[image]
            raise PipelineError(
                f"labels file {table.path} line {line}: id {row_id!r} names the "
                f"same image as line {other_line} ({other_id!r}); keep one row"
            )
        seen_images[image] = (line, row_id)
        for g, value in enumerate(values):
            if value is not None:
                labels[g, image] = class_index[g][value]

    name = table.path.name
    counts.update(
        {
            "csv_rows": len(table.rows),
            "rows_without_image": len(unmatched),
            "images_without_row": len(paths) - len(seen_images),
        }
    )
    if unmatched:
        notes.append(
            f"{len(unmatched):,} of {len(table.rows):,} rows in {name} name no image "
            f"under the root (e.g. {', '.join(unmatched[:EXAMPLES])}); their classes "
            "still count in the class lists"
        )
    missing = [p for i, p in enumerate(paths) if i not in seen_images]
    if missing:
        notes.append(
            f"{len(missing):,} of {len(paths):,} images have no row in {name}: kept "
            f"with null labels (e.g. {', '.join(missing[:EXAMPLES])})"
        )
    # A single group is always `label`; keep the header it had (`file,breed`) for the record.
    header = table.headers[0] if table.headers is not None and len(table.headers) == 1 else None
    groups = [
        LabelGroup(g, c, cs, header=header)
        for g, c, cs in zip(table.groups, table.columns, classes, strict=True)
    ]
    return groups, {g.column: labels[i] for i, g in enumerate(groups)}


def check_class_count(group: str, classes: list[str], where: str) -> None:
    """A label column is int16: a group of more classes than it can index is refused."""
    if len(classes) > MAX_CLASSES:
        raise PipelineError(
            f"{where}: group {group!r} has {len(classes):,} classes, more than the "
            f"{MAX_CLASSES:,} a label column holds (e.g. {', '.join(classes[:EXAMPLES])}); "
            "a label names a class, not one image"
        )


def _sorted_classes(values: set[str]) -> list[str]:
    if values and all(re.fullmatch(r"-?\d+", v) for v in values):
        return sorted(values, key=int)
    return sorted(values)


def _strip_extension(path: str) -> str:
    stem, dot, extension = path.rpartition(".")
    if dot and f".{extension.lower()}" in EXTENSIONS and "/" not in extension:
        return stem
    return path


def _examples(paths: list[str], labels: np.ndarray) -> list[str]:
    return [paths[i] for i in np.flatnonzero(labels == MISSING)[:EXAMPLES]]
