"""A plain-PyTorch ViT-B/16 laid out like torchvision's ``vit_b_16``, for parity tests.

Written here from the architecture (Dosovitskiy et al.; torchvision's module names), not
torchvision's code, which cannot be installed beside this torch. Attention is torch's own
``nn.MultiheadAttention``, so the packed ``in_proj_weight`` layout is torch's; the state dict has
exactly torchvision's keys (``conv_proj.weight``, ``class_token``, ``encoder.pos_embedding``,
``encoder.layers.encoder_layer_0.ln_1.weight``, ..., ``heads.head.bias``). Like fvjax's port,
and unlike torchvision, it takes any size: the patches' position embeddings are resized with
``interpolate(mode="bilinear", align_corners=False)``. Only imported by tests that have torch.
"""

from __future__ import annotations

from collections import OrderedDict

import pytest

# Collected by --doctest-modules too: skip, rather than fail, where torch is absent.
torch = pytest.importorskip("torch", reason="the PyTorch reference needs torch")
nn = torch.nn
F = torch.nn.functional

WIDTH, DEPTH, HEADS, MLP_WIDTH, PATCH, GRID = 768, 12, 12, 3072, 16, 14


class MLPBlock(nn.Sequential):
    def __init__(self):
        super().__init__(
            nn.Linear(WIDTH, MLP_WIDTH), nn.GELU(), nn.Dropout(0.0), nn.Linear(MLP_WIDTH, WIDTH),
            nn.Dropout(0.0),
        )  # fmt: skip


class EncoderBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln_1 = nn.LayerNorm(WIDTH, eps=1e-6)
        self.self_attention = nn.MultiheadAttention(WIDTH, HEADS, batch_first=True)
        self.ln_2 = nn.LayerNorm(WIDTH, eps=1e-6)
        self.mlp = MLPBlock()

    def forward(self, x, record, name):
        y = self.ln_1(x)
        y, _ = self.self_attention(y, y, y, need_weights=False)
        x = x + y
        hidden = self.mlp[1](self.mlp[0](self.ln_2(x)))
        record[f"{name}/mlp/0"] = self.mlp[0](self.ln_2(x))
        record[f"{name}/mlp/hidden"] = hidden
        x = x + self.mlp[3](hidden)
        record[name] = x
        return x


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.empty(1, 1 + GRID * GRID, WIDTH).normal_(std=0.02))
        self.layers = nn.Sequential(
            OrderedDict((f"encoder_layer_{i}", EncoderBlock()) for i in range(DEPTH))
        )
        self.ln = nn.LayerNorm(WIDTH, eps=1e-6)


class TorchViTB16(nn.Module):
    """``forward(x (B, 3, H, W) ImageNet-normalized) -> {fvjax layer name: tensor}``: the patch
    embedding (``conv_proj``, NHWC), each block's tokens, MLP pre-activations and hidden units
    (class token first), the final layer norm and the logits."""

    def __init__(self):
        super().__init__()
        self.conv_proj = nn.Conv2d(3, WIDTH, kernel_size=PATCH, stride=PATCH)
        self.class_token = nn.Parameter(torch.zeros(1, 1, WIDTH))
        self.encoder = Encoder()
        self.heads = nn.Sequential(OrderedDict(head=nn.Linear(WIDTH, 1000)))

    def forward(self, x):
        record = {}
        patches = self.conv_proj(x)
        n, c, h, w = patches.shape
        record["conv_proj"] = patches  # NCHW, as every reference records convolutions
        tokens = patches.reshape(n, c, h * w).permute(0, 2, 1)
        tokens = torch.cat([self.class_token.expand(n, -1, -1), tokens], dim=1)
        positions = self.encoder.pos_embedding
        if (h, w) != (GRID, GRID):
            grid = positions[:, 1:].reshape(1, GRID, GRID, c).permute(0, 3, 1, 2)
            grid = F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False)
            positions = torch.cat([positions[:, :1], grid.permute(0, 2, 3, 1).reshape(1, -1, c)], 1)
        x = tokens + positions
        for i, block in enumerate(self.encoder.layers):
            x = block(x, record, f"encoder/layers/encoder_layer_{i}")
        x = self.encoder.ln(x)
        record["encoder/ln"] = x
        record["heads/head"] = record["output"] = self.heads(x[:, 0])
        return record
