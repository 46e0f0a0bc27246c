"""Where the FID Inception weights come from, and the labelled stand-in when there are none.

The standard file is pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (the TF 2015-12-05
Inception-v3 of the original FID code, converted). It is looked for, in order, at an explicit
path (`--fid-weights`), `$PIPELINE_FID_WEIGHTS`, and the torch hub cache where pytorch-fid
itself keeps it; else it is downloaded into that cache and its sha256 checked against the
prefix in its name (torch hub's convention). Offline with no file, a stand-in backbone - the
same network with fixed-seed random weights - keeps the pipeline working; its numbers are
logged as `fid_standin` / `kid_standin` and are comparable only with each other.

    backbone = resolve()            # Backbone(kind="inception", path=..., sha256=...)
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from pipeline.data.download import Unreachable
from pipeline.errors import PipelineError

FILE = "pt_inception-2015-12-05-6726825d.pth"
URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{FILE}"
SHA256_PREFIX = "6726825d"
STANDIN_SEED = 0


@dataclass(frozen=True)
class Backbone:
    """The network FID is computed with: the real weights, or the stand-in."""

    kind: str  # "inception" | "standin"
    path: str | None  # the weights file (None for the stand-in)
    sha256: str  # of the file, or of the stand-in's state dict

    @property
    def standin(self) -> bool:
        return self.kind == "standin"

    def describe(self) -> str:
        if self.standin:
            return (
                f"STAND-IN Inception (random weights, seed {STANDIN_SEED}, sha256 "
                f"{self.sha256[:12]}): numbers NOT comparable with published FID"
            )
        return f"Inception-v3 TF 2015-12-05 ({Path(self.path).name}, sha256 {self.sha256[:12]})"

    def to_dict(self) -> dict:
        return {"kind": self.kind, "path": self.path, "sha256": self.sha256}


def hub_path() -> Path:
    """Where pytorch-fid (torch.hub) keeps the file: $TORCH_HOME/hub/checkpoints."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / FILE


def expected_prefix(name: str | None = None) -> str:
    """The sha256 prefix the weights must have: `$PIPELINE_FID_SHA256` (for a converted copy),
    else the one in the file name (torch hub's `-<hash>.` convention), else the standard."""
    override = os.environ.get("PIPELINE_FID_SHA256")
    if override:
        return override.lower()
    found = re.search(r"-([a-f0-9]{8,})\.", name or "")
    return found.group(1) if found else SHA256_PREFIX


def resolve(path: str | Path | None = None, *, download: bool = True, say=None) -> Backbone:
    """The backbone to use. `say` gets one line about what was chosen (a download, the
    stand-in). Raises PipelineError for a named file that is missing or has the wrong hash."""
    say = say or (lambda line: print(line, file=sys.stderr))
    named = path or os.environ.get("PIPELINE_FID_WEIGHTS")
    if named:
        source = "--fid-weights" if path else "PIPELINE_FID_WEIGHTS"
        file = Path(named).expanduser()
        if not file.is_file():
            raise PipelineError(f"FID weights not found: {file} (from {source})")
        return Backbone("inception", str(file.resolve()), verify(file, expected_prefix()))
    cached = hub_path()
    if cached.is_file():
        return Backbone("inception", str(cached), verify(cached, expected_prefix(cached.name)))
    url = os.environ.get("PIPELINE_FID_URL", URL)
    if download and url not in ("", "off"):
        try:
            fetched = fetch(url, cached.parent)
            return Backbone("inception", str(fetched), sha256(fetched))
        except Unreachable as exc:
            say(f"FID weights: {exc}")
    from pipeline.metrics.inception import standin_sha256

    say(
        "FID weights not found (pass --fid-weights FILE, set PIPELINE_FID_WEIGHTS, or put "
        f"{FILE} in {cached.parent}): using the random-weight STAND-IN; its numbers are "
        "logged as fid_standin / kid_standin and are not comparable with published FID"
    )
    return Backbone("standin", None, standin_sha256())


def backbone_for(weights: str) -> Backbone:
    """The backbone a worker uses: what the driver resolved (a path, or "standin"), or,
    when nothing was resolved (a loop run without the driver), `resolve()`."""
    if weights == "standin":
        from pipeline.metrics.inception import standin_sha256

        return Backbone("standin", None, standin_sha256())
    if weights:
        file = Path(weights)
        if not file.is_file():
            raise PipelineError(f"FID weights not found on this machine: {file}")
        return Backbone("inception", str(file), verify(file, expected_prefix(file.name)))
    return resolve()


def fetch(url: str, folder: Path) -> Path:
    """Download `url` into `folder`, resumable, and keep it only if its sha256 matches the
    prefix in its name: a wrong file never reaches the cache under the real name."""
    from pipeline.data.download import download

    name = url.rsplit("/", 1)[-1]
    folder.mkdir(parents=True, exist_ok=True)
    staged = download(url, folder / f"{name}.unverified")
    try:
        verify(staged, expected_prefix(name), what=f"downloaded {name}")
    except PipelineError:
        staged.unlink(missing_ok=True)
        raise
    final = folder / name
    os.replace(staged, final)
    return final


def verify(file: Path, prefix: str, what: str | None = None) -> str:
    digest = sha256(file)
    if not digest.startswith(prefix):
        raise PipelineError(
            f"{what or file} is not the FID Inception weights: its sha256 is {digest[:16]}..., "
            f"expected {prefix}... (a converted copy can be allowed with PIPELINE_FID_SHA256)"
        )
    return digest


_HASHES: dict[tuple, str] = {}


def sha256(file: Path) -> str:
    stat = Path(file).stat()
    key = (str(Path(file).resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(file, "rb") as f:
            while block := f.read(1 << 22):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]
