"""Using a trained completion network: `pipeline complete RUN_ID|CHECKPOINT`.

    written = complete("3f2a...", images="photos/", out="done/", box=(16, 20, 28, 24))

Each image (a file, or every image of a folder) gets its holes (a box, masks from a folder,
or N random boxes of the run's hole sizes), C's completion inside them and exactly the input's
pixels outside (composited in uint8), written as a lossless PNG under the input's name. An
image of another size goes through the dataset's recipe first (its crop, then its resize), and
the console says so; the box is in the coordinates of the image C completes. Optional
post-processing: Poisson blending of the hole into its surroundings (OpenCV's seamlessClone,
the paper's last step; `pip install opencv-python-headless`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.errors import PipelineError

COMPLETION_FILE = "completion.pt"  # C and the mean pixel, written at the end of a run
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
BLENDS = ("poisson",)


@dataclass
class Completer:
    """C in eval mode and what it needs: the image size, channels, mean pixel, recipe."""

    C: torch.nn.Module
    size: int
    channels: int
    mean: torch.Tensor
    recipe: dict | None
    config: object

    @torch.no_grad()
    def __call__(self, pixels: np.ndarray, hole: np.ndarray) -> np.ndarray:
        """uint8 (H, W, C) image and 0/1 (H, W) hole -> uint8 completion; outside the hole,
        the input's very pixels."""
        from pipeline.tasks.completion.masks import fill
        from pipeline.training.images import to_images, to_uint8

        x = to_images(torch.from_numpy(pixels[None].copy()), "cpu", False)
        m = torch.from_numpy(hole[None, None].astype(np.float32))
        proposed = to_uint8(self.C(fill(x, m, self.mean)))[0]
        return np.where(hole[:, :, None].astype(bool), proposed, pixels)


def load_completer(source: str) -> Completer:
    """The completion network of a GLCIC run (an MLflow run id, or a checkpoint)."""
    from pipeline.models.glcic import CompletionNetwork
    from pipeline.training import checkpoint as ckpt
    from pipeline.training.checkpoint import config_from_checkpoint

    state = ckpt.load_state(source, COMPLETION_FILE)
    config = config_from_checkpoint(state)
    if "C" not in state:
        raise PipelineError(
            f"{source} is a {config.family} run: `pipeline complete` needs a glcic run (draw "
            "from a GAN with `pipeline sample`)"
        )
    image = state["image"]
    C = CompletionNetwork(config.model, image["size"], image["channels"])
    C.load_state_dict(state["C"])
    return Completer(
        C.eval(), image["size"], image["channels"], state["mean_pixel"], image.get("recipe"), config
    )


def parse_box(text: str) -> tuple[int, int, int, int]:
    """ "X,Y,W,H" (pixels: left, top, width, height) -> (top, left, height, width)."""
    parts = text.split(",")
    try:
        x, y, w, h = (int(p) for p in parts)
    except ValueError:
        raise PipelineError(
            f"--box {text!r} must be four integers X,Y,W,H (left, top, width, height in pixels)"
        ) from None
    if w < 1 or h < 1:
        raise PipelineError(f"--box {text!r}: width and height must be at least 1")
    return y, x, h, w


def box_hole(box: tuple[int, int, int, int], size: int) -> np.ndarray:
    top, left, h, w = box
    if top < 0 or left < 0 or top + h > size or left + w > size:
        raise PipelineError(
            f"--box X={left},Y={top},W={w},H={h} reaches outside the {size}x{size} image C "
            "completes: keep X+W and Y+H within it"
        )
    hole = np.zeros((size, size), np.uint8)
    hole[top : top + h, left : left + w] = 1
    return hole


def image_files(images: str | Path) -> list[Path]:
    path = Path(images).expanduser()
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise PipelineError(f"--images {path} does not exist")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise PipelineError(f"--images {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def fit(path: Path, completer: Completer, say: Callable[[str], None]) -> np.ndarray:
    """The image as C completes it: as it is when it has the network's size, else through
    the dataset's recipe (said on the console)."""
    from PIL import UnidentifiedImageError

    from pipeline.data import limits
    from pipeline.data.transforms import BadRecord, Recipe, prepare

    mode = "RGB" if completer.channels == 3 else "L"
    try:
        with limits.open_image(path) as image:
            image.load()
            picture = image.convert(mode)
    except limits.TooLarge as exc:
        raise PipelineError(f"{path}: {exc}") from None
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
        raise PipelineError(f"{path} is not a readable image") from None
    size = completer.size
    if picture.size == (size, size):
        pixels = np.asarray(picture, dtype=np.uint8)
        return pixels[:, :, None] if pixels.ndim == 2 else pixels
    if min(picture.size) < size:
        raise PipelineError(
            f"{path} is {picture.width}x{picture.height}, smaller than the {size} px this "
            "network completes: use an image at least that big"
        )
    recipe = dict(completer.recipe or {"size": size, "mode": mode})
    if recipe.get("crop") == "box":  # per-record boxes exist only for the dataset's own photos
        recipe["crop"] = "center-square"
    recipe = Recipe(**recipe)
    try:
        pixels = prepare(picture, recipe)
    except BadRecord as exc:
        raise PipelineError(f"{path}: {exc}") from None
    say(
        f"{path.name} is {picture.width}x{picture.height}: {recipe.crop} crop and {recipe.resize} "
        f"resize to {size}x{size}, as the dataset's images"
    )
    return pixels


def complete(
    source: str,
    images: str | Path,
    out: str | Path,
    box: str | None = None,
    masks: str | Path | None = None,
    random_boxes: int | None = None,
    seed: int = 0,
    blend: str | None = None,
    say: Callable[[str], None] = lambda line: None,
) -> list[Path]:
    """Complete a file or a folder of images; returns the PNGs written under `out`."""
    from pipeline.tasks.completion.masks import BoxMasks, mask_files, read_mask_folder

    chosen = [name for name, v in (("--box", box), ("--masks", masks),
                                   ("--random-boxes", random_boxes)) if v is not None]  # fmt: skip
    if len(chosen) != 1:
        raise PipelineError("say where the holes are with one of --box, --masks, --random-boxes")
    if blend is not None and blend not in BLENDS:
        raise PipelineError(f"--blend {blend!r} is not known; choose one of: {', '.join(BLENDS)}")
    if random_boxes is not None and random_boxes < 1:
        raise PipelineError(f"--random-boxes {random_boxes} must be at least 1")
    parsed = parse_box(box) if box is not None else None
    files = image_files(images)
    completer = load_completer(source)
    size = completer.size
    if blend:
        _opencv()

    # Every input and hole is checked before anything is written.
    inputs = [(path, fit(path, completer, say)) for path in files]
    if parsed is not None:
        holes = [[box_hole(parsed, size)] for _ in inputs]
    elif masks is not None:
        found = read_mask_folder(masks, size)
        by_name = {p.stem: i for i, p in enumerate(mask_files(masks))}
        holes = [[found[by_name.get(p.stem, i % len(found))]] for i, (p, _) in enumerate(inputs)]
    else:
        c = completer.config.completion
        boxes = BoxMasks(size, c.hole_min, c.hole_max)
        generator = torch.Generator().manual_seed(seed)
        holes = [
            [m[0].numpy().astype(np.uint8) for m in boxes.draw(random_boxes, generator)[0]]
            for _ in inputs
        ]

    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for (path, pixels), hole_list in zip(inputs, holes, strict=True):
        for k, hole in enumerate(hole_list):
            completed = completer(pixels, hole)
            if blend == "poisson":
                blended = poisson_blend(completed, pixels, hole)
                if blended is completed:
                    say(f"{path.name}: hole touches the border (or grey image): not blended")
                completed = blended
            name = f"{path.stem}-{k}.png" if random_boxes else f"{path.stem}.png"
            written.append(_write_png(completed, out / name))
    return written


def poisson_blend(completed: np.ndarray, original: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Poisson blending of the completed hole into the image (seamlessClone), then the
    pixels outside the hole set back to the input's exactly; `completed` itself where it
    cannot blend (a grey image, or a hole touching the border: seamlessClone needs a
    margin)."""
    cv2 = _opencv()
    if completed.shape[2] == 1:
        return completed  # seamlessClone blends colour images only
    grown = cv2.dilate(hole * 255, np.ones((3, 3), np.uint8))
    ys, xs = np.nonzero(grown)
    centre = (int((xs.min() + xs.max() + 1) // 2), int((ys.min() + ys.max() + 1) // 2))
    size = completed.shape[0]
    if xs.min() == 0 or ys.min() == 0 or xs.max() == size - 1 or ys.max() == size - 1:
        return completed  # seamlessClone needs a margin around the region
    blended = cv2.seamlessClone(
        completed[:, :, ::-1].copy(), original[:, :, ::-1].copy(), grown, centre, cv2.NORMAL_CLONE
    )[:, :, ::-1]
    return np.where(hole[:, :, None].astype(bool), blended, original)


def _opencv():
    try:
        import cv2
    except ImportError:
        raise PipelineError(
            "--blend poisson needs OpenCV: pip install opencv-python-headless"
        ) from None
    return cv2


def _write_png(pixels: np.ndarray, path: Path) -> Path:
    """Lossless PNG, written whole or not at all."""
    from PIL import Image

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels).save(tmp, format="PNG")
    os.replace(tmp, path)
    return path
