"""``tiny``: a small random-init CNN, the fallback model for tests, demos and fast configs.

Three conv stages ``block1..block3`` (8, 16 and 32 channels, each a ``conv`` then ReLU; stages
2 and 3 halve the resolution) and a ``logits`` Dense over the spatial mean. Weights are He
normal draws from NumPy's generator with a fixed seed, so every process and platform sees the
same network; it has never been trained.

>>> module, variables, info = load_tiny()
>>> info["layers"]
('block1', 'block2', 'block3', 'logits')
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fvjax.models.adapters import Model, from_linen
from fvjax.models.zoo.architecture import Architecture

#: Channels of ``block1..block3`` and the number of logits.
WIDTHS = (8, 16, 32)
CLASSES = 10
SEED = 0


class Block(nn.Module):
    """``relu(conv(x))``; its output is the stage's post-ReLU activation."""

    features: int
    stride: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.Conv(self.features, (3, 3), strides=self.stride, name="conv")(x)
        return nn.relu(x)


class TinyNet(nn.Module):
    """Images ``(B, H, W, 3)`` in [0, 1] to ``(B, CLASSES)`` logits."""

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        x = images * 2.0 - 1.0  # [0, 1] -> [-1, 1]
        for i, width in enumerate(WIDTHS):
            x = Block(width, stride=1 if i == 0 else 2, name=f"block{i + 1}")(x)
        return nn.Dense(CLASSES, name="logits")(x.mean(axis=(1, 2)))


def load_tiny() -> tuple[nn.Module, Any, dict[str, Any]]:
    """``(module, variables, info)`` with weights drawn from the fixed seed ``SEED``.

    >>> module, variables, _ = load_tiny()
    >>> module.apply(variables, jnp.zeros((1, 16, 16, 3))).shape
    (1, 10)
    """
    module = TinyNet()
    # Shapes only: flax's own init would compile a random-number program per weight shape
    # (seconds each on CPU); NumPy draws them in microseconds, identically everywhere.
    shapes = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    rng = np.random.default_rng(SEED)

    def draw(path: Any, leaf: jax.ShapeDtypeStruct) -> jax.Array:
        if jax.tree_util.keystr(path[-1:]) == "['bias']":
            return jnp.zeros(leaf.shape, leaf.dtype)
        fan_in = int(np.prod(leaf.shape[:-1]))
        weights = rng.normal(0.0, np.sqrt(2.0 / fan_in), leaf.shape)
        return jnp.asarray(weights, leaf.dtype)

    variables = jax.tree_util.tree_map_with_path(draw, shapes)
    info = {"layers": ("block1", "block2", "block3", "logits"), "trained": False, "seed": SEED}
    return module, variables, info


def build(variables: Any) -> Model:
    """The fvjax model of a :class:`TinyNet` variables tree (``load_tiny()``'s structure)."""
    return from_linen(TinyNet(), variables, name="tiny")


ARCHITECTURE = Architecture("tiny", build, lambda: load_tiny()[1])
