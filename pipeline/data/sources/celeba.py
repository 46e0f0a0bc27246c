"""CelebA as a source: the official splits, 40 attributes and identities of each image.

Only images that exist become records, sorted by file name within each split, so the order
depends on nothing but the input. The files are found and read by `celeba_files` (annotation
files are checked, never trusted blindly: a partial download is reported with numbers, and
images past the end of a cut file keep their pixels with null attributes, never a guessed
label); the crop (`--crop`, recorded in the manifest) is an entry of `celeba_crops.CROPS`.
The images are read from a folder or in place from the zip as downloaded, each worker opening
its own handle (an open ZipFile must not cross a pickle).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline.data import limits
from pipeline.data.shards import Column
from pipeline.data.sources.annotations import Annotation
from pipeline.data.sources.base import Plan, Record, Source, fingerprint
from pipeline.data.sources.celeba_crops import CROPS, check_bbox_margin, square_box
from pipeline.data.sources.celeba_files import (
    ATTRIBUTES,
    CelebaFiles,
    list_images,
    locate,
    read_attributes,
    read_boxes,
    read_identities,
    read_partitions,
)
from pipeline.data.transforms import BadRecord, Recipe
from pipeline.errors import PipelineError

SPLITS = ("train", "val", "test")  # partition values 0, 1, 2
EXAMPLES = 3  # file names quoted in a note


@dataclass(frozen=True)
class Tables:
    """The annotation files one ingest reads (None: left out, or not needed by the crop)."""

    partitions: Annotation
    attrs: Annotation | None
    identities: Annotation | None
    boxes: Annotation | None

    @classmethod
    def read(cls, files: CelebaFiles) -> Tables:
        return cls(
            partitions=read_partitions(files.partition),
            attrs=read_attributes(files.attrs) if files.attrs else None,
            identities=read_identities(files.identity) if files.identity else None,
            boxes=read_boxes(files.bbox) if files.bbox else None,
        )

    def present(self) -> list[Annotation]:
        tables = (self.partitions, self.attrs, self.identities, self.boxes)
        return [t for t in tables if t is not None]


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
        images: str = "auto",
    ):
        self.files = locate(root, crop, attrs=attrs, identity=identity, images=images)
        self.bbox_margin = check_bbox_margin(crop, bbox_margin)
        self.crop = crop
        self.size = size
        self._records: dict[str, list[tuple]] = {}
        self._zip: zipfile.ZipFile | None = None

    def default_name(self, size: int) -> str:
        return f"{CROPS[self.crop].dataset}-{size}"

    @property
    def recipe(self) -> Recipe:
        return CROPS[self.crop].recipe_for(self.size)

    def plan(self, limit: int | None = None) -> Plan:
        files = self.files
        images, listing = list_images(files)
        tables = Tables.read(files)
        notes: list[str] = []
        counts: dict[str, int] = {"images_found": len(images)}

        by_split = split_images(images, tables, files, notes, counts)
        if limit is not None:
            by_split = {s: names[:limit] for s, names in by_split.items()}
        by_split = {s: names for s, names in by_split.items() if names}
        ingested = [n for names in by_split.values() for n in names]
        if not ingested:
            unsplit = counts["images_without_partition"] == len(images)
            raise PipelineError(
                f"none of the {len(images)} images in {files.images} has a row "
                f"in {files.partition if unsplit else files.bbox} (e.g. "
                f"{_examples(sorted(images))}): are these the annotation files of these images?"
            )
        columns, attributes = annotation_columns(tables, files, ingested, notes, counts)

        # The records, in order; workers get them with the source (a few MB for all of CelebA).
        margin = self.bbox_margin if tables.boxes is not None else None
        self._records = {
            split: [_record(name, images[name], split, tables, margin) for name in names]
            for split, names in by_split.items()
        }
        return Plan(
            splits={split: len(records) for split, records in self._records.items()},
            recipe=self.recipe,
            fingerprint=fingerprint(
                self.kind,
                self.crop,
                margin,
                listing,
                [[t.path.name, t.sha256] for t in tables.present()],
            ),
            columns=columns,
            labels=None,  # attributes are not classes
            attributes=attributes,
            description={
                **files.describe(),
                "crop": self.crop,
                **({"bbox_margin": margin} if margin is not None else {}),
            },
            notes=notes,
            counts=counts,
        )

    def read(self, split: str, index: int) -> Record:
        name, location, values, box = self._records[split][index]
        if self.files.zipped:
            if self._zip is None:
                self._zip = zipfile.ZipFile(self.files.images)
            try:
                payload = limits.read_member(self._zip, location)
            except limits.TooLarge as exc:
                raise BadRecord(str(exc), key=name) from None
            except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError) as exc:
                # RuntimeError: an encrypted member; NotImplementedError: an unknown method
                raise BadRecord(f"damaged zip member: {exc}", key=name) from None
        else:
            path = self.files.images / location
            try:
                payload = limits.read_file(path)
            except limits.TooLarge as exc:
                raise BadRecord(str(exc), key=name) from None
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


# -- the steps of plan() -------------------------------------------------------------------


def split_images(
    images: dict[str, str], tables: Tables, files: CelebaFiles, notes: list[str], counts: dict
) -> dict[str, list[str]]:
    """Image names per split by the official partition, sorted; an image with no row there
    has no split, and with a crop by boxes, an image with no box is left out too."""
    by_split: dict[str, list[str]] = {split: [] for split in SPLITS}
    unassigned = []
    for name in sorted(images):
        partition = tables.partitions.rows.get(name)
        if partition is None:
            unassigned.append(name)
        else:
            by_split[SPLITS[partition]].append(name)
    counts["images_without_partition"] = len(unassigned)
    if unassigned:
        notes.append(
            f"{len(unassigned)} of the {len(images)} images have no row in "
            f"{files.partition.name} and are not ingested (no split): "
            f"{_examples(unassigned)}{tables.partitions.cut_note()}"
        )
    boxes = tables.boxes
    if boxes is not None:
        boxless = [n for names in by_split.values() for n in names if n not in boxes.rows]
        counts["images_without_bbox"] = len(boxless)
        if boxless:
            notes.append(
                f"{len(boxless)} image(s) have no box in {files.bbox.name} and are "
                f"not ingested: {_examples(boxless)}{boxes.cut_note()}"
            )
            by_split = {s: [n for n in names if n in boxes.rows] for s, names in by_split.items()}
    return by_split


def annotation_columns(
    tables: Tables, files: CelebaFiles, ingested: list[str], notes: list[str], counts: dict
) -> tuple[list[Column], dict | None]:
    """The columns the annotations give (attrs, identity, partition) and the manifest's
    attribute names; notes and counts say which ingested images lack a row."""
    columns = []
    attributes = None
    attrs, identities = tables.attrs, tables.identities
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
                f"{files.identity.name}: their identity is null{identities.cut_note()}"
            )
    columns.append(
        Column(
            "partition",
            pa.int8(),
            "official partition from list_eval_partition.txt: 0 train, 1 val, 2 test",
        )
    )
    return columns, attributes


def _record(name: str, location: str, split: str, tables: Tables, margin: float | None) -> tuple:
    """(name, where to read it, its column values, its crop box or None) as `read` takes it."""
    values: dict[str, Any] = {}
    if tables.attrs is not None:
        values["attrs"] = tables.attrs.rows.get(name)
    if tables.identities is not None:
        values["identity"] = tables.identities.rows.get(name)
    values["partition"] = SPLITS.index(split)
    box = square_box(tables.boxes.rows[name], margin) if tables.boxes is not None else None
    return name, location, values, box


def _examples(names: list[str]) -> str:
    return ", ".join(names[:EXAMPLES]) + (", ..." if len(names) > EXAMPLES else "")


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
