"""CelebA's crops: one registry entry per way of cutting the photos (`--crop`).

An entry says which photos it cuts (the aligned 178x218 images or the uncropped ones in the
wild), whether it needs each photo's face box (list_bbox_celeba.txt), the `Recipe` that cuts
and resizes (recorded in the manifest), and the dataset's default name. Adding a crop is one
entry in `CROPS`.

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

from dataclasses import dataclass, replace

from pipeline.config import ConfigError
from pipeline.data.transforms import Recipe

ALIGNED = "img_align_celeba"  # the released photos, aligned by the eyes, 178x218
IN_THE_WILD = "img_celeba"  # the same photos uncropped; face boxes in list_bbox_celeba.txt
DCGAN_CROP = 108
DEFAULT_BBOX_MARGIN = 1.0


@dataclass(frozen=True)
class Crop:
    """One way to cut CelebA's photos into dataset images, and what it needs."""

    name: str
    dataset: str  # the default dataset name, before `-<size>`
    photos: str  # the image folder it cuts: ALIGNED or IN_THE_WILD
    recipe: Recipe  # how transforms.prepare cuts and resizes (its size is set per ingest)
    boxes: bool = False  # cuts each photo by its box: needs list_bbox_celeba.txt, takes a margin

    def recipe_for(self, size: int) -> Recipe:
        return replace(self.recipe, size=size)


CROPS: dict[str, Crop] = {
    crop.name: crop
    for crop in (
        Crop(
            "dcgan",
            "celeba",
            ALIGNED,
            Recipe(mode="RGB", crop="center", crop_width=DCGAN_CROP, crop_height=DCGAN_CROP),
        ),
        Crop("square", "celeba-square", ALIGNED, Recipe(mode="RGB", crop="center-square")),
        Crop("bbox", "celeba-wild", IN_THE_WILD, Recipe(mode="RGB", crop="box"), boxes=True),
    )
}


def check_crop(crop: str) -> Crop:
    if crop not in CROPS:
        raise ConfigError(f"unknown crop {crop!r}; choose one of: {', '.join(CROPS)}")
    return CROPS[crop]


def check_bbox_margin(crop: str, margin: float | None) -> float:
    """The margin to use (the default when None); only a crop by boxes takes one."""
    if margin is None:
        return DEFAULT_BBOX_MARGIN
    if crop not in CROPS or not CROPS[crop].boxes:
        boxed = "|".join(name for name, entry in CROPS.items() if entry.boxes)
        raise ConfigError(f"--bbox-margin applies to --crop {boxed} only, not --crop {crop}")
    if not 0 < margin <= 10:
        raise ConfigError(f"--bbox-margin {margin} must be within (0, 10]")
    return float(margin)


def square_box(box: tuple[int, int, int, int], margin: float) -> tuple[int, int, int, int]:
    """The square (left, top, right, bottom) centred on box (x, y, w, h), side max(w, h)*margin."""
    x, y, w, h = box
    side = max(1, round(max(w, h) * margin))
    left, top = x + (w - side) // 2, y + (h - side) // 2
    return left, top, left + side, top + side
