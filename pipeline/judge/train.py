"""Training a judge: a classifier of a dataset's real labels, graded on a held-out split.

The groups and attributes are chosen as conditional training chooses them
(`pipeline.training.labels.plan_labels`: by default every softmax group; CelebA's binary
attributes by name), and only rows with every chosen label present are used. The judge is
trained for a fixed number of epochs and graded once, after the last, on the val split (MNIST,
which has none: its test split); that split never picks an epoch, so its accuracy is an honest
estimate. The result is cached beside the
dataset (`pipeline.judge.cache`) and reused when the same judge is asked for again.

    info = train_judge("data/anime-64", groups=("hair",), epochs=30)
    info.accuracy["hair"], info.majority["hair"]   # val accuracy, and what chance scores
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from pipeline.errors import PipelineError
from pipeline.judge.cache import fetch, judge_key, record_path, save
from pipeline.judge.judge import Judge, open_judge
from pipeline.judge.net import augment, build, logits_to_labels, loss, to_input
from pipeline.judge.record import JudgeInfo, read_record, unusable, weights_path
from pipeline.training.labels import LabelPlan, plan_labels

SPLIT = "train"
HELD_OUT = ("val", "test")  # graded on the first present: MNIST has no val split


def judge_plan(manifest: dict, groups: tuple[str, ...], attrs: tuple[str, ...]) -> LabelPlan:
    """The label plan of the judge, with the judge's own words for what is missing."""
    name = manifest["name"]
    available = [g["name"] for g in (manifest.get("labels") or {}).get("groups", [])]
    attributes = (manifest.get("attributes") or {}).get("names", [])
    if not available and not attributes:
        raise PipelineError(
            f"dataset {name} has no labels to judge: ingest one with labels (e.g. `pipeline "
            "ingest images --labels tags.csv`, or MNIST, or CelebA's attributes)"
        )
    unknown = [g for g in groups if g not in available]
    if unknown:
        raise PipelineError(
            f"dataset {name} has no label group {unknown[0]!r}; it has: "
            f"{', '.join(available) or 'none'}"
        )
    missing = [a for a in attrs if a not in attributes]
    if missing:
        raise PipelineError(
            f"dataset {name} has no attribute {missing[0]!r}; it has: "
            f"{', '.join(attributes) or 'none'}"
        )
    if not groups and not attrs and not available:
        raise PipelineError(
            f"dataset {name} has binary attributes but no label groups: choose attributes "
            f"with --attr, e.g. --attr {attributes[0]}"
        )
    return plan_labels(manifest, groups, attrs)


def train_judge(
    dataset_path,
    groups: tuple[str, ...] = (),
    attrs: tuple[str, ...] = (),
    epochs: int = 30,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    device=None,
    say: Callable[[str], None] = print,
    overwrite: bool = False,
) -> JudgeInfo:
    """Train (or find cached) the judge of `dataset_path`'s groups and attributes; its val
    accuracies and chance levels. `overwrite` trains it again even when cached."""
    from pipeline.data.reader import ShardDataset
    from pipeline.data.shards import read_manifest
    from pipeline.data.staging import local_copy
    from pipeline.settings import resolve_dataset

    # Check everything before the cache is touched: a refused judge leaves nothing behind.
    if epochs < 1 or batch_size < 2 or not lr > 0:
        raise PipelineError(
            f"epochs {epochs}, batch size {batch_size}, lr {lr}: need epochs >= 1, batch size "
            ">= 2 (batch norm) and lr > 0"
        )
    folder = local_copy(resolve_dataset(dataset_path), say)
    manifest = read_manifest(folder)
    plan = judge_plan(manifest, tuple(groups), tuple(attrs))
    if SPLIT not in manifest["splits"]:
        raise PipelineError(f"dataset {manifest['name']} has no {SPLIT} split to train a judge on")
    held_out = next((s for s in HELD_OUT if s in manifest["splits"]), None)
    if held_out is None:
        raise PipelineError(
            f"dataset {manifest['name']} has no val (or test) split to grade a judge on; ingest it "
            "with one (`pipeline ingest images ... --val 0.15`; CelebA has one, MNIST a test split)"
        )
    recipe = {"epochs": epochs, "seed": seed, "batch_size": batch_size, "lr": lr,
              "flip": _flips(manifest)}  # fmt: skip
    key = judge_key(manifest, plan.to_dict(), recipe)
    if not overwrite and (cached := _cached(folder, key)) is not None:
        return cached

    # Load the labelled rows.
    train, val = ShardDataset(folder, SPLIT), ShardDataset(folder, held_out)
    rows, val_rows = plan.labelled_rows(train), plan.labelled_rows(val)
    if len(rows) < 2 or len(val_rows) == 0:
        raise PipelineError(
            f"dataset {manifest['name']} has {len(rows)} {SPLIT} and {len(val_rows)} "
            f"{held_out} image(s) with every label of {', '.join(_names(plan))}: too few to judge"
        )
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    loader = train.loader(min(batch_size, len(rows)), seed=seed, rows=rows, columns=plan.columns)

    # Train.
    started = time.perf_counter()
    say(
        f"training a judge of {', '.join(_names(plan))} on {manifest['name']}: {len(rows)} "
        f"images, {epochs} epochs, on {device.type}"
    )
    # The caller's random state is left as it was (a training run may call this).
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        net = build(key).to(device)
        fit(net, loader, plan, recipe, device, say)

    # Grade on the held-out split, once.
    judge = Judge(net, key, device=device)
    accuracy = _accuracy(judge, val, val_rows, plan)
    uniform, majority = chance_levels(plan, train, rows, val, val_rows)
    info = JudgeInfo(
        weights_path(record_path(folder, key)),
        key,
        accuracy,
        uniform,
        majority,
        len(rows),
        len(val_rows),
        time.perf_counter() - started,
        held_out,
    )
    save(folder, net.state_dict(), info, say)
    return info


def fit(net, loader, plan: LabelPlan, recipe: dict, device, say: Callable[[str], None]) -> None:
    """Train `net` for the recipe's epochs: AdamW, the rate warming up over the first 15% of
    the steps and then falling along a cosine (one cycle), the batches augmented."""
    epochs = recipe["epochs"]
    optimizer = torch.optim.AdamW(net.parameters(), lr=recipe["lr"], weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=recipe["lr"], total_steps=epochs * len(loader), pct_start=0.15
    )
    generator = torch.Generator().manual_seed(recipe["seed"])
    for epoch in range(epochs):
        net.train()
        loader.set_epoch(epoch)
        total, hits, seen = 0.0, 0, 0
        for batch in loader.numpy_batches():
            y = torch.from_numpy(plan.labels(batch)).to(device)
            x = to_input(torch.from_numpy(batch["image"]), device)
            group_logits, attr_logits = net(augment(x, recipe["flip"], generator))
            batch_loss = loss(group_logits, attr_logits, y)
            optimizer.zero_grad(set_to_none=True)
            batch_loss.backward()
            optimizer.step()
            schedule.step()
            total += batch_loss.item() * len(y)  # a sync per step: the batches are small anyway
            hits += int((logits_to_labels(group_logits, attr_logits) == y).sum())
            seen += len(y)
        say(
            f"epoch {epoch + 1}/{epochs}  loss {total / seen:.4f}  train acc (augmented) "
            f"{hits / seen / y.shape[1]:.3f}"
        )


def chance_levels(plan: LabelPlan, train, rows, val, val_rows) -> tuple[dict, dict]:
    """Per group and attribute: 1/classes (1/2), and the val rate of the training split's
    most frequent class: the accuracies a judge that learnt nothing reaches."""
    y_train = plan.labels(train.take(rows, columns=plan.columns))
    y_val = plan.labels(val.take(val_rows, columns=plan.columns))
    counts = list(plan.classes.groups) + [2] * plan.classes.binary
    uniform, majority = {}, {}
    for i, (name, classes) in enumerate(zip(_names(plan), counts, strict=True)):
        most = np.bincount(y_train[:, i], minlength=classes).argmax()
        uniform[name] = 1 / classes
        majority[name] = float((y_val[:, i] == most).mean())
    return uniform, majority


def _accuracy(judge: Judge, val, val_rows: np.ndarray, plan: LabelPlan) -> dict[str, float]:
    hits = np.zeros(len(_names(plan)), dtype=np.int64)
    for start in range(0, len(val_rows), 1024):  # a chunk at a time: CelebA's val is 20k images
        batch = val.take(val_rows[start : start + 1024], columns=plan.columns)
        hits += (judge.predict(batch["image"]) == plan.labels(batch)).sum(axis=0)
    return {name: float(h / len(val_rows)) for name, h in zip(_names(plan), hits, strict=True)}


def _cached(folder, key: dict) -> JudgeInfo | None:
    """The judge with exactly this key, from the dataset's cache (or beside the dataset at a
    URI it was staged from), its weights checked; None when there is none."""
    path = record_path(folder, key)
    if not path.is_file() and not fetch(folder, path):
        return None
    record = read_record(path)
    if record["key"] != key:
        raise unusable(path, "its key is not the one its name stands for")
    return open_judge(path, record).details


def _flips(manifest: dict) -> bool:
    """Mirrored images keep their class, except digits'."""
    return manifest["source"]["kind"] != "mnist"


def _names(plan: LabelPlan) -> list[str]:
    return list(plan.group_names) + list(plan.attr_names)
