"""VGG-16 as torchvision has it (``torchvision.models.vgg16``, no batch norm), in Flax linen.

Simonyan & Zisserman's configuration D: five blocks of 3x3 convolutions (64, 64 | 128, 128 |
256 x 3 | 512 x 3 | 512 x 3 channels, padding 1 on each side, each followed by ReLU), a 2x2
stride-2 max pool ending each block, then torchvision's ``AdaptiveAvgPool2d((7, 7))`` and three
fully connected layers (25088 -> 4096 -> 4096 -> 1000, ReLU after the first two). The adaptive
pool uses torch's bins (:func:`adaptive_avg_pool`): the identity at 224 px, and any picture
size of 32 px or more works. torchvision's two ``Dropout`` layers are the identity at
inference and are left out.

Layers come under two names. The literature's (the paper's and Caffe's blob names, which most
feature-visualization work uses; shapes at 224 px)::

    conv1_1, conv1_2    (224, 224, 64)    convolutions after ReLU (Caffe's ReLUs are in place,
    conv2_1, conv2_2    (112, 112, 128)   so its blob ``conv4_3`` holds the rectified values)
    conv3_1 .. conv3_3  (56, 56, 256)
    conv4_1 .. conv4_3  (28, 28, 512)
    conv5_1 .. conv5_3  (14, 14, 512)
    pool1 .. pool5      (112, 112, 64) ... (7, 7, 512)   after each block's max pool
    avgpool             (7, 7, 512)       torchvision's adaptive pool of pool5
    fc6, fc7            (4096,)           after ReLU
    fc8 (and output)    (1000,)           ImageNet logits

and torchvision's module paths, ``/`` for ``.``, the same names as its state dict:
``features/0``, ``features/2``, ... ``features/28`` are the 13 convolutions *before* ReLU
(:data:`FEATURES_INDEX` maps ``conv4_3`` to ``21``, ``pool5`` to ``30``), ``classifier/0``,
``classifier/3`` are fc6, fc7 before ReLU and ``classifier/6`` is fc8.

The network takes ImageNet-normalized RGB; :func:`build` puts ``(x - mean) / std`` in the model
(:data:`fvjax.models.IMAGENET_MEAN`, ``IMAGENET_STD``), so fvjax passes pictures in ``[0, 1]``.
Weights: a torchvision ``vgg16`` state dict (``features.0.weight``, ..., ``classifier.6.bias``)
through :func:`torchvision_table`.

>>> model = from_linen(VGG16(), {"params": param_shapes()})  # shapes only: no weights drawn
>>> shapes = model.layer_shapes(224)
>>> shapes["conv4_3"], shapes["features/21"], shapes["pool5"], shapes["fc8"]
((28, 28, 512), (28, 28, 512), (7, 7, 512), (1000,))
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

#: Output channels of the 3x3 convolutions of each block; a 2x2 max pool ends every block.
BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
#: torchvision's ``avgpool`` output size, which ``classifier.0`` (25088 = 512 * 7 * 7) expects.
AVGPOOL_SIZE = (7, 7)
HIDDEN = 4096
N_CLASSES = 1000
#: torchvision's ImageNet preprocessing, for RGB in ``[0, 1]``.
#: torchvision's ``classifier`` indices of fc6, fc7, fc8 (ReLU and Dropout fill the gaps).
CLASSIFIER_INDEX = {"fc6": 0, "fc7": 3, "fc8": 6}


def _features_index() -> dict[str, int]:
    # torchvision's ``features`` is one Sequential: each conv takes two places (conv, ReLU),
    # each pool one.
    index, out = 0, {}
    for block, widths in enumerate(BLOCKS, start=1):
        for conv in range(1, len(widths) + 1):
            out[f"conv{block}_{conv}"] = index
            index += 2
        out[f"pool{block}"] = index
        index += 1
    return out


#: Literature name -> index in torchvision's ``features``: ``conv1_1`` 0, ... ``conv4_3`` 21,
#: ``conv5_3`` 28; ``pool1`` 4, ... ``pool5`` 30.
FEATURES_INDEX = _features_index()


def adaptive_avg_pool(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """torch's ``AdaptiveAvgPool2d(size)`` of ``x (B, H, W, C)`` -> ``(B, *size, C)``.

    Output row ``i`` of ``n`` averages input rows ``floor(i * H / n)`` up to (excluding)
    ``ceil((i + 1) * H / n)``: the identity when ``H == n``, overlapping or uneven bins
    otherwise; the same along the width. A mean over a rectangle is the mean of its row means,
    so the two axes are pooled one after the other.

    >>> x = jnp.arange(5.0).reshape(1, 5, 1, 1)
    >>> adaptive_avg_pool(x, (7, 1))[0, :, 0, 0].tolist()
    [0.0, 0.5, 1.5, 2.0, 2.5, 3.5, 4.0]
    """

    def pool_axis(x: jax.Array, axis: int, n: int) -> jax.Array:
        length = x.shape[axis]
        cells = [
            jax.lax.slice_in_dim(x, (i * length) // n, -(-(i + 1) * length // n), axis=axis)
            for i in range(n)
        ]
        return jnp.concatenate([c.mean(axis=axis, keepdims=True) for c in cells], axis=axis)

    return pool_axis(pool_axis(x, 1, size[0]), 2, size[1])


def _conv(features: int, name: str, parent: nn.Module) -> nn.Conv:
    # Explicit symmetric padding, as torch's padding=1 (the same as "SAME" for a 3x3 stride 1).
    return nn.Conv(features, (3, 3), padding=((1, 1), (1, 1)), name=name, parent=parent)


class Features(nn.Module):
    """torchvision's ``features``: ``(B, H, W, 3) -> {conv1_1: ..., pool5: (B, H/32, W/32, 512)}``.

    Returns every named stage (a dict, which :func:`fvjax.models.from_linen` does not list as a
    layer) so that :class:`VGG16` sows them under their own names, ``conv1_1`` rather than
    ``features/conv1_1``; the convolutions themselves are ``features/0`` ... ``features/28``.
    """

    #: Each block (its convolutions and pool) rematerialized (``nn.remat``).
    remat: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
        def block(module: nn.Module, x: jax.Array, index: int) -> dict[str, jax.Array]:
            stages = {}
            for conv, width in enumerate(BLOCKS[index - 1], start=1):
                name = f"conv{index}_{conv}"
                x = nn.relu(_conv(width, str(FEATURES_INDEX[name]), parent=module)(x))
                stages[name] = x
            x = max_pool(x, (2, 2), (2, 2), "VALID")  # torch floors odd sides
            stages[f"pool{index}"] = x
            return stages

        if self.remat:
            block = nn.remat(block, static_argnums=(2,))
        stages = {}
        for index in range(1, len(BLOCKS) + 1):
            stages.update(block(self, x, index))
            x = stages[f"pool{index}"]
        return stages


class Classifier(nn.Module):
    """torchvision's ``classifier`` at inference: ``(B, 25088) -> {fc6, fc7, fc8}``.

    Dropout (``classifier.2``, ``.5``) is the identity at inference, so it is left out.
    """

    @nn.compact
    def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
        fc6 = nn.relu(nn.Dense(HIDDEN, name=str(CLASSIFIER_INDEX["fc6"]))(x))
        fc7 = nn.relu(nn.Dense(HIDDEN, name=str(CLASSIFIER_INDEX["fc7"]))(fc6))
        fc8 = nn.Dense(N_CLASSES, name=str(CLASSIFIER_INDEX["fc8"]))(fc7)
        return {"fc6": fc6, "fc7": fc7, "fc8": fc8}


class VGG16(nn.Module):
    """VGG-16: ImageNet logits ``(B, 1000)`` for ``(B, H, W, 3)`` ImageNet-normalized RGB
    (:func:`build` normalizes pictures in ``[0, 1]``). Sows the literature's layer names.

    >>> variables = {"params": param_shapes()}
    >>> jax.eval_shape(VGG16().apply, variables, jnp.zeros((1, 64, 64, 3))).shape
    (1, 1000)
    """

    remat: bool = False  # each block of ``features`` rematerialized (``nn.remat``)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        stages = Features(self.remat, name="features")(x)
        pooled = adaptive_avg_pool(stages["pool5"], AVGPOOL_SIZE)
        # torch flattens NCHW, so classifier.0's 25088 inputs run channel-major
        # (c * 49 + h * 7 + w). Flattening channel-first here lets its (4096, 25088) weight
        # map with a plain transpose, as every other linear layer does.
        flat = jnp.transpose(pooled, (0, 3, 1, 2)).reshape(pooled.shape[0], -1)
        head = Classifier(name="classifier")(flat)
        for name, value in {**stages, "avgpool": pooled, **head}.items():
            self.sow("intermediates", name, value)
        return head["fc8"]


def _layers() -> list[tuple[Entry, tuple[int, ...]]]:
    """Every layer with weights: its torchvision import entry and its Flax kernel shape."""
    rows, cin = [], 3
    for block, widths in enumerate(BLOCKS, start=1):
        for conv, width in enumerate(widths, start=1):
            index = str(FEATURES_INDEX[f"conv{block}_{conv}"])
            rows.append(
                (Entry(f"features.{index}", ("features", index), "conv"), (3, 3, cin, width))
            )
            cin = width
    fan_ins = {"fc6": cin * AVGPOOL_SIZE[0] * AVGPOOL_SIZE[1], "fc7": HIDDEN, "fc8": HIDDEN}
    for name, index in CLASSIFIER_INDEX.items():
        width = N_CLASSES if name == "fc8" else HIDDEN
        entry = Entry(f"classifier.{index}", ("classifier", str(index)), "linear")
        rows.append((entry, (fan_ins[name], width)))
    return rows


def torchvision_table() -> list[Entry]:
    """The import table of torchvision's ``vgg16`` state dict (see :mod:`fvjax.models.weights`).

    >>> table = torchvision_table()
    >>> table[0], table[-1].torch_name, len(table)
    (Entry(torch_name='features.0', flax_path=('features', '0'), kind='conv'), 'classifier.6', 16)
    """
    return [entry for entry, _ in _layers()]


def param_shapes() -> dict:
    """:class:`VGG16`'s params tree as ``jax.ShapeDtypeStruct`` leaves: enough to list layers
    (``layer_shapes`` works on shapes) and to check an import, without 553 MB of weights.

    >>> param_shapes()["classifier"]["0"]["kernel"].shape
    (25088, 4096)
    """

    return params_tree(_layers(), shape_leaves())


def random_params(seed: int = 0) -> dict:
    """A params tree of :class:`VGG16`'s shapes drawn with numpy (no Flax init trace): He-normal
    kernels (LeCun-normal for fc8, which no ReLU follows) and small random biases.

    138,357,544 float32 numbers (553 MB), drawn as float32 directly: about 2 s on one core.
    """
    rng = np.random.default_rng(seed)

    def normal(shape: tuple[int, ...], std: float) -> np.ndarray:
        array = rng.standard_normal(shape, dtype=np.float32)
        array *= np.float32(std)
        return array

    def leaves(entry: Entry, shape: tuple[int, ...]) -> dict:
        gain = 1.0 if entry.torch_name == f"classifier.{CLASSIFIER_INDEX['fc8']}" else 2.0
        fan_in = int(np.prod(shape[:-1]))
        return {"kernel": normal(shape, np.sqrt(gain / fan_in)), "bias": normal(shape[-1:], 0.1)}

    return params_tree(_layers(), leaves)


def build(params: Any) -> Model:
    """The fvjax model of a Flax params tree (``random_params()``'s structure), taking pictures
    in ``[0, 1]`` (ImageNet normalization inside); :func:`vgg16` shows it in use."""
    params = jax.tree_util.tree_map(jnp.asarray, params)
    return from_linen(
        VGG16(),
        {"params": params},
        preprocess=normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
        remat_module=VGG16(remat=True),
        name="vgg16",
    )


#: ``zoo.load("vgg16", weights=path)``: ``path`` is a torchvision ``vgg16`` state dict
#: (``.safetensors``, ``.npz``, or ``.pth`` when torch is installed) or its converted weights, e.g.
#: saved once on a machine with torchvision by
#: ``safetensors.torch.save_file(torchvision.models.vgg16(weights="IMAGENET1K_V1").state_dict(),
#: path)``; checked against :func:`param_shapes`, so no random weights are drawn to load real ones.
#: Without ``weights``: ``random_params()``, random weights drawn with seed 0.
ARCHITECTURE = Architecture("vgg16", build, random_params, torchvision_table, param_shapes)
