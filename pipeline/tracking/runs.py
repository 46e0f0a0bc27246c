"""MLflow experiments and runs, driver side: create, find, reopen, read, artifacts, registry.

The driver creates the run before the trainer starts (`start_run`), so a restarted trainer
keeps logging into the same run; the run travels to the Ray workers as a `RunHandle` (plain
fields, picklable) inside the config. Layout: one experiment per dataset and model family
(`default_experiment`), one run per `pipeline train`, one parent run per sweep with one nested
child per trial (tag `mlflow.parentRunId`), so the MLflow UI compares a sweep's trials side by
side and runs on the same data and family sit together.

Everything goes through plain `MlflowClient` calls on an explicit URI, never the fluent
`mlflow.start_run` global state: workers and trials must not share hidden state. Failures are
`PipelineError`s with one clear line.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config import flatten
from pipeline.errors import PipelineError, one_line
from pipeline.tracking.store import artifact_location, mlflow_client, redacted

if TYPE_CHECKING:
    from mlflow import MlflowClient

# MLflow's limits (mlflow.utils.validation): a log_batch takes at most 100 params + tags and
# 1000 metrics; longer param and tag values are rejected.
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
MAX_PARAM_LENGTH = 6000
MAX_TAG_LENGTH = 8000


@dataclass(frozen=True)
class RunHandle:
    """An MLflow run, passed to the Ray workers in the config (plain fields, picklable)."""

    uri: str
    run_id: str
    experiment_id: str
    name: str

    def to_dict(self) -> dict[str, str]:
        return {
            "uri": self.uri,
            "run_id": self.run_id,
            "experiment_id": self.experiment_id,
            "name": self.name,
        }


# ---------------------------------------------------------------------------------------------
# Creating runs.


def experiment_id(uri: str, name: str) -> str:
    """The id of experiment `name`, created when missing (artifacts at an absolute location)."""
    from mlflow.exceptions import MlflowException

    client = mlflow_client(uri)
    try:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            try:
                return client.create_experiment(
                    name, artifact_location=artifact_location(uri, name)
                )
            except MlflowException as error:
                if error.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                experiment = client.get_experiment_by_name(name)  # another process won the race
    except MlflowException as error:
        raise PipelineError(
            f"cannot open MLflow experiment {name!r} in {uri}: {one_line(error)}"
        ) from error
    if experiment.lifecycle_stage == "deleted":
        raise PipelineError(
            f"MLflow experiment {name!r} in {uri} is deleted: restore it (`mlflow experiments "
            f"restore --experiment-id {experiment.experiment_id}`) or choose another --experiment"
        )
    return experiment.experiment_id


def start_run(
    uri: str,
    experiment: str,
    run_name: str,
    params: Mapping[str, Any],
    tags: Mapping[str, Any] | None = None,
    parent_run_id: str | None = None,
) -> RunHandle:
    """Create a RUNNING run with its params (nested dicts are flattened), before training starts.

    `parent_run_id` nests the run under a sweep's parent run (tag `mlflow.parentRunId`).
    """
    from mlflow.exceptions import MlflowException

    if parent_run_id is not None:
        find_run(uri, parent_run_id)  # a clear error for an unknown parent
    experiment_id_ = experiment_id(uri, experiment)
    all_tags = {"mlflow.source.name": "pipeline", **_user_tag(), **(tags or {})}
    if parent_run_id is not None:
        all_tags["mlflow.parentRunId"] = parent_run_id
    client = mlflow_client(uri)
    try:
        run = client.create_run(experiment_id_, run_name=run_name, tags=tag_values(all_tags))
    except MlflowException as error:
        raise PipelineError(
            f"cannot create MLflow run {run_name!r} in {uri}: {one_line(error)}"
        ) from error
    handle = RunHandle(redacted(uri), run.info.run_id, experiment_id_, run.info.run_name)
    try:
        log_params(client, handle.run_id, params)
    except MlflowException as error:
        with contextlib.suppress(MlflowException):
            client.set_terminated(handle.run_id, "FAILED")
        raise PipelineError(
            f"cannot log the params of MLflow run {handle.run_id} in {uri}: {one_line(error)}"
        ) from error
    return handle


def reopen_run(handle: RunHandle) -> None:
    """Mark a resumed run RUNNING again (MLflow keeps its old end time until it ends again)."""
    from mlflow.exceptions import MlflowException

    find_run(handle.uri, handle.run_id)
    try:
        mlflow_client(handle.uri).update_run(handle.run_id, status="RUNNING")
    except MlflowException as error:
        raise PipelineError(
            f"cannot reopen MLflow run {handle.run_id} in {handle.uri}: {one_line(error)}"
        ) from error


# ---------------------------------------------------------------------------------------------
# Finding runs.


def find_run(uri: str, run_id: str) -> RunHandle:
    """The run `run_id` (for `--resume`); a `PipelineError` when there is none."""
    run = _get_run(uri, run_id)
    if run.info.lifecycle_stage == "deleted":
        raise PipelineError(
            f"MLflow run {run_id} in {uri} is deleted: restore it (`mlflow runs restore "
            f"--run-id {run_id}`) to continue it"
        )
    return RunHandle(redacted(uri), run.info.run_id, run.info.experiment_id, run.info.run_name)


def find_run_by_tags(
    uri: str, experiment: str, tags: Mapping[str, str], parent_run_id: str | None = None
) -> RunHandle | None:
    """The newest live run of `experiment` carrying all `tags` (e.g. a sweep trial's id), or None.

    Lets a restarted trial find the child run it created before instead of making another.
    """
    from mlflow.exceptions import MlflowException

    client = mlflow_client(uri)
    wanted = dict(tags)
    if parent_run_id is not None:
        wanted["mlflow.parentRunId"] = parent_run_id
    terms = [f"tags.`{key}` = {_quote(str(value))}" for key, value in wanted.items()]
    try:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            return None
        runs = client.search_runs(
            [found.experiment_id],
            filter_string=" and ".join(terms),
            max_results=1,
            order_by=["attributes.start_time DESC"],
        )
    except MlflowException as error:
        raise PipelineError(f"cannot search MLflow runs in {uri}: {one_line(error)}") from error
    if not runs:
        return None
    info = runs[0].info
    return RunHandle(redacted(uri), info.run_id, info.experiment_id, info.run_name)


def find_trial_run(
    uri: str, experiment: str, sweep: str, parent_run_id: str, trial_id: str
) -> RunHandle | None:
    """A sweep trial's child run, by its Tune trial id under the sweep's parent run, or None."""
    tags = {"ray.trial_id": trial_id, "pipeline.sweep": sweep}
    return find_run_by_tags(uri, experiment, tags, parent_run_id=parent_run_id)


# ---------------------------------------------------------------------------------------------
# Reading runs and their artifacts.


def download_artifact(handle: RunHandle, artifact_path: str) -> Path | None:
    """A run's artifact, downloaded to a fresh temporary folder; None when it has none."""
    import tempfile

    from mlflow.exceptions import MlflowException

    folder = Path(tempfile.mkdtemp(prefix="pipeline-artifact-"))
    try:
        local = mlflow_client(handle.uri).download_artifacts(
            handle.run_id, artifact_path, str(folder)
        )
    except (MlflowException, OSError):
        return None
    return Path(local)


def run_config(uri: str, run_id: str) -> dict:
    """The resolved config a training run saved as its `config.yaml` artifact."""
    import yaml

    handle = find_run(uri, run_id)
    path = download_artifact(handle, "config.yaml")
    if path is None:
        raise PipelineError(f"MLflow run {run_id} has no config.yaml: not a `pipeline train` run")
    return yaml.safe_load(path.read_text())


def run_status(uri: str, run_id: str) -> str:
    """RUNNING, FINISHED, FAILED, KILLED or SCHEDULED."""
    return _get_run(uri, run_id).info.status


def run_metrics(handle: RunHandle) -> dict[str, float]:
    """A run's latest value of each metric (a restarted sweep trial checks how far it got)."""
    return dict(_get_run(handle.uri, handle.run_id).data.metrics)


def artifact_files(handle: RunHandle, folder: str | None = None) -> list[str]:
    """The artifact paths directly under `folder` of a run (empty when there are none)."""
    from mlflow.exceptions import MlflowException

    try:
        return [
            item.path for item in mlflow_client(handle.uri).list_artifacts(handle.run_id, folder)
        ]
    except (MlflowException, OSError):
        return []


def register_model(handle: RunHandle, artifact_path: str, name: str) -> str:
    """Register a run's artifact folder (a generator file) as a new version of model `name`
    in the MLflow model registry; returns the version."""
    from mlflow.exceptions import MlflowException

    client = mlflow_client(handle.uri)
    try:
        if not client.search_registered_models(filter_string=f"name = {_quote(name)}"):
            client.create_registered_model(name)
        source = f"{_get_run(handle.uri, handle.run_id).info.artifact_uri}/{artifact_path}"
        version = client.create_model_version(name, source, run_id=handle.run_id)
    except MlflowException as error:
        raise PipelineError(
            f"cannot register model {name!r} in {handle.uri}: {one_line(error)}"
        ) from error
    return str(version.version)


def _get_run(uri: str, run_id: str):
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client(uri).get_run(run_id)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise PipelineError(f"no MLflow run {run_id} in {uri}") from None
        raise PipelineError(
            f"cannot read MLflow run {run_id} from {uri}: {one_line(error)}"
        ) from error


# ---------------------------------------------------------------------------------------------
# Params, tags and names as MLflow takes them (the Tracker logs through these too).


def param_values(params: Mapping[str, Any]) -> dict[str, str]:
    """`params` as MLflow keeps them: nested dicts flattened, names made valid, values as
    strings, over-long values cut."""
    return {mlflow_key(k): _param_value(v) for k, v in flatten(params).items()}


def log_params(client: MlflowClient, run_id: str, params: Mapping[str, Any]) -> None:
    """`params` (nested dicts flattened) in batches MLflow accepts, over-long values cut."""
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in param_values(params).items()]
    for start in range(0, len(items), MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, params=items[start : start + MAX_PARAMS_PER_BATCH])


def tag_values(tags: Mapping[str, Any]) -> dict[str, str]:
    """Tags as strings, over-long values cut."""
    return {str(k): _truncate(str(v), MAX_TAG_LENGTH) for k, v in tags.items()}


def mlflow_key(name: str) -> str:
    """A metric or param name MLflow accepts: alphanumerics, `_ - . / ` and spaces."""
    return re.sub(r"[^\w./ -]", "_", str(name))


def _param_value(value: Any) -> str:
    if isinstance(value, (list, tuple, dict)):
        text = json.dumps(value, default=str)
    else:
        text = str(value)
    return _truncate(text, MAX_PARAM_LENGTH)


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _quote(value: str) -> str:
    return f'"{value}"' if "'" in value else f"'{value}'"


def _user_tag() -> dict[str, str]:
    import getpass

    try:
        return {"mlflow.user": getpass.getuser()}
    except (KeyError, OSError):  # no login name in some containers
        return {}
