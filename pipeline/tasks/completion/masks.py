"""Holes to complete: where they are (masks, 1 = hole), the local patch around each, what C is
given (the hole filled with the mean pixel) and what it gives back (composited into the image).

    source = make_masks(config.completion, image_size=64)
    mask, boxes = source.draw(n, generator)      # (n, 1, 64, 64) float, (n, 4) top/left/h/w
    corners = local_corners(boxes, 64, 32)       # the local patch centred on each hole
    patches = crop(images, corners, 32)
    completed = composite(x, C(fill(x, mask, mean)), mask)  # x outside the hole, C's inside

MASKS registry:
    boxes    a box per image, its height and width drawn separately from [hole_min, hole_max]
             of the side, anywhere inside the image (GLCIC: 96-128 of 256)
    centre   a centred square of side hole_max (Context Encoder's protocol)
    folder   binary PNG masks of the image's size (white = hole), e.g. NVIDIA's irregular
             masks resized to the dataset's size; the patch is centred on each mask's
             bounding box

Everything is drawn from an explicit torch.Generator on the CPU, so the evaluation set's holes
are the same on every rank and in every run with the same seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipeline.errors import PipelineError

MASK_SUFFIXES = (".png", ".bmp", ".gif", ".tif", ".tiff")


class BoxMasks:
    """Random boxes, sides in [hole_min, hole_max] of the image side."""

    def __init__(self, image_size: int, hole_min: float, hole_max: float):
        self.size = image_size
        self.lo = max(1, round(hole_min * image_size))
        self.hi = max(self.lo, round(hole_max * image_size))

    def draw(self, n: int, generator: torch.Generator | None = None):
        h = torch.randint(self.lo, self.hi + 1, (n,), generator=generator)
        w = torch.randint(self.lo, self.hi + 1, (n,), generator=generator)
        top = (torch.rand(n, generator=generator) * (self.size - h + 1)).long()
        left = (torch.rand(n, generator=generator) * (self.size - w + 1)).long()
        boxes = torch.stack([top, left, h, w], 1)
        return box_masks(boxes, self.size), boxes


class CentreMasks:
    """A centred square of side hole_max of the image side."""

    def __init__(self, image_size: int, hole_min: float, hole_max: float):
        side = max(1, round(hole_max * image_size))
        corner = (image_size - side) // 2
        self.size, self.box = image_size, torch.tensor([corner, corner, side, side])

    def draw(self, n: int, generator: torch.Generator | None = None):
        boxes = self.box.expand(n, 4).clone()
        return box_masks(boxes, self.size), boxes


class FolderMasks:
    """Binary mask images from a folder, drawn at random (with replacement)."""

    def __init__(self, folder: str | Path, image_size: int):
        self.masks = torch.from_numpy(read_mask_folder(folder, image_size))[:, None].float()
        self.boxes = torch.stack([bounding_box(m[0]) for m in self.masks])

    def draw(self, n: int, generator: torch.Generator | None = None):
        pick = torch.randint(len(self.masks), (n,), generator=generator)
        return self.masks[pick].clone(), self.boxes[pick].clone()


MASKS = {"boxes": BoxMasks, "centre": CentreMasks, "folder": FolderMasks}


def make_masks(completion, image_size: int):
    """The mask source a run's `completion` config names."""
    if completion.masks == "folder":
        return FolderMasks(completion.mask_dir, image_size)
    return MASKS[completion.masks](image_size, completion.hole_min, completion.hole_max)


def box_masks(boxes: torch.Tensor, size: int) -> torch.Tensor:
    """(n, 4) boxes (top, left, height, width) -> (n, 1, size, size) masks, 1 in the box."""
    rows = torch.arange(size)
    top, left, h, w = boxes.T
    inside_r = (rows[None] >= top[:, None]) & (rows[None] < (top + h)[:, None])
    inside_c = (rows[None] >= left[:, None]) & (rows[None] < (left + w)[:, None])
    return (inside_r[:, :, None] & inside_c[:, None, :]).float()[:, None]


def bounding_box(mask: torch.Tensor) -> torch.Tensor:
    """(top, left, height, width) of the hole pixels of one (H, W) mask."""
    rows = torch.nonzero(mask.any(1)).flatten()
    cols = torch.nonzero(mask.any(0)).flatten()
    top, left = int(rows[0]), int(cols[0])
    return torch.tensor([top, left, int(rows[-1]) - top + 1, int(cols[-1]) - left + 1])


def local_corners(boxes: torch.Tensor, size: int, local: int) -> torch.Tensor:
    """Top-left corners (n, 2) of the `local` px patch centred on each box, moved inside the
    image where the centre is too near a border (the patch still holds a hole no bigger than
    it)."""
    centre = boxes[:, :2] + boxes[:, 2:] // 2
    return (centre - local // 2).clamp(0, size - local)


def crop(x: torch.Tensor, corners: torch.Tensor, local: int) -> torch.Tensor:
    """The (n, C, local, local) patches of x at `corners` (one gather, no per-image loop)."""
    offsets = torch.arange(local, device=x.device)
    corners = corners.to(x.device)
    rows = (corners[:, 0, None] + offsets)[:, :, None].expand(-1, local, local)
    cols = (corners[:, 1, None] + offsets)[:, None, :].expand(-1, local, local)
    n = torch.arange(x.shape[0], device=x.device)[:, None, None]
    return x[n, :, rows, cols].permute(0, 3, 1, 2)


def fill(x: torch.Tensor, mask: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """C's input: the image with the hole filled by the mean pixel, and the mask channel."""
    filled = x * (1 - mask) + mean.view(1, -1, 1, 1) * mask
    return torch.cat([filled, mask], 1)


def composite(x: torch.Tensor, out: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The completed image: x outside the hole, C's output in it."""
    return x * (1 - mask) + out.float() * mask


def read_mask_folder(folder: str | Path, image_size: int) -> np.ndarray:
    """uint8 (N, H, W) of 0/1 from a folder of binary mask images; one clear error for a
    missing folder, an unreadable file, another size or a mask that is not binary."""
    from PIL import UnidentifiedImageError

    from pipeline.data import limits

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise PipelineError(f"mask folder {folder} does not exist")
    files = mask_files(folder)
    if not files:
        kinds = ", ".join(MASK_SUFFIXES)
        raise PipelineError(f"mask folder {folder} holds no mask images ({kinds})")
    masks = []
    for path in files:
        try:
            with limits.open_image(path) as image:
                pixels = np.asarray(image.convert("L"))
        except limits.TooLarge as exc:
            raise PipelineError(f"mask {path}: {exc}") from None
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
            raise PipelineError(f"mask {path} is not a readable image") from None
        masks.append(check_mask(pixels, image_size, path))
    return np.stack(masks)


def mask_files(folder: str | Path) -> list[Path]:
    """The mask images of a folder, in the order `read_mask_folder` reads them."""
    folder = Path(folder).expanduser()
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in MASK_SUFFIXES)


def check_mask(pixels: np.ndarray, image_size: int, where: object) -> np.ndarray:
    """A grey-level mask as 0/1, or a clear error: another size, not binary, or no hole."""
    if pixels.shape != (image_size, image_size):
        raise PipelineError(
            f"mask {where} is {pixels.shape[1]}x{pixels.shape[0]}, the images are "
            f"{image_size}x{image_size}: resize the masks to the images' size"
        )
    values = np.unique(pixels)
    if not set(values.tolist()) <= {0, 1, 255}:
        raise PipelineError(
            f"mask {where} is not binary (it has {len(values)} grey levels): save masks as "
            "black (kept) and white (hole) only, e.g. lossless PNG"
        )
    hole = (pixels > 0).astype(np.uint8)
    if not hole.any():
        raise PipelineError(f"mask {where} has no hole (no white pixel)")
    return hole
