"""Image parameterizations: pure ``(init, to_image)`` pairs.

``init(key, size) -> raw`` draws the optimized variables of one image and
``to_image(raw, size) -> (H, W, 3)`` maps them to RGB in [0, 1]; ``size`` is ``(H, W)``.
Anything with those two methods is a parameterization (:class:`Parameterization` wraps two
plain functions). The built-ins are frozen dataclasses, equal when their settings are equal,
so a jitted program keyed on them compiles once per setting.

>>> p = fourier(decorrelate=True)
>>> raw = p.init(jax.random.key(0), (32, 32))
>>> p.to_image(raw, (32, 32)).shape
(32, 32, 3)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fvjax.errors import ArgumentError

Array = jax.Array

#: Square root of the colour correlation of natural images (ImageNet statistics), used to
#: optimize in a decorrelated colour space as Olah et al. 2017 describe.
COLOR_CORRELATION_SQRT = np.array(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], np.float32
)
_COLOR_MIX = COLOR_CORRELATION_SQRT / np.max(np.linalg.norm(COLOR_CORRELATION_SQRT, axis=0))
#: ``rgb @ COLOR_UNMIX`` undoes the colour mix: decorrelated values from RGB ones.
COLOR_UNMIX = np.linalg.inv(_COLOR_MIX).T.astype(np.float32)


def normal(key: Array, shape: tuple[int, ...], std: float = 1.0) -> Array:
    """Normal noise of ``shape``, drawn flat and reshaped: on XLA's CPU backend this compiles
    5-20x faster than drawing a 4-D shape directly (measured 0.3 s against 5.6 s)."""
    return std * jax.random.normal(key, (math.prod(shape),), jnp.float32).reshape(shape)


class Parameterization(NamedTuple):
    """A custom parameterization from two functions.

    >>> p = Parameterization(
    ...     init=lambda key, size: jnp.zeros((*size, 3)),
    ...     to_image=lambda raw, size: jax.nn.sigmoid(raw),
    ... )
    >>> float(p.to_image(p.init(None, (2, 2)), (2, 2)).mean())
    0.5
    """

    init: Callable[[Array, tuple[int, int]], Any]
    to_image: Callable[[Any, tuple[int, int]], Array]


@jax.custom_vjp
def clip_inward(x: Array) -> Array:
    """``clip(x, 0, 1)`` whose gradient passes inside [0, 1], and outside only where a
    gradient-descent step moves the value back towards [0, 1].

    A plain clip passes no gradient outside, so a pixel pushed past a bound could never come
    back; a straight-through gradient passes all of it, and then keeps pushing pixels that
    are already saturated further out. In the Fourier basis, where every coefficient moves
    every pixel, those wasted pushes took over: on the planted oriented filters (8 neurons x 2
    seeds, 24 px, adam(0.05), 256 steps, 2-core CPU) straight-through left 11 of 16 neurons at
    0 and none above 0.21 of its analytic optimum; with this gradient every live neuron
    reaches 1.0 of it (all 16 with ``redirect_relu=16``).

    The gradient is a *loss's*, as the engine minimizes ``-objective``: outside the range a
    step ``-lr * g`` must point back in for ``g`` to pass.

    >>> loss = lambda x: -(clip_inward(x) * jnp.array([1.0, -1.0, 1.0])).sum()
    >>> jax.grad(loss)(jnp.array([1.5, 1.5, 0.5])).tolist()  # pixel 0 wants to rise: no use
    [0.0, 1.0, -1.0]
    """
    return jnp.clip(x, 0.0, 1.0)


def _clip_inward_forward(x: Array) -> tuple[Array, Array]:
    return jnp.clip(x, 0.0, 1.0), x


def _clip_inward_backward(x: Array, g: Array) -> tuple[Array]:
    # A descent step moves x by -g: keep g inside, and outside where -g points back in.
    inward = ((x > 1.0) & (g > 0)) | ((x < 0.0) & (g < 0))
    return (jnp.where(((x >= 0.0) & (x <= 1.0)) | inward, g, 0.0),)


clip_inward.defvjp(_clip_inward_forward, _clip_inward_backward)


def to_rgb(x: Array, decorrelate: bool, output: str) -> Array:
    """Map unconstrained ``(..., 3)`` values to RGB in [0, 1]."""
    if decorrelate:
        x = x @ jnp.asarray(_COLOR_MIX).T
    if output == "sigmoid":
        return jax.nn.sigmoid(x)
    return clip_inward(x + 0.5)


def from_rgb(image: Array, decorrelate: bool, output: str) -> Array:
    """The inverse of :func:`to_rgb`: unconstrained ``(..., 3)`` values whose pixels are
    ``image``, kept ``EDGE`` inside (0, 1) where a sigmoid would need infinities."""
    if output == "sigmoid":
        clipped = jnp.clip(image, EDGE, 1.0 - EDGE)
        x = jnp.log(clipped) - jnp.log1p(-clipped)
    else:
        x = image - 0.5
    if decorrelate:
        x = x @ jnp.asarray(COLOR_UNMIX)
    return x


#: How raw values become pixels in [0, 1]: a sigmoid, or a clip (:func:`clip_inward`).
OUTPUTS = ("sigmoid", "clip")

#: How far inside (0, 1) a start image's pixels are moved for a sigmoid output: a pixel at 0.01
#: keeps 0.01 of the sigmoid's steepest slope, so it can still move.
EDGE = 0.01


def _check_output(output: str) -> None:
    if output not in OUTPUTS:
        raise ArgumentError(f"output must be 'sigmoid' or 'clip', got {output!r}")


@dataclasses.dataclass(frozen=True)
class Pixel:
    """One free variable per pixel and colour channel."""

    decorrelate: bool = False
    output: str = "sigmoid"
    init_std: float = 0.01

    def __post_init__(self) -> None:
        _check_output(self.output)

    def init(self, key: Array, size: tuple[int, int]) -> Array:
        """``(H, W, 3)`` small normal noise (a grey picture)."""
        return normal(key, (*size, 3), self.init_std)

    def to_image(self, raw: Array, size: tuple[int, int]) -> Array:
        """``(H, W, 3)`` in [0, 1]."""
        return to_rgb(raw, self.decorrelate, self.output)

    def from_image(self, image: Array, size: tuple[int, int]) -> Array:
        """The ``raw`` whose picture is ``image (H, W, 3)`` (pixels within ``EDGE`` of 0 or 1
        moved inside with a sigmoid output)."""
        return from_rgb(image, self.decorrelate, self.output)


def spectrum_scale(size: tuple[int, int], decay: float) -> np.ndarray:
    """``(H, W // 2 + 1)`` amplitude ``1 / max(f, 1 / max(H, W)) ** decay`` of a 1/f spectrum."""
    height, width = size
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    freq = np.sqrt(fx**2 + fy**2)
    return (1.0 / np.maximum(freq, 1.0 / max(height, width)) ** decay).astype(np.float32)


def spectrum_signal(raw: Array, size: tuple[int, int], decay: float) -> Array:
    """``(..., H, W)``: the signal whose half spectrum is ``raw (2, ..., H, W // 2 + 1)`` (real
    and imaginary parts) scaled by :func:`spectrum_scale`, what every Fourier picture is.
    ``norm="ortho"`` keeps the pixel scale independent of the image size.

    >>> spectrum_signal(jnp.zeros((2, 3, 8, 5)), (8, 8), 1.0).shape
    (3, 8, 8)
    """
    scale = jnp.asarray(spectrum_scale(size, decay))
    return jnp.fft.irfft2(jax.lax.complex(raw[0] * scale, raw[1] * scale), s=size, norm="ortho")


def signal_spectrum(signal: Array, size: tuple[int, int], decay: float) -> Array:
    """The inverse of :func:`spectrum_signal`: ``irfft2`` inverts ``rfft2`` on real input, and
    the 1/f scale is never 0.

    >>> x = jnp.arange(64.0).reshape(8, 8)
    >>> bool(jnp.allclose(spectrum_signal(signal_spectrum(x, (8, 8), 1.0), (8, 8), 1.0), x))
    True
    """
    spectrum = jnp.fft.rfft2(signal, s=size, norm="ortho")
    scale = jnp.asarray(spectrum_scale(size, decay))
    return jnp.stack([spectrum.real / scale, spectrum.imag / scale]).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class Fourier:
    """Variables are the image's 2D spectrum, scaled by ``1/f ** decay`` so that every
    frequency learns at a natural-image rate; optional colour decorrelation.
    """

    decorrelate: bool = True
    decay: float = 1.0
    output: str = "sigmoid"
    init_std: float = 0.01

    def __post_init__(self) -> None:
        _check_output(self.output)

    def init(self, key: Array, size: tuple[int, int]) -> Array:
        """``(2, 3, H, W // 2 + 1)``: real and imaginary parts per colour channel."""
        height, width = size
        return normal(key, (2, 3, height, width // 2 + 1), self.init_std)

    def to_image(self, raw: Array, size: tuple[int, int]) -> Array:
        """``(H, W, 3)`` in [0, 1]."""
        image = spectrum_signal(raw, size, self.decay)  # (3, H, W)
        if self.decorrelate:  # to_rgb's colour mix, on whole planes before they turn
            # channel-last: 1.08x the steps/s of mixing each pixel's colour on our CPU.
            image = jnp.einsum("dc,chw->dhw", jnp.asarray(_COLOR_MIX), image)
        return to_rgb(jnp.moveaxis(image, 0, -1) / 4.0, False, self.output)

    def from_image(self, image: Array, size: tuple[int, int]) -> Array:
        """The ``raw`` whose picture is ``image (H, W, 3)`` (pixels within ``EDGE`` of 0 or 1
        moved inside with a sigmoid output): ``irfft2`` inverts ``rfft2`` on real input, and
        the 1/f scale is never 0."""
        x = jnp.moveaxis(from_rgb(image, self.decorrelate, self.output) * 4.0, -1, 0)
        return signal_spectrum(x, size, self.decay)


@dataclasses.dataclass(frozen=True)
class Laplacian:
    """Lucid's Laplacian pyramid: ``levels`` pixel grids, level ``k`` at ``1 / 2**k`` of the
    picture's size, each upsampled (bilinear) to full size and summed. A coarse level's
    variable moves a whole patch at once, so broad structure learns as fast as fine detail."""

    levels: int = 4
    decorrelate: bool = True
    output: str = "sigmoid"
    init_std: float = 0.01

    def __post_init__(self) -> None:
        _check_output(self.output)
        if isinstance(self.levels, bool) or not isinstance(self.levels, int) or self.levels < 1:
            raise ArgumentError(f"levels must be an integer >= 1, got {self.levels!r}")

    def _sizes(self, size: tuple[int, int]) -> list[tuple[int, int]]:
        return [(-(-size[0] // 2**k), -(-size[1] // 2**k)) for k in range(self.levels)]

    def init(self, key: Array, size: tuple[int, int]) -> tuple[Array, ...]:
        """``levels`` arrays ``(ceil(H / 2**k), ceil(W / 2**k), 3)``, finest first."""
        keys = jax.random.split(key, self.levels)
        return tuple(
            normal(k, (*s, 3), self.init_std) for k, s in zip(keys, self._sizes(size), strict=True)
        )

    def to_image(self, raw: tuple[Array, ...], size: tuple[int, int]) -> Array:
        """``(H, W, 3)`` in [0, 1]."""
        total = raw[0]
        for level in raw[1:]:
            total = total + jax.image.resize(level, (*size, 3), "linear")
        return to_rgb(total, self.decorrelate, self.output)

    def from_image(self, image: Array, size: tuple[int, int]) -> tuple[Array, ...]:
        """The ``raw`` whose picture is ``image``: all of it in the finest level."""
        zeros = tuple(jnp.zeros((*s, 3), jnp.float32) for s in self._sizes(size)[1:])
        return (from_rgb(image, self.decorrelate, self.output), *zeros)


def laplacian(
    levels: int = 4, decorrelate: bool = True, output: str = "sigmoid", init_std: float = 0.01
) -> Laplacian:
    """Laplacian-pyramid parameterization (Lucid's ``laplacian_pyramid``).

    >>> raw = laplacian(levels=3).init(jax.random.key(0), (8, 6))
    >>> [r.shape for r in raw]
    [(8, 6, 3), (4, 3, 3), (2, 2, 3)]
    """
    return Laplacian(levels=levels, decorrelate=decorrelate, output=output, init_std=init_std)


def from_image(param: Any, image: Array, size: tuple[int, int]) -> Any:
    """``param``'s raw variables for the picture ``image (H, W, 3)`` in [0, 1]: where a render
    given ``starts`` begins. Needs a ``from_image`` method, as the built-ins have.

    >>> p = fourier()
    >>> image = jnp.full((8, 8, 3), 0.25)
    >>> bool(jnp.allclose(p.to_image(from_image(p, image, (8, 8)), (8, 8)), image, atol=1e-5))
    True
    """
    check_invertible(param)
    return param.from_image(image, size)


def check_invertible(param: Any) -> None:
    """Raise unless ``param`` has ``from_image``, naming what is missing."""
    if not callable(getattr(param, "from_image", None)):
        raise ArgumentError(
            f"starts need a parameterization with a from_image(image, size) method, the "
            f"inverse of to_image; {type(param).__name__} has none (pixel() and fourier() do)"
        )


def pixel(decorrelate: bool = False, output: str = "sigmoid", init_std: float = 0.01) -> Pixel:
    """Pixel parameterization; ``output`` is ``"sigmoid"`` or ``"clip"``.

    >>> pixel().init(jax.random.key(0), (4, 4)).shape
    (4, 4, 3)
    """
    return Pixel(decorrelate=decorrelate, output=output, init_std=init_std)


def fourier(
    decorrelate: bool = True, decay: float = 1.0, output: str = "sigmoid", init_std: float = 0.01
) -> Fourier:
    """Fourier parameterization with 1/f spectrum scaling and colour decorrelation.

    >>> fourier() == fourier()
    True
    """
    return Fourier(decorrelate=decorrelate, decay=decay, output=output, init_std=init_std)
