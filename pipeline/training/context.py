"""Who a worker is, where it computes, what it trains on, and where its reports and
checkpoints go.

The runner needs no Ray: Ray Train's context is `pipeline.training.worker.RayContext`;
`LocalContext` runs one process (tests, benchmarks, a debugger).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
import torch.distributed as dist

from pipeline.training import checkpoint as ckpt
from pipeline.training.config import TrainConfig
from pipeline.training.labels import LabelPlan


class WorkerContext(Protocol):
    rank: int
    world_size: int
    local_rank: int
    progress_epochs: int | None  # the epochs the progress line counts to (None: the config's)
    restored: str | None  # the checkpoint a restarted worker goes on from (None: a first start)
    started: float | None  # when the command (or sweep trial) started, for `startup_s`

    def report(self, metrics: dict, checkpoint_dir: Path | None) -> None: ...
    def checkpoint(self) -> Path | None: ...
    def progress(self, state: dict) -> None: ...  # rank 0's live line (pipeline.training.progress)


@dataclass
class LocalContext:
    """One process, no Ray: reports are kept in a list, checkpoints in a folder."""

    folder: Path
    resume_from: Path | None = None
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    progress_epochs: int | None = None
    restored: str | None = None
    started: float | None = None
    reports: list[dict] = field(default_factory=list)
    states: list[dict] = field(default_factory=list)  # the progress line's, as posted

    def report(self, metrics: dict, checkpoint_dir: Path | None) -> None:
        self.reports.append(metrics)
        if checkpoint_dir is not None:
            target = Path(self.folder) / f"checkpoint-{metrics['step']:08d}"
            target.mkdir(parents=True, exist_ok=True)
            (checkpoint_dir / ckpt.FILE).replace(target / ckpt.FILE)
            self.resume_from = target

    def checkpoint(self) -> Path | None:
        return self.resume_from

    def progress(self, state: dict) -> None:
        self.states.append(state)


@dataclass(frozen=True)
class Setup:
    """Where this worker computes and how: what every task's models and step need."""

    device: torch.device
    cuda: bool
    channels_last: bool
    autocast: torch.autocast
    distributed: bool
    rank: int = 0  # who speaks: rank 0 says what concerns the whole run

    @classmethod
    def for_worker(cls, config: TrainConfig, ctx: WorkerContext) -> Setup:
        cuda = config.gpus_per_worker > 0 and torch.cuda.is_available()
        device = torch.device(f"cuda:{ctx.local_rank}" if cuda else "cpu")
        if cuda:
            torch.cuda.set_device(device)
            torch.backends.cudnn.benchmark = True
        distributed = ctx.world_size > 1 and dist.is_available() and dist.is_initialized()
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and config.bf16)
        return cls(device, cuda, cuda and config.channels_last, autocast, distributed, ctx.rank)


@dataclass(frozen=True)
class DataShape:
    """What the task is told of the training set."""

    image_size: int
    channels: int
    label_plan: LabelPlan | None  # what a conditional model conditions on
    path: str = ""  # the dataset on this node (a task may read more of it: an evaluation set)
    steps_per_epoch: int = 0  # this rank's batches per epoch
