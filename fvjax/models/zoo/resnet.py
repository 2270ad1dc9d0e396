"""ResNet-50 as torchvision has it (``torchvision.models.resnet50``), in Flax linen.

The "v1.5" bottleneck: ``1x1 -> 3x3 -> 1x1`` convolutions, each followed by batch norm, the
stride on the 3x3 (the original paper strides the first 1x1), the last convolution 4x wider
than the block's width, and a ``1x1`` convolution + batch norm (``downsample``) on the shortcut of
each stage's first block. Convolutions have no bias; paddings are torch's, symmetric (3 for the
7x7 stride-2 stem, 1 for every 3x3, 1 with ``-inf`` for the 3x3 stride-2 max pool): Flax's
``"SAME"`` would pad stride-2 layers TF's asymmetric way. Batch norm is the inference form,
its statistics ``mean`` and ``var`` stored beside ``scale`` and ``bias`` in ``"params"``, so the
whole network is one params tree. The head averages globally, as ``AdaptiveAvgPool2d(1)`` does,
so any picture size of 32 px or more works.

Layers are torchvision's module names, ``/`` for ``.`` (shapes at 224 px)::

    conv1, bn1, relu, maxpool    (112, 112, 64) ... (56, 56, 64); relu: the stem after ReLU
    layer1 ... layer4            stage outputs after the last block's ReLU: 256, 512, 1024,
                                 2048 channels at 56, 28, 14, 7 px
    layer3/2                     one bottleneck block's output (after the residual add, ReLU)
    layer3/2/conv1 ... bn3       inside a block: convolutions, and batch norms before ReLU
                                 (bn3 before the residual add)
    layer3/0/downsample          the projected shortcut (also /0: its conv, /1: its batch norm)
    avgpool                      (2048,) global mean of layer4
    fc (and output)              (1000,) ImageNet logits

The network takes ImageNet-normalized RGB; :func:`build` puts ``(x - mean) / std`` in the model
(:data:`fvjax.models.IMAGENET_MEAN`, ``IMAGENET_STD``), so fvjax passes pictures in ``[0, 1]``.
Weights: a torchvision ``resnet50`` state dict (``conv1.weight``, ``layer1.0.bn1.running_mean``,
``fc.bias``, ...) through :func:`torchvision_table`.

>>> model = build(random_params())
>>> shapes = model.layer_shapes(224)
>>> shapes["layer3"], shapes["layer4/2/bn2"], shapes["fc"]
((14, 14, 1024), (7, 7, 512), (1000,))
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fvjax.models.adapters import IMAGENET_MEAN, IMAGENET_STD, Model, from_linen, normalize
from fvjax.models.layers import max_pool
from fvjax.models.weights import Entry, params_tree, shape_leaves
from fvjax.models.zoo.architecture import Architecture

#: ``(blocks, width)`` per stage ``layer1``..``layer4``: a block outputs ``EXPANSION * width``.
STAGES = ((3, 64), (4, 128), (6, 256), (3, 512))
EXPANSION = 4
STEM_WIDTH = 64
N_CLASSES = 1000
#: torchvision's ImageNet preprocessing, for RGB in ``[0, 1]``.
BATCHNORM_EPS = 1e-5


class BatchNorm(nn.Module):
    """Inference batch norm over the last axis, ``(x - mean) / sqrt(var + eps) * scale + bias``,
    with all four vectors in ``"params"`` (torch's ``weight, bias, running_mean, running_var``).

    >>> variables = BatchNorm().init(jax.random.key(0), jnp.ones((1, 4)))
    >>> sorted(variables["params"])
    ['bias', 'mean', 'scale', 'var']
    """

    eps: float = BATCHNORM_EPS

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        shape = (x.shape[-1],)
        scale = self.param("scale", nn.initializers.ones, shape)
        bias = self.param("bias", nn.initializers.zeros, shape)
        mean = self.param("mean", nn.initializers.zeros, shape)
        var = self.param("var", nn.initializers.ones, shape)
        return (x - mean) * (scale * jax.lax.rsqrt(var + self.eps)) + bias


def _conv(features: int, size: int, stride: int = 1, **module: Any) -> nn.Conv:
    """A bias-free ``size x size`` convolution padded ``(size - 1) // 2`` each side, as torch;
    ``module``: ``name`` and ``parent``."""
    pad = (size - 1) // 2
    return nn.Conv(
        features,
        (size, size),
        strides=stride,
        padding=((pad, pad), (pad, pad)),
        use_bias=False,
        **module,
    )


class Downsample(nn.Module):
    """The projected shortcut: ``0``, a strided 1x1 convolution, then ``1``, batch norm."""

    features: int
    stride: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return BatchNorm(name="1")(_conv(self.features, 1, self.stride, name="0")(x))


class Bottleneck(nn.Module):
    """``relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x)))))))) + shortcut(x))``, stride on
    ``conv2``; the shortcut is ``downsample`` where the shape changes, else ``x``."""

    width: int
    stride: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = EXPANSION * self.width
        y = nn.relu(BatchNorm(name="bn1")(_conv(self.width, 1, name="conv1")(x)))
        y = nn.relu(BatchNorm(name="bn2")(_conv(self.width, 3, self.stride, name="conv2")(y)))
        y = BatchNorm(name="bn3")(_conv(features, 1, name="conv3")(y))
        if self.stride != 1 or x.shape[-1] != features:
            x = Downsample(features, self.stride, name="downsample")(x)
        return nn.relu(y + x)


class Stage(nn.Module):
    """``blocks`` bottlenecks named ``0, 1, ...``; the first one strides."""

    blocks: int
    width: int
    stride: int
    remat: bool = False  # each bottleneck rematerialized (``nn.remat``)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        block = nn.remat(Bottleneck) if self.remat else Bottleneck
        for i in range(self.blocks):
            x = block(self.width, self.stride if i == 0 else 1, name=str(i))(x)
        return x


class ResNet50(nn.Module):
    """torchvision's ``resnet50``: logits ``(B, 1000)`` for ImageNet-normalized ``(B, H, W, 3)``
    (:func:`build` normalizes pictures in ``[0, 1]``).

    >>> images = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    >>> jax.eval_shape(ResNet50().apply, {"params": random_params()}, images).shape
    (1, 1000)
    """

    #: The stem and each bottleneck rematerialized (``nn.remat``). Same params and
    #: layers.
    remat: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        def stem(module: nn.Module, x: jax.Array) -> jax.Array:
            conv = _conv(STEM_WIDTH, 7, 2, name="conv1", parent=module)
            x = nn.relu(BatchNorm(name="bn1", parent=module)(conv(x)))
            module.sow("intermediates", "relu", x)
            x = max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1)))  # -inf pads
            module.sow("intermediates", "maxpool", x)
            return x

        x = (nn.remat(stem) if self.remat else stem)(self, x)
        for i, (blocks, width) in enumerate(STAGES):
            stride = 1 if i == 0 else 2
            x = Stage(blocks, width, stride, self.remat, name=f"layer{i + 1}")(x)
        x = x.mean(axis=(1, 2))
        self.sow("intermediates", "avgpool", x)
        return nn.Dense(N_CLASSES, name="fc")(x)


def _layers() -> list[tuple[Entry, tuple[int, ...]]]:
    """Every layer with weights, in torchvision's order: its import entry and its Flax shape
    (HWIO kernel, ``(features,)`` batch norm, ``(in, out)`` dense kernel). A torch name is the
    Flax path joined by dots: ``layer1.0.downsample.0`` is ``("layer1", "0", "downsample", "0")``.
    """
    rows = []

    def conv_bn(prefix: tuple[str, ...], conv: str, bn: str, shape: tuple[int, ...]) -> None:
        for path, kind, layer_shape in (
            ((*prefix, conv), "conv", shape),
            ((*prefix, bn), "batchnorm", shape[-1:]),
        ):
            rows.append((Entry(".".join(path), path, kind), layer_shape))

    conv_bn((), "conv1", "bn1", (7, 7, 3, STEM_WIDTH))
    cin = STEM_WIDTH
    for s, (blocks, width) in enumerate(STAGES, start=1):
        features = EXPANSION * width
        for b in range(blocks):
            block = (f"layer{s}", str(b))
            conv_bn(block, "conv1", "bn1", (1, 1, cin, width))
            conv_bn(block, "conv2", "bn2", (3, 3, width, width))
            conv_bn(block, "conv3", "bn3", (1, 1, width, features))
            if b == 0:
                conv_bn((*block, "downsample"), "0", "1", (1, 1, cin, features))
            cin = features
    rows.append((Entry("fc", ("fc",), "linear"), (cin, N_CLASSES)))
    return rows


def torchvision_table() -> list[Entry]:
    """The import table of torchvision's ``resnet50`` state dict (see :mod:`fvjax.models.weights`).

    >>> table = torchvision_table()
    >>> table[0], len(table)
    (Entry(torch_name='conv1', flax_path=('conv1',), kind='conv'), 107)
    """
    return [entry for entry, _ in _layers()]


def random_params(seed: int = 0) -> dict:
    """A params tree of :class:`ResNet50`'s shapes, drawn with numpy (no Flax init trace):
    He-normal kernels, batch norm scales near 1 with small biases and means and variances in
    ``[0.5, 1.5]``, a LeCun-normal ``fc`` with small biases."""
    rng = np.random.default_rng(seed)

    def normal(shape: tuple[int, ...], std: float, mean: float = 0.0) -> np.ndarray:
        return mean + np.float32(std) * rng.standard_normal(shape, dtype=np.float32)

    def leaves(entry: Entry, shape: tuple[int, ...]) -> dict:
        if entry.kind == "batchnorm":
            return {
                "scale": normal(shape, 0.1, mean=1.0),
                "bias": normal(shape, 0.1),
                "mean": normal(shape, 0.1),
                "var": rng.uniform(0.5, 1.5, shape).astype(np.float32),
            }
        gain = 1.0 if entry.kind == "linear" else 2.0
        found = {"kernel": normal(shape, np.sqrt(gain / int(np.prod(shape[:-1]))))}
        if entry.kind == "linear":
            found["bias"] = normal(shape[-1:], 0.1)
        return found

    return params_tree(_layers(), leaves)


def param_shapes() -> dict:
    """The params tree as ``jax.ShapeDtypeStruct`` leaves (convolutions have no bias): checks
    an import without drawing weights.

    >>> sorted(param_shapes()["layer3"]["0"]["bn2"])
    ['bias', 'mean', 'scale', 'var']
    """
    return params_tree(_layers(), shape_leaves(conv_bias=False))


def build(params: Any) -> Model:
    """The fvjax model of a Flax params tree (``random_params()``'s structure), taking pictures
    in ``[0, 1]`` (ImageNet normalization inside).

    >>> build(random_params()).name
    'resnet50'
    """
    params = jax.tree_util.tree_map(jnp.asarray, params)
    return from_linen(
        ResNet50(),
        {"params": params},
        preprocess=normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
        name="resnet50",
        remat_module=ResNet50(remat=True),
    )


#: ``zoo.load("resnet50", weights=path)``: ``path`` is a torchvision ``resnet50`` state dict
#: (``.safetensors``, ``.npz``, or ``.pth`` when torch is installed) or its converted weights, e.g.
#: saved once on a machine with torchvision by
#: ``safetensors.torch.save_file(torchvision.models.resnet50(weights="IMAGENET1K_V2").state_dict(),
#: path)``. Without ``weights``: random weights (seed 0).
ARCHITECTURE = Architecture("resnet50", build, random_params, torchvision_table, param_shapes)
