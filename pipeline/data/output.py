"""The output folder of an ingest: claimed before any shard is written, and only ever
cleared of our own files.

A folder holding the same ingest (same source and options, by key) is done or resumed; one
holding another dataset is replaced only with `--overwrite`; anything that is not a pipeline
dataset is never touched, since deleting a user's files is not ours to do.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pipeline.data import shards
from pipeline.errors import PipelineError

STATE = ".ingest.json"  # written first, removed last: this folder holds an unfinished ingest


def claim_output(out: Path, key: str, overwrite: bool) -> dict | None:
    """Make `out` ready for this ingest. Returns the manifest when it is already done.

    Refuses a folder that holds another dataset (unless `overwrite`) or anything that is not a
    pipeline dataset at all (never, since deleting a user's files is not ours to do).
    """
    manifest_path, state_path = out / shards.MANIFEST, out / STATE
    if not out.exists():
        out.mkdir(parents=True)
        return None
    if not out.is_dir():
        raise PipelineError(f"output {out} exists and is not a folder; choose another --out")
    if manifest_path.exists():
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError:
            manifest = {}
        if manifest.get("ingest_key") == key and not overwrite:
            return manifest
        if not overwrite:
            raise PipelineError(
                f"{out} already holds dataset {manifest.get('name', '?')!r} made from another "
                "source or with other options; pass --overwrite to replace it, or choose another "
                "--out"
            )
    elif state_path.exists():
        state = json.loads(state_path.read_text())
        if state.get("ingest_key") == key and not overwrite:
            return None  # resume the interrupted ingest
        if not overwrite:
            raise PipelineError(
                f"{out} holds an unfinished ingest of {state.get('name', '?')!r} with other "
                "options; rerun that ingest to finish it, pass --overwrite, or choose another --out"
            )
    elif any(out.iterdir()):
        raise PipelineError(
            f"{out} is not empty and is not a pipeline dataset; choose an empty or new --out"
        )
    else:
        return None
    remove_dataset(out)
    return None


def remove_dataset(out: Path) -> None:
    """Delete a dataset's own files (manifest first, so it is never half-valid)."""
    for name in (shards.MANIFEST, STATE):
        (out / name).unlink(missing_ok=True)
    for child in sorted(out.iterdir()):
        if child.is_dir():
            foreign = [p for p in child.rglob("*") if p.is_file() and not _is_ours(p, out)]
            if foreign:
                raise PipelineError(
                    f"{child} holds files that are not shards ({foreign[0].name}); "
                    "remove them yourself or choose another --out"
                )
            shutil.rmtree(child)


def _is_ours(path: Path, out: Path) -> bool:
    relative = path.relative_to(out)
    return relative.parts[0] == "stats" or path.name.startswith(("shard-", ".shard-"))
