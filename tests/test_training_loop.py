"""The per-worker loop without Ray (world size 1): what every DDP rank runs."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.config import ConfigError
from pipeline.training import checkpoint as ckpt
from pipeline.training.config import load_train_config
from pipeline.training.runner import LocalContext, run_worker
from tests.train_fixtures import TINY, anime_dataset


@pytest.fixture(scope="module")
def anime(tmp_path_factory):
    from tests.conftest import require_shared

    require_shared("anime-mlds2018")
    return anime_dataset(tmp_path_factory.mktemp("train"))


def config(family: str, dataset, **options):
    return load_train_config(
        family, options={"data.dataset": str(dataset), "workers": 1, **TINY, **options}
    )


def test_dcgan_epoch_reports_metrics_grid_and_checkpoint(anime, tmp_path):
    grids = []
    ctx = LocalContext(tmp_path)
    last = run_worker(
        config("dcgan", anime, epochs=1), ctx, str(anime), lambda report: grids.append(report.grid)
    )
    assert last["epoch"] == 1 and last["step"] == 566 // 32
    assert last["images_seen"] == 17 * 32
    for key in (
        "loss_d",
        "loss_g",
        "D_x",
        "D_G_z",
        "grad_norm_d",
        "grad_norm_g",
        "fake_mean_r",
        "real_std_b",
        "color_gap",
        "diversity",
        "images_per_s",
    ):
        assert math.isfinite(last[key]), key
    assert 0 < last["D_x"] < 1 and last["nonfinite"] == 0
    assert grids[0].size == (8 * 66 + 2, 8 * 66 + 2)  # 64 samples of 32 px shown at 64 px
    state = ckpt.load(ctx.checkpoint())
    assert state["step"] == 17 and set(state) >= {"G", "D", "G_ema", "opt_g", "opt_d", "rng"}


def test_resume_continues_step_count_and_optimizers(anime, tmp_path):
    ctx = LocalContext(tmp_path)
    run_worker(config("dcgan", anime, epochs=1), ctx, str(anime))
    first = ckpt.load(ctx.checkpoint())
    last = run_worker(config("dcgan", anime, epochs=2), ctx, str(anime))
    assert last["epoch"] == 2 and last["step"] == 34
    second = ckpt.load(ctx.checkpoint())
    # Adam's step counter went on from the first run's, not from zero.
    step_of = lambda s: next(iter(s["opt_g"]["state"].values()))["step"]  # noqa: E731
    assert float(step_of(second)) == 2 * float(step_of(first))


def test_acgan_conditions_on_hair_and_eyes(anime, tmp_path):
    rows = []
    last = run_worker(
        config("acgan", anime, epochs=1),
        LocalContext(tmp_path),
        str(anime),
        lambda report: rows.append(report.row_names),
    )
    assert 0 <= last["acc_real"] <= 1 and 0 <= last["acc_fake"] <= 1
    assert math.isfinite(last["loss_d_cls"]) and math.isfinite(last["loss_g_cls"])
    assert rows[0][:3] == ["aqua", "black", "blonde"]  # one grid row per hair colour


def test_wgan_gp_uses_the_penalty_and_n_critic(anime, tmp_path):
    last = run_worker(config("wgan-gp", anime, epochs=1), LocalContext(tmp_path), str(anime))
    assert last["loss_gp"] >= 0 and "loss_g" in last
    with pytest.raises(ConfigError, match="BatchNorm"):
        from pipeline.training.driver import prepare

        prepare(config("wgan-gp", anime, **{"model.norm_d": "batch"}))


def test_wgan_clips_the_critic_and_trains_with_rmsprop(anime, tmp_path):
    """The `wgan` preset end to end (Arjovsky et al. 2017): critic weights within [-0.01,
    0.01] in the checkpoint, RMSProp's state for both nets, no gradient penalty."""
    import torch

    ctx = LocalContext(tmp_path)
    last = run_worker(config("wgan", anime, epochs=1), ctx, str(anime))
    assert "loss_g" in last and "loss_gp" not in last
    state = torch.load(next(tmp_path.rglob("checkpoint.pt")), weights_only=True)
    weights = [w for k, w in state["D"].items() if "running_" not in k and w.is_floating_point()]
    assert max(w.abs().max().item() for w in weights) <= 0.01 + 1e-8
    assert "square_avg" in next(iter(state["opt_d"]["state"].values()))  # RMSProp, not Adam
    with pytest.raises(ConfigError, match="weight_clip > 0"):
        config("dcgan", anime, loss="wgan")


@pytest.mark.parametrize("family", ["acgan", "wgan"])
def test_srresnet_trains_in_the_families(anime, tmp_path, family):
    """model.arch=srresnet end to end on the real anime sample: the ACGAN family with its
    class heads, and the WGAN critic (clipped); sample grids and checkpoints as any arch."""
    last = run_worker(
        config(family, anime, epochs=1, **{"model.arch": "srresnet", "model.heads": "decoupled"}),
        LocalContext(tmp_path),
        str(anime),
    )
    assert last["epoch"] == 1 and "loss_g" in last
    if family == "acgan":
        assert {"acc_real", "acc_fake"} <= set(last)
    assert list(tmp_path.rglob("checkpoint.pt"))


def test_nonfinite_loss_stops_the_run(anime, tmp_path):
    last = run_worker(
        config("dcgan", anime, epochs=2, z_std=float("inf")), LocalContext(tmp_path), str(anime)
    )
    assert last["nonfinite"] == 1 and last["step"] == 1


def test_checkpoint_is_plain_state_dicts(anime, tmp_path):
    ctx = LocalContext(tmp_path)
    run_worker(config("dcgan", anime, epochs=1), ctx, str(anime))
    state = torch.load(ctx.checkpoint() / ckpt.FILE, weights_only=True)  # no pickled code
    assert state["format"] == ckpt.FORMAT
    bogus = tmp_path / "bogus.pt"
    torch.save({"hello": 1}, bogus)
    from pipeline.errors import PipelineError

    with pytest.raises(PipelineError, match="not a pipeline checkpoint"):
        ckpt.load(bogus)


def test_learning_rate_schedules():
    from pipeline.training.runner import lr_factor

    step = load_train_config(
        "dcgan", options={"epochs": 10, "optim.schedule": "step", "optim.milestones": [3, 6]}
    )
    assert [lr_factor(step, e) for e in (0, 3, 6)] == pytest.approx([1, 0.1, 0.01])
    linear = load_train_config("dcgan", options={"epochs": 10, "optim.schedule": "linear"})
    assert [lr_factor(linear, e) for e in (0, 5, 10)] == pytest.approx([1, 0.5, 0])


def test_augment_flips_and_rotates_per_image():
    from pipeline.training.images import augment

    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    torch.manual_seed(0)
    flipped = augment(x, flip=True, rotate=0)
    for i in range(2):
        assert torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(2))
    rotated = augment(x, flip=False, rotate=10)
    assert rotated.shape == x.shape and not torch.equal(rotated, x)


def test_family_presets_and_config_errors():
    wgan = load_train_config("wgan-gp")
    assert (wgan.loss, wgan.optim.n_critic, wgan.optim.beta1, wgan.model.norm_d) == (
        "wgan-gp",
        5,
        0.0,
        "layer",
    )
    with pytest.raises(ConfigError, match="divide evenly"):
        load_train_config("dcgan", options={"batch_size": 65, "workers": 2})
    with pytest.raises(ConfigError, match="unknown key optim.lr"):
        load_train_config("dcgan", overrides=["optim.lr=1"])
    with pytest.raises(ConfigError, match="acgan"):
        load_train_config("dcgan", overrides=["data.attrs=[Male]"])


def test_sync_batch_norm_on_cpu_workers_is_refused(anime):
    from pipeline.training.driver import prepare

    for key in ("model.norm_g", "model.norm_d"):
        with pytest.raises(ConfigError, match="sync-batch norm needs GPUs"):
            prepare(config("dcgan", anime, workers=2, **{key: "sync-batch"}))
    prepare(config("dcgan", anime, workers=1, **{"model.norm_g": "sync-batch"}))  # one: fine
