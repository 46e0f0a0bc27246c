"""How a generator is evaluated: torch-free, so the command line can build and print it."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.config import ConfigError

DIMS = (64, 192, 768, 2048)  # pytorch-fid's feature layers; 2048 (pool3) is the standard


@dataclass(frozen=True)
class FidConfig:
    every: int = 0  # epochs between evaluations during training; 0 = never
    samples: int = 10000  # generated images; the real side takes as many (up to the split)
    dims: int = 2048  # 2048 = pool3, the FID of the papers; 64/192/768 for small budgets
    split: str = ""  # real images' split; "" = the training split
    batch: int = 50  # images per Inception forward
    weights: str = ""  # weights file; "" = $PIPELINE_FID_WEIGHTS, torch hub cache, download
    kid_subsets: int = 100  # KID: subsets averaged (torch-fidelity's defaults)
    kid_subset_size: int = 1000  # images per subset (capped at the sample count)
    seed: int = 0  # z and the real subset
    intra: bool = False  # intra-FID too: FID per class (conditional runs, enough per class)
    # The Inception Score needs the whole network (pool3 and the logits): free at 2048-d,
    # always computed there; below 2048-d only when asked, as it costs the rest of the net.
    inception_score: bool = False


def check_fid(fid: FidConfig) -> None:
    if fid.every < 0:
        raise ConfigError(f"fid.every={fid.every} must be >= 0 (0 turns FID off)")
    if fid.dims not in DIMS:
        raise ConfigError(f"fid.dims={fid.dims} is not allowed; choose one of: 64, 192, 768, 2048")
    if fid.samples <= fid.dims:
        raise ConfigError(
            f"fid.samples={fid.samples} is too few for {fid.dims}-d features: the covariance "
            f"needs more samples than dimensions (pytorch-fid recommends >= 10000 for 2048-d; "
            f"for a quick look use --fid-dims 64 with > 64 samples)"
        )
    if fid.batch < 1:
        raise ConfigError(f"fid.batch={fid.batch} must be at least 1")
    if fid.kid_subsets < 1 or fid.kid_subset_size < 2:
        raise ConfigError("fid.kid_subsets must be >= 1 and fid.kid_subset_size >= 2")


def check_reference(manifest: dict, split: str, fid: FidConfig) -> None:
    """The real side of FID: `split` exists in the dataset and holds more images than the
    features have dimensions (else the covariance is singular)."""
    if split not in manifest["splits"]:
        raise ConfigError(
            f"FID against {manifest['name']}: no split {split!r}; it has: "
            f"{', '.join(manifest['splits'])}"
        )
    rows = manifest["splits"][split]["rows"]
    if min(rows, fid.samples) <= fid.dims:
        raise ConfigError(
            f"FID against {manifest['name']}/{split}: {rows} real images are too few for "
            f"{fid.dims}-d features (needs more than {fid.dims}); use fewer FID dims "
            "(64, 192 or 768) for a small dataset"
        )


def wants_logits(fid: FidConfig) -> bool:
    """Whether an evaluation computes the Inception Score (see `FidConfig.inception_score`)."""
    return fid.dims == 2048 or fid.inception_score


def metric_name(base: str, standin: bool) -> str:
    """`fid` / `kid` for the real Inception weights; `fid_standin` / `kid_standin` for the
    random-weight stand-in, so its numbers never sit beside comparable ones."""
    return f"{base}_standin" if standin else base
