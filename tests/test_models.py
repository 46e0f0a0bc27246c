"""The model zoo: shapes and ranges for every architecture, size, upsampling, norm and
conditioning; DCGAN's default equal to pytorch/examples' dcgan/main.py; config checks."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from pipeline.config import ConfigError
from pipeline.models import (
    ARCHS,
    NORMS,
    UPSAMPLES,
    ClassSpec,
    ModelConfig,
    build_discriminator,
    build_generator,
    check_config,
    make_norm,
)
from pipeline.models.norms import ConditionalBatchNorm2d
from tests.reference_dcgan import Discriminator as ReferenceD
from tests.reference_dcgan import Generator as ReferenceG

SPEC = ClassSpec(groups=(3, 4), binary=2)  # 2 softmax groups + 2 binary attributes
Z = 8


def tiny(**kw) -> ModelConfig:
    return ModelConfig(**{"z_dim": Z, "width_g": 4, "width_d": 4, **kw})


def labels(n: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    cols = [torch.randint(0, k, (n, 1), generator=g) for k in SPEC.groups]
    cols.append(torch.randint(0, 2, (n, SPEC.binary), generator=g))
    return torch.cat(cols, 1)


@pytest.mark.parametrize("conditional", [False, True], ids=["uncond", "cond"])
@pytest.mark.parametrize("upsample", list(UPSAMPLES))
@pytest.mark.parametrize("size", [32, 64, 128])
@pytest.mark.parametrize("arch", list(ARCHS))
def test_shapes_and_ranges(arch, size, upsample, conditional):
    torch.manual_seed(0)
    classes = SPEC if conditional else None
    cfg = tiny(arch=arch, upsample=upsample)
    G, D = build_generator(cfg, size, 3, classes), build_discriminator(cfg, size, 3, classes)
    y = labels() if conditional else None
    x = G(torch.randn(2, Z), y)
    assert x.shape == (2, 3, size, size)
    assert x.abs().max() <= 1  # tanh
    adv, cls = D(x, y)
    assert adv.shape == (2,)
    assert cls is None if not conditional else cls.shape == (2, SPEC.logits)


def _weighted(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]


@pytest.mark.parametrize("norm", list(NORMS))
@pytest.mark.parametrize("arch", list(ARCHS))
def test_every_norm_builds_and_trains(arch, norm):
    torch.manual_seed(0)
    cfg = tiny(arch=arch, norm_g=norm, norm_d=norm)
    G, D = build_generator(cfg, 32, 3, SPEC), build_discriminator(cfg, 32, 3, SPEC)
    y = labels(4)
    adv, cls = D(G(torch.randn(4, Z), y))
    (adv.mean() + cls.mean()).backward()  # inplace activations and norms keep autograd happy
    for net in (G, D):
        assert all(p.grad is not None for p in net.parameters())
        assert net.sync_batchnorm == (norm == "sync-batch")
        types = {type(m) for m in net.modules()}
        spectral = [parametrize.is_parametrized(m, "weight") for m in _weighted(net)]
        assert all(spectral) if norm == "spectral" else not any(spectral)
        if norm in ("layer", "group"):
            groups = {m.num_groups for m in net.modules() if isinstance(m, nn.GroupNorm)}
            assert groups == {1} if norm == "layer" else groups and groups != {1}
        if norm == "instance":
            assert nn.InstanceNorm2d in types
        if norm in ("spectral", "none"):
            assert not types & {nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d}
    # a conditional G gets conditional batch norm, D never does
    g_types = {type(m) for m in G.modules()}
    assert (ConditionalBatchNorm2d in g_types) == (norm in ("batch", "sync-batch"))
    assert ConditionalBatchNorm2d not in {type(m) for m in D.modules()}


def test_group_norm_groups_divide_channels():
    for channels in (4, 48, 64, 96, 512):
        gn = make_norm("group", channels)
        assert channels % gn.num_groups == 0 and gn.num_groups <= 32
    assert make_norm("group", 96).num_groups == 32 and make_norm("group", 48).num_groups == 24


@pytest.mark.parametrize("arch", list(ARCHS))
def test_conditional_batch_norm_uses_y(arch):
    torch.manual_seed(0)
    G = build_generator(tiny(arch=arch), 32, 3, SPEC)
    # Silence the class code joined to z, so only the conditional norms can see y.
    for p in G.label_input.parameters():
        nn.init.zeros_(p)
    z = torch.randn(1, Z).repeat(2, 1)
    y = torch.tensor([[0, 0, 0, 0], [2, 3, 1, 1]])
    x = G(z, y)
    assert (x[0] - x[1]).abs().max() > 1e-4
    # and the module on its own: per-class gain and shift, batch statistics shared
    cbn = make_norm("batch", 5, conditional_on=SPEC)
    assert isinstance(cbn, ConditionalBatchNorm2d)
    h = torch.randn(1, 5, 3, 3).repeat(2, 1, 1, 1)
    out = cbn(h, y)
    assert (out[0] - out[1]).abs().max() > 1e-4
    assert torch.equal(cbn(h, y[:1].repeat(2, 1))[0], cbn(h, y[:1].repeat(2, 1))[1])


def test_cond_norm_off_gives_plain_batch_norm():
    G = build_generator(tiny(cond_norm=False), 32, 3, SPEC)
    assert not any(isinstance(m, ConditionalBatchNorm2d) for m in G.modules())
    with pytest.raises(ConfigError, match="batch or sync-batch only"):
        make_norm("layer", 8, conditional_on=SPEC)


def test_conditioning_onehot_and_embedding():
    y = labels()
    onehot = build_generator(tiny(conditioning="onehot"), 32, 3, SPEC)
    assert onehot.label_input.dim == SPEC.logits  # z joined to one-hot blocks + attributes
    joined = onehot.label_input(torch.zeros(2, Z), y)
    assert joined.shape == (2, Z + SPEC.logits)
    assert torch.equal(joined[:, Z:].sum(1), 2 + y[:, 2:].sum(1).float())
    embedding = build_generator(tiny(), 32, 3, SPEC)
    assert [t.num_embeddings for t in embedding.label_input.embed.tables] == [3, 4]
    with pytest.raises(ValueError, match="needs the labels y"):
        embedding(torch.randn(2, Z))


@pytest.mark.parametrize("arch", list(ARCHS))
def test_decoupled_heads(arch):
    D = build_discriminator(tiny(arch=arch, heads="decoupled"), 32, 3, SPEC)
    for head in (D.adv, D.cls):  # each its own MLP: Linear -> LeakyReLU -> Linear
        kinds = [type(m) for m in head if not isinstance(m, nn.Flatten)]
        assert kinds == [nn.Linear, nn.LeakyReLU, nn.Linear]
    adv, cls = D(torch.randn(2, 3, 32, 32))
    assert adv.shape == (2,) and cls.shape == (2, SPEC.logits)
    shared = build_discriminator(tiny(arch=arch), 32, 3, SPEC)
    assert [type(m) for m in shared.cls if not isinstance(m, nn.Flatten)] == [nn.Linear]


@pytest.mark.parametrize("norm", list(NORMS))
@pytest.mark.parametrize("arch", list(ARCHS))
def test_no_norm_on_d_input_nor_g_output(arch, norm):
    cfg = tiny(arch=arch, norm_g=norm, norm_d=norm)
    G, D = build_generator(cfg, 32, 3), build_discriminator(cfg, 32, 3)
    if arch == "srresnet":  # conv9x9 straight into tanh; D's first conv straight into LReLU
        assert isinstance(G.to_image, nn.Conv2d) and G.to_image.kernel_size == (9, 9)
        assert isinstance(D.main[0], nn.Conv2d) and isinstance(D.main[1], nn.LeakyReLU)
        return
    assert isinstance(G.main[-1], nn.Tanh)
    last = G.main[-2]  # the output conv (or upsample + conv stage), straight into tanh
    assert isinstance(last, (nn.Conv2d, nn.ConvTranspose2d, nn.Sequential))
    if arch == "dcgan":
        assert isinstance(D.main[0], nn.Conv2d) and isinstance(D.main[1], nn.LeakyReLU)
    else:
        assert D.main[0].first and isinstance(D.main[0].norm1, nn.Identity)


def _layers(seq: nn.Sequential) -> list[tuple]:
    return [(type(m), tuple(p.shape for p in m.parameters())) for m in seq]


def test_default_dcgan_is_pytorch_examples():
    # Parameters at 64 px, ngf = ndf = 64, as pytorch/examples: G 3,576,704, D 2,765,568.
    torch.manual_seed(0)
    cfg = ModelConfig()
    G, D = build_generator(cfg, 64, 3), build_discriminator(cfg, 64, 3)
    ref_G, ref_D = ReferenceG(), ReferenceD()  # pytorch/examples' netG, netD
    assert sum(p.numel() for p in G.parameters()) == 3_576_704
    assert sum(p.numel() for p in D.parameters()) == 2_765_568

    # Layer by layer: module types and parameter shapes.
    assert _layers(G.main) == _layers(ref_G.main)
    assert _layers(D.main) + _layers(nn.Sequential(D.adv)) == _layers(ref_D.main[:12])
    # D.adv is the reference's final conv, netD.main[11]
    ref_D.load_state_dict(
        {k.replace("adv.", "main.11."): v for k, v in D.state_dict().items()}, strict=True
    )
    ref_G.load_state_dict(G.state_dict(), strict=True)

    # DCGAN init: conv weights N(0, 0.02), BN gains N(1, 0.02), shifts 0.
    assert abs(G.main[0].weight.std().item() - 0.02) < 1e-3
    assert abs(D.main[3].weight.mean().item() - 1) < 0.01 and D.main[3].bias.abs().max() == 0

    # Same outputs for the same weights and input: in training mode (batch statistics, one
    # call each so the running statistics stay equal), then in eval mode.
    z = torch.randn(4, 100)
    for mode in (True, False):
        for net in (G, D, ref_G, ref_D):
            net.train(mode)
        fake = G(z)
        torch.testing.assert_close(fake, ref_G(z[:, :, None, None]))
        adv, cls = D(fake)
        assert cls is None
        torch.testing.assert_close(torch.sigmoid(adv), ref_D(fake))
    torch.testing.assert_close(G(z[:, :, None, None]), fake)  # (B, nz, 1, 1) works too


def test_check_config_rejects_batch_norm_in_wgan_gp_critic():
    for norm in ("batch", "sync-batch"):
        with pytest.raises(ConfigError, match="BatchNorm in a WGAN-GP critic makes the gradient"):
            check_config(ModelConfig(norm_d=norm), "wgan-gp", 64)
    for norm in ("layer", "group", "spectral", "none", "instance"):
        check_config(ModelConfig(norm_d=norm), "wgan-gp", 64)
    check_config(ModelConfig(), "nsgan", 64)  # batch norm is fine with other losses
    check_config(ModelConfig(norm_g="batch", norm_d="layer"), "wgan-gp", 32)  # G may keep it


@pytest.mark.parametrize(
    "cfg, size, message",
    [
        (ModelConfig(arch="vit"), 64, "arch='vit' is not allowed; choose one of: dcgan, resnet"),
        (ModelConfig(norm_d="weight"), 64, "norm_d='weight' .* batch, sync-batch, instance, "),
        (ModelConfig(norm_g="batchnorm"), 64, "norm_g='batchnorm' .* layer, group, spectral"),
        (ModelConfig(upsample="pixelshuffle"), 64, "transposed, nearest-conv, bilinear-conv"),
        (ModelConfig(conditioning="film"), 64, "choose one of: embedding, onehot"),
        (ModelConfig(heads="split"), 64, "choose one of: shared, decoupled"),
        (ModelConfig(), 48, "image size 48 is not supported .* 32, 64, 128"),
        (ModelConfig(width_g=0), 64, "width_g must be a positive integer"),
    ],
)
def test_bad_configs_name_the_allowed_values(cfg, size, message):
    with pytest.raises(ConfigError, match=message):
        check_config(cfg, "nsgan", size)
    with pytest.raises(ConfigError, match=message):
        build_generator(cfg, size, 3)


def test_bad_loss_and_class_spec():
    with pytest.raises(ConfigError, match="loss 'wgan-lp' is not known; choose one of: nsgan"):
        check_config(ModelConfig(), "wgan-lp", 64)
    with pytest.raises(ConfigError, match="at least 2 classes"):
        ClassSpec(groups=(1,))
    assert (SPEC.logits, SPEC.columns) == (9, 4)
    G = build_generator(tiny(), 32, 3, ClassSpec())  # an empty spec is unconditional
    assert G.label_input is None and G(torch.randn(2, Z)).shape == (2, 3, 32, 32)


def test_config_import_does_not_load_torch():
    code = (
        "import sys, pipeline.models, pipeline.models.config; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_srresnet_matches_the_anime_acgan_reference_sizes():
    """At 128 px with the paper's widths (G 64, D 32) and z of 128 + 19 tags (Jin et al.
    2017): the parameter counts of the public reimplementation (bhpfelix/PyTorch-Face-
    Generator-SRResNet-based-ACGAN-DRAGAN), counted layer by layer: G 4,069,955; D
    23,756,129 plus a 19-tag linear class head of 77,843."""
    cfg = ModelConfig(arch="srresnet", z_dim=147, width_g=64, width_d=32, norm_d="none")
    G = build_generator(cfg, 128, 3)
    D = build_discriminator(cfg, 128, 3, ClassSpec(binary=19))
    assert sum(p.numel() for p in G.parameters()) == 4_069_955
    assert sum(p.numel() for p in D.parameters()) == 23_756_129 + 77_843
    assert len(G.blocks) == 16 and len(G.up) == 3
    x = G(torch.randn(2, 147))
    adv, cls = D(x)
    assert x.shape == (2, 3, 128, 128) and adv.shape == (2,) and cls.shape == (2, 19)
