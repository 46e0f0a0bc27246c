"""What a sweep leaves behind: one row per trial, the MLflow parent run, the best trial.

On the parent run (and in `<sweep folder>/summary/`):

    trials.csv                        one row per trial: id, run, status, epochs, metric, params
    plots/<metric>-vs-<param>.png     each trial's best metric against each searched parameter
    plots/<metric>-curves.png         the metric per epoch, every trial in one chart
    pareto.csv, plots/pareto.png      with two objectives: the trials on their Pareto front
                                      (pareto.py), each of whose runs is tagged `pipeline.pareto`

The best trial (by the first objective) is tagged `pipeline.best`, each trial's best
checkpoint is logged to its own child run, and the best generator can be exported to a
folder or the model registry.
Plots are drawn with matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pipeline.config import flatten
from pipeline.errors import PipelineError, one_line
from pipeline.tuning import pareto
from pipeline.tuning.plan import PLAN_FILE, SweepPlan
from pipeline.tuning.space import Space


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
    # A second objective: its curve, the trial's point (pareto.trial_point), on the front.
    second: list[tuple[int, float]] = field(default_factory=list)
    point: tuple[int, float, float] | None = None
    on_front: bool = False
    reported: tuple[str, ...] = ()  # every metric the trial reported to Tune


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
    folder: str  # the sweep's Tune state: a folder, or a URI
    summary: Path  # the table and plots on this machine (also on the parent run)
    exported: Path | None = None
    registered: str | None = None  # "NAME version N"
    objectives: list[tuple[str, str]] = field(default_factory=list)  # (metric, mode) each
    front: list[TrialRow] = field(default_factory=list)  # two objectives: the Pareto front
    notes: list[str] = field(default_factory=list)  # lines to say at the end of the sweep


def start_parent(plan: SweepPlan, space: Space) -> SweepPlan:
    """The sweep's MLflow parent run, with the space file and the plan; returns the plan
    that records it."""
    from pipeline import tracking

    parent = tracking.start_run(
        plan.uri,
        plan.experiment,
        plan.name,
        params=parent_params(plan, space),
        tags={
            "pipeline.sweep": plan.name,
            "pipeline.kind": "sweep",
            "pipeline.dataset": plan.dataset_name,
            "pipeline.family": plan.family,
            "pipeline.metric": ", ".join(plan.metrics),
        },
    )
    plan = replace(plan, parent=parent.to_dict())
    tracker = tracking.Tracker(parent)
    tracker.log_artifact(plan.space_file, "space")
    tracker.log_dict(plan.to_dict(), PLAN_FILE)
    return plan


def parent_params(plan: SweepPlan, space: Space) -> dict:
    """The parent run's params: the sweep's settings, the space, the fixed values in force."""
    params = {
        "sweep.scheduler": plan.scheduler,
        "sweep.search": plan.search,
        "sweep.samples": plan.samples,
        "sweep.trials": plan.trials,
        "sweep.max_epochs": plan.max_epochs,
        "sweep.metric": ", ".join(plan.metrics),
        "sweep.mode": ", ".join(plan.modes),
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


def trial_rows(plan: SweepPlan, results) -> list[TrialRow]:
    """One row per trial of Tune's ResultGrid, with its MLflow run and its metric curve."""
    from ray.tune.result import AUTO_RESULT_KEYS

    from pipeline import tracking

    rows = []
    for result in results:
        frame = result.metrics_dataframe
        metrics = dict(result.metrics or {})
        trial_id = metrics.get("trial_id") or Path(result.path).name.removeprefix("trial-")
        handle = plan.trial_run(trial_id)
        curves, checkpoints = {name: [] for name in plan.metrics}, {}
        for _, record in frame.iterrows() if frame is not None else ():
            for name, points in curves.items():
                value = record.get(name)
                if value is not None and not math.isnan(value):
                    epoch = int(record["epoch"])
                    points.append((epoch, float(value)))
                    if name == plan.metric:
                        checkpoints[epoch] = _location(plan, record.get("checkpoint_path"))
        curve, second = curves[plan.metric], curves[plan.metrics[-1]] if len(curves) > 1 else []
        reported = () if frame is None else tuple(
            sorted(key for key in frame.columns
                   if frame[key].dtype.kind in "fi" and key not in AUTO_RESULT_KEYS)
        )  # fmt: skip
        best = None
        if curve:
            pick = min if plan.mode == "min" else max
            best = pick(curve, key=lambda point: point[1])
        if handle is not None:
            # The server away: how the trial ended, as Tune saw it.
            status = tracking.last_status(handle) or _tune_status(result, metrics, plan)
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
                error=one_line(result.error) if result.error else None,
                second=second,
                point=pareto.trial_point(curve, second, plan.mode) if second else None,
                reported=reported,
            )
        )
    return rows


def _tune_status(result, metrics: dict, plan: SweepPlan) -> str:
    if result.error:
        return "FAILED"
    return "FINISHED" if int(metrics.get("epoch", 0) or 0) >= plan.max_epochs else "RUNNING"


def finish_interrupted(plan: SweepPlan, rows: list[TrialRow]) -> None:
    """Trials cut short by an interrupted sweep end KILLED; a resume reopens them."""
    from pipeline import tracking

    for row in rows:
        if row.status == "RUNNING" and row.run_id:
            tracking.Tracker(plan.trial_run(row.trial_id)).finish("KILLED")
            row.status = "KILLED"


def summarise(plan: SweepPlan, rows: list[TrialRow], status: str) -> SweepResult:
    """Rank the trials; write the table and plots to the parent run; tag the best."""
    from pipeline import tracking
    from pipeline.training import checkpoint as ckpt

    ranked = sorted(
        (row for row in rows if row.best is not None),
        key=lambda row: row.best if plan.mode == "min" else -row.best,
    )
    best = ranked[0] if ranked else None
    out = _summary_folder(plan)
    out.mkdir(parents=True, exist_ok=True)
    front, notes, pointed = [], [], [row for row in rows if row.point is not None]
    if len(plan.metrics) > 1:
        front = [pointed[i] for i in pareto.front([r.point[1:] for r in pointed], plan.modes)]
        for row in front:
            row.on_front = True
        if not pointed:
            notes.append(_no_front(plan, rows))
    files = [write_csv(out / "trials.csv", rows, plan.metrics)]
    files += write_plots(out / "plots", rows, plan.metric, plan.space)
    if front:
        files.append(pareto.write_front_csv(out / "pareto.csv", front, plan.metrics))
        files.append(pareto.plot_front(out / "plots" / "pareto.png", pointed, front,
                                       plan.metrics, plan.modes, plan.space["search"]))  # fmt: skip
    parent = plan.parent_handle()
    tracker = tracking.Tracker(parent)
    tracker.log_artifact(files[0])
    tracker.log_artifact(out / "plots", "plots")
    if front:
        tracker.log_artifact(out / "pareto.csv")
        for row in rows:  # "false" too: a resumed sweep's front may have changed
            if row.run_id:
                on = "true" if row.on_front else "false"
                tracking.Tracker(plan.trial_run(row.trial_id)).set_tags({"pipeline.pareto": on})
    for row in rows:  # each trial's best checkpoint, in its own child run
        folder = ckpt.local_folder(row.checkpoint) if row.run_id and row.checkpoint else None
        if folder is not None:
            child = tracking.Tracker(plan.trial_run(row.trial_id))
            child.log_artifact(folder / ckpt.FILE, "best")
            child.set_tags({"pipeline.best_epoch": row.best_epoch})
    if best is not None:
        tracker.set_tags({
            "pipeline.best_trial": best.trial_id,
            "pipeline.best_run_id": best.run_id,
        })  # fmt: skip
        tracker.log_metrics({f"best_{plan.metric}": best.best}, step=0)
        if best.run_id:
            tracking.Tracker(plan.trial_run(best.trial_id)).set_tags({"pipeline.best": "true"})
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
        summary=out,
        objectives=list(zip(plan.metrics, plan.modes, strict=True)),
        front=front,
        notes=notes,
    )


def reported_metrics(rows: list[TrialRow]) -> str:
    """What the trials reported, for a line about a metric none of them did."""
    names = sorted({name for row in rows for name in row.reported})
    return ", ".join(names) if names else "nothing (no trial got as far as a report)"


def _no_front(plan: SweepPlan, rows: list[TrialRow]) -> str:
    first, second = plan.metrics
    missing = [m for m in plan.metrics if not any(m in row.reported for row in rows)]
    what = (f"no trial reported {' or '.join(missing)}" if missing
            else f"no trial reported {first} and {second} at the same epoch")  # fmt: skip
    return (
        f"{what}, so the sweep has no Pareto front (pareto.csv, plots/pareto.png); the "
        f"trials report: {reported_metrics(rows)}"
    )


def _location(plan: SweepPlan, path: str | None) -> str | None:
    """A reported checkpoint path as a location: Ray reports the path inside the storage's
    filesystem, without the scheme of a bucket."""
    from pipeline.storage import is_uri

    if not path or is_uri(path) or not is_uri(plan.storage):
        return path
    return f"{plan.storage.split('://', 1)[0]}://{path}"


def _summary_folder(plan: SweepPlan) -> Path:
    """Where the table and plots are written before they go to the parent run: the sweep's
    folder, or for a sweep in a bucket a folder of this machine's cache."""
    from pipeline import storage

    if storage.is_uri(plan.folder):
        return storage.cache_dir() / "sweeps" / storage.slug(plan.folder) / "summary"
    return Path(plan.folder) / "summary"


def export_best(plan: SweepPlan, result: SweepResult, folder: str | None, name: str | None) -> None:
    """The best trial's model (G_ema, or C, of its best epoch): to a folder, to the registry."""
    import tempfile

    from pipeline import tracking
    from pipeline.training import checkpoint as ckpt
    from pipeline.training.runner import TASKS

    best = result.best
    if best is None or not best.checkpoint:
        raise PipelineError(f"sweep {plan.name}: the best trial left no checkpoint to export")
    state = ckpt.load(ckpt.local_folder(best.checkpoint) or best.checkpoint)
    task = TASKS[state["config"]["family"]]
    if folder:
        result.exported = ckpt.save_generator(
            state, Path(folder).expanduser() / task.EXPORT_FILE, task.EXPORT
        )
    if name:
        handle = tracking.find_run(plan.uri, best.run_id)
        with tempfile.TemporaryDirectory() as tmp:
            tracking.Tracker(handle).log_artifact(
                ckpt.save_generator(state, Path(tmp) / task.EXPORT_FILE, task.EXPORT), "best"
            )
        version = tracking.register_model(handle, "best", name)
        result.registered = f"{name} version {version}"


# ---------------------------------------------------------------------------------------------
# The table and the plots.


def write_csv(path: Path, rows: list[TrialRow], metrics: Sequence[str]) -> Path:
    """trials.csv: one row per trial, its best and last metric, its searched values. With a
    second objective also its last value, the trial's point (pareto.py) and whether it is on
    the front."""
    metric = metrics[0]
    keys = sorted({key for row in rows for key in row.params})
    two = [f"last_{metrics[1]}", "pareto_epoch", f"pareto_{metric}", f"pareto_{metrics[1]}",
           "on_front"] if len(metrics) > 1 else []  # fmt: skip
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["trial_id", "run_id", "status", "epochs", f"best_{metric}", "best_epoch",
             f"last_{metric}", *two, *keys, "error"]
        )  # fmt: skip
        for row in rows:
            point = row.point or ("", None, None)
            second = [_cell(row.second[-1][1] if row.second else None), point[0],
                      _cell(point[1]), _cell(point[2]), str(row.on_front).lower()]  # fmt: skip
            writer.writerow(
                [row.trial_id, row.run_id or "", row.status, row.epochs, _cell(row.best),
                 row.best_epoch if row.best_epoch is not None else "", _cell(row.last),
                 *(second if two else []), *(row.params.get(key, "") for key in keys),
                 row.error or ""]
            )  # fmt: skip
    return path


def write_plots(folder: Path, rows: list[TrialRow], metric: str, space: dict) -> list[Path]:
    """One scatter per searched parameter, and the curves of all trials."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    folder.mkdir(parents=True, exist_ok=True)
    scored = [row for row in rows if row.best is not None]
    written = []
    for key, spec in space["search"].items():
        kind, values = next(iter(spec.items()))
        fig, ax = plt.subplots(figsize=(5, 3.6), dpi=100)
        xs = [row.params.get(key) for row in scored]
        ys = [row.best for row in scored]
        if kind in ("choice", "grid") and not all(_is_number(v) for v in values):
            labels = [str(v) for v in values]
            ax.set_xticks(range(len(labels)), labels)
            ax.set_xlim(-0.5, len(labels) - 0.5)
            xs = [labels.index(str(x)) if str(x) in labels else math.nan for x in xs]
        elif kind == "loguniform":
            ax.set_xscale("log")
        ax.scatter(xs, ys, s=36, alpha=0.8)
        for x, y, row in zip(xs, ys, scored, strict=True):
            ax.annotate(row.trial_id.rsplit("_", 1)[-1], (x, y), fontsize=7, alpha=0.7,
                        xytext=(3, 3), textcoords="offset points")  # fmt: skip
        ax.set_xlabel(key)
        ax.set_ylabel(f"best {metric}")
        ax.set_title(f"{metric} against {key}", fontsize=10)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        written.append(_save(fig, folder / f"{_slug(metric)}-vs-{_slug(key)}.png"))
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for row in rows:
        if row.curve:
            epochs, values = zip(*row.curve, strict=True)
            ax.plot(epochs, values, marker="o", ms=3, label=f"{row.trial_id} ({row.status})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} of every trial", fontsize=10)
    ax.grid(alpha=0.3)
    if any(row.curve for row in rows):
        ax.legend(fontsize=6, loc="best")
    fig.tight_layout()
    written.append(_save(fig, folder / f"{_slug(metric)}-curves.png"))
    plt.close(fig)
    return written


def _save(fig, path: Path) -> Path:
    fig.savefig(path)
    return path


def _cell(value) -> str:
    return "" if value is None else f"{value:.6g}"


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _slug(text: str) -> str:
    return re.sub(r"[^\w.-]+", "_", text)
