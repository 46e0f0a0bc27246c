"""The Ray Train driver: one run = one TorchTrainer fit, logged to one MLflow run.

    result = train(load_train_config("dcgan", overrides=["data.dataset=celeba-64"]))

Before Ray starts, everything a user can get wrong is checked (dataset, labels, attributes,
image size against the model, batch split, GPUs asked against the cluster) and the MLflow run
is created, so a restarted worker group keeps logging into the same run. Each worker runs
`pipeline.training.runner.run_worker` under DDP (gloo on CPU, nccl on GPU); rank 0 alone talks
to MLflow. `fit` is the one place that starts a fit: on Ray Train (`build_trainer`), or for
one worker solo (pipeline.training.solo); `pipeline tune` calls it from inside its Tune
function.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from pipeline.config import ConfigError, flatten, to_dict
from pipeline.errors import PipelineError
from pipeline.settings import runs_root
from pipeline.training import checkpoint as ckpt
from pipeline.training.config import TrainConfig


@dataclass
class TrainResult:
    run_id: str
    run_name: str
    experiment_id: str
    tracking_uri: str
    status: str
    metrics: dict
    checkpoint: str | None  # the last checkpoint's folder: a local path or a URI


def prepare(config: TrainConfig) -> tuple[Path, dict]:
    """Check the config against its dataset; returns the dataset path and manifest."""
    from pipeline.data.shards import read_manifest
    from pipeline.models.norms import get_norm
    from pipeline.settings import resolve_dataset
    from pipeline.training.labels import plan_labels
    from pipeline.training.runner import TASKS

    if not config.data.dataset:
        raise ConfigError("no dataset: pass --data NAME (see `pipeline datasets list`)")
    path = resolve_dataset(config.data.dataset)
    manifest = read_manifest(path)
    if config.data.split not in manifest["splits"]:
        raise ConfigError(
            f"dataset {manifest['name']} has no split {config.data.split!r}; it has: "
            f"{', '.join(manifest['splits'])}"
        )
    TASKS[config.family].check_dataset(config, manifest)
    syncing = [n for n in (config.model.norm_g, config.model.norm_d) if get_norm(n).syncs]
    if syncing and config.gpus_per_worker == 0 and config.workers > 1:
        raise ConfigError(
            f"{syncing[0]} norm needs GPUs (torch's SyncBatchNorm has no CPU kernel); use batch "
            "on CPU, or --gpus-per-worker 1"
        )
    if config.conditional:
        labels = plan_labels(manifest, config.data.groups, config.data.attrs)
        rows = _labelled_count(path, config, labels)
        if rows < config.batch_size:
            raise ConfigError(
                f"dataset {manifest['name']} has {rows} rows with every chosen label, fewer "
                f"than one batch of {config.batch_size}"
            )
    elif manifest["splits"][config.data.split]["rows"] < config.batch_size:
        raise ConfigError(
            f"dataset {manifest['name']}/{config.data.split} has "
            f"{manifest['splits'][config.data.split]['rows']} rows, fewer than one batch of "
            f"{config.batch_size}; lower --batch-size"
        )
    return path, manifest


def prepare_fid(config: TrainConfig, manifest: dict | None = None, say=None, dataset_path=None):
    """Resolve the FID weights once, in the driver: returns the config with `fid.weights`
    set to the file (or "standin") the workers load, and the Backbone (None without FID).
    With `fid.intra` and a dataset on this machine, its classes are checked here too (the
    workers check a dataset at a URI)."""
    if not config.fid.every:
        return config, None
    from pipeline.metrics.config import check_reference
    from pipeline.metrics.weights import resolve

    if manifest is not None:
        check_reference(manifest, config.fid.split or config.data.split, config.fid)
        if config.fid.intra and dataset_path is not None and os.path.isdir(str(dataset_path)):
            _check_intra(config, manifest, dataset_path)
    backbone = resolve(config.fid.weights or None, say=say)
    weights = backbone.path if not backbone.standin else "standin"
    return replace(config, fid=replace(config.fid, weights=weights)), backbone


def _check_intra(config: TrainConfig, manifest: dict, dataset_path) -> None:
    from pipeline.metrics.evaluation import check_intra, reference_labels
    from pipeline.training.labels import plan_labels

    split = config.fid.split or config.data.split
    where = f"{manifest['name']}/{split}"
    if not config.conditional:
        raise ConfigError(f"intra-FID needs a conditional model (acgan); {config.family} is not")
    plan = plan_labels(manifest, config.data.groups, config.data.attrs)
    labels = reference_labels(dataset_path, split, config.fid, plan)
    check_intra(labels, plan.to_dict(), config.fid, where)


def precompute_fid_reference(config: TrainConfig, dataset_path: Path, say=None) -> None:
    """CPU workers on this machine (a local Ray): the FID reference statistics are computed
    here, once, before any worker starts; runs and sweep trials then read them from the
    dataset's `stats/` cache. Otherwise (GPUs, a remote cluster) the workers compute them
    together at the first evaluation, where they are faster. Without this, the first FID of
    every concurrent first trial of a sweep computed them again, inside its own time."""
    if not config.fid.every or config.gpus_per_worker > 0 or os.environ.get("RAY_ADDRESS"):
        return
    from pipeline.data.staging import local_copy
    from pipeline.metrics.fid import ensure_reference
    from pipeline.metrics.weights import backbone_for

    say = say or (lambda line: print(line, file=sys.stderr))
    ensure_reference(
        backbone_for(config.fid.weights),
        local_copy(dataset_path),
        config.fid.split or config.data.split,
        config.fid,
        say=say,
    )


def train(config: TrainConfig, resume: str | None = None) -> TrainResult:
    """Run (or with `resume`, continue) a training run; returns how it ended."""
    from pipeline import cluster, tracking
    from pipeline.training.progress import ProgressView

    started = command_started()
    uri = tracking.tracking_uri()
    if resume is not None:
        tracking.prepare_store(uri)
        handle = tracking.find_run(uri, resume)
        _fetch_checkpoint(handle)  # fail here, not in the workers, when there is none
    dataset_path, manifest = prepare(config)
    config, backbone = prepare_fid(config, manifest, dataset_path=dataset_path)
    if cluster.is_local():
        cluster.check_fits(config, cluster.local_resources())  # before Ray starts
    precompute_fid_reference(config, dataset_path)
    if resume is None and cluster.is_local():
        # Starting a local Ray (~5 s): the MLflow run is opened meanwhile (MLflow's import,
        # the store, the run: ~3 s). A cluster may still refuse the run: there it is opened
        # once Ray has said yes.
        with ThreadPoolExecutor(1) as pool:
            opening = pool.submit(open_run, config, manifest, backbone, uri)
            try:
                cluster.start_ray(dashboard=not is_solo(config))
            except BaseException:
                tracking.Tracker(opening.result()[1]).finish("FAILED")
                raise
            config, handle = opening.result()
    else:
        cluster.start_ray(dashboard=not is_solo(config))
    # What a cluster may refuse (a local Ray was checked above): before its run is opened.
    cluster.check_fits(config, cluster.ray_resources())
    cluster.check_locations(str(dataset_path), runs_root(), uri)
    if resume is None:
        if not cluster.is_local():
            config, handle = open_run(config, manifest, backbone, uri)
        folder = config.run_name
    else:
        tracking.reopen_run(handle)
        config = replace(config, run_name=handle.name)
        # The run goes on from its MLflow checkpoint in a fresh folder, `NAME-resume` (then
        # `NAME-resume-2`, ...): Ray would restart from the first fit's folder on its own.
        folder = claim_run_folder(runs_root(), f"{handle.name}-resume")
        tracking.Tracker(handle).set_tags({"pipeline.ray_run": folder})

    status, metrics, checkpoint = "FAILED", {}, None
    try:
        progress = run_progress(folder)
        with ProgressView(progress["key"]):
            metrics, checkpoint = fit(
                config,
                handle,
                dataset_path,
                folder=folder,
                resume=resume is not None,
                progress=progress,
                started=started,
            )
        if metrics.get("nonfinite"):
            raise PipelineError(
                f"training stopped at step {metrics.get('step')}: a loss became NaN or "
                "infinite (lower the learning rates, or try --set loss=hinge); the MLflow run "
                "is marked FAILED"
            )
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        tracking.Tracker(handle).finish(status)
    return TrainResult(
        handle.run_id, handle.name, handle.experiment_id, uri, status, metrics, checkpoint
    )


def open_run(config: TrainConfig, manifest: dict, backbone, uri: str) -> tuple[TrainConfig, object]:
    """A new run's MLflow run, RUNNING, with its params, tags and config.yaml, and its Ray run
    folder; returns the config with the run's name, and the run's handle."""
    from pipeline import tracking

    tracking.prepare_store(uri)
    wanted = config.run_name or (
        f"{config.family}-{manifest['name']}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    # The MLflow run takes the name of the Ray run folder claimed for it (`wanted`, or
    # `wanted-2` when a run of that name is already there), so the two read the same.
    config = replace(config, run_name=claim_run_folder(runs_root(), wanted))
    experiment = config.experiment or tracking.default_experiment(manifest["name"], config.family)
    handle = tracking.start_run(
        uri,
        experiment,
        config.run_name,
        params=flatten(to_dict(config)),
        tags={
            "pipeline.dataset": manifest["name"],
            "pipeline.dataset_fingerprint": manifest["fingerprint"],
            "pipeline.family": config.family,
            "pipeline.ray_run": config.run_name,
            **({"pipeline.fid_backbone": backbone.kind} if backbone else {}),
        },
    )
    # Here, not in the worker: its MLflow import would come before its first step.
    tracking.Tracker(handle).log_dict(to_dict(config), "config.yaml")
    return config, handle


def fit(
    config: TrainConfig,
    handle,
    dataset_path: Path,
    *,
    folder: str | None = None,
    storage: str | Path | None = None,
    resume: bool = False,
    start_from: Path | str | None = None,
    progress: dict | None = None,
    tune: bool = False,
    here: bool = False,
    started: float | None = None,
) -> tuple[dict, str | None]:
    """One fit of a run (also each sweep trial's, and each PBT segment's); returns its last
    metrics and last checkpoint's location (a local folder or a URI).

    One worker runs solo (`pipeline.training.solo`: the same loop without a worker group),
    as a Ray task or, with `here`, in this process (a sweep trial's Tune function, which then
    holds the worker's CPUs and GPUs). More workers run on Ray Train. With `tune`, every
    report reaches Ray Tune as it happens.

    `folder`: the Ray run's folder under `storage` (default: the runs dir), already claimed
    with `claim_run_folder`; without it one is claimed here from `config.run_name` and
    recorded on the MLflow run as the tag `pipeline.ray_run`.
    `start_from`: a checkpoint folder the worker(s) load first (a PBT segment warm-starts from
    its own or an exploited trial's checkpoint), unless the fit restarted after a failure.
    `progress`: {"key", "epochs"}: where rank 0 posts the live line (`progress.ProgressView`
    draws it), and the epochs it counts to.
    `started`: when the command (or trial) started (`time.time()`); the first report's
    `startup_s` is the time from then to the first step.
    """
    from pipeline import cluster

    storage = str(storage or runs_root())
    if folder is None:
        folder = claim_run_folder(storage, config.run_name)
        if handle is not None:
            from pipeline import tracking

            tracking.Tracker(handle).set_tags({"pipeline.ray_run": folder})
    loop_config = {
        "config": to_dict(config),
        "run": handle.to_dict() if handle is not None else None,
        "dataset": str(dataset_path),
        "resume": resume,
        "start_from": str(start_from) if start_from is not None else None,
        "progress": progress,
        "started": started,
    }
    if is_solo(config):
        from pipeline.training import solo

        if here:
            done = solo.run_solo(loop_config, storage, folder, _tune_sink if tune else None)
            return done["metrics"], done["checkpoint"]
        resources = {"CPU": config.cpus_per_worker, "GPU": config.gpus_per_worker}
        return solo.fit_solo(loop_config, storage, folder, resources, config.max_failures)
    callbacks = None
    if tune:
        from ray.tune.integration.ray_train import TuneReportCallback

        callbacks = [TuneReportCallback()]
    result = cluster.fit(build_trainer(config, loop_config, storage, folder, callbacks))
    checkpoint = ckpt.location_of(result.checkpoint) if result.checkpoint else None
    return dict(result.metrics or {}), checkpoint


def is_solo(config: TrainConfig) -> bool:
    """One worker, trained without a Ray Train worker group (pipeline.training.solo)."""
    return config.workers == 1 and config.solo


def _tune_sink(metrics: dict, checkpoint: str | None) -> None:
    """A solo trial's report to Tune: what TuneReportCallback hands on for Ray Train's."""
    import ray.tune

    ray.tune.report({**metrics, **({"checkpoint_path": checkpoint} if checkpoint else {})})


def build_trainer(config: TrainConfig, loop_config: dict, storage: str, folder: str, callbacks):
    """The TorchTrainer of one fit of two or more workers (`fit`)."""
    from ray.train import FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from pipeline.training.worker import train_loop
    from pipeline.waiting_fs import ray_storage

    use_gpu = config.gpus_per_worker > 0
    resources = {"CPU": config.cpus_per_worker}
    if use_gpu:
        resources["GPU"] = config.gpus_per_worker
    return TorchTrainer(
        train_loop,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=config.workers, use_gpu=use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=folder,
            **ray_storage(str(storage)),  # in a bucket: waits out an outage of the store
            failure_config=FailureConfig(max_failures=config.max_failures),
            callbacks=callbacks,
            # Ray Train logs every report at INFO; MLflow and our summary say it better.
            logging_config=LoggingConfig(
                log_level=os.environ.get("PIPELINE_RAY_LOG_LEVEL", "WARNING")
            ),
        ),
    )


def command_started() -> float:
    """When this command started (`time.time()` scale), its imports included, when `pipeline`
    runs as a command (stages.cli.main says so in PIPELINE_COMMAND_STARTED); else now
    (train() called from Python)."""
    return float(os.environ.get("PIPELINE_COMMAND_STARTED") or time.time())


def run_progress(folder: str) -> dict:
    """Where a run's rank 0 posts its live line: keyed by its Ray run folder (unique)."""
    return {"key": f"run/{folder}/", "epochs": None}


def claim_run_folder(storage: str | Path, name: str) -> str:
    """A fresh Ray run folder under `storage` (a folder or a URI): `name`, else `name-2`, ...

    Ray Train resumes from the checkpoints in a run folder that already has them, so every fit
    needs a fresh one: a second run under the same --set run_name, a `--resume` (it restarts
    from the MLflow checkpoint instead), each PBT segment of a sweep trial. A local folder is
    made here, empty, so two processes cannot claim the same name; in a bucket (no folders,
    no atomic create) a marker object claims it. Ray starts afresh in either.
    """
    from pipeline import storage as locations

    if locations.is_uri(storage):
        r = locations.remote(str(storage))
        locations.check_bucket(r)
        taken = locations.children(r, r.path)
    else:
        Path(storage).mkdir(parents=True, exist_ok=True)
    for n in range(1, 10_000):
        folder = name if n == 1 else f"{name}-{n}"
        if locations.is_uri(storage):
            if folder in taken:
                continue
            locations.write_json(r, r.at(folder, ".pipeline-run.json"), {"run": folder})
            return folder
        try:
            (Path(storage) / folder).mkdir()
        except FileExistsError:
            continue
        return folder
    raise PipelineError(f"{storage} holds {name}-2 to -9999 already; choose another run name")


def _fetch_checkpoint(handle) -> Path:
    """The run's last checkpoint, downloaded from its MLflow artifacts."""
    from pipeline import tracking

    folder = tracking.download_artifact(handle, "checkpoints/checkpoint.pt")
    if folder is None:
        raise PipelineError(
            f"MLflow run {handle.run_id} has no checkpoint to resume from (it never finished "
            "an epoch); start a new run instead"
        )
    return folder


def _labelled_count(path: Path, config: TrainConfig, plan) -> int:
    from pipeline.data.reader import ShardDataset

    return len(plan.labelled_rows(ShardDataset(path, config.data.split)))
