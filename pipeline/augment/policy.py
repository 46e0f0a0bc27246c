"""The registry of augmentations `augment.policy` names, and `Augment`: a run's policy with
its p (fixed, always, or ADA's controller).

    augment = Augment.from_config(config.augment, config.ada, device, distributed)
    D(augment(x))                     # reals, and likewise fakes, in D's and G's steps
    augment.observe(signs)            # ADA: D's signs on the reals steer p

AUGMENTATIONS: `color`, `translation`, `cutout` (DiffAugment, `pipeline.augment.diffaugment`)
and `bgc` / `bg` (ADA's pipeline with or without its colour transforms,
`pipeline.augment.ada`); a new one is a class with `name`, `adaptive` and `__call__(x, p)`
plus one line here.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pipeline.augment.ada import AdaController, AdaPipeline
from pipeline.augment.config import AdaConfig, AugmentConfig
from pipeline.augment.diffaugment import Color, Cutout, Translation
from pipeline.config import ConfigError

AUGMENTATIONS = {
    "color": Color(),
    "translation": Translation(),
    "cutout": Cutout(),
    "bgc": AdaPipeline("bgc"),
    "bg": AdaPipeline("bg", colour=False),
}
NONE = "none"

__all__ = ["AUGMENTATIONS", "Augment", "parse_policy"]


def parse_policy(policy: str) -> list:
    """`augment.policy` -> the augmentations it names, in order; `none` is []."""
    names = [name.strip() for name in policy.split(",") if name.strip()]
    if names == [NONE]:
        return []
    unknown = [name for name in names if name not in AUGMENTATIONS]
    if unknown or not names:
        raise ConfigError(
            f"augment.policy={policy!r}: {', '.join(map(repr, unknown)) or 'empty'} is not an "
            f"augmentation; use none or names joined by commas from: {', '.join(AUGMENTATIONS)}"
        )
    if len(set(names)) != len(names):
        raise ConfigError(f"augment.policy={policy!r} names an augmentation twice")
    return [AUGMENTATIONS[name] for name in names]


class Augment:
    """The run's augmentations with their p: fixed (`augment.p`), always (DiffAugment), or
    ADA's, steered by the controller when a pipeline of ADA's is in the policy."""

    def __init__(self, augmentations: list, p: float | None, controller: AdaController | None):
        self.augmentations, self.fixed_p, self.controller = augmentations, p, controller

    @classmethod
    def from_config(
        cls, augment: AugmentConfig, ada: AdaConfig, device, distributed: bool
    ) -> Augment | None:
        """None when the policy is `none` (the step then runs exactly as without this)."""
        augmentations = parse_policy(augment.policy)
        if not augmentations:
            return None
        adaptive = augment.p is None and any(a.adaptive for a in augmentations)
        controller = AdaController(ada, device, distributed) if adaptive else None
        return cls(augmentations, augment.p, controller)

    @property
    def p(self) -> float:
        """The probability the adaptive augmentations run at now."""
        if self.controller is not None:
            return self.controller.p
        return 1.0 if self.fixed_p is None else self.fixed_p

    def __call__(self, x: Tensor) -> Tensor:
        channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
        for augmentation in self.augmentations:
            p = self.fixed_p
            if p is None:
                p = self.controller.p if augmentation.adaptive else 1.0
            x = augmentation(x, p)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    def observe(self, signs: Tensor) -> None:
        if self.controller is not None:
            self.controller.observe(signs)

    def state_dict(self) -> dict:
        return self.controller.state_dict() if self.controller is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.controller is not None and state:
            self.controller.load_state_dict(state)

    def summaries(self) -> dict[str, float]:
        """What each report logs: p (`augment_p`); with ADA, the last interval's r_t
        (`ada_r_t`, the controller's own window; `r_t` is the report's)."""
        out = {"augment_p": self.p}
        if self.controller is not None and self.controller.r_t == self.controller.r_t:
            out["ada_r_t"] = self.controller.r_t
        return out
