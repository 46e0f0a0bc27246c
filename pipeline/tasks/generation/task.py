"""The generation task: the GAN families (DCGAN, ACGAN, WGAN-GP) as one task of the runner.

It owns G, D, G_ema, their optimizers and the step, which reads like the papers: "(1) Update
D" on a real and a fake batch, then every `n_critic` D steps "(2) Update G", then G_ema. The
loss, its terms (ACGAN's class loss, WGAN-GP's penalty: `objective`), the norms, the
conditioning and the architecture come from the config; nothing here is per-family. With
`augment.policy`, every image D sees (reals and fakes, in both steps, before the penalty and
the class head) goes through the differentiable augmentation (`pipeline.augment`), whose ADA
controller reads D's signs on the reals. Each report measures whether D memorises the
training set (`pipeline.training.overfitting`). Everything tasks share (data, devices, DDP,
reports, checkpoints, FID) is the runner's (`pipeline.training.runner`).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from pipeline import console
from pipeline.augment.policy import Augment
from pipeline.tasks.generation import evaluate as evaluation
from pipeline.tasks.generation.diagnostics import Diagnostics
from pipeline.tasks.generation.objective import Objective, gan_phases, judge
from pipeline.tasks.generation.sample import GENERATOR_FILE
from pipeline.training.config import TrainConfig
from pipeline.training.context import DataShape, Setup
from pipeline.training.images import to_uint8
from pipeline.training.noise import random_labels, sample_z
from pipeline.training.optim import make_optimizer, scale_rates, update
from pipeline.training.stats import channel_stats, diversity, image_summaries, score


class GenerationTask:
    """G(z, y) against D(x, y); G_ema for samples, grids and FID."""

    EXPORT = ("G_ema",)  # what `pipeline sample` / `evaluate` need of a checkpoint
    EXPORT_FILE = GENERATOR_FILE
    evaluate = staticmethod(evaluation.evaluate)  # `pipeline evaluate` of a checkpoint

    @staticmethod
    def check_dataset(config: TrainConfig, manifest: dict) -> None:
        """The model against the dataset's image size, before any worker starts."""
        from pipeline.models import check_config

        check_config(config.model, config.loss, image_size=manifest["image"]["height"])

    def __init__(self, config: TrainConfig, setup: Setup, data: DataShape):
        """Build G and D on `setup.device` for `data` (image size, channels, label plan).
        The caller seeds torch first, so every rank starts from the same weights."""
        from pipeline.models import build_discriminator, build_generator
        from pipeline.models.norms import get_norm

        self.config, self.setup, self.label_plan = config, setup, data.label_plan
        self.classes = data.label_plan.classes if data.label_plan else None
        self.device = setup.device
        G = build_generator(config.model, data.image_size, data.channels, self.classes)
        D = build_discriminator(config.model, data.image_size, data.channels, self.classes)
        G, D = G.to(self.device), D.to(self.device)
        # G_ema keeps plain batch norm even when G's is synchronised: it is sampled on rank 0.
        G_ema = copy.deepcopy(G).requires_grad_(False)
        if setup.distributed:
            G = get_norm(config.model.norm_g).under_ddp(G, setup.cuda)
            D = get_norm(config.model.norm_d).under_ddp(D, setup.cuda)
        if setup.channels_last:
            G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
            G_ema = G_ema.to(memory_format=torch.channels_last)
        self.G, self.D, self.G_ema = G, D, G_ema
        self.G_train, self.D_train = G, D  # the DDP / compiled views, once distributed
        self.opt_g = make_optimizer(config.optim, G.parameters(), config.optim.lr_g)
        self.opt_d = make_optimizer(config.optim, D.parameters(), config.optim.lr_d)
        self.phases = gan_phases(config)
        self.objective = Objective(config, self.classes, D)
        self.diagnostics = Diagnostics(wasserstein=self.objective.wasserstein)
        self.augment = Augment.from_config(config.augment, config.ada, self.device,
                                           setup.distributed)  # fmt: skip
        self.dataset_path, self.split = data.path, config.data.split

    # -- what the runner saves, restores and distributes ------------------------------------

    def state_dict(self) -> dict:
        state = {
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "G_ema": self.G_ema.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
        }
        if self.augment is not None:
            state["augment"] = self.augment.state_dict()  # ADA's p and its partial sums
        return state

    def load_state_dict(self, state: dict) -> None:
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.G_ema.load_state_dict(state["G_ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        if self.augment is not None:
            # A checkpoint from before augmentation (or PBT from a trial without it): p from 0.
            self.augment.load_state_dict(state.get("augment", {}))

    def distribute(self) -> None:
        """DDP over the ranks (after a resume has loaded the weights), then compile."""
        setup = self.setup
        if setup.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if setup.cuda else None
            # Never static_graph with a gradient penalty: DDP then reduces the double-backward
            # gradients wrongly, without an error.
            self.G_train, self.D_train = DDP(self.G, device_ids=ids), DDP(self.D, device_ids=ids)
        if self.config.compile and setup.cuda:
            self.G_train, self.D_train = torch.compile(self.G_train), torch.compile(self.D_train)
        self.objective = Objective(self.config, self.classes, self.D_train)

    def set_learning_rates(self, factor: float) -> dict[str, float]:
        """The config's rates times the schedule's `factor`, re-applied every epoch (PBT may
        have changed the config); returns them as metrics."""
        optim = self.config.optim
        return scale_rates(factor, lr_g=(self.opt_g, optim.lr_g), lr_d=(self.opt_d, optim.lr_d))

    # -- the step ---------------------------------------------------------------------------

    def step(self, x: torch.Tensor, y: torch.Tensor | None, step: int):
        """One training step on the real batch (x, y); returns (values to report, the loss
        whose finiteness the runner checks)."""
        config, autocast, n = self.config, self.setup.autocast, x.shape[0]
        phase_d, phase_g = self.phases
        update_g = phase_g.due(step)
        # With one D step per G step, G's update reuses D's fake batch (as the DCGAN
        # reference does); otherwise G's forward in D's phase needs no graph.
        reuse_fake = update_g and phase_g.every == 1

        # (1) Update D: real batch, fake batch, and the objective's terms.
        z, y_fake = sample_z(config, n, self.device), random_labels(self.classes, n, self.device)
        with autocast:
            with torch.set_grad_enabled(reuse_fake):
                fake = self.G_train(z, y_fake)
            real = judge(self.D_train, self.seen(x), y)
            judged_fake = judge(self.D_train, self.seen(fake.detach()), y_fake)
        errD, parts = self.objective.loss(phase_d.name, real, judged_fake)
        parts["grad_norm_d"] = update(self.D, self.opt_d, errD)
        self.objective.constrain_d(self.D)
        # ADA's overfitting heuristic: on which side of its boundary D puts the reals.
        signs = self.objective.adversarial.real_signs(real.logits, judged_fake.logits)
        if self.augment is not None:
            self.augment.observe(signs)

        # (2) Update G, every n_critic D steps. Through the bare D (not its DDP wrapper) with
        # its weights frozen: no D gradient is computed or all-reduced in a step that does not
        # update D.
        errG = None
        if update_g:
            y_gen = y_fake
            if not reuse_fake:
                z, y_gen = (
                    sample_z(config, n, self.device),
                    random_labels(self.classes, n, self.device),
                )
            self.D.requires_grad_(False)
            with autocast:
                if not reuse_fake:
                    fake = self.G_train(z, y_gen)
                judged_gen = judge(self.D, self.seen(fake), y_gen)
            errG, g_parts = self.objective.loss(phase_g.name, None, judged_gen)
            parts.update(g_parts)
            parts["grad_norm_g"] = update(self.G, self.opt_g, errG)
            self.D.requires_grad_(True)

            # Update G_ema.
            decay = ema_decay(config.optim.ema, step) if config.optim.ema else 0.0
            update_ema(self.G_ema, self.G, decay)

        # Statistics: D(x) and D(G(z)) as probabilities (critic scores for WGAN).
        wasserstein = self.objective.wasserstein
        fake_mean, fake_std = channel_stats(fake)
        real_mean, real_std = channel_stats(x)
        values = {
            "loss_d": errD,
            "D_x": score(real.logits, wasserstein),
            "D_G_z": score(judged_fake.logits, wasserstein),
            "r_t": signs.mean(),
            "fake_mean": fake_mean,
            "fake_std": fake_std,
            "real_mean": real_mean,
            "real_std": real_std,
            "diversity_fake": diversity(fake),
            "diversity_real": diversity(x),
            **parts,
        }
        loss = errD.detach() + (errG.detach() if errG is not None else 0.0)
        return values, loss

    def seen(self, images: torch.Tensor) -> torch.Tensor:
        """Images as D sees them: through the run's augmentation, if any."""
        return self.augment(images) if self.augment is not None else images

    def boundary(self, step: int) -> bool:
        return False  # no phases: reports come every `report_every` steps and each epoch

    def diagnose(self, metrics: dict[str, float]) -> list:
        """What the report's statistics say is going wrong (`diagnostics`)."""
        return self.diagnostics.update(metrics)

    def summaries(self, values: dict[str, torch.Tensor]) -> dict[str, float]:
        """Colour and diversity, D's outputs on training, held-out and fake images (every
        rank measures the same), and the augmentation's p."""
        out = image_summaries(values)
        out.update(self.overfit.measure(self.D, self.G, self.z_probe, self.y_probe))
        if self.augment is not None:
            out.update(self.augment.summaries())
        return out

    # -- what the runner shows and scores ---------------------------------------------------

    def fixed_samples(self, rows: int, columns: int):
        """The fixed noise (and labels) of every sample grid, the same on every rank."""
        from pipeline.training.labels import grid_labels

        noise = torch.Generator().manual_seed(self.config.seed)
        self.z_fixed = sample_z(self.config, rows * columns, self.device, noise)
        self.y_fixed, self.row_names = None, []
        if self.label_plan is not None:
            y, self.row_names = grid_labels(self.label_plan, rows, columns, self.config.seed)
            self.y_fixed = torch.from_numpy(y).to(self.device)
        self.grid_columns = columns
        # The overfitting measure's images and noise (`pipeline.training.overfitting`).
        from pipeline.training.overfitting import PROBE_IMAGES, OverfitProbe

        say = console.say if self.setup.rank == 0 else (lambda line: None)
        self.overfit = OverfitProbe(self.dataset_path, self.split, self.device, say)
        noise = torch.Generator().manual_seed(self.config.seed + 1)
        self.z_probe = sample_z(self.config, PROBE_IMAGES, self.device, noise)
        self.y_probe = random_labels(self.classes, PROBE_IMAGES, self.device, noise)

    @torch.no_grad()
    def sample_grid(self):
        """The fixed-noise sample grid of G_ema (a PIL image) and its row names."""
        from pipeline.grid import make_grid

        # Batch statistics, as pytorch/examples samples its DCGAN: BN running averages lag far
        # behind early in training. The running buffers this touches are copied from G anyway.
        self.G_ema.train()
        images = to_uint8(self.G_ema(self.z_fixed, self.y_fixed))
        scale = max(1, 64 // images.shape[1])
        grid = make_grid(images, nrow=self.grid_columns, padding=2, scale=scale,
                         row_labels=self.row_names or None)  # fmt: skip
        return grid, self.row_names

    @torch.no_grad()
    def generate(
        self, n: int, generator: torch.Generator, y: torch.Tensor | None = None
    ) -> np.ndarray:
        """n images for FID, uint8 NHWC: as the sample grids, G_ema with batch statistics;
        a conditional G makes the classes `y` asks for (drawn uniformly without it)."""
        self.G_ema.train()
        z = sample_z(self.config, n, self.device, generator)
        if y is None:
            y = random_labels(self.classes, n, self.device, generator)
        return to_uint8(self.G_ema(z, None if y is None else y.to(self.device)))


@torch.no_grad()
def update_ema(G_ema: nn.Module, G: nn.Module, decay: float) -> None:
    ema_params = list(G_ema.parameters())
    torch._foreach_lerp_(ema_params, [p.detach() for p in G.parameters()], 1.0 - decay)
    for b_ema, b in zip(G_ema.buffers(), G.buffers(), strict=True):
        b_ema.copy_(b)


def ema_decay(decay: float, step: int) -> float:
    """The EMA decay with a ramp-up: at step 100 G_ema would still be 90% random init with
    0.999, so early steps use (1 + step) / (10 + step), as is usual."""
    return min(decay, (1 + step) / (10 + step))
