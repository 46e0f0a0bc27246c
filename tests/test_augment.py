"""Augmentation for small datasets (`pipeline.augment`): each operation is differentiable (G
learns through it), reproducible from the seed, the identity at p = 0; ADA's controller moves p
as the paper says, resumes where it left off and holds the same p on every DDP rank; the step
shows D augmented images in both of its phases for every family; bad settings are one line."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.augment.ada import AdaController
from pipeline.augment.config import AdaConfig, AugmentConfig
from pipeline.augment.policy import AUGMENTATIONS, Augment
from pipeline.config import ConfigError
from pipeline.losses import get_loss
from pipeline.training.config import load_train_config
from tests.test_generation_step import CPU, real_batch, task

NAMES = list(AUGMENTATIONS)


def images(n: int = 4, size: int = 16, channels: int = 3, seed: int = 0) -> torch.Tensor:
    noise = torch.Generator().manual_seed(seed)
    return torch.rand(n, channels, size, size, generator=noise) * 2 - 1


@pytest.mark.parametrize("name", NAMES)
def test_the_gradient_is_the_true_gradient_of_the_augmented_images(name):
    """gradcheck against finite differences, the random draw fixed by the seed: an operation
    done on detached tensors (no gradient) or in uint8 (a wrong one) fails here."""
    augmentation = AUGMENTATIONS[name]
    x = images(2, 8).double().requires_grad_(True)

    def augmented(pixels):
        torch.manual_seed(3)
        return augmentation(pixels, 1.0)

    assert augmented(x).dtype == torch.float64 and augmented(x).requires_grad
    assert torch.autograd.gradcheck(augmented, (x,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_gradient_reaches_g_through_the_augmentation(name):
    G = torch.nn.Sequential(torch.nn.Linear(8, 3 * 16 * 16), torch.nn.Tanh())
    torch.manual_seed(0)
    fake = G(torch.randn(4, 8)).view(4, 3, 16, 16)
    AUGMENTATIONS[name](fake, 1.0).square().mean().backward()
    grads = torch.cat([p.grad.flatten() for p in G.parameters()])
    assert torch.isfinite(grads).all() and grads.abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_p_zero_is_the_identity_bit_for_bit(name):
    x = images()
    state = torch.get_rng_state()
    assert torch.equal(AUGMENTATIONS[name](x, 0.0), x)
    assert torch.equal(torch.get_rng_state(), state)  # and draws nothing


@pytest.mark.parametrize("name", NAMES)
def test_the_same_seed_gives_the_same_augmentation(name):
    x = images(8, 16)
    torch.manual_seed(7)
    first = AUGMENTATIONS[name](x, 0.7)
    torch.manual_seed(7)
    again = AUGMENTATIONS[name](x, 0.7)
    torch.manual_seed(8)
    other = AUGMENTATIONS[name](x, 0.7)
    assert torch.equal(first, again) and not torch.equal(first, other)


@pytest.mark.parametrize("name", NAMES)
def test_images_that_draw_nothing_are_left_as_they_were(name):
    """p per image: at p = 0.15 some images of a batch are untouched, exactly."""
    x = images(64, 16)
    torch.manual_seed(1)
    out = AUGMENTATIONS[name](x, 0.15)
    same = [torch.equal(out[i], x[i]) for i in range(64)]
    assert 0 < sum(same) < 64, sum(same)


def test_grey_images_and_channels_last_keep_their_form():
    grey = images(4, 16, channels=1)
    assert AUGMENTATIONS["bgc"](grey, 1.0).shape == grey.shape
    x = images(4, 16).contiguous(memory_format=torch.channels_last)
    augment = Augment.from_config(AugmentConfig("bgc", p=1.0), AdaConfig(), "cpu", False)
    assert augment(x).is_contiguous(memory_format=torch.channels_last)


def test_diffaugment_ranges_as_in_its_paper():
    x = images(256, 16)
    torch.manual_seed(0)
    # translation: whole pixels, at most 1/8 of the side (2 of 16), zeros coming in.
    shifted = AUGMENTATIONS["translation"](x, 1.0)
    found = []
    for i in range(64):
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                moved = torch.roll(x[i], (-dy, -dx), (1, 2))[:, 2:-2, 2:-2]
                if torch.equal(shifted[i][:, 2:-2, 2:-2], moved):
                    found.append((dy, dx))
                    break
    assert len(found) == 64 and {dy for dy, _ in found} == {-2, -1, 0, 1, 2}
    # cutout: a zero square of half the side (8 x 8 of 16), clipped at the border.
    cut = AUGMENTATIONS["cutout"](x, 1.0)
    zeros = (cut == 0).all(1).flatten(1).sum(1)
    assert zeros.max() == 64 and zeros.min() >= 16


def test_ada_controller_follows_r_t_at_the_papers_speed():
    config = AdaConfig(target=0.6, interval=4, kimg=0.1)  # 100 images from 0 to 1
    ada = AdaController(config, "cpu", distributed=False)
    overfit = torch.ones(10)  # every real judged real: r_t = 1 > 0.6
    ps = []
    for _ in range(12):
        ada.observe(overfit)
        ps.append(ada.p)
    # every 4 steps of 10 reals: +40 / 100
    assert ps[3] == pytest.approx(0.4) and ps[7] == pytest.approx(0.8) and ps[11] == 1.0
    assert ps[2] == 0.0 and ada.r_t == 1.0
    balanced = torch.tensor([1.0] * 3 + [-1.0] * 7)  # r_t = -0.4 < 0.6: p falls
    for _ in range(4 * 4):
        ada.observe(balanced)
    assert ada.p == 0.0 and ada.r_t == pytest.approx(-0.4)  # clamped at 0
    assert all(0.0 <= p <= 1.0 for p in ps)


def test_ada_controller_resumes_where_it_left_off():
    config = AdaConfig(target=0.6, interval=4, kimg=1.0)
    signs = [torch.sign(torch.randn(8, generator=torch.Generator().manual_seed(i)) + 0.8)
             for i in range(30)]  # fmt: skip
    whole = AdaController(config, "cpu", False)
    for s in signs:
        whole.observe(s)
    first = AdaController(config, "cpu", False)
    for s in signs[:13]:  # mid-interval: the partial sums travel too
        first.observe(s)
    saved = first.state_dict()
    resumed = AdaController(config, "cpu", False)
    resumed.load_state_dict(saved)
    for s in signs[13:]:
        resumed.observe(s)
    assert resumed.p == whole.p > 0 and resumed.r_t == whole.r_t


def _ada_rank(rank: int, world: int, port: int, out) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)  # fmt: skip
    ada = AdaController(AdaConfig(interval=2, kimg=0.05), "cpu", distributed=True)
    # Rank 0's reals are all judged real (r_t 1), rank 1's 7 of 10 (r_t 0.4, below the target
    # alone): r_t over both, 0.7, is what moves p, the same on both ranks.
    mine = torch.ones(10) if rank == 0 else torch.tensor([1.0] * 7 + [-1.0] * 3)
    trace = []
    for step in range(6):
        ada.observe(mine)
        if step % 2 == 1:  # after each adjustment
            trace.append((ada.p, ada.r_t))
    out[rank] = trace
    dist.destroy_process_group()


def test_every_ddp_rank_holds_the_same_p():
    import torch.multiprocessing as mp

    from tests.browser import free_port

    out = mp.Manager().dict()
    mp.spawn(_ada_rank, args=(2, free_port(), out), nprocs=2)
    assert out[0] == out[1]
    # Each adjustment: r_t = 0.7 > 0.6, p up by 2 steps x 20 reals / 50.
    assert [r_t for _, r_t in out[0]] == pytest.approx([0.7] * 3)
    assert [p for p, _ in out[0]] == pytest.approx([0.8, 1.0, 1.0])


def test_r_t_signs_for_each_kind_of_d_output():
    real, fake = torch.tensor([2.0, -1.0, 0.7, 0.3]), torch.tensor([-3.0, -2.0, -1.0, 0.0])
    assert get_loss("nsgan").real_signs(real, fake).tolist() == [1, -1, 1, 1]
    assert get_loss("hinge").real_signs(real, fake).tolist() == [1, -1, 1, 1]
    assert get_loss("lsgan").real_signs(real, fake).tolist() == [1, -1, 1, -1]  # at 0.5
    # A critic: the midpoint of the mean real (0.5) and mean fake (-1.5) scores, -0.5.
    assert get_loss("wgan-gp").real_signs(real, fake).tolist() == [1, -1, 1, 1]
    assert get_loss("wgan").real_signs(real + 100, fake + 100).tolist() == [1, -1, 1, 1]


FAMILIES = [("dcgan", {}), ("acgan", {}), ("wgan", {}), ("wgan-gp", {}),
            ("dcgan", {"model.arch": "resnet"}), ("acgan", {"model.arch": "srresnet"})]  # fmt: skip


@pytest.mark.parametrize(("family", "options"), FAMILIES)
def test_d_sees_augmented_images_in_both_phases_of_every_family(family, options):
    from pipeline.models.config import ClassSpec
    from pipeline.tasks.generation.task import GenerationTask
    from pipeline.training.context import DataShape
    from pipeline.training.labels import LabelPlan

    config = load_train_config(family, options={
        "workers": 1, "model.width_g": 16, "model.width_d": 16, "model.z_dim": 32,
        "batch_size": 8, "augment.policy": "translation,bgc", "augment.p": 1.0,
        "optim.n_critic": 1, **options})  # fmt: skip
    plan = None
    if family == "acgan":
        plan = LabelPlan(ClassSpec(groups=(3,)), ("label_hair",), ("hair",), (("a", "b", "c"),),
                         None, (), ())  # fmt: skip
    torch.manual_seed(0)
    t = GenerationTask(config, CPU, DataShape(image_size=32, channels=3, label_plan=plan))
    t.distribute()
    seen, made = [], []
    t.D.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    t.G.register_forward_hook(lambda module, inputs, output: made.append(output))
    x = real_batch(8)
    y = torch.randint(0, 3, (8, 1)) if plan else None
    values, loss = t.step(x, y, 0)
    assert math.isfinite(float(loss)) and math.isfinite(float(values["r_t"]))
    real, fake_d, fake_g = seen[0], seen[1], seen[-1]
    assert real.shape == x.shape and not torch.equal(real, x)
    assert not torch.equal(fake_d, made[0].detach()) and not fake_d.requires_grad
    assert fake_g.requires_grad and not torch.equal(fake_g, made[-1])  # G learns through it
    if family == "wgan-gp":  # the penalty's points lie between the augmented images
        assert len(seen) == 4


def test_augmentation_off_or_at_p_zero_leaves_the_step_as_it_was():
    def losses(**options) -> list[float]:
        t = task("dcgan", **options)
        x = real_batch(8)
        torch.manual_seed(5)
        return [float(t.step(x, None, step)[0]["loss_g"].detach()) for step in range(3)]

    plain = losses()
    assert losses(**{"augment.policy": "color,translation,cutout,bgc", "augment.p": 0.0}) == plain
    assert losses(**{"augment.policy": "bgc"}) == plain  # ADA starts at p = 0
    assert losses(**{"augment.policy": "translation"}) != plain


def test_bad_augmentation_settings_are_one_line():
    def refused(family="dcgan", **options) -> str:
        with pytest.raises(ConfigError) as caught:
            load_train_config(family, overrides=[f"{k}={v}" for k, v in options.items()])
        assert "\n" not in str(caught.value)
        return str(caught.value)

    assert "'zoom' is not an augmentation" in refused(**{"augment.policy": "color,zoom"})
    assert "color, translation, cutout, bgc, bg" in refused(**{"augment.policy": "zoom"})
    assert "names an augmentation twice" in refused(**{"augment.policy": "color,color"})
    assert "augment.p=1.5 must be in [0, 1]" in refused(**{"augment.p": 1.5})
    assert "ada.target=0.0 must be in (0, 1)" in refused(**{"ada.target": 0})
    assert "ada.interval=0" in refused(**{"ada.interval": 0})
    assert "ada.kimg=-1.0" in refused(**{"ada.kimg": -1})
    assert "GLCIC's local discriminator" in refused("glcic", **{"augment.policy": "bgc"})


def test_an_unknown_policy_on_the_command_line_is_one_line(cli, tmp_path):
    result = cli("train", "dcgan", "--data", str(tmp_path), "--set", "augment.policy=zoom",
                 "--dry-run")  # fmt: skip
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "error: augment.policy='zoom': 'zoom' is not an augmentation; use none or names joined "
        "by commas from: color, translation, cutout, bgc, bg"
    ]


# -- through the runner, on the real anime sample ------------------------------------------


@pytest.fixture(scope="module")
def anime_val(tmp_path_factory):
    from tests.conftest import require_shared
    from tests.train_fixtures import anime_dataset

    require_shared("anime-mlds2018")
    return anime_dataset(tmp_path_factory.mktemp("augment"), val=0.15)


def run(dataset, folder, epochs: int, **options):
    from pipeline.training.runner import LocalContext, run_worker
    from tests.train_fixtures import TINY

    config = load_train_config("dcgan", options={"data.dataset": str(dataset), "workers": 1,
                                                 "epochs": epochs, **TINY, **options})  # fmt: skip
    ctx = LocalContext(folder)
    return run_worker(config, ctx, str(dataset)), ctx


def test_ada_p_is_logged_checkpointed_and_resumed(anime_val, tmp_path):
    """ADA at 10x the paper's speed: p moves within 2 epochs, each report logs p and r_t,
    the checkpoint holds p, and a run resumed after epoch 1 ends where an uninterrupted one
    does (stylegan2-ada restarts p at 0)."""
    from pipeline.training import checkpoint as ckpt

    ada = {"augment.policy": "bgc", "ada.kimg": 2.0}
    whole, ctx = run(anime_val, tmp_path / "whole", 2, **ada)
    assert 0 < whole["augment_p"] <= 1 and -1 <= whole["ada_r_t"] <= 1
    assert ckpt.load(ctx.checkpoint())["augment"]["p"] == whole["augment_p"]
    first, ctx = run(anime_val, tmp_path / "resumed", 1, **ada)
    assert 0 < first["augment_p"] != whole["augment_p"]
    resumed, _ = run(anime_val, tmp_path / "resumed", 2, **ada)
    assert resumed["augment_p"] == whole["augment_p"]
    assert resumed["loss_d"] == whole["loss_d"]


def test_every_report_measures_d_on_training_held_out_and_fake_images(anime_val, tmp_path):
    last, _ = run(anime_val, tmp_path, 1)
    for key in ("D_train", "D_val", "D_fake", "D_gap", "r_v", "r_t"):
        assert math.isfinite(last[key]), key
    assert last["D_gap"] == pytest.approx(last["D_train"] - last["D_val"])
    assert last["r_v"] == pytest.approx(last["D_gap"] / (last["D_train"] - last["D_fake"]))
    assert "augment_p" not in last  # no augmentation, no p


def test_without_a_held_out_split_the_run_says_so_once(tmp_path, capsys):
    from tests.conftest import require_shared
    from tests.train_fixtures import anime_dataset

    require_shared("anime-mlds2018")
    last, _ = run(anime_dataset(tmp_path), tmp_path / "run", 1, report_every=8)
    assert "D_train" in last and "D_fake" in last and "D_val" not in last
    console = capsys.readouterr().out
    assert console.count("has no val or test split: D_val, D_gap and r_v") == 1


def test_the_measure_leaves_d_and_g_as_they_were(anime_val):
    """Batch-norm statistics and spectral norm's power-iteration vectors are buffers that a
    forward in training mode changes: the measure puts them back."""
    from pipeline.tasks.generation.task import GenerationTask
    from pipeline.training.context import DataShape

    config = load_train_config("dcgan", options={
        "workers": 1, "model.width_g": 16, "model.width_d": 16, "model.z_dim": 32,
        "model.norm_d": "spectral", "data.dataset": str(anime_val)})  # fmt: skip
    t = GenerationTask(config, CPU, DataShape(32, 3, None, str(anime_val)))
    t.distribute()
    t.fixed_samples(8, 8)
    before = {k: v.clone() for k, v in {**t.D.state_dict(), **t.G.state_dict()}.items()}
    assert any("_u" in k for k in t.D.state_dict())  # spectral norm's vector is there
    measured = t.overfit.measure(t.D, t.G, t.z_probe, t.y_probe)
    after = {**t.D.state_dict(), **t.G.state_dict()}
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert set(measured) == {"D_train", "D_val", "D_fake", "D_gap", "r_v"}
