"""What a conditional model conditions on, read from the dataset's manifest.

The label tensor y is int64 (B, groups + attributes): the class index of each softmax group
(anime: hair, eyes; MNIST: the digit), then 0/1 for each chosen binary attribute (CelebA:
`data.attrs=[Male,Smiling]`). Rows without a label are left out of conditional training,
never given a guessed one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.config import ConfigError
from pipeline.models.config import ClassSpec


@dataclass(frozen=True)
class LabelPlan:
    """Which columns make y, and their names (for grids and metrics)."""

    classes: ClassSpec
    group_columns: tuple[str, ...]  # manifest columns of the softmax groups, in order
    group_names: tuple[str, ...]
    class_names: tuple[tuple[str, ...], ...]  # per group
    attr_column: str | None
    attr_indices: tuple[int, ...]  # positions of the chosen attributes in the attrs column
    attr_names: tuple[str, ...]

    def to_dict(self) -> dict:
        return {
            "groups": list(self.classes.groups),
            "binary": self.classes.binary,
            "group_names": list(self.group_names),
            "class_names": [list(c) for c in self.class_names],
            "attr_names": list(self.attr_names),
        }

    def labels(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """y for a numpy batch from the reader."""
        parts = [batch[c].astype(np.int64)[:, None] for c in self.group_columns]
        if self.attr_column is not None:
            parts.append(batch[self.attr_column][:, list(self.attr_indices)].astype(np.int64))
        return np.concatenate(parts, axis=1)

    def labelled_rows(self, dataset) -> np.ndarray:
        """Rows of `dataset` with every label present."""
        everything = dataset.take(np.arange(len(dataset)), columns=self.columns)
        return np.flatnonzero((self.labels(everything) >= 0).all(axis=1))

    @property
    def columns(self) -> list[str]:
        return list(self.group_columns) + ([self.attr_column] if self.attr_column else [])


def plan_labels(manifest: dict, groups: tuple[str, ...], attrs: tuple[str, ...]) -> LabelPlan:
    """The label plan for a dataset: the chosen groups (default all) and attributes."""
    name = manifest["name"]
    available = {g["name"]: g for g in (manifest.get("labels") or {}).get("groups", [])}
    attributes = manifest.get("attributes")
    if not available and not attributes:
        raise ConfigError(
            f"dataset {name} has no labels or attributes: a conditional model needs them "
            "(ingest with labels, e.g. `pipeline ingest images --labels tags.csv`)"
        )
    unknown = [g for g in groups if g not in available]
    if unknown:
        raise ConfigError(
            f"dataset {name} has no label group {unknown[0]!r}; it has: "
            f"{', '.join(available) or 'none'}"
        )
    if attrs and not attributes:
        raise ConfigError(f"dataset {name} has no attributes; data.attrs needs e.g. CelebA")
    names = attributes["names"] if attributes else []
    missing = [a for a in attrs if a not in names]
    if missing:
        raise ConfigError(
            f"attribute {missing[0]!r} is not in dataset {name}; it has: {', '.join(names)}"
        )
    chosen = list(groups) if groups else ([] if attrs else list(available))
    if not chosen and not attrs:
        raise ConfigError(
            f"dataset {name} has attributes but no classes: choose some with "
            "--set data.attrs=[Male,Smiling]"
        )
    return LabelPlan(
        classes=ClassSpec(
            groups=tuple(len(available[g]["classes"]) for g in chosen), binary=len(attrs)
        ),
        group_columns=tuple(available[g]["column"] for g in chosen),
        group_names=tuple(chosen),
        class_names=tuple(tuple(available[g]["classes"]) for g in chosen),
        attr_column=attributes["column"] if attrs else None,
        attr_indices=tuple(names.index(a) for a in attrs),
        attr_names=tuple(attrs),
    )


def grid_labels(plan: LabelPlan, rows: int, columns: int, seed: int) -> tuple[np.ndarray, list]:
    """Fixed labels for a sample grid: one row per class of the first group (or per pattern
    of the first attributes), the other groups drawn at random once, so that the grids of
    every epoch are comparable. Returns y (rows*columns, k) and the row names."""
    rng = np.random.default_rng(seed)
    k = len(plan.classes.groups) + plan.classes.binary
    y = np.zeros((rows * columns, k), dtype=np.int64)
    for g, n in enumerate(plan.classes.groups):
        y[:, g] = rng.integers(0, n, size=rows * columns)
    for a in range(plan.classes.binary):
        y[:, len(plan.classes.groups) + a] = rng.integers(0, 2, size=rows * columns)
    names = []
    for r in range(rows):
        block = slice(r * columns, (r + 1) * columns)
        if plan.classes.groups:
            y[block, 0] = r % plan.classes.groups[0]
            names.append(plan.class_names[0][r % plan.classes.groups[0]])
        else:
            bits = [(r >> a) & 1 for a in range(plan.classes.binary)]
            y[block, :] = bits
            on = [n for n, b in zip(plan.attr_names, bits, strict=True) if b]
            names.append(" ".join(on) or "(none)")
    return y, names


def grid_shape(plan: LabelPlan | None, samples: int) -> tuple[int, int]:
    """Rows x columns of the sample grid: 8 wide, or one row per class when conditional."""
    if plan is None:
        return max(1, samples // 8), 8
    rows = plan.classes.groups[0] if plan.classes.groups else 2 ** min(plan.classes.binary, 3)
    rows = min(rows, 16)
    return rows, max(1, samples // rows)
