"""A sweep: Ray Tune over a space file, each trial a `pipeline train` run, compared in MLflow.

    result = tune(SweepConfig(model="acgan", dataset="anime-64", samples=8, max_epochs=10))

Before anything starts, everything a user can get wrong is checked: the space file (every
fixed value and searched candidate is tried on the model), the dataset, the scheduler and
search choice, and the resources: a trial is `workers_per_trial` Ray Train workers, and as
many trials run at once as the cluster holds. Then one MLflow parent run is created for the
sweep, and the Tuner runs `pipeline.tuning.trial.run_trial` per trial (its MLflow child run
nested under the parent). At the end the parent gets the best trial, `trials.csv` and plots.

The sweep's Tune state lives in `<runs dir>/sweeps/<name>/` with `sweep.json` (this plan), so
`tune(SweepConfig(name=...), resume=True)` continues an interrupted sweep (Tuner.restore):
finished trials are not rerun and restarted ones log into their own child runs again.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from pipeline.config import ConfigError, flatten, from_dict, to_dict
from pipeline.errors import PipelineError
from pipeline.tuning.space import SCHEDULERS, SEARCHES, Space, check_values, load_space

PLAN_FILE = "sweep.json"
TRIAL_MEMORY = 256 * 2**20  # the Tune function holds no CPU (its workers do), only this
OPTUNA_HINT = "pip install 'pipeline[optuna]'"


@dataclass(frozen=True)
class SweepConfig:
    """What the user asked for; None means the space file's default."""

    model: str = ""
    dataset: str = ""
    space: str | None = None  # default: tune_spaces/<model>.yaml
    samples: int | None = None
    max_epochs: int | None = None
    scheduler: str | None = None
    search: str | None = None
    workers_per_trial: int | None = None
    gpus_per_worker: float | None = None
    concurrent: int = 0  # trials at once; 0 = as many as the cluster holds
    metric: str | None = None
    name: str | None = None
    overrides: tuple[str, ...] = ()  # --set, on every trial's config
    config_file: str | None = None
    experiment: str | None = None
    export_best: str | None = None  # folder for the best trial's generator.pt
    register: str | None = None  # MLflow registered model name for it


@dataclass
class SweepPlan:
    """The resolved sweep, saved as sweep.json: all a trial (or a resume) needs."""

    name: str
    family: str
    dataset_path: str
    dataset_name: str
    uri: str
    experiment: str
    storage: str  # Tune's storage_path: <runs dir>/sweeps
    space_file: str
    space: dict
    base: dict  # every trial's TrainConfig before its searched values
    scheduler: str
    search: str
    samples: int
    max_epochs: int
    metric: str  # as reported (fid_standin when FID runs on the stand-in backbone)
    requested_metric: str
    mode: str
    workers_per_trial: int
    concurrent: int
    trials: int  # how many trials the sweep will have in all
    overrides: list = field(default_factory=list)  # --set, for the record
    parent: dict = field(default_factory=dict)  # the MLflow parent run (RunHandle fields)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SweepPlan:
        return cls(**data)

    @property
    def folder(self) -> Path:
        return Path(self.storage) / self.name

    def parent_handle(self):
        from pipeline import tracking

        return tracking.RunHandle(**self.parent)

    def trial_config(self, params: dict[str, Any], trial_id: str):
        """The TrainConfig of one trial: the base with the trial's searched values."""
        from pipeline.training.config import load_train_config

        config = load_train_config(self.family, base=self.base, options=params)
        return replace(config, run_name=f"{self.name}-{trial_id}")


@dataclass
class TrialRow:
    trial_id: str
    run_id: str | None
    status: str  # FINISHED, KILLED (stopped early or interrupted), FAILED, PENDING
    epochs: int
    params: dict[str, Any]
    best: float | None  # the trial's best value of the metric
    best_epoch: int | None
    last: float | None
    checkpoint: str | None  # the Train checkpoint of the best epoch
    curve: list[tuple[int, float]] = field(default_factory=list)  # (epoch, metric)
    error: str | None = None


@dataclass
class SweepResult:
    name: str
    parent_run_id: str
    experiment_id: str
    tracking_uri: str
    metric: str
    mode: str
    status: str
    trials: list[TrialRow]
    best: TrialRow | None
    files: list[Path]
    folder: Path
    exported: Path | None = None
    registered: str | None = None  # "NAME version N"


def default_space(model: str) -> Path:
    """tune_spaces/<model>.yaml: in the current folder, else the one beside this package."""
    here = Path("tune_spaces") / f"{model}.yaml"
    if here.is_file():
        return here
    return Path(__file__).resolve().parents[2] / "tune_spaces" / f"{model}.yaml"


def sweeps_dir() -> Path:
    from pipeline.training.driver import runs_dir

    return runs_dir() / "sweeps"


def plan_sweep(config: SweepConfig, say: Callable[[str], None] = print) -> tuple[SweepPlan, Space]:
    """Check everything that can be checked without Ray; the plan of a new sweep."""
    from pipeline import tracking
    from pipeline.training.config import FAMILIES, load_train_config
    from pipeline.training.driver import prepare

    if config.model not in FAMILIES:
        raise ConfigError(f"unknown model {config.model!r}; choose one of: {', '.join(FAMILIES)}")
    if not config.dataset:
        raise ConfigError("no dataset: pass --data NAME (see `pipeline datasets list`)")
    space_path = Path(config.space) if config.space else default_space(config.model)
    if not space_path.is_file():
        raise ConfigError(f"space file {space_path} does not exist (see tune_spaces/)")
    space = load_space(space_path)

    scheduler = config.scheduler or space.scheduler
    search = config.search or space.search
    if scheduler not in SCHEDULERS:
        raise ConfigError(f"--scheduler {scheduler!r}: choose one of: {', '.join(SCHEDULERS)}")
    if search not in SEARCHES:
        raise ConfigError(f"--search {search!r}: choose one of: {', '.join(SEARCHES)}")
    samples = config.samples if config.samples is not None else space.samples
    max_epochs = config.max_epochs if config.max_epochs is not None else space.max_epochs
    workers = config.workers_per_trial or space.workers_per_trial
    for option, value in (("--samples", samples), ("--max-epochs", max_epochs),
                          ("--workers-per-trial", workers)):  # fmt: skip
        if value < 1:
            raise ConfigError(f"{option} {value} must be at least 1")
    if config.concurrent < 0:
        raise ConfigError(f"--concurrent {config.concurrent} must be >= 0 (0 = as many as fit)")
    _check_search(space, search, scheduler)

    # Every trial's config: preset <- --config <- the space's fixed values <- --set <- options.
    if config.name is not None and not re.fullmatch(r"[A-Za-z0-9][\w.-]*", config.name):
        raise ConfigError(
            f"--name {config.name!r}: use letters, digits, '-', '_' and '.' (it names a folder)"
        )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = config.name or f"{config.model}-{Path(config.dataset).name}-{stamp}"
    fixed = load_train_config(config.model, config.config_file, options=space.fixed)
    options = {
        "data.dataset": config.dataset,
        "epochs": max_epochs,
        "workers": workers,
        "gpus_per_worker": config.gpus_per_worker,
        "experiment": config.experiment,
        "run_name": name,
    }
    base = load_train_config(
        config.model, base=to_dict(fixed), overrides=list(config.overrides), options=options
    )
    if scheduler == "pbt" and base.optim.schedule == "linear":
        raise ConfigError(
            "PBT trains in segments and optim.schedule=linear decays over each one; use "
            "constant or step with --scheduler pbt"
        )
    dataset_path, manifest = prepare(base)

    def build(values: dict) -> None:
        from pipeline.models import check_config

        trial = load_train_config(config.model, base=to_dict(base), options=values)
        check_config(trial.model, trial.loss, image_size=manifest["image"]["height"])

    # The --set values win over the fixed ones, so the space's values are tried on the base.
    check_values(replace(space, fixed={}), build)

    requested = config.metric or space.metric
    metric, base = _metric(requested, base, manifest, say)
    grid = math.prod(len(p.values) for p in space.params if _is_grid(p, search))
    experiment = base.experiment or tracking.default_experiment(manifest["name"], config.model)
    plan = SweepPlan(
        name=name,
        family=config.model,
        dataset_path=str(dataset_path),
        dataset_name=manifest["name"],
        uri=tracking.tracking_uri(),
        experiment=experiment,
        storage=str(sweeps_dir()),
        space_file=str(space_path.resolve()),
        space=space.to_dict(),
        base=to_dict(base),
        scheduler=scheduler,
        search=search,
        samples=samples,
        max_epochs=max_epochs,
        metric=metric,
        requested_metric=requested,
        mode=space.mode,
        workers_per_trial=workers,
        concurrent=config.concurrent,
        trials=samples * grid,
        overrides=list(config.overrides),
    )
    return plan, space


def tune(
    config: SweepConfig, resume: bool = False, say: Callable[[str], None] = print
) -> SweepResult:
    """Run a new sweep, or with `resume`, continue sweep `config.name`; returns its summary."""
    from pipeline import tracking
    from pipeline.training.config import TrainConfig
    from pipeline.training.driver import _start_ray, precompute_fid_reference

    if resume:
        _check_resume_options(config)
        plan, space = load_plan(config.name), None  # the Tuner keeps the space itself
    else:
        plan, space = plan_sweep(config, say)
        if plan.folder.exists():
            raise PipelineError(
                f"sweep {plan.name} already exists in {plan.storage}: continue it with "
                f"`pipeline tune --resume --name {plan.name}`, or choose another --name"
            )
    base = from_dict(TrainConfig, plan.base)
    if not os.environ.get("RAY_ADDRESS"):
        _check_local_resources(base, plan.concurrent)  # before Ray starts
    precompute_fid_reference(base, Path(plan.dataset_path), say)  # once, not in each trial
    _start_ray()
    plan.concurrent = _concurrency(base, plan.concurrent)

    tracking.prepare_store(plan.uri)
    if resume:
        parent = plan.parent_handle()
        tracking.reopen_run(parent)
    else:
        parent = tracking.start_run(
            plan.uri,
            plan.experiment,
            plan.name,
            params=_parent_params(plan, space),
            tags={
                "pipeline.sweep": plan.name,
                "pipeline.kind": "sweep",
                "pipeline.dataset": plan.dataset_name,
                "pipeline.family": plan.family,
                "pipeline.metric": plan.metric,
            },
        )
        plan.parent = parent.to_dict()
        tracker = tracking.Tracker(parent)
        tracker.log_artifact(plan.space_file, "space")
        tracker.log_dict(plan.to_dict(), PLAN_FILE)
    if plan.metric != plan.requested_metric:
        say(f"ranking trials by {plan.metric}: no Inception weights, FID runs on the stand-in")
    say(
        f"sweep {plan.name}: {plan.trials} trial(s) of {plan.family} on {plan.dataset_name}, "
        f"{plan.scheduler} + {plan.search} search, {plan.max_epochs} epoch(s) each, "
        f"{plan.concurrent} at a time x {plan.workers_per_trial} worker(s); MLflow parent run "
        f"{parent.run_id} in {plan.uri}"
    )

    # Reports without the metric are normal (FID every few epochs; ASHA and PBT skip them),
    # but Tune refuses them unless told.
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    status = "FAILED"
    try:
        tuner = _tuner(plan, space, resume)
        if not resume:
            plan.folder.mkdir(parents=True, exist_ok=True)
            _write_plan(plan)
        try:
            grid = tuner.fit()
        except Exception as exc:  # Tune's own failure (not a trial's): one line, not pages
            raise PipelineError(f"sweep {plan.name} failed in Ray Tune: {_one_line(exc)}") from exc
        rows = _rows(plan, grid)
        done = sum(row.status in ("FINISHED", "KILLED", "FAILED") for row in rows)
        interrupted = done < plan.trials
        ranked = [row for row in rows if row.best is not None]
        status = "KILLED" if interrupted else ("FINISHED" if ranked else "FAILED")
        for row in rows:  # cut short by the interruption; a resume reopens them
            if interrupted and row.status == "RUNNING" and row.run_id:
                tracking.Tracker(tracking.find_run(plan.uri, row.run_id)).finish("KILLED")
                row.status = "KILLED"
        result = _summarise(plan, rows, status)
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        tracking.Tracker(parent).finish(status)
    if interrupted:
        raise PipelineError(
            f"sweep {plan.name} interrupted with {done} of {plan.trials} trial(s) done; "
            f"continue it with `pipeline tune --resume --name {plan.name}`"
        )
    if not ranked:
        first = next((row.error for row in rows if row.error), "no trial reported the metric")
        raise PipelineError(
            f"sweep {plan.name}: no trial reported {plan.metric} ({first}); the MLflow parent "
            f"run {parent.run_id} is marked FAILED"
        )
    if config.export_best or config.register:
        _export(plan, result, config.export_best, config.register)
    return result


def _check_resume_options(config: SweepConfig) -> None:
    """A resumed sweep runs as it was planned: options that would change it are refused."""
    keep = ("model", "name", "export_best", "register")  # MODEL may be repeated, harmlessly
    defaults = SweepConfig()
    options = {"overrides": "--set", "config_file": "--config", "dataset": "--data"}
    changed = [
        options.get(name, "--" + name.replace("_", "-"))
        for name in SweepConfig.__dataclass_fields__
        if name not in keep and getattr(config, name) != getattr(defaults, name)
    ]
    if changed:
        raise ConfigError(
            f"--resume continues sweep {config.name} as it was planned; drop "
            f"{', '.join(changed)} (or start a new sweep under another --name)"
        )


def load_plan(name: str | None) -> SweepPlan:
    """The plan of an existing sweep, for --resume; a clear error when there is none."""
    if not name:
        raise ConfigError("--resume needs --name SWEEP (the sweep to continue)")
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*", name):
        raise ConfigError(f"--name {name!r} is not a sweep name (letters, digits, '-', '_', '.')")
    folder = sweeps_dir() / name
    file = folder / PLAN_FILE
    if not file.is_file():
        known = sorted(p.parent.name for p in sweeps_dir().glob(f"*/{PLAN_FILE}"))
        listed = f"; sweeps there: {', '.join(known)}" if known else ""
        raise PipelineError(f"no sweep named {name} in {sweeps_dir()}{listed}")
    return SweepPlan.from_dict(json.loads(file.read_text()))


# ---------------------------------------------------------------------------------------------
# Checks and sizes.


def _check_search(space: Space, search: str, scheduler: str) -> None:
    if search == "grid":
        ranges = [p.key for p in space.params if p.kind not in ("choice", "grid")]
        if ranges:
            raise ConfigError(
                f"--search grid needs listed values, but {space.file} searches {ranges[0]} "
                f"over a range ({space.param(ranges[0]).kind}); give it grid: [...] or use "
                "--search random"
            )
    if search == "optuna":
        grids = [p.key for p in space.params if p.kind == "grid"]
        if grids:
            raise ConfigError(
                f"--search optuna samples every key; {space.file} has {grids[0]} as a grid "
                "(use choice)"
            )
        if scheduler == "pbt":
            raise ConfigError("--scheduler pbt breeds its own population; use --search random")
        try:
            import optuna  # noqa: F401
        except ImportError:
            raise PipelineError(
                f"--search optuna needs the optuna package, which is not installed: "
                f"{OPTUNA_HINT} (or use --search random)"
            ) from None


def _is_grid(param, search: str) -> bool:
    return param.kind == "grid" or (search == "grid" and param.kind == "choice")


def _metric(requested: str, base, manifest: dict, say) -> tuple[str, Any]:
    """The metric name trials report: FID and KID are `*_standin` on the stand-in backbone.
    Resolves the FID weights once, here, so the trials need not."""
    if requested not in ("fid", "kid"):
        return requested, base
    if not base.fid.every:
        raise ConfigError(
            f"--metric {requested} needs FID during training: set fid.every >= 1 (under fixed: "
            "in the space file, or --set fid.every=1)"
        )
    from pipeline.metrics.config import metric_name
    from pipeline.training.driver import prepare_fid

    base, backbone = prepare_fid(base, manifest, say=say)
    return metric_name(requested, backbone.standin), base


def _trial_needs(config) -> tuple[float, float]:
    return config.workers * config.cpus_per_worker, config.workers * config.gpus_per_worker


def _check_local_resources(config, concurrent: int) -> None:
    """This machine, before a local Ray starts: a trial that cannot fit is refused now."""
    import torch

    cpu, gpu = _trial_needs(config)
    _fit_count(cpu, gpu, os.cpu_count() or 1, torch.cuda.device_count(), "this machine",
               concurrent)  # fmt: skip


def _concurrency(config, asked: int) -> int:
    """How many trials run at once: as many as the Ray cluster holds, or `asked` if it fits."""
    import ray

    have = ray.cluster_resources()
    cpu, gpu = _trial_needs(config)
    return _fit_count(cpu, gpu, have.get("CPU", 0), have.get("GPU", 0), "the Ray cluster", asked)


def _fit_count(cpu, gpu, have_cpu, have_gpu, where: str, asked: int) -> int:
    what = f"a trial needs {cpu:g} CPU" + (f" and {gpu:g} GPU" if gpu else "")
    fits = int(have_cpu // cpu) if cpu else 10**6
    if gpu:
        fits = min(fits, int(have_gpu // gpu))
    if fits < 1:
        raise PipelineError(
            f"{what} (workers x cpus_per_worker, gpus_per_worker), {where} has {have_cpu:g} "
            f"CPU and {have_gpu:g} GPU; lower --workers-per-trial, --gpus-per-worker or "
            "--set cpus_per_worker=..."
        )
    if asked > fits:
        raise PipelineError(
            f"--concurrent {asked}: {what}, so {where} ({have_cpu:g} CPU, {have_gpu:g} GPU) "
            f"holds {fits} at a time; lower --concurrent (0 = as many as fit)"
        )
    return asked or fits


# ---------------------------------------------------------------------------------------------
# Ray Tune.


def _tuner(plan: SweepPlan, space: Space, resume: bool):
    from ray import tune

    from pipeline.tuning.callbacks import TrialStatus
    from pipeline.tuning.trial import run_trial

    trainable = tune.with_resources(
        tune.with_parameters(run_trial, plan=plan.to_dict()),
        {"cpu": 0, "memory": TRIAL_MEMORY},
    )
    path = plan.folder
    if resume:
        if not tune.Tuner.can_restore(str(path)):
            raise PipelineError(
                f"sweep {plan.name} in {plan.storage} has no Tune state to continue from (it "
                "stopped before its first trial); start it again under a new --name"
            )
        return tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True)
    return tune.Tuner(
        trainable,
        param_space=ray_space(space, plan.search),
        tune_config=tune.TuneConfig(
            metric=plan.metric,
            mode=plan.mode,
            scheduler=_scheduler(plan, space),
            search_alg=_searcher(plan),
            num_samples=plan.samples,
            max_concurrent_trials=plan.concurrent,
            trial_dirname_creator=_trial_dirname,
            reuse_actors=False,
        ),
        run_config=tune.RunConfig(
            name=plan.name,
            storage_path=plan.storage,
            callbacks=[TrialStatus(plan.to_dict())],
            # PBT: a trial's last segment is its end. Without this, PBT may perturb on the
            # final report too and restart trials that have nothing left to train.
            stop={"epoch": plan.max_epochs} if plan.scheduler == "pbt" else None,
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=0),
        ),
    )


def ray_space(space: Space, search: str) -> dict:
    """The space as Ray Tune domains, keyed by dotted config keys."""
    from ray import tune

    out = {}
    for p in space.params:
        if _is_grid(p, search):
            out[p.key] = tune.grid_search(list(p.values))
        elif p.kind == "choice":
            out[p.key] = tune.choice(list(p.values))
        elif p.kind == "uniform":
            out[p.key] = tune.uniform(*p.values)
        elif p.kind == "loguniform":
            out[p.key] = tune.loguniform(*p.values)
        elif p.kind == "randint":
            out[p.key] = tune.randint(*p.values)
    return out


def _scheduler(plan: SweepPlan, space: Space):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining

    if plan.scheduler == "asha":
        # max_t one past the budget: with max_t equal to the last epoch ASHA "stops" every
        # trial at its final report, and finished trials would look early-stopped (notes).
        return ASHAScheduler(
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
        ray = ray_space(space, "random")
        return PopulationBasedTraining(
            time_attr="epoch",
            perturbation_interval=space.perturbation_interval,
            quantile_fraction=space.quantile_fraction,
            synch=space.synch,
            hyperparam_mutations={key: ray[key] for key in mutate},
        )
    return FIFOScheduler()


def _searcher(plan: SweepPlan):
    if plan.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch()
    return None  # random sampling and grid values: Tune's own variant generator


def _trial_dirname(trial) -> str:
    return f"trial-{trial.trial_id}"


# ---------------------------------------------------------------------------------------------
# The summary: rows, the parent's table and plots, the best trial.


def _rows(plan: SweepPlan, grid) -> list[TrialRow]:
    from pipeline import tracking

    rows = []
    for result in grid:
        frame = result.metrics_dataframe
        metrics = dict(result.metrics or {})
        trial_id = metrics.get("trial_id") or Path(result.path).name.removeprefix("trial-")
        handle = tracking.find_run_by_tags(
            plan.uri,
            plan.experiment,
            {"ray.trial_id": trial_id, "pipeline.sweep": plan.name},
            parent_run_id=plan.parent["run_id"],
        )
        curve, checkpoints = [], {}
        if frame is not None and plan.metric in frame:
            for _, record in frame.iterrows():
                value = record.get(plan.metric)
                if value is not None and not math.isnan(value):
                    epoch = int(record["epoch"])
                    curve.append((epoch, float(value)))
                    checkpoints[epoch] = record.get("checkpoint_path")
        best = None
        if curve:
            pick = min if plan.mode == "min" else max
            best = pick(curve, key=lambda point: point[1])
        if handle is not None:
            status = tracking.run_status(plan.uri, handle.run_id)
        else:  # never got as far as its MLflow run
            status = "FAILED" if result.error else "PENDING"
        rows.append(
            TrialRow(
                trial_id=trial_id,
                run_id=handle.run_id if handle else None,
                status=status,
                epochs=int(metrics.get("epoch", 0) or 0),
                params=dict(result.config or {}),
                best=best[1] if best else None,
                best_epoch=best[0] if best else None,
                last=curve[-1][1] if curve else None,
                checkpoint=checkpoints.get(best[0]) if best else None,
                curve=curve,
                error=_one_line(result.error) if result.error else None,
            )
        )
    return rows


def _summarise(plan: SweepPlan, rows: list[TrialRow], status: str) -> SweepResult:
    from pipeline import tracking
    from pipeline.tuning.report import write_csv, write_plots

    ranked = sorted(
        (row for row in rows if row.best is not None),
        key=lambda row: row.best if plan.mode == "min" else -row.best,
    )
    best = ranked[0] if ranked else None
    out = plan.folder / "summary"
    out.mkdir(parents=True, exist_ok=True)
    files = [write_csv(out / "trials.csv", rows, plan.metric)]
    files += write_plots(out / "plots", rows, plan.metric, plan.space)
    parent = plan.parent_handle()
    tracker = tracking.Tracker(parent)
    tracker.log_artifact(files[0])
    tracker.log_artifact(out / "plots", "plots")
    for row in rows:  # each trial's best checkpoint, in its own child run
        if row.run_id and row.checkpoint and Path(row.checkpoint).exists():
            child = tracking.Tracker(tracking.find_run(plan.uri, row.run_id))
            child.log_artifact(Path(row.checkpoint) / "checkpoint.pt", "best")
            child.set_tags({"pipeline.best_epoch": row.best_epoch})
    if best is not None:
        tracker.set_tags({
            "pipeline.best_trial": best.trial_id,
            "pipeline.best_run_id": best.run_id,
        })  # fmt: skip
        tracker.log_metrics({f"best_{plan.metric}": best.best}, step=0)
        if best.run_id:
            tracking.Tracker(tracking.find_run(plan.uri, best.run_id)).set_tags(
                {"pipeline.best": "true"}
            )
    return SweepResult(
        name=plan.name,
        parent_run_id=parent.run_id,
        experiment_id=parent.experiment_id,
        tracking_uri=plan.uri,
        metric=plan.metric,
        mode=plan.mode,
        status=status,
        trials=ranked + [row for row in rows if row.best is None],
        best=best,
        files=files,
        folder=plan.folder,
    )


def _export(plan: SweepPlan, result: SweepResult, folder: str | None, name: str | None) -> None:
    """The best trial's generator (G_ema of its best epoch): to a folder, to the registry."""
    import tempfile

    from pipeline import tracking
    from pipeline.training import checkpoint as ckpt

    best = result.best
    if best is None or not best.checkpoint:
        raise PipelineError(f"sweep {plan.name}: the best trial left no checkpoint to export")
    state = ckpt.load(Path(best.checkpoint))
    if folder:
        result.exported = ckpt.save_generator(
            state, Path(folder).expanduser() / ckpt.GENERATOR_FILE
        )
    if name:
        handle = tracking.find_run(plan.uri, best.run_id)
        with tempfile.TemporaryDirectory() as tmp:
            tracking.Tracker(handle).log_artifact(
                ckpt.save_generator(state, Path(tmp) / ckpt.GENERATOR_FILE), "best"
            )
        version = tracking.register_model(handle, "best", name)
        result.registered = f"{name} version {version}"


def _parent_params(plan: SweepPlan, space: Space) -> dict:
    params = {
        "sweep.scheduler": plan.scheduler,
        "sweep.search": plan.search,
        "sweep.samples": plan.samples,
        "sweep.trials": plan.trials,
        "sweep.max_epochs": plan.max_epochs,
        "sweep.metric": plan.metric,
        "sweep.mode": plan.mode,
        "sweep.workers_per_trial": plan.workers_per_trial,
        "sweep.concurrent": plan.concurrent,
        "sweep.space_file": plan.space_file,
        "dataset": plan.dataset_name,
        "family": plan.family,
    }
    if plan.scheduler == "asha":
        params.update({"asha.grace_period": space.grace_period,
                       "asha.reduction_factor": space.reduction_factor})  # fmt: skip
    if plan.scheduler == "pbt":
        params.update({"pbt.perturbation_interval": space.perturbation_interval,
                       "pbt.mutate": list(space.mutate)})  # fmt: skip
    params.update({f"space.{p.key}": p.describe() for p in space.params})
    resolved = flatten(plan.base)  # the values in force: --set wins over the space's fixed
    params.update({f"fixed.{key}": resolved.get(key, value) for key, value in space.fixed.items()})
    if plan.overrides:
        params["sweep.set"] = plan.overrides
    return params


def _write_plan(plan: SweepPlan) -> None:
    file = plan.folder / PLAN_FILE
    tmp = file.with_name(f".{file.name}.tmp")
    tmp.write_text(json.dumps(plan.to_dict(), indent=2))
    os.replace(tmp, file)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300]
