"""`pipeline doctor`: what this machine and cluster offer, and what is wrong, before a run
finds out (in the spirit of `mlflow doctor` and `ray status`, for this pipeline).

    findings = doctor()
    for f in findings: print(f.status, f.name, f.detail)      # "ok" | "warn" | "fail"

Each check is one function in CHECKS: torch and CUDA, the Ray cluster, the three locations
(datasets, runs, the node-local cache: readable, writable, seen from every node), the MLflow
store, the FID weights. A check never raises: what it finds wrong is a "fail" finding with
the reason and the fix, so one run says everything at once.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import PipelineError, one_line


@dataclass(frozen=True)
class Finding:
    name: str
    status: str  # "ok", "warn" (works, but not as one may think), "fail"
    detail: str


def doctor(connect_ray: bool = True) -> list[Finding]:
    """Run every check; `connect_ray=False` skips reaching a Ray cluster at RAY_ADDRESS."""
    context: dict = {"connect_ray": connect_ray}
    findings = []
    for check in CHECKS:
        try:
            findings.extend(check(context))
        except PipelineError as error:
            findings.append(Finding(check.__name__.removeprefix("check_"), "fail", str(error)))
    return findings


def check_torch(context: dict) -> list[Finding]:
    import torch

    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        return [Finding("torch", "ok", f"{torch.__version__}, CUDA {torch.version.cuda}: {names}")]
    return [Finding("torch", "ok", f"{torch.__version__}, no CUDA GPU: training runs on the CPU")]


def check_ray(context: dict) -> list[Finding]:
    import ray

    from pipeline import cluster

    address = cluster.ray_address()
    if not address:
        return [
            Finding(
                "ray",
                "ok",
                f"{ray.__version__}; no RAY_ADDRESS: each command starts a local Ray on this "
                f"machine ({os.cpu_count()} CPUs)",
            )
        ]
    if not context["connect_ray"]:
        return [Finding("ray", "warn", f"RAY_ADDRESS={address}: not reached (--no-ray)")]
    cluster.start_ray()
    nodes = cluster.alive_nodes()
    have = cluster.ray_resources()
    context["nodes"] = nodes
    return [
        Finding(
            "ray",
            "ok",
            f"{ray.__version__} at {address}: {len(nodes)} node(s), {have.cpu:g} CPU, "
            f"{have.gpu:g} GPU",
        )
    ]


def check_locations(context: dict) -> list[Finding]:
    from pipeline import storage
    from pipeline.settings import data_root, runs_root

    findings = []
    for name, location in (
        ("PIPELINE_DATA", data_root()),
        ("PIPELINE_RUNS", runs_root()),
        ("PIPELINE_CACHE", str(storage.cache_dir())),
    ):
        try:
            detail = _writable(location)
            if name != "PIPELINE_CACHE" and not storage.is_uri(location):
                detail += _seen_by_every_node(name, location, context.get("nodes", []))
            findings.append(Finding(name, "ok", f"{location}: {detail}"))
        except PipelineError as error:
            findings.append(Finding(name, "fail", str(error)))
    return findings


def check_mlflow(context: dict) -> list[Finding]:
    import mlflow

    from pipeline import tracking
    from pipeline.cluster import check_tracking
    from pipeline.tracking.store import sqlite_path, uri_scheme

    uri = tracking.tracking_uri()
    check_tracking(uri, context.get("nodes", []))
    path, _ = sqlite_path(uri) if uri_scheme(uri) == "sqlite" else (None, "")
    if path is not None and not path.exists():
        detail = f"{uri}: not there yet (the first run creates it); client {mlflow.__version__}"
        return [Finding("mlflow", "ok", detail)]
    tracking.prepare_store(uri)
    return [Finding("mlflow", "ok", f"{uri} answers (client {mlflow.__version__})")]


def check_journals(context: dict) -> list[Finding]:
    """Runs whose record is still on this node's disk (MLflow was away when they ended)."""
    from pipeline.tracking import journal

    root = journal.journals_root()
    left = journal.all_undelivered(root)
    if not left:
        return [Finding("journals", "ok", f"every run's record is delivered ({root})")]
    names = ", ".join(f"{f} ({journal.header(journal.run_journals(f)[0]).get('name')})"
                      for f in left[:5])  # fmt: skip
    more = f" and {len(left) - 5} more" if len(left) > 5 else ""
    detail = f"{len(left)} run(s) not delivered to MLflow yet: {names}{more}; pipeline sync PATH"
    return [Finding("journals", "warn", detail)]


def check_fid(context: dict) -> list[Finding]:
    from pipeline.metrics.weights import resolve

    backbone = resolve(download=False, say=lambda line: None)
    if backbone.standin:
        return [
            Finding(
                "fid",
                "warn",
                "no Inception weights (pt_inception-2015-12-05-6726825d.pth): FID uses the "
                "stand-in, whose numbers compare only with each other; set "
                "PIPELINE_FID_WEIGHTS or let the first run download them",
            )
        ]
    return [Finding("fid", "ok", f"Inception weights {backbone.path}")]


CHECKS: tuple[Callable[[dict], list[Finding]], ...] = (
    check_torch,
    check_ray,
    check_locations,
    check_mlflow,
    check_journals,
    check_fid,
)


def _writable(location: str) -> str:
    """Write, read back and delete a probe file at `location` (a folder, made if missing, or
    a URI); a PipelineError saying why not."""
    from pipeline import storage

    probe = f".pipeline-doctor-{uuid.uuid4().hex}"
    if storage.is_uri(location):
        r = storage.remote(location)
        storage.check_bucket(r)
        storage.write_json(r, r.at(probe), {"probe": True})
        if storage.read_json(r, r.at(probe)) != {"probe": True}:
            raise PipelineError(f"{location}: a probe object written there did not read back")
        storage.delete(r, r.at(probe))
        return "readable and writable"
    folder = Path(location)
    existing = next(p for p in (folder, *folder.parents) if p.exists())  # made on first use
    try:
        (existing / probe).write_text("probe")
        (existing / probe).unlink()
    except OSError as error:
        raise PipelineError(f"{existing} is not writable: {one_line(error)}") from None
    if existing != folder:
        return f"not there yet; {existing} is writable (the first command makes it)"
    return "readable and writable"


def _seen_by_every_node(what: str, location: str, nodes: list[dict]) -> str:
    from pipeline.cluster import check_seen

    if len(nodes) < 2:
        return ""
    check_seen(what, location, nodes)
    return f", seen by all {len(nodes)} nodes"
