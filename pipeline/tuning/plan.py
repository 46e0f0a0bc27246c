"""A sweep's plan: the space file and the command's options, checked and resolved into a
frozen `SweepPlan`, saved as `sweep.json` in the sweep's folder (no Ray here).

    plan, space = plan_sweep(SweepConfig(model="acgan", dataset="anime-64", samples=8))

Everything a user can get wrong is checked before anything starts: the model, the dataset, the
space file (every fixed value and searched candidate is tried on the model), the scheduler
and search choice. The plan holds all a trial, the driver's callback or a `--resume` needs;
what is learnt later (the concurrency the cluster holds, the MLflow parent run) makes a new
plan with `dataclasses.replace`.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from pipeline.config import ConfigError, to_dict
from pipeline.errors import PipelineError
from pipeline.tuning.space import (
    SCHEDULERS,
    SEARCHES,
    Space,
    check_values,
    load_space,
    options_objectives,
)

PLAN_FILE = "sweep.json"
OPTUNA_HINT = "pip install 'pipeline[optuna]'"
NAME = r"[A-Za-z0-9][\w.-]*"  # a sweep's name names its folder


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
    metric: str | None = None  # one metric, or two separated by a comma (a Pareto front)
    mode: str | None = None  # min or max, one per metric ("min,max")
    name: str | None = None
    overrides: tuple[str, ...] = ()  # --set, on every trial's config
    config_file: str | None = None
    experiment: str | None = None
    export_best: str | None = None  # folder for the best trial's generator.pt
    register: str | None = None  # MLflow registered model name for it


@dataclass(frozen=True)
class SweepPlan:
    """The resolved sweep, saved as sweep.json: all a trial (or a resume) needs. Plain fields
    only: Tune pickles it with the callback and hands it to every trial."""

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
    # The first objective as reported (fid_standin when FID runs on the stand-in backbone)
    # and as asked: the schedulers and the best trial go by it.
    metric: str
    requested_metric: str
    mode: str
    workers_per_trial: int
    concurrent: int
    trials: int  # how many trials the sweep will have in all
    overrides: list = field(default_factory=list)  # --set, for the record
    parent: dict = field(default_factory=dict)  # the MLflow parent run (RunHandle fields)
    # Every objective, {"metric": as reported, "requested": as asked, "mode": min|max}; with
    # two, the sweep also finds their Pareto front. Empty in a plan from before objectives.
    objectives: list = field(default_factory=list)

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(o["metric"] for o in self.objectives) or (self.metric,)

    @property
    def modes(self) -> tuple[str, ...]:
        return tuple(o["mode"] for o in self.objectives) or (self.mode,)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SweepPlan:
        return cls(**data)

    @property
    def folder(self) -> str:
        """The sweep's Tune state: a folder, or a URI when PIPELINE_RUNS is one."""
        from pipeline.storage import join

        return join(self.storage, self.name)

    @property
    def parent_run_id(self) -> str:
        return self.parent["run_id"]

    def parent_handle(self):
        from pipeline import tracking

        return tracking.RunHandle(**self.parent)

    def trial_config(self, params: dict[str, Any], trial_id: str):
        """The TrainConfig of one trial: the base with the trial's searched values."""
        from pipeline.training.config import load_train_config

        config = load_train_config(self.family, base=self.base, options=params)
        return replace(config, run_name=f"{self.name}-{trial_id}")

    def trial_run(self, trial_id: str):
        """The trial's MLflow child run, or None: as the trial recorded it beside the sweep's
        state (`record_trial_run`), so the driver can end a trial's run while MLflow is away;
        else (a sweep from before that record) searched for in MLflow under the parent."""
        from pipeline import tracking
        from pipeline.tracking.delivery import quick_http, transient

        recorded = _read_json(self.folder, _trial_file(trial_id))
        if recorded is not None:
            return self._checked_run(recorded, trial_id)
        try:
            with quick_http(self.uri):
                return tracking.find_trial_run(
                    self.uri, self.experiment, self.name, self.parent_run_id, trial_id
                )
        except PipelineError as error:  # the server away: as good as no run yet
            if error.__cause__ is not None and transient(error.__cause__):
                return None
            raise

    def record_trial_run(self, trial_id: str, handle) -> None:
        """Keep the trial's run (its RunHandle fields) in `<sweep>/trials/<trial_id>.json`."""
        _write_json(self.folder, _trial_file(trial_id), handle.to_dict())

    def _checked_run(self, recorded: dict, trial_id: str):
        """A recorded trial run, refused unless it is this trial's run in this sweep's store
        and experiment (the sweep folder may be shared: what is in it is not trusted)."""
        from pipeline import tracking

        fields = {"uri", "run_id", "experiment_id", "name"}
        if (
            set(recorded) != fields
            or not all(isinstance(v, str) for v in recorded.values())
            or recorded["uri"] != self.uri
            or recorded["name"] != f"{self.name}-{trial_id}"
            or recorded["experiment_id"] != self.parent.get("experiment_id")
            or not re.fullmatch(r"[0-9a-f]{32}", recorded["run_id"])
        ):
            raise PipelineError(
                f"{self.folder}/{_trial_file(trial_id)} is not a run of sweep {self.name} "
                f"in {self.uri}; remove it to find the trial's run in MLflow instead"
            )
        return tracking.RunHandle(**recorded)


def _trial_file(trial_id: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", trial_id):
        raise PipelineError(f"{trial_id!r} is not a Tune trial id")
    return f"trials/{trial_id}.json"


def _read_json(folder: str, name: str) -> dict | None:
    """The JSON object `name` in a sweep's folder (local or in a bucket), or None."""
    from pipeline import storage

    if storage.is_uri(folder):
        r = storage.remote(folder)
        data, where = storage.read_json(r, r.at(name)), f"{folder}/{name}"
    else:
        file = Path(folder, name)
        if not file.is_file():
            return None
        try:
            data, where = json.loads(file.read_text()), str(file)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise PipelineError(f"{file} is not valid JSON") from None
    if data is not None and not isinstance(data, dict):
        raise PipelineError(f"{where} holds no JSON object")
    return data


def _write_json(folder: str, name: str, data: dict) -> None:
    """`name` in a sweep's folder, written whole (renamed into place; one PUT in a bucket)."""
    from pipeline import storage

    if storage.is_uri(folder):
        r = storage.remote(folder)
        storage.write_json(r, r.at(name), data)
        return
    file = Path(folder, name)
    file.parent.mkdir(parents=True, exist_ok=True)
    # A fresh working name (mkstemp: never an existing file or a link someone left there).
    fd, tmp = tempfile.mkstemp(prefix=f".{file.name}.", dir=file.parent)
    try:
        os.fchmod(fd, 0o644)  # readable as sweep.json always was
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps(data, indent=2))
        os.replace(tmp, file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def describe(params: dict) -> str:
    """A trial's searched values on one line: `lambda_cls=0.42 optim.lr_g=2.1e-04`"""
    return " ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )


def default_space(model: str) -> Path:
    """tune_spaces/<model>.yaml: in the current folder, else the one beside this package."""
    here = Path("tune_spaces") / f"{model}.yaml"
    if here.is_file():
        return here
    return Path(__file__).resolve().parents[2] / "tune_spaces" / f"{model}.yaml"


def sweeps_dir() -> str:
    """Where sweeps keep their state: <runs>/sweeps, a folder or a URI."""
    from pipeline.settings import runs_root
    from pipeline.storage import join

    return join(runs_root(), "sweeps")


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
    space = pin(load_space(space_path), config.overrides, say)

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
    if config.name is not None and not re.fullmatch(NAME, config.name):
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
    if scheduler == "pbt" and base.family == "glcic" and base.completion.phase_unit == "fraction":
        raise ConfigError(
            "PBT trains in segments and completion.phase_unit=fraction would scale the phases "
            "to each one; give them in epochs (--set completion.phase_unit=epochs)"
        )
    dataset_path, manifest = prepare(base)

    def build(values: dict) -> None:
        from pipeline.training.runner import TASKS

        trial = load_train_config(config.model, base=to_dict(base), options=values)
        TASKS[trial.family].check_dataset(trial, manifest)

    # The --set values win over the fixed ones, so the space's values are tried on the base.
    check_values(replace(space, fixed={}), build)

    requested, modes = options_objectives(space, config.metric, config.mode)
    metrics, base = _metrics(requested, base, manifest, say)
    grid_size = math.prod(len(p.values) for p in space.params if is_grid(p, search))
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
        metric=metrics[0],
        requested_metric=requested[0],
        mode=modes[0],
        workers_per_trial=workers,
        concurrent=config.concurrent,
        trials=samples * grid_size,
        overrides=list(config.overrides),
        objectives=[
            {"metric": m, "requested": r, "mode": d}
            for m, r, d in zip(metrics, requested, modes, strict=True)
        ],
    )
    return plan, space


def pin(space: Space, overrides, say: Callable[[str], None]) -> Space:
    """A key the user sets (`--set key=value`) is that value in every trial: taken out of the
    space's search (and PBT's mutations) instead of being overwritten by it."""
    keys = {item.split("=", 1)[0].strip() for item in overrides if "=" in item}
    pinned = [p.key for p in space.params if p.key in keys]
    if not pinned:
        return space
    say(f"--set pins {', '.join(pinned)}: not searched in this sweep")
    return replace(
        space,
        params=tuple(p for p in space.params if p.key not in keys),
        mutate=tuple(k for k in space.mutate if k not in keys),
    )


def check_resume_options(config: SweepConfig) -> None:
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
    if not re.fullmatch(NAME, name):
        raise ConfigError(f"--name {name!r} is not a sweep name (letters, digits, '-', '_', '.')")
    from pipeline import storage, tracking
    from pipeline.tuning.trust import check_plan, check_private

    root = sweeps_dir()
    folder = storage.join(root, name)
    data = plan_at(folder)
    if data is None:
        if storage.is_uri(root):
            r = storage.remote(root)
            known = sorted(storage.children(r, r.path))
        else:
            known = sorted(p.parent.name for p in Path(root).glob(f"*/{PLAN_FILE}"))
        listed = f"; sweeps there: {', '.join(known)}" if known else ""
        raise PipelineError(f"no sweep named {name} in {root}{listed}")
    check_private(folder)  # before Ray unpickles its state
    where = storage.join(folder, PLAN_FILE)
    uri = tracking.tracking_uri()
    data = check_plan(data, where, SweepPlan, name=name, storage=root, uri=uri)
    return SweepPlan.from_dict(data)


def plan_at(folder: str) -> dict | None:
    """The saved plan (sweep.json) of the sweep at `folder`, or None."""
    return _read_json(folder, PLAN_FILE)


def write_plan(plan: SweepPlan) -> None:
    """sweep.json in the sweep's folder, written whole."""
    _write_json(plan.folder, PLAN_FILE, plan.to_dict())


def is_grid(param, search: str) -> bool:
    """Whether Tune tries every value of `param` (a grid key, or any choice under grid search)."""
    return param.kind == "grid" or (search == "grid" and param.kind == "choice")


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


def _metrics(requested: tuple[str, ...], base, manifest: dict, say) -> tuple[list[str], Any]:
    """The metric names trials report: FID and KID are `*_standin` on the stand-in backbone.
    Resolves the FID weights once, here, so the trials need not."""
    needs_fid = [name for name in requested if name in ("fid", "kid")]
    if not needs_fid:
        return list(requested), base
    if not base.fid.every:
        raise ConfigError(
            f"--metric {needs_fid[0]} needs FID during training: set fid.every >= 1 (under "
            "fixed: in the space file, or --set fid.every=1)"
        )
    from pipeline.metrics.config import metric_name
    from pipeline.training.driver import prepare_fid

    base, backbone = prepare_fid(base, manifest, say=say)
    return [metric_name(n, backbone.standin) if n in needs_fid else n for n in requested], base
