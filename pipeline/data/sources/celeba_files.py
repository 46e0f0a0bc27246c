"""The files of the CelebA release: finding them under a root, listing the images, reading
the four annotation files (Liu et al., "Deep Learning Face Attributes in the Wild", ICCV 2015).

The release (https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html, Google Drive) is a folder:

    Img/img_align_celeba.zip      202,599 aligned 178x218 JPEGs under img_align_celeba/
    Img/img_align_celeba_png.7z   the same aligned faces as lossless PNGs (img_align_celeba_png/)
    Img/img_celeba.7z             the same photos in the wild (uncropped), extract to img_celeba/
    Anno/list_attr_celeba.txt     40 binary attributes per image, -1 / 1
    Anno/identity_CelebA.txt      celebrity id per image
    Anno/list_bbox_celeba.txt     face box per image, in the coordinates of the in-the-wild photo
    Eval/list_eval_partition.txt  0 train, 1 val, 2 test

The images may be an extracted folder or the zip as downloaded (read in place); the aligned
faces also as the extracted PNG folder (`--images png`; by default whichever is present, JPEG
when both are); the annotation files name every image `NNNNNN.jpg`, also for the PNGs. The
annotation files may lie flat in the root or in Anno/ and Eval/; they are parsed by
`annotations.parse_annotation` (the attribute and box files declare their row count on line 1,
so a partial download is noticed).
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from pipeline.data.sources.annotations import Annotation, parse_annotation
from pipeline.data.sources.celeba_crops import CROPS, IN_THE_WILD, check_crop
from pipeline.errors import PipelineError

URL = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
ATTR_FILE = "list_attr_celeba.txt"
IDENTITY_FILE = "identity_CelebA.txt"
PARTITION_FILE = "list_eval_partition.txt"
BBOX_FILE = "list_bbox_celeba.txt"
ATTRIBUTES = 40
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
REMEDY = f"re-download it from {URL}"  # for a malformed annotation file


# -- finding the files ---------------------------------------------------------------------


@dataclass(frozen=True)
class CelebaFiles:
    """Where the images and annotation files of one CelebA root are."""

    root: Path
    images: Path  # a folder of images, or a zip holding them under `image_folder`/
    image_folder: str  # img_align_celeba (aligned) or img_celeba (in the wild)
    image_format: str  # "jpg", or "png" (the release's lossless copy of the aligned faces)
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
            "image_format": self.image_format,
            "partition": str(self.partition),
            "attrs": str(self.attrs) if self.attrs else None,
            "identity": str(self.identity) if self.identity else None,
            **({"bbox": str(self.bbox)} if self.bbox else {}),
        }


IMAGE_FORMATS = ("auto", "jpg", "png")
PNG_FOLDERS = {"img_align_celeba": "img_align_celeba_png"}  # the release's lossless copies


def locate(
    root: str | Path | None,
    crop: str = "dcgan",
    *,
    attrs: bool = True,
    identity: bool = True,
    images: str = "auto",
) -> CelebaFiles:
    """Find the images and annotation files under `root` (default: <data dir>/celeba) that
    `crop` needs (its photos, as JPEG or PNG: `images`; its boxes, if it cuts by them)."""
    from pipeline.settings import data_dir

    cut = check_crop(crop)
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
    boxless = "|".join(name for name, entry in CROPS.items() if not entry.boxes)
    found, image_format = _find_photos(root, cut.photos, images, crop)
    return CelebaFiles(
        root=root,
        images=found,
        image_folder=cut.photos,
        image_format=image_format,
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
            root, BBOX_FILE, "Anno", f" (--crop {crop} needs it), or choose --crop {boxless}"
        )
        if cut.boxes
        else None,
    )


def _find_photos(root: Path, folder: str, wanted: str, crop: str) -> tuple[Path, str]:
    """The photos as JPEG or PNG (`wanted`: auto = whichever is present, JPEG when both)."""
    if wanted not in IMAGE_FORMATS:
        raise PipelineError(f"--images {wanted}: choose one of {', '.join(IMAGE_FORMATS)}")
    png = PNG_FOLDERS.get(folder)
    if wanted == "png" and png is None:
        raise PipelineError(
            f"--crop {crop} reads {folder}/, which the release ships as JPEG only; use "
            "--images jpg, or an aligned crop (dcgan, square) for the PNG copy"
        )
    if wanted in ("auto", "jpg"):
        try:
            return _find_images(root, folder), "jpg"
        except PipelineError:
            if wanted == "jpg" or png is None or _png_folder(root, png) is None:
                raise
    folder_png = _png_folder(root, png)
    if folder_png is None:
        archive = [p for p in (root / f"{png}.7z", root / "Img" / f"{png}.7z") if p.is_file()]
        extract = f"; extract {archive[0]} there (7z x)" if archive else ""
        raise PipelineError(f"no {png}/ folder in {root} or {root / 'Img'}{extract}")
    return folder_png, "png"


def _png_folder(root: Path, png: str) -> Path | None:
    for path in (root / png, root / "Img" / png):
        if path.is_dir():
            nested = path / png
            return nested if nested.is_dir() and not _has_images(path) else path
    return None


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
        if folder == IN_THE_WILD
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


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith(".")


def list_images(files: CelebaFiles) -> tuple[dict[str, str], bytes]:
    """Image file name -> path in the folder or member in the zip, plus a cheap listing
    (names and sizes, or zip member names, CRCs and sizes) for the fingerprint."""
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
                    f"{files.images} holds {parts[-1]} twice ({images[parts[-1]]}, {info.filename})"
                )
            images[parts[-1]] = info.filename
            lines.append(f"{info.filename}\t{info.CRC}\t{info.file_size}")
        where = f"{files.images} (under {files.image_folder}/)"
    else:
        with os.scandir(files.images) as entries:
            for entry in entries:
                if _is_image(entry.name) and entry.is_file():
                    # The annotation files name the PNG copies' photos NNNNNN.jpg too.
                    name = entry.name
                    if files.image_format == "png":
                        name = os.path.splitext(name)[0] + ".jpg"
                    images[name] = entry.name
                    lines.append(f"{entry.name}\t{entry.stat().st_size}")
        where = str(files.images)
    if not images:
        raise PipelineError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {where}")
    lines.sort()
    return images, "\n".join(lines).encode()


# -- the annotation files ------------------------------------------------------------------


def read_attributes(path: Path) -> Annotation:
    """list_attr_celeba.txt: count, 40 names, rows of 40 values -1/1 (kept as bytes of 0/1)."""
    return parse_annotation(path, _attr_values, remedy=REMEDY, header=ATTRIBUTES)


def read_identities(path: Path) -> Annotation:
    return parse_annotation(path, _identity_value, remedy=REMEDY, exact_last_row=False)


def read_partitions(path: Path) -> Annotation:
    return parse_annotation(path, _partition_value, remedy=REMEDY)


def read_boxes(path: Path) -> Annotation:
    """list_bbox_celeba.txt: count, `image_id x_1 y_1 width height`, rows of four integers."""
    return parse_annotation(path, _bbox_value, remedy=REMEDY, header=5, exact_last_row=False)


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
