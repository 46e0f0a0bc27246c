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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

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
    optimizer: Literal["adam", "rmsprop"] = "adam"  # for G and D (betas: Adam only)
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
class TrainConfig:
    family: Literal["dcgan", "acgan", "wgan", "wgan-gp"] = "dcgan"
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: str = "nsgan"
    lambda_cls: float = 1.0  # weight of the ACGAN class loss against the adversarial loss
    lambda_gp: float = 10.0  # weight of the WGAN-GP gradient penalty
    weight_clip: float = 0.0  # WGAN: D's weights clipped to [-c, c] after each D step; 0 = off
    z_dist: Literal["normal", "uniform"] = "normal"
    z_std: float = 1.0
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    fid: FidConfig = field(default_factory=FidConfig)  # FID/KID every `fid.every` epochs
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
}
FAMILIES = tuple(PRESETS)


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
    if not config.conditional and (config.data.attrs or config.data.groups):
        raise ConfigError(
            f"{config.family} is unconditional: data.attrs / data.groups need `acgan`"
        )


def _merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged
