"""Latent arithmetic (Radford et al. 2015, "Unsupervised Representation Learning with DCGANs",
sec. 6.3 and fig. 7): "smiling woman - neutral woman + neutral man = smiling man", on groups
of samples averaged in z.

    pipeline sample RUN --n 64 --seed 0 --numbered --out grid.png        # look, pick indices
    pipeline sample RUN --n 64 --seed 0 --out sum.png \\
        --pick smiling_woman=3,17,40 --pick neutral_woman=5,9,22 --pick neutral_man=1,30,51 \\
        --arithmetic "smiling_woman - neutral_woman + neutral_man"

The picks index the grid that the same `--n`, `--seed` (and `--class`) draw, so they name the
very z seen there. Each group's z are averaged (the paper averaged three: single samples were
unstable), the averages combined by the expression, and the result decoded. For a conditional
model the result keeps the label of the first picked sample, or takes `--result-class`.
The grid written: the group averages and the result in the first row, then `variations`
decodings of the result with uniform noise of +-`noise` added to its z (as the paper's fig. 7).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from pipeline.errors import PipelineError

NAME = r"[A-Za-z_][A-Za-z0-9_]*"


def parse_expression(text: str) -> list[tuple[int, str]]:
    """ "A - B + C" -> [(+1, "A"), (-1, "B"), (+1, "C")]."""
    tokens = re.findall(rf"[+-]|{NAME}|\S", text)
    terms, sign, expect_name = [], 1, True
    for token in tokens:
        if expect_name and token in "+-":
            sign = sign * (-1 if token == "-" else 1)
        elif expect_name and re.fullmatch(NAME, token):
            terms.append((sign, token))
            sign, expect_name = 1, False
        elif not expect_name and token in "+-":
            sign, expect_name = (-1 if token == "-" else 1), True
        else:
            raise PipelineError(
                f'--arithmetic {text!r}: expected names joined by + and -, e.g. "A - B + C"'
            )
    if not terms or expect_name:
        raise PipelineError(f"--arithmetic {text!r}: expected names joined by + and -")
    return terms


def parse_picks(picks: list[str], n: int) -> dict[str, list[int]]:
    """["A=3,7,12", ...] -> {"A": [3, 7, 12]}, every index a tile of the n-sample grid."""
    groups: dict[str, list[int]] = {}
    for pick in picks:
        name, _, indices = pick.partition("=")
        name = name.strip()
        try:
            chosen = [int(i) for i in indices.split(",") if i.strip()]
        except ValueError:
            chosen = []
        if not re.fullmatch(NAME, name) or not chosen:
            raise PipelineError(f"--pick {pick!r}: write NAME=I,J,K (tile indices of the grid)")
        wrong = [i for i in chosen if not 0 <= i < n]
        if wrong:
            raise PipelineError(
                f"--pick {pick!r}: index {wrong[0]} is not a tile of the --n {n} grid (0-{n - 1})"
            )
        groups[name] = chosen
    return groups


def combine(z: torch.Tensor, terms: list[tuple[int, str]], groups: dict[str, list[int]]):
    """The expression on the group averages of z: sum of sign x mean(z[group])."""
    missing = [name for _, name in terms if name not in groups]
    if missing:
        raise PipelineError(
            f"--arithmetic names {missing[0]!r}, which no --pick gives (--pick {missing[0]}=I,J)"
        )
    means = {name: z[groups[name]].mean(0) for _, name in terms}
    return sum(sign * means[name] for sign, name in terms), means


@torch.no_grad()
def latent_arithmetic(
    source: str,
    out: Path,
    expression: str,
    picks: list[str],
    n: int = 64,
    seed: int = 0,
    class_name: str | None = None,
    result_class: str | None = None,
    variations: int = 8,
    noise: float = 0.25,
) -> Path:
    """Write the arithmetic's grid (group averages, result, noisy results) as a PNG."""
    from pipeline.grid import make_grid
    from pipeline.tasks.generation.sample import labels_for, load_generator, set_class
    from pipeline.training.checkpoint import config_from_checkpoint
    from pipeline.training.images import to_uint8
    from pipeline.training.noise import sample_z

    if Path(out).suffix.lower() != ".png":
        raise PipelineError(f"--out {out} must be a .png file")
    terms = parse_expression(expression)
    groups = parse_picks(picks, n)
    G, state = load_generator(source)
    config = config_from_checkpoint(state)
    generator = torch.Generator().manual_seed(seed)
    z = sample_z(config, n, "cpu", generator)  # the grid's z and y, drawn as `sample` draws them
    y = labels_for(state.get("labels"), n, class_name, generator)
    result, means = combine(z, terms, groups)

    first = groups[terms[0][1]][0]  # the result keeps this sample's label, or result_class
    y_result = None
    if y is not None:
        y_result = y[first : first + 1].clone()
        if result_class:
            set_class(y_result, state["labels"], result_class)
    elif result_class:
        raise PipelineError("--result-class needs a conditional model (this one has no labels)")

    names = [name for _, name in terms]
    row = torch.stack([means[name] for name in names] + [result])
    jitter = (torch.rand(variations, result.numel(), generator=generator) * 2 - 1) * noise
    noisy = result.flatten()[None] + jitter
    zs = torch.cat([row.flatten(1), noisy]).view(-1, *z.shape[1:])
    ys = None
    if y is not None:
        ys = torch.cat(
            [y[groups[name][0] : groups[name][0] + 1] for name in names]
            + [y_result.expand(1 + variations, -1)]
        )
    images = to_uint8(G(zs, ys))
    signs = {1: "+", -1: "-"}
    captions = [
        f"{'' if i == 0 and sign == 1 else signs[sign] + ' '}{name} ({len(groups[name])})"
        for i, (sign, name) in enumerate(terms)
    ]
    captions += ["= result"] + [f"+-{noise:g}"] * variations
    first_row = len(terms) + 1  # the group averages and the result
    columns = max(first_row, variations)
    pad = columns - first_row
    if pad:  # the first row padded with blank tiles, so the noisy results start a row
        blank = np.full((pad, *images.shape[1:]), 255, dtype=np.uint8)
        images = np.concatenate([images[:first_row], blank, images[first_row:]])
        captions = captions[:first_row] + [""] * pad + captions[first_row:]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    grid = make_grid(images, nrow=columns, scale=max(1, 64 // images.shape[1]), captions=captions)
    grid.save(out)
    return out
