"""Transparent pictures: an alpha channel, random backgrounds and a price on opacity
(Mordvintsev et al. 2018, "Differentiable Image Parameterizations"; Lucid's
``param.image(alpha=True)`` and its transparency notebook).

A picture is RGBA (:func:`param`): any parameterization's RGB plus an opacity map of its own.
During the optimization it is composited over a **new random background for every picture at
every step** (:func:`background`, a transform drawing from the key the engine gives each
picture and step), so a pixel helps the unit only where it is opaque, and it pays for that
in the objective through :func:`priced` (``v - w * |v| * mean alpha``, a fraction of the
unit's own value ``v``; Lucid's ``v * (1 - mean alpha)`` at ``w = 1`` for ``v > 0``) or the
absolute :func:`opacity` (``channel(...) - w * opacity()``): what stays opaque is what the
unit needs. The model only ever sees RGB: the render's final values, and
``fvjax check``'s reading of saved pictures, composite over mid-grey (:data:`GREY`) with
:func:`over_background`, the one compositing function.

>>> p = param()
>>> raw = p.init(jax.random.key(0), (16, 16))
>>> p.to_image(raw, (16, 16)).shape
(16, 16, 4)
>>> objective = priced(objectives.channel("block3/conv", range(8)), 0.5)
>>> objective.batch_size, objective.label
(8, 'priced(channel:block3/conv,opacity:input)')
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fvjax.errors import ArgumentError
from fvjax.models.adapters import INPUT, layer_shape
from fvjax.rendering import objectives
from fvjax.rendering import param as param_lib

Array = jax.Array

#: The background of a picture outside the optimization: the render's final values and the
#: checks composite over this mid-grey (the grey the transforms pad with).
GREY = 0.5


def over_background(images: Any, background: Any = GREY) -> Any:
    """RGBA ``images (..., 4)`` composited over ``background`` (a grey level, or RGB
    pictures broadcastable to ``(..., 3)``): ``alpha * rgb + (1 - alpha) * background``.
    RGB ``images (..., 3)`` come back as they are. NumPy in, NumPy out; JAX in, JAX out.

    >>> over_background(np.array([[1.0, 0.0, 0.0, 0.25]])).tolist()
    [[0.625, 0.375, 0.375]]
    """
    channels = np.shape(images)[-1]
    if channels == 3:
        return images
    if channels != 4:
        raise ArgumentError(f"pictures must be RGB or RGBA, got {channels} channels")
    rgb, alpha = images[..., :3], images[..., 3:]
    return alpha * rgb + (1.0 - alpha) * background


@dataclasses.dataclass(frozen=True)
class Alpha:
    """``base``'s RGB picture and an opacity map: ``(H, W, 4)`` RGBA in [0, 1].

    The opacity is Lucid's: one more Fourier channel (spectrum scaled by ``1/f ** decay``,
    as :class:`~fvjax.rendering.param.Fourier` does) through a sigmoid, so masks are smooth
    and a start of ``init_std`` noise is half opaque everywhere. ``raw`` is ``(base raw,
    (2, H, W // 2 + 1) alpha spectrum)``.
    """

    base: Any
    decay: float = 1.0
    init_std: float = 0.01

    def __post_init__(self) -> None:
        if isinstance(self.base, Alpha):
            raise ArgumentError("alpha.param() takes an RGB parameterization, not another alpha")
        for method in ("init", "to_image"):
            if not callable(getattr(self.base, method, None)):
                raise ArgumentError(
                    f"alpha.param(base) needs a parameterization with init and to_image, "
                    f"got {type(self.base).__name__}"
                )
        if isinstance(self.decay, bool) or not isinstance(self.decay, int | float):
            raise ArgumentError(f"decay must be a number, got {self.decay!r}")

    def init(self, key: Array, size: tuple[int, int]) -> tuple[Any, Array]:
        """``(base raw, alpha spectrum)``, each from its own half of ``key``."""
        k_base, k_alpha = jax.random.split(key)
        height, width = size
        spectrum = param_lib.normal(k_alpha, (2, height, width // 2 + 1), self.init_std)
        return self.base.init(k_base, size), spectrum

    def opacity_map(self, spectrum: Array, size: tuple[int, int]) -> Array:
        """``(H, W)`` alpha in [0, 1] of the raw alpha ``spectrum``."""
        logits = param_lib.spectrum_signal(spectrum, size, self.decay)
        return jax.nn.sigmoid(logits / 4.0)  # /4: the colour channels' scale (Fourier)

    def to_image(self, raw: tuple[Any, Array], size: tuple[int, int]) -> Array:
        """``(H, W, 4)``: the base's RGB, then the alpha."""
        rgb = self.base.to_image(raw[0], size)
        return jnp.concatenate([rgb, self.opacity_map(raw[1], size)[..., None]], axis=-1)

    @property
    def from_image(self) -> Any:
        """The inverse of ``to_image`` when the base has one (else ``None``, which
        :func:`~fvjax.rendering.param.check_invertible` refuses): ``(image, size) -> raw``
        for an RGB start ``(H, W, 3)``, opaque (alpha ``1 - EDGE``), or an RGBA one."""
        if not callable(getattr(self.base, "from_image", None)):
            return None
        return self._from_image

    def _from_image(self, image: Array, size: tuple[int, int]) -> tuple[Any, Array]:
        alpha = image[..., 3] if image.shape[-1] == 4 else jnp.ones(size, jnp.float32)
        edge = param_lib.EDGE
        clipped = jnp.clip(alpha, edge, 1.0 - edge)
        logits = (jnp.log(clipped) - jnp.log1p(-clipped)) * 4.0
        raw_alpha = param_lib.signal_spectrum(logits, size, self.decay)
        return self.base.from_image(image[..., :3], size), raw_alpha


def param(base: Any = None, decay: float = 1.0, init_std: float = 0.01) -> Alpha:
    """RGBA pictures: ``base``'s RGB (default ``param.fourier()``) and an opacity map.

    >>> param() == param(param_lib.fourier())
    True
    >>> raw = param(param_lib.pixel()).init(jax.random.key(0), (8, 6))
    >>> raw[0].shape, raw[1].shape
    ((8, 6, 3), (2, 8, 4))
    """
    base = base if base is not None else param_lib.fourier()
    return Alpha(base=base, decay=decay, init_std=init_std)


@dataclasses.dataclass(frozen=True)
class RandomBackground:
    """Composite an RGBA picture over a background drawn from the key: smooth coloured
    noise, a Fourier picture whose spectrum falls as ``1/f ** decay`` with normal
    coefficients of ``std``, in the decorrelated colours, through a sigmoid. Lucid's
    transparency notebook draws the same (``image_sample(sd=0.2, decay_power=1.5)``): a
    random overall colour with soft blobs, unlike anything a unit could want kept."""

    decay: float = 1.5
    std: float = 0.2

    def __call__(self, key: Array, image: Array) -> Array:
        if image.shape[-1] != 4:
            raise ArgumentError(
                f"alpha.background() composites RGBA pictures (alpha.param()), got "
                f"{image.shape[-1]} channels"
            )
        size = image.shape[:2]
        noise = param_lib.Fourier(decorrelate=True, decay=self.decay, init_std=self.std)
        return over_background(image, noise.to_image(noise.init(key, size), size))


def background(decay: float = 1.5, std: float = 0.2) -> RandomBackground:
    """The transform that composites each RGBA picture over its own random background at
    every step; put it first: ``compose(background(), standard())``.

    >>> out = background()(jax.random.key(0), jnp.ones((8, 8, 4)))  # opaque: unchanged
    >>> out.shape, float(out.min())
    ((8, 8, 3), 1.0)
    """
    for name, value in (("decay", decay), ("std", std)):
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ArgumentError(f"background {name} must be a number >= 0, got {value!r}")
    return RandomBackground(decay=float(decay), std=float(std))


@objectives.objective_class
class Opacity(objectives.Objective):
    """Mean alpha of the picture (layer ``"input"``, RGBA): subtract it to push towards
    transparency."""

    layer: str = INPUT
    _static = ("layer",)

    def __call__(self, activations: Mapping[str, Array]) -> Array:
        return activations[self.layer][..., 3].mean()

    def validate(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        channels = layer_shape(shapes, self.layer)[-1]
        if channels != 4:
            raise ArgumentError(
                f"opacity() reads the picture's alpha channel, but the pictures have {channels} "
                "channels: render with param=alpha.param(...)"
            )


def opacity() -> Opacity:
    """The picture's mean alpha, in [0, 1]: ``objective - w * opacity()`` makes each unit
    of mean opacity cost ``w`` of the objective, an absolute price (:func:`priced` makes it
    relative to each unit's own value).

    >>> float(opacity()({"input": jnp.full((2, 2, 4), 0.25)}))
    0.25
    """
    return Opacity()


@objectives.objective_class
class Priced(objectives.Objective):
    """``v - weight * |v| * mean alpha``, ``v`` the inner ``objective``'s value: opacity
    costs each unit a fraction of its own value. ``weight`` is a leaf (a new weight does not
    retrace); everything else is the inner objective's."""

    objective: objectives.Objective
    weight: Array

    def __call__(self, activations: Mapping[str, Array]) -> Array:
        value = self.objective(activations)
        return value - self.weight * jnp.abs(value) * Opacity()(activations)

    @property
    def batch_size(self) -> int | None:
        return self.objective.batch_size

    def vmap_axes(self) -> objectives.Objective:
        return Priced(objective=self.objective.vmap_axes(), weight=None)

    def take(self, index: Any) -> objectives.Objective:
        return Priced(objective=self.objective.take(index), weight=self.weight)

    @property
    def layers(self) -> frozenset[str]:
        return self.objective.layers | {INPUT}

    @property
    def label(self) -> str:
        return f"priced({self.objective.label},opacity:{INPUT})"

    @property
    def layer(self) -> str:
        return self.objective.layer

    def unit_ids(self) -> np.ndarray:
        return self.objective.unit_ids()

    def validate(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        self.objective.validate(shapes)
        Opacity().validate(shapes)


def priced(objective: objectives.Objective, weight: float = 1.0) -> Priced:
    """``objective`` with a price on opacity relative to its own value ``v``:
    ``v - weight * |v| * mean alpha``. For ``v > 0`` that is Lucid's ``v * (1 - weight *
    mean alpha)`` (``weight = 1``: Lucid's), so a fully opaque picture costs each unit
    ``weight`` of its own activation, a weak unit no more than a strong one; for ``v < 0``
    opacity still costs.

    >>> objective = priced(objectives.channel("block3/conv", range(8)), 0.5)
    >>> objective.batch_size, sorted(objective.layers)
    (8, ['block3/conv', 'input'])
    >>> a = {"input": jnp.full((2, 2, 4), 0.5), "x": jnp.full((1, 1, 2), -4.0)}
    >>> float(priced(objectives.channel("x", [1]).take(0), 0.5)(a))
    -5.0
    """
    if not isinstance(objective, objectives.Objective):
        raise ArgumentError(f"alpha.priced() takes an objective, got {type(objective).__name__}")
    if isinstance(weight, bool) or not isinstance(weight, int | float | np.number) or weight < 0:
        raise ArgumentError(f"alpha.priced() weight must be a number >= 0, got {weight!r}")
    return Priced(objective=objective, weight=jnp.asarray(weight, jnp.float32))
