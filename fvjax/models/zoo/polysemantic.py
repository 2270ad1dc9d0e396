"""Planted polysemantic units: each unit is the max of two unrelated detectors with equal optima.

Ground truth for multifaceted feature visualization. Unit ``k`` of layer ``"poly"`` fires on
stripes running at ``PAIRS[k][0]`` degrees (facet A) *or* on the world colour ``PAIRS[k][1]``
(facet B); layer ``"facets"`` holds the two detectors apart. Both facets have the same best
value, 1, and the max never pays for showing both in one place, so a picture of a unit can show
either facet alone: a render that blends them has missed that.

Both facets read the same ``size x size`` window under a Gaussian envelope of width ``sigma``,
so they share one grid:

- facet A, stripes: the phase-free energy ``sqrt(sum even^2 + odd^2)`` of quadrature
  :func:`~fvjax.models.zoo.planted.gabor` pairs on each of R, G and B (so coloured stripes on a
  grey ground count too), minus the same energy across the stripes, with a ReLU, then a
  contrast gain ``(1 + h^2) x^2 / (x^2 + h^2)`` (``h`` = :data:`STRIPE_HALF`): 0 at 0, 1 at 1,
  half of 1 at ``x = h``. The world's stripes are coloured bars on a muted ground with the
  ground in their gaps, on small objects, so inside the objects ``x`` averages 0.04-0.17 of a
  black-and-white grating's; the gain lets them fire A about as fully as a world colour fires
  B (without it, at 48 px, A reached 0.07-0.11 as a channel mean against B's 0.24-0.31, and
  0-1 of each unit's top 32 world pictures were A's). A flat picture gives 0; the opponent
  term silences other angles (a grating 45 degrees off scores 0) and blobs' curved edges (a
  colour blob on grey scores at most 0.12).
- facet B, colour: the envelope-weighted mean of a *chromatic* direction (the colour's RGB
  minus its own mean), read from the picture after a per-pixel *vividness* gain, floored at
  ``-COLOUR_FLOOR``. The gain scales each pixel's chroma (max minus min channel) ``c`` up to
  ``(1 + v^6) c^6 / (c^6 + v^6)`` (``v`` = :data:`VIVID_HALF`) where that is more: pale
  colours (``c >= 0.3``) count as 0.87 and more, muted ones (the world's backgrounds,
  ``c <= 0.16``) as they are, and a mix of hues still cancels. Grey, black and white give
  0 (within 1e-8: the convolution's rounding).

Why both gains: ``fourier()`` renders reach high stripe contrast easily but only pale colours
(chroma about 0.55), while the world has saturated colours but faint stripes. A gain on A
alone turned 9-16 of 16 plain renders of ``"poly"`` into stripes alone (in the variants
measured); the vividness gain gives colours the same head room in renders and leaves the
world's saturated colours where they were. The floor keeps a gradient where a colour render
is still grey or off-hue, so colour renders fill with the colour and leave few edges for A
(at most 0.09 on A; with a ReLU there 0.09-0.30, most above :data:`OTHER`).

The window is small next to the picture (13 px at the default 6 px wavelength, against 48-64
px pictures), so each part of a picture may take either facet. That is what makes plain renders
blend. Measured with ``fourier()`` and ``transforms.standard()``, 4 units x 4 seeds: at 48 px,
128 steps, all 16 pictures are patches of stripes beside blobs of colour (0.76-0.90 on A,
0.12-0.44 on B); at 64 px, 256 steps, all 16 again (0.78-0.91 on A, 0.19-0.48 on B).

On the world (``generate(seed=1, n=400)``), each unit's top 32 pictures by the ``"poly"``
channel mean hold 10-16 pictures driven by A (A's mean above B's) at 48 px and 13-15 at 64 px,
the rest by B; the channel means reach 0.25-0.35 on A and 0.23-0.31 on B. Over 200 world
pictures at 64 px, the peak over positions ranks those with the unit's stripes above the
others at AUC 0.97-0.99 (A), those with its colour at 0.91-0.97 (B).

Orientation convention: :mod:`fvjax.models.zoo.planted` (0 is ``=``, 90 is ``|``, 45 is ``/``).

>>> model = polysemantic_units()
>>> model.layer_shapes(48)
{'facets': (36, 36, 8), 'poly': (36, 36, 4)}
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fvjax.data import world
from fvjax.models import Model, from_fn
from fvjax.models.zoo.planted import _conv, gabor, stripes

Array = jax.Array

FACETS_LAYER = "facets"
POLY_LAYER = "poly"

#: ``(degrees, world colour)`` of each unit's facets A and B: unrelated by design. Cyan, not
#: green: ``fourier()`` renders of green reach 0.53-0.57 where cyan reaches 0.83-0.85, beside
#: 0.92-0.93 for stripes (48 px, 128 steps), so with green the stripes filled 2 of 4 plain
#: renders of the unit (magenta: 3 of 4).
PAIRS = ((0.0, "red"), (45.0, "cyan"), (90.0, "blue"), (135.0, "yellow"))

#: Default thresholds of :func:`facet_shown`, on scores relative to the optimum of 1. Measured
#: with ``fourier()``, ``transforms.standard()`` (48 px, 128 steps and 64 px, 256 steps): a
#: render of one facet's channel scores 0.79-0.96 on it (0.53-0.57 for green) and at most 0.09
#: on the other facet (colour renders, on A; stripe renders score at most 0.03 on B); renders
#: of the ``"poly"`` units at least 0.12 on each. The best pictures score 1 and 0; half
#: stripes, half colour 0.54-0.62 on A and 0.50 on B; grey 0 on both and uniform noise at
#: most 0.10 on A (neither: below ``ALONE``).
ALONE = 0.2
OTHER = 0.1

#: Facet A's contrast gain reaches half of 1 at this stripe energy (a black-and-white grating
#: has 1). Measured on the world (seed 1, 400 pictures, 48 px), A-driven pictures among each
#: unit's top 32: 0.10 gives 10-14, 0.08 gives 10-16 and raises a colour blob's edges on grey
#: from at most 0.11 to at most 0.12 (channel mean of A).
STRIPE_HALF = 0.08
#: Chroma at which the vividness gain of facet B counts a pixel half as saturated. With the
#: 6th power, the world's backgrounds (chroma at most 0.16) are not raised (the gain there is
#: below 1), pale render colours (0.3 and above) count as 0.87 and more.
VIVID_HALF = 0.22
#: Facet B is floored here rather than at 0: with a ReLU, ``fourier()`` colour renders kept
#: grey and black-and-white patches with no gradient, whose edges scored 0.09-0.30 on facet A.
COLOUR_FLOOR = 0.05

_VIVID_POWER = 6
_PHASES = 16  # phases averaged over when measuring a grating's response
_NUDGE = 1e-3  # radians: no pixel centre on a stripe's edge (a tie there thins the stripes)


def _chromatic(name: str) -> np.ndarray:
    """``(3,)`` the world colour ``name`` minus its mean, scaled so its best value is 1."""
    if name not in world.COLOURS:
        raise ValueError(f"unknown colour {name!r}; the world's colours are {world.COLOURS}")
    rgb = world.COLOUR_RGB[world.COLOURS.index(name)].astype(np.float64)
    direction = rgb - rgb.mean()
    if not (direction > 0).any():
        raise ValueError(f"{name!r} has no hue: a colour facet needs a chromatic colour")
    # The best pixel is 1 where the direction is positive, 0 where negative.
    return direction / direction[direction > 0].sum()


def _window(sigma: float) -> int:
    return 2 * math.ceil(2.0 * sigma) + 1


def _square_grating(
    angle: float, size: int | tuple[int, int], wavelength: float, phase: float = 0.0
) -> np.ndarray:
    """``(H, W, 3)`` black and white stripes: :func:`planted.stripes` at full contrast."""
    return (stripes(angle, size, wavelength, phase + _NUDGE) > 0.5).astype(np.float32)


def _stripe_kernels(angle: float, wavelength: float, sigma: float) -> np.ndarray:
    """``(size, size, 2)`` the even and odd Gabor that each of R, G and B is read with, scaled
    so that a black-and-white square-wave grating at ``angle`` and ``wavelength`` gives an
    energy of 1 over the three channels, averaged over its phase."""
    size = _window(sigma)
    pair = np.stack([gabor(angle, size, wavelength, sigma, p) for p in (0.0, math.pi / 2)], -1)
    phases = np.linspace(0.0, 2 * math.pi, _PHASES, endpoint=False)
    patches = np.stack([_square_grating(angle, size, wavelength, p)[..., 0] for p in phases])
    energy = np.sqrt((np.einsum("phw,hwc->pc", patches, pair) ** 2).sum(-1)).mean()
    # Every channel sees its own contrast, so coloured stripes on a grey ground count too.
    return pair / (math.sqrt(3.0) * energy)


def _colour_kernel(name: str, sigma: float) -> np.ndarray:
    """``(size, size, 3, 1)`` the chromatic direction under a unit-sum Gaussian envelope: at
    most a pixel's chroma (max minus min channel), since the direction's positive part sums
    to 1 and its negative part to -1."""
    size = _window(sigma)
    offsets = np.arange(size) - (size - 1) / 2.0
    envelope = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2.0 * sigma**2))
    envelope /= envelope.sum()
    return (envelope[:, :, None] * _chromatic(name))[..., None]


def _norm(x: Array) -> Array:
    """The L2 norm over the last axis, with a finite gradient (0) where it is 0."""
    squared = (x**2).sum(-1)
    positive = squared > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)


def _gain(x: Array, half: float, power: int) -> Array:
    """Naka-Rushton ``(1 + half^p) x^p / (x^p + half^p)`` of ``x >= 0``: 0 at 0, 1 at 1, half
    of 1 at ``half``, increasing, and below ``1 + half^p``."""
    return (1.0 + half**power) * x**power / (x**power + half**power)


def _vivid(images: Array) -> Array:
    """``(..., 3)`` each pixel scaled so that its chroma ``c`` (max minus min channel) becomes
    ``max(c, _gain(c, VIVID_HALF, 6))``: pale colours count nearly as saturated, muted ones
    as they are. The grey part scales too, which a chromatic (zero-sum) filter ignores."""
    chroma = images.max(axis=-1, keepdims=True) - images.min(axis=-1, keepdims=True)
    half = VIVID_HALF**_VIVID_POWER
    # _gain(c) / c, written without the division (finite at c = 0, where it is 0).
    boost = (1.0 + half) * chroma ** (_VIVID_POWER - 1) / (chroma**_VIVID_POWER + half)
    return images * jnp.maximum(boost, 1.0)


def _apply(params: Any, images: Array) -> dict[str, Array]:
    batch, height, width, _ = images.shape
    # The Gabors read each colour plane alike: the planes go through one convolution as
    # pictures of their own; the colour filters read the picture's vivid copy.
    planes = jnp.moveaxis(images, -1, 1).reshape(batch * 3, height, width, 1)
    gabors = _conv(planes, params["stripes"], "VALID")  # (3B, h, w, 4U)
    h, w = gabors.shape[1:3]
    gabors = gabors.reshape(batch, 3, h, w, -1, 2, 2)  # (B, plane, h, w, U, along/across, phase)
    gabors = jnp.moveaxis(gabors, 1, -2).reshape(batch, h, w, -1, 2, 6)
    a = _gain(jax.nn.relu(_norm(gabors[..., 0, :]) - _norm(gabors[..., 1, :])), STRIPE_HALF, 2)
    b = jnp.maximum(_conv(_vivid(images), params["colours"], "VALID"), -COLOUR_FLOOR)
    facets = jnp.stack([a, b], axis=-1).reshape(batch, h, w, -1)  # 2k: A_k, 2k + 1: B_k
    return {FACETS_LAYER: facets, POLY_LAYER: jnp.maximum(a, b)}


def polysemantic_units(
    pairs: Sequence[tuple[float, str]] = PAIRS,
    *,
    wavelength: float = 6.0,
    sigma: float | None = None,
) -> Model:
    """Units that are each the max of a stripe detector and a colour detector (module
    docstring), one per ``(degrees, world colour)`` of ``pairs``.

    Layers (VALID, ``size = 2 ceil(2 sigma) + 1``; ``sigma`` defaults to half the wavelength):

    - ``"facets"`` ``(H - size + 1, W - size + 1, 2U)``: channel ``2k`` is facet A of unit
      ``k``, stripes at ``pairs[k][0]`` degrees with period ``wavelength`` px (the default 6
      lies between the world's periods at 64 px, 4.6 and 8); channel ``2k + 1`` is facet B,
      the colour ``pairs[k][1]`` (one of ``world.COLOURS`` but white and black).
    - ``"poly"`` ``(H - size + 1, W - size + 1, U)``: unit ``k`` is ``max(A_k, B_k)`` at each
      position.

    Scaling: under the channel objective (mean over positions, pictures in [0, 1]) each facet's
    best value is 1. For B that is exact: a pixel gives at most its chroma before the vividness
    gain, so at most 1 after it, and 1 only where it is the world's flat colour (1 where the
    chromatic direction is positive, 0 where negative); the envelope sums to 1. A's stripe
    energy is scaled so that a black-and-white square-wave grating at its angle and wavelength
    gives 1 (averaged over 16 phases of the grating in one window): the best binary pattern of
    each window, up to 2% (the bound over each window's phases is 1.01-1.02), for every window
    at once. The gain keeps 1 at 1 and stays below ``1 + STRIPE_HALF^2`` (1.0064). Pixel
    renders (``output="clip"``, 128 steps, 32 px) reach 0.996-0.998 for both
    (``tests/test_polysemantic.py``). :func:`facet_optima` gives both pictures.

    Params: ``{"stripes": (size, size, 1, 4U), "colours": (size, size, 3, U)}``: per unit
    the even and odd Gabor along the stripes, then across them, each read on R, G and B alike;
    and the colour filter, read on the picture's vivid copy. (One convolution over the picture
    and that copy stacked, its kernel mostly zeros, made a render 2.9x as long on our CPU,
    2026-11-30.)

    >>> model = polysemantic_units([(90.0, "red")], wavelength=4.0)
    >>> model.layer_shapes(32)
    {'facets': (24, 24, 2), 'poly': (24, 24, 1)}
    """
    sigma = 0.5 * wavelength if sigma is None else float(sigma)
    stripes, colours = [], []
    for angle, colour in pairs:
        stripes += [
            _stripe_kernels(angle, wavelength, sigma),
            _stripe_kernels(angle + 90.0, wavelength, sigma),
        ]
        colours.append(_colour_kernel(colour, sigma))
    params = {
        "stripes": jnp.asarray(np.concatenate(stripes, axis=-1)[:, :, None], jnp.float32),
        "colours": jnp.asarray(np.concatenate(colours, axis=-1), jnp.float32),
    }
    return from_fn(_apply, params=params, name="polysemantic_units")


def facet_optima(
    size: int | tuple[int, int],
    pairs: Sequence[tuple[float, str]] = PAIRS,
    wavelength: float = 6.0,
) -> np.ndarray:
    """``(U, 2, H, W, 3)`` the best picture of each facet of :func:`polysemantic_units` (give
    it the model's ``pairs`` and ``wavelength``): a black-and-white square-wave grating (A) and
    the world's flat colour (B).

    >>> optima = facet_optima(48)
    >>> optima.shape, optima[0, 1, 0, 0].tolist()  # unit 0, facet B: red
    ((4, 2, 48, 48, 3), [1.0, 0.0, 0.0])
    >>> (facet_scores(polysemantic_units(), optima[0]).round(1)[:, 0] + 0.0).tolist()  # no -0.0
    [[1.0, 0.0], [0.0, 1.0]]
    """
    pictures = []
    for angle, colour in pairs:
        rgb = world.COLOUR_RGB[world.COLOURS.index(colour)]
        flat = np.broadcast_to(rgb, (*_square_grating(angle, size, wavelength).shape[:2], 3))
        pictures.append([_square_grating(angle, size, wavelength), flat])
    return np.asarray(pictures, np.float32)


def facet_scores(model: Model, images: Any) -> np.ndarray:
    """``(N, U, 2)`` each facet's channel mean on pictures ``(N, H, W, 3)`` in [0, 1]:
    ``[..., 0]`` facet A, ``[..., 1]`` facet B, relative to their optimum of 1.

    >>> grey = np.full((1, 32, 32, 3), 0.5, np.float32)
    >>> facet_scores(polysemantic_units(), grey).shape
    (1, 4, 2)
    """
    facets = np.asarray(model.activations(images)[FACETS_LAYER], np.float64)
    means = facets.mean(axis=(1, 2))
    return means.reshape(len(means), -1, 2)


def facet_shown(scores: Any, alone: float = ALONE, other: float = OTHER) -> np.ndarray:
    """``(N, U)`` int: which facet each picture shows by itself, from :func:`facet_scores`
    ``(N, U, 2)``: 0 for facet A (``A >= alone`` and ``B <= other``), 1 for facet B, -1 for a
    blend or neither. The defaults, :data:`ALONE` and :data:`OTHER`, sit between what renders
    of one facet and renders of a whole unit score (measured; see there).

    >>> facet_shown(np.array([[[0.9, 0.05], [0.1, 0.8], [0.5, 0.45], [0.1, 0.1]]])).tolist()
    [[0, 1, -1, -1]]
    """
    scores = np.asarray(scores)
    a, b = scores[..., 0], scores[..., 1]
    shown = np.full(a.shape, -1, np.int64)
    shown[(a >= alone) & (b <= other)] = 0
    shown[(b >= alone) & (a <= other)] = 1
    return shown
