"""Ray Train's per-worker entry: who this worker is (`RayContext`), and the loop with rank 0
logging to MLflow (`train_loop`). `pipeline.training.driver.build_trainer` hands `train_loop`
to the TorchTrainer; everything else a worker does is in the runner, which needs no Ray.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pipeline.training.config import TrainConfig


def train_loop(loop_config: dict) -> None:
    """Ray Train's per-worker function: the loop, with rank 0 logging to MLflow."""
    import ray.train

    from pipeline import tracking
    from pipeline.config import from_dict
    from pipeline.training import checkpoint as ckpt
    from pipeline.training.runner import TASKS, Report, run_worker

    _quiet_report_log()
    config = from_dict(TrainConfig, loop_config["config"])
    handle = tracking.RunHandle(**loop_config["run"]) if loop_config.get("run") else None
    context = RayContext(
        handle, resume=loop_config.get("resume", False), start_from=loop_config.get("start_from")
    )
    tracker = tracking.Tracker(handle if context.rank == 0 else None)
    restored = ray.train.get_checkpoint()
    if context.rank == 0 and restored is None and not context.resume:
        tracker.log_dict(loop_config["config"], "config.yaml")
    if context.rank == 0 and restored is not None:
        # A worker died and Ray Train restarted the group: say so where the user looks.
        name = Path(restored.path).name
        tracker.set_tags({"pipeline.restored_from": name})
        print(f"worker group restarted: resuming from {name}", flush=True)

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

    run_worker(config, context, loop_config["dataset"], on_report)


def _quiet_report_log() -> None:
    """Ray Train V2 logs every report, metrics and all, at INFO through a logger named after
    its file path, which LoggingConfig does not reach: one long line per report and rank."""
    try:
        from ray.train.v2._internal.execution import context as train_context
    except ImportError:  # another Ray version: nothing to quiet
        return
    level = os.environ.get("PIPELINE_RAY_LOG_LEVEL", "WARNING")
    logging.getLogger(train_context.__file__).setLevel(level)


class RayContext:
    """Who this worker is in the Ray Train run, and how it reports."""

    def __init__(self, handle=None, resume: bool = False, start_from: str | None = None):
        import ray.train

        self.handle, self.resume, self.start_from = handle, resume, start_from

        context = ray.train.get_context()
        self.rank = context.get_world_rank()
        self.world_size = context.get_world_size()
        self.local_rank = context.get_local_rank()

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

        found = ray.train.get_checkpoint()  # set when Ray restarted a failed worker group
        if found is not None:
            return Path(found.to_directory())
        if self.start_from:  # a PBT segment: the checkpoint Tune handed its trial
            from pipeline.training import checkpoint as ckpt

            return ckpt.local_folder(self.start_from)
        if self.resume:  # --resume: the run's last checkpoint, from MLflow (any machine)
            from pipeline import tracking

            return tracking.download_artifact(self.handle, "checkpoints/checkpoint.pt")
        return None
