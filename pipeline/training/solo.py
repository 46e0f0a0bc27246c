"""A run (or sweep trial) of one worker, without a worker group: the same loop, in one Ray
process, with checkpoints written where Ray Train writes them.

Ray Train's start-up is its processes: a controller, the workers, a synchronisation actor,
a placement-group cleaner and a dataset manager, each a fresh Python importing torch or Ray
Train; about 8-11 s on 2 cores before the first step, whatever the model. One worker needs
none of them: `pipeline train --workers 1` runs the loop as one Ray task (Ray retries it
`max_failures` times when its process dies, and the retry goes on from the run folder's last
checkpoint), and a sweep trial of one worker runs it inside its own Tune function. Two or more
workers keep Ray Train (DDP needs its process group and restarts).

    metrics, checkpoint = fit_solo(loop_config, storage, folder, resources, retries)
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from pipeline import storage as locations
from pipeline import waiting_fs
from pipeline.errors import PipelineError
from pipeline.training import checkpoint as ckpt

PREFIX = "checkpoint-"  # checkpoint-00000017/checkpoint.pt, as Ray Train names them


class SoloContext:
    """The one worker's context: rank 0 of 1; reports go to `sink(metrics, location)` (Tune,
    or nothing) after their checkpoint is written under `storage`/`folder`."""

    rank, world_size, local_rank = 0, 1, 0

    def __init__(
        self,
        loop_config: dict,
        handle,
        storage: str,
        folder: str,
        sink: Callable[[dict, str | None], None] | None = None,
    ):
        from pipeline.training.progress import worker_poster

        self.loop_config, self.handle, self.sink = loop_config, handle, sink
        self.run_folder = locations.join(storage, folder)
        self.latest = newest_checkpoint(self.run_folder)  # set when this is a retry
        self.restored = locations.name_of(self.latest) if self.latest else None
        self.started = loop_config.get("started")
        self.progress_epochs = (loop_config.get("progress") or {}).get("epochs")
        self.progress = worker_poster(loop_config.get("progress"))

    def report(self, metrics: dict, checkpoint_dir: Path | None) -> None:
        if checkpoint_dir is not None:
            name = f"{PREFIX}{int(metrics['step']):08d}"
            self.latest = save_checkpoint(checkpoint_dir / ckpt.FILE, self.run_folder, name)
        if self.sink is not None:
            self.sink(metrics, self.latest if checkpoint_dir is not None else None)

    def checkpoint(self) -> Path | None:
        from pipeline.training.worker import given_checkpoint

        if self.latest is not None:  # a retry goes on from its own last checkpoint
            return ckpt.local_folder(self.latest)
        return given_checkpoint(self.loop_config, self.handle)


def save_checkpoint(file: Path, run_folder: str, name: str) -> str:
    """Write a checkpoint file as `run_folder`/`name`/checkpoint.pt; a reader never sees half of
    it (a local file is renamed into place, an object appears whole). Returns the folder."""
    target = locations.join(run_folder, name)
    if locations.is_uri(run_folder):
        r = waiting_fs.remote(target)  # a store away for a while delays the run, no more
        locations.upload(file, r, r.at(ckpt.FILE))
        return target
    Path(target).mkdir(parents=True, exist_ok=True)
    partial = Path(target) / f".{ckpt.FILE}.partial"
    shutil.move(str(file), partial)
    os.replace(partial, Path(target) / ckpt.FILE)
    return target


def newest_checkpoint(run_folder: str) -> str | None:
    """The run folder's last complete checkpoint folder, or None."""
    if locations.is_uri(run_folder):
        r = waiting_fs.remote(run_folder)
        names = sorted(n for n in locations.children(r, r.path) if n.startswith(PREFIX))
        done = [n for n in names if locations.exists(r, r.at(n, ckpt.FILE))]
        return locations.join(run_folder, done[-1]) if done else None
    done = sorted(p.parent.name for p in Path(run_folder).glob(f"{PREFIX}*/{ckpt.FILE}"))
    return str(Path(run_folder) / done[-1]) if done else None


def run_solo(loop_config: dict, storage: str, folder: str, sink=None) -> dict:
    """The loop of a one-worker run in this process; returns {"metrics", "checkpoint"}."""
    from pipeline.training.worker import quiet_ray_logs, run_handle, run_loop

    quiet_ray_logs()
    handle = run_handle(loop_config)
    context = SoloContext(loop_config, handle, storage, folder, sink)
    metrics = run_loop(loop_config, context, handle)
    return {"metrics": metrics, "checkpoint": context.latest}


def fit_solo(
    loop_config: dict, storage: str, folder: str, resources: dict, retries: int
) -> tuple[dict, str | None]:
    """`pipeline train` of one worker: `run_solo` as one Ray task holding the worker's CPUs
    and GPUs, retried (from its last checkpoint) when its process dies. Returns the last
    metrics and checkpoint location; a failure is one `PipelineError` line."""
    import ray
    from ray.exceptions import RayError, RayTaskError

    from pipeline.cluster import root_cause

    task = ray.remote(run_solo).options(
        num_cpus=resources.get("CPU", 1),
        num_gpus=resources.get("GPU", 0),
        max_retries=retries,
        retry_exceptions=False,  # an error of the loop itself would only happen again
        name="pipeline-solo",
    )
    try:
        done = ray.get(task.remote(loop_config, str(storage), folder))
    except RayTaskError as exc:
        cause = exc.cause if isinstance(exc.cause, BaseException) else exc
        if isinstance(cause, PipelineError):
            raise PipelineError(str(cause)) from None
        raise PipelineError(f"training failed: {root_cause(cause)}") from exc
    except RayError as exc:  # the process died more often than max_failures allows
        raise PipelineError(f"training failed: {root_cause(exc)}") from exc
    return done["metrics"], done["checkpoint"]
