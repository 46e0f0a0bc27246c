"""Diagnostics of an image-completion run: the ways GLCIC reimplementations fail (notes/glcic.md),
read from each report's metrics, said once on the console and tagged on the run as the GAN
diagnostics are (a `pipeline.training.findings.Finding` each).

    no_adversarial  in the joint phase, D's loss below D_COLLAPSE for COLLAPSE_REPORTS reports in
                    a row: D tells every completion from a real image, so C's adversarial term
                    shapes nothing (the seed's blog, otenim #26, shinseung428: D's loss at ~0
                    while C trains on, no adversarial interaction)
    stalled         C's hole L1 on the evaluation set has not improved by STALL_GAIN (relative)
                    over its best before the last STALL_REPORTS reports, while C trains
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.training.findings import Finding

D_COLLAPSE = 0.05
COLLAPSE_REPORTS = 2
STALL_REPORTS = 4
STALL_GAIN = 0.01
PHASE_C, PHASE_D, PHASE_JOINT = 1, 2, 3  # the `phase` metric


@dataclass
class CompletionDiagnostics:
    """Reads each report's metrics; `update` returns the findings that newly hold."""

    alpha: float
    history: list[dict[str, float]] = field(default_factory=list)
    said: set[str] = field(default_factory=set)

    def update(self, metrics: dict[str, float]) -> list[Finding]:
        self.history.append(metrics)
        found = [f for f in (self._no_adversarial(), self._stalled()) if f is not None]
        new = [f for f in found if f.name not in self.said]
        self.said |= {f.name for f in new}
        return new

    def _no_adversarial(self) -> Finding | None:
        last = self.history[-COLLAPSE_REPORTS:]
        if len(last) < COLLAPSE_REPORTS or any(m.get("phase") != PHASE_JOINT for m in last):
            return None
        if any(m.get("loss_d", 1.0) >= D_COLLAPSE for m in last):
            return None
        m = last[-1]
        adversarial = self.alpha * m.get("loss_adv", 0.0)
        share = adversarial / max(m.get("loss_c", 0.0), 1e-12)
        return Finding(
            "no_adversarial",
            f"no adversarial interaction: D's loss is {m['loss_d']:.4f} (< {D_COLLAPSE} for "
            f"{COLLAPSE_REPORTS} reports of the joint phase): D tells every completion from a "
            f"real image (accuracy on completions {m.get('d_acc_fake', float('nan')):.2f}) and "
            f"C's adversarial term (alpha x loss_adv = {adversarial:.3g}, {share:.1%} of C's "
            "loss) no longer moves C; weaken D (lr_d, model.width_d, spectral norm) or lengthen "
            "completion.tc so C's completions start closer",
        )

    def _stalled(self) -> Finding | None:
        values = [m["l1_hole"] for m in self.history if "l1_hole" in m]
        if len(values) < STALL_REPORTS + 2 or self.history[-1].get("phase") == PHASE_D:
            return None
        before, recent = min(values[:-STALL_REPORTS]), min(values[-STALL_REPORTS:])
        if recent < before * (1 - STALL_GAIN):
            return None
        return Finding(
            "stalled",
            f"C's reconstruction stopped improving: hole L1 {values[-1]:.2f} on the evaluation "
            f"set, no better than {before:.2f} for {STALL_REPORTS} reports; lower the learning "
            "rates, check the masks and the grid, or stop the run here",
        )
