"""Checkpoints: plain dicts of state_dicts plus the config, loaded with weights_only=True.

One file, `checkpoint.pt`, holds the task's state (its models and optimizers: a GAN's G, D,
G_ema, opt_g, opt_d), the position (epoch, batch in epoch, step, images seen), rank 0's RNG
states, the resolved config and the label plan. The learning-rate schedule is a pure function
of the epoch and the config, so it has no state to save: a resumed (or PBT-mutated) config's
rates apply from the next step on. At the end of a run the task's EXPORT alone is written to
its EXPORT_FILE (`save_generator`); `load_state` reads either kind, from a path or a run.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import torch

from pipeline.errors import PipelineError

FORMAT = "pipeline-gan-checkpoint"
VERSION = 1
FILE = "checkpoint.pt"
# What using a trained model needs of a run besides its task's EXPORT (G_ema; C and the mean
# pixel): how to build it and how far it trained, nothing to train on.
ABOUT_KEYS = ("config", "labels", "image", "epoch", "step", "images_seen")


def save(path: Path, state: dict) -> Path:
    """Write `state` (plus format tags and RNG states) atomically to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": list(random.getstate()[1]),
        },
        **state,
    }
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def save_generator(state: dict, path: Path, export: tuple[str, ...]) -> Path:
    """The model-only file of a training checkpoint's `state` (a run's final G_ema, or C for
    a completion run; a sweep's exported best): smaller, and all that using it needs."""
    return save(path, {key: state[key] for key in (*ABOUT_KEYS, *export)})


def load(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint of ours; a clear error for anything else."""
    path = Path(path)
    if path.is_dir():
        path = path / FILE
    if not path.is_file():
        raise PipelineError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not ours"
        raise PipelineError(
            f"{path} is not a pipeline checkpoint ({type(exc).__name__}); pass a checkpoint.pt "
            "written by `pipeline train` or an MLflow run id"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise PipelineError(f"{path} is not a pipeline checkpoint (no {FORMAT!r} tag)")
    if state.get("version", 0) > VERSION:
        raise PipelineError(f"{path} was written by a newer pipeline; upgrade to read it")
    return state


def load_state(source: str, *model_files: str) -> dict:
    """A checkpoint's state from a path, or from an MLflow run id: the first of its
    `model_files` it has (the final model alone), else its last `checkpoints/checkpoint.pt`."""
    path = Path(source).expanduser()
    if not path.exists():
        from pipeline import tracking

        uri = tracking.tracking_uri()
        handle = tracking.find_run(uri, source)
        for name in (*model_files, "checkpoints/checkpoint.pt"):
            path = tracking.download_artifact(handle, name)
            if path is not None:
                break
        if path is None:
            raise PipelineError(f"MLflow run {source} has no model or checkpoint yet")
    return load(path)


def restore_rng(state: dict) -> None:
    rng = state.get("rng") or {}
    if "torch" in rng:
        torch.set_rng_state(rng["torch"])
    if rng.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    if rng.get("python"):
        random.setstate((3, tuple(rng["python"]), None))


def local_folder(location: str | Path) -> Path | None:
    """A checkpoint folder (holding FILE) on this machine: a local one as it is, one at a URI
    (a run or sweep in a bucket) downloaded once into the cache; None when there is none."""
    from pipeline import storage

    if not storage.is_uri(location):
        folder = Path(location)
        return folder if (folder / FILE).is_file() or folder.is_file() else None
    r = storage.remote(str(location))
    if not storage.exists(r, r.at(FILE)):
        return None
    folder = storage.cache_dir() / "checkpoints" / storage.slug(r.uri)
    if not (folder / FILE).is_file():
        storage.download(r, r.at(FILE), folder / FILE)
    return folder


def location_of(checkpoint) -> str:
    """A Ray checkpoint's folder as a local path or a URI (its `.path` has no scheme)."""
    kind = checkpoint.filesystem.type_name.removeprefix("py::")  # pipeline.waiting_fs's
    return checkpoint.path if kind == "local" else f"{kind}://{checkpoint.path}"


def config_from_checkpoint(state: dict):
    """The TrainConfig a checkpoint was written with."""
    from pipeline.config import from_dict
    from pipeline.training.config import TrainConfig

    return from_dict(TrainConfig, state["config"])
