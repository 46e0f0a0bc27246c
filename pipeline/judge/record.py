"""A cached judge's files, read as untrusted.

A dataset folder (or the bucket beside it) is written by whoever can write there, so the
record (`judges/judge-....json`: the key, the sha256 of the weights, the accuracies and chance
levels) is read with a bounded read and checked field by field, and the weights (`.pt`, a
state_dict) only after their sha256, with `torch.load(weights_only=True)`, and then as exactly
the network's tensors, shapes and dtypes. Anything else is one `PipelineError` naming the file.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import PipelineError

FORMAT = "pipeline-class-judge"
MAX_RECORD_BYTES = 4 * 2**20
MAX_WEIGHTS_BYTES = 256 * 2**20  # the network is ~5 MB; a bigger file is not one of ours
HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class JudgeInfo:
    """What a trained judge is and how far to trust it: its accuracy on the held-out split
    (val; MNIST's test) per group and per attribute, against the chance levels (1/classes;
    the held-out rate of the training split's most frequent class, what always answering it
    would score)."""

    weights: Path  # the cached .pt
    key: dict
    accuracy: dict[str, float]  # held-out accuracy per group / attribute name
    uniform: dict[str, float]
    majority: dict[str, float]
    train_rows: int
    val_rows: int
    seconds: float
    held_out: str  # the split graded on: val, else test (MNIST)
    reused: bool = field(default=False, compare=False)

    @property
    def val_acc(self) -> float:
        return sum(self.accuracy.values()) / len(self.accuracy)

    def metrics(self) -> dict[str, float]:
        """`judge_val_acc` and `judge_val_acc/<name>`, as a run logs them."""
        return {"judge_val_acc": self.val_acc} | {
            f"judge_val_acc/{name}": acc for name, acc in self.accuracy.items()
        }


def weights_path(record: Path) -> Path:
    return record.with_suffix(".pt")


def record_body(info: JudgeInfo, weights_sha256: str) -> dict:
    """The record of a judge, as JSON."""
    return {
        "format": FORMAT,
        "key": info.key,
        "weights_sha256": weights_sha256,
        "val_acc": info.val_acc,
        "accuracy": info.accuracy,
        "chance": {"uniform": info.uniform, "majority": info.majority},
        "train_rows": info.train_rows,
        "val_rows": info.val_rows,
        "held_out": info.held_out,
        "seconds": round(info.seconds, 2),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def read_record(path: Path) -> dict:
    """The record at `path`: a JSON object of our format with a key (checked further by
    `info_from` once its key is known to be the expected one)."""
    try:
        if path.stat().st_size > MAX_RECORD_BYTES:
            raise unusable(path, f"it is over {MAX_RECORD_BYTES >> 20} MiB")
        with open(path, "rb") as f:
            record = json.loads(f.read(MAX_RECORD_BYTES + 1))
    except OSError as exc:
        raise unusable(path, f"it cannot be read: {exc.strerror or exc}") from None
    except ValueError:
        raise unusable(path, "it is not JSON") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise unusable(path, f"it is not a {FORMAT} record")
    if not isinstance(record.get("key"), dict):
        raise unusable(path, "it has no key")
    return record


def info_from(record: dict, path: Path, reused: bool = True) -> JudgeInfo:
    """The record's numbers, each checked (its key must already be an expected one)."""
    key = record["key"]
    names = key["groups"] + key["attrs"]
    chance = record.get("chance") if isinstance(record.get("chance"), dict) else {}
    tables = {
        "accuracy": record.get("accuracy"),
        "chance.uniform": chance.get("uniform"),
        "chance.majority": chance.get("majority"),
    }
    for field_name, table in tables.items():
        if (
            not isinstance(table, dict)
            or list(table) != names
            or not all(_fraction(v) for v in table.values())
        ):
            raise unusable(path, f"{field_name} is not a fraction per judged name ({names})")
    for count in ("train_rows", "val_rows"):
        value = record.get(count)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise unusable(path, f"{count} is not a count")
    seconds = record.get("seconds")
    if not _number(seconds):
        raise unusable(path, "seconds is not a number")
    if record.get("held_out") not in ("val", "test"):
        raise unusable(path, "held_out is not val or test")
    if not isinstance(record.get("weights_sha256"), str) or not HEX64.fullmatch(
        record["weights_sha256"]
    ):
        raise unusable(path, "weights_sha256 is not 64 hex digits")
    return JudgeInfo(
        weights_path(path),
        key,
        {n: float(v) for n, v in tables["accuracy"].items()},
        {n: float(v) for n, v in tables["chance.uniform"].items()},
        {n: float(v) for n, v in tables["chance.majority"].items()},
        record["train_rows"],
        record["val_rows"],
        float(seconds),
        record["held_out"],
        reused=reused,
    )


def load_weights(record: dict, path: Path, expected: dict) -> dict:
    """The state_dict beside the record at `path`: its sha256 the record's, read with
    weights_only=True, and exactly the tensors (names, shapes, dtypes) of `expected`."""
    import torch

    from pipeline.data.shards import sha256_file

    weights = weights_path(path)
    if not weights.is_file():
        raise unusable(weights, "it is missing (its record is there)")
    if weights.stat().st_size > MAX_WEIGHTS_BYTES:
        raise unusable(weights, f"it is over {MAX_WEIGHTS_BYTES >> 20} MiB")
    if sha256_file(weights) != record.get("weights_sha256"):
        raise unusable(weights, f"it does not match the sha256 in {path.name}")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not a judge"
        why = f"it is not a state_dict of tensors ({type(exc).__name__})"
        raise unusable(weights, why) from None
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise unusable(weights, "it is not a state_dict of tensors")
    if set(state) != set(expected):
        odd = [str(name)[:60] for name in sorted(set(state) ^ set(expected), key=str)[:3]]
        raise unusable(weights, f"its tensors are not the judge network's (e.g. {odd})")
    for name, tensor in expected.items():
        got = state[name]
        if got.shape != tensor.shape or got.dtype != tensor.dtype:
            raise unusable(
                weights,
                f"{name} is {got.dtype} {tuple(got.shape)}, the network's "
                f"{tensor.dtype} {tuple(tensor.shape)}",
            )
        if got.is_floating_point() and not torch.isfinite(got).all():
            raise unusable(weights, f"{name} holds NaN or infinite values")
    return state


def unusable(path: Path, why: str) -> PipelineError:
    """The one-line error of a cached judge that cannot be used."""
    return PipelineError(
        f"cached judge {path} is unusable: {why}; delete it or train it again with "
        "`pipeline judge train ... --overwrite`"
    )


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _fraction(value) -> bool:
    return _number(value) and 0 <= value <= 1
