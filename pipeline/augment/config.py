"""The augmentation settings of a run (`augment.*`, `ada.*`), checked against the registry of
`pipeline.augment` before anything trains."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.config import ConfigError


@dataclass(frozen=True)
class AugmentConfig:
    """What D sees: `policy` names augmentations of the registry, joined by commas
    (`color,translation,cutout` is DiffAugment's policy for small sets, `bgc` ADA's pipeline);
    `none` trains on the images as they are."""

    policy: str = "none"
    # The probability of each transform, per image. Unset: DiffAugment's operations always
    # apply (p = 1, as in its paper) and ADA's pipelines adapt p from 0 (`ada.*`).
    p: float | None = None


@dataclass(frozen=True)
class AdaConfig:
    """ADA's controller (Karras et al. 2020, sec. 2.3, and stylegan2-ada-pytorch's defaults):
    every `interval` steps p moves by sign(r_t - target) x images / (kimg x 1000)."""

    target: float = 0.6  # the r_t = E[sign(D(x_real))] p is steered to
    interval: int = 4  # D steps between adjustments (r_t is measured over them)
    kimg: float = 500.0  # thousands of images for p to go from 0 to 1 at full speed


def check_augment(augment: AugmentConfig, ada: AdaConfig) -> None:
    """Probabilities outside [0, 1] and a controller that cannot move: one line (the policy's
    names are checked against the registry, `pipeline.augment.policy.parse_policy`)."""
    if augment.p is not None and not 0.0 <= augment.p <= 1.0:
        raise ConfigError(f"augment.p={augment.p} must be in [0, 1] (unset: adaptive / always)")
    if not 0.0 < ada.target < 1.0:
        raise ConfigError(f"ada.target={ada.target} must be in (0, 1) (the paper: 0.6)")
    if ada.interval < 1:
        raise ConfigError(f"ada.interval={ada.interval} must be at least 1")
    if not ada.kimg > 0:
        raise ConfigError(f"ada.kimg={ada.kimg} must be > 0 (the paper: 500)")
