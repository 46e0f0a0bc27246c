"""Search spaces as data: the `tune_spaces/*.yaml` format, read and checked without Ray.

    metric: fid            # what the sweep ranks trials by ("fid" becomes "fid_standin"
    mode: min              #   when no Inception weights exist); min or max
    # or two objectives, one mode each: the sweep also finds their Pareto front (pareto.py)
    # metric: [fid, class_acc]
    # mode: [min, max]
    defaults:              # used unless the command line says otherwise
      scheduler: asha      # asha | pbt | fifo
      search: random       # random | grid | optuna
      samples: 8           # trials (with grid values: repeats of the whole grid)
      max_epochs: 10       # budget of one trial
      workers_per_trial: 2
    asha: {grace_period: 1, reduction_factor: 2}
    pbt: {perturbation_interval: 2, quantile_fraction: 0.25, synch: false,
          mutate: [optim.lr_g, optim.lr_d, lambda_cls]}
    fixed:                 # config values every trial gets (same keys as `--set`)
      fid.every: 1
    search:                # config keys and their distributions
      lambda_cls: {loguniform: [0.1, 10]}
      optim.lr_g: {loguniform: [5e-5, 1e-3]}
      model.norm_g: {choice: [batch, instance]}
      model.width_g: {randint: [32, 65]}        # low inclusive, high exclusive
      seed: {grid: [0, 1]}                      # every value, in every sample
      z_std: {uniform: [0.5, 1.5]}

Keys are the training config's dotted keys (`pipeline train --dry-run` prints them). A bad
file is a `ConfigError` naming the file and the key: an unknown key, an empty choice, low above
high, more than two metrics or not one mode per metric, or (checked by the sweep once the
dataset is known) a value the model rejects.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import ConfigError, flatten, read_yaml, to_dict

KINDS = ("choice", "uniform", "loguniform", "randint", "grid")
SCHEDULERS = ("asha", "pbt", "fifo")
SEARCHES = ("random", "grid", "optuna")
MODES = ("min", "max")
MAX_OBJECTIVES = 2  # a Pareto front of two reads as one plot; more would need another design
TOP_KEYS = ("metric", "mode", "defaults", "asha", "pbt", "fixed", "search")
# What the sweep itself sets for every trial: not for a space file to search or fix.
SWEEP_OWNED = ("family", "epochs", "data.dataset", "workers", "gpus_per_worker", "run_name",
               "experiment")  # fmt: skip


@dataclass(frozen=True)
class Param:
    """One searched config key: `choice`/`grid` list their values, the others (low, high)."""

    key: str
    kind: str
    values: tuple

    def describe(self) -> str:
        return f"{self.kind}({', '.join(map(str, self.values))})"

    def candidates(self) -> tuple:
        """The values to try on the model before anything starts: every listed value, or a
        range's ends (randint's high is exclusive)."""
        if self.kind == "randint":
            return (self.values[0], self.values[1] - 1)
        return self.values

    @property
    def numeric(self) -> bool:
        return self.kind in ("uniform", "loguniform", "randint") or all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in self.values
        )


@dataclass(frozen=True)
class Space:
    file: str
    metrics: tuple[str, ...] = ("fid",)  # the objectives: the first ranks, schedules, picks
    modes: tuple[str, ...] = ("min",)  # the best trial; a second makes a Pareto front
    scheduler: str = "asha"
    search: str = "random"
    samples: int = 8
    max_epochs: int = 10
    workers_per_trial: int = 2
    grace_period: int = 1
    reduction_factor: float = 2.0
    perturbation_interval: int = 1
    quantile_fraction: float = 0.25
    synch: bool = False  # PBT: wait for every trial at each perturbation (deterministic)
    mutate: tuple[str, ...] = ()
    fixed: dict[str, Any] = field(default_factory=dict)
    params: tuple[Param, ...] = ()

    @property
    def metric(self) -> str:
        return self.metrics[0]

    @property
    def mode(self) -> str:
        return self.modes[0]

    def param(self, key: str) -> Param:
        return next(p for p in self.params if p.key == key)

    def to_dict(self) -> dict:
        """The space as plain data, in the file's own shape (for MLflow and sweep.json)."""
        one = len(self.metrics) == 1
        return {
            "metric": self.metric if one else list(self.metrics),
            "mode": self.mode if one else list(self.modes),
            "defaults": {k: getattr(self, k) for k in SECTIONS["defaults"]},
            "asha": {"grace_period": self.grace_period, "reduction_factor": self.reduction_factor},
            "pbt": {
                "perturbation_interval": self.perturbation_interval,
                "quantile_fraction": self.quantile_fraction,
                "synch": self.synch,
                "mutate": list(self.mutate),
            },
            "fixed": dict(self.fixed),
            "search": {p.key: {p.kind: list(p.values)} for p in self.params},
        }


def config_keys() -> dict[str, Any]:
    """Every dotted key of the training config, with its default (torch-free)."""
    from pipeline.training.config import TrainConfig

    return flatten(to_dict(TrainConfig()))


def load_space(file: str | Path) -> Space:
    """Read and check a space file; a `ConfigError` naming the file and the key otherwise."""
    path = Path(file)
    data = read_yaml(path)
    where = str(path)

    def bad(key: str, message: str) -> ConfigError:
        return ConfigError(f"{where}: {key}: {message}")

    unknown = sorted(set(data) - set(TOP_KEYS))
    if unknown:
        raise bad(unknown[0], f"unknown key; a space file has: {', '.join(TOP_KEYS)}")
    known = config_keys()
    values: dict[str, Any] = {"file": where}

    values["metrics"], values["modes"] = objectives(
        data.get("metric", "fid"), data.get("mode", "min"), bad, "mode: [min, max]"
    )

    # The sweep's settings: defaults, asha, pbt, each key checked by its entry in SECTIONS.
    for section, checks in SECTIONS.items():
        entries = _mapping(data.get(section, {}), lambda m, s=section: bad(s, m))
        for key, value in entries.items():
            name = f"{section}.{key}"
            if key not in checks:
                raise bad(name, f"unknown key; {section} has: {', '.join(checks)}")
            values[key] = checks[key](value, lambda m, n=name: bad(n, m))

    fixed = _mapping(data.get("fixed", {}), lambda m: bad("fixed", m))
    for key in fixed:
        _check_key(key, known, lambda m, k=key: bad(f"fixed.{k}", m))
    values["fixed"] = dict(fixed)

    search = _mapping(data.get("search", {}), lambda m: bad("search", m))
    if not search:
        raise bad("search", "names no config key to search; add e.g. optim.lr_g: "
                  "{loguniform: [1e-4, 1e-3]}")  # fmt: skip
    params = []
    for key, spec in search.items():
        name = f"search.{key}"
        _check_key(key, known, lambda m, n=name: bad(n, m))
        if key in fixed:
            raise bad(name, "is also under fixed; a key is either searched or fixed")
        params.append(_param(key, spec, lambda m, n=name: bad(n, m)))
    values["params"] = tuple(params)

    for key in values.get("mutate", ()):
        if key not in search:
            raise bad("pbt.mutate", f"{key} is not under search; PBT mutates searched keys")
        if search[key] and "grid" in search[key]:
            raise bad("pbt.mutate", f"{key} is a grid; PBT mutates choice or range keys")
    return Space(**values)


Check = Callable[[Any, Callable[[str], ConfigError]], Any]  # (value, bad) -> the value to keep


def _range(low: float, high: float, inclusive_high: bool, text: str) -> Check:
    def check(value, bad):
        number = float(value) if _is_number(value) else None
        if number is None or not (low < number and (number <= high if inclusive_high else True)):
            raise bad(f"{text}, got {value!r}")
        return number

    return check


def _flag(value, bad) -> bool:
    if not isinstance(value, bool):
        raise bad(f"must be true or false, got {value!r}")
    return value


def _key_list(value, bad) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad(f"must be a list of searched keys, got {value!r}")
    return tuple(value)


SECTIONS: dict[str, dict[str, Check]] = {
    "defaults": {
        "scheduler": lambda value, bad: _one_of(value, SCHEDULERS, bad),
        "search": lambda value, bad: _one_of(value, SEARCHES, bad),
        "samples": lambda value, bad: _positive_int(value, bad),
        "max_epochs": lambda value, bad: _positive_int(value, bad),
        "workers_per_trial": lambda value, bad: _positive_int(value, bad),
    },
    "asha": {
        "grace_period": lambda value, bad: _positive_int(value, bad),
        "reduction_factor": _range(1, math.inf, False, "must be a number above 1"),
    },
    "pbt": {
        "perturbation_interval": lambda value, bad: _positive_int(value, bad),
        "quantile_fraction": _range(0, 0.5, True, "must be in (0, 0.5]"),
        "synch": _flag,
        "mutate": _key_list,
    },
}


def objectives(
    metric: Any, mode: Any, bad: Callable[[str, str], ConfigError], example: str
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(metrics, modes) from a metric and a mode, each one name or a list: one metric and one
    mode, or two metrics and two modes. `bad(key, message)` makes the error; `example` shows
    two modes written where they were given (a file's `mode: [min, max]`, `--mode min,max`)."""
    metrics = tuple(metric) if isinstance(metric, list) else (metric,)
    modes = tuple(mode) if isinstance(mode, list) else (mode,)
    if not metrics or not all(isinstance(m, str) and m for m in metrics):
        raise bad("metric", f"must be a metric name such as fid, or two, got {metric!r}")
    if len(metrics) > MAX_OBJECTIVES:
        raise bad("metric", f"names {len(metrics)} metrics ({', '.join(metrics)}); a sweep "
                  f"ranks by one, or by two on a Pareto front")  # fmt: skip
    if len(set(metrics)) < len(metrics):
        raise bad("metric", f"names a metric twice: {', '.join(metrics)}")
    for value in modes:
        _one_of(value, MODES, lambda m: bad("mode", m))
    if len(modes) != len(metrics):
        hint = f", e.g. {example}" if len(metrics) == MAX_OBJECTIVES else ""
        raise bad("mode", f"{len(modes)} mode(s) ({', '.join(map(str, modes))}) for "
                  f"{len(metrics)} metric(s) ({', '.join(metrics)}); give one mode per "
                  f"metric{hint}")  # fmt: skip
    return metrics, modes


def options_objectives(
    space: Space, metric: str | None, mode: str | None
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The metrics and modes a command asks for: `--metric a,b` and `--mode min,max` over the
    space's. One `--metric` without `--mode` keeps the space's first mode, as it always did."""
    if metric is None and mode is None:
        return space.metrics, space.modes
    metrics = _split(metric) if metric is not None else list(space.metrics)
    if mode is not None:
        modes = _split(mode)
    else:
        modes = [space.mode] if len(metrics) == 1 else list(space.modes)

    def bad(key: str, message: str) -> ConfigError:
        given = metric if key == "metric" else mode
        return ConfigError(f"--{key} {given}: {message}" if given is not None else message)

    return objectives(metrics, modes, bad, "--mode min,max")


def _split(option: str) -> list[str]:
    return [part.strip() for part in option.split(",")]


def check_values(space: Space, build: Callable[[dict[str, Any]], object]) -> None:
    """Try every fixed value and every searched candidate on the model before the sweep starts.

    `build({key: value, ...})` makes a training config with those values (on top of the
    fixed ones) and raises `ConfigError` when the model rejects one.
    """
    try:
        build(dict(space.fixed))
    except ConfigError as error:
        raise ConfigError(f"{space.file}: fixed: rejected: {error}") from None
    for param in space.params:
        for value in param.candidates():
            try:
                build({**space.fixed, param.key: value})
            except ConfigError as error:
                raise ConfigError(
                    f"{space.file}: search.{param.key}: {value!r} is rejected: {error}"
                ) from None


def _param(key: str, spec: Any, bad: Callable[[str], ConfigError]) -> Param:
    if not isinstance(spec, dict) or len(spec) != 1:
        raise bad(f"must be one of {{{' | '.join(f'{k}: [...]' for k in KINDS)}}}, got {spec!r}; "
                  "a constant goes under fixed")  # fmt: skip
    kind, values = next(iter(spec.items()))
    if kind not in KINDS:
        raise bad(f"unknown distribution {kind!r}; choose one of: {', '.join(KINDS)}")
    if kind in ("choice", "grid"):
        if not isinstance(values, list) or not values:
            raise bad(f"{kind} needs a non-empty list of values, got {values!r}")
        return Param(key, kind, tuple(values))
    if not isinstance(values, list) or len(values) != 2 or not all(map(_is_number, values)):
        raise bad(f"{kind} needs [low, high], two numbers, got {values!r}")
    low, high = (float(v) for v in values)
    if kind == "randint":
        if not all(isinstance(v, int) for v in values):
            raise bad(f"randint needs two integers [low, high), got {values!r}")
        low, high = values
    if low >= high:
        raise bad(f"{kind} low {values[0]} must be below high {values[1]}")
    if kind == "loguniform" and low <= 0:
        raise bad(f"loguniform needs low > 0, got {values[0]}")
    return Param(key, kind, (low, high))


def _check_key(key: str, known: dict, bad: Callable[[str], ConfigError]) -> None:
    if key in SWEEP_OWNED:
        raise bad("is set by the sweep itself (--max-epochs, --data, --workers-per-trial, "
                  "--gpus-per-worker), not by a space file")  # fmt: skip
    if key in known:
        return
    suffix = [k for k in known if k.endswith("." + key)]
    close = suffix or difflib.get_close_matches(key, list(known), n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    raise bad(f"unknown config key{hint} (`pipeline train MODEL --dry-run` lists them)")


def _mapping(value: Any, bad: Callable[[str], ConfigError]) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad(f"must be a mapping, got {value!r}")
    return value


def _one_of(value: Any, allowed: tuple[str, ...], bad: Callable[[str], ConfigError]) -> str:
    if value not in allowed:
        raise bad(f"{value!r} is not allowed; choose one of: {', '.join(allowed)}")
    return value


def _positive_int(value: Any, bad: Callable[[str], ConfigError]) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise bad(f"must be a positive integer, got {value!r}")
    return value


def _is_number(value: Any) -> bool:
    if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            return False
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
