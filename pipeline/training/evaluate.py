"""`pipeline evaluate RUN_ID|CHECKPOINT`: a trained model's metrics, logged into its MLflow run.

    result = evaluate("3f2a...", data="celeba-64", fid=FidConfig(samples=10000))
    result.scores       # a GAN run's {"fid": 23.1, "kid": 0.018, "kid_std": 0.001, ...}
    result.protocol     # how they were made: backbone, weights hash, dims, N real / fake, ...

Which evaluation a checkpoint gets is its task's: the run's family finds the task in
`runner.TASKS`, and the task's `evaluate` scores the checkpoint (a GAN's generator in
`pipeline.tasks.generation.evaluate`, a GLCIC run's completions in
`pipeline.tasks.completion.evaluate`). A task refuses, in one line, an option it does not take
(`real`, `masks`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from pipeline.metrics.config import FidConfig, check_fid


@dataclass
class Evaluation:
    scores: dict[str, float]
    protocol: dict
    run_id: str | None  # the MLflow run the numbers were logged into
    step: int  # images seen by the model


def evaluate(
    source: str,
    data: str | None = None,
    fid: FidConfig = FidConfig(),
    real: str | None = None,
    device: str | None = None,
    say: Callable[[str], None] = lambda line: None,
    masks: str | None = None,
) -> Evaluation:
    """The metrics of the run (an MLflow run id) or checkpoint `source`, by its task: FID /
    KID and the rest of a GAN run's generator (`real`: a folder or `.npz` to compare with);
    the completion metrics of a GLCIC run (`masks`: a folder of masks for its holes)."""
    from pipeline.training.checkpoint import config_from_checkpoint, load_state
    from pipeline.training.runner import TASKS

    check_fid(replace(fid, every=max(fid.every, 1)))
    model_files = dict.fromkeys(task.EXPORT_FILE for task in TASKS.values())
    state = load_state(source, *model_files)  # a run's final model, whichever task made it
    handle = None if Path(source).expanduser().exists() else _run(source)
    task = TASKS[config_from_checkpoint(state).family]
    scores, protocol, step = task.evaluate(
        state, handle, fid, data=data, real=real, masks=masks, device=device, say=say
    )
    return Evaluation(scores, protocol, handle.run_id if handle else None, step)


def _run(run_id: str):
    from pipeline import tracking

    return tracking.find_run(tracking.tracking_uri(), run_id)
