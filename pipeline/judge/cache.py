"""Trained judges cached beside their dataset, as FID reference statistics are.

`<dataset>/judges/judge-<labels>-<digest12>.pt` holds the network's state_dict (tensors only)
and the `.json` beside it the record: the key (everything that changes the judge: the
dataset's fingerprint, its groups, attributes and class names, the image shape, the
architecture and the training recipe), the sha256 of the `.pt`, and the held-out accuracies with
their chance levels. The `.pt` is written first and the record last, each under a working
name and renamed, so a record always describes the weights beside it.

A cached judge is read as untrusted: `pipeline.judge.record`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.judge.net import ARCHITECTURE
from pipeline.judge.record import FORMAT, JudgeInfo, record_body, weights_path

FOLDER = "judges"
# How a judge was trained; the rest of its key says what it judges. `find_judge` takes any
# recipe (the newest judge), `train_judge` only its own.
RECIPE = ("epochs", "seed", "batch_size", "lr", "flip")


def judge_key(manifest: dict, label_spec: dict, recipe: dict) -> dict:
    """Everything that changes a judge (`label_spec` is `LabelPlan.to_dict()`)."""
    image = manifest["image"]
    return {
        "format": FORMAT,
        "architecture": ARCHITECTURE,
        "dataset": manifest["name"],
        "fingerprint": manifest["fingerprint"],
        "groups": list(label_spec["group_names"]),
        "class_names": [list(names) for names in label_spec["class_names"]],
        "attrs": list(label_spec["attr_names"]),
        "height": image["height"],
        "width": image["width"],
        "channels": image["channels"],
        **{name: recipe[name] for name in RECIPE},
    }


def subject(key: dict) -> dict:
    """The part of a key that says what is judged (not how the judge was trained)."""
    return {name: value for name, value in key.items() if name not in RECIPE}


def label_part(key: dict) -> str:
    """The readable part of the file name: the judged names, as plain characters (they come
    from a manifest, which anyone who writes the dataset writes)."""
    names = [re.sub(r"[^A-Za-z0-9_]+", "_", n) for n in key["groups"] + key["attrs"]]
    text = "-".join(names)
    if len(text) > 48:
        text = f"{len(key['groups'])}groups-{len(key['attrs'])}attrs"
    return text


def record_path(folder: Path, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return Path(folder) / FOLDER / f"judge-{label_part(key)}-{digest}.json"


def save(folder: Path, state_dict: dict, info: JudgeInfo, say: Callable[[str], None]) -> Path:
    """Write the weights, then the record, atomically; put both beside a dataset at a URI.
    Returns the weights' path."""
    import torch

    from pipeline.data.shards import sha256_file
    from pipeline.data.staging import put_beside

    record = record_path(folder, info.key)
    weights = weights_path(record)
    temporary = [p.with_name(f".{p.name}.tmp-{os.getpid()}") for p in (weights, record)]
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.unlink(missing_ok=True)  # never the old record beside new weights
        torch.save({name: t.detach().cpu() for name, t in state_dict.items()}, temporary[0])
        os.replace(temporary[0], weights)
        body = record_body(info, sha256_file(weights))
        temporary[1].write_text(json.dumps(body, indent=2) + "\n")
        os.replace(temporary[1], record)
    except OSError as exc:
        raise PipelineError(f"cannot cache the judge in {record.parent} ({exc})") from None
    finally:
        for tmp in temporary:
            tmp.unlink(missing_ok=True)
    for path in (weights, record):  # the record last: a reader that sees it finds the weights
        put_beside(folder, str(path.relative_to(folder)), say)
    return weights


def fetch(folder: Path, record: Path) -> bool:
    """The judge `record` names, fetched from beside the dataset a staged copy came from;
    False when it is not there (or the bucket is out of reach: training it here still works)."""
    from pipeline.data.staging import fetch_beside

    try:
        return fetch_beside(folder, str(weights_path(record).relative_to(folder))) and (
            fetch_beside(folder, str(record.relative_to(folder)))
        )
    except PipelineError:
        return False


def fetch_all(folder: Path, prefix: str) -> None:
    """Every judge beside the dataset a staged copy came from whose name starts with
    `prefix` and that the copy lacks."""
    from pipeline import storage
    from pipeline.data.staging import origin
    from pipeline.data.validate import relative_inside

    uri = origin(folder)
    if uri is None:
        return
    r = storage.remote(uri)
    try:
        listed = storage.listing(r, r.at(FOLDER))
    except PipelineError:
        return
    for relative, _size in listed:
        if "/" in relative or not relative.startswith(prefix) or not relative.endswith(".json"):
            continue
        record = Path(folder) / FOLDER / relative_inside(relative, f"{uri}/{FOLDER}")
        if not record.is_file():
            fetch(Path(folder), record)
