"""Planted networks: models whose preferred pictures are known by construction.

Each constructor returns a :class:`fvjax.models.Model` with its weights passed as ``params``
(never captured as constants), so the renderer can be checked against an answer known in
advance:

- :func:`linear_filter`: one random linear filter, layer ``"response"``; the best picture for
  its centre neuron is known in closed form (:func:`linear_optimum`).
- :func:`oriented_filters`: Gabor filters on luminance with a ReLU, layer ``"orientation"``;
  channel ``k`` prefers stripes at ``orientations[k]`` degrees (:func:`dominant_orientation`
  reads the orientation back from a picture).
- :func:`colour_opponent`: 1x1 colour-opponent units, layers ``"colour_pre"`` and ``"colour"``;
  unit ``k`` prefers the RGB direction ``COLOUR_DIRECTIONS[k]`` (:func:`colour_optimum`).
- :func:`planted_model`: the last two in one model.
- :func:`stripe_detectors`: oriented-stripe *detectors* for the world's textures, layer
  ``"stripes"``; channel ``k`` fires on stripes running at ``ORIENTATIONS[k]`` and little
  else (what Network Dissection must label ``orient_<k>``).

Orientation convention (the one :mod:`fvjax.data.world` uses): an angle in degrees is the
direction the *stripes run along* (not their gradient), counter-clockwise from the image's
horizontal axis as seen on screen (row 0 at the top). 0 means stripes running left-right
(``=``), 45 like ``/``, 90 top-bottom (``|``), 135 like ``\\``; angles are modulo 180.

>>> model = planted_model()
>>> model.layer_shapes(32)
{'colour': (32, 32, 6), 'colour_pre': (32, 32, 6), 'orientation': (20, 20, 4)}
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fvjax.errors import ImageSizeError
from fvjax.models import Model, as_size, from_fn

Array = jax.Array

LINEAR_LAYER = "response"
STRIPES_LAYER = "stripes"
ORIENTATION_LAYER = "orientation"
COLOUR_LAYER = "colour"
#: The colour units before their ReLU (an affine function of the pixel).
COLOUR_PRE_LAYER = "colour_pre"

#: Default orientations of :func:`oriented_filters`, in degrees (see the module docstring).
ORIENTATIONS = (0.0, 45.0, 90.0, 135.0)

#: Names of the colour units, in channel order.
COLOUR_UNITS = (
    "red_vs_green",
    "green_vs_red",
    "blue_vs_yellow",
    "yellow_vs_blue",
    "bright",
    "dark",
)
_OPPONENT = np.array(
    [[1, -1, 0], [-1, 1, 0], [-0.5, -0.5, 1], [0.5, 0.5, -1], [1, 1, 1], [-1, -1, -1]], np.float32
)
#: ``(6, 3)`` unit-norm preferred RGB direction of each colour unit: unit ``k`` computes
#: ``relu(COLOUR_DIRECTIONS[k] . (rgb - 0.5))``, so a grey pixel gives 0.
COLOUR_DIRECTIONS = _OPPONENT / np.linalg.norm(_OPPONENT, axis=1, keepdims=True)
COLOUR_DIRECTIONS.setflags(write=False)


def _as_key(key: int | Array) -> Array:
    return jax.random.key(int(key)) if isinstance(key, int | np.integer) else key


def _conv(images: Array, kernel: Array, padding: str) -> Array:
    """``(B, H, W, I) * (k, k, I, O) -> (B, H', W', O)``, a cross-correlation (no flip)."""
    return jax.lax.conv_general_dilated(
        images, kernel, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


# -- 1. a linear filter with a closed-form optimum ---------------------------------------------


def linear_filter(
    key: int | Array = 0, size: int = 5, *, bias: float = 0.1, padding: str = "VALID"
) -> Model:
    """One random linear ``size x size x 3`` filter plus a bias: layer ``"response"``
    ``(H', W', 1)`` (``H' = H - size + 1`` for ``"VALID"``, ``H`` for ``"SAME"``).

    The weights are standard normal (both signs). The response of any neuron is affine in
    the pixels of its receptive field, so over pictures in [0, 1] its best value is
    ``sum(max(w, 0)) + bias``, reached by the patch that is 1 where ``w > 0`` and 0 where
    ``w < 0``; pixels outside the receptive field do not matter. :func:`linear_optimum`
    gives that answer for the centre neuron (the one ``objectives.neuron`` picks by default).

    Params: ``{"kernel": (size, size, 3, 1), "bias": (1,)}``.

    >>> model = linear_filter(0, size=5)
    >>> model.layer_shapes(32)
    {'response': (28, 28, 1)}
    """
    if padding not in ("VALID", "SAME"):
        raise ValueError(f"padding must be 'VALID' or 'SAME', got {padding!r}")
    kernel = jax.random.normal(_as_key(key), (size, size, 3, 1), jnp.float32)
    params = {"kernel": kernel, "bias": jnp.full((1,), bias, jnp.float32)}

    def apply(params: Any, images: Array) -> dict[str, Array]:
        return {LINEAR_LAYER: _conv(images, params["kernel"], padding) + params["bias"]}

    return from_fn(apply, params=params, name=f"linear_filter_{size}x{size}")


class LinearOptimum(NamedTuple):
    """The analytic answer for the centre neuron of a :func:`linear_filter` model.

    Attributes:
        value: the best response over pictures in [0, 1]: ``sum(max(w, 0)) + bias``.
        minimum: the worst response: ``sum(min(w, 0)) + bias``.
        patch: ``(k, k, 3)`` the best patch: 1 where ``w > 0``, else 0.
        window: ``(rows, cols)`` slices of the receptive field in a picture of the given size.
        image: ``(H, W, 3)`` a best picture: ``patch`` inside ``window``, grey outside.

    >>> best = linear_optimum(linear_filter(0, size=3), 16)
    >>> bool(best.minimum < 0.1 < best.value), best.image.shape
    (True, (16, 16, 3))
    """

    value: float
    minimum: float
    patch: np.ndarray
    window: tuple[slice, slice]
    image: np.ndarray


def linear_optimum(model: Model, size: int | tuple[int, int]) -> LinearOptimum:
    """The best picture of ``size`` for the centre neuron of a :func:`linear_filter` model.

    >>> model = linear_filter(0, size=5)
    >>> best = linear_optimum(model, 32)
    >>> best.window, best.patch.shape
    ((slice(14, 19, None), slice(14, 19, None)), (5, 5, 3))
    >>> response = model.activations(best.image[None])["response"][0, 14, 14, 0]
    >>> bool(abs(float(response) - best.value) < 1e-4)
    True
    """
    kernel = np.asarray(model.params["kernel"], np.float32)[..., 0]
    bias = float(np.asarray(model.params["bias"])[0])
    k = kernel.shape[0]
    height, width = as_size(size)
    out_h, out_w, _ = model.check_layer(LINEAR_LAYER, (height, width))

    def start(n: int, out: int) -> int:
        # The centre neuron is at out // 2 (objectives.CENTRE); lax pads total // 2 before.
        return out // 2 - (out + k - 1 - n) // 2

    top, left = start(height, out_h), start(width, out_w)
    if top < 0 or left < 0 or top + k > height or left + k > width:
        raise ImageSizeError(
            f"the centre neuron's {k}x{k} receptive field does not fit in {height}x{width} "
            "pictures; use a larger size"
        )
    window = (slice(top, top + k), slice(left, left + k))
    patch = (kernel > 0).astype(np.float32)
    image = np.full((height, width, 3), 0.5, np.float32)
    image[window] = patch
    return LinearOptimum(
        value=float(np.maximum(kernel, 0).sum()) + bias,
        minimum=float(np.minimum(kernel, 0).sum()) + bias,
        patch=patch,
        window=window,
        image=image,
    )


# -- 2. oriented filters ---------------------------------------------------------------------


def gabor(
    angle: float, size: int, wavelength: float, sigma: float, phase: float = 0.0
) -> np.ndarray:
    """``(size, size)`` Gabor filter preferring stripes at ``angle`` degrees (module
    convention), zero mean (blind to flat pictures) and unit L2 norm.

    ``phase = 0`` is even: a bright stripe through the centre, flanked by dark ones.

    >>> g = gabor(90.0, 9, wavelength=4.0, sigma=2.0)
    >>> bool(g[4, 4] > 0 > g[4, 6]), bool((g[:, 4] > 0).all())  # a vertical bright stripe
    (True, True)
    """
    centre = (size - 1) / 2.0
    rows, cols = np.mgrid[:size, :size].astype(np.float64)
    x, y = cols - centre, centre - rows  # y points up, as angles are read on screen
    theta = math.radians(angle)
    across = -x * math.sin(theta) + y * math.cos(theta)  # along the stripes' normal
    envelope = np.exp(-(x**2 + y**2) / (2.0 * sigma**2))
    carrier = np.cos(2.0 * math.pi * across / wavelength + phase)
    # Remove the envelope-weighted mean of the carrier: zero DC without a square pedestal.
    carrier -= (envelope * carrier).sum() / envelope.sum()
    filt = envelope * carrier
    return (filt / np.linalg.norm(filt)).astype(np.float32)


def _luminance(images: Array) -> Array:
    """``(B, H, W, 1)`` plain mean of R, G and B."""
    return images.mean(axis=-1, keepdims=True)


def _orientation_params(
    orientations: Sequence[float], wavelength: float, sigma: float | None, size: int | None
) -> dict[str, Array]:
    sigma = 0.5 * wavelength if sigma is None else float(sigma)
    size = 2 * math.ceil(2.0 * sigma) + 1 if size is None else int(size)
    kernel = np.stack([gabor(a, size, wavelength, sigma) for a in orientations], axis=-1)
    return {"kernel": jnp.asarray(kernel[:, :, None, :])}


def _orientation_layer(params: Any, images: Array) -> Array:
    return jax.nn.relu(_conv(_luminance(images), params["kernel"], "VALID"))


def oriented_filters(
    orientations: Sequence[float] = ORIENTATIONS,
    *,
    wavelength: float = 6.0,
    sigma: float | None = None,
    size: int | None = None,
) -> Model:
    """Gabor filters on luminance, one channel per orientation, with a ReLU: layer
    ``"orientation"`` ``(H - size + 1, W - size + 1, len(orientations))`` (VALID).

    Channel ``k`` is ``relu`` of ``mean(R, G, B)`` cross-correlated with
    ``gabor(orientations[k], ...)``; it responds most to stripes running at
    ``orientations[k]`` degrees (module convention: 0 is ``=``, 90 is ``|``, 45 is ``/``) with
    period ``wavelength`` pixels. ``sigma`` (default half the wavelength) is the Gaussian
    envelope's width, ``size`` (default ``2 ceil(2 sigma) + 1``) the kernel's.
    Params: ``{"kernel": (size, size, 1, len(orientations))}``.

    >>> model = oriented_filters((0, 90), wavelength=4.0)
    >>> model.layer_shapes(32)
    {'orientation': (24, 24, 2)}
    """
    params = _orientation_params(orientations, wavelength, sigma, size)

    def apply(params: Any, images: Array) -> dict[str, Array]:
        return {ORIENTATION_LAYER: _orientation_layer(params, images)}

    return from_fn(apply, params=params, name="oriented_filters")


def orientation_optimum(model: Model) -> np.ndarray:
    """``(C,)`` the analytic best response of each centre neuron of :func:`oriented_filters`
    (or of :func:`planted_model`'s ``"orientation"`` layer): luminance 1 where the Gabor
    kernel is positive and 0 where it is negative, so ``sum(max(kernel, 0))``.

    >>> model = oriented_filters((0, 90), wavelength=4.0)
    >>> best = orientation_optimum(model)
    >>> picture = np.stack([np.where(model.params["kernel"][..., k] > 0, 1.0, 0.0)
    ...                     for k in range(2)])  # (2, k, k, 1): each unit's best patch
    >>> out = np.asarray(model.activations(np.repeat(picture, 3, -1))[ORIENTATION_LAYER])
    >>> np.allclose([out[k, 0, 0, k] for k in range(2)], best, atol=1e-5)
    True
    """
    params = model.params.get("orientation", model.params)
    return np.maximum(np.asarray(params["kernel"], np.float64), 0).sum((0, 1, 2))


def stripes(
    angle: float, size: int | tuple[int, int], wavelength: float, phase: float = 0.0
) -> np.ndarray:
    """``(H, W, 3)`` grey sinusoidal stripes in [0, 1] running at ``angle`` degrees.

    >>> round(float(dominant_orientation(stripes(30.0, 32, wavelength=6.0)).degrees), 1)
    30.0
    """
    height, width = as_size(size)
    rows, cols = np.mgrid[:height, :width].astype(np.float64)
    x, y = cols - (width - 1) / 2.0, (height - 1) / 2.0 - rows
    theta = math.radians(angle)
    across = -x * math.sin(theta) + y * math.cos(theta)
    wave = 0.5 + 0.5 * np.cos(2.0 * math.pi * across / wavelength + phase)
    return np.repeat(wave[..., None], 3, axis=-1).astype(np.float32)


class Orientation(NamedTuple):
    """What :func:`dominant_orientation` reads from pictures (arrays of the batch shape).

    Attributes:
        degrees: the stripes' direction in [0, 180), module convention.
        coherence: in [0, 1]: 1 for perfect stripes, near 0 for isotropic content.

    >>> found = dominant_orientation(stripes(90.0, 32, wavelength=4.0))
    >>> round(float(found.degrees)), bool(found.coherence > 0.9)
    (90, True)
    """

    degrees: np.ndarray
    coherence: np.ndarray


def dominant_orientation(images: Any) -> Orientation:
    """The dominant stripe orientation of pictures ``(..., H, W, 3)`` from their power spectra.

    The luminance minus its mean, under a Hann window, is Fourier transformed; each frequency
    votes for its gradient direction with its power, on doubled angles (so that opposite
    directions agree). The stripes run perpendicular to the average gradient.

    >>> pictures = np.stack([stripes(a, 32, wavelength=5.0) for a in (0, 45, 90, 135)])
    >>> dominant_orientation(pictures).degrees.round().tolist()
    [0.0, 45.0, 90.0, 135.0]
    """
    images = np.asarray(images, np.float64)
    lum = images.mean(axis=-1)
    lum = lum - lum.mean(axis=(-2, -1), keepdims=True)
    height, width = lum.shape[-2:]
    window = np.outer(np.hanning(height), np.hanning(width))
    power = np.abs(np.fft.fft2(lum * window)) ** 2
    power[..., 0, 0] = 0.0
    freq_down = np.fft.fftfreq(height)[:, None]
    freq_right = np.fft.fftfreq(width)[None, :]
    gradient = np.arctan2(-freq_down, freq_right)  # y up, as angles are read on screen
    votes = (power * np.exp(2j * gradient)).sum(axis=(-2, -1))
    total = power.sum(axis=(-2, -1))
    degrees = (np.degrees(np.angle(votes)) / 2.0 + 90.0) % 180.0
    coherence = np.abs(votes) / np.maximum(total, 1e-30)
    return Orientation(degrees=degrees, coherence=coherence)


def angle_difference(a: Any, b: Any) -> np.ndarray:
    """Smallest difference between orientations in degrees, modulo 180: in [0, 90].

    >>> angle_difference(175.0, 5.0).item(), angle_difference([0.0, 45.0], 90.0).tolist()
    (10.0, [90.0, 45.0])
    """
    diff = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)) % 180.0
    return np.minimum(diff, 180.0 - diff)


# -- 3. colour-opponent units ------------------------------------------------------------------


def _colour_params() -> dict[str, Array]:
    kernel = COLOUR_DIRECTIONS.T  # (3, 6)
    return {"kernel": jnp.asarray(kernel), "bias": jnp.asarray(-0.5 * kernel.sum(axis=0))}


def _colour_layers(params: Any, images: Array) -> dict[str, Array]:
    pre = images @ params["kernel"] + params["bias"]
    return {COLOUR_PRE_LAYER: pre, COLOUR_LAYER: jax.nn.relu(pre)}


def colour_opponent() -> Model:
    """Six 1x1 colour units (:data:`COLOUR_UNITS`): red-vs-green, green-vs-red,
    blue-vs-yellow, yellow-vs-blue, bright and dark.

    Unit ``k`` at each pixel is ``relu(COLOUR_DIRECTIONS[k] . (rgb - 0.5))``: layer
    ``"colour"`` ``(H, W, 6)``, and ``"colour_pre"`` the same before the ReLU. Each unit's
    best colour is in :func:`colour_optimum`. Params: ``{"kernel": (3, 6), "bias": (6,)}``.

    >>> model = colour_opponent()
    >>> red = np.zeros((1, 4, 4, 3), np.float32); red[..., 0] = 1.0
    >>> out = np.asarray(model.activations(red)["colour"])[0, 0, 0]
    >>> [COLOUR_UNITS[k] for k in np.flatnonzero(out > 0)]
    ['red_vs_green', 'yellow_vs_blue', 'dark']
    """
    return from_fn(_colour_layers, params=_colour_params(), name="colour_opponent")


class ColourOptimum(NamedTuple):
    """The analytic best colour of each colour unit.

    Attributes:
        colours: ``(6, 3)`` RGB in [0, 1]: 1 where the unit's weight is positive, 0 where it is
            negative, 0.5 where the unit ignores the channel (any value is as good).
        values: ``(6,)`` the unit's response to that colour: ``0.5 * sum(|direction|)``.

    >>> colour_optimum().colours[COLOUR_UNITS.index("red_vs_green")].tolist()
    [1.0, 0.0, 0.5]
    """

    colours: np.ndarray
    values: np.ndarray


def colour_optimum() -> ColourOptimum:
    """The best colour and best response of each colour unit (the same at every pixel).

    >>> best = colour_optimum()
    >>> best.colours[COLOUR_UNITS.index("blue_vs_yellow")].tolist()
    [0.0, 0.0, 1.0]
    """
    d = COLOUR_DIRECTIONS
    colours = np.where(d > 0, 1.0, np.where(d < 0, 0.0, 0.5)).astype(np.float32)
    return ColourOptimum(colours=colours, values=0.5 * np.abs(d).sum(axis=1))


# -- 2 + 3 -------------------------------------------------------------------------------------


def planted_model(
    orientations: Sequence[float] = ORIENTATIONS, *, wavelength: float = 6.0
) -> Model:
    """Colour units and oriented filters side by side on the same picture: layers
    ``"colour_pre"``, ``"colour"`` (as :func:`colour_opponent`) and ``"orientation"`` (as
    :func:`oriented_filters`). Params: ``{"colour": ..., "orientation": ...}``.

    >>> model = planted_model((0, 90))
    >>> model.layer_shapes(48)["orientation"]
    (36, 36, 2)
    """
    params = {
        "colour": _colour_params(),
        "orientation": _orientation_params(orientations, wavelength, None, None),
    }

    def apply(params: Any, images: Array) -> dict[str, Array]:
        layers = _colour_layers(params["colour"], images)
        layers[ORIENTATION_LAYER] = _orientation_layer(params["orientation"], images)
        return layers

    return from_fn(apply, params=params, name="planted")


# -- 4. stripe detectors -------------------------------------------------------------------------

#: The world's stripe periods in pixels at 64 px (``world.SCALE_PERIODS``), and the Gaussian
#: envelopes of the quadrature Gabor pairs that read them.
STRIPE_SCALES = ((64 / 14, 3.0), (8.0, 5.0))


def _stripe_params(scales: Sequence[tuple[float, float]]) -> dict[str, Any]:
    kernels = []
    for wavelength, sigma in scales:
        size = 2 * math.ceil(2.0 * sigma) + 1
        pair = [
            [gabor(angle, size, wavelength, sigma, phase) for angle in ORIENTATIONS]
            for phase in (0.0, math.pi / 2)
        ]  # (2, 4, size, size): even and odd filters per orientation
        kernels.append(jnp.asarray(np.transpose(pair, (2, 3, 1, 0)).reshape(size, size, 1, 8)))
    return {"kernels": kernels, "pool": jnp.full((9, 9, 1, 1), 1.0 / 81)}


def _crop_to(x: Array, height: int, width: int) -> Array:
    top, left = (x.shape[1] - height) // 2, (x.shape[2] - width) // 2
    return x[:, top : top + height, left : left + width]


def _stripes_layer(params: Any, images: Array) -> dict[str, Array]:
    luminance = _luminance(images)
    energies = []
    for kernel in params["kernels"]:
        response = _conv(luminance, kernel, "VALID")
        response = response.reshape(*response.shape[:3], len(ORIENTATIONS), 2)
        energies.append((response**2).sum(-1))  # phase-free energy per orientation
    height = min(e.shape[1] for e in energies)
    width = min(e.shape[2] for e in energies)
    energy = sum(_crop_to(e, height, width) for e in energies)
    pooled = jnp.concatenate(
        [_conv(energy[..., k : k + 1], params["pool"], "VALID") for k in range(len(ORIENTATIONS))],
        axis=-1,
    )
    # Selective: one orientation must carry 3x the energy of any other (a checker, dots or a
    # corner spread theirs over several).
    others = jnp.stack(
        [jnp.delete(pooled, k, axis=-1, assume_unique_indices=True).max(-1) for k in range(4)],
        axis=-1,
    )
    return {STRIPES_LAYER: jax.nn.relu(pooled - 3.0 * others)}


def stripe_detectors(scales: Sequence[tuple[float, float]] = STRIPE_SCALES) -> Model:
    """Detectors of the world's striped textures, one channel per orientation of
    :data:`ORIENTATIONS`: layer ``"stripes"`` (VALID convolutions, so ``(H - 28, W - 28, 4)``
    at the default scales).

    Each channel is the phase-free energy of quadrature Gabor pairs at the world's two stripe
    periods, pooled over 9x9 positions, minus 3x the strongest other orientation, with a ReLU.
    On 300 world images at 64 px, Network Dissection labels channel ``k`` ``orient_<k>`` with
    IoU 0.10-0.14 (top 8 images by mean: 31 of 32 hold the orientation; the odd one is a solid
    square's horizontal edges).

    >>> stripe_detectors().layer_shapes(64)
    {'stripes': (36, 36, 4)}
    """
    return from_fn(_stripes_layer, params=_stripe_params(scales), name="stripe_detectors")
