"""The Inception-v3 of FID, in plain torch (torchvision cannot be used here).

This is the network pytorch-fid computes FID with: torchvision's Inception3 layout with the
blocks patched to behave like the TF 2015-12-05 graph of the original FID code:

- average pools inside InceptionA, InceptionC and the first InceptionE leave the zero
  padding out of the mean (TF's `count_include_pad=False`);
- the last InceptionE pools its side branch with a max pool, not an average pool
  (a quirk of the TF graph);
- batch norm eps 1e-3; no auxiliary head.

The TF graph's 1008-way `fc` serves the Inception Score: with `logits=True` the network also
returns pool3 @ fc.weight^T, the logits WITHOUT the fc bias (torch-fidelity's
`logits_unbiased`; stylegan2-ada drops the bias "to match the original" IS code).

Input: float NCHW in [0, 1], any size; it is resized to 299x299 with bilinear
interpolation (`align_corners=False`, as pytorch-fid) and scaled to [-1, 1]. The outputs are
pytorch-fid's feature layers, average-pooled to vectors: 64 (after the first max pool),
192 (second max pool), 768 (before the auxiliary head), 2048 (pool3, the FID features).
Parameter names are those of `pt_inception-2015-12-05-6726825d.pth`.

    net = InceptionV3(dims=(2048,))
    load_weights(net, torch.load(path, weights_only=True))
    (features,) = net(images_0_1)        # (N, 2048)

    net = InceptionV3(dims=(2048,), logits=True)
    features, logits = net(images_0_1)   # (N, 2048), (N, 1008) for the Inception Score
"""

from __future__ import annotations

import functools
import hashlib

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import PipelineError

BLOCK_OF_DIMS = {64: 0, 192: 1, 768: 2, 2048: 3}


class BasicConv2d(nn.Module):
    """conv (no bias) -> batch norm (eps 1e-3) -> ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)), inplace=True)


def _avg_pool(x):
    # TF averages over the valid window only.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    def __init__(self, c_in: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(c_in, 64, 1)
        self.branch5x5_1 = BasicConv2d(c_in, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(c_in, pool_features, 1)

    def forward(self, x):
        branch1x1 = self.branch1x1(x)
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = self.branch_pool(_avg_pool(x))
        return torch.cat([branch1x1, branch5x5, branch3x3dbl, branch_pool], 1)


class InceptionB(nn.Module):
    def __init__(self, c_in: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(c_in, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x):
        branch3x3 = self.branch3x3(x)
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([branch3x3, branch3x3dbl, branch_pool], 1)


class InceptionC(nn.Module):
    def __init__(self, c_in: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(c_in, 192, 1)
        self.branch7x7_1 = BasicConv2d(c_in, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(c_in, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(c_in, 192, 1)

    def forward(self, x):
        branch1x1 = self.branch1x1(x)
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = x
        for i in range(1, 6):
            branch7x7dbl = getattr(self, f"branch7x7dbl_{i}")(branch7x7dbl)
        branch_pool = self.branch_pool(_avg_pool(x))
        return torch.cat([branch1x1, branch7x7, branch7x7dbl, branch_pool], 1)


class InceptionD(nn.Module):
    def __init__(self, c_in: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(c_in, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(c_in, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x):
        branch3x3 = self.branch3x3_2(self.branch3x3_1(x))
        branch7x7x3 = x
        for i in range(1, 5):
            branch7x7x3 = getattr(self, f"branch7x7x3_{i}")(branch7x7x3)
        branch_pool = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([branch3x3, branch7x7x3, branch_pool], 1)


class InceptionE(nn.Module):
    """`max_pool=True` is the TF graph's last block (Mixed_7c), which max-pools its side
    branch; Mixed_7b average-pools it without the padding."""

    def __init__(self, c_in: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(c_in, 320, 1)
        self.branch3x3_1 = BasicConv2d(c_in, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(c_in, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(c_in, 192, 1)

    def forward(self, x):
        branch1x1 = self.branch1x1(x)
        branch3x3 = self.branch3x3_1(x)
        branch3x3 = torch.cat([self.branch3x3_2a(branch3x3), self.branch3x3_2b(branch3x3)], 1)
        branch3x3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        branch3x3dbl = torch.cat(
            [self.branch3x3dbl_3a(branch3x3dbl), self.branch3x3dbl_3b(branch3x3dbl)], 1
        )
        if self.max_pool:
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            pooled = _avg_pool(x)
        branch_pool = self.branch_pool(pooled)
        return torch.cat([branch1x1, branch3x3, branch3x3dbl, branch_pool], 1)


class InceptionV3(nn.Module):
    """FID's Inception-v3; `forward` returns one (N, d) feature matrix per entry of `dims`,
    then, with `logits=True`, the (N, 1008) unbiased logits of the Inception Score."""

    def __init__(self, dims: tuple[int, ...] = (2048,), resize: bool = True, logits: bool = False):
        super().__init__()
        unknown = [d for d in dims if d not in BLOCK_OF_DIMS]
        if unknown or not dims:
            raise PipelineError(
                f"Inception feature dims {list(dims)}: choose from 64, 192, 768, 2048"
            )
        self.dims = tuple(dims)
        self.resize = resize
        self.logits = logits
        # The logits need pool3, whichever feature layers were asked for.
        self.last_block = 3 if logits else max(BLOCK_OF_DIMS[d] for d in dims)
        # Block 0: the stem up to the first max pool (64 channels).
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        # Block 1: up to the second max pool (192).
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        # Block 2: the 35x35 and 17x17 mixed blocks (768).
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        # Block 3: the 8x8 blocks and pool3 (2048).
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pool=False)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)  # the TF graph's logits: the IS, not FID

    def blocks(self):
        return (
            [self.Conv2d_1a_3x3, self.Conv2d_2a_3x3, self.Conv2d_2b_3x3, _MaxPool()],
            [self.Conv2d_3b_1x1, self.Conv2d_4a_3x3, _MaxPool()],
            [self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a]
            + [self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e],
            [self.Mixed_7a, self.Mixed_7b, self.Mixed_7c],
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.resize:
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = 2 * x - 1  # [0, 1] -> [-1, 1]
        found: dict[int, torch.Tensor] = {}
        for index, block in enumerate(self.blocks()):
            for layer in block:
                x = layer(x)
            found[index] = x
            if index == self.last_block:
                break
        out = [F.adaptive_avg_pool2d(found[BLOCK_OF_DIMS[d]], 1).flatten(1) for d in self.dims]
        if self.logits:
            pool3 = F.adaptive_avg_pool2d(found[3], 1).flatten(1)
            # No bias: the original IS code takes the logits before the bias add.
            out.append(F.linear(pool3, self.fc.weight))
        return out


class _MaxPool(nn.Module):
    def forward(self, x):
        return F.max_pool2d(x, kernel_size=3, stride=2)


def load_weights(net: InceptionV3, state: object, source: str = "the weights file") -> None:
    """Load a pytorch-fid state dict strictly: wrong keys or shapes are a clear error."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PipelineError(f"{source} is not an Inception state dict (a dict of tensors)")
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    own = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise PipelineError(
            f"{source} does not hold pytorch-fid's Inception weights: "
            f"{len(missing)} missing keys ({', '.join(missing[:3]) or '-'}), "
            f"{len(unexpected)} unexpected ({', '.join(unexpected[:3]) or '-'})"
        )
    wrong = [k for k in own if own[k].shape != state[k].shape]
    if wrong:
        raise PipelineError(
            f"{source}: shape of {wrong[0]} is {tuple(state[wrong[0]].shape)}, expected "
            f"{tuple(own[wrong[0]].shape)}"
        )
    net.load_state_dict(state, strict=False)


def standin_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """The stand-in's weights: He-normal convolutions from a fixed seed, identity batch norm
    (so activations keep their scale through the depth), small random logits."""
    net = InceptionV3()
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in sorted(net.state_dict().items()):
        if key.endswith("num_batches_tracked"):
            continue
        if value.dim() == 4:
            fan_in = value[0].numel()
            state[key] = torch.randn(value.shape, generator=generator) * (2.0 / fan_in) ** 0.5
        elif key.endswith(("running_var", "bn.weight")):
            state[key] = torch.ones(value.shape)
        elif key == "fc.weight":
            state[key] = torch.randn(value.shape, generator=generator) * 0.01
        else:
            state[key] = torch.zeros(value.shape)
    return state


@functools.lru_cache(maxsize=1)
def standin_sha256() -> str:
    """The stand-in's identity in every protocol and cache key (computed once a process)."""
    return state_dict_sha256(standin_state_dict())


def state_dict_sha256(state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().float().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


def build(backbone, dims: tuple[int, ...], device="cpu", logits: bool = False) -> InceptionV3:
    """The network for a resolved `weights.Backbone`, in eval mode on `device` (with
    `logits=True` it also returns the Inception Score's unbiased logits)."""
    net = InceptionV3(dims, logits=logits)
    if backbone.standin:
        state = standin_state_dict()
    else:
        try:
            state = torch.load(backbone.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure: not a weights file
            raise PipelineError(
                f"{backbone.path} is not a torch weights file ({type(exc).__name__})"
            ) from None
    load_weights(net, state, backbone.path or "the stand-in")
    return net.eval().requires_grad_(False).to(device)
