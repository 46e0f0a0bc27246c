"""`pipeline quickstart`: the whole pipeline, small, on data drawn by the program.

It writes demo sources in the real released formats (a CelebA folder with its annotation
files, an LSUN LMDB; see pipeline/data/demo.py), ingests both through the same sources and
engine that real data takes, draws a sample grid of each with its labels, trains a small
DCGAN on the faces with Ray Train (2 DDP workers), logged to MLflow, and runs a small Ray
Tune sweep of an ACGAN conditioned on two of the faces' attributes (tune_spaces/acgan.yaml,
one MLflow parent run with a child per trial), ranked on FID and on the class accuracy a
judge trained on the faces' real attributes reads from the trials' images. Nothing is
downloaded, so it runs on a fresh laptop and in CI.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.data.ingest import IngestOptions, IngestResult, ingest

# The demo's CelebA partition puts 80% of the faces in train; FID on 64-d features needs more
# than 64 of them.
MIN_SWEEP_IMAGES = 100


@dataclass(frozen=True)
class QuickstartConfig:
    data: str | None = None  # where the datasets go (default: the data dir)
    images: int = 400  # drawn images per demo source
    size: int = 64
    workers: int = 0
    seed: int = 0
    train: bool = True  # then train a small DCGAN on the demo faces (Ray Train, 2 workers)
    epochs: int = 2
    tune: bool = True  # and sweep a small ACGAN on them (Ray Tune), when training
    trials: int = 2


@dataclass
class QuickstartResult:
    sources: dict[str, Path]
    datasets: list[IngestResult] = field(default_factory=list)
    grids: list[Path] = field(default_factory=list)
    training: object | None = None  # pipeline.training.driver.TrainResult
    sweep: object | None = None  # pipeline.tuning.sweep.SweepResult


def quickstart(config: QuickstartConfig, progress_factory=None, say=print) -> QuickstartResult:
    """Draw the demo sources (once), ingest them, draw a grid of each dataset; then train
    and sweep on the faces."""
    from pipeline.config import ConfigError
    from pipeline.data import demo
    from pipeline.data.catalog import sample_grid
    from pipeline.data.sources.celeba import CelebaSource
    from pipeline.data.sources.lsun import LsunSource
    from pipeline.settings import data_dir

    if config.trials < 1:
        raise ConfigError(f"trials={config.trials} must be at least 1")
    if config.images < 20:
        raise ConfigError(f"images={config.images} is too few for a demo; use at least 20")
    if config.train and config.tune and config.images < MIN_SWEEP_IMAGES:
        raise ConfigError(
            f"images={config.images} is too few for the demo sweep, which ranks trials by FID "
            f"on 64-d features (more than 64 real training faces): use at least "
            f"{MIN_SWEEP_IMAGES}, or --no-tune"
        )
    root = Path(config.data).expanduser().resolve() if config.data else data_dir()
    sources = root / "demo-sources" / f"n{config.images}-seed{config.seed}"
    celeba_root, lsun_path = sources / "celeba", sources / "bedroom_train_lmdb"
    if not (sources / ".complete").exists():
        demo.write_celeba(celeba_root, n=config.images, seed=config.seed)
        demo.write_lsun(lsun_path, n=config.images, seed=config.seed + 1)
        (sources / ".complete").write_text("demo sources written\n")

    result = QuickstartResult(sources={"celeba": celeba_root, "lsun-bedroom": lsun_path})
    jobs = [
        ("demo-celeba", CelebaSource(celeba_root, size=config.size)),
        ("demo-lsun-bedroom", LsunSource("bedroom", lsun_path, size=config.size)),
    ]
    for name, source in jobs:
        options = IngestOptions(
            out=str(root / f"{name}-{config.size}"), size=config.size, workers=config.workers
        )
        if progress_factory is None:
            result.datasets.append(ingest(source, options))
        else:
            with progress_factory() as progress:
                result.datasets.append(ingest(source, options, progress=progress))
    grids = root / "demo-grids"
    for dataset in result.datasets:
        result.grids.append(
            sample_grid(dataset.path, grids / f"{dataset.path.name}.png", n=32, seed=config.seed)
        )
    if config.train:
        from pipeline.training.config import load_train_config
        from pipeline.training.driver import train

        faces = result.datasets[0].path
        small = {"model.width_g": 32, "model.width_d": 32, "batch_size": 32, "workers": 2}
        result.training = train(
            load_train_config(
                "dcgan",
                options={
                    "data.dataset": str(faces),
                    "epochs": config.epochs,
                    "seed": config.seed,
                    "experiment": "quickstart",
                    **small,
                },
            )
        )
    if config.train and config.tune:
        from pipeline.judge import train_judge
        from pipeline.tuning.sweep import SweepConfig, tune

        # The sweep ranks on FID and class_acc (tune_spaces/acgan.yaml): a judge trained on
        # the faces' real attributes reads each trial's images for the ones it was asked for.
        train_judge(faces, attrs=("Male", "Smiling"), epochs=10, seed=config.seed, say=say)

        # FID on few features: the demo has a few hundred faces (the standard 2048-d needs
        # more images than that). Trials of 1 worker: two run at once on a 2-core laptop.
        result.sweep = tune(
            SweepConfig(
                model="acgan",
                dataset=str(faces),
                samples=config.trials,
                max_epochs=config.epochs,
                workers_per_trial=1,
                experiment="quickstart",
                name=f"quickstart-{time.strftime('%Y%m%d-%H%M%S')}",
                overrides=(
                    "data.attrs=[Male, Smiling]",
                    "model.arch=dcgan",  # the space also tries SRResNet: 10x the step on CPU
                    "model.width_g=32",
                    "model.width_d=32",
                    "batch_size=32",
                    f"seed={config.seed}",
                    "fid.samples=128",
                    "fid.dims=64",
                ),
            ),
            say=say,
        )
    return result
