"""One trial of a sweep: the Tune function that runs `pipeline train`'s own TorchTrainer.

Ray Train V2 runs under Tune only inside a function trainable (notes/ray-mlflow.md), so each
trial is `run_trial`: it finds or creates the trial's MLflow child run (so a restarted trial
logs into the same one), builds the trainer with `pipeline.training.driver.build_trainer`,
and hands the workers' reports to Tune.

ASHA and FIFO: one fit; every report reaches Tune through `TuneReportCallback`, and ASHA
stops a weak trial at a rung. PBT: the fit runs in segments of `perturbation_interval`
epochs; after each, `tune.report` carries a small checkpoint that points at the Train
checkpoint. When PBT exploits, the trial restarts with mutated values and the donor's
checkpoint; the loop re-applies the learning rates from the config each epoch, so the mutated
rates reach the optimizers.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import replace
from pathlib import Path

POINTER = "train_checkpoint.json"  # the Tune checkpoint of a PBT segment: where the real one is


def run_trial(params: dict, plan: dict) -> None:
    """Tune's function trainable: train one trial's config, reporting to Tune."""
    import ray.tune

    from pipeline import tracking
    from pipeline.errors import PipelineError
    from pipeline.tuning.sweep import SweepPlan

    sweep = SweepPlan.from_dict(plan)
    trial_id = ray.tune.get_context().get_trial_id()
    config = sweep.trial_config(params, trial_id)
    handle, restarted = child_run(sweep, trial_id, config, params)

    given = ray.tune.get_checkpoint()  # PBT: our own last segment, or the exploited trial's
    start_from, donor = None, None
    if given is not None:
        pointer = json.loads((Path(given.to_directory()) / POINTER).read_text())
        start_from, donor = Path(pointer["path"]), pointer["trial_id"]
        if donor != trial_id:
            tracking.Tracker(handle).set_tags({"pipeline.pbt.exploited": donor})
            print(f"trial {trial_id}: PBT took over trial {donor}'s weights at epoch "
                  f"{pointer['epoch']} with {describe(params)}", flush=True)  # fmt: skip

    if sweep.scheduler == "pbt":
        _run_segments(sweep, config, handle, trial_id, params, start_from, restarted)
        return
    if restarted:
        done = tracking.run_metrics(handle)
        if done.get("epoch", 0) >= config.epochs:
            # Finished before the sweep was interrupted, but Tune's saved state missed it.
            ray.tune.report(done)
            return
    trainer = _trainer(sweep, config, handle, resume=restarted and _has_checkpoint(handle))
    result = _fit(trainer)
    if result.metrics and result.metrics.get("nonfinite"):
        raise PipelineError(f"trial {trial_id}: a loss became NaN or infinite")


def child_run(sweep, trial_id: str, config, params: dict):
    """The trial's MLflow child run: found by its Tune trial id (a restarted trial), or
    created now, before training starts. Returns (handle, found)."""
    from pipeline import tracking
    from pipeline.config import to_dict

    tags = {"ray.trial_id": trial_id, "pipeline.sweep": sweep.name}
    parent = sweep.parent["run_id"]
    found = tracking.find_run_by_tags(sweep.uri, sweep.experiment, tags, parent_run_id=parent)
    if found is not None:
        tracking.reopen_run(found)
        return found, True
    handle = tracking.start_run(
        sweep.uri,
        sweep.experiment,
        config.run_name,
        params=to_dict(config),
        tags={
            **tags,
            "pipeline.dataset": sweep.dataset_name,
            "pipeline.family": sweep.family,
            "pipeline.searched": describe(params),
        },
        parent_run_id=parent,
    )
    return handle, False


def describe(params: dict) -> str:
    """`lambda_cls=0.42 optim.lr_g=2.1e-04 model.norm_g=batch`"""
    return " ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )


def _run_segments(sweep, config, handle, trial_id, params, start_from, restarted) -> None:
    """PBT: train `perturbation_interval` epochs at a time, reporting a checkpoint after each."""
    import ray.tune

    from pipeline import tracking
    from pipeline.training import checkpoint as ckpt

    if start_from is None and restarted and _has_checkpoint(handle):  # a resumed sweep
        start_from = tracking.download_artifact(handle, "checkpoints/checkpoint.pt")
    epoch, images_seen = 0, 0
    if start_from is not None:
        state = ckpt.load(start_from)
        epoch, images_seen = state["epoch"], state["images_seen"]
    if epoch >= config.epochs:
        # Restarted with nothing left to train (a resumed sweep whose trial had ended): say
        # its last numbers again, so Tune's result for the trial carries the metric.
        ray.tune.report({**tracking.run_metrics(handle), "epoch": epoch})
        return
    tracker = tracking.Tracker(handle)
    interval = sweep.space["pbt"]["perturbation_interval"]
    while epoch < config.epochs:
        end = min(config.epochs, (epoch // interval + 1) * interval)
        # The searched values in force in this segment, as metrics: PBT changes them over
        # time, and MLflow params cannot change.
        numeric = {f"pbt.{k}": v for k, v in params.items() if isinstance(v, (int, float))}
        tracker.log_metrics(numeric, step=images_seen)
        trainer = _trainer(sweep, replace(config, epochs=end), handle, start_from=start_from)
        result = _fit(trainer)
        metrics = dict(result.metrics or {})
        if metrics.get("nonfinite"):
            from pipeline.errors import PipelineError

            raise PipelineError(f"trial {trial_id}: a loss became NaN or infinite")
        start_from = Path(result.checkpoint.path)
        epoch, images_seen = int(metrics["epoch"]), int(metrics["images_seen"])
        with tempfile.TemporaryDirectory() as folder:
            pointer = {"path": str(start_from), "trial_id": trial_id, "epoch": epoch}
            (Path(folder) / POINTER).write_text(json.dumps(pointer))
            ray.tune.report(
                {**metrics, "checkpoint_path": str(start_from)},
                checkpoint=ray.tune.Checkpoint.from_directory(folder),
            )


def _trainer(sweep, config, handle, resume: bool = False, start_from: Path | None = None):
    from pipeline.training.driver import build_trainer

    callbacks = None
    if sweep.scheduler != "pbt":
        from ray.tune.integration.ray_train import TuneReportCallback

        callbacks = [TuneReportCallback()]
    return build_trainer(
        config,
        handle,
        Path(sweep.dataset_path),
        resume=resume,
        callbacks=callbacks,
        storage=Path(sweep.storage) / sweep.name / "train",
        start_from=start_from,
    )


def _fit(trainer):
    from pipeline.errors import PipelineError
    from pipeline.training.driver import _root_cause

    try:
        return trainer.fit()
    except PipelineError:
        raise
    except Exception as exc:  # Ray wraps worker errors: keep the root cause on one line
        raise PipelineError(f"training failed: {_root_cause(exc)}") from exc


def _has_checkpoint(handle) -> bool:
    from pipeline import tracking

    return "checkpoints/checkpoint.pt" in tracking.artifact_files(handle, "checkpoints")
