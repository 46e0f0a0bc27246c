"""What every architecture's G and D share for ACGAN (Odena, Olah & Shlens 2017), whatever
their layers: G joins the class to z (and may condition its batch norms on it), D ends in an
adversarial head and, for a conditional model, an auxiliary classifier head.

An architecture subclasses these, calls `init_conditioning` / `init_heads` where its own
layers would otherwise set them up, and keeps its layers to itself.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.models.config import ClassSpec, ModelConfig
from pipeline.models.layers import LabelInput, linear_head, mlp_head
from pipeline.models.norms import get_norm


def _conditional(classes: ClassSpec | None) -> ClassSpec | None:
    return classes if classes is not None and classes.logits else None


class Generator(nn.Module):
    def init_conditioning(
        self, cfg: ModelConfig, classes: ClassSpec | None
    ) -> tuple[int, ClassSpec | None]:
        """Set up the label input; returns G's input width (z plus the label code) and the
        class spec its batch norms condition on (None: plain norms)."""
        self.classes = _conditional(classes)
        self.label_input = LabelInput(self.classes, cfg.conditioning) if self.classes else None
        self.sync_batchnorm = get_norm(cfg.norm_g).syncs
        nz = cfg.z_dim + (self.label_input.dim if self.label_input else 0)
        cond = self.classes if cfg.cond_norm and get_norm(cfg.norm_g).mixes_batch else None  # CBN
        return nz, cond

    def join_labels(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """(B, nz) input: z (flattened: pytorch/examples passes (B, nz, 1, 1)) with the class."""
        z = z.flatten(1)
        if self.label_input is None:
            return z
        if y is None:
            raise ValueError("a conditional G needs the labels y")
        return self.label_input(z, y)


class Discriminator(nn.Module):
    def init_classes(self, cfg: ModelConfig, classes: ClassSpec | None) -> None:
        self.classes = _conditional(classes)
        self.sync_batchnorm = get_norm(cfg.norm_d).syncs

    def init_heads(self, cfg: ModelConfig, features: int, shared_adv: nn.Module) -> None:
        """`adv` and `cls` on D's features: "shared" = the architecture's own adversarial
        layer and one linear class layer; "decoupled" = an MLP head each."""
        if cfg.heads == "shared":
            self.adv = shared_adv
            self.cls = linear_head(features, self.classes.logits) if self.classes else None
        else:  # "decoupled"
            self.adv = mlp_head(features, 1)
            self.cls = mlp_head(features, self.classes.logits) if self.classes else None
