"""Robustness transforms: pure ``(key, image) -> image`` functions with static shapes.

A transform sees one image ``(H, W, 3)``; the renderer ``vmap``s it with one key per image and
step, so **every image draws its own shift, scale and angle** (the Lucid family draws one value
for the whole batch). Output shapes depend only on input shapes, never on the random draw, so
the whole optimization stays one compiled program. The built-ins are frozen dataclasses, equal
when their settings are equal.

>>> t = standard()
>>> t(jax.random.key(0), jnp.zeros((64, 64, 3))).shape
(76, 76, 3)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Transform = Callable[[Array, Array], Array]


@dataclasses.dataclass(frozen=True)
class Pad:
    """Pad ``pixels`` on every side with a constant (grey by default) or by reflection."""

    pixels: int
    mode: str = "constant"
    value: float = 0.5

    def __call__(self, key: Array, image: Array) -> Array:
        width = ((self.pixels, self.pixels), (self.pixels, self.pixels), (0, 0))
        if self.mode == "constant":
            return jnp.pad(image, width, constant_values=self.value)
        return jnp.pad(image, width, mode=self.mode)


@dataclasses.dataclass(frozen=True)
class Jitter:
    """Crop ``(H - pixels, W - pixels)`` at a random offset in ``[0, pixels]``."""

    pixels: int

    def __call__(self, key: Array, image: Array) -> Array:
        height, width = image.shape[0] - self.pixels, image.shape[1] - self.pixels
        dy, dx = jax.random.randint(key, (2,), 0, self.pixels + 1)
        return _crop(image, dy, dx, (height, width))


def _crop_forward(image: Array, dy: Array, dx: Array, size: tuple[int, int]) -> Array:
    return jax.lax.dynamic_slice(image, (dy, dx, 0), (*size, image.shape[2]))


_crop = jax.custom_vjp(_crop_forward, nondiff_argnums=(3,))


def _crop_fwd(image: Array, dy: Array, dx: Array, size: tuple[int, int]):
    return _crop_forward(image, dy, dx, size), (image.shape, dy, dx)


def _crop_bwd(size: tuple[int, int], residuals: Any, grad: Array):
    """The crop's transpose as a crop of the padded gradient: a ``vmap``ped crop is a gather,
    whose autodiff transpose would be a scatter-add (see :func:`resample`)."""
    shape, dy, dx = residuals
    rows, cols = shape[0] - size[0], shape[1] - size[1]
    framed = jnp.pad(grad, ((rows, rows), (cols, cols), (0, 0)))
    return jax.lax.dynamic_slice(framed, (rows - dy, cols - dx, 0), shape), None, None


_crop.defvjp(_crop_fwd, _crop_bwd)


def _grid(size: tuple[int, int]) -> tuple[Array, Array]:
    """Each output pixel's ``(row, col)`` as floats, ``(H, W)`` each."""
    return jnp.meshgrid(
        jnp.arange(size[0], dtype=jnp.float32),
        jnp.arange(size[1], dtype=jnp.float32),
        indexing="ij",
    )


def _source(matrix: Array, offset: Array, size: tuple[int, int]) -> tuple[Array, Array]:
    """Where each output pixel reads: ``matrix @ (row, col) + offset``, ``(H, W)`` each."""
    ys, xs = _grid(size)
    return (
        matrix[0, 0] * ys + matrix[0, 1] * xs + offset[0],
        matrix[1, 0] * ys + matrix[1, 1] * xs + offset[1],
    )


def _corners(image: Array, sy: Array, sx: Array, cval: float) -> tuple[Array, ...]:
    """The four pixels around each reading point (``cval`` outside) and the point's place
    between them."""
    height, width = image.shape[0], image.shape[1]
    framed = jnp.pad(image, ((1, 1), (1, 1), (0, 0)), constant_values=cval)
    y0, x0 = jnp.floor(sy), jnp.floor(sx)
    # Indices into the framed image: anything outside lands on its cval frame.
    rows = [jnp.clip(y0 + k, -1, height).astype(jnp.int32) + 1 for k in (0, 1)]
    cols = [jnp.clip(x0 + k, -1, width).astype(jnp.int32) + 1 for k in (0, 1)]
    top_left, top_right = framed[rows[0], cols[0]], framed[rows[0], cols[1]]
    bottom_left, bottom_right = framed[rows[1], cols[0]], framed[rows[1], cols[1]]
    return (
        top_left,
        top_right,
        bottom_left,
        bottom_right,
        (sy - y0)[..., None],
        (sx - x0)[..., None],
    )


def _bilinear(image, matrix, offset, size, cval, reach):
    top_left, top_right, bottom_left, bottom_right, fy, fx = _corners(
        image, *_source(matrix, offset, size), cval
    )
    top = top_left + fx * (top_right - top_left)
    bottom = bottom_left + fx * (bottom_right - bottom_left)
    return top + fy * (bottom - top)


def _bilinear_fwd(image, matrix, offset, size, cval, reach):
    out = _bilinear(image.value, matrix.value, offset.value, size, cval, reach)
    moved = matrix.perturbed or offset.perturbed  # the draw itself differentiated: rare
    return out, (image.value, matrix.value, offset.value, moved)


def _image_cotangent(grad: Array, matrix: Array, offset: Array, shape: tuple, reach: float):
    """The bilinear resampling's transpose as a gather: each input pixel collects, from the
    few output pixels that read it, their gradient times the weight they read it with.
    Those output pixels lie within ``reach`` of where the inverse map sends the input pixel,
    a box of ``taps x taps`` candidates (out-of-picture ones read 0)."""
    height, width = shape[0], shape[1]
    determinant = matrix[0, 0] * matrix[1, 1] - matrix[0, 1] * matrix[1, 0]
    inverse = jnp.array([[matrix[1, 1], -matrix[0, 1]], [-matrix[1, 0], matrix[0, 0]]])
    inverse = inverse / determinant  # by hand: jnp.linalg.inv's pivoting is a scatter
    ys, xs = _grid((height, width))
    centre_y = inverse[0, 0] * (ys - offset[0]) + inverse[0, 1] * (xs - offset[1])
    centre_x = inverse[1, 0] * (ys - offset[0]) + inverse[1, 1] * (xs - offset[1])
    # The integers within ``margin`` of the centre: at most floor(2 * margin) + 1 per axis
    # (3 for the standard transforms' reach of 1.27). The slack covers float rounding: an extra
    # candidate only reads weight 0.
    margin = reach + 0.01
    taps = int(np.floor(2 * margin)) + 1
    first_y, first_x = jnp.ceil(centre_y - margin), jnp.ceil(centre_x - margin)
    framed = jnp.pad(grad, ((1, 1), (1, 1), (0, 0)))
    total = jnp.zeros(shape, grad.dtype)
    for dy in range(taps):
        oy = first_y + dy
        row = jnp.clip(oy, -1, grad.shape[0]).astype(jnp.int32) + 1
        for dx in range(taps):
            ox = first_x + dx
            col = jnp.clip(ox, -1, grad.shape[1]).astype(jnp.int32) + 1
            sy = matrix[0, 0] * oy + matrix[0, 1] * ox + offset[0]
            sx = matrix[1, 0] * oy + matrix[1, 1] * ox + offset[1]
            weight = jnp.maximum(0.0, 1.0 - jnp.abs(sy - ys)) * jnp.maximum(
                0.0, 1.0 - jnp.abs(sx - xs)
            )
            total = total + weight[..., None] * framed[row, col]
    return total


def _bilinear_bwd(size, cval, reach, residuals, grad):
    image, matrix, offset, moved = residuals
    image_grad = _image_cotangent(grad, matrix, offset, image.shape, reach)
    if not moved:
        return image_grad, None, None
    sy, sx = _source(matrix, offset, size)
    top_left, top_right, bottom_left, bottom_right, fy, fx = _corners(image, sy, sx, cval)
    top = top_left + fx * (top_right - top_left)
    bottom = bottom_left + fx * (bottom_right - bottom_left)
    left = top_left + fy * (bottom_left - top_left)
    right = top_right + fy * (bottom_right - top_right)
    along_y = (grad * (bottom - top)).sum(-1)
    along_x = (grad * (right - left)).sum(-1)
    ys, xs = _grid(size)
    matrix_grad = jnp.array(
        [
            [(along_y * ys).sum(), (along_y * xs).sum()],
            [(along_x * ys).sum(), (along_x * xs).sum()],
        ]
    )
    return image_grad, matrix_grad, jnp.stack([along_y.sum(), along_x.sum()])


_bilinear = jax.custom_vjp(_bilinear, nondiff_argnums=(3, 4, 5))
_bilinear.defvjp(_bilinear_fwd, _bilinear_bwd, symbolic_zeros=True)


def resample(
    image: Array,
    matrix: Array,
    offset: Array,
    size: tuple[int, int],
    cval: float = 0.5,
    reach: float | None = None,
) -> Array:
    """Bilinear resampling of ``image (H, W, C)`` at an affine map of the output grid: output
    pixel ``o = (row, col)`` of ``size`` reads ``image`` at ``matrix @ o + offset``, and
    ``cval`` outside the picture.

    The backward pass is a gather, not the scatter-add autodiff would make of the forward
    gather: a scatter-add's order of additions is not fixed on GPUs, so its sums differ from
    run to run. ``reach`` bounds how far (in output pixels, max row sum of ``|matrix^-1|``)
    one input pixel's readers lie from where the inverse map sends it; it must hold for
    every matrix the caller draws. Default: that of ``matrix`` itself, which must then be
    concrete.

    >>> image = jnp.arange(12.0).reshape(3, 4, 1)
    >>> resample(image, jnp.eye(2), jnp.array([0.0, 1.0]), (3, 3))[..., 0].tolist()
    [[1.0, 2.0, 3.0], [5.0, 6.0, 7.0], [9.0, 10.0, 11.0]]
    """
    if reach is None:
        reach = float(np.abs(np.linalg.inv(np.asarray(matrix, np.float64))).sum(1).max())
    matrix = jnp.asarray(matrix, jnp.float32)
    offset = jnp.asarray(offset, jnp.float32)
    return _bilinear(image, matrix, offset, (int(size[0]), int(size[1])), float(cval), reach)


def _rotation_zoom(angle_degrees: Array, scale: Array) -> Array:
    """The map from output to input of a rotation by ``angle`` and a zoom by ``scale``."""
    angle = jnp.deg2rad(angle_degrees)
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    return jnp.array([[cos, -sin], [sin, cos]]) / scale


def _reach(angles: Sequence[float], scales: Sequence[float]) -> float:
    """:func:`resample`'s reach for every rotation in ``angles`` and zoom in ``scales``: the
    inverse map is ``scale * rotation^T``, whose rows sum to ``scale (|cos| + |sin|)``."""
    turns = np.deg2rad(np.asarray(angles, np.float64))
    spread = (np.abs(np.cos(turns)) + np.abs(np.sin(turns))).max()
    return float(max(scales) * spread)


def _warp(image: Array, matrix: Array, angles: Sequence[float], scales: Sequence[float]) -> Array:
    """Resample ``image`` at ``matrix @ (y, x)`` about its centre, bilinear, edges repeated;
    ``matrix`` is one of the rotations by ``angles`` and zooms by ``scales``."""
    height, width = image.shape[0], image.shape[1]
    margin = int(np.ceil(_overshoot(angles, scales, (height, width)))) + 1
    grown = jnp.pad(image, ((margin, margin), (margin, margin), (0, 0)), mode="edge")
    centre = jnp.array([(height - 1) / 2.0, (width - 1) / 2.0], jnp.float32)
    offset = centre - matrix @ centre + margin
    return resample(grown, matrix, offset, (height, width), 0.0, _reach(angles, scales))


def _overshoot(angles: Sequence[float], scales: Sequence[float], size: tuple[int, int]) -> float:
    """How far outside a picture of ``size`` any rotation by ``angles`` and zoom by ``scales``
    (about its centre) reads."""
    turns = np.deg2rad(np.asarray(angles, np.float64))
    matrices = np.stack(
        [np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]) / s
         for t in turns for s in scales]
    )  # fmt: skip
    centre = (np.asarray(size, np.float64) - 1) / 2
    corners = np.array([[0, 0], [0, size[1] - 1], [size[0] - 1, 0], [size[0] - 1, size[1] - 1]])
    read = np.einsum("mij,cj->mci", matrices, corners - centre) + centre
    return float(max(0.0, (-read).max(), (read - (np.asarray(size) - 1)).max()))


@dataclasses.dataclass(frozen=True)
class RandomScale:
    """Zoom about the centre by a factor drawn from ``scales``; the shape is unchanged."""

    scales: tuple[float, ...]

    def __call__(self, key: Array, image: Array) -> Array:
        scale = jax.random.choice(key, jnp.asarray(self.scales, jnp.float32))
        return _warp(image, _rotation_zoom(0.0, scale), [0.0], self.scales)


@dataclasses.dataclass(frozen=True)
class RandomRotate:
    """Rotate about the centre by an angle in degrees drawn from ``angles``."""

    angles: tuple[float, ...]

    def __call__(self, key: Array, image: Array) -> Array:
        angle = jax.random.choice(key, jnp.asarray(self.angles, jnp.float32))
        return _warp(image, _rotation_zoom(angle, 1.0), self.angles, [1.0])


@dataclasses.dataclass(frozen=True)
class RandomAffine:
    """Pad, jitter, zoom, rotate and jitter again, fused into one bilinear resampling.

    Equivalent to ``compose(pad(p), jitter(j1), random_scale(s), random_rotate(a), jitter(j2))``
    (pixels outside the picture read as the grey ``value``), with one gather instead of four
    copies: 1.5x the render throughput of the unfused stack on our CPU.
    """

    pad: int
    jitter: tuple[int, int]
    scales: tuple[float, ...]
    angles: tuple[float, ...]
    value: float = 0.5

    def draw(self, key: Array, size: tuple[int, int]) -> tuple[Array, Array, tuple[int, int]]:
        """One picture's draw for a picture of ``size``: the map from output pixels to where
        they read, ``(matrix (2, 2), offset (2,))``, and the output's size."""
        first, second = self.jitter
        grown = (size[0] + 2 * self.pad - first, size[1] + 2 * self.pad - first)
        out = (grown[0] - second, grown[1] - second)
        k_first, k_scale, k_angle, k_second = jax.random.split(key, 4)
        shift_first = jax.random.randint(k_first, (2,), 0, first + 1).astype(jnp.float32)
        shift_second = jax.random.randint(k_second, (2,), 0, second + 1).astype(jnp.float32)
        scale = jax.random.choice(k_scale, jnp.asarray(self.scales, jnp.float32))
        angle = jax.random.choice(k_angle, jnp.asarray(self.angles, jnp.float32))
        matrix = _rotation_zoom(angle, scale)
        centre = jnp.array([(grown[0] - 1) / 2.0, (grown[1] - 1) / 2.0], jnp.float32)
        # Output pixel -> second crop -> rotation/zoom about the centre -> first crop -> unpad.
        offset = matrix @ (shift_second - centre) + centre + shift_first - self.pad
        return matrix, offset, out

    def __call__(self, key: Array, image: Array) -> Array:
        matrix, offset, out = self.draw(key, image.shape[:2])
        reach = _reach(self.angles, self.scales)
        return resample(image, matrix, offset, out, self.value, reach)


@dataclasses.dataclass(frozen=True)
class RandomCrop:
    """A square box zoomed to the whole picture (MACO's crops, Fel et al. 2023): its side a
    fraction of the picture's drawn uniformly from ``box``, its centre from ``N(0.5,
    centre_std)`` on each axis; bilinear, pixels outside the picture read as ``value``."""

    box: tuple[float, float]
    centre_std: float = 0.15
    value: float = 0.5

    def __call__(self, key: Array, image: Array) -> Array:
        height, width = image.shape[0], image.shape[1]
        k_side, k_centre = jax.random.split(key)
        side = jax.random.uniform(k_side, (), jnp.float32, self.box[0], self.box[1])
        centre = 0.5 + self.centre_std * jax.random.normal(k_centre, (2,), jnp.float32)
        # Output pixel o reads (centre + side * ((o + 0.5) / size - 0.5)) * size - 0.5.
        extent = jnp.array([height, width], jnp.float32)
        offset = centre * extent + side * (0.5 - extent / 2) - 0.5
        matrix = side * jnp.eye(2, dtype=jnp.float32)
        return resample(image, matrix, offset, (height, width), self.value, 1.0 / self.box[0])


@dataclasses.dataclass(frozen=True)
class Noise:
    """Add normal noise of ``std`` and uniform noise in ``[-std / 2, std / 2]`` to each pixel
    (MACO's, as Xplique adds it); the picture may leave [0, 1]."""

    std: float

    def __call__(self, key: Array, image: Array) -> Array:
        k_normal, k_uniform = jax.random.split(key)
        spread = self.std * jax.random.normal(k_normal, image.shape, jnp.float32)
        spread += jax.random.uniform(k_uniform, image.shape, jnp.float32, -0.5, 0.5) * self.std
        return image + spread


@dataclasses.dataclass(frozen=True)
class Compose:
    """Apply ``transforms`` in order, each with its own key split from the one given."""

    transforms: tuple[Transform, ...]

    def __call__(self, key: Array, image: Array) -> Array:
        if not self.transforms:
            return image
        for sub, transform in zip(
            jax.random.split(key, len(self.transforms)), self.transforms, strict=True
        ):
            image = transform(sub, image)
        return image


def pad(pixels: int, mode: str = "constant", value: float = 0.5) -> Pad:
    """Pad every side (``mode``: ``"constant"`` with ``value``, ``"reflect"``, ``"edge"``).

    >>> pad(4)(None, jnp.zeros((8, 8, 3))).shape
    (16, 16, 3)
    """
    if mode not in ("constant", "reflect", "edge"):
        raise ValueError(f"pad mode must be 'constant', 'reflect' or 'edge', got {mode!r}")
    return Pad(pixels=int(pixels), mode=mode, value=float(value))


def jitter(pixels: int) -> Jitter:
    """Random translation by cropping ``pixels`` fewer rows and columns.

    >>> jitter(4)(jax.random.key(0), jnp.zeros((8, 8, 3))).shape
    (4, 4, 3)
    """
    return Jitter(pixels=int(pixels))


def random_scale(scales: Sequence[float]) -> RandomScale:
    """Random zoom by one of ``scales``.

    >>> random_scale([0.9, 1.1])(jax.random.key(0), jnp.zeros((8, 8, 3))).shape
    (8, 8, 3)
    """
    return RandomScale(scales=tuple(float(s) for s in scales))


def random_rotate(angles: Sequence[float]) -> RandomRotate:
    """Random rotation by one of ``angles`` (degrees).

    >>> random_rotate(range(-5, 6))(jax.random.key(0), jnp.zeros((8, 8, 3))).shape
    (8, 8, 3)
    """
    return RandomRotate(angles=tuple(float(a) for a in angles))


def random_crop(
    box: tuple[float, float] = (0.5, 1.0), centre_std: float = 0.15, value: float = 0.5
) -> RandomCrop:
    """A random square box of the picture, ``box`` its side's range (fractions of the
    picture), zoomed to the picture's size: see :class:`RandomCrop`.

    >>> output_size(random_crop(), (8, 6))
    (8, 6)
    """
    low, high = float(box[0]), float(box[1])
    if not 0.0 < low <= high:
        raise ValueError(f"box must be (low, high) with 0 < low <= high, got {box!r}")
    return RandomCrop(box=(low, high), centre_std=float(centre_std), value=float(value))


def noise(std: float) -> Noise:
    """Pixel noise: normal of ``std`` plus uniform in ``[-std / 2, std / 2]``.

    >>> output_size(noise(0.1), (4, 4))
    (4, 4)
    """
    return Noise(std=float(std))


def compose(*transforms: Transform) -> Compose:
    """One transform applying ``transforms`` in order.

    >>> compose(pad(2), jitter(2))(jax.random.key(0), jnp.zeros((8, 8, 3))).shape
    (10, 10, 3)
    """
    return Compose(transforms=tuple(transforms))


def identity() -> Compose:
    """No transform.

    >>> identity()(None, jnp.zeros((4, 4, 3))).shape
    (4, 4, 3)
    """
    return Compose(transforms=())


def random_affine(
    pad: int,
    jitter: tuple[int, int],
    scales: Sequence[float],
    angles: Sequence[float],
    value: float = 0.5,
) -> RandomAffine:
    """Pad, jitter, random zoom, random rotation and jitter in one resampling.

    >>> random_affine(2, (2, 1), [1.0], [0.0])(jax.random.key(0), jnp.zeros((8, 8, 3))).shape
    (9, 9, 3)
    """
    return RandomAffine(
        pad=int(pad),
        jitter=(int(jitter[0]), int(jitter[1])),
        scales=tuple(float(s) for s in scales),
        angles=tuple(float(a) for a in angles),
        value=float(value),
    )


def standard(scale: float = 1.0) -> RandomAffine:
    """The usual robustness stack: pad 12, jitter 8, scale 0.9-1.1, rotate +-10 deg, jitter 4
    (fused into one resampling, see :class:`RandomAffine`).

    ``scale`` multiplies the pixel amounts, for pictures much smaller or larger than 128 px.

    >>> standard(0.5)(jax.random.key(0), jnp.zeros((32, 32, 3))).shape
    (38, 38, 3)
    """
    px = max(1, round(12 * scale)), max(1, round(8 * scale)), max(1, round(4 * scale))
    return random_affine(
        px[0], (px[1], px[2]), np.round(np.linspace(0.9, 1.1, 11), 3), range(-10, 11)
    )


def output_size(transform: Transform, size: tuple[int, int]) -> tuple[int, int]:
    """The ``(H, W)`` that ``transform`` makes of an RGB image of ``size`` (no compute)."""
    height, width, _ = output_shape(transform, (*size, 3))
    return height, width


def output_shape(transform: Transform, shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """The ``(H, W, C)`` that ``transform`` makes of an image of ``shape`` (no compute).

    >>> output_shape(standard(0.5), (32, 32, 4))
    (38, 38, 4)
    """
    out = jax.eval_shape(
        transform, jax.random.key(0), jax.ShapeDtypeStruct(tuple(shape), jnp.float32)
    ).shape
    return int(out[0]), int(out[1]), int(out[2])
