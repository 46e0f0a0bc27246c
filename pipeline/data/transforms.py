"""Decode, crop and resize one source image into the dataset's pixel format.

The same `prepare` runs in the ingest engine and in the benchmark's bare loop, so the
benchmark measures the engine's overhead and nothing else. Images are decoded by content,
never by file name (LSUN's exported copies carry a .webp name over JPEG bytes), fully loaded
so that a truncated file fails here rather than later, and resized with Lanczos (the
antialiased filter: bilinear without antialias aliases badly at 4x downscaling).
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.data import limits

_RESAMPLE = {
    "lanczos": Image.Resampling.LANCZOS,
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "box": Image.Resampling.BOX,
}


class BadRecord(Exception):
    """A source record that cannot become an image; it is skipped and listed with its reason.

    Sources raise it from `read` (with the record's `key`) for a record they cannot read, such
    as a damaged zip member; `prepare` raises it for bytes that do not decode.
    """

    def __init__(self, reason: str, key: str | None = None):
        super().__init__(reason)
        self.key = key


@dataclass(frozen=True)
class Recipe:
    """How a source image becomes a dataset image; recorded in the manifest.

    crop: "center-square" (largest centred square: LSUN, image folders), "center" (a fixed
    `crop_width` x `crop_height` box at the centre: CelebA's DCGAN crop), "box" (a per-record
    box given by the source, e.g. CelebA in-the-wild bounding boxes), "none" (resize as is).
    """

    size: int = 64
    mode: str = "RGB"
    crop: str = "center-square"
    crop_width: int = 0
    crop_height: int = 0
    resize: str = "lanczos"

    def describe(self) -> dict:
        return asdict(self)

    @property
    def channels(self) -> int:
        return len(self.mode)


def decode(payload: bytes | np.ndarray | Image.Image) -> Image.Image:
    """Decode encoded bytes (any format Pillow knows, detected by content) into a loaded image."""
    if isinstance(payload, Image.Image):
        return payload
    if isinstance(payload, np.ndarray):
        return Image.fromarray(payload)
    if not payload:
        raise BadRecord("empty record")
    try:
        image = limits.open_image(io.BytesIO(payload))  # its size checked before decoding
        image.load()
    except limits.TooLarge as exc:
        raise BadRecord(str(exc)) from None
    except UnidentifiedImageError:
        raise BadRecord("not an image (format not recognised)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadRecord(f"undecodable image: {exc}") from None
    return image


def crop_box(width: int, height: int, recipe: Recipe, box: tuple | None = None) -> tuple:
    """The (left, top, right, bottom) box the recipe cuts from a width x height image."""
    if recipe.crop == "center-square":
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        return left, top, left + side, top + side
    if recipe.crop == "center":
        if recipe.crop_width > width or recipe.crop_height > height:
            raise BadRecord(
                f"image {width}x{height} is smaller than the {recipe.crop_width}x"
                f"{recipe.crop_height} crop"
            )
        left = (width - recipe.crop_width) // 2
        top = (height - recipe.crop_height) // 2
        return left, top, left + recipe.crop_width, top + recipe.crop_height
    if recipe.crop == "box":
        if box is None:
            raise BadRecord("no crop box for this image")
        return tuple(int(round(v)) for v in box)
    if recipe.crop == "none":
        return 0, 0, width, height
    raise ValueError(f"unknown crop {recipe.crop!r}")


def prepare(payload, recipe: Recipe, box: tuple | None = None) -> np.ndarray:
    """Decode, crop and resize: uint8 array of shape (size, size, channels)."""
    image = decode(payload)
    if image.mode != recipe.mode:
        image = image.convert(recipe.mode)
    left, top, right, bottom = crop_box(image.width, image.height, recipe, box)
    # A box reaching outside the image (in-the-wild faces near the border) is padded with
    # black by PIL's crop, the usual choice of face-cropping scripts.
    if (left, top, right, bottom) != (0, 0, image.width, image.height):
        image = image.crop((left, top, right, bottom))
    size = (recipe.size, recipe.size)
    if image.size != size:
        image = image.resize(size, _RESAMPLE[recipe.resize])
    pixels = np.asarray(image, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    return pixels


def encode(pixels: np.ndarray, encoding: str, quality: int = 95) -> bytes:
    """The stored bytes of one image: raw pixels, or PNG / JPEG / WebP."""
    if encoding == "raw":
        return pixels.tobytes()
    image = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
    buffer = io.BytesIO()
    if encoding == "png":
        image.save(buffer, format="PNG", optimize=False, compress_level=6)
    elif encoding == "jpeg":
        image.save(buffer, format="JPEG", quality=quality, subsampling=0)
    elif encoding == "webp":
        image.save(buffer, format="WEBP", quality=quality, method=4)
    else:
        raise ValueError(f"unknown encoding {encoding!r}")
    return buffer.getvalue()
