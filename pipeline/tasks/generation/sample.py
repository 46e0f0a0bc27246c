"""Drawing from a trained generator: `pipeline sample RUN_ID|CHECKPOINT`.

G_ema is rebuilt from the config and label plan stored with it (no pickled code), from a
checkpoint file or folder, or from an MLflow run's `generator.pt` (its last
`checkpoints/checkpoint.pt` when the run has not finished).
"""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline.errors import PipelineError

GENERATOR_FILE = "generator.pt"  # G_ema alone, written at the end of a run (EXPORT_FILE)


def load_generator(source: str):
    """(G_ema in eval mode, its checkpoint state) from a path or an MLflow run id."""
    from pipeline.training import checkpoint as ckpt

    return generator_from_state(ckpt.load_state(source, GENERATOR_FILE), source)


def generator_from_state(state: dict, source: str):
    """(G_ema in eval mode, the state) from a loaded checkpoint state."""
    from pipeline.models import build_generator
    from pipeline.models.config import ClassSpec
    from pipeline.training.checkpoint import config_from_checkpoint

    config = config_from_checkpoint(state)
    if "G_ema" not in state:
        raise PipelineError(
            f"{source} is a {config.family} run, which completes images rather than drawing "
            "them: use `pipeline complete RUN --images ... --out ...`"
        )
    labels = state.get("labels")
    classes = ClassSpec(groups=tuple(labels["groups"]), binary=labels["binary"]) if labels else None
    G = build_generator(config.model, state["image"]["size"], state["image"]["channels"], classes)
    G.load_state_dict(state["G_ema"])
    return G.train(), state  # batch statistics, as during training's sample grids


@torch.no_grad()
def sample(
    source: str,
    out: Path,
    n: int = 64,
    class_name: str | None = None,
    interpolate: bool = False,
    seed: int = 0,
    numbered: bool = False,
) -> Path:
    """Write a PNG grid of `n` samples (or interpolation rows) from a run's generator; with
    `numbered`, each tile captioned with its index (what `--pick` names)."""
    from pipeline.grid import make_grid
    from pipeline.training.images import to_uint8
    from pipeline.training.noise import sample_z

    if n < 1:
        raise PipelineError(f"--n {n} must be at least 1")
    if Path(out).suffix.lower() != ".png":
        raise PipelineError(f"--out {out} must be a .png file")
    from pipeline.training.checkpoint import config_from_checkpoint

    G, state = load_generator(source)
    config = config_from_checkpoint(state)
    generator = torch.Generator().manual_seed(seed)
    columns = 8
    if interpolate:
        rows = max(1, n // columns)
        ends = sample_z(config, 2 * rows, "cpu", generator).view(rows, 2, -1)
        t = torch.linspace(0, 1, columns)[None, :, None]
        z = slerp(ends[:, :1], ends[:, 1:], t).reshape(rows * columns, -1)
    else:
        z = sample_z(config, n, "cpu", generator)
    y = labels_for(state.get("labels"), len(z), class_name, generator)
    images = to_uint8(G(z, y))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    captions = [str(i) for i in range(len(images))] if numbered else None
    make_grid(images, nrow=columns, scale=max(1, 64 // images.shape[1]), captions=captions).save(
        out
    )
    return out


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation (the usual path between Gaussian latents, White 2016)."""
    a_n, b_n = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    omega = torch.acos((a_n * b_n).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    return torch.sin((1 - t) * omega) / so * a + torch.sin(t * omega) / so * b


def labels_for(
    labels: dict | None, n: int, class_name: str | None, generator
) -> torch.Tensor | None:
    """y for a conditional generator: random classes, or `class_name` fixed (`set_class`)."""
    if labels is None:
        if class_name:
            raise PipelineError("--class needs a conditional model (this generator has no labels)")
        return None
    from pipeline.models.config import ClassSpec
    from pipeline.training.noise import random_labels

    y = random_labels(ClassSpec(tuple(labels["groups"]), labels["binary"]), n, "cpu", generator)
    if class_name:
        set_class(y, labels, class_name)
    return y


def set_class(y: torch.Tensor, labels: dict, class_name: str) -> None:
    """Fix `class_name` in every row of y, the other groups left as they are: a class of the
    first group (`blue`), `group=class` (`eyes=red`), or a comma list of binary attributes to
    switch on (`Male,Smiling`; the others off)."""
    groups, names, attrs = labels["groups"], labels["group_names"], labels["attr_names"]
    wanted = class_name.split(",")
    if attrs and set(wanted) <= set(attrs):
        for a, attr in enumerate(attrs):
            y[:, len(groups) + a] = int(attr in wanted)
        return
    group, _, value = class_name.rpartition("=")
    if not names or (group and group not in names):
        known = ", ".join(names) + (f"; attributes: {', '.join(attrs)}" if attrs else "")
        raise PipelineError(f"no label group or attribute {class_name!r}; groups: {known}")
    g = names.index(group) if group else 0
    classes = labels["class_names"][g]
    if value not in classes:
        listed = ", ".join(classes)
        raise PipelineError(f"no class {value!r} in group {names[g]}; classes: {listed}")
    y[:, g] = classes.index(value)
