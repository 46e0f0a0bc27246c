"""The per-worker runner: one process of a DDP run (or a whole run, world size 1).

It owns what every task shares: devices and precision, this rank's slice of the shards and
its epochs, DDP, the position (epoch, batch, step, images seen) and resuming it, reports
(metrics reduced over ranks, the sample grid, FID) and checkpoints. A task owns its models
and its step, and keeps the `Task` protocol; each lives in a room of its own under
`pipeline.tasks` (the GAN families in `generation`, GLCIC in `completion`). TASKS, the one
registry, maps each model family to its task: a new task is its class, one line here and a
preset of its family (`pipeline.training.config.PRESETS`).

It needs no Ray: a `WorkerContext` says who we are and where reports and checkpoints go
(`pipeline.training.context`).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.distributed as dist

from pipeline.config import to_dict
from pipeline.console import say
from pipeline.tasks.completion.task import CompletionTask
from pipeline.tasks.generation.task import GenerationTask
from pipeline.training import checkpoint as ckpt
from pipeline.training.config import TrainConfig
from pipeline.training.context import DataShape, LocalContext, Setup, WorkerContext
from pipeline.training.images import augment, to_images
from pipeline.training.labels import grid_shape, plan_labels
from pipeline.training.progress import LOSSES, Ticker
from pipeline.training.stats import Meter, flatten_metrics

TASKS: dict[str, type[Task]] = {
    "dcgan": GenerationTask,
    "acgan": GenerationTask,
    "wgan": GenerationTask,
    "wgan-gp": GenerationTask,
    "glcic": CompletionTask,
}

__all__ = ["LocalContext", "Report", "TASKS", "Task", "lr_factor", "run_worker"]


@dataclass
class Report:
    """What rank 0 hands `on_report` at each report, before the checkpoint folder goes to
    the context (the Ray worker logs all of it to MLflow there)."""

    metrics: dict[str, float]
    grid: object  # the fixed-noise sample grid, a PIL image
    row_names: list[str]  # one per grid row of a conditional model ([] otherwise)
    checkpoint_dir: Path | None
    fid_protocol: dict | None  # how the FID numbers in `metrics` were made, when there are any
    findings: list = field(default_factory=list)  # diagnostics that newly hold (`diagnose`)


class Task(Protocol):
    """A task owns its models, their optimizers and its step; built with
    `Task(config, setup, shape)` after the runner seeds torch (same weights on every rank).
    EXPORT names the state a trained model is used with, written at the end of a run to
    EXPORT_FILE (`pipeline sample` reads generator.pt, `pipeline complete` completion.pt).
    Before a run, the driver asks the class to `check_dataset`; after it, `pipeline evaluate`
    asks it to `evaluate` a checkpoint (`pipeline.training.evaluate`)."""

    EXPORT: tuple[str, ...]
    EXPORT_FILE: str

    @staticmethod
    def check_dataset(config: TrainConfig, manifest: dict) -> None: ...  # ConfigError if unfit
    @staticmethod
    def evaluate(  # (scores, protocol, images seen), logged into `handle`'s run when given
        state: dict, handle, fid, *, data, real, masks, device, say
    ) -> tuple[dict[str, float], dict, int]: ...

    def state_dict(self) -> dict: ...  # models and optimizers, for the checkpoint
    def load_state_dict(self, state: dict) -> None: ...
    def distribute(self) -> None: ...  # DDP / compile, after a resume has loaded the weights
    def set_learning_rates(self, factor: float) -> dict[str, float]: ...  # the lr metrics
    def step(
        self, x: torch.Tensor, y: torch.Tensor | None, step: int
    ) -> tuple[dict, torch.Tensor]: ...
    def summaries(self, values: dict[str, torch.Tensor]) -> dict[str, float]: ...  # at a report
    def boundary(self, step: int) -> bool: ...  # a report is due after `step` (a phase ended)
    def fixed_samples(self, rows: int, columns: int) -> None: ...  # what every grid shows
    def sample_grid(self) -> tuple[object, list[str]]: ...  # a PIL image and its row names
    def diagnose(self, metrics: dict[str, float]) -> list: ...  # findings, said once (rank 0)
    def generate(  # for FID and the other metrics: y the labels asked of a conditional G
        self, n: int, generator: torch.Generator, y: torch.Tensor | None = None
    ) -> np.ndarray: ...


@dataclass
class Position:
    """Where training is; saved in every checkpoint, so a resumed run goes on from there."""

    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0
    images_seen: int = 0

    KEYS = ("epoch", "batch_in_epoch", "step", "images_seen")

    def state(self) -> dict[str, int]:
        return {key: getattr(self, key) for key in self.KEYS}


def lr_factor(config: TrainConfig, epoch: int) -> float:
    """The schedule: constant, step (x gamma at each milestone passed), or linear decay."""
    optim = config.optim
    if optim.schedule == "step":
        return optim.gamma ** sum(epoch >= m for m in optim.milestones)
    if optim.schedule == "linear":
        return max(0.0, 1.0 - epoch / config.epochs)
    return 1.0


def run_worker(
    config: TrainConfig,
    ctx: WorkerContext,
    dataset_path: str,
    on_report: Callable[[Report], None] | None = None,
) -> dict:
    """Train on this worker. Returns the last reported metrics (reduced over ranks).

    `on_report(report)` is called on rank 0 at each report (see `Report`). With `fid.every`,
    the reports ending every `fid.every`-th epoch (and the last) carry `fid`, `kid`,
    `kid_std` (`*_standin` with the stand-in backbone).
    """
    from pipeline.data.reader import ShardDataset
    from pipeline.data.staging import local_copy

    rank, world = ctx.rank, ctx.world_size
    setup = Setup.for_worker(config, ctx)

    # Load the training set: this rank's slice, reshuffled every epoch (a dataset at a URI
    # from this node's copy; the worker that makes it says so).
    dataset_path = str(local_copy(dataset_path, say=say))
    dataset = ShardDataset(dataset_path, config.data.split)
    label_plan = None
    if config.conditional:
        label_plan = plan_labels(dataset.manifest, config.data.groups, config.data.attrs)
    loader = dataset.loader(
        config.batch_size // world,
        seed=config.seed,
        rank=rank,
        world_size=world,
        columns=label_plan.columns if label_plan else [],
        rows=label_plan.labelled_rows(dataset) if label_plan else None,
    )
    shape = DataShape(dataset.shape[0], dataset.shape[2], label_plan, dataset_path, len(loader))

    # Build the task's models, the same initial weights on every rank.
    torch.manual_seed(config.seed)
    task = TASKS[config.family](config, setup, shape)

    # Resume: a restarted worker group, --resume, or a PBT exploit.
    position = Position()
    resume = ctx.checkpoint()
    if resume is not None:
        state = ckpt.load(resume, map_location=setup.device)
        task.load_state_dict(state)
        position = Position(**{key: state[key] for key in Position.KEYS})
        if rank == 0:
            ckpt.restore_rng(state)

    # Distribute across workers.
    task.distribute()
    task.fixed_samples(*grid_shape(label_plan, config.samples))
    fid_evaluator = _fid_evaluator(config, dataset_path, setup.device, rank, label_plan)

    # What every checkpoint says of the run, beside the task's state and the position.
    about_run = {
        "config": to_dict(config),
        "labels": label_plan.to_dict() if label_plan else None,
        "image": {
            "size": shape.image_size,
            "channels": shape.channels,
            "recipe": dataset.manifest.get("recipe"),  # how other images are made to fit
        },
    }
    meter = Meter()
    last: dict = {}
    steps_per_epoch = len(loader)
    report_every = config.report_every or steps_per_epoch
    tick, tick_images = time.perf_counter(), 0
    # Seconds from the command's (or trial's) start to this process's first step, said once
    # in the first report as `startup_s`.
    startup = {} if ctx.started is not None else None
    ticker = None
    if rank == 0:  # the live line on the command's console
        epochs = ctx.progress_epochs or config.epochs
        ticker = Ticker(ctx.progress, epochs, steps_per_epoch, position.step)

    while position.epoch < config.epochs:
        learning_rates = task.set_learning_rates(lr_factor(config, position.epoch))
        loader.set_epoch(position.epoch)
        torch.manual_seed(
            hash((config.seed, rank, position.epoch, position.batch_in_epoch)) % 2**63
        )
        for b, batch in enumerate(loader.numpy_batches()):
            if b < position.batch_in_epoch:
                continue  # resumed mid-epoch: these batches were trained on
            x = to_images(torch.from_numpy(batch["image"]), setup.device, setup.channels_last)
            x = augment(x, config.data.flip, config.data.rotate)
            y = None
            if label_plan is not None:
                y = torch.from_numpy(label_plan.labels(batch)).to(setup.device)

            values, loss = task.step(x, y, position.step)
            meter.add(**values)
            if startup == {}:
                startup = {"startup_s": time.time() - ctx.started}

            # A non-finite loss stops every rank at the same step.
            finite = torch.isfinite(loss).float().reshape(1)
            if setup.distributed:
                dist.all_reduce(finite, op=dist.ReduceOp.MIN)
            finite = finite.item() >= 1  # note: a host sync per step

            position.step += 1
            position.images_seen += x.shape[0] * world
            tick_images += x.shape[0] * world
            position.batch_in_epoch = b + 1
            end_of_epoch = position.batch_in_epoch == steps_per_epoch
            if end_of_epoch:
                position.epoch, position.batch_in_epoch = position.epoch + 1, 0
            if ticker is not None:
                ticker.tick(position, lambda: meter.peek(LOSSES))
            due = position.step % report_every == 0 or task.boundary(position.step)
            if not finite or due or end_of_epoch:
                elapsed = time.perf_counter() - tick
                reduced = meter.reduce(world)
                metrics = {
                    **flatten_metrics(reduced, shape.channels),
                    **task.summaries(reduced),
                    "epoch": position.epoch,
                    "step": position.step,
                    "images_seen": position.images_seen,
                    "images_per_s": tick_images / max(elapsed, 1e-9),
                    **learning_rates,
                    "nonfinite": 0.0 if finite else 1.0,
                    **(startup or {}),
                }
                startup = None
                if (
                    fid_evaluator is not None
                    and finite
                    and end_of_epoch
                    and _fid_due(config, position)
                ):
                    metrics.update(
                        fid_evaluator.evaluate(task.generate)
                    )  # every rank embeds its share
                about = {**about_run, **position.state()}
                _report(ctx, task, about, metrics, fid_evaluator, on_report)
                if ticker is not None:
                    ticker.tick(position, metrics, force=True)
                last = metrics
                tick, tick_images = time.perf_counter(), 0
                if not finite:
                    return last
            if end_of_epoch:
                break
    return last


def _fid_evaluator(config: TrainConfig, dataset_path: str, device, rank: int, label_plan):
    if not config.fid.every:
        return None
    from pipeline.judge import find_judge, how_to_train
    from pipeline.metrics.evaluation import Evaluator
    from pipeline.metrics.weights import backbone_for

    judge = None
    if label_plan is not None:
        judge = find_judge(dataset_path, label_plan.to_dict(), device)
        if judge is None and rank == 0:  # once a run: class_acc needs a judge
            say(f"no class judge for this dataset: class_acc is not measured; "
                f"{how_to_train(config.data.dataset, label_plan.to_dict())}")  # fmt: skip
    return Evaluator(
        config.fid,
        backbone_for(config.fid.weights),
        dataset_path,
        config.fid.split or config.data.split,
        device,
        say=say if rank == 0 else (lambda line: None),
        labels=label_plan,
        judge=judge,
    )


def _fid_due(config: TrainConfig, position: Position) -> bool:
    """Every `fid.every`-th epoch, and the last."""
    return position.epoch % config.fid.every == 0 or position.epoch == config.epochs


def _report(
    ctx: WorkerContext,
    task: Task,
    about: dict,
    metrics: dict[str, float],
    fid_evaluator,
    on_report: Callable[[Report], None] | None,
) -> None:
    """Rank 0 writes the checkpoint (`about` the run and its position, then the task's
    state) and the grid and calls `on_report`; every rank reports to its context (Ray Train
    waits for all of them)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = None
        if ctx.rank == 0:
            # The grid first: its forward (batch statistics) touches G_ema's BN buffers, and
            # the checkpoint keeps them as they are after it.
            grid, row_names = task.sample_grid()
            findings = task.diagnose(metrics)
            for finding in findings:  # on the console as it happens; tagged by on_report
                say(f"warning: {finding.message}")
            folder = Path(tmp)
            state = {**about, **task.state_dict()}
            ckpt.save(folder / ckpt.FILE, state)
            if on_report is not None:
                protocol = fid_evaluator.protocol if fid_evaluator is not None else None
                on_report(Report(metrics, grid, row_names, folder, protocol, findings))
        ctx.report(metrics, folder)
