"""Demo sources drawn by the program, written in the real released formats.

`pipeline quickstart` needs data on a machine that can download nothing, so it draws some: a
CelebA-format folder (178x218 JPEG "faces" in `img_align_celeba/` with the official annotation
files, CRLF and all, whose attributes describe what was drawn: Smiling, Eyeglasses, hair colour,
Male with a beard) and an LSUN-format LMDB ("bedrooms": a wall, a window, a bed; JPEG q75, short
side 256, 40-hex keys). The ingest then runs through exactly the code paths real data takes.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose "
    "Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee "
    "Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard "
    "Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling "
    "Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace "
    "Wearing_Necktie Young"
).split()
HAIR = {
    "Black_Hair": (25, 20, 20),
    "Blond_Hair": (230, 200, 110),
    "Brown_Hair": (110, 70, 40),
    "Gray_Hair": (160, 160, 165),
}
SKIN = [(255, 220, 190), (235, 190, 150), (200, 150, 110), (140, 95, 65)]


def draw_face(rng: np.random.Generator) -> tuple[Image.Image, dict[str, int]]:
    """A 178x218 aligned-face-like picture and the CelebA attributes it shows."""
    bg = tuple(int(v) for v in rng.integers(60, 230, 3))
    image = Image.new("RGB", (178, 218), bg)
    draw = ImageDraw.Draw(image)
    hair_name = list(HAIR)[rng.integers(len(HAIR))]
    hair, skin = HAIR[hair_name], SKIN[rng.integers(len(SKIN))]
    cx, cy = 89 + int(rng.integers(-4, 5)), 120 + int(rng.integers(-4, 5))
    male, smiling, glasses = (
        bool(rng.random() < 0.5),
        bool(rng.random() < 0.5),
        bool(rng.random() < 0.25),
    )
    draw.ellipse((cx - 52, cy - 78, cx + 52, cy + 40), fill=hair)  # hair behind the head
    draw.ellipse((cx - 40, cy - 55, cx + 40, cy + 55), fill=skin)  # face
    for ex in (cx - 17, cx + 17):  # eyes
        draw.ellipse((ex - 7, cy - 14, ex + 7, cy - 6), fill=(250, 250, 250))
        draw.ellipse((ex - 3, cy - 13, ex + 3, cy - 7), fill=(40, 30, 30))
        if glasses:
            draw.ellipse((ex - 12, cy - 19, ex + 12, cy - 1), outline=(20, 20, 20), width=3)
    if glasses:
        draw.line((cx - 5, cy - 10, cx + 5, cy - 10), fill=(20, 20, 20), width=3)
    draw.line((cx, cy - 4, cx - 4, cy + 12), fill=tuple(max(0, c - 50) for c in skin), width=2)
    if smiling:
        draw.arc((cx - 18, cy + 8, cx + 18, cy + 34), 20, 160, fill=(150, 30, 40), width=4)
    else:
        draw.line((cx - 14, cy + 26, cx + 14, cy + 26), fill=(150, 30, 40), width=4)
    if male:
        draw.chord((cx - 38, cy + 10, cx + 38, cy + 56), 0, 180, fill=tuple(c // 2 for c in hair))
    pixels = np.asarray(image, dtype=np.int16) + rng.integers(-6, 7, (218, 178, 3))
    attrs = {
        "Male": male,
        "Smiling": smiling,
        "Eyeglasses": glasses,
        hair_name: True,
        "No_Beard": not male,
        "Young": bool(rng.random() < 0.7),
    }
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8)), {
        k: int(v) for k, v in attrs.items()
    }


def draw_bedroom(rng: np.random.Generator) -> Image.Image:
    """A 256-px-short-side picture of a room: wall, floor, window, bed with a pillow."""
    w, h = int(rng.choice([256, 320, 341, 384])), 256
    if rng.random() < 0.3:
        w, h = h, w
    wall = tuple(int(v) for v in rng.integers(120, 240, 3))
    image = Image.new("RGB", (w, h), wall)
    draw = ImageDraw.Draw(image)
    floor_y = int(h * rng.uniform(0.55, 0.7))
    draw.rectangle((0, floor_y, w, h), fill=tuple(int(v) for v in rng.integers(60, 160, 3)))
    wx = int(rng.integers(10, max(11, w - 90)))
    draw.rectangle((wx, 20, wx + 70, 100), fill=(170, 210, 250), outline=(250, 250, 250), width=5)
    bx, by = int(rng.integers(0, max(1, w // 3))), floor_y - int(h * 0.12)
    bw = int(w * rng.uniform(0.45, 0.65))
    cover = tuple(int(v) for v in rng.integers(30, 255, 3))
    draw.rectangle((bx, by, bx + bw, floor_y + int(h * 0.15)), fill=cover)
    draw.rectangle((bx - 6, by - 40, bx + 4, floor_y + int(h * 0.15)), fill=(90, 60, 40))
    draw.ellipse((bx + 8, by - 14, bx + 60, by + 12), fill=(245, 245, 245))
    return image


def jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def write_celeba(root: Path, n: int = 300, seed: int = 0) -> Path:
    """A CelebA-format root: img_align_celeba/ plus the three official annotation files."""
    rng = np.random.default_rng(seed)
    images = Path(root) / "img_align_celeba"
    images.mkdir(parents=True, exist_ok=True)
    attr_rows, partition_rows, identity_rows = [], [], []
    for i in range(1, n + 1):
        name = f"{i:06d}.jpg"
        face, attrs = draw_face(rng)
        (images / name).write_bytes(jpeg(face, 95))
        values = "".join(f" {1 if attrs.get(a) else -1:>2}" for a in ATTRIBUTES)
        attr_rows.append(f"{name}{values}")
        split = 0 if i <= 0.8 * n else (1 if i <= 0.9 * n else 2)
        partition_rows.append(f"{name} {split}")
        identity_rows.append(f"{name} {1 + (i - 1) // 5}")
    crlf = "\r\n"
    (Path(root) / "list_attr_celeba.txt").write_text(
        crlf.join([str(n), " ".join(ATTRIBUTES) + " ", *attr_rows]) + crlf, newline=""
    )
    (Path(root) / "list_eval_partition.txt").write_text(
        crlf.join(partition_rows) + crlf, newline=""
    )
    (Path(root) / "identity_CelebA.txt").write_text(crlf.join(identity_rows) + crlf, newline="")
    return Path(root)


def write_lsun(path: Path, n: int = 300, seed: int = 0) -> Path:
    """An LSUN-format LMDB folder of `n` drawn rooms (JPEG q75, 40-hex keys)."""
    from pipeline.data.sources.lsun import write_lmdb

    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        key = hashlib.sha1(f"demo-bedroom-{seed}-{i}".encode()).hexdigest()
        records.append((key, jpeg(draw_bedroom(rng), 75)))
    return write_lmdb(path, records, map_size=1 << 30)
