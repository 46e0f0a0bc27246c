"""How much one input may cost: a pixel cap checked before decoding, and reads bounded by the
size a file, a zip member or a gzip stream declares.

Downloads and shared folders are untrusted, and a small file can declare a huge image:
measured, a 20 KB PNG of 13000 x 13000 cost 858 MB of memory to decode (Pillow only warns
between about 89 and 179 Mpx), a 381 KB CelebA zip with a 300 MB member cost 694 MB. So an
image's size is read from its header and refused above `max_pixels()` before any pixel is
decoded, and a record is refused above `MAX_RECORD_BYTES` before it is read.

    PIPELINE_MAX_PIXELS=150000000 pipeline ingest images --root ~/panoramas   # raise the cap
"""

from __future__ import annotations

import gzip
import io
import os
import warnings
import zipfile
from pathlib import Path

from PIL import Image

from pipeline.errors import PipelineError

# 64 Mpx: a 50 Mpx camera's photo passes (the largest a GAN dataset is made from); decoded as
# RGB it costs 192 MB, which every ingest worker can afford at once.
DEFAULT_MAX_PIXELS = 64_000_000
MAX_RECORD_BYTES = 64 * 2**20  # one encoded image: a 50 Mpx JPEG is about 25 MB


class TooLarge(Exception):
    """An input over a limit; the callers turn it into a skipped record or a PipelineError."""


def max_pixels() -> int:
    """The pixel cap: PIPELINE_MAX_PIXELS, or 64 Mpx."""
    value = os.environ.get("PIPELINE_MAX_PIXELS", "")
    if not value:
        return DEFAULT_MAX_PIXELS
    try:
        cap = int(value)
    except ValueError:
        cap = 0
    if cap < 1:
        raise PipelineError(f"PIPELINE_MAX_PIXELS={value!r} is not a positive number of pixels")
    return cap


def open_image(source) -> Image.Image:
    """`Image.open(source)` with its size checked against the pixel cap before any decoding
    (the caller loads it). Raises TooLarge; Pillow's own errors as Pillow raises them."""
    cap = max_pixels()
    with warnings.catch_warnings():  # the cap below decides, not Pillow's warning
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(source)
        except Image.DecompressionBombError as exc:
            raise TooLarge(f"too large: {exc}") from None
    width, height = image.size
    if width * height > cap:
        image.close()
        raise TooLarge(
            f"too large: {width}x{height} pixels, over the {cap:,}-pixel cap (PIPELINE_MAX_PIXELS)"
        )
    _allow(cap)
    return image


def _allow(cap: int) -> None:
    """Let Pillow decode what the cap allows: its own limit errors at twice MAX_IMAGE_PIXELS."""
    if Image.MAX_IMAGE_PIXELS is not None and cap > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = cap


def read_file(path: Path, limit: int = MAX_RECORD_BYTES) -> bytes:
    """A file's bytes, refused (TooLarge) when it is bigger than `limit`."""
    with open(path, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"too large: over the {limit >> 20} MiB a record may be")
    return data


def read_member(archive: zipfile.ZipFile, name: str, limit: int = MAX_RECORD_BYTES) -> bytes:
    """A zip member's bytes, refused (TooLarge) when its header declares more than `limit`;
    zipfile never returns more than the declared size (and checks its CRC)."""
    size = archive.getinfo(name).file_size
    if size > limit:
        raise TooLarge(
            f"too large: zip member {name} declares {size / 2**20:,.0f} MiB, over the "
            f"{limit >> 20} MiB a record may be"
        )
    with archive.open(name) as member:
        return member.read()


def gunzip(data: bytes, limit: int) -> bytes:
    """`data` decompressed, refused (TooLarge) past `limit` bytes instead of filling memory."""
    with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
        out = stream.read(limit + 1)
    if len(out) > limit:
        raise TooLarge(f"too large: decompresses to over {limit >> 20} MiB")
    return out
