"""Ray Train's per-worker entry: who this worker is (`RayContext`), and the loop with rank 0
logging to MLflow (`run_loop`, which a one-worker run without Ray Train shares:
pipeline.training.solo). `pipeline.training.driver.build_trainer` hands `train_loop` to the
TorchTrainer; everything else a worker does is in the runner, which needs no Ray.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pipeline.console import say
from pipeline.training.config import TrainConfig


def train_loop(loop_config: dict) -> None:
    """Ray Train's per-worker function: the loop, with rank 0 logging to MLflow."""
    quiet_ray_logs()
    handle = run_handle(loop_config)
    run_loop(loop_config, RayContext(loop_config, handle), handle)


def run_handle(loop_config: dict):
    """The MLflow run the loop logs into (None: no logging)."""
    from pipeline import tracking

    return tracking.RunHandle(**loop_config["run"]) if loop_config.get("run") else None


def run_loop(loop_config: dict, context, handle) -> dict:
    """The loop under a worker's context (Ray Train's, or a solo run's: pipeline.training.solo)
    with rank 0 logging to MLflow; returns the last reported metrics."""
    from pipeline import tracking
    from pipeline.config import from_dict
    from pipeline.training import checkpoint as ckpt
    from pipeline.training.runner import TASKS, Report, run_worker

    config = from_dict(TrainConfig, loop_config["config"])
    tracker = tracking.Tracker(handle if context.rank == 0 else None)
    if context.rank == 0 and context.restored is not None:
        # A worker died and was restarted: say so where the user looks.
        tracker.set_tags({"pipeline.restored_from": context.restored})
        restarted = "worker group" if context.world_size > 1 else "worker"
        say(f"{restarted} restarted: resuming from {context.restored}")

    def on_report(report: Report) -> None:
        metrics, folder = report.metrics, report.checkpoint_dir
        step = int(metrics["images_seen"])
        tracker.log_metrics(metrics, step=step)
        if report.fid_protocol:  # what the FID numbers mean, beside them
            tracker.log_dict(report.fid_protocol, "fid/protocol.json")
        name = f"samples/epoch-{int(metrics['epoch']):03d}-step-{int(metrics['step']):07d}.png"
        tracker.log_image(report.grid, name, key="samples", step=step)
        for finding in report.findings:  # said on the console by the runner; kept on the run
            said = f"from step {step}: {finding.message}"
            tracker.set_tags({f"pipeline.warning.{finding.name}": said})
        if report.row_names:  # the names the grid's left band shows, one per row, readable
            tracker.log_dict({"rows": report.row_names}, "samples/rows.json")
        tracker.log_artifact(folder / ckpt.FILE, "checkpoints")  # the last one, for --resume
        if metrics["epoch"] >= config.epochs and not metrics.get("nonfinite"):
            # The final model alone (G_ema, or C, and what it needs), for `pipeline sample` /
            # `pipeline complete`.
            task = TASKS[config.family]
            state = ckpt.load(folder / ckpt.FILE)
            tracker.log_artifact(ckpt.save_generator(state, folder / task.EXPORT_FILE, task.EXPORT))

    try:
        return run_worker(config, context, loop_config["dataset"], on_report)
    finally:
        tracker.close()  # what rank 0 logged reaches MLflow (or its journal is named) first


def given_checkpoint(loop_config: dict, handle) -> Path | None:
    """The checkpoint a fit starts from, when it is not a restart: a PBT segment's (the one
    Tune handed its trial), or --resume's (the run's last, from MLflow: any machine)."""
    if loop_config.get("start_from"):
        from pipeline.training import checkpoint as ckpt

        return ckpt.local_folder(loop_config["start_from"])
    if loop_config.get("resume"):
        from pipeline import tracking

        return tracking.download_artifact(handle, "checkpoints/checkpoint.pt")
    return None


def quiet_ray_logs() -> None:
    """Ray's INFO lines in a worker reach the command's console (one per report and rank, one
    per checkpoint saved); MLflow and the live line say it better. Ray Train V2 logs reports
    through a logger named after its file path, which LoggingConfig does not reach. At
    PIPELINE_RAY_LOG_LEVEL (WARNING; INFO with --verbose)."""
    level = os.environ.get("PIPELINE_RAY_LOG_LEVEL", "WARNING")
    for name in ("ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(level)
    try:
        from ray.train.v2._internal.execution import context as train_context
    except ImportError:  # another Ray version: nothing more to quiet
        return
    logging.getLogger(train_context.__file__).setLevel(level)


class RayContext:
    """Who this worker is in the Ray Train run, and how it reports."""

    def __init__(self, loop_config: dict, handle=None):
        import ray.train

        from pipeline.training.progress import worker_poster

        self.loop_config, self.handle = loop_config, handle
        context = ray.train.get_context()
        self.rank = context.get_world_rank()
        self.world_size = context.get_world_size()
        self.local_rank = context.get_local_rank()
        found = ray.train.get_checkpoint()  # set when Ray restarted a failed worker group
        self.restored = Path(found.path).name if found is not None else None
        self.started = loop_config.get("started")
        # Where the live line goes ({"key", "epochs"}; pipeline.training.progress), if anywhere.
        self.progress_epochs = (loop_config.get("progress") or {}).get("epochs")
        self.progress = worker_poster(loop_config.get("progress"))

    def report(self, metrics: dict, checkpoint_dir: Path | None) -> None:
        import ray.train

        checkpoint = (
            ray.train.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        )
        ray.train.report(
            metrics, checkpoint=checkpoint, checkpoint_dir_name=f"checkpoint-{metrics['step']:08d}"
        )

    def checkpoint(self) -> Path | None:
        import ray.train

        found = ray.train.get_checkpoint()  # a restarted worker group goes on from its last
        if found is not None:
            # A folder of this rank's own: in Ray's shared default folder a rank that came late
            # downloaded the checkpoint again over the file another rank was reading (one CI
            # run: "checkpoint.pt is not a pipeline checkpoint (RuntimeError)" after a restart).
            import tempfile

            own = tempfile.mkdtemp(prefix=f"pipeline-restore-rank{self.rank}-")
            return Path(found.to_directory(own))
        return given_checkpoint(self.loop_config, self.handle)
