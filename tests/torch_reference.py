"""A plain-PyTorch InceptionV1 laid out like Lucent's port of ``inception5h``, for parity tests.

Written here from the architecture (not Lucent's code): same parameter names
(``conv2d0_pre_relu_conv.weight``, ``mixed3a_1x1_pre_relu_conv.bias``, ...), the same fixed
paddings Lucent uses at 224 px (``(2, 3)`` before ``conv2d0``, ``(0, 1)`` with ``-inf`` before the
stride-2 max pools), its ``local_response_norm(size=9, alpha=1e-4, beta=0.5, k=1)`` or, with
``lrn="tf"``, TF's LRN with the graph's constants, and a 7x7 average pool head.
Only imported by tests that have torch. :func:`relative_errors` serves every parity test.
"""

from __future__ import annotations

import pytest

# Collected by --doctest-modules too: skip, rather than fail, where torch is absent.
torch = pytest.importorskip("torch", reason="the PyTorch reference needs torch")
F = torch.nn.functional
nn = torch.nn

import numpy as np  # noqa: E402

from fvjax.models.zoo.inception import INCEPTION5H_LRN, MIXED, N_CLASSES  # noqa: E402


def relative_errors(ours, theirs) -> dict[str, float]:
    """``max |ours - theirs| / max |theirs|`` per layer of ``theirs`` (``{name: torch tensor}``;
    NCHW references moved to NHWC), for every layer both sides name."""
    errors = {}
    for name, ref in theirs.items():
        ref = ref.detach().numpy()
        if ref.ndim == 4:
            ref = ref.transpose(0, 2, 3, 1)
        got = np.asarray(ours[name])
        assert got.shape == ref.shape, (name, got.shape, ref.shape)
        errors[name] = float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30))
    return errors


def imagenet_outputs(reference, forward, params, size) -> tuple[dict, dict]:
    """``(ours, theirs)``: fvjax's ``forward(params, images)`` and the torch ``reference`` on
    the same two uniform pictures of ``size`` (seed 0), ImageNet-normalized and NCHW for torch."""
    from fvjax import models

    height, width = models.as_size(size)
    images = np.random.default_rng(0).uniform(size=(2, height, width, 3)).astype(np.float32)
    normalized = (images - np.float32(models.IMAGENET_MEAN)) / np.float32(models.IMAGENET_STD)
    with torch.no_grad():
        theirs = reference(torch.from_numpy(normalized.transpose(0, 3, 1, 2)))
    return forward(params, images), theirs


def assert_layers_match(ours, theirs, label: str, bound: float = 1e-4) -> dict[str, float]:
    """Every layer both sides name within ``bound`` (:func:`relative_errors`); prints the
    worst eight. Returns the errors."""
    errors = relative_errors(ours, theirs)
    worst = sorted(errors.items(), key=lambda item: -item[1])
    print(f"\nmax relative error at {label}, worst 8 of {len(errors)} layers:")
    print("\n".join(f"  {name:40s} {err:.2e}" for name, err in worst[:8]))
    bad = {name: err for name, err in errors.items() if not err < bound}
    assert not bad, bad
    return errors


def _tf_lrn(x: torch.Tensor) -> torch.Tensor:
    r, bias, alpha, beta = INCEPTION5H_LRN
    sq = F.pad(x * x, (0, 0, 0, 0, r, r))  # pad the channel axis of (B, C, H, W)
    window = sum(sq[:, i : i + x.shape[1]] for i in range(2 * r + 1))
    return x / (bias + alpha * window) ** beta


def _lucent_lrn(x: torch.Tensor) -> torch.Tensor:
    return F.local_response_norm(x, size=9, alpha=1e-4, beta=0.5, k=1.0)


def _pool(x: torch.Tensor, stride: int) -> torch.Tensor:
    pad = (0, 1, 0, 1) if stride == 2 else (1, 1, 1, 1)
    return F.max_pool2d(F.pad(x, pad, value=float("-inf")), 3, stride=stride)


class TorchInceptionV1(nn.Module):
    """``forward(x (B, 3, 224, 224) in [0, 255] - 117) -> {fvjax layer name: NCHW tensor}``."""

    def __init__(self, lrn: str = "lucent"):
        super().__init__()
        self.lrn = _lucent_lrn if lrn == "lucent" else _tf_lrn
        self.conv2d0_pre_relu_conv = nn.Conv2d(3, 64, 7, stride=2)
        self.conv2d1_pre_relu_conv = nn.Conv2d(64, 64, 1)
        self.conv2d2_pre_relu_conv = nn.Conv2d(64, 192, 3)
        cin = 192
        for name, (c1, c3r, c3, c5r, c5, cp) in MIXED.items():
            setattr(self, f"{name}_1x1_pre_relu_conv", nn.Conv2d(cin, c1, 1))
            setattr(self, f"{name}_3x3_bottleneck_pre_relu_conv", nn.Conv2d(cin, c3r, 1))
            setattr(self, f"{name}_3x3_pre_relu_conv", nn.Conv2d(c3r, c3, 3))
            setattr(self, f"{name}_5x5_bottleneck_pre_relu_conv", nn.Conv2d(cin, c5r, 1))
            setattr(self, f"{name}_5x5_pre_relu_conv", nn.Conv2d(c5r, c5, 5))
            setattr(self, f"{name}_pool_reduce_pre_relu_conv", nn.Conv2d(cin, cp, 1))
            cin = c1 + c3 + c5 + cp
        self.softmax2_pre_activation_matmul = nn.Linear(cin, N_CLASSES)

    def _conv(self, name: str, x: torch.Tensor, pad: int = 0) -> torch.Tensor:
        return getattr(self, f"{name}_pre_relu_conv")(F.pad(x, (pad,) * 4) if pad else x)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        x = self.conv2d0_pre_relu_conv(F.pad(x, (2, 3, 2, 3)))
        out["conv2d0/pre_relu"], x = x, F.relu(x)
        out["conv2d0"] = x
        x = self.lrn(_pool(x, 2))
        x = self._conv("conv2d1", x)
        out["conv2d1/pre_relu"], x = x, F.relu(x)
        out["conv2d1"] = x
        x = self._conv("conv2d2", x, pad=1)
        out["conv2d2/pre_relu"], x = x, F.relu(x)
        out["conv2d2"] = x
        x = _pool(self.lrn(x), 2)
        for name in MIXED:
            if name in ("mixed4a", "mixed5a"):
                x = _pool(x, 2)
            b1 = self._conv(f"{name}_1x1", x)
            b3r = self._conv(f"{name}_3x3_bottleneck", x)
            b3 = self._conv(f"{name}_3x3", F.relu(b3r), pad=1)
            b5r = self._conv(f"{name}_5x5_bottleneck", x)
            b5 = self._conv(f"{name}_5x5", F.relu(b5r), pad=2)
            bp = self._conv(f"{name}_pool_reduce", _pool(x, 1))
            branches = {
                "1x1": b1,
                "3x3_bottleneck": b3r,
                "3x3": b3,
                "5x5_bottleneck": b5r,
                "5x5": b5,
                "pool_reduce": bp,
            }
            out.update({f"{name}/{k}_pre_relu": v for k, v in branches.items()})
            pre = torch.cat([b1, b3, b5, bp], dim=1)
            out[f"{name}/pre_relu"], x = pre, F.relu(pre)
            out[name] = x
        pooled = F.avg_pool2d(x, 7).flatten(1)
        logits = self.softmax2_pre_activation_matmul(pooled)
        out["softmax2_pre_activation"] = logits
        out["softmax2"] = F.softmax(logits, dim=1)
        return out
