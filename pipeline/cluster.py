"""The one place that starts or reaches Ray, checks what a run asks against what there is, and
turns Ray's errors into one line.

    cluster.check_fits(config, cluster.local_resources())    # before Ray starts (a local Ray)
    cluster.start_ray()                                      # RAY_ADDRESS, or a local Ray
    cluster.check_fits(config, cluster.ray_resources())      # the cluster Ray sees
    result = cluster.fit(trainer)                            # a worker's error as one line

`pipeline train` asks for one run of `workers` x (`cpus_per_worker`, `gpus_per_worker`);
`pipeline tune` for as many such trials at once as fit (`trials_at_once`). A request that
cannot fit is refused with a `PipelineError` saying what to lower, because Ray would otherwise
wait for ever for resources that never come. Checks that every node sees the run's locations
belong here too, beside these.

Ray, torch and mlflow are imported inside functions: `pipeline --help` imports none of them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.settings import verbose


@dataclass(frozen=True)
class Resources:
    """What a place to run has: CPUs and GPUs, and its name in messages."""

    cpu: float
    gpu: float
    where: str  # "this machine" or "the Ray cluster"


def is_local() -> bool:
    """True when `start_ray` starts a Ray on this machine (no RAY_ADDRESS to reach)."""
    return not os.environ.get("RAY_ADDRESS")


def local_resources() -> Resources:
    """This machine, before a local Ray starts on it."""
    import torch

    return Resources(os.cpu_count() or 1, torch.cuda.device_count(), "this machine")


def ray_resources() -> Resources:
    """The Ray cluster's total resources (`start_ray` first)."""
    import ray

    have = ray.cluster_resources()
    return Resources(have.get("CPU", 0), have.get("GPU", 0), "the Ray cluster")


def ray_address() -> str | None:
    """RAY_ADDRESS, the cluster's GCS address (None: a local Ray); a dashboard URL there is
    refused with what to do instead."""
    address = os.environ.get("RAY_ADDRESS")
    if address and address.startswith(("http://", "https://")):
        raise PipelineError(
            f"RAY_ADDRESS={address} is a dashboard URL; `pipeline` reaches the cluster at its "
            "GCS address (host:6379, or auto). Keep the URL in RAY_API_SERVER_ADDRESS for "
            "`ray job submit`"
        )
    return address


_without_dashboard = False  # this process's own Ray was started without its dashboard


def start_ray(dashboard: bool = True) -> None:
    """Reach the Ray cluster at RAY_ADDRESS, or start a local Ray; once per process.

    `dashboard=False`: a local Ray without its dashboard (about 1 s less to start), for work
    that starts no Ray Train worker group (solo runs): Ray Train's placement-group cleaner
    needs the dashboard's state API."""
    import ray

    global _without_dashboard
    address = ray_address()
    if ray.is_initialized():
        if not (dashboard and _without_dashboard):
            return
        # This process's own Ray started without the dashboard, and Ray Train needs it now
        # (one process running both kinds: tests; a command runs one).
        ray.shutdown()
    if verbose():
        os.environ.setdefault("PIPELINE_RAY_LOG_LEVEL", "INFO")
    else:
        quiet_ray_console()
    # Ray Train polls worker health every 2 s by default: a short fit spends much of its
    # wind-down waiting for that poll, and 0.5 s took about 6 s off a tiny 2-worker fit.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    if not address:
        # One machine is never drained by a cluster: Ray Train's preemption watcher would only
        # add an actor process (and its start-up) to every fit, and to every sweep trial.
        os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    try:
        if address:
            # Workers on other nodes read datasets and write runs where this process does (a
            # local Ray's workers inherit this process's environment).
            ray.init(
                address=address,
                runtime_env={"env_vars": worker_env()},
                log_to_driver=True,
                logging_level=logging.INFO if verbose() else logging.ERROR,
            )
        else:
            start_own_ray(dashboard)
            _without_dashboard = not dashboard
    except (ConnectionError, RuntimeError) as exc:
        raise PipelineError(f"cannot start or reach Ray ({address or 'local'}): {exc}") from None


def start_own_ray(dashboard: bool = True) -> None:
    """Start a local Ray whose every process knows this instance's address.

    Ray Train's placement-group cleaner (an actor) asks Ray's state API with no address; with a
    second Ray instance on the host (a `ray start` cluster, another `pipeline` command) it
    finds two, dies with "Found multiple active Ray instances", and the CPUs of finished and
    ASHA-stopped fits are never freed: the next fit waits for ever. So the GCS port is chosen
    here and RAY_ADDRESS set to it while Ray starts: the raylet, and every worker it forks,
    inherit it. This process gives both variables back afterwards (the next `start_ray`, after
    a shutdown, starts a fresh instance again)."""
    import ray

    own_token()
    port = free_port()
    own = {"RAY_GCS_SERVER_PORT": str(port), "RAY_ADDRESS": f"127.0.0.1:{port}"}
    before = {name: os.environ.get(name) for name in own}
    os.environ.update(own)
    try:
        # address="local": start one even though RAY_ADDRESS is set.
        ray.init(
            address="local",
            include_dashboard=dashboard,
            log_to_driver=True,
            logging_level=logging.INFO if verbose() else logging.ERROR,
        )
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def own_token() -> None:
    """A Ray token readable by this user alone, written before a local Ray starts.

    A local `ray.init` turns token auth on (Ray 2.59+) and, where there is no token yet, writes
    one to ~/.ray/auth_token under the process umask: readable by every user of the machine on
    most systems, and whoever reads it can run code as you on that Ray. So a missing token is
    written here first, mode 600 (at RAY_AUTH_TOKEN_PATH where set); an existing one is used as
    it is. Two commands starting at once: the first link wins, both use its token."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled" or os.environ.get(
        "RAY_AUTH_TOKEN"
    ):
        return
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if path.exists():
        return
    import secrets

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    draft = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_hex(32))  # what `ray get-auth-token --generate` writes
        os.link(draft, path)  # never replaces a token another command wrote meanwhile
    except FileExistsError:
        pass
    finally:
        draft.unlink(missing_ok=True)


# Ray's messages to the driver that say nothing a `pipeline` user can act on. The raylet warns
# when many worker processes have started "which is Nx the maximum expected startup
# concurrency": a sweep on a small machine has a Tune function, a Train controller and its
# workers per trial, by design, and most hold no CPU.
NOISE = ("worker processes have been started on node",)


def quiet_ray_console() -> None:
    """Drop NOISE from what Ray prints on the driver's console (`--verbose` keeps it). Ray
    prints the raylet's messages through a module function of its private worker module: the
    filter wraps it, and does nothing on a Ray without it."""
    try:
        from ray._private import worker
    except ImportError:
        return
    show = worker.print_to_stdstream
    if getattr(show, "pipeline_quiet", False):
        return

    def print_to_stdstream(data, *args, **kwargs):
        lines = [line for line in data.get("lines", []) if not any(n in line for n in NOISE)]
        if lines:
            show({**data, "lines": lines}, *args, **kwargs)

    print_to_stdstream.pipeline_quiet = True
    worker.print_to_stdstream = print_to_stdstream


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# The storage and tracking variables every worker needs as the driver has them, and the
# cluster's own address: with a second Ray instance on a host, a Ray Train process that looks
# for "the" local instance finds two and dies (its placement-group cleaner, then the CPUs of
# finished fits are never freed).
FORWARDED = (
    "RAY_ADDRESS",
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "PIPELINE_DATA",
    "PIPELINE_RUNS",
    "PIPELINE_CACHE",
    "MLFLOW_TRACKING_URI",
    "PIPELINE_RAY_LOG_LEVEL",  # --verbose: Ray's INFO lines from the workers too
)


def worker_env() -> dict[str, str]:
    """The FORWARDED variables this process has, for every Ray worker's environment; inside a
    submitted job (`ray job submit --runtime-env-json`), those the job's runtime env already
    gives every worker are left to it (Ray refuses a driver that names them again)."""
    given = job_env_vars()
    return {n: os.environ[n] for n in FORWARDED if n in os.environ and n not in given}


def job_env_vars() -> dict[str, str]:
    """The env_vars of the submitted job this driver runs in (none outside a job)."""
    import json

    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return {}
    try:
        return (json.loads(raw).get("runtime_env") or {}).get("env_vars") or {}
    except (ValueError, AttributeError):
        return {}


def needs(config) -> Resources:
    """What one run (or one sweep trial) of a TrainConfig asks for, all workers together."""
    return Resources(
        config.workers * config.cpus_per_worker, config.workers * config.gpus_per_worker, "a run"
    )


def check_fits(config, have: Resources) -> None:
    """Refuse a run that `have` cannot hold: Ray would wait for ever for the resources."""
    need = needs(config)
    if need.gpu > have.gpu:
        raise PipelineError(
            f"{config.workers} worker(s) x {config.gpus_per_worker:g} GPU = {need.gpu:g} GPUs "
            f"asked, {have.where} has {have.gpu:g}; lower --workers or --gpus-per-worker"
        )
    if need.cpu > have.cpu:
        raise PipelineError(
            f"{config.workers} worker(s) x {config.cpus_per_worker:g} CPU = {need.cpu:g} CPUs "
            f"asked, {have.where} has {have.cpu:g}; lower --workers"
        )


def trials_at_once(config, asked: int, have: Resources) -> int:
    """How many sweep trials of `config` run at once: as many as `have` holds, or `asked`
    (0 = as many as fit) when that many fit; a trial that cannot fit at all is refused."""
    need = needs(config)
    what = f"a trial needs {need.cpu:g} CPU" + (f" and {need.gpu:g} GPU" if need.gpu else "")
    fits = int(have.cpu // need.cpu) if need.cpu else 10**6
    if need.gpu:
        fits = min(fits, int(have.gpu // need.gpu))
    if fits < 1:
        raise PipelineError(
            f"{what} (workers x cpus_per_worker, gpus_per_worker), {have.where} has "
            f"{have.cpu:g} CPU and {have.gpu:g} GPU; lower --workers-per-trial, "
            "--gpus-per-worker or --set cpus_per_worker=..."
        )
    if asked > fits:
        raise PipelineError(
            f"--concurrent {asked}: {what}, so {have.where} ({have.cpu:g} CPU, {have.gpu:g} GPU) "
            f"holds {fits} at a time; lower --concurrent (0 = as many as fit)"
        )
    return asked or fits


def fit(trainer):
    """`trainer.fit()`, with Ray's wrapped worker errors as one `PipelineError` line."""
    try:
        return trainer.fit()
    except PipelineError:
        raise
    except Exception as exc:  # Ray wraps worker errors; show the root cause on one line
        raise PipelineError(f"training failed: {root_cause(exc)}") from exc


def root_cause(exc: BaseException) -> str:
    """The innermost worker exception of a Ray error, on one line."""
    seen = exc
    for attr in ("worker_failures", "_worker_failures"):
        failures = getattr(exc, attr, None)
        if isinstance(failures, dict) and failures:
            seen = next(iter(failures.values()))
            break
    while seen.__cause__ is not None:
        seen = seen.__cause__
    text = " ".join(str(seen).split())
    return f"{type(seen).__name__}: {text[:400]}"


# -- locations every node must see ----------------------------------------------------------


def check_locations(data: str, runs: str, tracking_uri: str) -> None:
    """On a Ray cluster of more than one node, refuse (before training starts) what the
    other nodes cannot reach: a runs or data location that is a folder some node does not
    see, and a file or sqlite MLflow store. One machine needs no check."""
    nodes = alive_nodes()
    if len(nodes) < 2:
        return
    check_seen("PIPELINE_RUNS", runs, nodes)
    check_seen("the dataset", data, nodes, probe="manifest.json")
    check_tracking(tracking_uri, nodes)


def alive_nodes() -> list[dict]:
    """The live nodes of the Ray cluster (`start_ray` first)."""
    import ray

    return [node for node in ray.nodes() if node.get("Alive")]


def check_seen(what: str, location: str, nodes: list[dict], probe: str | None = None) -> None:
    """Refuse a folder that some of `nodes` cannot see (each node probed, as Ray probes its
    storage with a marker file); URIs are every node's by construction."""
    from pipeline.storage import is_uri

    if len(nodes) < 2 or is_uri(location):
        return
    blind = nodes_not_seeing(Path(location), probe, nodes)
    if blind:
        raise PipelineError(
            f"{what} {location} is a folder that {len(blind)} of the cluster's "
            f"{len(nodes)} nodes cannot see ({', '.join(blind)}); use a URI such as "
            "s3://bucket/prefix, or a mount every node has"
        )


def check_tracking(uri: str, nodes: list[dict]) -> None:
    """Refuse an MLflow store in a file of this machine when other nodes log to it."""
    from pipeline.tracking.store import uri_scheme

    if len(nodes) > 1 and uri_scheme(uri) in ("sqlite", "file", ""):
        raise PipelineError(
            f"MLFLOW_TRACKING_URI={uri} is a file on this machine: the workers on the "
            f"cluster's other {len(nodes) - 1} node(s) cannot write it; run an MLflow server "
            "(see mlflow/README.md) and point MLFLOW_TRACKING_URI at it"
        )


def nodes_not_seeing(folder: Path, probe: str | None, nodes: list[dict]) -> list[str]:
    """The addresses of the nodes on which `folder/probe` does not exist; without `probe`, a
    marker file written here for the occasion (and removed after)."""
    import uuid

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    marker = None
    if probe is None:
        folder.mkdir(parents=True, exist_ok=True)
        marker = folder / f".pipeline-probe-{uuid.uuid4().hex}"
        marker.write_text("every node should see this file\n")
        probe = marker.name
    target = str(folder / probe)

    @ray.remote(num_cpus=0)
    def sees(path: str) -> bool:
        return os.path.exists(path)

    try:
        answers = ray.get(
            [
                sees.options(
                    scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
                ).remote(target)
                for node in nodes
            ],
            timeout=60,
        )
    finally:
        if marker is not None:
            marker.unlink(missing_ok=True)
    return [
        node["NodeManagerAddress"] for node, seen in zip(nodes, answers, strict=True) if not seen
    ]
