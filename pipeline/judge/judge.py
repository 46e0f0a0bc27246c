"""A trained judge in use: which class a (generated) image shows, by a classifier that never
saw G.

An ACGAN's auxiliary classifier grades its own generator, and G learns what fools it; a judge
trained apart, on the real labels only, says whether the images show the intended class.

    judge = find_judge(dataset_path, label_plan.to_dict())   # None: not trained yet
    judge.accuracy(images_uint8_nhwc, y)   # {"class_acc": ..., "class_acc/hair": ...}
    judge.info                             # {"judge_val_acc": ..., "judge_val_acc/hair": ...}
    how_to_train("anime-64", label_plan.to_dict())  # "pipeline judge train anime-64 --group hair"
"""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np
import torch

from pipeline.errors import PipelineError
from pipeline.judge.cache import FOLDER, RECIPE, fetch_all, judge_key, label_part, subject
from pipeline.judge.net import JudgeNet, build, logits_to_labels, to_input
from pipeline.judge.record import JudgeInfo, info_from, load_weights, read_record


class Judge:
    """A trained judge network, in eval mode, with what its record says of it."""

    def __init__(
        self,
        net: JudgeNet,
        key: dict,
        details: JudgeInfo | None = None,
        device=None,
        batch: int = 256,
    ):
        """`details`: what its record says (None while it is being graded)."""
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.net = net.eval().to(self.device)
        self.key, self.details, self.batch = key, details, batch
        self.names: list[str] = key["groups"] + key["attrs"]
        self.shape = (key["height"], key["width"], key["channels"])

    @property
    def info(self) -> dict[str, float]:
        """Its val accuracy: `judge_val_acc` and `judge_val_acc/<group or attribute>`."""
        return self.details.metrics() if self.details else {}

    @torch.no_grad()
    def predict(self, images) -> np.ndarray:
        """uint8 images (N, H, W, C) of the dataset's shape -> int64 (N, groups + attrs): the
        class of each group, then 0/1 per attribute (as the label tensor y)."""
        images = torch.as_tensor(images)
        if images.dtype != torch.uint8 or tuple(images.shape[1:]) != self.shape:
            raise PipelineError(
                f"the judge reads uint8 images (N, {', '.join(map(str, self.shape))}), got "
                f"{images.dtype} {tuple(images.shape)}"
            )
        out = [
            logits_to_labels(*self.net(to_input(images[start : start + self.batch], self.device)))
            for start in range(0, len(images), self.batch)
        ]
        if not out:
            return np.zeros((0, len(self.names)), dtype=np.int64)
        return torch.cat(out).cpu().numpy()

    def accuracy(self, images, y_intended) -> dict[str, float]:
        """How often the judge sees the intended class: `class_acc` (mean over groups and
        attributes), `class_acc/<group>` and `class_acc/<attribute>`."""
        y = np.asarray(y_intended)
        if y.shape != (len(images), len(self.names)) or not np.issubdtype(y.dtype, np.integer):
            raise PipelineError(
                f"intended labels must be integers (N, {len(self.names)}) for "
                f"{', '.join(self.names)}; got {y.dtype} {y.shape} for {len(images)} images"
            )
        if len(y) == 0:
            raise PipelineError("no images to judge")
        return class_accuracy(self.predict(images), y, self.names)


def class_accuracy(judged: np.ndarray, intended: np.ndarray, names: list[str]) -> dict[str, float]:
    """`class_acc` (the mean over groups and attributes), `class_acc/<name>` for each: how
    often the judge's reading (N, groups + attrs) is the intended label."""
    per = {
        f"class_acc/{name}": float((judged[:, i] == intended[:, i]).mean())
        for i, name in enumerate(names)
    }
    return {"class_acc": float(np.mean(list(per.values())))} | per


def open_judge(record_path: Path, record: dict, device=None) -> Judge:
    """The judge whose record (already read, its key an expected one) is at `record_path`."""
    net = build(record["key"])
    net.load_state_dict(load_weights(record, record_path, net.state_dict()))
    return Judge(net, record["key"], info_from(record, record_path), device)


def find_judge(dataset_path, label_spec: dict, device=None) -> Judge | None:
    """The cached judge of this dataset (its fingerprint, image shape) for these groups and
    attributes (`label_spec` is `LabelPlan.to_dict()`), the newest when several recipes were
    trained; None when there is none. A cached judge that is damaged or not ours is a
    `PipelineError` naming its file."""
    from pipeline.data.shards import read_manifest
    from pipeline.data.staging import local_copy
    from pipeline.settings import resolve_dataset

    folder = local_copy(resolve_dataset(dataset_path))
    wanted = subject(judge_key(read_manifest(folder), label_spec, dict.fromkeys(RECIPE)))
    prefix = f"judge-{label_part(wanted)}-"
    fetch_all(folder, prefix)  # trained on another node since this copy was staged
    found = []
    for path in sorted((folder / FOLDER).glob(f"{prefix}*.json")):
        record = read_record(path)
        if subject(record["key"]) == wanted:
            found.append((path.stat().st_mtime_ns, path, record))
    if not found:
        return None
    _, path, record = max(found, key=lambda item: item[0])
    return open_judge(path, record, device)


def how_to_train(dataset_name: str, label_spec: dict) -> str:
    """The command that trains the judge `find_judge` looks for."""
    words = ["pipeline", "judge", "train", str(dataset_name)]
    for group in label_spec["group_names"]:
        words += ["--group", group]
    for attr in label_spec["attr_names"]:
        words += ["--attr", attr]
    return shlex.join(words)
