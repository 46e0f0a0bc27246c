"""A finding: what a task's diagnostics read in a report's metrics (`Task.diagnose`). The
runner says it on the console once; the Ray worker tags the run `pipeline.warning.<name>`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Finding:
    name: str  # the tag's last part: colour, collapse, no_adversarial, ...
    message: str
