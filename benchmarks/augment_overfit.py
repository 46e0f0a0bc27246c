"""Does augmentation stop D memorising a small dataset? Three DCGAN runs on the real anime
sample, in one process, the same seed and steps: no augmentation, ADA (`bgc`, p adaptive) and
DiffAugment (`color,translation,cutout`).

Input: the 566 anime faces of ../shared/datasets, ingested at 32 px with `--val 0.15` (502
training images, 64 held out: `pipeline.data.sources.images`). Training: the real loop
(`pipeline.training.runner.run_worker`, one process, no Ray), our dcgan preset at width 64,
batch 32, one report per epoch. Each report logs D's mean raw output on 64 fixed training
reals, on the 64 held-out reals and on 64 fakes (`pipeline.training.overfitting`): D_gap =
D_train - D_val grows while D memorises, r_v = D_gap / (D_train - D_fake) is ADA's validation
heuristic. ADA runs at `--ada-kimg` (default 20: p can go from 0 to 1 in 20k images; the
paper's 500k is for runs of millions of images, this one sees ~50k).

Printed: one row per run, means over the last quarter of the epochs (the gap is noisy):
D_gap, r_v, D_train, D_val, D_fake, r_t (D's sign on the reals it trains on), p, the losses,
and the stand-in FID of G_ema against the training images at the end (random-weight
Inception: comparable between these runs only). Then the ratio of each augmented run's gap
to the plain run's. Goal: at most 0.5 (the gap at least halved).

Written to `--out` (default benchmarks/out/augment/, not for git): each run's last sample
grid (none.png, ada.png, diffaugment.png) to look at for leaked augmentation (rotated,
flipped upside down, colour-shifted or cut-out faces), and metrics.json with every report.

    python benchmarks/augment_overfit.py                 # ~60 epochs each, a few CPU minutes
    python benchmarks/augment_overfit.py --epochs 20     # quicker, a smaller gap
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _common import REPO, SHARED, print_machine, workdir

from pipeline.data.ingest import IngestOptions, ingest
from pipeline.data.sources.images import ImageFolderSource
from pipeline.training.config import load_train_config
from pipeline.training.runner import LocalContext, run_worker

SIZE = 32
OUT = REPO / "benchmarks" / "out" / "augment"
RUNS = {
    "none": {},
    "ada": {"augment.policy": "bgc"},
    "diffaugment": {"augment.policy": "color,translation,cutout"},
}
COLUMNS = ("D_gap", "r_v", "D_train", "D_val", "D_fake", "r_t", "augment_p", "loss_d", "loss_g")


def anime_with_val(folder: Path) -> Path:
    anime = SHARED / "anime-mlds2018" / "extra_data"
    if not anime.is_dir():
        raise SystemExit(f"error: the anime sample is missing at {anime} (../shared/datasets)")
    out = folder / "anime-32-val"
    ingest(ImageFolderSource(anime, size=SIZE, val=0.15), IngestOptions(out=str(out), size=SIZE))
    return out


def train(name: str, dataset: Path, folder: Path, args) -> tuple[list[dict], object]:
    options = {
        "data.dataset": str(dataset),
        "workers": 1,
        "epochs": args.epochs,
        "batch_size": 32,
        "model.width_g": args.width,
        "model.width_d": args.width,
        "seed": args.seed,
        "ada.kimg": args.ada_kimg,
        # The stand-in FID at the last epoch only (its 64-d features; 500 of the 502 reals).
        "fid.every": args.epochs,
        "fid.samples": 500,
        "fid.dims": 64,
        **RUNS[name],
    }
    config = load_train_config("dcgan", options=options)
    reports: list[dict] = []
    grids = []

    def on_report(report):
        reports.append(report.metrics)
        grids.append(report.grid)

    started = time.perf_counter()
    run_worker(config, LocalContext(folder / name), str(dataset), on_report)
    print(f"{name}: {args.epochs} epochs in {time.perf_counter() - started:.0f} s", flush=True)
    return reports, grids[-1]


def summary(reports: list[dict]) -> dict[str, float]:
    tail = reports[-max(1, len(reports) // 4) :]
    out = {key: sum(r.get(key, 0.0) for r in tail) / len(tail) for key in COLUMNS}
    fid = [r for r in reports if "fid_standin" in r or "fid" in r]
    out["fid"] = fid[-1].get("fid_standin", fid[-1].get("fid")) if fid else float("nan")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--width", type=int, default=64, help="model.width_g and width_d")
    parser.add_argument("--ada-kimg", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    print_machine()
    args.out.mkdir(parents=True, exist_ok=True)
    results, everything = {}, {}
    with workdir() as folder:
        dataset = anime_with_val(folder)
        for name in RUNS:
            reports, grid = train(name, dataset, folder, args)
            grid.save(args.out / f"{name}.png")
            results[name], everything[name] = summary(reports), reports
    (args.out / "metrics.json").write_text(json.dumps(everything, indent=1))

    quarter = max(1, args.epochs // 4)
    print(f"\nmeans over the last {quarter} epochs of {args.epochs}; FID: stand-in, at the end")
    print(f"{'run':<12}" + "".join(f"{c:>10}" for c in (*COLUMNS, "fid")))
    for name, row in results.items():
        print(f"{name:<12}" + "".join(f"{row[c]:>10.3f}" for c in (*COLUMNS, "fid")))
    plain = results["none"]["D_gap"]
    if plain <= 0:
        print(f"no gap without augmentation (D_gap {plain:.3f}): D did not memorise in "
              f"{args.epochs} epochs, the ratio says nothing; run more --epochs")  # fmt: skip
    for name in ("ada", "diffaugment") if plain > 0 else ():
        ratio = results[name]["D_gap"] / plain
        verdict = "PASS" if ratio <= 0.5 else "FAIL"
        print(f"D_gap {name} / none = {ratio:.2f} (goal <= 0.5): {verdict}")
    print(f"grids: {args.out}/{{none,ada,diffaugment}}.png")


if __name__ == "__main__":
    main()
