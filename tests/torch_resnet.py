"""A plain-PyTorch ResNet-50 laid out like torchvision's ``resnet50``, for parity tests.

Written here from the architecture, not from torchvision (which cannot be installed beside this
torch): the same module tree, hence the same state dict keys (``conv1.weight``,
``bn1.running_mean``, ``layer1.0.downsample.1.num_batches_tracked``, ``fc.bias``, ...), so a
real torchvision state dict and this one load through the same import table. ``forward``
returns every layer fvjax names (``"layer3/2/bn1"``, ``"avgpool"``, ...), NCHW.
Only imported by tests that have torch.
"""

from __future__ import annotations

import pytest

# Collected by --doctest-modules too: skip, rather than fail, where torch is absent.
torch = pytest.importorskip("torch", reason="the PyTorch reference needs torch")
F = torch.nn.functional
nn = torch.nn

from fvjax.models.zoo.resnet import EXPANSION, N_CLASSES, STAGES, STEM_WIDTH  # noqa: E402

Layers = dict[str, torch.Tensor]


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided) -> 1x1, batch norm after each, plus the shortcut, then ReLU."""

    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        features = EXPANSION * width
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, features, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(features)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or cin != features:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, features, 1, stride=stride, bias=False), nn.BatchNorm2d(features)
            )

    def forward(self, x: torch.Tensor, name: str = "block", out: Layers | None = None):
        """The block's output; its layers go to ``out`` as ``f"{name}/conv1"`` etc."""
        out = {} if out is None else out
        y = x
        for k in (1, 2, 3):
            y = getattr(self, f"conv{k}")(y)
            out[f"{name}/conv{k}"] = y
            y = getattr(self, f"bn{k}")(y)
            out[f"{name}/bn{k}"] = y
            y = self.relu(y) if k < 3 else y
        shortcut = x
        if self.downsample is not None:
            shortcut = self.downsample[0](x)
            out[f"{name}/downsample/0"] = shortcut
            shortcut = self.downsample[1](shortcut)
            out[f"{name}/downsample/1"] = out[f"{name}/downsample"] = shortcut
        y = self.relu(y + shortcut)
        out[name] = y
        return y


class TorchResNet50(nn.Module):
    """``forward(x (B, 3, H, W) ImageNet-normalized) -> {fvjax layer name: tensor}``."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, STEM_WIDTH, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM_WIDTH)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        cin = STEM_WIDTH
        for i, (blocks, width) in enumerate(STAGES):
            stage = []
            for b in range(blocks):
                stride = 2 if i > 0 and b == 0 else 1
                stage.append(Bottleneck(cin, width, stride))
                cin = EXPANSION * width
            setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, N_CLASSES)

    def forward(self, x: torch.Tensor) -> Layers:
        out: Layers = {}
        for name in ("conv1", "bn1", "relu", "maxpool"):
            x = out[name] = getattr(self, name)(x)
        for i in range(len(STAGES)):
            name = f"layer{i + 1}"
            for b, block in enumerate(getattr(self, name)):
                x = block(x, f"{name}/{b}", out)
            out[name] = x
        x = out["avgpool"] = self.avgpool(x).flatten(1)
        out["fc"] = out["output"] = self.fc(x)
        return out
