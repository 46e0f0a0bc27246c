"""One trial of a sweep: the Tune function that runs `pipeline train`'s own fit.

Ray Train V2 refuses a TorchTrainer as a Tune trainable (`Tuner(TorchTrainer(...))` fails
with "Improper 'run'"), so each trial is the function `run_trial`: it finds or creates the
trial's MLflow child run (so a restarted trial logs into the same one), fits with
`pipeline.training.driver.fit`, and hands the reports to Tune. A trial of one worker runs the
loop right here, in its Tune function (no worker group to start: pipeline.training.solo);
more workers run on Ray Train.

ASHA and FIFO: one fit; every report reaches Tune as it happens (through
`TuneReportCallback` from Ray Train, or straight from a solo trial's loop), and ASHA stops a
weak trial at a rung. PBT: the fit runs in segments of `perturbation_interval`
epochs; after each, `tune.report` carries a small checkpoint that points at the Train
checkpoint. When PBT exploits, the trial restarts with mutated values and the donor's
checkpoint; the loop re-applies the learning rates from the config each epoch, so the mutated
rates reach the optimizers.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.tuning.plan import SweepPlan, describe

POINTER = "train_checkpoint.json"  # the Tune checkpoint of a PBT segment: where the real one is


def run_trial(params: dict, plan: SweepPlan) -> None:
    """Tune's function trainable: train one trial's config, reporting to Tune."""
    import ray.tune

    from pipeline import tracking
    from pipeline.training.worker import quiet_ray_logs

    quiet_ray_logs()
    started = time.time()  # the trial's start-up (its first fit's startup_s) counts from here
    trial_id = ray.tune.get_context().get_trial_id()
    config = plan.trial_config(params, trial_id)
    handle, restarted = child_run(plan, trial_id, config, params)

    given = ray.tune.get_checkpoint()  # PBT: our own last segment, or the exploited trial's
    start_from, donor = None, None
    if given is not None:
        pointer = json.loads((Path(given.to_directory()) / POINTER).read_text())
        start_from, donor = pointer["path"], pointer["trial_id"]
        if donor != trial_id:
            tracking.Tracker(handle).set_tags({"pipeline.pbt.exploited": donor})
            print(f"trial {trial_id}: PBT took over trial {donor}'s weights at epoch "
                  f"{pointer['epoch']} with {describe(params)}", flush=True)  # fmt: skip

    if plan.scheduler == "pbt":
        _run_segments(plan, config, handle, trial_id, params, start_from, restarted, started)
        return
    if restarted:
        done = tracking.run_metrics(handle)
        if done.get("epoch", 0) >= config.epochs:
            # Finished before the sweep was interrupted, but Tune's saved state missed it.
            ray.tune.report(done)
            return
    resume = restarted and _has_checkpoint(handle)
    metrics, _ = _fit(plan, config, handle, trial_id, started, resume=resume)
    if metrics.get("nonfinite"):
        raise PipelineError(f"trial {trial_id}: a loss became NaN or infinite")


def child_run(plan: SweepPlan, trial_id: str, config, params: dict):
    """The trial's MLflow child run: found by its Tune trial id (a restarted trial), or
    created now, before training starts. Returns (handle, found)."""
    from pipeline import tracking
    from pipeline.config import to_dict

    found = plan.trial_run(trial_id)
    if found is not None:
        tracking.reopen_run(found)
        return found, True
    handle = tracking.start_run(
        plan.uri,
        plan.experiment,
        config.run_name,
        params=to_dict(config),
        tags={
            "ray.trial_id": trial_id,
            "pipeline.sweep": plan.name,
            "pipeline.dataset": plan.dataset_name,
            "pipeline.family": plan.family,
            "pipeline.searched": describe(params),
        },
        parent_run_id=plan.parent_run_id,
    )
    tracking.Tracker(handle).log_dict(to_dict(config), "config.yaml")
    plan.record_trial_run(trial_id, handle)  # the driver ends this run without asking MLflow
    return handle, False


def _run_segments(
    plan: SweepPlan, config, handle, trial_id, params, start_from, restarted, started
) -> None:
    """PBT: train `perturbation_interval` epochs at a time, reporting a checkpoint after each."""
    import ray.tune

    from pipeline import tracking
    from pipeline.training import checkpoint as ckpt

    if start_from is None and restarted and _has_checkpoint(handle):  # a resumed sweep
        start_from = tracking.download_artifact(handle, "checkpoints/checkpoint.pt")
    epoch, images_seen = 0, 0
    if start_from is not None:
        state = ckpt.load(ckpt.local_folder(start_from) or start_from)
        epoch, images_seen = state["epoch"], state["images_seen"]
    if epoch >= config.epochs:
        # Restarted with nothing left to train (a resumed sweep whose trial had ended): say
        # its last numbers again, so Tune's result for the trial carries the metric.
        ray.tune.report({**tracking.run_metrics(handle), "epoch": epoch})
        return
    tracker = tracking.Tracker(handle)
    interval = plan.space["pbt"]["perturbation_interval"]
    while epoch < config.epochs:
        end = min(config.epochs, (epoch // interval + 1) * interval)
        # The searched values in force in this segment, as metrics: PBT changes them over
        # time, and MLflow params cannot change.
        numeric = {f"pbt.{k}": v for k, v in params.items() if isinstance(v, (int, float))}
        tracker.log_metrics(numeric, step=images_seen)
        segment = replace(config, epochs=end)
        metrics, start_from = _fit(plan, segment, handle, trial_id, started, start_from=start_from)
        started = time.time()  # the next segment's start-up counts from the end of this one
        if metrics.get("nonfinite"):
            raise PipelineError(f"trial {trial_id}: a loss became NaN or infinite")
        epoch, images_seen = int(metrics["epoch"]), int(metrics["images_seen"])
        with tempfile.TemporaryDirectory() as folder:
            pointer = {"path": str(start_from), "trial_id": trial_id, "epoch": epoch}
            (Path(folder) / POINTER).write_text(json.dumps(pointer))
            ray.tune.report(
                {**metrics, "checkpoint_path": str(start_from)},
                checkpoint=ray.tune.Checkpoint.from_directory(folder),
            )


def trial_progress(plan: SweepPlan, trial_id: str) -> dict:
    """Where a trial's rank 0 posts its live line (the sweep's view shows one per trial), and
    the epochs it counts to (a PBT segment's fit ends before the trial does)."""
    return {"key": f"sweep/{plan.name}/{trial_id}", "epochs": plan.max_epochs}


def _fit(plan: SweepPlan, config, handle, trial_id, started, resume=False, start_from=None):
    """One fit of the trial, in this Tune function (one worker) or on Ray Train; reports reach
    Tune as they happen, except under PBT, which hears of each segment at its end."""
    from pipeline.storage import join
    from pipeline.training.driver import fit

    return fit(
        config,
        handle,
        plan.dataset_path,
        storage=join(plan.storage, plan.name, "train"),
        resume=resume,
        start_from=start_from,
        progress=trial_progress(plan, trial_id),
        tune=plan.scheduler != "pbt",
        here=True,
        started=started,
    )


def _has_checkpoint(handle) -> bool:
    from pipeline import tracking

    return "checkpoints/checkpoint.pt" in tracking.artifact_files(handle, "checkpoints")
