"""Where the FID Inception weights come from, and the labelled stand-in when there are none.

The standard file is pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (the TF 2015-12-05
Inception-v3 of the original FID code, converted). It is looked for, in order, at an explicit
path (`--fid-weights`), `$PIPELINE_FID_WEIGHTS`, and the torch hub cache where pytorch-fid
itself keeps it; else it is downloaded into that cache. Every file's sha256 is compared in
full with the standard file's (`SHA256`), or with `$PIPELINE_FID_SHA256` for a converted copy:
the 8 hex digits in the name (torch hub's convention) are too few to trust. Offline with no
file, a stand-in backbone - the same network with fixed-seed random weights - keeps the
pipeline working; its numbers are logged as `fid_standin` / `kid_standin` and are comparable
only with each other.

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
# The sha256 of FILE (95,628,359 bytes) in full. The name holds its first 8 hex digits only,
# and 32 bits can be matched by brute force on one machine: all 64 are compared.
SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
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


def expected_sha256() -> str:
    """The sha256 the weights must have: `$PIPELINE_FID_SHA256` (for a converted copy: all 64
    hex digits, as `sha256sum` prints them), else the standard file's."""
    override = os.environ.get("PIPELINE_FID_SHA256", "").strip()
    if not override:
        return SHA256
    if not re.fullmatch(r"[0-9a-fA-F]{64}", override):
        raise PipelineError(
            f"PIPELINE_FID_SHA256={override[:80]!r} is not a full sha256: give all 64 hex "
            "digits of the weights file's sha256 (`sha256sum FILE`)"
        )
    return override.lower()


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
        return Backbone("inception", str(file.resolve()), verify(file, expected_sha256()))
    cached = hub_path()
    if cached.is_file():
        return Backbone("inception", str(cached), verify(cached, expected_sha256()))
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
        return Backbone("inception", str(file), verify(file, expected_sha256()))
    return resolve()


def fetch(url: str, folder: Path) -> Path:
    """Download `url` into `folder`, resumable, and keep it only if its sha256 is the one
    expected: a wrong file never reaches the cache under the real name."""
    from pipeline.data.download import download

    name = url.rsplit("/", 1)[-1]
    expected = expected_sha256()  # a malformed PIPELINE_FID_SHA256 fails before downloading
    folder.mkdir(parents=True, exist_ok=True)
    staged = download(url, folder / f"{name}.unverified")
    try:
        verify(staged, expected, what=f"downloaded {name}")
    except PipelineError:
        staged.unlink(missing_ok=True)
        raise
    final = folder / name
    os.replace(staged, final)
    return final


def verify(file: Path, expected: str, what: str | None = None) -> str:
    """The sha256 of `file`, when it is `expected` (all 64 hex digits); else a PipelineError."""
    digest = sha256(file)
    if digest != expected:
        raise PipelineError(
            f"{what or file} is not the FID Inception weights: its sha256 is {digest}, "
            f"expected {expected} (allow a converted copy with PIPELINE_FID_SHA256=<its sha256>)"
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
