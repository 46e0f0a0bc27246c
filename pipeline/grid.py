"""Image grids: samples laid out in rows, optionally captioned (torchvision is not available).

Used by `pipeline datasets show --grid` (real samples with their labels) and by training for
fixed-noise sample grids (a conditional model's rows named in a band on the left: one class per
row). Tiles are enlarged with nearest-neighbour so that 32 px images stay crisp and captions
stay legible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def make_grid(
    images: np.ndarray,
    nrow: int = 8,
    padding: int = 2,
    scale: int = 1,
    captions: Sequence[str] | None = None,
    background: int = 255,
    row_labels: Sequence[str] | None = None,
) -> Image.Image:
    """Lay out uint8 images (N, H, W, C) in rows of `nrow`; captions go under each tile, row
    labels (one per row) in a band on the left."""
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(
            f"expected uint8 images of shape (N, H, W, C), got {images.dtype} {images.shape}"
        )
    n, h, w, c = images.shape
    if c == 1:
        images = np.repeat(images, 3, axis=3)
    if scale > 1:
        images = images.repeat(scale, axis=1).repeat(scale, axis=2)
        h, w = h * scale, w * scale
    cols = max(1, min(nrow, n))
    rows = max(1, math.ceil(n / cols))
    font = _font(max(9, min(14, w // 8))) if captions else None
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    texts = [_wrap(t, measure, font, w) for t in captions] if captions else []
    lines = max((len(t.split("\n")) for t in texts), default=0)
    caption_h = (font.size + 2) * lines + 2 if captions else 0
    cell_w, cell_h = w + padding, h + caption_h + padding
    band = _band_width(row_labels, rows, measure, w) if row_labels else 0
    canvas = Image.new(
        "RGB", (band + cols * cell_w + padding, rows * cell_h + padding), (background,) * 3
    )
    draw = ImageDraw.Draw(canvas)
    if row_labels:
        font_rows = _font(ROW_FONT)
        for row, label in enumerate(row_labels[:rows]):
            text = _wrap(label, measure, font_rows, band - 2 * padding - 2, max_lines=2)
            top = padding + row * cell_h + (h - (ROW_FONT + 2) * len(text.split("\n"))) // 2
            draw.multiline_text((padding + 1, top), text, fill=(0, 0, 0), font=font_rows, spacing=2)
    for i in range(n):
        x = band + padding + (i % cols) * cell_w
        y = padding + (i // cols) * cell_h
        canvas.paste(Image.fromarray(images[i]), (x, y))
        if captions:
            draw.multiline_text((x + 1, y + h + 1), texts[i], fill=(0, 0, 0), font=font, spacing=2)
    return canvas


ROW_FONT = 12  # px, the row labels' font size


def _band_width(labels: Sequence[str], rows: int, measure, tile_w: int) -> int:
    """The left band that holds the row labels: the longest label, within 1-3 tiles."""
    if len(labels) < rows:
        raise ValueError(f"{len(labels)} row labels for {rows} rows")
    font = _font(ROW_FONT)
    widest = max(measure.textlength(label, font=font) for label in labels[:rows])
    return int(min(max(widest + 8, tile_w), 3 * tile_w))


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow built without FreeType: a fixed bitmap font
        return ImageFont.load_default()


def _wrap(text: str, draw: ImageDraw.ImageDraw, font, width: int, max_lines: int = 4) -> str:
    """Wrap a caption's words to the tile width (at most `max_lines`, the cut marked '…')."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}".strip()
            if line and draw.textlength(candidate, font=font) > width:
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] += "…"
    for i, line in enumerate(lines):  # a single word wider than the tile
        while len(line) > 1 and draw.textlength(line, font=font) > width:
            line = line[:-2] + "…"
        lines[i] = line
    return "\n".join(lines)
