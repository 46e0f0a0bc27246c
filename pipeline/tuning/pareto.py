"""Sweeps on two objectives: each trial's point, the Pareto front of the trials, its table and
its plot (no Ray, no MLflow here; `summary.py` logs what this writes).

A space file may rank trials by two metrics, `metric: [fid, class_acc]` with `mode: [min,
max]`: for ACGAN, lambda_cls trades image quality against how recognisably G draws the asked
class. No trial is then simply the best; the sweep reports the trials no other trial beats on
both at once (the Pareto front; "non-dominated", Deb 2001, Multi-Objective Optimization Using
Evolutionary Algorithms, ch. 2).

A trial's point is ONE evaluation: the epoch that is best on the first objective (among the
epochs that report both metrics), with the second metric's value at that same epoch. A
trade-off is between two numbers measured on the same generator: a trial's best FID and its
best class accuracy may come from different epochs, and no checkpoint has both. Of the
epochs that would do (the last evaluated one is the other candidate), the best epoch on the
first objective is the checkpoint the sweep keeps and exports for the trial
(`best/checkpoint.pt`), so the point describes a model one can take.

    point = trial_point(fid_curve, acc_curve, "min")      # (epoch, fid, class_acc) or None
    on = front([(p[1], p[2]) for p in points], ["min", "max"])   # indices, best first

On the sweep's parent run: `pareto.csv` (one row per trial on the front) and
`plots/pareto.png` (every trial's point, the front as a step line, coloured by the searched
parameter that varies most along the front).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

Curve = list[tuple[int, float]]  # (epoch, value), as a trial reported it
Point = tuple[int, float, float]  # (epoch, first objective, second objective)

BETTER = {"min": "lower is better", "max": "higher is better"}


def trial_point(first: Curve, second: Curve, mode: str) -> Point | None:
    """The trial's point: the best epoch on the first objective among those that report both
    (the earliest of equal ones), and both values there; None when no epoch reports both."""
    seconds = {epoch: value for epoch, value in second if math.isfinite(value)}
    both = [(epoch, value) for epoch, value in first if math.isfinite(value) and epoch in seconds]
    if not both:
        return None
    sign = 1.0 if mode == "min" else -1.0
    epoch, value = min(both, key=lambda point: (sign * point[1], point[0]))
    return epoch, value, seconds[epoch]


def front(points: Sequence[tuple[float, float] | None], modes: Sequence[str]) -> list[int]:
    """The indices of the points no other point dominates (at least as good on both, better on
    one), best on the first objective first. Equal points are all on the front; a missing
    point (None) or a NaN is compared with nothing and is on no front."""
    signs = [1.0 if mode == "min" else -1.0 for mode in modes]
    keyed = sorted(
        (signs[0] * point[0], signs[1] * point[1], i)
        for i, point in enumerate(points)
        if point is not None and all(math.isfinite(v) for v in point)
    )
    # In order of the first objective (then the second), each point is beaten on the first
    # by all before it: it is on the front only if it beats them all on the second, or it
    # equals the last point on the front.
    on, best, last = [], math.inf, None
    for a, b, i in keyed:
        if b < best or (a, b) == last:
            on.append(i)
            best, last = b, (a, b)
    return on


def most_varied(search: dict[str, dict], along: list[dict[str, Any]]) -> str | None:
    """The searched key whose values vary most across `along` (trials' params): the spread as
    a fraction of the key's range, in decades for a loguniform key. A number first (a colour
    scale reads along the front); a choice of names only when no number varies. None when
    nothing varies."""
    ranked = []
    for key, spec in search.items():
        kind, bounds = next(iter(spec.items()))
        values = [params[key] for params in along if key in params]
        if len(set(map(str, values))) < 2:
            continue
        if _numbers(bounds) and _numbers(values):
            scale = math.log10 if kind == "loguniform" else float
            width = scale(max(bounds)) - scale(min(bounds))
            if width > 0:
                spread = (scale(max(values)) - scale(min(values))) / width
                ranked.append((1, spread, key))
        elif len(bounds) > 1:
            ranked.append((0, (len(set(map(str, values))) - 1) / (len(bounds) - 1), key))
    return max(ranked)[2] if ranked else None


def write_front_csv(path: Path, rows: list, metrics: Sequence[str]) -> Path:
    """pareto.csv: one row per trial on the front (summary.TrialRow, with its `point`), best
    on the first objective first: trial, MLflow run, the point's epoch and values, the
    searched values."""
    keys = sorted({key for row in rows for key in row.params})
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["trial_id", "run_id", "epoch", *metrics, *keys])
        for row in rows:
            epoch, first, second = row.point
            writer.writerow(
                [row.trial_id, row.run_id or "", epoch, repr(first), repr(second),
                 *(row.params.get(key, "") for key in keys)]
            )  # fmt: skip
    return path


def plot_front(
    path: Path, rows: list, on_front: list, metrics: Sequence[str], modes: Sequence[str],
    search: dict[str, dict],
) -> Path:  # fmt: skip
    """plots/pareto.png: the first objective against the second, a point per trial (rows
    with a `point`), the front as a step line, coloured by `most_varied` along the front."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm, Normalize

    fig, ax = plt.subplots(figsize=(6.4, 4.6), dpi=100)
    xs = [row.point[1] for row in rows]
    ys = [row.point[2] for row in rows]
    ids = {id(row) for row in on_front}
    key = most_varied(search, [r.params for r in (on_front if len(on_front) > 1 else rows)])
    style = {"s": [70 if id(row) in ids else 30 for row in rows], "zorder": 3,
             "edgecolors": ["black" if id(row) in ids else "none" for row in rows]}  # fmt: skip
    values = [row.params.get(key) for row in rows] if key else []
    kind, bounds = next(iter(search[key].items())) if key else (None, [])
    if key and _numbers(bounds) and _numbers(values):
        log = kind == "loguniform"
        low, high = min(*bounds, *values), max(*bounds, *values)
        norm = LogNorm(low, high) if log else Normalize(low, high)
        drawn = ax.scatter(xs, ys, c=values, cmap="viridis", norm=norm, **style)
        fig.colorbar(drawn, ax=ax, label=key + (" (log scale)" if log else ""))
    elif key:  # a choice of names: one colour each
        names = [str(v) for v in bounds]
        colours = plt.get_cmap("tab10")
        index = [names.index(str(v)) if str(v) in names else len(names) for v in values]
        ax.scatter(xs, ys, c=[colours(i % 10) for i in index], **style)
        for i, name in enumerate(names):
            ax.scatter([], [], color=colours(i % 10), label=f"{key}={name}")
        ax.legend(fontsize=7, loc="best")
    else:
        ax.scatter(xs, ys, color="tab:blue", **style)
    # The front's boundary: between two front points it runs through the corner that is worse
    # on both (sorted by the first metric, that is the later x when lower x is better).
    line = sorted(on_front, key=lambda row: row.point[1])
    where = "post" if modes[0] == "min" else "pre"
    ax.step([r.point[1] for r in line], [r.point[2] for r in line], where=where,
            color="black", alpha=0.6, zorder=2, label=None)  # fmt: skip
    for x, y, row in zip(xs, ys, rows, strict=True):
        ax.annotate(row.trial_id.rsplit("_", 1)[-1], (x, y), fontsize=7, alpha=0.7,
                    xytext=(4, 4), textcoords="offset points")  # fmt: skip
    ax.set_xlabel(f"{metrics[0]} ({BETTER[modes[0]]})")
    ax.set_ylabel(f"{metrics[1]} ({BETTER[modes[1]]})")
    ax.set_title(
        f"Pareto front: {len(on_front)} of {len(rows)} trial(s) (black edge; best epoch on "
        f"{metrics[0]})",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _numbers(values) -> bool:
    return bool(values) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values
    )
