"""The per-worker GAN loop: one process of a DDP run (or a whole run, world size 1).

It reads like the papers: "(1) Update D" with real and fake batches (plus the auxiliary
class loss for ACGAN, Odena et al. 2017, and the gradient penalty for WGAN-GP, Gulrajani et
al. 2017), then every `n_critic` D steps "(2) Update G", then G_ema. The loss, the norms,
the conditioning and the architecture come from the config; nothing here is per-family.

It needs no Ray: a `WorkerContext` says who we are and where reports and checkpoints go.
Ray Train's context is in `pipeline.training.driver`; `LocalContext` runs one process.
"""

from __future__ import annotations

import copy
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from pipeline.config import from_dict, to_dict
from pipeline.training import checkpoint as ckpt
from pipeline.training.config import TrainConfig
from pipeline.training.labels import LabelPlan, grid_labels, grid_shape, plan_labels


class WorkerContext(Protocol):
    rank: int
    world_size: int
    local_rank: int

    def report(self, metrics: dict, checkpoint_dir: Path | None) -> None: ...
    def checkpoint(self) -> Path | None: ...


@dataclass
class LocalContext:
    """One process, no Ray: reports are kept in a list, checkpoints in a folder."""

    folder: Path
    resume_from: Path | None = None
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    reports: list[dict] = field(default_factory=list)

    def report(self, metrics: dict, checkpoint_dir: Path | None) -> None:
        self.reports.append(metrics)
        if checkpoint_dir is not None:
            target = Path(self.folder) / f"checkpoint-{metrics['step']:08d}"
            target.mkdir(parents=True, exist_ok=True)
            (checkpoint_dir / ckpt.FILE).replace(target / ckpt.FILE)
            self.resume_from = target

    def checkpoint(self) -> Path | None:
        return self.resume_from


def sample_z(config: TrainConfig, n: int, device, generator: torch.Generator | None = None):
    z_dim = config.model.z_dim
    if config.z_dist == "uniform":
        return (torch.rand(n, z_dim, generator=generator) * 2 - 1).to(device)
    return (torch.randn(n, z_dim, generator=generator) * config.z_std).to(device)


def lr_factor(config: TrainConfig, epoch: int) -> float:
    """The schedule: constant, step (x gamma at each milestone passed), or linear decay."""
    optim = config.optim
    if optim.schedule == "step":
        return optim.gamma ** sum(epoch >= m for m in optim.milestones)
    if optim.schedule == "linear":
        return max(0.0, 1.0 - epoch / config.epochs)
    return 1.0


def to_images(batch: torch.Tensor, device, channels_last: bool) -> torch.Tensor:
    """uint8 NHWC from the reader -> float NCHW in [-1, 1], converted on the device."""
    x = batch.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def augment(x: torch.Tensor, flip: bool, rotate: float) -> torch.Tensor:
    """Random horizontal flip and small rotation (degrees), per image, on the device."""
    if flip:
        mask = torch.rand(x.shape[0], device=x.device) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    if rotate:
        import torch.nn.functional as F

        angle = (torch.rand(x.shape[0], device=x.device) * 2 - 1) * math.radians(rotate)
        cos, sin = angle.cos(), angle.sin()
        zero = torch.zeros_like(cos)
        theta = torch.stack([cos, -sin, zero, sin, cos, zero], dim=1).view(-1, 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, padding_mode="reflection", align_corners=False)
    return x


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[-1, 1] NCHW -> uint8 NHWC."""
    pixels = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).cpu().numpy()


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


def grad_norm(module: nn.Module) -> torch.Tensor:
    grads = [p.grad.detach().float() for p in module.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std in [-1, 1] units (colour drift and darkening show here)."""
    x = x.detach().float()
    return x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3))


def diversity(x: torch.Tensor) -> torch.Tensor:
    """Mean pairwise L2 distance between the images of a batch (mode collapse drives it to 0)."""
    flat = x.detach().float().flatten(1)
    return torch.pdist(flat).mean() / math.sqrt(flat.shape[1]) if len(flat) > 1 else flat.sum() * 0


def score(logits: torch.Tensor, wasserstein: bool) -> torch.Tensor:
    """D's mean output: a probability (D(x), D(G(z))), or the raw critic score for WGAN."""
    return logits.float().mean() if wasserstein else torch.sigmoid(logits.float()).mean()


class Meter:
    """Per-step values summed as tensors (no sync), averaged across ranks at report time.

    Each name keeps its own count: G's losses exist only every n_critic steps. Every rank
    records the same names in the same steps, so one all-reduce of the stacked sums suffices.
    """

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, **values: torch.Tensor) -> None:
        for name, value in values.items():
            value = value.detach().float()
            self.sums[name] = self.sums[name] + value if name in self.sums else value.clone()
            self.counts[name] = self.counts.get(name, 0) + 1

    def reduce(self, world_size: int) -> dict[str, torch.Tensor]:
        names = sorted(self.sums)
        flat = torch.cat([self.sums[n].reshape(-1) for n in names])
        if world_size > 1:
            dist.all_reduce(flat)
        out, i = {}, 0
        for n in names:
            size = self.sums[n].numel()
            total = flat[i : i + size] / (self.counts[n] * world_size)
            out[n] = total.reshape(self.sums[n].shape).cpu()
            i += size
        self.sums, self.counts = {}, {}
        return out


def run_worker(
    config: TrainConfig,
    ctx: WorkerContext,
    dataset_path: str,
    on_report: Callable[[dict, object, list, Path, dict | None], None] | None = None,
) -> dict:
    """Train on this worker. Returns the last reported metrics (reduced over ranks).

    `on_report(metrics, grid, row_names, checkpoint_dir, fid_protocol)` is called on rank 0 at
    each report, before the checkpoint folder is handed to the context (the driver logs to
    MLflow there); `grid` is the fixed-noise G_ema sample grid (a PIL image). With
    `fid.every`, the reports ending every `fid.every`-th epoch (and the last) carry `fid`,
    `kid`, `kid_std` (`*_standin` with the stand-in backbone); `fid_protocol` says how.
    """
    from pipeline.data.reader import ShardDataset
    from pipeline.losses import class_accuracy, class_loss, get_loss, gradient_penalty
    from pipeline.models import build_discriminator, build_generator

    rank, world = ctx.rank, ctx.world_size
    distributed = world > 1 and dist.is_available() and dist.is_initialized()

    # Devices and precision.
    cuda = config.gpus_per_worker > 0 and torch.cuda.is_available()
    device = torch.device(f"cuda:{ctx.local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    channels_last = cuda and config.channels_last
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and config.bf16)

    # Load the training set: this rank's slice, reshuffled every epoch.
    data = ShardDataset(dataset_path, config.data.split)
    plan: LabelPlan | None = None
    rows = None
    if config.conditional:
        plan = plan_labels(data.manifest, config.data.groups, config.data.attrs)
        rows = plan.labelled_rows(data)
    local_batch = config.batch_size // world
    loader = data.loader(
        local_batch,
        seed=config.seed,
        rank=rank,
        world_size=world,
        columns=plan.columns if plan else [],
        rows=rows,
    )
    image_size, channels = data.shape[0], data.shape[2]
    classes = plan.classes if plan else None

    # Build G and D; distribute across workers.
    torch.manual_seed(config.seed)  # same initial weights on every rank
    G = build_generator(config.model, image_size, channels, classes).to(device)
    D = build_discriminator(config.model, image_size, channels, classes).to(device)
    # G_ema keeps plain batch norm even when G's is synchronised: it is sampled on rank 0 only.
    G_ema = copy.deepcopy(G).requires_grad_(False)
    # SyncBatchNorm runs on GPUs only (the driver refuses it for CPU runs of several workers).
    if distributed and cuda and "sync-batch" in (config.model.norm_g, config.model.norm_d):
        if config.model.norm_g == "sync-batch":
            G = nn.SyncBatchNorm.convert_sync_batchnorm(G)
        if config.model.norm_d == "sync-batch":
            D = nn.SyncBatchNorm.convert_sync_batchnorm(D)
    if channels_last:
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
        G_ema = G_ema.to(memory_format=torch.channels_last)
    opt_g = torch.optim.Adam(
        G.parameters(), lr=config.optim.lr_g, betas=(config.optim.beta1, config.optim.beta2)
    )
    opt_d = torch.optim.Adam(
        D.parameters(), lr=config.optim.lr_d, betas=(config.optim.beta1, config.optim.beta2)
    )

    # Resume: a restarted worker group, --resume, or a PBT exploit.
    epoch, batch_in_epoch, step, images_seen = 0, 0, 0, 0
    resume = ctx.checkpoint()
    if resume is not None:
        state = ckpt.load(resume, map_location=device)
        G.load_state_dict(state["G"])
        D.load_state_dict(state["D"])
        G_ema.load_state_dict(state["G_ema"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        epoch, batch_in_epoch = state["epoch"], state["batch_in_epoch"]
        step, images_seen = state["step"], state["images_seen"]
        if rank == 0:
            ckpt.restore_rng(state)

    G_train: nn.Module = G
    D_train: nn.Module = D
    if distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if cuda else None
        # Never static_graph with a gradient penalty: silently wrong gradients (notes).
        G_train, D_train = DDP(G, device_ids=ids), DDP(D, device_ids=ids)
    if config.compile and cuda:
        G_train, D_train = torch.compile(G_train), torch.compile(D_train)

    loss = get_loss(config.loss)
    wasserstein = config.loss == "wgan-gp"
    gen = torch.Generator().manual_seed(config.seed)  # fixed noise: same on every rank
    grid_rows, grid_cols = grid_shape(plan, config.samples)
    z_fixed = sample_z(config, grid_rows * grid_cols, device, gen)
    y_fixed, row_names = (None, [])
    if plan is not None:
        y_np, row_names = grid_labels(plan, grid_rows, grid_cols, config.seed)
        y_fixed = torch.from_numpy(y_np).to(device)

    def draw_labels(n: int, generator: torch.Generator | None = None) -> torch.Tensor | None:
        if classes is None:
            return None
        parts = [torch.randint(0, k, (n, 1), generator=generator) for k in classes.groups]
        if classes.binary:
            parts.append(torch.randint(0, 2, (n, classes.binary), generator=generator))
        return torch.cat(parts, dim=1).to(device)

    fid = None
    if config.fid.every:
        from pipeline.metrics.fid import FidEvaluator
        from pipeline.metrics.weights import backbone_for

        fid = FidEvaluator(
            config.fid,
            backbone_for(config.fid.weights),
            dataset_path,
            config.fid.split or config.data.split,
            device,
            say=(lambda line: print(line, flush=True)) if rank == 0 else (lambda line: None),
        )

    @torch.no_grad()
    def fid_sample(n: int, generator: torch.Generator) -> np.ndarray:
        # As the sample grids: G_ema with batch statistics, classes drawn uniformly.
        G_ema.train()
        return to_uint8(G_ema(sample_z(config, n, device, generator), draw_labels(n, generator)))

    meter = Meter()
    last: dict = {}
    steps_per_epoch = len(loader)
    tick, tick_images = time.perf_counter(), 0
    report_every = config.report_every or steps_per_epoch

    while epoch < config.epochs:
        for group, lr in ((opt_g, config.optim.lr_g), (opt_d, config.optim.lr_d)):
            for param_group in group.param_groups:  # re-applied: PBT may have changed them
                param_group["lr"] = lr * lr_factor(config, epoch)
        loader.set_epoch(epoch)
        torch.manual_seed(hash((config.seed, rank, epoch, batch_in_epoch)) % 2**63)
        batches = loader.numpy_batches()
        for b, batch in enumerate(batches):
            if b < batch_in_epoch:
                continue  # resumed mid-epoch: these batches were trained on
            x = augment(
                to_images(torch.from_numpy(batch["image"]), device, channels_last),
                config.data.flip,
                config.data.rotate,
            )
            y = torch.from_numpy(plan.labels(batch)).to(device) if plan else None
            n = x.shape[0]

            # (1) Update D: real batch, fake batch (+ class loss, + gradient penalty).
            # With one D step per G step, G's update reuses this fake batch (as the DCGAN
            # reference does); otherwise G's forward here needs no graph.
            update_g = (step + 1) % config.optim.n_critic == 0
            reuse_fake = update_g and config.optim.n_critic == 1
            z = sample_z(config, n, device)
            y_fake = draw_labels(n)
            with autocast:
                with torch.set_grad_enabled(reuse_fake):
                    fake = G_train(z, y_fake)
                real_logits, real_cls = D_train(x, y)
                fake_logits, fake_cls = D_train(fake.detach(), y_fake)
                errD_adv = loss.d_loss(real_logits.float(), fake_logits.float())
            errD = errD_adv
            parts = {"loss_d_adv": errD_adv}
            if classes is not None:
                errD_cls = class_loss(real_cls.float(), y, classes) + class_loss(
                    fake_cls.float(), y_fake, classes
                )
                errD = errD + config.lambda_cls * errD_cls
                parts["loss_d_cls"] = errD_cls
                parts["acc_real"] = class_accuracy(real_cls.float(), y, classes)
            if loss.gradient_penalty:
                gp = gradient_penalty(D_train, x, fake.detach().to(x.dtype), y)
                errD = errD + config.lambda_gp * gp
                parts["loss_gp"] = gp
            opt_d.zero_grad(set_to_none=True)
            errD.backward()
            parts["grad_norm_d"] = grad_norm(D)
            opt_d.step()

            # (2) Update G, every n_critic D steps. Through the bare D (not its DDP wrapper)
            # with its weights frozen: no D gradient is computed or all-reduced in a step that
            # does not update D.
            errG = None
            if update_g:
                y_gen = y_fake
                if not reuse_fake:
                    z = sample_z(config, n, device)
                    y_gen = draw_labels(n)
                D.requires_grad_(False)
                with autocast:
                    if not reuse_fake:
                        fake = G_train(z, y_gen)
                    gen_logits, gen_cls = D(fake, y_gen)
                    errG_adv = loss.g_loss(gen_logits.float())
                errG = errG_adv
                parts["loss_g_adv"] = errG_adv
                if classes is not None:
                    errG_cls = class_loss(gen_cls.float(), y_gen, classes)
                    errG = errG + config.lambda_cls * errG_cls
                    parts["loss_g_cls"] = errG_cls
                    parts["acc_fake"] = class_accuracy(gen_cls.float(), y_gen, classes)
                opt_g.zero_grad(set_to_none=True)
                errG.backward()
                parts["grad_norm_g"] = grad_norm(G)
                opt_g.step()
                D.requires_grad_(True)
                parts["loss_g"] = errG

                # Update G_ema.
                update_ema(G_ema, G, ema_decay(config.optim.ema, step) if config.optim.ema else 0.0)

            # Statistics: D(x) and D(G(z)) as probabilities (critic scores for WGAN).
            fake_mean, fake_std = channel_stats(fake)
            real_mean, real_std = channel_stats(x)
            meter.add(
                loss_d=errD,
                D_x=score(real_logits, wasserstein),
                D_G_z=score(fake_logits, wasserstein),
                fake_mean=fake_mean,
                fake_std=fake_std,
                real_mean=real_mean,
                real_std=real_std,
                diversity_fake=diversity(fake),
                diversity_real=diversity(x),
                **parts,
            )

            # A non-finite loss stops every rank at the same step.
            losses = errD.detach() + (errG.detach() if errG is not None else 0.0)
            finite = torch.isfinite(losses).float().reshape(1)
            if distributed:
                dist.all_reduce(finite, op=dist.ReduceOp.MIN)
            finite = finite.item()  # note: a host sync per step

            step += 1
            images_seen += n * world
            tick_images += n * world
            batch_in_epoch = b + 1
            end_of_epoch = batch_in_epoch == steps_per_epoch
            if finite < 1 or step % report_every == 0 or end_of_epoch:
                if end_of_epoch:
                    epoch, batch_in_epoch = epoch + 1, 0
                elapsed = time.perf_counter() - tick
                values = meter.reduce(world)
                metrics = flatten_metrics(values, channels)
                metrics.update(
                    epoch=epoch,
                    step=step,
                    images_seen=images_seen,
                    images_per_s=tick_images / max(elapsed, 1e-9),
                    lr_g=opt_g.param_groups[0]["lr"],
                    lr_d=opt_d.param_groups[0]["lr"],
                    nonfinite=0.0 if finite >= 1 else 1.0,
                )
                if (
                    fid is not None
                    and finite >= 1
                    and end_of_epoch
                    and (epoch % config.fid.every == 0 or epoch == config.epochs)
                ):
                    metrics.update(fid.evaluate(fid_sample))  # every rank embeds its share
                grid = None
                with tempfile.TemporaryDirectory() as tmp:
                    folder = None
                    if rank == 0:
                        grid = sample_grid(G_ema, z_fixed, y_fixed, grid_cols)
                        folder = Path(tmp)
                        ckpt.save(
                            folder / ckpt.FILE,
                            {
                                "config": to_dict(config),
                                "labels": plan.to_dict() if plan else None,
                                "image": {"size": image_size, "channels": channels},
                                "G": G.state_dict(),
                                "D": D.state_dict(),
                                "G_ema": G_ema.state_dict(),
                                "opt_g": opt_g.state_dict(),
                                "opt_d": opt_d.state_dict(),
                                "epoch": epoch,
                                "batch_in_epoch": batch_in_epoch,
                                "step": step,
                                "images_seen": images_seen,
                            },
                        )
                    if rank == 0 and on_report is not None:
                        on_report(metrics, grid, row_names, folder, fid and fid.protocol)
                    ctx.report(metrics, folder)
                last = metrics
                tick, tick_images = time.perf_counter(), 0
                if finite < 1:
                    return last
            if end_of_epoch:
                break
    return last


@torch.no_grad()
def sample_grid(G_ema: nn.Module, z: torch.Tensor, y: torch.Tensor | None, columns: int):
    """The fixed-noise sample grid of G_ema as a PIL image."""
    from pipeline.grid import make_grid

    # Batch statistics, as pytorch/examples samples its DCGAN: BN running averages lag far
    # behind early in training. The running buffers this touches are copied from G anyway.
    G_ema.train()
    images = to_uint8(G_ema(z, y))
    return make_grid(images, nrow=columns, padding=2, scale=max(1, 64 // images.shape[1]))


def flatten_metrics(values: dict[str, torch.Tensor], channels: int) -> dict[str, float]:
    """Scalars as they are; per-channel stats as name_r/g/b (or name_0), plus summaries."""
    names = "rgb" if channels == 3 else [str(i) for i in range(channels)]
    out: dict[str, float] = {}
    for key, value in values.items():
        if value.numel() == 1:
            out[key] = float(value)
        else:
            for c, v in zip(names, value.tolist(), strict=True):
                out[f"{key}_{c}"] = v
    if "fake_mean" in values:
        # One number for "are the colours right": mean |fake - real| over channel mean and std.
        out["color_gap"] = float(
            (
                (values["fake_mean"] - values["real_mean"]).abs().mean()
                + (values["fake_std"] - values["real_std"]).abs().mean()
            )
            / 2
        )
        out["diversity"] = float(
            values["diversity_fake"] / values["diversity_real"].clamp_min(1e-8)
        )
    return out


def config_from_checkpoint(state: dict) -> TrainConfig:
    return from_dict(TrainConfig, state["config"])
