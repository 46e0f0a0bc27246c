"""Diagnostics that speak: the statistics every report already logs, read against documented
thresholds, said once on the console and tagged on the run (`pipeline.warning.<name>`) when a
GAN goes wrong in the ways the seeds' researchers met.

    colour     color_gap (mean |fake - real| of the channel means and stds, in [-1, 1] units)
               above COLOR_GAP, risen COLOR_RISE above the lowest it reached in the run, and
               growing for COLOR_REPORTS reports in a row: G's images darkening or taking a
               colour cast away from the data's (the seed's complaint). A tiny CPU model's gap
               sits near 0.35 early and wobbles by a few hundredths: level alone means little.
    collapse   diversity (mean pairwise distance of fakes / of reals) below DIVERSITY_FLOOR
               for COLLAPSE_REPORTS reports in a row: G draws near-copies (mode collapse; a
               tiny model after one epoch is near 0.15, a trained one near 1).
    d_won      D(x) above D_WON and D(G(z)) below 1 - D_WON for D_WON_REPORTS reports in a
               row: D tells every fake apart, G's gradient vanishes (probability losses only:
               a WGAN critic's scores are not probabilities).
    memorising D_gap (D's mean output on training reals minus held-out reals,
               `pipeline.training.overfitting`) growing for MEMORISE_REPORTS reports in a row
               and r_v (that gap over the training-to-fake gap) above R_V: D tells the images
               it trained on from new real ones, the small-dataset failure that augmentation
               (`augment.policy`, ADA) exists for. A healthy run's r_v wobbles near 0.

A finding is said once per run, when it first holds; the run goes on (a researcher may want to
see where it leads), the tag says from which report on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.training.findings import Finding

COLOR_GAP = 0.15
COLOR_RISE = 0.1
COLOR_REPORTS = 3
DIVERSITY_FLOOR = 0.05
COLLAPSE_REPORTS = 2
D_WON = 0.95
D_WON_REPORTS = 3
MEMORISE_REPORTS = 3
R_V = 0.3


@dataclass
class Diagnostics:
    """Reads each report's metrics; `update` returns the findings that newly hold."""

    wasserstein: bool = False
    history: list[dict[str, float]] = field(default_factory=list)
    said: set[str] = field(default_factory=set)

    def update(self, metrics: dict[str, float]) -> list[Finding]:
        self.history.append(metrics)
        checks = (self._colour(), self._collapse(), self._d_won(), self._memorising())
        found = [f for f in checks if f is not None]
        new = [f for f in found if f.name not in self.said]
        self.said |= {f.name for f in new}
        return new

    def _last(self, key: str, n: int) -> list[float] | None:
        values = [m[key] for m in self.history[-n:] if key in m]
        return values if len(self.history) >= n and len(values) == n else None

    def _colour(self) -> Finding | None:
        gaps = self._last("color_gap", COLOR_REPORTS + 1)
        if gaps is None or gaps[-1] <= COLOR_GAP:
            return None
        lowest = min(m["color_gap"] for m in self.history if "color_gap" in m)
        rising = all(b > a for a, b in zip(gaps, gaps[1:], strict=False))
        if not rising or gaps[-1] < lowest + COLOR_RISE:
            return None
        trend = " -> ".join(f"{g:.3f}" for g in gaps)
        return Finding(
            "colour",
            f"colour drift: G's colour statistics move away from the data's (color_gap {trend}, "
            f"up from {lowest:.3f}); compare fake_mean with real_mean in MLflow, lower the "
            "learning rates or check the data's range",
        )

    def _collapse(self) -> Finding | None:
        ratios = self._last("diversity", COLLAPSE_REPORTS)
        if ratios is None or max(ratios) >= DIVERSITY_FLOOR:
            return None
        return Finding(
            "collapse",
            f"mode collapse: G's samples are near-copies (diversity {ratios[-1]:.3f} of the "
            f"data's, < {DIVERSITY_FLOOR} for {COLLAPSE_REPORTS} reports); look at the grid",
        )

    def _d_won(self) -> Finding | None:
        if self.wasserstein:
            return None
        real, fake = self._last("D_x", D_WON_REPORTS), self._last("D_G_z", D_WON_REPORTS)
        if real is None or fake is None:
            return None
        if min(real) <= D_WON or max(fake) >= 1 - D_WON:
            return None
        return Finding(
            "d_won",
            f"D has won: D(x) {real[-1]:.3f}, D(G(z)) {fake[-1]:.3f} for {D_WON_REPORTS} "
            "reports: G's gradient vanishes; lower lr_d, raise lr_g, or weaken D "
            "(model.width_d, spectral norm)",
        )

    def _memorising(self) -> Finding | None:
        gaps = self._last("D_gap", MEMORISE_REPORTS + 1)
        r_v = self._last("r_v", 1)
        if gaps is None or r_v is None or r_v[0] <= R_V:
            return None
        if not all(b > a for a, b in zip(gaps, gaps[1:], strict=False)):
            return None
        trend = " -> ".join(f"{g:.2f}" for g in gaps)
        return Finding(
            "memorising",
            f"D is memorising the training set: its output on training reals moves away from "
            f"held-out reals (D_gap {trend}, r_v {r_v[0]:.2f}); on a small dataset train with "
            "--set augment.policy=bgc (ADA) or color,translation,cutout (DiffAugment)",
        )
