"""GLCIC without Ray: the networks, the masks, the metrics (against skimage), the config's
checks, a short real run of the runner on the CelebA sample at 64 px, `pipeline complete`
on its checkpoint, and the diagnostics on a deliberately broken setup."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.config import ConfigError
from pipeline.errors import PipelineError
from pipeline.models.config import ModelConfig
from pipeline.training.config import load_train_config
from tests.conftest import require_shared
from tests.shard_checks import assert_one_line_error

NARROW = ["model.width_g=8", "model.width_d=8", "batch_size=16", "workers=1"]


@pytest.mark.parametrize("size", [64, 128])
def test_networks_keep_the_size_and_score_each_image(size):
    from pipeline.models.glcic import CompletionNetwork, GlobalLocalDiscriminator

    cfg = ModelConfig(width_g=8, width_d=8)
    C = CompletionNetwork(cfg, size, 3)
    assert C(torch.zeros(2, 4, size, size)).shape == (2, 3, size, size)
    assert C.dilations == ((2, 4, 8, 8) if size == 64 else (2, 4, 8, 16))
    D = GlobalLocalDiscriminator(cfg, size, 3, size // 2)
    logit, g, loc = D(torch.zeros(2, 3, size, size), torch.zeros(2, 3, size // 2, size // 2), True)
    assert logit.shape == g.shape == loc.shape == (2,)
    torch.testing.assert_close(logit, g + loc + D.head.bias)  # the head is linear
    convs = [m for m in D.global_d.convs if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == size.bit_length() - 3  # down to 4x4


def test_image_sizes_the_networks_cannot_take_are_refused():
    from pipeline.models.glcic import check_size

    with pytest.raises(ConfigError, match="64, 128, 256 px"):
        check_size(32, 16)
    with pytest.raises(ConfigError, match="power of two"):
        check_size(64, 24)


def test_boxes_patches_and_crops():
    from pipeline.tasks.completion.masks import BoxMasks, CentreMasks, crop, local_corners

    generator = torch.Generator().manual_seed(0)
    mask, boxes = BoxMasks(64, 0.375, 0.5).draw(200, generator)
    top, left, h, w = boxes.T
    assert ((h >= 24) & (h <= 32) & (w >= 24) & (w <= 32)).all()
    assert ((top + h <= 64) & (left + w <= 64) & (top >= 0) & (left >= 0)).all()
    assert torch.equal(mask.sum((1, 2, 3)), (h * w).float())
    corners = local_corners(boxes, 64, 32)
    assert ((corners <= boxes[:, :2]) & (corners + 32 >= boxes[:, :2] + boxes[:, 2:])).all()
    x = torch.randn(200, 3, 64, 64)
    patches = crop(x, corners, 32)
    i, (r, c) = 7, corners[7].tolist()
    assert torch.equal(patches[i], x[i, :, r : r + 32, c : c + 32])
    centre, box = CentreMasks(64, 0.375, 0.5).draw(2)
    assert box[0].tolist() == [16, 16, 32, 32] and centre[0, 0, 16:48, 16:48].all()
    again = BoxMasks(64, 0.375, 0.5).draw(200, torch.Generator().manual_seed(0))[1]
    assert torch.equal(again, boxes)  # seeded: the evaluation set's holes repeat


def test_mask_folder_reads_binary_masks_and_refuses_others(tmp_path):
    from pipeline.tasks.completion.masks import FolderMasks

    hole = np.zeros((64, 64), np.uint8)
    hole[10:30, 5:25] = 255
    Image.fromarray(hole).save(tmp_path / "a.png")
    masks, boxes = FolderMasks(tmp_path, 64).draw(3)
    assert masks.shape == (3, 1, 64, 64) and boxes[0].tolist() == [10, 5, 20, 20]
    Image.fromarray(np.zeros((32, 32), np.uint8) + 255).save(tmp_path / "b.png")
    with pytest.raises(PipelineError, match="32x32, the images are 64x64"):
        FolderMasks(tmp_path, 64)
    (tmp_path / "b.png").unlink()
    grey = hole.copy()
    grey[0, 0] = 128
    Image.fromarray(grey).save(tmp_path / "c.png")
    with pytest.raises(PipelineError, match="not binary"):
        FolderMasks(tmp_path, 64)
    with pytest.raises(PipelineError, match="does not exist"):
        FolderMasks(tmp_path / "missing", 64)


def test_metrics_match_skimage():
    skimage = pytest.importorskip("skimage.metrics")
    from pipeline.metrics.completion import completion_scores, ssim_map

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (2, 3, 48, 48)).astype(np.float64)
    b = np.clip(a + rng.normal(0, 20, a.shape), 0, 255).round()
    mask = np.zeros((2, 1, 48, 48))
    mask[:, :, 10:30, 12:40] = 1
    s = completion_scores(torch.from_numpy(b), torch.from_numpy(a), torch.from_numpy(mask))
    expected_ssim = np.mean([
        skimage.structural_similarity(a[i].transpose(1, 2, 0), b[i].transpose(1, 2, 0),
                                      gaussian_weights=True, sigma=1.5, data_range=255,
                                      use_sample_covariance=False, channel_axis=-1)
        for i in range(2)
    ])  # fmt: skip
    assert s["ssim"] == pytest.approx(expected_ssim, abs=1e-6)
    assert s["psnr"] == pytest.approx(skimage.peak_signal_noise_ratio(a, b, data_range=255))
    assert s["l1"] == pytest.approx(np.abs(a - b).mean())
    m = np.broadcast_to(mask, a.shape).astype(bool)
    mse_hole = ((a - b)[m] ** 2).mean()
    assert s["psnr_hole"] == pytest.approx(10 * np.log10(255**2 / mse_hole))
    assert s["l1_hole"] == pytest.approx(np.abs(a - b)[m].mean())
    full = ssim_map(torch.from_numpy(b), torch.from_numpy(a)).numpy()
    assert s["ssim_hole"] == pytest.approx(full[m].mean())


@pytest.mark.parametrize(
    "sets, message",
    [
        (["completion.alpha=-1"], "alpha=-1.0 must be >= 0"),
        (["completion.hole_max=0.6", "completion.local=0.5"], "bigger than the local"),
        (["completion.tc=0.8", "completion.td=0.3"], "longer than the run"),
        (["completion.phase_unit=epochs", "completion.tc=5", "epochs=4"], "longer than the run"),
        (["completion.masks=folder"], "needs completion.mask_dir"),
        (["completion.masks=strokes"], "strokes"),
    ],
)
def test_bad_settings_are_refused(sets, message):
    with pytest.raises(ConfigError, match=message):
        load_train_config("glcic", overrides=sets)


@pytest.fixture(scope="module")
def celeba64(tmp_path_factory):
    require_shared("celeba")
    from tests.train_fixtures import celeba_dataset

    return celeba_dataset(tmp_path_factory.mktemp("glcic"), 64, limit=400)


def run_locally(dataset: Path, folder: Path, *sets: str):
    from pipeline.training.runner import LocalContext, run_worker

    config = load_train_config("glcic", overrides=[f"data.dataset={dataset}", *NARROW, *sets])
    ctx, reports = LocalContext(folder), []
    run_worker(config, ctx, str(dataset), reports.append)
    return ctx, reports


@pytest.fixture(scope="module")
def trained(celeba64, tmp_path_factory):
    """Two epochs of 25 steps: C alone for 8, D alone for 4, then both."""
    folder = tmp_path_factory.mktemp("glcic-run")
    ctx, reports = run_locally(celeba64, folder, "epochs=2", "completion.tc=0.17",
                               "completion.td=0.07", "completion.eval_images=16")  # fmt: skip
    return ctx, reports


@pytest.mark.shared
def test_a_run_goes_through_the_three_phases(trained):
    ctx, reports = trained
    phases = [r.metrics["phase"] for r in reports]
    assert phases == [1.0, 2.0, 3.0, 3.0]  # reports at each phase's end and each epoch's
    assert [r.metrics["step"] for r in reports] == [8, 12, 25, 50]
    joint = reports[-1].metrics
    losses = ("loss_rec", "loss_adv", "loss_d", "d_acc_real", "d_acc_global_fake")
    measured = (*losses, "d_acc_local_fake", "l1_hole", "psnr_hole", "ssim_hole", "psnr", "ssim")
    for key in measured:
        assert np.isfinite(joint[key]), key
    assert "loss_d" not in reports[0].metrics and "loss_rec" not in reports[1].metrics
    assert joint["psnr"] > joint["psnr_hole"]  # outside the hole the pixels are the input's
    assert reports[-1].grid.size[1] > reports[-1].grid.size[0]  # 8 rows of 3 tiles
    from pipeline.training import checkpoint as ckpt

    state = ckpt.load(ctx.resume_from)
    assert {"C", "D", "opt_c", "opt_d", "mean_pixel"} <= set(state)
    assert state["image"]["recipe"]["crop"] == "center"


@pytest.mark.shared
def test_complete_leaves_every_pixel_outside_the_hole_unchanged(cli, trained, tmp_path):
    ctx, _ = trained
    checkpoint = ctx.resume_from / "checkpoint.pt"
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(1)
    originals = {f"p{i}": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for i in range(3)}
    for name, pixels in originals.items():
        Image.fromarray(pixels).save(photos / f"{name}.png")
    result = cli("complete", checkpoint, "--images", photos, "--out", tmp_path / "out",
                 "--box", "10,20,24,16")  # fmt: skip
    assert result.exit_code == 0, result.output
    hole = np.zeros((64, 64), bool)
    hole[20:36, 10:34] = True
    for name, pixels in originals.items():
        done = np.asarray(Image.open(tmp_path / "out" / f"{name}.png"))
        assert np.array_equal(done[~hole], pixels[~hole])
        assert (done[hole] != pixels[hole]).mean() > 0.5

    result = cli("complete", checkpoint, "--images", photos / "p0.png", "--out",
                 tmp_path / "random", "--random-boxes", "3")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "random").iterdir()) == [
        "p0-0.png", "p0-1.png", "p0-2.png"]  # fmt: skip

    big = require_shared("celeba") / "img_align_celeba"
    face = sorted(big.glob("*.jpg"))[0]
    result = cli("complete", checkpoint, "--images", face, "--out", tmp_path / "big",
                 "--box", "20,20,24,24")  # fmt: skip
    assert result.exit_code == 0 and "center crop and lanczos resize to 64x64" in result.output
    assert Image.open(tmp_path / "big" / f"{face.stem}.png").size == (64, 64)


@pytest.mark.shared
def test_complete_and_sample_bad_inputs(cli, trained, tmp_path):
    from pipeline.models import build_generator
    from pipeline.training import checkpoint as ckpt

    ctx, _ = trained
    checkpoint = ctx.resume_from / "checkpoint.pt"
    image = tmp_path / "one.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(image)
    out = tmp_path / "out"

    def refused(*args, says):
        assert_one_line_error(cli("complete", checkpoint, "--images", image, "--out", out, *args),
                              says)  # fmt: skip
        assert not out.exists()  # nothing half-written

    refused("--box", "10,20,30", says="four integers X,Y,W,H")
    refused("--box", "50,50,30,30", says="reaches outside the 64x64 image")
    refused(says="one of --box, --masks, --random-boxes")
    refused("--box", "1,1,4,4", "--blend", "sharpen", says="--blend 'sharpen' is not known")
    masks = tmp_path / "masks"
    masks.mkdir()
    Image.fromarray(np.full((32, 32), 255, np.uint8)).save(masks / "m.png")
    refused("--masks", masks, says="resize the masks to the images' size")
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(small)
    assert_one_line_error(cli("complete", checkpoint, "--images", small, "--out", out,
                              "--box", "1,1,4,4"), "smaller than the 64 px")  # fmt: skip
    assert not out.exists()

    # A GAN's checkpoint is not a completion network, and the other way round.
    config = load_train_config("dcgan", overrides=["model.width_g=8", "model.z_dim=8"])
    G = build_generator(config.model, 64, 3)
    from pipeline.config import to_dict

    gan = ckpt.save(tmp_path / "gan.pt", {"config": to_dict(config), "labels": None,
                    "image": {"size": 64, "channels": 3}, "G_ema": G.state_dict(),
                    "epoch": 1, "step": 1, "images_seen": 1})  # fmt: skip
    result = cli("complete", gan, "--images", image, "--out", out, "--box", "1,1,4,4")
    assert_one_line_error(result, "`pipeline complete` needs a glcic run")
    result = cli("sample", checkpoint, "--out", tmp_path / "s.png")
    assert_one_line_error(result, "use `pipeline complete")
    assert not (tmp_path / "s.png").exists()


def test_diagnostics_read_the_reports():
    from pipeline.tasks.completion.diagnostics import CompletionDiagnostics

    d = CompletionDiagnostics(alpha=4e-4)
    healthy = {"phase": 3.0, "loss_d": 0.9, "loss_adv": 1.0, "loss_c": 0.1, "l1_hole": 30.0}
    assert d.update(healthy) == [] and d.update({**healthy, "loss_d": 0.01}) == []
    found = d.update({**healthy, "loss_d": 0.01})
    assert [f.name for f in found] == ["no_adversarial"] and "0.0100" in found[0].message
    assert d.update({**healthy, "loss_d": 0.01}) == []  # said once
    stalled = CompletionDiagnostics(alpha=4e-4)
    for l1 in (40, 35, 30, 30.2, 30.1, 30.5, 30.3):
        found = stalled.update({"phase": 1.0, "l1_hole": l1})
    assert [f.name for f in found] == ["stalled"]


@pytest.mark.shared
def test_diagnostics_fire_when_d_overpowers_c(celeba64, tmp_path):
    """The reimplementations' failures on purpose: no adversarial weight (alpha 0: tadax's C
    never feels D), C all but frozen, a wider and faster D, straight into the joint phase.
    D's loss collapses and the run says so (on the console and as a tag, by the runner)."""
    _, reports = run_locally(celeba64, tmp_path, "epochs=1", "completion.tc=0",
                             "completion.td=0", "completion.alpha=0", "model.width_d=16",
                             "optim.lr_g=1e-8", "optim.lr_d=2e-3", "report_every=4",
                             "completion.eval_images=8")  # fmt: skip
    names = [f.name for r in reports for f in r.findings]
    assert "no_adversarial" in names, [r.metrics["loss_d"] for r in reports]
    assert names.count("no_adversarial") == 1  # said once


@pytest.mark.shared
def test_poisson_blend_keeps_the_pixels_outside_the_hole(cli, trained, tmp_path):
    pytest.importorskip("cv2")
    ctx, _ = trained
    pixels = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "p.png")
    checkpoint = ctx.resume_from / "checkpoint.pt"
    result = cli("complete", checkpoint, "--images", tmp_path / "p.png", "--out",
                 tmp_path / "out", "--box", "20,16,20,24", "--blend", "poisson")  # fmt: skip
    assert result.exit_code == 0, result.output
    done = np.asarray(Image.open(tmp_path / "out" / "p.png"))
    hole = np.zeros((64, 64), bool)
    hole[16:40, 20:40] = True
    assert np.array_equal(done[~hole], pixels[~hole])


@pytest.mark.shared
@pytest.mark.slow  # three training runs
def test_a_resumed_run_ends_where_an_uninterrupted_one_does(celeba64, tmp_path):
    phases = ["completion.phase_unit=epochs", "completion.tc=0.3", "completion.td=0.2",
              "completion.eval_images=8"]  # fmt: skip
    _, straight = run_locally(celeba64, tmp_path / "straight", "epochs=2", *phases)
    ctx, _ = run_locally(celeba64, tmp_path / "resumed", "epochs=1", *phases)
    from pipeline.training.runner import run_worker

    config = load_train_config(
        "glcic", overrides=[f"data.dataset={celeba64}", *NARROW, "epochs=2", *phases]
    )
    resumed = []
    run_worker(config, ctx, str(celeba64), resumed.append)
    assert resumed[-1].metrics["step"] == straight[-1].metrics["step"]
    for key in ("loss_c", "loss_d", "l1_hole", "psnr_hole", "ssim"):
        assert resumed[-1].metrics[key] == pytest.approx(straight[-1].metrics[key], rel=1e-5), key


@pytest.mark.shared
def test_datasets_the_networks_cannot_take_fail_before_anything_starts(cli, celeba64, tmp_path):
    from tests.train_fixtures import celeba_dataset

    small = celeba_dataset(tmp_path, 32, limit=64)
    result = cli("train", "glcic", "--data", small, "--batch-size", "16")
    assert_one_line_error(result, "64, 128, 256 px", "32 px")
    result = cli("train", "glcic", "--data", celeba64, "--set", "completion.masks=folder",
                 "--set", f"completion.mask_dir={tmp_path / 'nowhere'}")  # fmt: skip
    assert_one_line_error(result, "mask folder", "does not exist")
