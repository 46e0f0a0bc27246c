"""FID speed: Inception feature extraction, and what the reference-statistics cache saves.

Input: the real CelebA sample photos, ingested at 64 px. Measured:
- extraction: images/s of the full FID Inception (299x299 resize, pool3 2048-d) on uint8
  batches of the dataset, `--repeats` runs of `--extract` images (stand-in weights: the
  same network and cost as the real ones);
- evaluation: `Evaluator.evaluate` (the code path of `--fid-every`) of an untrained
  DCGAN generator, twice: the first computes and caches the real statistics, the second
  reads them back. Ratio first / second: about 2 when the real side is as big as the
  generated one (N real = N generated) and nothing is recomputed; 1 would mean recomputed.
- the extra metrics' cost: FID alone (the same N generated images embedded, pool3 only,
  the Frechet distance against the cached reference) against every metric of the
  evaluation (logits for IS, KID, precision/recall/density/coverage), same samples, same
  run, `--repeats` times each, interleaved. Goal: <= 1.3x.

    python benchmarks/fid.py                                   # CPU: 64-d, 1000 samples
    python benchmarks/fid.py --device cuda --dims 2048 --samples 10000   # GPU: 10k at 64 px
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from _common import Measurement, add_options, print_machine, print_table, workdir

from pipeline.data.ingest import IngestOptions, ingest
from pipeline.data.reader import ShardDataset
from pipeline.data.sources.celeba import CelebaSource
from pipeline.metrics.config import FidConfig
from pipeline.metrics.evaluation import Evaluator, generated_pass
from pipeline.metrics.fid import Embedder, dataset_reference
from pipeline.metrics.stats import frechet_distance
from pipeline.metrics.weights import resolve
from pipeline.models import build_generator
from pipeline.models.config import ModelConfig
from pipeline.training.images import to_uint8

SIZE = 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_options(parser, images=3000, repeats=2)
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    parser.add_argument("--dims", type=int, default=64, help="features of the evaluation runs")
    parser.add_argument("--samples", type=int, default=1000, help="N generated (and real)")
    parser.add_argument("--extract", type=int, default=200, help="images per extraction run")
    parser.add_argument("--batch", type=int, default=50, help="images per Inception forward")
    args = parser.parse_args()
    if args.quick:
        args.images, args.repeats, args.samples, args.extract = 600, 1, 200, 50
    os.environ.setdefault("PIPELINE_FID_URL", "")  # a benchmark never downloads
    device = torch.device(args.device)
    print_machine()
    print(f"device: {device}, torch threads: {torch.get_num_threads()}")

    with workdir() as tmp:
        from _common import SHARED

        dataset = tmp / "celeba-64"
        ingest(
            CelebaSource(SHARED / "celeba", size=SIZE),
            IngestOptions(out=str(dataset), size=SIZE, workers=2, limit=args.images),
        )
        data = ShardDataset(dataset, "train")
        backbone = resolve(say=lambda line: print(f"weights: {line}"))
        print(f"backbone: {backbone.describe()}")

        # Extraction: the full network, uint8 in, 2048-d out.
        embedder = Embedder(backbone, 2048, device, args.batch)
        images = data.take(range(min(args.extract, len(data))), columns=[])["image"]
        embedder(images[: args.batch])  # warm-up (cudnn autotune, allocator)
        extraction = Measurement(f"Inception pool3 features ({device})")
        for _ in range(args.repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            embedder(images)
            if device.type == "cuda":
                torch.cuda.synchronize()
            extraction.add(time.perf_counter() - started, len(images))
        print_table([extraction])

        # Evaluation: first (reference computed and cached) vs second (read back).
        fid = FidConfig(every=1, samples=args.samples, dims=args.dims, batch=args.batch)
        G = build_generator(ModelConfig(), SIZE, 3, None).to(device).train()

        @torch.no_grad()
        def sample(n: int, generator: torch.Generator):
            return to_uint8(G(torch.randn(n, 100, generator=generator).to(device), None))

        seconds = []
        for attempt in ("first", "second"):
            evaluator = Evaluator(fid, backbone, dataset, "train", device)  # a new run
            started = time.perf_counter()
            scores = evaluator.evaluate(sample)
            seconds.append(time.perf_counter() - started)
            name = "fid_standin" if backbone.standin else "fid"
            print(
                f"evaluation {attempt}: {seconds[-1]:.1f} s, {name} {scores[name]:.3f}, "
                f"reference {evaluator.protocol['reference']}, N {fid.samples}, {fid.dims}-d"
            )
        print(
            f"{'first / second evaluation (reference cached)':<52} {seconds[0] / seconds[1]:7.2f}x"
        )
        total = 2 * fid.samples / seconds[0]
        print(f"first evaluation: {total:,.0f} images/s embedded (real + generated)")

        # The extra metrics: FID alone against everything, on the same generated images.
        fid_only = Embedder(backbone, fid.dims, device, fid.batch)
        real = dataset_reference(fid_only, dataset, "train", fid)  # cached by now

        def fid_alone() -> float:
            fake = generated_pass(fid_only, sample, fid)
            return frechet_distance(*fake.stats.mean_cov(), real.mu, real.sigma)

        alone, everything = [], []
        for _ in range(args.repeats):
            for runs, work in (
                (alone, fid_alone),
                (everything, lambda: evaluator.evaluate(sample)),
            ):
                started = time.perf_counter()
                result = work()
                runs.append(time.perf_counter() - started)
        print(f"metrics of the full evaluation: {', '.join(sorted(result))}")
        print(f"FID alone: {min(alone):.2f} s; every metric: {min(everything):.2f} s (best of "
              f"{args.repeats}, N {fid.samples}, {fid.dims}-d)")  # fmt: skip
        print(
            f"{'every metric / FID alone (goal <= 1.3)':<52} {min(everything) / min(alone):7.2f}x"
        )


if __name__ == "__main__":
    main()
