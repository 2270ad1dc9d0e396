"""InceptionV1 as Lucid and Lucent have it: the TF ``inception5h`` graph, in Flax linen.

This is not torchvision's GoogLeNet: there is no batch norm, the "3x3" and "5x5" branches have
their own channel counts (``mixed4a`` has 508 channels) and two local response normalizations
follow ``conv2d0``/``conv2d2``. Padding follows TF ``"SAME"`` (asymmetric for stride 2, e.g.
``(2, 3)`` for the 7x7 stride-2 ``conv2d0`` at 224 px) and max pools pad with ``-inf``, as the
graph does. The head averages globally, which equals the graph's 7x7 average pool at 224 px and
still works at other sizes.

Layers, as :func:`fvjax.models.from_linen` names them (shapes at 224 px)::

    conv2d0, conv2d1, conv2d2     (112, 112, 64), (56, 56, 64), (56, 56, 192)  after ReLU
    conv2d0/pre_relu ...          the same convolutions before ReLU
    mixed3a ... mixed5b           concatenated branches after ReLU: 256, 480, 508, 512, 512,
                                  528, 832, 832, 1024 channels (28, 14 and 7 px)
    mixed4a/pre_relu ...          the same concatenation before ReLU
    mixed4a/1x1_pre_relu, mixed4a/3x3_bottleneck_pre_relu, mixed4a/3x3_pre_relu,
    mixed4a/5x5_bottleneck_pre_relu, mixed4a/5x5_pre_relu, mixed4a/pool_reduce_pre_relu
    softmax2_pre_activation       (1008,) logits;  softmax2 (and output): their softmax

Units of a mixed layer are numbered in the order of the concatenation (1x1, 3x3, 5x5,
pool_reduce), as OpenAI Microscope and Lucid number them: ``mixed4a`` units 0-191 are the
1x1 branch, 192-395 the 3x3, 396-443 the 5x5, 444-507 the pool projection.

The graph takes RGB in ``[0, 255] - 117``; :func:`inceptionv1` puts that scaling in the model,
so fvjax passes pictures in ``[0, 1]`` as everywhere else.

Local response normalization, ``x / (bias + alpha * sum of x**2 over channels d-r..d+r)**beta``:
the graph (:data:`INCEPTION5H_LRN`) has ``depth_radius=5, bias=2, alpha=1e-4, beta=0.5``.
Lucent's port (:data:`LUCENT_LRN`) computes ``torch.nn.functional.local_response_norm(size=9,
alpha=1e-4, beta=0.5, k=1)``, i.e. radius 4, bias 1, alpha ``1e-4 / 9``: a known mistake (Lucent
pull request 51). The default is the graph's; pass ``lrn=LUCENT_LRN`` to match Lucent exactly.

>>> model = build(random_params())
>>> shapes = model.layer_shapes(224)
>>> shapes["mixed4a"], shapes["conv2d0/pre_relu"], shapes["softmax2"]
((14, 14, 508), (112, 112, 64), (1008,))
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fvjax.models.adapters import Model, from_linen, normalize
from fvjax.models.layers import max_pool
from fvjax.models.weights import Entry, params_tree, shape_leaves
from fvjax.models.zoo.architecture import Architecture


class LRNSettings(NamedTuple):
    """TF-style local response normalization constants (window ``2 * depth_radius + 1``)."""

    depth_radius: int
    bias: float
    alpha: float
    beta: float


#: The constants of the ``inception5h`` graph's ``localresponsenorm0``/``1`` ops.
INCEPTION5H_LRN = LRNSettings(depth_radius=5, bias=2.0, alpha=1e-4, beta=0.5)
#: Lucent's constants (``local_response_norm(size=9, alpha=1e-4, beta=0.5, k=1)``), TF-style.
LUCENT_LRN = LRNSettings(depth_radius=4, bias=1.0, alpha=1e-4 / 9, beta=0.5)

#: Mixed blocks: name -> (1x1, 3x3_bottleneck, 3x3, 5x5_bottleneck, 5x5, pool_reduce) channels.
MIXED = {
    "mixed3a": (64, 96, 128, 16, 32, 32),
    "mixed3b": (128, 128, 192, 32, 96, 64),
    "mixed4a": (192, 96, 204, 16, 48, 64),
    "mixed4b": (160, 112, 224, 24, 64, 64),
    "mixed4c": (128, 128, 256, 24, 64, 64),
    "mixed4d": (112, 144, 288, 32, 64, 64),
    "mixed4e": (256, 160, 320, 32, 128, 128),
    "mixed5a": (256, 160, 320, 48, 128, 128),
    "mixed5b": (384, 192, 384, 48, 128, 128),
}
#: Mixed blocks preceded by a 3x3 stride-2 max pool.
_POOLED_BEFORE = ("mixed4a", "mixed5a")
#: The graph's input range: ``255 * image - 117``.
INPUT_SCALE, INPUT_MEAN = 255.0, 117.0
N_CLASSES = 1008


def local_response_norm(x: jax.Array, settings: LRNSettings) -> jax.Array:
    """TF ``tf.nn.local_response_normalization`` over the last axis of ``x (B, H, W, C)``."""
    r = settings.depth_radius
    window = jax.lax.reduce_window(
        x * x, 0.0, jax.lax.add, (1, 1, 1, 2 * r + 1), (1, 1, 1, 1), ((0, 0),) * 3 + ((r, r),)
    )
    return x / (settings.bias + settings.alpha * window) ** settings.beta


def _max_pool(x: jax.Array, stride: int) -> jax.Array:
    # Flax's "SAME" is TF's (asymmetric for stride 2) and pads max pools with -inf.
    return max_pool(x, (3, 3), (stride, stride), "SAME")


def _unchanged(target: Any) -> Any:
    return target


class ConvReLU(nn.Module):
    """A convolution named ``pre_relu`` (TF ``"SAME"`` padding), then ReLU."""

    features: int
    size: int
    stride: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = nn.Conv(
            self.features, (self.size,) * 2, strides=self.stride, padding="SAME", name="pre_relu"
        )
        return nn.relu(conv(x))


class Mixed(nn.Module):
    """An inception block: four branches concatenated ``(1x1, 3x3, 5x5, pool_reduce)``, ReLU.

    Sows the concatenation before ReLU as ``pre_relu``.
    """

    channels: tuple[int, int, int, int, int, int]

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c1, c3r, c3, c5r, c5, cp = self.channels

        def conv(features: int, size: int, name: str, y: jax.Array) -> jax.Array:
            return nn.Conv(features, (size, size), padding="SAME", name=name)(y)

        b1 = conv(c1, 1, "1x1_pre_relu", x)
        b3 = conv(c3, 3, "3x3_pre_relu", nn.relu(conv(c3r, 1, "3x3_bottleneck_pre_relu", x)))
        b5 = conv(c5, 5, "5x5_pre_relu", nn.relu(conv(c5r, 1, "5x5_bottleneck_pre_relu", x)))
        bp = conv(cp, 1, "pool_reduce_pre_relu", _max_pool(x, 1))
        pre_relu = jnp.concatenate([b1, b3, b5, bp], axis=-1)
        self.sow("intermediates", "pre_relu", pre_relu)
        return nn.relu(pre_relu)


class InceptionV1(nn.Module):
    """The ``inception5h`` graph: class probabilities ``(B, 1008)`` for ``(B, H, W, 3)`` RGB
    in the graph's own range ``[0, 255] - 117`` (:func:`inceptionv1` scales ``[0, 1]`` to it).

    >>> module = InceptionV1()
    >>> variables = {"params": random_params()}
    >>> module.apply(variables, jnp.zeros((1, 64, 64, 3))).shape
    (1, 1008)
    """

    lrn: LRNSettings = INCEPTION5H_LRN
    #: Each block rematerialized (``nn.remat``): ``conv2d0`` with its pool and LRN,
    #: ``conv2d1`` to the stem's last pool, each mixed block. Same params and layers.
    remat: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        def stem0(module: nn.Module, x: jax.Array) -> jax.Array:
            x = ConvReLU(64, 7, stride=2, name="conv2d0", parent=module)(x)
            return local_response_norm(_max_pool(x, 2), self.lrn)

        def stem1(module: nn.Module, x: jax.Array) -> jax.Array:
            x = ConvReLU(64, 1, name="conv2d1", parent=module)(x)
            x = ConvReLU(192, 3, name="conv2d2", parent=module)(x)
            return _max_pool(local_response_norm(x, self.lrn), 2)

        block = nn.remat if self.remat else _unchanged
        x = block(stem1)(self, block(stem0)(self, x))
        for name, channels in MIXED.items():
            if name in _POOLED_BEFORE:
                x = _max_pool(x, 2)
            x = block(Mixed)(channels, name=name)(x)
        logits = nn.Dense(N_CLASSES, name="softmax2_pre_activation")(x.mean(axis=(1, 2)))
        probabilities = nn.softmax(logits)
        self.sow("intermediates", "softmax2", probabilities)
        return probabilities


def _layers() -> list[tuple[Entry, tuple[int, ...]]]:
    """Every layer with weights: its Lucent import entry and its Flax kernel shape (HWIO)."""
    rows = [
        (Entry("conv2d0_pre_relu_conv", ("conv2d0", "pre_relu"), "conv"), (7, 7, 3, 64)),
        (Entry("conv2d1_pre_relu_conv", ("conv2d1", "pre_relu"), "conv"), (1, 1, 64, 64)),
        (Entry("conv2d2_pre_relu_conv", ("conv2d2", "pre_relu"), "conv"), (3, 3, 64, 192)),
    ]
    cin = 192
    for name, (c1, c3r, c3, c5r, c5, cp) in MIXED.items():
        for branch, shape in (
            ("1x1", (1, 1, cin, c1)),
            ("3x3_bottleneck", (1, 1, cin, c3r)),
            ("3x3", (3, 3, c3r, c3)),
            ("5x5_bottleneck", (1, 1, cin, c5r)),
            ("5x5", (5, 5, c5r, c5)),
            ("pool_reduce", (1, 1, cin, cp)),
        ):
            entry = Entry(f"{name}_{branch}_pre_relu_conv", (name, f"{branch}_pre_relu"), "conv")
            rows.append((entry, shape))
        cin = c1 + c3 + c5 + cp
    head = Entry("softmax2_pre_activation_matmul", ("softmax2_pre_activation",), "linear")
    rows.append((head, (cin, N_CLASSES)))
    return rows


def lucent_table() -> list[Entry]:
    """The import table of Lucent's InceptionV1 state dict (see :mod:`fvjax.models.weights`)."""
    return [entry for entry, _ in _layers()]


def random_params(seed: int = 0) -> dict:
    """He-normal kernels and small random biases, drawn with numpy (no Flax init trace)."""
    rng = np.random.default_rng(seed)

    def leaves(entry: Entry, shape: tuple[int, ...]) -> dict:
        gain = 1.0 if entry.kind == "linear" else 2.0
        std = np.sqrt(gain / int(np.prod(shape[:-1])))
        kernel = (rng.standard_normal(shape) * std).astype(np.float32)
        return {"kernel": kernel, "bias": (0.1 * rng.standard_normal(shape[-1])).astype(np.float32)}

    return params_tree(_layers(), leaves)


def param_shapes() -> dict:
    """The params tree as ``jax.ShapeDtypeStruct`` leaves: checks an import without weights.

    >>> param_shapes()["mixed4a"]["3x3_pre_relu"]["kernel"].shape
    (3, 3, 96, 204)
    """
    return params_tree(_layers(), shape_leaves())


def build(params: Any, lrn: LRNSettings = INCEPTION5H_LRN) -> Model:
    """The fvjax model of a Flax params tree (``random_params()``'s structure)."""
    params = jax.tree_util.tree_map(jnp.asarray, params)
    return from_linen(
        InceptionV1(lrn=lrn),
        {"params": params},
        preprocess=normalize(mean=(INPUT_MEAN,) * 3, std=(1.0,) * 3, scale=INPUT_SCALE),
        name="inceptionv1",
        remat_module=InceptionV1(lrn=lrn, remat=True),
    )


#: ``zoo.load("inceptionv1", weights=path)``: ``path`` is a state dict with Lucent's key names
#: (``.safetensors``, ``.npz``, or ``.pth`` when torch is installed) or its converted weights, e.g.
#: Lucent's ``inceptionv1`` weights converted once with
#: ``safetensors.torch.save_file(torch.load(p), "inception5h.safetensors")``;
#: ``inception.build(params, lrn=LUCENT_LRN)`` matches Lucent's outputs exactly. Without
#: ``weights``: random weights (seed 0).
ARCHITECTURE = Architecture("inceptionv1", build, random_params, lucent_table, param_shapes)
