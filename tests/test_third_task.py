"""The rooms hold: a third task, written here and registered with one entry in `runner.TASKS`,
trains through the real runner (no Ray), checkpoints, resumes from a checkpoint where it left
off and reports, with no other change to the runner, the config or the other tasks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import PipelineError
from pipeline.training import checkpoint as ckpt
from pipeline.training import runner
from pipeline.training.config import TrainConfig, load_train_config
from pipeline.training.context import DataShape, Setup
from pipeline.training.images import to_uint8
from pipeline.training.optim import make_optimizer, scale_rates, update
from pipeline.training.runner import LocalContext, run_worker
from tests.train_fixtures import TINY, anime_dataset

STEPS_PER_EPOCH = 566 // 32  # the anime faces in batches of 32


class MeanImage(nn.Module):
    """One image, every pixel a parameter: fitted by MSE, it becomes the mean face."""

    def __init__(self, channels: int, size: int):
        super().__init__()
        self.image = nn.Parameter(torch.zeros(1, channels, size, size))

    def forward(self, n: int) -> torch.Tensor:
        return self.image.expand(n, -1, -1, -1)


class MeanImageTask:
    """The smallest task the `runner.Task` protocol allows: a mean image and its optimizer."""

    EXPORT = ("mean_image",)
    EXPORT_FILE = "mean_image.pt"

    def __init__(self, config: TrainConfig, setup: Setup, data: DataShape):
        self.config, self.setup = config, setup
        self.model = self.model_train = MeanImage(data.channels, data.image_size).to(setup.device)
        self.opt = make_optimizer(config.optim, self.model.parameters(), config.optim.lr_g)

    @staticmethod
    def check_dataset(config: TrainConfig, manifest: dict) -> None:
        pass  # any image dataset has a mean

    @staticmethod
    def evaluate(state, handle, fid, **options):
        raise PipelineError("a mean image has nothing to evaluate")

    def state_dict(self) -> dict:
        return {"mean_image": self.model.state_dict(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["mean_image"])
        self.opt.load_state_dict(state["opt"])

    def distribute(self) -> None:
        self.at_start = self.model.image.detach().clone()  # what training goes on from
        if self.setup.distributed:
            self.model_train = nn.parallel.DistributedDataParallel(self.model)

    def set_learning_rates(self, factor: float) -> dict[str, float]:
        return scale_rates(factor, lr_g=(self.opt, self.config.optim.lr_g))

    def step(self, x: torch.Tensor, y: torch.Tensor | None, step: int):
        loss = F.mse_loss(self.model_train(len(x)), x)
        return {"loss_mse": loss.detach(), "grad_norm": update(self.model, self.opt, loss)}, loss

    def summaries(self, values: dict[str, torch.Tensor]) -> dict[str, float]:
        return {"mean_pixel": float(self.model.image.detach().mean())}

    def boundary(self, step: int) -> bool:
        return False

    def fixed_samples(self, rows: int, columns: int) -> None:
        pass  # one deterministic image: nothing to fix

    @torch.no_grad()
    def sample_grid(self):
        from pipeline.grid import make_grid

        return make_grid(to_uint8(self.model(1)), nrow=1), []

    def diagnose(self, metrics: dict[str, float]) -> list:
        return []

    @torch.no_grad()
    def generate(self, n: int, generator: torch.Generator, y=None) -> np.ndarray:
        return to_uint8(self.model(n))


@pytest.fixture(scope="module")
def anime(tmp_path_factory):
    from tests.conftest import require_shared

    require_shared("anime-mlds2018")
    return anime_dataset(tmp_path_factory.mktemp("third-task"))


@pytest.fixture
def built(monkeypatch) -> list[MeanImageTask]:
    """The one registry entry (the family's name is the dcgan preset's, whose config the
    runner reads); every task the runner builds, in order."""
    tasks: list[MeanImageTask] = []

    class Recorded(MeanImageTask):
        def __init__(self, *args):
            super().__init__(*args)
            tasks.append(self)

    monkeypatch.setitem(runner.TASKS, "dcgan", Recorded)
    return tasks


def config(anime, epochs: int):
    options = {**TINY, "optim.lr_g": 0.05, "data.flip": False, "report_every": 5}
    return load_train_config(
        "dcgan", options={"data.dataset": str(anime), "workers": 1, "epochs": epochs, **options}
    )


def test_a_third_task_trains_checkpoints_resumes_and_reports(anime, tmp_path, built):
    # Train one epoch: a report (metrics, grid, checkpoint) every 5 steps and at its end.
    reports = []
    first = LocalContext(tmp_path / "first")
    run_worker(config(anime, 1), first, str(anime), reports.append)
    assert [r.metrics["step"] for r in reports] == [5, 10, 15, STEPS_PER_EPOCH]
    for report in reports:
        assert math.isfinite(report.metrics["loss_mse"]) and report.metrics["nonfinite"] == 0
        assert {"grad_norm", "mean_pixel", "lr_g", "images_per_s"} <= set(report.metrics)
        assert report.grid.size == (32 + 4, 32 + 4) and report.row_names == []
    assert reports[-1].metrics["loss_mse"] < reports[0].metrics["loss_mse"]  # it learns
    assert first.reports == [r.metrics for r in reports]  # what the context was handed
    saved = ckpt.load(first.checkpoint())
    assert saved["step"] == STEPS_PER_EPOCH and saved["epoch"] == 1
    assert {"mean_image", "opt", "config", "rng"} <= set(saved)

    # Resume mid-epoch from the checkpoint of step 10: it goes on from there, from the saved
    # weights and optimizer, skipping the batches already trained on.
    mid = ckpt.load(tmp_path / "first" / "checkpoint-00000010")
    resumed_ctx = LocalContext(
        tmp_path / "resumed", resume_from=tmp_path / "first" / "checkpoint-00000010"
    )
    resumed = []
    last = run_worker(config(anime, 2), resumed_ctx, str(anime), resumed.append)
    assert torch.equal(built[1].at_start.cpu(), mid["mean_image"]["image"])
    assert [r.metrics["step"] for r in resumed] == [15, 17, 20, 25, 30, 2 * STEPS_PER_EPOCH]
    assert last["epoch"] == 2 and last["images_seen"] == 2 * STEPS_PER_EPOCH * 32

    # It ends where a run that was never interrupted ends.
    straight = LocalContext(tmp_path / "straight")
    run_worker(config(anime, 2), straight, str(anime))
    torch.testing.assert_close(
        ckpt.load(resumed_ctx.checkpoint())["mean_image"]["image"],
        ckpt.load(straight.checkpoint())["mean_image"]["image"],
    )

    # The model alone, as a finished run exports it.
    exported = ckpt.save_generator(
        saved, tmp_path / MeanImageTask.EXPORT_FILE, MeanImageTask.EXPORT
    )
    assert set(ckpt.load(exported)) >= {"mean_image", "config", "image", "step"}
    assert "opt" not in ckpt.load(exported)
