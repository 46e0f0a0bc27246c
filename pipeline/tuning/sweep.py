"""A sweep: Ray Tune over a space file, each trial a `pipeline train` run, compared in MLflow.

    result = tune(SweepConfig(model="acgan", dataset="anime-64", samples=8, max_epochs=10))

`tune()` runs the parts in order: the plan (`plan.py`: every input checked before anything
starts), the resources (`pipeline.cluster`: a trial is `workers_per_trial` Ray Train workers,
and as many trials run at once as the cluster holds), the MLflow parent run, the Tuner
(`tuner.py`, one `trial.run_trial` per trial, its MLflow child run nested under the parent),
and at the end the summary (`summary.py`: the best trial, `trials.csv` and plots).

The sweep's Tune state lives in `<runs dir>/sweeps/<name>/` with `sweep.json` (the plan), so
`tune(SweepConfig(name=...), resume=True)` continues an interrupted sweep (Tuner.restore):
finished trials are not rerun and restarted ones log into their own child runs again.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace

from pipeline.config import from_dict
from pipeline.errors import PipelineError, one_line
from pipeline.settings import runs_root, verbose
from pipeline.storage import check_location
from pipeline.tuning.plan import (
    SweepConfig,
    check_resume_options,
    load_plan,
    plan_at,
    plan_sweep,
    write_plan,
)
from pipeline.tuning.summary import (
    SweepResult,
    export_best,
    finish_interrupted,
    reported_metrics,
    start_parent,
    summarise,
    trial_rows,
)


def tune(
    config: SweepConfig, resume: bool = False, say: Callable[[str], None] = print
) -> SweepResult:
    """Run a new sweep, or with `resume`, continue sweep `config.name`; returns its summary."""
    from pipeline import cluster, tracking
    from pipeline.training.config import TrainConfig
    from pipeline.training.driver import is_solo, precompute_fid_reference
    from pipeline.training.progress import ProgressView
    from pipeline.tuning.trial import trial_progress
    from pipeline.tuning.tuner import build_tuner

    check_location(runs_root())  # a bucket that is not there: one line, before anything
    # The plan: a new one, or the saved one of the sweep to continue.
    if resume:
        check_resume_options(config)
        plan, space = load_plan(config.name), None  # the Tuner keeps the space itself
    else:
        plan, space = plan_sweep(config, say)
        if plan_at(plan.folder) is not None:
            raise PipelineError(
                f"sweep {plan.name} already exists in {plan.storage}: continue it with "
                f"`pipeline tune --resume --name {plan.name}`, or choose another --name"
            )

    # Resources: a trial that cannot fit is refused before Ray starts, then sized to Ray.
    base = from_dict(TrainConfig, plan.base)
    if cluster.is_local():
        cluster.trials_at_once(base, plan.concurrent, cluster.local_resources())
    precompute_fid_reference(base, plan.dataset_path, say)  # once, not in each trial
    cluster.start_ray(dashboard=not is_solo(base))
    concurrent = cluster.trials_at_once(base, plan.concurrent, cluster.ray_resources())
    cluster.check_locations(plan.dataset_path, plan.storage, plan.uri)
    plan = replace(plan, concurrent=concurrent)

    # The MLflow parent run: reopened, or created with the space and the plan.
    tracking.prepare_store(plan.uri)
    if resume:
        from pipeline.tracking.delivery import deliver_kept

        tracking.reopen_run(plan.parent_handle())
        deliver_kept(plan.uri, plan.parent_handle().run_id, say)  # what an outage left here
    else:
        plan = start_parent(plan, space)
    parent = plan.parent_handle()
    renamed = [o["metric"] for o in plan.objectives if o["metric"] != o["requested"]]
    if renamed or plan.metric != plan.requested_metric:
        ranked_by = " and ".join(plan.metrics)
        say(f"ranking trials by {ranked_by}: no Inception weights, FID runs on the stand-in")
    say(
        f"sweep {plan.name}: {plan.trials} trial(s) of {plan.family} on {plan.dataset_name}, "
        f"{plan.scheduler} + {plan.search} search, {plan.max_epochs} epoch(s) each, "
        f"{plan.concurrent} at a time x {plan.workers_per_trial} worker(s); MLflow parent run "
        f"{parent.run_id} in {plan.uri}"
    )

    if len(plan.metrics) > 1:
        say(objectives_line(plan))

    # The trials. Reports without the metric are normal (FID every few epochs; ASHA and PBT
    # skip them), but Tune refuses them unless told.
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    if not verbose():
        # Tune's new console output prints a configuration box and a TensorBoard hint even at
        # verbose=0 (this pipeline logs to MLflow); its legacy output at verbose=0 is silent.
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    status = "FAILED"
    try:
        tuner = build_tuner(plan, space, resume)
        if not resume:
            write_plan(plan)
        try:
            # A live line per running trial (the callback prints each trial's epochs).
            with ProgressView(trial_progress(plan, "")["key"], each_epoch=False):
                results = tuner.fit()
        except Exception as exc:  # Tune's own failure (not a trial's): one line, not pages
            raise PipelineError(f"sweep {plan.name} failed in Ray Tune: {one_line(exc)}") from exc

        # The summary: every trial's row, the parent's table and plots, the best trial.
        rows = trial_rows(plan, results)
        done = sum(row.status in ("FINISHED", "KILLED", "FAILED") for row in rows)
        interrupted = done < plan.trials
        ranked = [row for row in rows if row.best is not None]
        status = "KILLED" if interrupted else ("FINISHED" if ranked else "FAILED")
        if interrupted:
            finish_interrupted(plan, rows)
        result = summarise(plan, rows, status)
        for note in result.notes:
            say(note)
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        tracking.Tracker(parent).finish(status)
        tracking.deliver_all()  # the trials' tags and best checkpoints the summary logged
    if interrupted:
        raise PipelineError(
            f"sweep {plan.name} interrupted with {done} of {plan.trials} trial(s) done; "
            f"continue it with `pipeline tune --resume --name {plan.name}`"
        )
    if not ranked:
        first = next(
            (row.error for row in rows if row.error), f"they report: {reported_metrics(rows)}"
        )
        raise PipelineError(
            f"sweep {plan.name}: no trial reported {plan.metric} ({first}); the MLflow parent "
            f"run {parent.run_id} is marked FAILED"
        )
    if config.export_best or config.register:
        export_best(plan, result, config.export_best, config.register)
    return result


def objectives_line(plan) -> str:
    """What a sweep on two objectives does with them, in one line as it starts."""
    first, second = plan.metrics
    said = []
    if plan.search == "optuna":
        said.append(f"optuna searches {first} and {second} together (multi-objective)")
    if plan.scheduler in ("asha", "pbt"):
        verb = "stops trials" if plan.scheduler == "asha" else "exploits trials"
        said.append(f"{plan.scheduler} {verb} by {first} alone (the first objective)")
    said.append(f"the Pareto front of {first} and {second} is found at the end (pareto.csv)")
    return "; ".join(said)
