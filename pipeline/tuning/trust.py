"""What `pipeline tune --resume` trusts in a sweep's folder, and what it checks first.

Resuming hands the folder to Ray's `Tuner.restore`, which unpickles `tuner.pkl` and the trial
states: whoever can write that folder can run code as the user who resumes. Ray writes those
files itself, continuously, so this pipeline cannot sign them; the runs location must be
trusted, as the README's Security section says. What is checked here:

- a local sweep folder must belong to the user and not be writable by others (a group may
  share it: the group is trusted as the folder's owner chose);
- `sweep.json` must be a plan this pipeline wrote (its fields and their types), for the sweep
  asked for, in the folder it was found in, and logging to the tracking store in force now:
  the client's credentials go only to the store the user names (MLFLOW_TRACKING_URI), never
  to one a sweep folder names.
"""

from __future__ import annotations

import os
from dataclasses import MISSING, fields
from pathlib import Path

from pipeline.errors import PipelineError

STATE_FILES = ("sweep.json", "tuner.pkl", "trainable.pkl")  # and experiment_state-*.json


def check_private(folder: str) -> None:
    """A local sweep folder (and the state Ray unpickles from it) owned by this user and not
    writable by others; a folder in a bucket is as trusted as the bucket's policy makes it."""
    from pipeline import storage

    if storage.is_uri(folder):
        return
    root = Path(folder)
    paths = [root, *(root / name for name in STATE_FILES)]
    paths += sorted(root.glob("experiment_state-*.json"))
    for path in paths:
        try:
            info = path.lstat()
        except FileNotFoundError:
            continue
        if info.st_uid != os.getuid():
            raise PipelineError(
                f"{path} belongs to another user (uid {info.st_uid}): --resume unpickles the "
                "sweep's state, so its folder must be yours; copy the sweep to resume it"
            )
        if info.st_mode & 0o002:
            raise PipelineError(
                f"{path} is writable by every user (mode {info.st_mode & 0o777:o}): --resume "
                f"unpickles the sweep's state, so no one else may write it (chmod o-w {path})"
            )


def check_plan(data: dict, where: str, plan_type, *, name: str, storage: str, uri: str) -> dict:
    """`data` (a sweep.json) when it is a `plan_type` (SweepPlan) of sweep `name` in
    `storage`, logging to the store `uri` in force now; one line naming what differs."""
    expected = {f.name: f.type for f in fields(plan_type)}
    # A field with a default may be missing: a plan from before it was added.
    required = {
        f.name for f in fields(plan_type) if f.default is MISSING and f.default_factory is MISSING
    }
    missing, unknown = required - set(data), set(data) - set(expected)
    if missing or unknown:
        odd = ", ".join(sorted(missing | unknown))
        raise PipelineError(f"{where} is not a sweep plan this pipeline wrote (fields: {odd})")
    for key, kind in expected.items():
        want = {"str": str, "int": int, "dict": dict, "list": list}.get(str(kind).split("[")[0])
        if key in data and want is not None and not isinstance(data[key], want):
            raise PipelineError(f"{where}: {key} is not a {want.__name__}")
    for objective in data.get("objectives", []):
        if not (
            isinstance(objective, dict)
            and set(objective) == {"metric", "requested", "mode"}
            and all(isinstance(v, str) for v in objective.values())
            and objective["mode"] in ("min", "max")
        ):
            raise PipelineError(f"{where}: objectives holds {objective!r}, not an objective")
    if data["name"] != name:
        raise PipelineError(f"{where} is the plan of sweep {data['name']!r}, not {name!r}")
    if data["storage"] != storage:
        raise PipelineError(
            f"{where} keeps its state in {data['storage']}, not where it was found ({storage})"
        )
    parent_uri = data["parent"].get("uri") if data.get("parent") else uri
    if data["uri"] != uri or parent_uri != uri:
        raise PipelineError(
            f"sweep {name} logs to the MLflow store {data['uri']}, but MLFLOW_TRACKING_URI names "
            f"{uri}: set MLFLOW_TRACKING_URI to the sweep's store to resume it (credentials go "
            "only to the store you name, never to one a sweep folder names)"
        )
    return data
