"""The live progress line: when rank 0 posts, what the line says, and that posting changes no
number of the run (no Ray here; tests/test_train_ray.py sees the line on `pipeline train`'s
console)."""

from __future__ import annotations

import io

import pytest

from pipeline.training import progress
from pipeline.training.progress import ProgressView, Ticker, describe, duration
from pipeline.training.runner import LocalContext, Position, run_worker
from tests.test_training_loop import config


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_ticker_posts_every_few_seconds_and_reads_losses_only_then():
    clock, posted, reads = Clock(), [], []
    ticker = Ticker(posted.append, epochs=2, steps_per_epoch=10, step=0, clock=clock)

    def losses():
        reads.append(1)
        return {"loss_d": 0.5, "loss_g": 2.0, "grad_norm_d": 3.0}

    position = Position()
    for step in range(1, 21):  # 20 steps of 0.5 s: a post every 4 steps (EVERY = 2 s)
        clock.now += 0.5
        position.step, position.images_seen = step, step * 64
        position.epoch, position.batch_in_epoch = divmod(step, 10)
        ticker.tick(position, losses)
    assert len(posted) == len(reads) == 5  # the loss read (a host sync) only when posting
    last = posted[-1]
    assert last["step"] == 20 and last["steps"] == 20 and last["epoch"] == 2
    assert last["images_per_s"] == pytest.approx(4 * 64 / 2.0)
    assert last["eta_s"] == 0 and posted[0]["eta_s"] == pytest.approx(16 * 0.5)
    assert last["losses"] == {"loss_d": 0.5, "loss_g": 2.0}  # only the line's losses

    ticker.tick(position, {"loss_d": 0.25}, force=True)  # a report: posted at once
    assert len(posted) == 6 and posted[-1]["losses"] == {"loss_d": 0.25}


def test_ticker_never_stops_training_when_posting_fails():
    def broken(state):
        raise ConnectionError("GCS is gone")

    ticker = Ticker(broken, epochs=1, steps_per_epoch=4, step=0)
    ticker.tick(Position(step=1, images_seen=8, batch_in_epoch=1), {}, force=True)


def test_the_line_reads_like_a_progress_bar():
    state = {
        "epoch": 3,
        "epochs": 20,
        "step": 120,
        "steps": 800,
        "images_per_s": 412.4,
        "eta_s": 250,
        "losses": {"loss_d": 0.6123, "loss_g": 2.3146},
    }
    assert describe(state) == (
        "epoch 3/20 · step 120/800 · 412 img/s · ETA 4m10s · loss_d 0.6123 loss_g 2.315"
    )
    assert describe({**state, "images_per_s": None, "eta_s": None, "losses": {}}) == (
        "epoch 3/20 · step 120/800"
    )
    assert [duration(s) for s in (9, 61, 3600 * 2 + 60 * 5)] == ["9s", "1m01s", "2h05m"]


def test_off_a_terminal_the_view_prints_each_epoch_and_then_rarely(monkeypatch):
    out = io.StringIO()
    view = ProgressView("sweep/s/", stream=out)
    base = {"epochs": 3, "steps": 30, "images_per_s": 100.0, "eta_s": 5, "losses": {}}
    clock = Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    for epoch, step in ((1, 2), (1, 4), (2, 12)):
        lines = {"t1": describe({**base, "epoch": epoch, "step": step})}
        view._print_changed({"t1": {**base, "epoch": epoch, "step": step}}, lines)
        clock.now += 1
    clock.now += progress.QUIET
    view._print_changed({"t1": {**base, "epoch": 2, "step": 20}}, {"t1": "t1 later"})
    view._print_changed({"t1": {**base, "epoch": 2, "step": 20}}, {"t1": "t1 again"}, final=True)
    view._print_changed({"t1": {**base, "epoch": 3, "step": 30}}, {"t1": "t1 end"}, final=True)
    printed = out.getvalue().splitlines()
    assert printed == [
        describe({**base, "epoch": 1, "step": 2}),
        describe({**base, "epoch": 2, "step": 12}),
        "t1 later",
        "t1 end",  # where the run ended, once, unless its last line said it already
    ]


@pytest.fixture(scope="module")
def anime(tmp_path_factory):
    from tests.conftest import require_shared
    from tests.train_fixtures import anime_dataset

    require_shared("anime-mlds2018")
    return anime_dataset(tmp_path_factory.mktemp("progress"))


def test_posting_every_step_changes_no_number_of_the_run(anime, tmp_path, monkeypatch):
    """The same seed gives the same losses whether the line is read every step or never."""
    quiet = run_worker(config("dcgan", anime, epochs=1), LocalContext(tmp_path / "a"), str(anime))
    monkeypatch.setattr(progress, "EVERY", 0.0)
    ctx = LocalContext(tmp_path / "b")
    chatty = run_worker(config("dcgan", anime, epochs=1), ctx, str(anime))
    assert len(ctx.states) >= 17  # every step, and after the report
    assert ctx.states[-1]["epoch"] == 1 and ctx.states[-1]["step"] == 17
    assert set(ctx.states[0]["losses"]) == {"loss_d", "loss_g"}
    same = ("loss_d", "loss_g", "D_x", "D_G_z", "grad_norm_d", "diversity")
    assert {k: quiet[k] for k in same} == {k: chatty[k] for k in same}
