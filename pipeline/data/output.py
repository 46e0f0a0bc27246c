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
    manifest = read_own_json(manifest_path) if manifest_path.exists() else None
    state = read_own_json(state_path) if state_path.exists() else None
    found = _claim(str(out), key, overwrite, manifest, state, any(out.iterdir()))
    if found == "replace":
        remove_dataset(out)
        return None
    return found


def read_own_json(path: Path) -> dict:
    """A manifest or ingest state as far as it can be read: {} when it is not a JSON object
    (a damaged file is then someone else's dataset, refused without --overwrite, not a
    traceback)."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _claim(where: str, key: str, overwrite: bool, manifest, state, nonempty: bool):
    """What an output holding `manifest` / `state` (None: absent) means for an ingest of
    `key`: the manifest (done), None (write or finish it), "replace" (with --overwrite), or a
    PipelineError (another dataset, or files that are not ours)."""
    if manifest is not None:
        if manifest.get("ingest_key") == key and not overwrite:
            return manifest
        if not overwrite:
            raise PipelineError(
                f"{where} already holds dataset {manifest.get('name', '?')!r} made from another "
                "source or with other options; pass --overwrite to replace it, or choose another "
                "--out"
            )
        return "replace"
    if state is not None:
        if state.get("ingest_key") == key and not overwrite:
            return None  # resume the interrupted ingest
        if not overwrite:
            raise PipelineError(
                f"{where} holds an unfinished ingest of {state.get('name', '?')!r} with other "
                "options; rerun that ingest to finish it, pass --overwrite, or choose another --out"
            )
        return "replace"
    if nonempty:
        raise PipelineError(
            f"{where} is not empty and is not a pipeline dataset; choose an empty or new --out"
        )
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
    return _ours(path.relative_to(out).as_posix())


def _ours(relative: str) -> bool:
    """A dataset's own file, by its path inside the dataset: a shard or cached statistics."""
    name = relative.rsplit("/", 1)[-1]
    return relative.split("/", 1)[0] == "stats" or name.startswith(("shard-", ".shard-"))


# -- a dataset in a bucket -------------------------------------------------------------------


def claim_remote(r, key: str, overwrite: bool) -> dict | None:
    """As `claim_output`, for a dataset at a URI (`pipeline.storage.Remote`): its manifest
    when it is done, None to write (or finish uploading) it; another dataset is replaced only
    with `overwrite`, other objects never."""
    from pipeline import storage

    manifest = storage.read_json(r, r.at(shards.MANIFEST))
    state = storage.read_json(r, r.at(STATE))
    nonempty = bool(storage.listing(r, r.path))
    found = _claim(r.uri, key, overwrite, manifest, state, nonempty)
    if found == "replace":
        remove_remote_dataset(r)
        return None
    return found


def remove_remote_dataset(r) -> None:
    """Delete a dataset's own objects at a URI, the manifest first (never half-valid)."""
    from pipeline import storage

    files = [path for path, _ in storage.listing(r, r.path)]
    own = {shards.MANIFEST, STATE}
    foreign = [p for p in files if p not in own and not _ours(p)]
    if foreign:
        raise PipelineError(
            f"{r.uri} holds objects that are not shards ({foreign[0]}); remove them yourself or "
            "choose another --out"
        )
    for name in (shards.MANIFEST, STATE):
        if name in files:
            storage.delete(r, r.at(name))
    for path in files:
        if path not in own:
            storage.delete(r, r.at(path))


def publish(folder: Path, r, manifest: dict, key: str) -> None:
    """Upload the finished dataset in `folder` to `r`: a marker first, the shards an earlier
    run did not upload whole (an object appears only once complete), the manifest last."""
    from pipeline import storage

    storage.write_json(r, r.at(STATE), {"ingest_key": key, "name": manifest["name"]})
    present = dict(storage.listing(r, r.path))
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            if present.get(shard["file"]) != shard["bytes"]:
                storage.upload(folder / shard["file"], r, r.at(shard["file"]))
    storage.write_json(r, r.at(shards.MANIFEST), manifest)  # the commit point
    storage.delete(r, r.at(STATE))
