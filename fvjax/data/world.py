"""A procedural world of shapes, colours and textures, with a per-pixel mask for every concept.

Each image is a muted background (flat colour, gradient or low-contrast noise) with one to
three non-overlapping objects. An object has a shape, a named colour and a texture; striped
objects also have an orientation, and patterned ones (stripes, checker, dots) a scale and a thin
outline in their colour, so their shape shows. A texture's gaps are transparent, so every pixel
shows either the background or exactly one object's colour; that makes the colour masks exact
("red" pixels are red), while the other masks cover the object's whole silhouette. The
background stays muted (channels in ``BACKGROUND_RANGE``), so it is never a named colour.

The world is a pure function of ``(seed, index)``: image ``i`` of ``generate(seed, n, size)`` is
the same, bit for bit, whatever ``n`` is and however the images are split into batches
(``start`` skips ahead in the random stream). Plain numpy, no JAX: about 0.5 ms per 64x64 image.

>>> world = generate(seed=0, n=4, size=32)
>>> world.images.shape, world.labels.shape
((4, 32, 32, 3), (4, 25))
>>> world.masks(["red", "stripes"]).shape
(4, 2, 32, 32)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np

from fvjax.data.images import as_size

# --- Concept vocabularies: read them, don't copy them. -------------------------------------

SHAPES = ("disk", "square", "triangle", "ring", "cross", "star")

#: Named colours and their RGB values (``COLOUR_RGB[i]`` is the colour ``COLOURS[i]``).
COLOURS = ("red", "orange", "yellow", "green", "cyan", "blue", "magenta", "white", "black")
COLOUR_RGB = np.array(
    [
        [1.0, 0.0, 0.0],
        [1.0, 0.5, 0.0],
        [1.0, 1.0, 0.0],
        [0.0, 1.0, 0.0],
        [0.0, 1.0, 1.0],
        [0.0, 0.0, 1.0],
        [1.0, 0.0, 1.0],
        [1.0, 1.0, 1.0],
        [0.0, 0.0, 0.0],
    ],
    np.float32,
)

TEXTURES = ("solid", "stripes", "checker", "dots")

#: Stripe angles in degrees, counterclockwise from horizontal as seen on screen:
#: ``orient_0`` stripes run left-right, ``orient_90`` top-bottom, ``orient_45`` like ``/``.
ORIENTATION_DEGREES = (0, 45, 90, 135)
ORIENTATIONS = tuple(f"orient_{d}" for d in ORIENTATION_DEGREES)

#: Pattern scales: the repeat period of stripes, checks and dots, as a fraction of the image.
SCALES = ("fine", "coarse")
SCALE_PERIODS = (1 / 14, 1 / 8)

#: Every concept, in the order of ``World.labels`` columns and ``World.masks()`` channels.
CONCEPTS = SHAPES + COLOURS + TEXTURES + ORIENTATIONS + SCALES

#: ``{group: its concepts}``; every concept belongs to exactly one group.
CONCEPT_GROUPS = {
    "shape": SHAPES,
    "colour": COLOURS,
    "texture": TEXTURES,
    "orientation": ORIENTATIONS,
    "scale": SCALES,
}

MAX_OBJECTS = 3
#: Patterned objects get an outline this wide (a fraction of the image, at least one pixel) in
#: their colour, so their shape stays visible through the pattern's gaps.
OUTLINE = 1 / 64
BACKGROUNDS = ("flat", "gradient", "noise")
#: How likely each texture is; stripes are the commonest, as they carry orientation.
TEXTURE_PROBABILITIES = (0.25, 0.35, 0.2, 0.2)
#: Object radius range (of the shape's enclosing circle) as a fraction of the image.
RADIUS_RANGE = (0.14, 0.23)
#: Each channel of an object's colour is moved by up to this much, so colours are not exact.
COLOUR_JITTER = 0.06
ORIENTATION_JITTER_DEGREES = 5.0
#: Background channels stay in this range, well away from every named colour.
BACKGROUND_RANGE = (0.2, 0.8)
MIN_SIZE = 16

_GAP = 1.0  # pixels kept free between two objects' enclosing circles
_CANDIDATES = 32  # candidate positions tried per object before giving up on it
_NOISE_GRID = 8  # the noise background is bilinear noise on an 8x8 grid
_NOISE_AMPLITUDE = 0.1
_DOT_RADIUS = 0.34  # of the dot period: dots cover about 36% of the object

# Columns of the per-image uniform random numbers; a fixed layout keeps image i a function of
# (seed, i) alone.
_IMAGE_COLUMNS = {
    "n_objects": 1,
    "background": 1,
    "background_colours": 8,  # (grey level, 3 tints) for each of two colours
    "gradient_angle": 1,
    "noise": _NOISE_GRID * _NOISE_GRID * 3,
}
_OBJECT_COLUMNS = {
    "shape": 1,
    "colour": 1,
    "texture": 1,
    "orientation": 1,
    "scale": 1,
    "radius": 1,
    "angle": 1,
    "phase": 2,
    "orientation_jitter": 1,
    "colour_jitter": 3,
    "candidates": 2 * _CANDIDATES,
}
_COLUMNS = sum(_IMAGE_COLUMNS.values()) + MAX_OBJECTS * sum(_OBJECT_COLUMNS.values())


class Objects(NamedTuple):
    """What each object slot of each image holds; ``-1`` where an attribute does not apply.

    Attributes (all ``(N, MAX_OBJECTS)`` unless noted):
        active: whether the slot holds an object.
        shape, colour, texture: indices into ``SHAPES``, ``COLOURS``, ``TEXTURES``.
        orientation: index into ``ORIENTATIONS`` for striped objects, else -1.
        scale: index into ``SCALES`` for patterned objects, else -1.
        center: ``(N, MAX_OBJECTS, 2)`` float32 ``(y, x)`` in pixels.
        radius: float32 radius of the shape's enclosing circle, in pixels.
        rgb: ``(N, MAX_OBJECTS, 3)`` float32, the object's (jittered) colour.
    """

    active: np.ndarray
    shape: np.ndarray
    colour: np.ndarray
    texture: np.ndarray
    orientation: np.ndarray
    scale: np.ndarray
    center: np.ndarray
    radius: np.ndarray
    rgb: np.ndarray

    def concepts(self) -> np.ndarray:
        """``(N, MAX_OBJECTS, len(CONCEPTS))`` bool: the concepts each object has."""
        n = self.active.shape[0]
        table = np.zeros((n, MAX_OBJECTS, len(CONCEPTS)), bool)
        offset = 0
        for group, attribute in zip(
            CONCEPT_GROUPS.values(),
            (self.shape, self.colour, self.texture, self.orientation, self.scale),
            strict=True,
        ):
            for i in range(len(group)):
                table[..., offset + i] = self.active & (attribute == i)
            offset += len(group)
        return table


class World(NamedTuple):
    """A batch of the world.

    Attributes:
        images: ``(N, H, W, 3)`` float32 RGB in [0, 1].
        labels: ``(N, len(CONCEPTS))`` bool, ``labels[i, c]``: concept ``CONCEPTS[c]`` is in
            image ``i`` (exactly when its mask is non-empty). The training target of WorldNet.
        object_map: ``(N, H, W)`` int8, the slot of the object whose silhouette covers the
            pixel, -1 for background.
        painted: ``(N, H, W)`` bool, the pixel shows its object's colour (False in a texture's
            gaps, where the background shows through, and on the background).
        objects: the attributes of every object slot.
    """

    images: np.ndarray
    labels: np.ndarray
    object_map: np.ndarray
    painted: np.ndarray
    objects: Objects

    def masks(self, names: Sequence[str] | None = None) -> np.ndarray:
        """Per-pixel concept masks, ``(N, len(names), H, W)`` bool (all ``CONCEPTS`` by default).

        A colour's mask holds the pixels painted in that colour; every other concept's mask is
        the silhouette of the objects that have it (so a striped object's orientation mask
        covers the whole object, gaps included).

        >>> world = generate(seed=1, n=2, size=32)
        >>> bool((world.masks(["red"])[:, 0] <= world.painted).all())
        True
        """
        names = CONCEPTS if names is None else tuple(names)
        unknown = [name for name in names if name not in CONCEPTS]
        if unknown:
            raise KeyError(f"unknown concepts {unknown}; the concepts are {CONCEPTS}")
        columns = [CONCEPTS.index(name) for name in names]
        has = self.objects.concepts()[:, :, columns]  # (N, slots, C)
        masks = np.zeros((len(self.images), len(columns), *self.object_map.shape[1:]), bool)
        for slot in range(MAX_OBJECTS):
            inside = self.object_map == slot
            masks |= inside[:, None] & has[:, slot, :, None, None]
        is_colour = np.array([name in COLOURS for name in names])
        masks[:, is_colour] &= self.painted[:, None]
        return masks


def generate(seed: int, n: int, size: int | tuple[int, int], start: int = 0) -> World:
    """Images ``start .. start + n - 1`` of the world drawn from ``seed``, with their masks.

    Image ``i`` depends on ``(seed, i)`` and ``size`` only, so batches made with ``start`` join
    up into exactly the images of one larger call.

    Args:
        seed: any non-negative int; different seeds give independent worlds.
        n: number of images.
        size: ``H`` (square) or ``(H, W)``, at least ``MIN_SIZE``.
        start: index of the first image.

    Returns:
        A :class:`World` of ``n`` images ``(n, H, W, 3)``.

    >>> a = generate(seed=3, n=4, size=24)
    >>> b = generate(seed=3, n=2, size=24, start=2)
    >>> bool((a.images[2:] == b.images).all())
    True
    """
    height, width = as_size(size)
    if min(height, width) < MIN_SIZE:
        raise ValueError(f"world images must be at least {MIN_SIZE}x{MIN_SIZE}, got {size}")
    if n < 0 or start < 0:
        raise ValueError(f"n and start must be non-negative, got n={n}, start={start}")

    bit_generator = np.random.PCG64(seed)
    bit_generator.advance(start * _COLUMNS)  # one 64-bit draw per uniform double
    uniforms = np.random.Generator(bit_generator).random((n, _COLUMNS))

    # Memory grows with n * H * W; chunks keep the temporaries small.
    chunk = max(1, 2**20 // (height * width))
    starts = range(0, n, chunk) if n else [0]
    return _concatenate([_render(uniforms[i : i + chunk], height, width) for i in starts])


def world_batches(
    seed: int, size: int | tuple[int, int], batch_size: int, n: int
) -> Iterator[World]:
    """``n`` images of the procedural world in batches of ``batch_size``, with their labels and
    masks; together they are exactly ``world.generate(seed, n, size)``.

    >>> [len(batch.images) for batch in world_batches(seed=0, size=32, batch_size=3, n=7)]
    [3, 3, 1]
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    for start in range(0, n, batch_size):
        yield generate(seed, min(batch_size, n - start), size, start=start)


def _concatenate(parts: list[World]) -> World:
    if len(parts) == 1:
        return parts[0]
    objects = Objects(*(np.concatenate(f) for f in zip(*(p.objects for p in parts), strict=True)))
    fields = (np.concatenate(f) for f in zip(*(p[:-1] for p in parts), strict=True))
    return World(*fields, objects=objects)


def _split_columns(
    uniforms: np.ndarray,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Name the ``(N, K)`` uniforms: ``{name: (N, width)}`` per image and
    ``{name: (N, MAX_OBJECTS, width)}`` per object slot."""
    n = len(uniforms)
    image, offset = {}, 0
    for name, width in _IMAGE_COLUMNS.items():
        image[name] = uniforms[:, offset : offset + width]
        offset += width
    per_slot = uniforms[:, offset:].reshape(n, MAX_OBJECTS, sum(_OBJECT_COLUMNS.values()))
    slot, offset = {}, 0
    for name, width in _OBJECT_COLUMNS.items():
        slot[name] = per_slot[:, :, offset : offset + width]
        offset += width
    return image, slot


def _pick(u: np.ndarray, count: int) -> np.ndarray:
    """Uniform indices in ``[0, count)`` from uniforms ``u`` in [0, 1)."""
    return np.minimum(u * count, count - 1).astype(np.int8)


def _draw_objects(image: dict, slot: dict, height: int, width: int) -> Objects:
    """Object attributes and non-overlapping positions."""
    n = len(image["n_objects"])
    n_objects = 1 + _pick(image["n_objects"][:, 0], MAX_OBJECTS)
    extent = np.array([height, width], np.float64)
    low, high = RADIUS_RANGE
    radius = min(height, width) * (low + (high - low) * slot["radius"][..., 0])  # (n, slots)

    # Each object takes the first of its candidate positions that keeps clear of the objects
    # placed before it; when none does, the slot stays empty.
    active = np.zeros((n, MAX_OBJECTS), bool)
    center = np.zeros((n, MAX_OBJECTS, 2))
    for k in range(MAX_OBJECTS):
        margin = radius[:, k, None, None] + _GAP
        candidates = slot["candidates"][:, k].reshape(n, _CANDIDATES, 2)
        candidates = margin + candidates * (extent - 2 * margin)  # (n, candidates, 2)
        free = np.ones((n, _CANDIDATES), bool)
        for j in range(k):
            distance = np.linalg.norm(candidates - center[:, j, None], axis=-1)
            clear = distance >= radius[:, k, None] + radius[:, j, None] + _GAP
            free &= clear | ~active[:, j, None]
        center[:, k] = candidates[np.arange(n), np.argmax(free, axis=1)]
        active[:, k] = (k < n_objects) & free.any(axis=1)

    texture_edges = np.cumsum(TEXTURE_PROBABILITIES)[:-1]
    texture = np.searchsorted(texture_edges, slot["texture"][..., 0], side="right")
    striped = texture == TEXTURES.index("stripes")
    patterned = texture != TEXTURES.index("solid")
    colour = _pick(slot["colour"][..., 0], len(COLOURS))
    jitter = COLOUR_JITTER * (2 * slot["colour_jitter"] - 1)
    rgb = np.clip(COLOUR_RGB[colour] + jitter, 0, 1) * active[..., None]

    def where_active(values: np.ndarray, applies: np.ndarray | bool = True) -> np.ndarray:
        return np.where(active & applies, values, -1).astype(np.int8)

    return Objects(
        active=active,
        shape=where_active(_pick(slot["shape"][..., 0], len(SHAPES))),
        colour=where_active(colour),
        texture=where_active(texture),
        orientation=where_active(_pick(slot["orientation"][..., 0], len(ORIENTATIONS)), striped),
        scale=where_active(_pick(slot["scale"][..., 0], len(SCALES)), patterned),
        center=center.astype(np.float32),
        radius=radius.astype(np.float32),
        rgb=rgb.astype(np.float32),
    )


def _background(image: dict, height: int, width: int) -> np.ndarray:
    """``(N, H, W, 3)`` float32 muted backgrounds: flat, a linear gradient or smooth noise."""
    n = len(image["background"])
    kind = _pick(image["background"][:, 0], len(BACKGROUNDS))
    # A grey level plus a small tint per channel: never saturated, so never a named colour.
    grey_and_tint = image["background_colours"].reshape(n, 2, 4)
    grey = 0.3 + 0.4 * grey_and_tint[..., :1]
    colours = (grey + 0.16 * (grey_and_tint[..., 1:] - 0.5))[:, :, None, None]  # (n, 2, 1, 1, 3)
    y = ((np.arange(height) + 0.5) / height - 0.5)[:, None]
    x = (np.arange(width) + 0.5) / width - 0.5

    background = np.empty((n, height, width, 3), np.float32)
    (i,) = np.nonzero(kind == BACKGROUNDS.index("flat"))
    background[i] = colours[i, 0]
    (i,) = np.nonzero(kind == BACKGROUNDS.index("gradient"))
    angle = 2 * np.pi * image["gradient_angle"][i, :, None]
    along = np.cos(angle) * x + np.sin(angle) * y  # (m, H, W), within +-sqrt(1/2)
    t = np.clip(along / np.sqrt(2.0) + 0.5, 0, 1)[..., None]
    background[i] = colours[i, 0] * (1 - t) + colours[i, 1] * t
    (i,) = np.nonzero(kind == BACKGROUNDS.index("noise"))
    grid = image["noise"][i].reshape(len(i), _NOISE_GRID, _NOISE_GRID, 3)
    smooth = _upsample(_upsample(grid, height, axis=1), width, axis=2)
    background[i] = colours[i, 0] + 2 * _NOISE_AMPLITUDE * (smooth - 0.5)
    return np.clip(background, *BACKGROUND_RANGE)


def _upsample(grid: np.ndarray, length: int, axis: int) -> np.ndarray:
    """Linear interpolation of ``grid`` to ``length`` samples along ``axis`` (pixel centres).

    Elementwise on purpose: a matrix product's rounding may depend on the batch size, and
    image ``i`` must not.
    """
    cells = grid.shape[axis]
    position = np.clip((np.arange(length) + 0.5) * cells / length - 0.5, 0, cells - 1)
    left = np.minimum(np.floor(position).astype(int), cells - 2)
    shape = [1] * grid.ndim
    shape[axis] = length
    frac = (position - left).reshape(shape)
    return np.take(grid, left, axis) * (1 - frac) + np.take(grid, left + 1, axis) * frac


def _silhouette(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-test of a shape in object coordinates; every shape fits the unit circle."""
    if shape == "disk":
        return u * u + v * v <= 1.0
    if shape == "ring":
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= 0.55**2)
    if shape == "square":  # half-side 0.7: its corners just touch the unit circle
        return np.maximum(np.abs(u), np.abs(v)) <= 0.7
    if shape == "triangle":  # equilateral, inscribed in the unit circle: inradius 1/2
        inside = np.ones(u.shape, bool)
        for edge in range(3):
            normal = 2 * np.pi * edge / 3 - np.pi / 2
            inside &= u * np.cos(normal) + v * np.sin(normal) <= 0.5
        return inside
    if shape == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= 0.32) & (av <= 0.95)) | ((av <= 0.32) & (au <= 0.95))
    if shape == "star":  # five points; fold the angle into half of one point's sector
        sector = 2 * np.pi / 5
        phi = np.abs(np.mod(np.arctan2(v, u) + sector / 2, sector) - sector / 2)
        rho = np.sqrt(u * u + v * v)
        px, py = rho * np.cos(phi), rho * np.sin(phi)
        # Inside when on the origin's side of the edge from the tip (1, 0) to the inner corner.
        ex, ey = 0.45 * np.cos(sector / 2) - 1.0, 0.45 * np.sin(sector / 2)
        return ex * py - ey * (px - 1.0) >= 0
    raise AssertionError(shape)


def _pattern(texture: str, x: np.ndarray, y: np.ndarray, period, phase, angle) -> np.ndarray:
    """Which pixels a texture paints; ``x, y`` pixel centres, the rest ``(m, 1, 1[, 2])``."""
    if texture == "solid":
        return np.ones(np.broadcast_shapes(x.shape, y.shape, period.shape), bool)
    if texture == "stripes":
        # Stripes at angle a run along (cos a, -sin a) on screen (y points down), so the
        # pattern changes along the normal (sin a, cos a).
        across = (x * np.sin(angle) + y * np.cos(angle)) / period + phase[..., 0]
        return np.mod(across, 1.0) < 0.5
    if texture == "checker":  # squares of half a period
        cells = np.floor(2 * x / period + phase[..., 0]) + np.floor(2 * y / period + phase[..., 1])
        return np.mod(cells, 2) == 0
    if texture == "dots":
        dx = np.mod(x / period + phase[..., 0], 1.0) - 0.5
        dy = np.mod(y / period + phase[..., 1], 1.0) - 0.5
        return dx * dx + dy * dy <= _DOT_RADIUS**2
    raise AssertionError(texture)


def _outline(inside: np.ndarray, width: int) -> np.ndarray:
    """The pixels of ``(m, H, W)`` silhouettes within ``width`` steps of their edge."""
    eroded = inside.copy()
    for _ in range(width):
        shrunk = eroded.copy()
        shrunk[:, 1:] &= eroded[:, :-1]
        shrunk[:, :-1] &= eroded[:, 1:]
        shrunk[:, :, 1:] &= eroded[:, :, :-1]
        shrunk[:, :, :-1] &= eroded[:, :, 1:]
        eroded = shrunk
    return inside & ~eroded


def _render(uniforms: np.ndarray, height: int, width: int) -> World:
    n = len(uniforms)
    image, slot = _split_columns(uniforms)
    objects = _draw_objects(image, slot, height, width)

    # Per-pixel geometry in float32: plenty for pixel coordinates, and half the memory traffic.
    y = np.arange(height, dtype=np.float32)[:, None] + 0.5
    x = np.arange(width, dtype=np.float32)[None, :] + 0.5
    rotation = 2 * np.pi * slot["angle"][..., 0]
    cos, sin = np.cos(rotation).astype(np.float32), np.sin(rotation).astype(np.float32)
    degrees = np.take(ORIENTATION_DEGREES, np.maximum(objects.orientation, 0))
    degrees = degrees + ORIENTATION_JITTER_DEGREES * (2 * slot["orientation_jitter"][..., 0] - 1)
    stripe_angle = np.deg2rad(degrees).astype(np.float32)
    period = min(height, width) * np.take(SCALE_PERIODS, np.maximum(objects.scale, 0))
    period = period.astype(np.float32)
    phase = slot["phase"].astype(np.float32)

    outline_width = max(1, round(min(height, width) * OUTLINE))
    object_map = np.full((n, height, width), -1, np.int8)
    painted = np.zeros((n, height, width), bool)
    # Evaluate each object's own shape and texture only: group the images whose slot k holds
    # the same one (one slot at a time, so each image appears once per group).
    for k in range(MAX_OBJECTS):
        for s, shape in enumerate(SHAPES):
            (i,) = np.nonzero(objects.shape[:, k] == s)
            if len(i) == 0:
                continue
            dy = y - objects.center[i, k, 0, None, None]
            dx = x - objects.center[i, k, 1, None, None]
            c, s_, r = (a[i, k, None, None] for a in (cos, sin, objects.radius))
            inside = _silhouette(shape, (c * dx + s_ * dy) / r, (c * dy - s_ * dx) / r)
            object_map[i] = np.where(inside, np.int8(k), object_map[i])  # objects never overlap
        for t, texture in enumerate(TEXTURES):
            (i,) = np.nonzero(objects.texture[:, k] == t)
            if len(i) == 0:
                continue
            on = _pattern(
                texture,
                x,
                y,
                period=period[i, k, None, None],
                phase=phase[i, k, None, None, :],
                angle=stripe_angle[i, k, None, None],
            )
            inside = object_map[i] == k
            painted[i] |= inside & (on | _outline(inside, outline_width))

    object_rgb = objects.rgb[np.arange(n)[:, None, None], np.maximum(object_map, 0)]
    images = np.where(painted[..., None], object_rgb, _background(image, height, width))

    # A concept is in an image when its mask is non-empty: every placed object shows its
    # silhouette, but its colour only where the texture paints.
    shows_colour = np.stack([(painted & (object_map == k)).any(axis=(1, 2)) for k in range(3)], 1)
    concepts = objects.concepts()
    is_colour = np.isin(np.array(CONCEPTS), COLOURS)
    concepts[:, :, is_colour] &= shows_colour[..., None]
    return World(
        images=images,
        labels=concepts.any(axis=1),
        object_map=object_map,
        painted=painted,
        objects=objects,
    )
