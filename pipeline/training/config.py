"""The typed config of a training run, and the presets of each model family.

`pipeline train MODEL` starts from the family's preset (the paper's settings), then applies
`--config FILE.yaml`, then `--set a.b=c` overrides, then the explicit command-line options:

    dcgan    Radford et al. 2015: non-saturating loss, Adam(2e-4, 0.5, 0.999), batch norm.
    acgan    Odena et al. 2017: dcgan plus an auxiliary classifier weighted by lambda_cls.
    wgan     Arjovsky et al. 2017: the critic's weights clipped to [-0.01, 0.01] after every
             critic step, 5 critic steps per G step, RMSProp(5e-5) (momentum-free, as the
             paper: Adam made its critic unstable).
    wgan-gp  Gulrajani et al. 2017: critic without batch norm (layer norm), gradient penalty 10,
             5 critic steps per G step, Adam(1e-4, 0.0, 0.9).
    glcic    Iizuka et al. 2017 image completion: C alone on the reconstruction loss in the
             hole (the first 18% of the run), D alone (2%), then both with alpha = 0.0004 x
             the adversarial loss; MSE reconstruction, holes 0.375-0.5 of the side, a local
             patch of half the side. Adam(4e-4, 0.9, 0.999) as mmagic (the paper: Adadelta,
             `--set optim.optimizer=adadelta --set optim.lr_g=1 --set optim.lr_d=1`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pipeline.augment.config import AdaConfig, AugmentConfig, check_augment
from pipeline.config import ConfigError, apply_overrides, from_dict, read_yaml
from pipeline.metrics.config import FidConfig, check_fid
from pipeline.models.config import ModelConfig


@dataclass(frozen=True)
class DataConfig:
    dataset: str = ""  # name under the data dir, or a path
    split: str = "train"
    groups: tuple[str, ...] = ()  # label groups to condition on (default: all of the dataset's)
    attrs: tuple[str, ...] = ()  # CelebA attributes to condition on, e.g. [Male, Smiling]
    flip: bool = True  # random horizontal flip
    rotate: float = 0.0  # random rotation, +- degrees


@dataclass(frozen=True)
class OptimConfig:
    optimizer: Literal["adam", "rmsprop", "adadelta"] = "adam"  # for G and D (betas: Adam only)
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    n_critic: int = 1  # D steps per G step
    schedule: Literal["constant", "step", "linear"] = "constant"
    milestones: tuple[int, ...] = ()  # epochs where "step" multiplies the rates by gamma
    gamma: float = 0.1
    ema: float = 0.999  # decay of G_ema; 0 turns it off (G_ema = G)


@dataclass(frozen=True)
class CompletionConfig:
    """GLCIC's own settings (family glcic): the objective, the masks, the phases."""

    alpha: float = 0.0004  # weight of C's adversarial loss against its reconstruction loss
    reconstruction: Literal["mse", "l1"] = "mse"  # in the hole (the paper: MSE; mmagic: L1)
    masks: Literal["boxes", "centre", "folder"] = "boxes"  # registry MASKS
    mask_dir: str = ""  # masks: folder: binary PNG masks (white = hole) of the image's size
    hole_min: float = 0.375  # box side, as a fraction of the image side (the paper: 96 of 256)
    hole_max: float = 0.5  # (128 of 256); centre: hole_max is the square's side
    local: float = 0.5  # side of the local discriminator's patch / the image side
    phase_unit: Literal["fraction", "epochs", "images"] = "fraction"  # of tc and td
    tc: float = 0.18  # C alone on the reconstruction loss (the paper: 90k of 500k iterations)
    td: float = 0.02  # then D alone (10k of 500k); then both until the end
    eval_images: int = 64  # the fixed evaluation set of (image, mask) pairs, each report
    eval_split: str = ""  # default: val, else test, else the training split


@dataclass(frozen=True)
class TrainConfig:
    family: Literal["dcgan", "acgan", "wgan", "wgan-gp", "glcic"] = "dcgan"
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: str = "nsgan"
    lambda_cls: float = 1.0  # weight of the ACGAN class loss against the adversarial loss
    lambda_gp: float = 10.0  # weight of the WGAN-GP gradient penalty
    weight_clip: float = 0.0  # WGAN: D's weights clipped to [-c, c] after each D step; 0 = off
    z_dist: Literal["normal", "uniform"] = "normal"
    z_std: float = 1.0
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # what D sees (small data)
    ada: AdaConfig = field(default_factory=AdaConfig)  # ADA's controller of augment.p
    optim: OptimConfig = field(default_factory=OptimConfig)
    fid: FidConfig = field(default_factory=FidConfig)  # FID/KID every `fid.every` epochs
    completion: CompletionConfig = field(default_factory=CompletionConfig)  # glcic only
    epochs: int = 5
    batch_size: int = 128  # global: split across workers
    seed: int = 0
    workers: int = 2
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    report_every: int = 0  # steps between reports; 0 = once per epoch
    samples: int = 64  # images in each fixed-noise sample grid
    bf16: bool = True  # autocast on GPU (ignored on CPU)
    channels_last: bool = True  # on GPU
    compile: bool = False  # torch.compile G and D (GPU)
    max_failures: int = 1  # worker-group restarts from the last checkpoint
    solo: bool = True  # one worker trains without a Ray Train worker group (training/solo.py)
    experiment: str | None = None  # MLflow experiment; default "<dataset>/<family>"
    run_name: str | None = None

    @property
    def conditional(self) -> bool:
        return self.family == "acgan"


PRESETS: dict[str, dict] = {
    "dcgan": {"family": "dcgan", "loss": "nsgan"},
    "acgan": {"family": "acgan", "loss": "nsgan", "lambda_cls": 1.0},
    "wgan": {
        "family": "wgan",
        "loss": "wgan",
        "weight_clip": 0.01,
        "optim": {"optimizer": "rmsprop", "lr_g": 5e-5, "lr_d": 5e-5, "n_critic": 5},
    },
    "wgan-gp": {
        "family": "wgan-gp",
        "loss": "wgan-gp",
        "lambda_gp": 10.0,
        "model": {"norm_d": "layer"},
        "optim": {"lr_g": 1e-4, "lr_d": 1e-4, "beta1": 0.0, "beta2": 0.9, "n_critic": 5},
    },
    "glcic": {
        "family": "glcic",
        "loss": "nsgan",
        "optim": {"lr_g": 4e-4, "lr_d": 4e-4, "beta1": 0.9, "beta2": 0.999, "ema": 0.0},
        "batch_size": 32,
    },
}
FAMILIES = tuple(PRESETS)
RUN_NAME = r"[A-Za-z0-9][\w.-]{0,199}"  # a run's name is its Ray run folder's name


def load_train_config(
    family: str,
    file: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    options: dict | None = None,
    base: dict | None = None,
) -> TrainConfig:
    """Preset of `family` (or `base`, a resumed run's config) <- YAML file <- dotted overrides
    <- explicit options (None skipped)."""
    if family not in PRESETS:
        raise ConfigError(f"unknown model {family!r}; choose one of: {', '.join(FAMILIES)}")
    if base is not None and base.get("family") != family:
        raise ConfigError(f"the run to resume is a {base.get('family')} run, not {family}")
    start = base if base is not None else PRESETS[family]
    data = _merge(start, read_yaml(file) if file is not None else {})
    if data.get("family", family) != family:
        raise ConfigError(f"config file {file} is for family {data['family']!r}, not {family!r}")
    data = apply_overrides(data, overrides)
    for key, value in (options or {}).items():
        if value is not None:
            *parents, last = key.split(".")
            nested = {last: value}
            for part in reversed(parents):
                nested = {part: nested}
            data = _merge(data, nested)
    config = from_dict(TrainConfig, data)
    check(config)
    return config


def check(config: TrainConfig) -> None:
    """What the dataclass types cannot say: ranges and combinations (the model's own checks
    run once the dataset's image size is known, in the driver)."""
    if config.run_name is not None and not re.fullmatch(RUN_NAME, config.run_name):
        raise ConfigError(
            f"run_name={config.run_name!r} is not a run name (it names the run's folder): "
            "letters, digits, '-', '_' and '.', starting with a letter or digit"
        )
    if config.epochs < 1:
        raise ConfigError(f"epochs={config.epochs} must be at least 1")
    if config.workers < 1:
        raise ConfigError(f"workers={config.workers} must be at least 1")
    if config.batch_size < 1 or config.batch_size % config.workers:
        raise ConfigError(
            f"batch size {config.batch_size} must divide evenly across {config.workers} "
            f"workers (e.g. {max(1, config.batch_size // config.workers) * config.workers})"
        )
    if config.optim.n_critic < 1:
        raise ConfigError(f"optim.n_critic={config.optim.n_critic} must be at least 1")
    if not 0.0 <= config.optim.ema < 1.0:
        raise ConfigError(f"optim.ema={config.optim.ema} must be in [0, 1)")
    if config.gpus_per_worker < 0:
        raise ConfigError(f"gpus_per_worker={config.gpus_per_worker} must be >= 0")
    if config.weight_clip < 0:
        raise ConfigError(f"weight_clip={config.weight_clip} must be >= 0 (0 turns it off)")
    if config.loss == "wgan" and config.weight_clip == 0:
        raise ConfigError(
            "loss=wgan needs a Lipschitz constraint on the critic: weight_clip > 0 (Arjovsky et "
            "al.'s c=0.01), or loss=wgan-gp for the gradient penalty"
        )
    if config.conditional and config.lambda_cls < 0:
        raise ConfigError(f"lambda_cls={config.lambda_cls} must be >= 0")
    if config.fid.every:
        check_fid(config.fid)
    from pipeline.augment.policy import parse_policy

    parse_policy(config.augment.policy)
    check_augment(config.augment, config.ada)
    if config.family == "glcic" and config.augment.policy != "none":
        raise ConfigError(
            "augment.policy is for the GAN families: GLCIC's local discriminator judges the "
            "patch around the hole, which a geometric transform would move away from it, and "
            "its completion learns mostly from the reconstruction loss (alpha 0.0004)"
        )
    if config.family == "glcic":
        check_completion(config)
    if not config.conditional and (config.data.attrs or config.data.groups):
        raise ConfigError(
            f"{config.family} is unconditional: data.attrs / data.groups need `acgan`"
        )


def check_completion(config: TrainConfig) -> None:
    """GLCIC's settings that can be judged before the dataset is known."""
    c = config.completion
    if c.alpha < 0:
        raise ConfigError(f"completion.alpha={c.alpha} must be >= 0 (0: no adversarial loss)")
    if not 0 < c.hole_min <= c.hole_max < 1:
        raise ConfigError(
            f"completion.hole_min={c.hole_min} and hole_max={c.hole_max} must satisfy "
            "0 < hole_min <= hole_max < 1 (fractions of the image side)"
        )
    if c.hole_max > c.local:
        raise ConfigError(
            f"a hole of up to {c.hole_max} of the side is bigger than the local "
            f"discriminator's patch ({c.local} of the side): raise completion.local or lower "
            "completion.hole_max"
        )
    if c.masks == "folder" and not c.mask_dir:
        raise ConfigError("completion.masks=folder needs completion.mask_dir=FOLDER of PNG masks")
    if c.tc < 0 or c.td < 0:
        raise ConfigError(f"completion.tc={c.tc} and td={c.td} cannot be negative")
    run = {"fraction": 1.0, "epochs": float(config.epochs)}.get(c.phase_unit)
    if run is not None and c.tc + c.td > run:
        unit = "of the run" if c.phase_unit == "fraction" else "epochs"
        raise ConfigError(
            f"the phases C alone ({c.tc}) and D alone ({c.td}) are longer than the run "
            f"({run:g} {unit}): shorten completion.tc / completion.td"
        )
    if c.eval_images < 1:
        raise ConfigError(f"completion.eval_images={c.eval_images} must be at least 1")
    if config.optim.n_critic != 1:
        raise ConfigError("glcic updates D and C once per step: optim.n_critic must be 1")


def _merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged
