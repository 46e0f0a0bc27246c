"""Learning check: DCGAN at 32 px on the real CelebA sample for a few minutes of CPU.

The acceptance point of the training issue: losses stay finite and the generated images'
colour statistics approach the real ones. Input: the 3000 real CelebA sample faces, ingested
at 32 px with the DCGAN crop as one training split (_training.py). Training: the real loop,
`pipeline.training.runner.run_worker` with a `LocalContext` (one process, no Ray), our dcgan
preset (non-saturating loss, Adam(2e-4, 0.5, 0.999), batch norm, transposed convolutions,
random flips), one report per epoch.

The time budget (`--minutes`, default 4, wall clock) is kept with the loop's own resume: each
call of run_worker trains one more epoch, resuming from the last checkpoint (which changes
nothing: the loop reseeds and reshuffles per epoch), while the latest epoch's duration still
fits. Training at width 32 (ngf = ndf = 32, `--width`) and batch 64 makes ~4x more steps in
the budget than width 64; on a machine shared with other jobs, give it more `--minutes`.

Per epoch the loop reports the means over the epoch's steps of D's and G's losses, D(x),
D(G(z)), the per-channel mean and std of G's batches and of the real batches (in [-1, 1]
units), `color_gap` (the mean absolute difference of those channel means and stds, averaged)
and `diversity` (the mean pairwise distance within G's batches over that within real ones).
Two reference points put the gap in scale, measured here on the same data: an untrained G
(the size of the gap before learning) and a real half of the data against the other half,
with the epoch averaging the loop uses (the noise floor: the gap of a perfect G).

PASS when every reported loss is finite and the last epoch's color_gap is below the first
epoch's and below GAP_LIMIT = 0.05 (in [-1, 1] units: channel means and stds off by 0.05 on
average, 2.5% of the pixel range). That is a fifth of an untrained G's gap (0.27 at width 32)
and six times the noise floor (0.008). In the runs made while writing this, G crossed it
after ~780 steps (epoch 17, about a minute on 2 lightly loaded cores), when the grid shows
blurry faces in the right skin and hair colours, and sat at the noise floor (0.003 to 0.010)
from ~1300 steps on. The first epoch's gap is ~0.26: G_ema's grid is still grey noise.

Written to `--out` (default benchmarks/out/learning-check/, not for git): the fixed-noise
G_ema sample grids of the first and last epoch (epoch-001.png, epoch-NNN.png), a grid of real
faces (real.png) and the per-epoch metrics (metrics.json).

    python benchmarks/learning_check.py                  # 4 minutes of training
    python benchmarks/learning_check.py --minutes 1      # shorter (the verdict may FAIL)

Exit status 0 on PASS, 1 on FAIL.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _common import REPO, print_machine, workdir
from _training import celeba_train_set

from pipeline.data.reader import ShardDataset
from pipeline.grid import make_grid
from pipeline.models import build_generator
from pipeline.tasks.generation.diagnostics import Diagnostics
from pipeline.training.config import load_train_config
from pipeline.training.images import to_images
from pipeline.training.noise import sample_z
from pipeline.training.runner import LocalContext, run_worker

SIZE = 32
PHOTOS = 3000
GAP_LIMIT = 0.05
OUT = REPO / "benchmarks" / "out" / "learning-check"
RGB = "rgb"


def gap(fake_mean, fake_std, real_mean, real_std) -> float:
    """The loop's color_gap (pipeline.training.stats.image_summaries) of channel statistics."""
    return float((np.abs(fake_mean - real_mean).mean() + np.abs(fake_std - real_std).mean()) / 2)


def batch_stats(images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of a float NCHW batch (the loop's channel_stats)."""
    return images.mean(dim=(0, 2, 3)).numpy(), images.std(dim=(0, 2, 3)).numpy()


def epoch_stats(batches: list[torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """Per-batch statistics averaged over the batches, as the loop's Meter averages steps."""
    stats = [batch_stats(x) for x in batches]
    return np.mean([m for m, _ in stats], axis=0), np.mean([s for _, s in stats], axis=0)


@torch.no_grad()
def reference_gaps(config, dataset: Path) -> tuple[float, float]:
    """color_gap of an untrained G against the real data, and of real half against half."""
    data = ShardDataset(dataset)
    batch = config.batch_size
    loader = data.loader(batch, seed=config.seed + 1)
    real = [to_images(b["image"], "cpu", False) for b in loader]
    half = len(real) // 2
    real_a, real_b = epoch_stats(real[:half]), epoch_stats(real[half : 2 * half])
    torch.manual_seed(config.seed)
    G = build_generator(config.model, SIZE, 3).train()  # batch statistics, as in training
    fakes = [G(sample_z(config, batch, "cpu")) for _ in range(half)]
    untrained = gap(*epoch_stats(fakes), *epoch_stats(real))
    return untrained, gap(*real_a, *real_b)


def save_real_grid(dataset: Path, path: Path, count: int = 64) -> None:
    images = ShardDataset(dataset).take(np.arange(count))["image"]
    make_grid(images, nrow=8, padding=2, scale=2).save(path)


def rgb(metrics: dict, name: str) -> str:
    return " ".join(f"{metrics[f'{name}_{c}']:+.2f}" for c in RGB)


HEADER = (
    f"{'epoch':>5} {'step':>5} {'min':>5} {'img/s':>5} {'loss_d':>6} {'loss_g':>6} "
    f"{'D(x)':>5} {'D(G(z))':>7} {'gap':>6}  {'fake mean r g b':<15}  "
    f"{'real mean r g b':<15}  {'fake std r g b':<15}  {'real std r g b':<15}  {'div':>4}"
)


def epoch_row(m: dict) -> str:
    """One line of the table: an epoch's means as the loop reported them."""
    return (
        f"{m['epoch']:>5} {m['step']:>5} {m['minutes']:>5.2f} {m['images_per_s']:>5.0f} "
        f"{m['loss_d']:>6.3f} {m['loss_g']:>6.3f} {m['D_x']:>5.2f} {m['D_G_z']:>7.2f} "
        f"{m['color_gap']:>6.3f}  {rgb(m, 'fake_mean')}  {rgb(m, 'real_mean')}  "
        f"{rgb(m, 'fake_std')}  {rgb(m, 'real_std')}  {m['diversity']:>4.2f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--minutes", type=float, default=4.0, help="training time budget (default 4)"
    )
    parser.add_argument(
        "--out", type=Path, default=OUT, help=f"folder for grids and metrics (default {OUT})"
    )
    parser.add_argument(
        "--width", type=int, default=32, help="ngf = ndf, G's and D's base width (default 32)"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    parser.add_argument(
        "--ema",
        type=float,
        default=0.99,
        help="G_ema decay for the sample grids (default 0.99; with the preset's 0.999, G_ema "
        "still holds 0.999**n of the initial weights after n steps, a quarter after 1400, and "
        "a short run's grids come out washed out and grainy)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the run (default 0)")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.width < 1 or not 1 <= args.batch_size <= PHOTOS:
        parser.error("--minutes, --width and --batch-size must be positive (batch <= 3000)")
    if not 0 <= args.ema < 1:
        parser.error("--ema must be in [0, 1)")

    print_machine()
    args.out.mkdir(parents=True, exist_ok=True)
    for stale in args.out.glob("epoch-*.png"):  # an earlier run's grids
        stale.unlink()
    with workdir() as tmp:
        dataset = celeba_train_set(tmp, SIZE, PHOTOS)
        options = {
            "data.dataset": str(dataset),
            "workers": 1,
            "batch_size": args.batch_size,
            "model.width_g": args.width,
            "model.width_d": args.width,
            "optim.ema": args.ema,
            "seed": args.seed,
        }
        config = load_train_config("dcgan", options={**options, "epochs": 1})
        untrained_gap, floor_gap = reference_gaps(config, dataset)
        save_real_grid(dataset, args.out / "real.png")
        steps_per_epoch = PHOTOS // args.batch_size
        print(
            f"DCGAN {SIZE} px, width {args.width}, batch {args.batch_size} "
            f"({steps_per_epoch} steps per epoch), G_ema decay {args.ema}, "
            f"budget {args.minutes:g} min, {torch.get_num_threads()} threads"
        )
        print(
            f"color_gap reference points: untrained G {untrained_gap:.3f}; "
            f"real half against real half {floor_gap:.3f}"
        )

        print()
        print(HEADER)
        print("-" * len(HEADER))
        reports: list[dict] = []
        grids: dict[int, object] = {}
        budget_s = args.minutes * 60
        started = time.perf_counter()

        # The run's diagnostics over all its epochs (each run_worker call below is one epoch,
        # so the task's own history would restart every epoch).
        diagnostics, warnings = Diagnostics(), []

        def on_report(report) -> None:
            metrics, grid = report.metrics, report.grid
            metrics["minutes"] = (time.perf_counter() - started) / 60
            reports.append(metrics)
            warnings.extend(f.message for f in diagnostics.update(metrics))
            grids[metrics["epoch"]] = grid
            print(epoch_row(metrics), flush=True)

        # The budget: one epoch per call, each resuming from the last checkpoint, while the
        # latest epoch's duration still fits (the load of a shared machine changes a lot).
        ctx = LocalContext(tmp / "checkpoints")
        epochs = 1
        while True:
            config = load_train_config("dcgan", options={**options, "epochs": epochs})
            run_worker(config, ctx, str(dataset), on_report)  # resumes from the last epoch
            times = [0.0] + [m["minutes"] * 60 for m in reports]
            if reports[-1]["nonfinite"] or times[-1] + times[-1] - times[-2] > budget_s:
                break
            epochs += 1
        total_min = (time.perf_counter() - started) / 60

    first, last = reports[0], reports[-1]
    grids[first["epoch"]].save(args.out / f"epoch-{first['epoch']:03d}.png")
    grids[last["epoch"]].save(args.out / f"epoch-{last['epoch']:03d}.png")
    (args.out / "metrics.json").write_text(
        json.dumps(
            {
                "untrained_gap": untrained_gap,
                "real_half_gap": floor_gap,
                "gap_limit": GAP_LIMIT,
                "epochs": reports,
            },
            indent=1,
        )
    )

    print(
        f"\n{len(reports)} epochs, {last['step']} steps, {last['images_seen']} images in "
        f"{total_min:.1f} min; grids and metrics in {args.out}"
    )
    finite = all(
        not m["nonfinite"] and math.isfinite(m["loss_d"]) and math.isfinite(m["loss_g"])
        for m in reports
    )
    closer = last["color_gap"] < first["color_gap"]
    small = last["color_gap"] < GAP_LIMIT
    checks = [
        (finite, "losses finite in every epoch"),
        (
            closer,
            f"color_gap fell: {first['color_gap']:.3f} after epoch 1 -> "
            f"{last['color_gap']:.3f} after epoch {last['epoch']}",
        ),
        (small, f"final color_gap {last['color_gap']:.3f} < {GAP_LIMIT}"),
        (not warnings, "no diagnostic warning" + (f": {'; '.join(warnings)}" if warnings else "")),
    ]
    for ok, text in checks:
        print(f"  [{'ok' if ok else 'FAILED'}] {text}")
    passed = finite and closer and small and not warnings
    print("PASS" if passed else "FAIL")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
