"""What a sweep leaves on its MLflow parent run: a table of all trials and plots.

    trials.csv                        one row per trial: id, run, status, epochs, metric, params
    plots/<metric>-vs-<param>.png     each trial's best metric against each searched parameter
    plots/<metric>-curves.png         the metric per epoch, every trial in one chart

Plots are drawn with matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path


def write_csv(path: Path, rows: list, metric: str) -> Path:
    keys = sorted({key for row in rows for key in row.params})
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["trial_id", "run_id", "status", "epochs", f"best_{metric}", "best_epoch",
             f"last_{metric}", *keys, "error"]
        )  # fmt: skip
        for row in rows:
            writer.writerow(
                [row.trial_id, row.run_id or "", row.status, row.epochs, _cell(row.best),
                 row.best_epoch if row.best_epoch is not None else "", _cell(row.last),
                 *(row.params.get(key, "") for key in keys), row.error or ""]
            )  # fmt: skip
    return path


def write_plots(folder: Path, rows: list, metric: str, space: dict) -> list[Path]:
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
