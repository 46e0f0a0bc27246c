"""The Ray Tune objects of a sweep: search-space domains, scheduler, searcher, the Tuner.

    tuner = build_tuner(plan, space, resume=False)   # then tuner.fit()

Each trial is `pipeline.tuning.trial.run_trial`, given the plan; the driver's callback
`pipeline.tuning.callbacks.TrialStatus` prints progress and ends each trial's MLflow run.
Ray is imported inside functions, so reading a plan (`--dry-run`) never loads it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipeline.config import ConfigError
from pipeline.errors import PipelineError
from pipeline.tuning.plan import SweepPlan, is_grid
from pipeline.tuning.space import Space

TRIAL_MEMORY = 256 * 2**20  # a Tune function whose workers hold the CPUs holds only this

# A space file's distribution -> its Ray Tune domain, from `ray.tune` and the file's values:
# a list of candidates (choice, grid) or a range (low, high).
DOMAINS: dict[str, Callable[[Any, tuple], Any]] = {
    "choice": lambda ray_tune, values: ray_tune.choice(list(values)),
    "grid": lambda ray_tune, values: ray_tune.grid_search(list(values)),
    "uniform": lambda ray_tune, values: ray_tune.uniform(*values),
    "loguniform": lambda ray_tune, values: ray_tune.loguniform(*values),
    "randint": lambda ray_tune, values: ray_tune.randint(*values),
}


def ray_space(space: Space, search: str) -> dict:
    """The space as Ray Tune domains, keyed by dotted config keys; a choice is a grid under
    grid search."""
    from ray import tune as ray_tune

    out = {}
    for p in space.params:
        kind = "grid" if is_grid(p, search) else p.kind
        if kind not in DOMAINS:
            raise ConfigError(
                f"{space.file}: search.{p.key}: unknown distribution {kind!r}; choose one of: "
                f"{', '.join(DOMAINS)}"
            )
        out[p.key] = DOMAINS[kind](ray_tune, p.values)
    return out


def build_tuner(plan: SweepPlan, space: Space | None, resume: bool):
    """A new sweep's Tuner, or with `resume` the Tuner restored from the sweep's folder (it
    keeps the space, scheduler and searcher it was built with)."""
    from ray import tune as ray_tune

    from pipeline.settings import verbose
    from pipeline.tuning.callbacks import TrialStatus
    from pipeline.tuning.trial import run_trial
    from pipeline.waiting_fs import ray_storage

    trainable = ray_tune.with_resources(
        ray_tune.with_parameters(run_trial, plan=plan), trial_resources(plan)
    )
    # In a bucket, Tune's state and the trials' checkpoints wait out an outage of the store.
    where = ray_storage(plan.storage)
    path = ray_storage(plan.folder)
    if resume:
        if not ray_tune.Tuner.can_restore(
            path["storage_path"], storage_filesystem=path.get("storage_filesystem")
        ):
            raise PipelineError(
                f"sweep {plan.name} in {plan.storage} has no Tune state to continue from (it "
                "stopped before its first trial); start it again under a new --name"
            )
        return ray_tune.Tuner.restore(
            path["storage_path"],
            trainable=trainable,
            resume_unfinished=True,
            storage_filesystem=path.get("storage_filesystem"),
        )
    return ray_tune.Tuner(
        trainable,
        param_space=ray_space(space, plan.search),
        # No metric here: the scheduler and the searcher get their own. Optuna's
        # multi-objective search takes the list of objectives, and a TuneConfig metric would
        # replace it with one (OptunaSearch.set_search_properties); ASHA and PBT take the first.
        tune_config=ray_tune.TuneConfig(
            scheduler=scheduler(plan, space),
            search_alg=searcher(plan),
            num_samples=plan.samples,
            max_concurrent_trials=plan.concurrent,
            trial_dirname_creator=_trial_dirname,
            reuse_actors=False,
        ),
        run_config=ray_tune.RunConfig(
            name=plan.name,
            **where,
            callbacks=[TrialStatus(plan)],
            # PBT: a trial's last segment is its end. Without this, PBT may perturb on the
            # final report too and restart trials that have nothing left to train.
            stop={"epoch": plan.max_epochs} if plan.scheduler == "pbt" else None,
            verbose=1 if verbose() else 0,
            failure_config=ray_tune.FailureConfig(max_failures=0),
        ),
    )


def trial_resources(plan: SweepPlan) -> dict:
    """What Tune reserves for a trial's function. A trial of one worker trains in it (solo:
    pipeline.training.solo), so it holds the worker's CPUs and GPUs; a trial on Ray Train
    holds none (its workers do), only a little memory: `{"cpu": 0}` alone is refused."""
    from pipeline.config import from_dict
    from pipeline.training.config import TrainConfig
    from pipeline.training.driver import is_solo

    base = from_dict(TrainConfig, plan.base)
    if is_solo(base):
        return {"cpu": base.cpus_per_worker, "gpu": base.gpus_per_worker}
    return {"cpu": 0, "memory": TRIAL_MEMORY}


def scheduler(plan: SweepPlan, space: Space):
    """ASHA, PBT or FIFO, with the space file's settings. ASHA and PBT compare trials by the
    first objective alone (a rung or a perturbation needs one order)."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining

    if plan.scheduler == "asha":
        # max_t one past the budget: with max_t equal to the last epoch, ASHA stops every
        # trial at its final report, and finished trials would look stopped early.
        return ASHAScheduler(
            metric=plan.metric,
            mode=plan.mode,
            time_attr="epoch",
            max_t=plan.max_epochs + 1,
            grace_period=min(space.grace_period, plan.max_epochs),
            reduction_factor=space.reduction_factor,
        )
    if plan.scheduler == "pbt":
        mutate = space.mutate or tuple(
            p.key for p in space.params if p.kind in ("uniform", "loguniform")
        )
        if not mutate:
            raise ConfigError(f"{space.file}: pbt.mutate: no key to mutate; list searched keys")
        domains = ray_space(space, "random")
        return PopulationBasedTraining(
            metric=plan.metric,
            mode=plan.mode,
            time_attr="epoch",
            perturbation_interval=space.perturbation_interval,
            quantile_fraction=space.quantile_fraction,
            synch=space.synch,
            hyperparam_mutations={key: domains[key] for key in mutate},
        )
    return FIFOScheduler()


def searcher(plan: SweepPlan):
    """Optuna's searcher, or None: random sampling and grid values are Tune's own. With two
    objectives Optuna searches for their Pareto front (a multi-objective study: TPE, told
    both values of each trial's last report)."""
    if plan.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        if len(plan.metrics) > 1:
            return OptunaSearch(metric=list(plan.metrics), mode=list(plan.modes))
        return OptunaSearch(metric=plan.metric, mode=plan.mode)
    return None


def _trial_dirname(trial) -> str:
    return f"trial-{trial.trial_id}"
