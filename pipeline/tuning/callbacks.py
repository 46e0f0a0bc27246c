"""The sweep driver's Tune callback: progress lines, and each trial's final MLflow status.

A trial's own code cannot set its final status: when ASHA stops a trial early, the trial is
killed, not told, and its Train controller dying looks like a failure from inside. So the
driver does it: FINISHED, KILLED when the scheduler stopped the trial before its last epoch,
FAILED on an error.
"""

from __future__ import annotations

from ray.tune import Callback

from pipeline.tuning.plan import SweepPlan, describe


class TrialStatus(Callback):
    def __init__(self, plan: SweepPlan):
        self.plan = plan  # a frozen dataclass of plain fields: pickled with the Tuner's state

    def __setstate__(self, state: dict) -> None:
        # A sweep saved by an older version pickled the plan as a dict, or without the fields
        # added since (a pickled dataclass skips __init__ and its defaults): made anew, so
        # --resume still works.
        plan = state.get("plan")
        if plan is not None:
            fields = plan if isinstance(plan, dict) else vars(plan)
            state = {**state, "plan": SweepPlan.from_dict(dict(fields))}
        self.__dict__.update(state)

    def on_trial_start(self, iteration, trials, trial, **info):
        print(f"trial {trial.trial_id} started: {describe(trial.config)}", flush=True)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        keys = (*self.plan.metrics, "phase", "loss_d", "loss_g", "loss_c")
        shown = [key for key in dict.fromkeys(keys) if key in result]
        values = ", ".join(f"{key} {result[key]:.4g}" for key in shown)
        print(f"trial {trial.trial_id} epoch {result.get('epoch')}: {values}", flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        epoch = int((trial.last_result or {}).get("epoch", 0))
        early = epoch < self.plan.max_epochs
        self._finish(trial, "KILLED" if early else "FINISHED")
        said = f"stopped early at epoch {epoch} ({self.plan.scheduler})" if early else "finished"
        print(f"trial {trial.trial_id} {said}", flush=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finish(trial, "FAILED")
        print(f"trial {trial.trial_id} failed (see its MLflow run and {trial.path})", flush=True)

    def _finish(self, trial, status: str) -> None:
        from pipeline import tracking
        from pipeline.training.progress import forget
        from pipeline.tuning.trial import trial_progress

        forget(trial_progress(self.plan, trial.trial_id)["key"])  # its live line ends here

        handle = self.plan.trial_run(trial.trial_id)
        if handle is not None:
            tracking.Tracker(handle).finish(status)
