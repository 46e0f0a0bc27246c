"""The completion task: GLCIC (Iizuka et al. 2017) as a task of the runner.

It owns the completion network C, the global + local discriminator D, their optimizers and
the step, which reads like the paper's Algorithm 1: C alone on the reconstruction loss in the
hole (Tc), then D alone (Td), then both, C's loss being reconstruction + alpha x adversarial.
Each step draws this batch's holes, fills them with the training set's mean pixel, and:

    (1) Update D   (phases D and joint) on the real images and the COMPOSITES
                   x * (1 - M) + C(x) * M, each with its local patch taken at the same place
                   (centred on the hole), in one batch: batch norm over an all-real and an
                   all-fake batch lets D tell them apart by batch statistics alone.
    (2) Update C   (phases C and joint) through the bare D with its weights frozen, so no D
                   gradient is computed or all-reduced in C's step.

Gradients are zeroed before every backward. Every report scores C on a fixed evaluation set
of (image, mask) pairs (`pipeline.metrics.completion`); the grid shows masked input |
completion | original; FID compares completions with real images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.config import ConfigError
from pipeline.tasks.completion import evaluate as evaluation
from pipeline.tasks.completion.complete import COMPLETION_FILE
from pipeline.tasks.completion.diagnostics import (
    PHASE_C,
    PHASE_D,
    PHASE_JOINT,
    CompletionDiagnostics,
)
from pipeline.tasks.completion.masks import composite, crop, fill, local_corners, make_masks
from pipeline.training.config import TrainConfig
from pipeline.training.context import DataShape, Setup
from pipeline.training.images import to_images, to_uint8
from pipeline.training.optim import make_optimizer, scale_rates, update

GRID_ROWS = 8
MEAN_PIXEL_ROWS = 1000  # evenly spaced training images the mean pixel is taken over
LOSSES = ("nsgan", "minimax", "hinge", "lsgan")  # D's output is a logit (no critic)


@dataclass(frozen=True)
class Phases:
    """Steps of C alone (`tc`), then of D alone (`td`); joint training after them."""

    tc: int
    td: int

    def at(self, step: int) -> int:
        if step < self.tc:
            return PHASE_C
        return PHASE_D if step < self.tc + self.td else PHASE_JOINT

    def boundary(self, step: int) -> bool:
        """After `step` steps, a phase has just ended."""
        return step in (self.tc, self.tc + self.td) and step > 0


def phases_for(config: TrainConfig, steps_per_epoch: int) -> Phases:
    """The config's phase lengths in steps; ConfigError when they outlast the run."""
    c = config.completion
    total = config.epochs * steps_per_epoch
    per_unit = {
        "fraction": total,
        "epochs": steps_per_epoch,
        "images": 1 / config.batch_size,
    }[c.phase_unit]
    phases = Phases(round(c.tc * per_unit), round(c.td * per_unit))
    if phases.tc + phases.td > total:
        raise ConfigError(
            f"the phases C alone ({phases.tc} steps) and D alone ({phases.td}) are longer than "
            f"the run ({total} steps of {config.batch_size}): shorten completion.tc / td"
        )
    return phases


def check_dataset(config: TrainConfig, manifest: dict) -> None:
    """Everything about a GLCIC run that needs its dataset, before any worker starts: the
    image size against the networks, the phases against the run's steps, the masks, the
    evaluation split."""
    from pipeline.models.glcic import check_size
    from pipeline.models.norms import get_norm

    if config.loss not in LOSSES:
        raise ConfigError(f"glcic's D gives a logit: loss must be one of {', '.join(LOSSES)}")
    get_norm(config.model.norm_g), get_norm(config.model.norm_d)
    size = manifest["image"]["height"]
    check_size(size, round(config.completion.local * size))
    rows = manifest["splits"][config.data.split]["rows"]
    per_rank = config.batch_size // config.workers
    phases_for(config, (rows // config.workers) // per_rank)
    make_masks(config.completion, size)  # a bad mask folder fails here, said in one line
    evaluation.evaluation_split(manifest, config)


def mean_pixel(dataset, channels: int) -> torch.Tensor:
    """The training set's mean pixel in [-1, 1] (what fills the holes), over evenly spaced
    rows: the same on every rank and at every resume."""
    rows = np.linspace(0, len(dataset) - 1, min(len(dataset), MEAN_PIXEL_ROWS)).round()
    images = dataset.take(rows.astype(np.int64), columns=[])["image"]
    mean = images.reshape(-1, channels).mean(0, dtype=np.float64)
    return torch.tensor(mean / 127.5 - 1.0, dtype=torch.float32)


def reconstruction(out: torch.Tensor, x: torch.Tensor, mask: torch.Tensor, kind: str):
    """Mean squared (or absolute) error of C's output in the hole."""
    error = F.mse_loss if kind == "mse" else F.l1_loss
    per_pixel = error(out.float(), x.float(), reduction="none") * mask
    return per_pixel.sum() / (mask.sum() * x.shape[1]).clamp_min(1)


class CompletionTask:
    """C(x, M) against D(x, local patch)."""

    EXPORT = ("C", "mean_pixel")  # what `pipeline complete` needs of a checkpoint
    EXPORT_FILE = COMPLETION_FILE
    check_dataset = staticmethod(check_dataset)  # before any worker starts
    evaluate = staticmethod(evaluation.evaluate)  # `pipeline evaluate` of a checkpoint

    def __init__(self, config: TrainConfig, setup: Setup, data: DataShape):
        from pipeline.data.reader import ShardDataset
        from pipeline.losses import get_loss
        from pipeline.models.glcic import CompletionNetwork, GlobalLocalDiscriminator
        from pipeline.models.norms import get_norm

        if config.loss not in LOSSES:
            raise ConfigError(f"glcic's D gives a logit: loss must be one of {', '.join(LOSSES)}")
        self.config, self.setup, self.device = config, setup, setup.device
        self.size, self.channels = data.image_size, data.channels
        self.local = round(config.completion.local * self.size)
        C = CompletionNetwork(config.model, self.size, self.channels).to(self.device)
        D = GlobalLocalDiscriminator(config.model, self.size, self.channels, self.local)
        D = D.to(self.device)
        if setup.distributed:
            C = get_norm(config.model.norm_g).under_ddp(C, setup.cuda)
            D = get_norm(config.model.norm_d).under_ddp(D, setup.cuda)
        if setup.channels_last:
            C, D = C.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
        self.C, self.D, self.C_train, self.D_train = C, D, C, D
        self.opt_c = make_optimizer(config.optim, C.parameters(), config.optim.lr_g)
        self.opt_d = make_optimizer(config.optim, D.parameters(), config.optim.lr_d)
        self.gan = get_loss(config.loss)
        self.threshold = 0.5 if config.loss == "lsgan" else 0.0  # D's "real" above it
        self.masks = make_masks(config.completion, self.size)
        self.dataset_path = data.path
        self.mean = mean_pixel(ShardDataset(data.path, config.data.split), self.channels)
        self.mean = self.mean.to(self.device)
        self.phases = phases_for(config, data.steps_per_epoch)
        self.phase = self.phases.at(0)
        self.diagnostics = CompletionDiagnostics(config.completion.alpha)

    # -- what the runner saves, restores and distributes ------------------------------------

    def state_dict(self) -> dict:
        return {
            "C": self.C.state_dict(),
            "D": self.D.state_dict(),
            "opt_c": self.opt_c.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "mean_pixel": self.mean.cpu(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.C.load_state_dict(state["C"])
        self.D.load_state_dict(state["D"])
        self.opt_c.load_state_dict(state["opt_c"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.mean = state["mean_pixel"].to(self.device)

    def distribute(self) -> None:
        if self.setup.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.setup.cuda else None
            self.C_train, self.D_train = DDP(self.C, device_ids=ids), DDP(self.D, device_ids=ids)
        if self.config.compile and self.setup.cuda:
            self.C_train, self.D_train = torch.compile(self.C_train), torch.compile(self.D_train)

    def set_learning_rates(self, factor: float) -> dict[str, float]:
        optim = self.config.optim
        return scale_rates(factor, lr_c=(self.opt_c, optim.lr_g), lr_d=(self.opt_d, optim.lr_d))

    def boundary(self, step: int) -> bool:
        """A report (and checkpoint) is due: a phase ended after `step` steps."""
        return self.phases.boundary(step)

    # -- the step ---------------------------------------------------------------------------

    def step(self, x: torch.Tensor, y: torch.Tensor | None, step: int):
        """One step of this step's phase on the real batch x; returns (values to report, the
        loss whose finiteness the runner checks)."""
        config, autocast, n = self.config, self.setup.autocast, x.shape[0]
        phase = self.phase = self.phases.at(step)
        mask, boxes = self.masks.draw(n)
        mask = mask.to(self.device)
        corners = local_corners(boxes, self.size, self.local)
        train_c = phase != PHASE_D
        with autocast, torch.set_grad_enabled(train_c):
            out = self.C_train(fill(x, mask, self.mean))
        completed = composite(x, out, mask)
        values: dict[str, torch.Tensor] = {}
        loss = torch.zeros((), device=self.device)

        # (1) Update D on real and completed images (phases D and joint).
        if phase != PHASE_C:
            with autocast:
                logit, g_part, l_part = self._judge(self.D_train, x, completed.detach(), corners)
            loss_d = self.gan.d_loss(logit[:n].float(), logit[n:].float())
            values["grad_norm_d"] = update(self.D, self.opt_d, loss_d)
            values.update(loss_d=loss_d.detach(), **self._accuracies(logit, g_part, l_part, n))
            loss = loss + loss_d.detach()

        # (2) Update C (phases C and joint): reconstruction in the hole + alpha x adversarial.
        if train_c:
            loss_rec = reconstruction(out, x, mask, config.completion.reconstruction)
            loss_c = loss_rec
            if phase == PHASE_JOINT:
                self.D.requires_grad_(False)
                with autocast:
                    judged = self._judge(self.D, x, completed, corners, parts=False)
                loss_adv = self.gan.g_loss(judged[n:].float())
                loss_c = loss_rec + config.completion.alpha * loss_adv
                self.D.requires_grad_(True)
                values["loss_adv"] = loss_adv.detach()
            values["grad_norm_c"] = update(self.C, self.opt_c, loss_c)
            values.update(loss_rec=loss_rec.detach(), loss_c=loss_c.detach())
            loss = loss + loss_c.detach()
        return values, loss

    def _judge(self, D, real, completed, corners, parts: bool = True):
        """D on the real and the completed batch together, each with its local patch."""
        both = torch.cat([real, completed])
        patches = crop(both, torch.cat([corners, corners]), self.local)
        return D(both, patches, parts=parts)

    def _accuracies(self, logit, g_part, l_part, n: int) -> dict[str, torch.Tensor]:
        """D's accuracy on real and on completed images, and each branch's alone (the head is
        linear: a branch's share of the logit plus half the bias)."""
        half_bias = self.D.head.bias.detach() / 2
        out = {}
        for name, score in (("", logit), ("_global", g_part + half_bias),
                            ("_local", l_part + half_bias)):  # fmt: skip
            real = score[:n].detach().float() > self.threshold
            out[f"d_acc{name}_real"] = real.float().mean()
            out[f"d_acc{name}_fake"] = (score[n:].detach().float() <= self.threshold).float().mean()
        return out

    def diagnose(self, metrics: dict[str, float]) -> list:
        return self.diagnostics.update(metrics)

    def summaries(self, values: dict[str, torch.Tensor]) -> dict[str, float]:
        """The phase, and C's scores on the evaluation set (every rank: the same numbers)."""
        from pipeline.metrics.completion import completion_scores

        self._evaluated = self._complete(self.eval_images, self.eval_masks)
        scores = completion_scores(
            (self._evaluated + 1) * 127.5, (self.eval_images + 1) * 127.5, self.eval_masks
        )
        return {"phase": float(self.phase), **scores}

    # -- what the runner shows and scores ---------------------------------------------------

    def fixed_samples(self, rows: int, columns: int) -> None:
        """The evaluation set: evenly spaced images of the evaluation split, holes from the
        run's seed; the same on every rank and in every run with this seed and dataset."""
        from pipeline.data.reader import ShardDataset

        dataset = ShardDataset(self.dataset_path, evaluation_split_of(self.dataset_path,
                                                                      self.config))  # fmt: skip
        count = min(len(dataset), self.config.completion.eval_images)
        picked = np.linspace(0, len(dataset) - 1, count).round().astype(np.int64)
        images = dataset.take(picked, columns=[])["image"]
        self.eval_images = to_images(torch.from_numpy(images), self.device, False)
        generator = torch.Generator().manual_seed(self.config.seed)
        masks, boxes = self.masks.draw(count, generator)
        self.eval_masks, self.eval_boxes = masks.to(self.device), boxes

    @torch.no_grad()
    def _complete(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Composites by C in eval mode (running statistics), in batches."""
        self.C.eval()
        parts = []
        for i in range(0, len(x), 64):
            xi, mi = x[i : i + 64], mask[i : i + 64]
            parts.append(composite(xi, self.C(fill(xi, mi, self.mean)), mi))
        self.C.train()
        return torch.cat(parts)

    def sample_grid(self):
        """Rows of masked input | completion | original, from the last evaluation."""
        from pipeline.grid import make_grid

        k = min(GRID_ROWS, len(self.eval_images))
        x, m = self.eval_images[:k], self.eval_masks[:k]
        shown = fill(x, m, self.mean)[:, : self.channels]
        tiles = torch.stack([shown, self._evaluated[:k], x], 1).flatten(0, 1)
        scale = max(1, 64 // self.size)
        return make_grid(to_uint8(tiles), nrow=3, padding=2, scale=scale), []

    @torch.no_grad()
    def generate(
        self, n: int, generator: torch.Generator, y: torch.Tensor | None = None
    ) -> np.ndarray:
        """n completions for FID: the evaluation images in turn, each with a fresh hole (no
        labels: `y` is never given)."""
        pick = torch.arange(n) % len(self.eval_images)
        masks, _ = self.masks.draw(n, generator)
        out = self._complete(self.eval_images[pick.to(self.device)], masks.to(self.device))
        return to_uint8(out)


def evaluation_split_of(dataset_path: str, config: TrainConfig) -> str:
    from pipeline.data.shards import read_manifest

    return evaluation.evaluation_split(read_manifest(dataset_path), config)
