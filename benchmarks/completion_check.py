"""Completion check: GLCIC at 64 px on the real CelebA sample against two baselines.

A few minutes of CPU training, then hole PSNR / SSIM / L1 of the trained completion network C
against a mean-colour fill and OpenCV's Telea inpainting on the same (image, mask) pairs.

Input: the real CelebA sample (../shared/datasets/celeba), ingested at 64 px with the official
partition (1800 train, 600 val, 600 test). Training: the real loop, `run_worker` with a
`LocalContext` (one process, no Ray), the glcic preset with narrow nets (C width 16, D width
8, batch 16). The number of epochs fits `--minutes` from a measured joint-phase step rate
(or is given by `--epochs`); the phases are the preset's (C alone 18%, D alone 2%, joint).

Evaluation: `--eval-images` evenly spaced val images, holes from the run's mask source drawn
with torch.Generator().manual_seed(0). Every method's output is uint8, composited so that the
pixels outside the hole are the original's, and scored by
`pipeline.metrics.completion.completion_scores` (0-255 scale; `_hole` = in the hole only):
    mean fill   the hole filled with the training set's mean pixel (C's own input)
    Telea       cv2.inpaint(..., 3, cv2.INPAINT_TELEA) (skipped without OpenCV)
    GLCIC       C from the last checkpoint, eval mode
The grid (`--out`) shows, for 8 images: masked input (hole white) | mean fill | Telea | GLCIC |
original.

    python benchmarks/completion_check.py --minutes 4
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _common import SHARED, print_machine, workdir

from pipeline.data.ingest import IngestOptions, ingest
from pipeline.data.reader import ShardDataset
from pipeline.data.sources.celeba import CelebaSource
from pipeline.grid import make_grid
from pipeline.metrics.completion import completion_scores
from pipeline.models.glcic import CompletionNetwork
from pipeline.tasks.completion.diagnostics import PHASE_C, PHASE_D, PHASE_JOINT
from pipeline.tasks.completion.masks import fill, make_masks
from pipeline.tasks.completion.task import CompletionTask
from pipeline.training import checkpoint as ckpt
from pipeline.training.config import load_train_config
from pipeline.training.context import DataShape, Setup
from pipeline.training.images import to_images, to_uint8
from pipeline.training.runner import LocalContext, run_worker

SIZE = 64
CELEBA = SHARED / "celeba"
PHASES = {PHASE_C: "C", PHASE_D: "D", PHASE_JOINT: "joint"}
SCORES = ("l1_hole", "psnr_hole", "ssim_hole", "l1", "psnr", "ssim")
GRID_IMAGES = 8


def ingest_celeba(folder: Path) -> Path:
    if not (CELEBA / "img_align_celeba").is_dir():
        sys.exit(
            f"error: this check needs the real CelebA sample at {CELEBA} (the project's "
            "../shared/datasets, present in the workspace, absent in a plain clone)"
        )
    out, started = folder / f"celeba-{SIZE}", time.perf_counter()
    options = IngestOptions(out=str(out), size=SIZE, workers=2)
    result = ingest(CelebaSource(CELEBA, size=SIZE), options)
    rows = ", ".join(f"{k} {v['rows']}" for k, v in result.manifest["splits"].items())
    seconds = time.perf_counter() - started
    print(f"input: CelebA sample at {SIZE} px ({rows}), ingested in {seconds:.1f} s")
    return out


def seconds_per_step(config, dataset: Path, steps: int = 6) -> float:
    """Seconds of one joint-phase step (C and D): the fastest of a few after a warm-up step
    (the least disturbed; a shared, loaded machine makes the run itself take longer)."""
    data = ShardDataset(str(dataset), config.data.split)
    spe = len(data) // config.batch_size
    torch.manual_seed(config.seed)
    setup = Setup.for_worker(config, LocalContext(dataset))
    task = CompletionTask(config, setup, DataShape(SIZE, 3, None, str(dataset), spe))
    x = to_images(torch.from_numpy(data.take(np.arange(config.batch_size))["image"]), "cpu", False)
    task.step(x, None, 10**9)  # a step far past the phases C and D: joint
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        task.step(x, None, 10**9)
        times.append(time.perf_counter() - started)
    return min(times)


def composite(completed: np.ndarray, images: np.ndarray, hole: np.ndarray) -> np.ndarray:
    return np.where(hole, completed, images)


def telea(images: np.ndarray, hole: np.ndarray) -> np.ndarray | None:
    try:
        import cv2
    except ImportError:
        return None
    masks = hole[..., 0].astype(np.uint8) * 255
    bgr = np.ascontiguousarray(images[..., ::-1])
    out = [cv2.inpaint(b, m, 3, cv2.INPAINT_TELEA) for b, m in zip(bgr, masks, strict=True)]
    return np.stack(out)[..., ::-1]


@torch.no_grad()
def glcic(state: dict, config, images: np.ndarray, masks: torch.Tensor) -> np.ndarray:
    C = CompletionNetwork(config.model, SIZE, 3)
    C.load_state_dict(state["C"])
    C.eval()
    x = to_images(torch.from_numpy(images), "cpu", False)
    mean, batches = state["mean_pixel"], range(0, len(x), 64)
    out = [C(fill(x[i : i + 64], masks[i : i + 64], mean)) for i in batches]
    return to_uint8(torch.cat(out))


def scores(completed: np.ndarray, images: np.ndarray, masks: torch.Tensor) -> dict[str, float]:
    def nchw(a):
        return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float()

    return completion_scores(nchw(completed), nchw(images), masks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=4.0, help="training budget (default 4)")
    parser.add_argument("--epochs", type=int, default=0, help="epochs (default: fit --minutes)")
    parser.add_argument("--width-g", type=int, default=16, help="C's base width (default 16)")
    parser.add_argument("--width-d", type=int, default=8, help="D's base width (default 8)")
    parser.add_argument("--report-every", type=int, default=0, help="steps (0: once per epoch)")
    parser.add_argument("--eval-images", type=int, default=300, help="val images (default 300)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the run (default 0)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/completion_check.png"), help="grid")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.epochs < 0 or args.eval_images < GRID_IMAGES:
        parser.error(f"--minutes > 0, --epochs >= 0, --eval-images >= {GRID_IMAGES}")

    print_machine()
    with workdir() as tmp:
        dataset = ingest_celeba(tmp)
        options = [f"data.dataset={dataset}", f"model.width_g={args.width_g}",
                   f"model.width_d={args.width_d}", "batch_size=16", "workers=1",
                   f"report_every={args.report_every}", f"seed={args.seed}"]  # fmt: skip
        epochs = args.epochs
        if not epochs:
            step_s = seconds_per_step(load_train_config("glcic", overrides=options), dataset)
            spe = len(ShardDataset(str(dataset))) // 16
            epochs = max(1, int(args.minutes * 60 / (step_s * spe)))
            print(f"joint step {step_s:.3f} s, {spe} steps per epoch: {epochs} epochs fit")
        config = load_train_config("glcic", overrides=[*options, f"epochs={epochs}"])
        print(f"GLCIC {SIZE} px, C width {args.width_g}, D width {args.width_d}, batch 16, "
              f"{epochs} epochs, {torch.get_num_threads()} threads\n")  # fmt: skip
        print(f"{'epoch':>5} {'step':>5} {'min':>5} {'phase':>5} {'loss_rec':>8} "
              f"{'l1_hole':>7} {'psnr_hole':>9} {'ssim_hole':>9} {'img/s':>5}")  # fmt: skip
        started, nonfinite = time.perf_counter(), []

        def on_report(report) -> None:
            m = report.metrics
            nonfinite.append(m["nonfinite"])
            print(f"{m['epoch']:>5} {m['step']:>5} {(time.perf_counter() - started) / 60:>5.2f} "
                  f"{PHASES.get(int(m['phase']), '?'):>5} {m.get('loss_rec', float('nan')):>8.4f} "
                  f"{m['l1_hole']:>7.2f} {m['psnr_hole']:>9.2f} {m['ssim_hole']:>9.3f} "
                  f"{m['images_per_s']:>5.0f}", flush=True)  # fmt: skip

        ctx = LocalContext(tmp / "checkpoints")
        run_worker(config, ctx, str(dataset), on_report)
        minutes = (time.perf_counter() - started) / 60
        state = ckpt.load(ctx.checkpoint())

        val = ShardDataset(str(dataset), "val")
        picked = np.linspace(0, len(val) - 1, min(args.eval_images, len(val))).round()
        images = val.take(picked.astype(np.int64))["image"]
        generator = torch.Generator().manual_seed(0)
        masks, _ = make_masks(config.completion, SIZE).draw(len(images), generator)

    hole = masks.permute(0, 2, 3, 1).numpy().astype(bool)  # NHW1, broadcasts over channels
    colour = to_uint8(state["mean_pixel"].view(1, 3, 1, 1))[0, 0, 0]
    methods = {
        "mean fill": composite(colour, images, hole),
        "Telea": telea(images, hole),
        "GLCIC": composite(glcic(state, config, images, masks), images, hole),
    }
    print(f"\ntrained {state['step']} steps in {minutes:.1f} min; scores on {len(images)} val "
          f"images, holes {config.completion.masks} {config.completion.hole_min}-"
          f"{config.completion.hole_max} of the side (seed 0)\n")  # fmt: skip
    print(f"{'method':<10}" + "".join(f"{name:>10}" for name in SCORES))
    results = {}
    for name, completed in methods.items():
        if completed is None:
            print(f"{name:<10}  skipped (OpenCV, cv2, is not installed)")
            continue
        results[name] = s = scores(composite(completed, images, hole), images, masks)
        print(f"{name:<10}" + "".join(f"{s[k]:>10.3f}" for k in SCORES))
    gain = results["GLCIC"]["psnr_hole"] - results["mean fill"]["psnr_hole"]
    print(f"\nGLCIC psnr_hole - mean fill psnr_hole: {gain:+.2f} dB")
    if "Telea" in results:
        gain = results["GLCIC"]["psnr_hole"] - results["Telea"]["psnr_hole"]
        print(f"GLCIC psnr_hole - Telea psnr_hole:     {gain:+.2f} dB")
    if any(nonfinite):
        print("warning: a report had a non-finite loss")

    masked = np.where(hole, np.uint8(255), images)
    shown = [masked, *(c for c in methods.values() if c is not None), images]
    tiles = np.stack([c[:GRID_IMAGES] for c in shown], 1).reshape(-1, SIZE, SIZE, 3)
    make_grid(tiles, nrow=len(shown), padding=2, scale=2).save(args.out)
    columns = " | ".join(["masked input", *(k for k, c in methods.items() if c is not None)])
    print(f"grid ({columns} | original): {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
