"""A plain-PyTorch VGG-16 laid out like torchvision's ``vgg16``, for parity tests.

Written here from the architecture (Simonyan & Zisserman's configuration D), not torchvision's
code, which cannot be installed beside this torch: ``features`` and ``classifier`` are
``nn.Sequential``s holding the same modules at the same indices, so :class:`TorchVGG16`'s
``state_dict()`` has exactly torchvision's keys (``features.0.weight`` ... ``features.28.bias``,
``classifier.0.weight`` ... ``classifier.6.bias``) and a real torchvision state dict would go
through the same import table. Only imported by tests that have torch.
"""

from __future__ import annotations

import pytest

# Collected by --doctest-modules too: skip, rather than fail, where torch is absent.
torch = pytest.importorskip("torch", reason="the PyTorch reference needs torch")
nn = torch.nn

#: Configuration D: 3x3 convolution widths, "M" for a 2x2 stride-2 max pool.
CONFIG_D = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class TorchVGG16(nn.Module):
    """``forward(x (B, 3, H, W) ImageNet-normalized) -> {fvjax layer name: tensor}``: every
    convolution before (``features/<i>``) and after ReLU (``conv<b>_<k>``), the pools, the
    adaptive pool, the linear layers before (``classifier/<i>``) and after ReLU (``fc6``,
    ``fc7``) and the logits (``fc8``, ``output``)."""

    def __init__(self):
        super().__init__()
        layers, cin = [], 3
        for width in CONFIG_D:
            if width == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                # In-place ReLUs, as torchvision's: forward clones what it records before them.
                layers += [nn.Conv2d(cin, width, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                cin = width
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(cin * 7 * 7, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(),
            nn.Linear(4096, 1000),
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        block, conv = 1, 0
        for i, layer in enumerate(self.features):
            x = layer(x)
            if isinstance(layer, nn.Conv2d):
                conv += 1
                out[f"features/{i}"] = x.clone()  # the in-place ReLU next would overwrite x
            elif isinstance(layer, nn.ReLU):
                out[f"conv{block}_{conv}"] = x
            else:
                out[f"pool{block}"] = x
                block, conv = block + 1, 0
        x = self.avgpool(x)
        out["avgpool"] = x
        x = torch.flatten(x, 1)  # (C, 7, 7) channel-major, as classifier.0 expects
        after = {1: "fc6", 4: "fc7", 6: "fc8"}  # the ReLUs of classifier.0, .3 and .6 itself
        for i, layer in enumerate(self.classifier):
            x = layer(x)
            if isinstance(layer, nn.Linear):
                out[f"classifier/{i}"] = x.clone()
            if i in after:
                out[after[i]] = x
        out["output"] = x
        return out
