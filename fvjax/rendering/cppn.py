"""CPPN pictures (Mordvintsev et al. 2018, "Differentiable image parameterizations"): each
picture is a small network from a pixel's position to its colour, and the network's weights
are what is optimized.

A picture (:class:`Cppn`) is ``depth`` layers of ``width`` channels applied to each pixel's
coordinates ``(x, y)`` (a 1x1 convolution is a per-pixel matmul), each followed by Lucid's
composite activation ``[atan(z) / 0.67, atan(z)**2 / 0.6]`` (both halves of RMS about 1 for
``z ~ N(0, 1)``, so a deep stack neither fades nor saturates), then an output layer and a
sigmoid to RGB. ``raw`` is a tuple of ``(kernel, bias)`` pairs, one per layer: a pytree, so
every picture of a batch has **its own network** (the engine vmaps ``to_image`` and the optax
update), where Lucid's ``cppn`` shares one network across its batch. A whole layer of units is
one program, as everywhere in fvjax. The inputs are ``x`` and ``y`` only, as Lucid's: a
third input, the radius (Lucent's), measured no better on worldnet's ``block3/conv`` (mean
final activation 19.3 against 17.9 over 4 units x 2 seeds at 256 steps, where one unit's two
seeds differ up to 2x).

The weights do not depend on the size: the same ``raw`` renders at any resolution (the
coordinates are pixel centres over a fixed square, :func:`coordinates`). There is no
``from_image``: a network is not found from a picture in closed form, so ``render(...,
starts=...)`` refuses a CPPN.

>>> p = cppn(width=8, depth=2)
>>> raw = p.init(jax.random.key(0), (16, 16))
>>> p.to_image(raw, (16, 16)).shape, p.to_image(raw, (40, 24)).shape
((16, 16, 3), (40, 24, 3))
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from fvjax.errors import ArgumentError
from fvjax.rendering import param as param_lib

Array = jax.Array

#: RMS of ``atan(z)`` and of ``atan(z) ** 2`` for ``z ~ N(0, 1)`` (Lucid's coefficients):
#: the composite activation divides by them, so each half has RMS about 1.
COMPOSITE_RMS = (0.67, 0.6)

#: The coordinates run over ``[-EXTENT, EXTENT]`` on the longer side: ``sqrt(3)`` gives a
#: uniform coordinate standard deviation 1, the scale the first layer's weights expect.
EXTENT = math.sqrt(3.0)

#: Standard deviation of the hidden biases' first draw (Lucid's).
BIAS_STD = 0.1

#: The output layer's first draw gives each pre-sigmoid value about this standard deviation
#: (a faint pattern, pixels within a few hundredths of grey): see :meth:`Cppn.init`.
OUTPUT_STD = 0.1


def coordinates(size: tuple[int, int]) -> np.ndarray:
    """``(H, W, 2)`` each pixel centre's ``(x, y)``: the longer side spans ``[-EXTENT,
    EXTENT]`` and both axes have the same pixel pitch, so a picture's shape does not stretch
    it, and ``3 n`` pixels hold the centres of ``n`` (the same network, sampled finer).

    >>> c = coordinates((2, 4))
    >>> np.round(c[0, :, 0] / EXTENT, 2).tolist(), np.round(c[:, 0, 1] / EXTENT, 2).tolist()
    ([-0.75, -0.25, 0.25, 0.75], [-0.25, 0.25])
    """
    height, width = size
    pitch = 2.0 * EXTENT / max(height, width)
    y = (np.arange(height) - (height - 1) / 2.0) * pitch
    x = (np.arange(width) - (width - 1) / 2.0) * pitch
    return np.stack(np.meshgrid(x, y, indexing="xy"), axis=-1).astype(np.float32)


def composite(z: Array) -> Array:
    """Lucid's composite activation: ``(..., C) -> (..., 2 C)``, ``atan(z) / 0.67`` then
    ``atan(z) ** 2 / 0.6``.

    >>> composite(jnp.zeros((5, 4))).shape
    (5, 8)
    """
    a = jnp.arctan(z)
    return jnp.concatenate([a / COMPOSITE_RMS[0], a * a / COMPOSITE_RMS[1]], axis=-1)


@dataclasses.dataclass(frozen=True)
class Cppn:
    """A network per picture: ``depth`` hidden layers of ``width`` channels with the
    composite activation, then an output layer and a sigmoid. The weights are stored divided
    by ``scale`` (``raw = weights / scale``), so Adam's steps on ``raw`` are ``scale`` times
    smaller on the weights: the default ``adam(0.05)`` moves them as ``adam(0.002)`` would
    (see :func:`cppn` for the measurement)."""

    width: int = 24
    depth: int = 8
    scale: float = 0.04

    def __post_init__(self) -> None:
        for name in ("width", "depth"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ArgumentError(f"{name} must be an integer >= 1, got {value!r}")
        scale = self.scale
        if (
            isinstance(scale, bool)
            or not isinstance(scale, int | float)
            or not 0 < scale < math.inf
        ):
            raise ArgumentError(f"scale must be a finite number > 0, got {scale!r}")

    def _shapes(self) -> list[tuple[int, int]]:
        """``(fan_in, fan_out)`` of each layer, the output layer last."""
        hidden = [(2 if i == 0 else 2 * self.width, self.width) for i in range(self.depth)]
        return [*hidden, (2 * self.width, 3)]

    def init(self, key: Array, size: tuple[int, int]) -> tuple[tuple[Array, Array], ...]:
        """``depth + 1`` pairs ``(kernel (fan_in, fan_out), bias (fan_out,))``, whatever the
        ``size``, divided by ``scale``. Hidden layers as Lucid's: kernels ``N(0, 1 / fan_in)``,
        biases ``N(0, BIAS_STD)``. The output layer is not: its kernel is
        ``N(0, OUTPUT_STD**2 / fan_in)`` and its bias zero, a faint pattern around grey, where
        Lucid starts every picture as one flat colour (zero kernel, random bias). On the
        planted colour units (:func:`fvjax.models.zoo.planted.colour_opponent`, 6 units x 8
        seeds, 16 px, no transforms, 64 steps) a flat start left 31 of 48 pictures on the dead
        side of their ReLU, never to move; this start 3 of 48, and with ``redirect_relu=16``
        all 48 reached their analytic optimum (to 3 decimals)."""
        shapes = self._shapes()
        keys = jax.random.split(key, 2 * len(shapes))
        layers = []
        for i, (fan_in, fan_out) in enumerate(shapes):
            output = i == len(shapes) - 1
            std = (OUTPUT_STD if output else 1.0) / math.sqrt(fan_in)
            kernel = param_lib.normal(keys[2 * i], (fan_in, fan_out), std / self.scale)
            bias_std = 0.0 if output else BIAS_STD / self.scale
            layers.append((kernel, param_lib.normal(keys[2 * i + 1], (fan_out,), bias_std)))
        return tuple(layers)

    def to_image(self, raw: tuple[tuple[Array, Array], ...], size: tuple[int, int]) -> Array:
        """``(H, W, 3)`` in [0, 1]: the network at each pixel's :func:`coordinates`."""
        x = jnp.asarray(coordinates(size)).reshape(-1, 2)
        for kernel, bias in raw[:-1]:
            x = composite(self.scale * (x @ kernel + bias))
        kernel, bias = raw[-1]
        return jax.nn.sigmoid(self.scale * (x @ kernel + bias)).reshape(*size, 3)


def cppn(width: int = 24, depth: int = 8, scale: float = 0.04) -> Cppn:
    """CPPN parameterization: ``depth`` layers of ``width`` channels (Lucid's 8 of 24).

    Lucid optimizes its CPPNs with Adam at 0.005, a tenth of fvjax's default rate; ``scale``
    builds a smaller rate in. Measured on worldnet's ``block3/conv`` (units 1, 5, 8, 9, 2
    seeds, 64 px, ``standard(0.5)``, 512 steps, ``scale=1``), the mean final activation per
    Adam rate: 0.0005: 21.5, 0.001: 25.4, 0.002: 26.5, 0.005: 17.3, 0.01: 6.1, 0.02: -0.7,
    0.05: -6.6 (the default Fourier picture: 46.0). Hence ``scale=0.04``: ``adam(0.05)`` on
    it takes the steps of ``adam(0.002)`` on the weights (29.0 there: float rounding parts
    the two runs over 512 steps). With another optimizer, tune ``scale`` or the rate (plain
    SGD's steps shrink with ``scale**2``).

    >>> cppn() == cppn(24, 8)
    True
    >>> [kernel.shape for kernel, bias in cppn(width=4, depth=2).init(jax.random.key(0), (8, 8))]
    [(2, 4), (8, 4), (8, 3)]
    """
    return Cppn(width=width, depth=depth, scale=scale)
