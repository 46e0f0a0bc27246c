"""Diagnostics that speak: each warning fires on a real run broken the way the seeds' runs
broke, said on the console once and handed to `on_report` (the Ray worker tags the run with
it), and none fires on a healthy run of the same size."""

from __future__ import annotations

import pytest

from pipeline.tasks.generation.diagnostics import Diagnostics
from pipeline.tasks.generation.task import GenerationTask
from pipeline.training import runner
from pipeline.training.config import load_train_config
from pipeline.training.runner import LocalContext, run_worker
from tests.train_fixtures import TINY, anime_dataset


@pytest.fixture(scope="module")
def anime(tmp_path_factory):
    from tests.conftest import require_shared

    require_shared("anime-mlds2018")
    return anime_dataset(tmp_path_factory.mktemp("diagnostics"))


def findings(anime, tmp_path, capsys, epochs: int = 2, **options) -> tuple[list[str], str]:
    """Run a tiny DCGAN reporting every 3 steps; the findings each report carried, and the
    console."""
    config = load_train_config(
        "dcgan",
        options={"data.dataset": str(anime), "workers": 1, "epochs": epochs, "report_every": 3,
                 **TINY, **options},
    )  # fmt: skip
    names: list[str] = []
    run_worker(config, LocalContext(tmp_path), str(anime),
               lambda report: names.extend(f.name for f in report.findings))  # fmt: skip
    return names, capsys.readouterr().out


def test_a_healthy_run_says_nothing(anime, tmp_path, capsys):
    names, console = findings(anime, tmp_path, capsys)
    assert names == [] and "warning:" not in console


def test_d_wins_when_g_cannot_learn(anime, tmp_path, capsys):
    names, console = findings(anime, tmp_path, capsys, **{"optim.lr_g": 0.0, "optim.lr_d": 2e-3})
    assert names == ["d_won"]  # once, however long it lasts
    assert "warning: D has won: D(x) 0.9" in console


def test_collapse_when_every_z_is_the_same(anime, tmp_path, capsys):
    names, console = findings(anime, tmp_path, capsys, epochs=1, z_std=0.0)
    assert names == ["collapse"] and "warning: mode collapse" in console


class DarkeningTask(GenerationTask):
    """A G whose images darken a little more at every call: the seed's complaint, as a bug."""

    def distribute(self) -> None:
        super().distribute()
        calls = [0]

        def darker(module, inputs, output):
            calls[0] += 1
            return (output - 0.03 * calls[0]).clamp(-1, 1)

        self.G_train.register_forward_hook(darker)


def test_colour_drift_when_g_darkens(anime, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(runner.TASKS, "dcgan", DarkeningTask)
    names, console = findings(anime, tmp_path, capsys)
    assert "colour" in names and "warning: colour drift" in console


def test_thresholds_on_recorded_sequences():
    """The rules on numbers: a wobbling gap is not a drift; a WGAN critic never "wins"."""
    wobble = Diagnostics()
    for gap in (0.35, 0.33, 0.34, 0.35, 0.36, 0.37):  # rising, but only 0.04 above its low
        assert wobble.update({"color_gap": gap, "diversity": 0.15}) == []
    critic = Diagnostics(wasserstein=True)
    for _ in range(5):
        assert critic.update({"D_x": 12.0, "D_G_z": -9.0}) == []
    decided = Diagnostics()
    said = [decided.update({"D_x": 0.99, "D_G_z": 0.01}) for _ in range(5)]
    assert [len(s) for s in said] == [0, 0, 1, 0, 0]  # after 3 reports, once


def test_memorising_when_the_train_val_gap_keeps_growing():
    """D_gap rising for 3 reports with r_v above 0.3: said once; a gap that wobbles, or grows
    while r_v stays small (D separating everything better), is not memorising."""
    memorising = Diagnostics()
    said = [memorising.update({"D_gap": gap, "r_v": gap / 4})
            for gap in (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)]  # fmt: skip
    assert [[f.name for f in s] for s in said] == [[], [], [], ["memorising"], [], []]
    assert "D is memorising the training set" in said[3][0].message
    assert "augment.policy=bgc" in said[3][0].message
    wobble = Diagnostics()
    for gap in (0.5, 1.5, 1.0, 2.0, 1.8, 2.2):
        assert wobble.update({"D_gap": gap, "r_v": 0.6}) == []
    sharper = Diagnostics()
    for gap in (0.1, 0.2, 0.3, 0.4, 0.5):
        assert sharper.update({"D_gap": gap, "r_v": 0.1}) == []
    unmeasured = Diagnostics()  # no held-out split: no D_gap, nothing to say
    for _ in range(5):
        assert unmeasured.update({"D_train": 3.0, "D_fake": -3.0}) == []
