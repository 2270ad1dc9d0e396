"""WorldNet: a small CNN trained on :mod:`fvjax.data.world` to say which concepts an image holds.

One logit per concept of ``fvjax.world.CONCEPTS`` (shapes, colours, textures, stripe
orientations, pattern scales), trained as independent sigmoids, so ``logits[:, i]`` is "is
``CONCEPTS[i]`` in the picture"; rendering the ``red`` logit should give red, ``orient_45``
diagonal stripes. The weights ship with fvjax (``worldnet.npz``) beside the record of how they
were made (``worldnet.json``); ``scripts/train_worldnet.py`` reproduces both, bit for bit, in
about 6.5 minutes on two CPU cores. On 2000 held-out images: 98.3% mean per-concept accuracy,
97.6% balanced, 71.8% of images with all 25 concepts right.

Layers, as ``capture_intermediates`` names them, with their shapes for a 64x64 input::

    block1/conv  (32, 32, 16)   3x3 conv, stride 2   (block1: after ReLU, same shape)
    block2/conv  (16, 16, 32)   2x2 max pool, 3x3 conv
    block3/conv  (8, 8, 64)     2x2 max pool, 3x3 conv
    block4/conv  (8, 8, 128)    3x3 conv
    logits       (25,)          global average pool, dense

``__call__`` takes NHWC RGB images in [0, 1] and normalises them itself
(``(images - WORLDNET_MEAN) / WORLDNET_STD``), so callers always pass plain pictures.

>>> module, variables, info = load_worldnet()
>>> module.apply(variables, jnp.zeros((2, 64, 64, 3))).shape
(2, 25)
>>> info["concepts"][:3]
['disk', 'square', 'triangle']
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fvjax.data import world as world_lib
from fvjax.models.adapters import Model, from_linen
from fvjax.models.layers import max_pool
from fvjax.models.zoo.architecture import Architecture

#: Per-channel mean and standard deviation used inside the model: about the world's pixel
#: statistics (mean 0.50, std 0.18), rounded.
WORLDNET_MEAN = (0.5, 0.5, 0.5)
WORLDNET_STD = (0.2, 0.2, 0.2)
#: The image size WorldNet was trained at; other sizes work (the head pools globally).
WORLDNET_SIZE = 64

WEIGHTS_PATH = Path(__file__).with_name("worldnet.npz")
INFO_PATH = Path(__file__).with_name("worldnet.json")


class ConvBlock(nn.Module):
    """A 3x3 convolution named ``conv`` and a ReLU: ``(B, H, W, C) -> (B, H/s, W/s, features)``."""

    features: int
    strides: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.relu(nn.Conv(self.features, (3, 3), strides=self.strides, name="conv")(x))


class WorldNet(nn.Module):
    """Concept logits ``(B, n_concepts)`` for images ``(B, H, W, 3)`` RGB in [0, 1].

    >>> module = WorldNet()
    >>> variables = module.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    >>> module.apply(variables, jnp.zeros((1, 64, 64, 3))).shape
    (1, 25)
    """

    features: Sequence[int] = (16, 32, 64, 128)
    n_concepts: int = len(world_lib.CONCEPTS)

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        f1, f2, f3, f4 = self.features
        mean, std = (jnp.asarray(v, images.dtype) for v in (WORLDNET_MEAN, WORLDNET_STD))
        x = (images - mean) / std
        # A strided first conv halves the cost of the widest activations; the 3x3 window
        # still sees every pixel, so fine stripes are not aliased away.
        x = ConvBlock(f1, strides=2, name="block1")(x)
        x = ConvBlock(f2, name="block2")(_max_pool(x))
        x = ConvBlock(f3, name="block3")(_max_pool(x))
        x = ConvBlock(f4, name="block4")(x)
        return nn.Dense(self.n_concepts, name="logits")(x.mean(axis=(1, 2)))


def _max_pool(x: jax.Array) -> jax.Array:
    return max_pool(x, (2, 2), (2, 2))


def flatten_variables(variables: Any) -> dict[str, np.ndarray]:
    """``{"params/block1/conv/kernel": array, ...}``: a variables tree as flat npz entries.

    >>> flatten_variables({"params": {"logits": {"bias": np.zeros(2)}}})
    {'params/logits/bias': array([0., 0.])}
    """
    flat = jax.tree_util.tree_flatten_with_path(variables)[0]
    return {"/".join(str(k.key) for k in path): np.asarray(leaf) for path, leaf in flat}


def unflatten_variables(flat: dict[str, np.ndarray]) -> dict[str, Any]:
    """The inverse of :func:`flatten_variables`, leaves as float32 ``jax.Array``.

    >>> unflatten_variables({"params/logits/bias": np.zeros(2)})["params"]["logits"]["bias"]
    Array([0., 0.], dtype=float32)
    """
    tree: dict[str, Any] = {}
    for name, value in flat.items():
        *parents, leaf = name.split("/")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = jnp.asarray(value, jnp.float32)
    return tree


def load_worldnet(
    weights: str | Path = WEIGHTS_PATH, info: str | Path = INFO_PATH
) -> tuple[WorldNet, dict[str, Any], dict[str, Any]]:
    """The shipped WorldNet: ``(module, variables, info)``.

    ``info`` is ``worldnet.json``: ``concepts`` (the logit order), the training config and
    seeds, held-out accuracies, sizes and library versions.

    >>> module, variables, info = load_worldnet()
    >>> info["concepts"] == list(world_lib.CONCEPTS)
    True
    """
    info_dict = json.loads(Path(info).read_text())
    with np.load(weights) as npz:
        variables = unflatten_variables(dict(npz))
    module = WorldNet(features=tuple(info_dict["model"]["features"]))
    return module, variables, info_dict


@functools.partial(jax.jit, static_argnums=0)  # modules are hashable dataclasses
def _probabilities(module: nn.Module, variables: Any, images: jax.Array) -> jax.Array:
    return jax.nn.sigmoid(module.apply(variables, images))


def predict(
    module: nn.Module, variables: Any, images: np.ndarray, batch_size: int = 256
) -> np.ndarray:
    """Concept probabilities ``(N, n_concepts)`` for images ``(N, H, W, 3)`` in [0, 1].

    >>> module, variables, _ = load_worldnet()
    >>> predict(module, variables, np.zeros((3, 64, 64, 3), np.float32)).shape
    (3, 25)
    """
    chunks = [
        np.asarray(_probabilities(module, variables, jnp.asarray(images[i : i + batch_size])))
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(chunks) if chunks else np.zeros((0, module.n_concepts), np.float32)


def accuracy_report(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """How well thresholded probabilities ``(N, C)`` match boolean labels ``(N, C)``.

    Returns ``mean_accuracy`` (per-concept accuracy, averaged), ``exact_match`` (fraction of
    images with every concept right), ``mean_balanced_accuracy`` (mean of the true-positive and
    true-negative rates, of those the labels define, averaged over concepts: not fooled by
    rare concepts),
    ``per_concept`` (``{concept: accuracy}``), ``per_group`` (``{group: mean accuracy}``) and
    ``n_images``.

    >>> report = accuracy_report(np.full((2, 25), 0.9), np.ones((2, 25), bool))
    >>> report["mean_accuracy"], report["exact_match"]
    (1.0, 1.0)
    """
    predicted = np.asarray(probabilities) >= 0.5
    labels = np.asarray(labels, bool)
    correct = predicted == labels
    per_concept = correct.mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):  # a concept may be never or always on
        true_positive_rate = (predicted & labels).sum(axis=0) / labels.sum(axis=0)
        true_negative_rate = (~predicted & ~labels).sum(axis=0) / (~labels).sum(axis=0)
    balanced = np.nanmean(np.stack([true_positive_rate, true_negative_rate]), axis=0)
    names = world_lib.CONCEPTS
    return {
        "n_images": int(len(labels)),
        "mean_accuracy": float(per_concept.mean()),
        "exact_match": float(correct.all(axis=1).mean()),
        "mean_balanced_accuracy": float(balanced.mean()),
        "per_group": {
            group: float(np.mean([per_concept[names.index(c)] for c in concepts]))
            for group, concepts in world_lib.CONCEPT_GROUPS.items()
        },
        "per_concept": {name: float(a) for name, a in zip(names, per_concept, strict=True)},
    }


@functools.cache
def _info() -> dict[str, Any]:
    return json.loads(INFO_PATH.read_text())


def build(variables: Any) -> Model:
    """The fvjax model of a :class:`WorldNet` variables tree (the shipped one by default); the
    logits (and ``output``) units are named by concept."""
    info = _info()
    module = WorldNet(features=tuple(info["model"]["features"]))
    concepts = tuple(info["concepts"])
    model = from_linen(module, variables, name="worldnet")
    return dataclasses.replace(model, unit_names={"logits": concepts, "output": concepts})


ARCHITECTURE = Architecture("worldnet", build, lambda: load_worldnet()[1])
