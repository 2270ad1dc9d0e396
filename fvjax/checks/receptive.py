"""Receptive fields measured from the model, and the crops and heat maps that show a unit's
natural-image examples.

A dataset example of a unit is shown cropped around the position where the unit's activation
map peaks, the crop as large as the unit's receptive field, the map drawn over it.
:func:`receptive_field` does not guess the field from layer names: it reads the support of the
input gradient of one position's activations (summed over channels) on a few uniform-noise
images (noise keeps ReLUs alive and max pools varied), at the centre position and its neighbour
(the stride: how far the field moves) and at the first and last positions (corner-safe: each
side of a large field is seen from the position farthest from that side of the image).
:func:`crop` cuts a box out of a picture, gray outside it; :func:`heat_overlay` draws an
activation map over a picture in :func:`colormap`'s dark blue to yellow.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fvjax.data.images import as_size
from fvjax.errors import FvjaxError
from fvjax.models.adapters import Model

#: A pixel is in the support where its gradient exceeds this fraction of the largest one:
#: loose enough for the rounding noise of a GPU's fast convolution algorithms (Winograd,
#: FFT), orders of magnitude below the gradient of a field's weakest edge pixel.
RELATIVE_THRESHOLD = 1e-6

#: :func:`colormap`'s stops ``(value, (r, g, b))``: dark blue, blue, teal, green, yellow;
#: luminance rises steadily (0.08, 0.28, 0.48, 0.67, 0.87), so brighter means hotter.
COLORMAP_STOPS = (
    (0.00, (0.08, 0.05, 0.35)),
    (0.25, (0.15, 0.30, 0.55)),
    (0.50, (0.13, 0.57, 0.55)),
    (0.75, (0.37, 0.79, 0.38)),
    (1.00, (0.99, 0.91, 0.14)),
)


class ReceptiveField(NamedTuple):
    """The input pixels that can move one position of a layer, for every position.

    ``size``: the field's ``(height, width)`` in pixels; ``stride``: how far it moves per
    position, ``(sy, sx)``; ``offset``: the top-left of position ``(0, 0)``'s field (negative
    where it reaches into the padding); ``layer_shape``: one image's activations;
    ``input_size``: ``(H, W)``. A field that is the whole image (non-spatial layers, global
    mixing) has ``size == input_size`` and stride and offset ``(0.0, 0.0)``.

    >>> field = ReceptiveField((5, 5), (2.0, 2.0), (-2.0, -2.0), (8, 8, 4), (16, 16))
    >>> field.box(0, 0), field.box(1, 3), field.whole_image
    ((-2, -2, 3, 3), (0, 4, 5, 9), False)
    """

    size: tuple[int, int]
    stride: tuple[float, float]
    offset: tuple[float, float]
    layer_shape: tuple[int, ...]
    input_size: tuple[int, int]

    @property
    def whole_image(self) -> bool:
        """Whether every position sees the whole image."""
        return self.stride == (0.0, 0.0)

    def box(self, i: int = 0, j: int = 0) -> tuple[int, int, int, int]:
        """``(top, left, bottom, right)`` of position ``(i, j)``'s field, bottom and right
        exclusive, not clipped to the image: every box of a layer has the same size."""
        top = int(np.floor(self.offset[0] + i * self.stride[0] + 0.5))
        left = int(np.floor(self.offset[1] + j * self.stride[1] + 0.5))
        return top, left, top + self.size[0], left + self.size[1]


@functools.partial(jax.jit, static_argnums=(0, 1))
def _gradient_magnitude(apply, layer: str, params, images, positions):
    """``(K, H, W)``: ``|d sum_c layer[y, x, c] / d image|`` summed over images and colours,
    for each ``(y, x)`` of ``positions (K, 2)``; one forward pass, K backward passes."""
    out, pullback = jax.vjp(lambda x: apply(params, x)[layer], images)
    rows = jnp.arange(out.shape[1])[:, None]
    cols = jnp.arange(out.shape[2])[None, :]

    def at(position):
        hit = (rows == position[0]) & (cols == position[1])
        (grad,) = pullback(jnp.broadcast_to(hit[None, :, :, None], out.shape).astype(out.dtype))
        return jnp.abs(grad.astype(jnp.float32)).sum(axis=(0, 3))

    return jax.vmap(at)(positions)


def _axis(support: np.ndarray, index: np.ndarray, extent: int, n: int):
    """``(stride, offset, size)`` along one axis from the support ``(K, extent)`` of the
    positions ``index (K,)`` (first, centre, its neighbour, last) of ``n``; ``None`` where the
    field reaches past the image on a side even from the position farthest from it."""
    start = support.argmax(axis=1)
    stop = extent - support[:, ::-1].argmax(axis=1)
    # The shift of an edge the image clips at neither position: the centre pair first (far
    # positions' fields may be cut by an inner layer's padding), then the widest pair.
    pairs = sorted(
        itertools.combinations(range(len(index)), 2),
        key=lambda p: (p != (1, 2), -abs(int(index[p[1]] - index[p[0]]))),
    )
    stride = extent / n
    for a, b in pairs:
        gap = int(index[b] - index[a])
        edges = [e for e, free in ((start, start > 0), (stop, stop < extent)) if free[a] & free[b]]
        if gap and edges:
            stride = float(edges[0][b] - edges[0][a]) / gap
            break
    top = float(np.min(start - index * stride))  # a clipped edge only narrows: take the widest
    bottom = float(np.max(stop - index * stride))
    if top + (n - 1) * stride <= 0 or bottom >= extent:
        return None
    return stride, top, int(round(bottom - top))


def receptive_field(
    model: Model, layer: str, size: int | tuple[int, int], probes: int = 4, seed: int = 0
) -> ReceptiveField:
    """The receptive field of ``layer`` for images of ``size``, measured from the model.

    A spatial layer ``(h, w, C)``: the bounding box of the input-gradient support (pixels whose
    gradient exceeds :data:`RELATIVE_THRESHOLD` of the largest) of the channel sum at the
    centre position, its neighbour and the first and last positions, on ``probes``
    uniform-noise images drawn from ``seed``, united over positions by translation.
    The stride is the measured shift of an unclipped edge between positions (``H / h`` when no
    edge is free: a single position), so VALID padding and odd sizes come out exact. Layers of
    another rank (logits, a token sequence) and fields that reach past the image even from the
    far side (global pooling, attention) get the whole image.

    >>> from fvjax.models import from_fn
    >>> patches = from_fn(lambda x: {"sum": x.reshape(-1, 4, 2, 4, 2, 3).sum(axis=(2, 4))})
    >>> field = receptive_field(patches, "sum", 8)
    >>> field.size, field.stride, field.box(1, 2)
    ((2, 2), (2.0, 2.0), (2, 4, 4, 6))
    """
    height, width = as_size(size)
    shape = model.check_layer(layer, (height, width))
    whole = ReceptiveField((height, width), (0.0, 0.0), (0.0, 0.0), shape, (height, width))
    if len(shape) != 3:
        return whole
    h, w = shape[:2]
    centre = np.array([h // 2, w // 2])
    beside = np.where(centre + 1 < (h, w), centre + 1, np.maximum(centre - 1, 0))
    index = np.array([[0, 0], centre, beside, [h - 1, w - 1]], np.int32)
    images = np.random.default_rng(seed).random((probes, height, width, 3), dtype=np.float32)
    grads = np.asarray(_gradient_magnitude(model.apply, layer, model.params, images, index))
    peak = grads.max(axis=(1, 2), keepdims=True)
    support = (grads > RELATIVE_THRESHOLD * peak) & (peak > 0)
    if not support.any(axis=(1, 2)).all():
        raise FvjaxError(
            f"layer {layer!r} of model {model.name!r} does not depend on the image at some "
            f"position (a zero input gradient on {probes} noise images); try more probes"
        )
    rows = _axis(support.any(axis=2), index[:, 0], height, h)
    cols = _axis(support.any(axis=1), index[:, 1], width, w)
    if rows is None or cols is None:
        return whole
    (sy, oy, fy), (sx, ox, fx) = rows, cols
    return ReceptiveField((fy, fx), (sy, sx), (oy, ox), shape, (height, width))


def crop(image: np.ndarray, box: Sequence[int], fill: float = 0.5) -> np.ndarray:
    """``image[top:bottom, left:right]`` as float32, ``fill`` gray where the box leaves the
    image, so every crop of a layer's fields has the field's size.

    >>> crop(np.ones((4, 4, 3)), (-1, 2, 2, 5))[:, :, 0]
    array([[0.5, 0.5, 0.5],
           [1. , 1. , 0.5],
           [1. , 1. , 0.5]], dtype=float32)
    """
    image = np.asarray(image, np.float32)
    top, left, bottom, right = (int(v) for v in box)
    out = np.full((bottom - top, right - left, *image.shape[2:]), fill, np.float32)
    t, l, b, r = max(top, 0), max(left, 0), min(bottom, image.shape[0]), min(right, image.shape[1])
    if t < b and l < r:
        out[t - top : b - top, l - left : r - left] = image[t:b, l:r]
    return out


def _linear(n: int, out: int) -> np.ndarray:
    """``(out, n)``: linear interpolation at half-pixel centres, edges held."""
    u = np.clip((np.arange(out) + 0.5) * n / out - 0.5, 0, n - 1)
    low = np.floor(u).astype(np.int64)
    high = np.minimum(low + 1, n - 1)
    weights = np.zeros((out, n), np.float64)
    np.add.at(weights, (np.arange(out), low), 1 - (u - low))
    np.add.at(weights, (np.arange(out), high), u - low)
    return weights


def upsample(activation_map: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """An ``(h, w)`` map resized bilinearly to ``size``, half-pixel centres, edges held: what
    ``jax.image.resize(map, size, "linear")`` gives when enlarging (shrinking is not
    antialiased).

    >>> upsample(np.array([[0.0, 1.0]]), (1, 4))
    array([[0.  , 0.25, 0.75, 1.  ]], dtype=float32)
    """
    height, width = as_size(size)
    values = np.asarray(activation_map, np.float64)
    if values.ndim != 2:
        raise ValueError(f"an activation map is (h, w), got shape {values.shape}")
    rows, cols = _linear(values.shape[0], height), _linear(values.shape[1], width)
    return (rows @ values @ cols.T).astype(np.float32)


def colormap(values: np.ndarray) -> np.ndarray:
    """RGB ``(..., 3)`` in [0, 1] of values in [0, 1]: piecewise linear through
    :data:`COLORMAP_STOPS`, dark blue (0) to yellow (1), luminance rising throughout.

    >>> colormap(np.array([0.0, 1.0])).round(2)
    array([[0.08, 0.05, 0.35],
           [0.99, 0.91, 0.14]], dtype=float32)
    """
    at = [stop for stop, _ in COLORMAP_STOPS]
    values = np.clip(np.asarray(values, np.float64), 0.0, 1.0)
    channels = [np.interp(values, at, [rgb[k] for _, rgb in COLORMAP_STOPS]) for k in range(3)]
    return np.stack(channels, axis=-1).astype(np.float32)


def heat_overlay(image: np.ndarray, activation_map: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``image (H, W, 3)`` with ``activation_map (h, w)`` drawn over it: the map upsampled
    (:func:`upsample`), scaled to [0, 1] over the map (a constant map is all 0), coloured by
    :func:`colormap` and blended ``(1 - alpha) * image + alpha * colour``; float32 in [0, 1].

    >>> heat = heat_overlay(np.full((8, 8, 3), 0.5), np.eye(2))
    >>> heat.shape, bool(heat[0, 0, 0] > heat[0, 7, 0])  # yellow (red-rich) where hot
    ((8, 8, 3), True)
    """
    image = np.asarray(image, np.float32)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"an image is (H, W, 3) RGB, got shape {image.shape}")
    heat = upsample(activation_map, image.shape[:2])
    low, high = float(np.min(activation_map)), float(np.max(activation_map))
    heat = (heat - low) / (high - low) if high > low else np.zeros_like(heat)
    blend = (1.0 - alpha) * image + alpha * colormap(heat)
    return np.clip(blend, 0.0, 1.0).astype(np.float32)
