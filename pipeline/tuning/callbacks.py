"""The sweep driver's Tune callback: progress lines, and each trial's final MLflow status.

A trial's own code cannot set its final status: when ASHA stops a trial early, the trial is
killed, not told, and its controller dying looks like a failure from inside (notes/ray-mlflow.md).
So the driver does it: FINISHED, KILLED when the scheduler stopped the trial before its last
epoch, FAILED on an error.
"""

from __future__ import annotations

from ray.tune import Callback


class TrialStatus(Callback):
    def __init__(self, plan: dict):
        self.plan = plan  # SweepPlan.to_dict(): plain data, pickled with the Tuner's state

    def on_trial_start(self, iteration, trials, trial, **info):
        from pipeline.tuning.trial import describe

        print(f"trial {trial.trial_id} started: {describe(trial.config)}", flush=True)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        metric = self.plan["metric"]
        shown = [key for key in (metric, "loss_d", "loss_g") if key in result]
        values = ", ".join(f"{key} {result[key]:.4g}" for key in shown)
        print(f"trial {trial.trial_id} epoch {result.get('epoch')}: {values}", flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        epoch = int((trial.last_result or {}).get("epoch", 0))
        early = epoch < self.plan["max_epochs"]
        self._finish(trial, "KILLED" if early else "FINISHED")
        said = f"stopped early at epoch {epoch} ({self.plan['scheduler']})" if early else "finished"
        print(f"trial {trial.trial_id} {said}", flush=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finish(trial, "FAILED")
        print(f"trial {trial.trial_id} failed (see its MLflow run and {trial.path})", flush=True)

    def _finish(self, trial, status: str) -> None:
        from pipeline import tracking

        plan = self.plan
        handle = tracking.find_run_by_tags(
            plan["uri"],
            plan["experiment"],
            {"ray.trial_id": trial.trial_id, "pipeline.sweep": plan["name"]},
            parent_run_id=plan["parent"]["run_id"],
        )
        if handle is not None:
            tracking.Tracker(handle).finish(status)
