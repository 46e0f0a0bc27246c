"""Who a worker is and where its reports and checkpoints go.

The runner needs no Ray: Ray Train's context is `pipeline.training.worker.RayContext`;
`LocalContext` runs one process (tests, benchmarks, a debugger).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pipeline.training import checkpoint as ckpt


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
