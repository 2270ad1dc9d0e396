"""Pictures held to natural images: feature inversion, caricatures and feature accentuation.

Each takes natural images ``(I, H, W, 3)`` in [0, 1], reads their activations with one forward
pass, and renders every picture of the request in one program (:func:`fvjax.render`):

- :func:`invert` (Mahendran & Vedaldi 2015): from a random start, a picture whose activations
  at ``layer`` match the image's: it climbs ``-match(layer, targets)``, the relative squared
  distance ``|a - t|^2 / |t|^2`` of the two maps. What the layer keeps of the image.
- :func:`caricature` (Lucid's ``caricature`` recipe): from a random start, a picture whose
  activations point the image's way, exaggerated: ``likeness`` is how far the picture goes
  along the image's activations (``a.t / |t|^2``: 1 is as far as the image) times a power of
  their cosine. What the layer *sees* in the image, overdone.
- :func:`accentuate` (Hamblin et al. 2024): from the image itself, a picture that raises a unit
  while it stays close to the image at a regularization layer: ``channel(layer, units) -
  weight * match(reg_layer, targets)``, by default at the pixels (layer ``"input"``, as
  Horama's implementation does). Every (unit, image) pair is a member of one batch
  (:class:`Paired` gives each pair its own random key).

The targets are array leaves, so new images (or units) of the same shapes reuse the compiled
program. A target is a map at fixed positions, so the pictures must keep their size through
the transforms (``identity()``, ``noise``, ``random_crop`` do; ``standard()`` pads), except at
layer :data:`~fvjax.models.adapters.INPUT`, the untransformed picture. Inversions and
caricatures take no transforms by default: inverting 4 world images at worldnet's
``block3/conv`` (64 px, 256 steps) left a relative error of 0.08-0.14 without, 0.11-0.20
with pixel noise (0.05), 0.64-0.71 through MACO's crops, which move the map. Accentuations take
MACO's crops and noise (:func:`fvjax.maco.transforms`), as Horama does, and are held at the
untransformed pixels, which the crops do not move (see :data:`DEFAULT_WEIGHT`).

>>> images = np.full((2, 8, 8, 3), 0.25, np.float32)  # the targets: here the pixels
>>> obj = objectives_lib.channel("input", [0, 0]) - 100.0 * match("input", images)
>>> obj.batch_size, obj.weights.tolist()
(2, [1.0, -100.0])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fvjax.errors import ArgumentError
from fvjax.models.adapters import INPUT, Model, layer_shape, selected_activations
from fvjax.rendering import maco
from fvjax.rendering import objectives as objectives_lib
from fvjax.rendering import transforms as transforms_lib
from fvjax.rendering.engine import RenderResult, render
from fvjax.rendering.objectives import Objective, objective_class

Array = jax.Array

#: The power of the cosine in :func:`likeness`. Measured on 4 world images, worldnet
#: ``block3/conv``, 64 px, 256 steps: cosine 0.77-0.80 at power 0 (the plain dot product),
#: 0.85-0.90 at 1, 0.90-0.94 at 2, 0.93-0.96 at 4; the picture went 4.5-7.0 times as far
#: along the image's activations at 2 (4.7-7.9 at 0).
DEFAULT_POWER = 2.0
#: Accentuation's weight on the relative squared distance to the image (0 when equal).
#: Measured on worldnet ``block3/conv`` units 5 and 8 in 4 world images (64 px, 256 steps,
#: MACO's crops), held at the pixels: weight 30 raised them from -5..-11 to 17-43 (relative
#: distance 0.36-0.50), 100 to 8-36 (0.20-0.29), 300 to 0-23 (0.09-0.16); the image stays and
#: the unit's motif is drawn into it. Held at ``block3/conv`` instead, the crops move the
#: picture against the map: at weight 30 the units reached 7-34, the map stayed 0.69-0.93 away
#: and the unit's texture covered the picture; without transforms (the map then aligned) the
#: rise came as high-frequency noise over the whole picture. Units of another scale want
#: another weight.
DEFAULT_WEIGHT = 100.0
#: A pair's id is ``image << PAIR_BITS | unit``: units below ``2 ** 16``.
PAIR_BITS = 16
#: Pictures per forward pass when the finished pictures are measured.
_MEASURE_BATCH = 64


def _flat(x: Array) -> Array:
    return x.reshape(-1)


@objective_class
class Match(Objective):
    """Relative squared distance ``|a - t|^2 / |t|^2`` of ``layer``'s activations ``a`` to a
    member's ``targets`` ``t`` (Mahendran & Vedaldi's normalized loss): 0 when they match,
    1 for all-zero activations. Positive, so subtract it."""

    layer: str
    targets: Array
    _static = ("layer",)
    _batched = ("targets",)

    def __call__(self, activations: Mapping[str, Array]) -> Array:
        a, t = _flat(activations[self.layer]), _flat(self.targets)
        return jnp.sum((a - t) ** 2) / jnp.maximum(jnp.sum(t**2), 1e-12)

    def validate(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        _check_targets(self.layer, self.targets, shapes)


@objective_class
class Caricature(Objective):
    """``(a.t / |t|^2) * max(cos(a, t), 0.1) ** power``: how far ``layer``'s activations go
    along a member's ``targets``, times a power of their cosine (floored at 0.1, as Lucid
    does, so a picture that starts the wrong way still gets a gradient). Lucid divides its
    dot product by the target's norm only, so its "cosine" grows with the picture's scale."""

    layer: str
    targets: Array
    power: Array
    _static = ("layer",)
    _batched = ("targets",)

    def __call__(self, activations: Mapping[str, Array]) -> Array:
        a, t = _flat(activations[self.layer]), _flat(self.targets)
        dot, tt = jnp.dot(a, t), jnp.maximum(jnp.sum(t**2), 1e-12)
        cosine = dot / jnp.sqrt(jnp.maximum(jnp.sum(a**2), 1e-12) * tt)
        return dot / tt * jnp.maximum(cosine, 0.1) ** self.power

    def validate(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        _check_targets(self.layer, self.targets, shapes)


@objective_class
class Paired(Objective):
    """``objective`` whose members are (unit, image) pairs: the same values, but a member's
    random key comes from its pair id (``image << PAIR_BITS | unit``), not from its unit
    alone, so two images of one unit draw different noise and transforms."""

    objective: Objective
    ids: Array
    _batched = ("ids",)

    def __call__(self, activations: Mapping[str, Array]) -> Array:
        return self.objective(activations)

    def vmap_axes(self) -> Objective:
        return Paired(objective=self.objective.vmap_axes(), ids=0)

    def take(self, index: Any) -> Objective:
        return Paired(objective=self.objective.take(index), ids=self.ids[jnp.asarray(index)])

    @property
    def layer(self) -> str:
        return self.objective.layer

    @property
    def layers(self) -> frozenset[str]:
        return self.objective.layers

    @property
    def label(self) -> str:
        return f"paired({self.objective.label})"

    def unit_ids(self) -> np.ndarray:
        return np.asarray(self.ids)

    def validate(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        self.objective.validate(shapes)


def _check_targets(layer: str, targets: Array, shapes: Mapping[str, tuple[int, ...]]) -> None:
    shape = tuple(targets.shape[1:])
    want = layer_shape(shapes, layer)
    if layer == INPUT:
        # The picture itself, untransformed: only the render size decides it, checked with
        # the natural images (the transformed size the engine also checks does not apply).
        want = (*shape[:-1], 3)
    if shape != want:
        raise ArgumentError(
            f"targets of layer {layer!r} are maps of shape {shape}, but the model gives "
            f"{want} for the pictures it sees. A transform that changes the picture's size "
            "(pad, jitter, standard()) cannot be held to a map: use fvjax.transforms.identity(), "
            "noise() or random_crop(), or compare at layer 'input'"
        )


def _targets(targets: Any, what: str) -> Array:
    array = jnp.asarray(targets, jnp.float32)
    if array.ndim < 2:
        raise ArgumentError(f"{what} targets must be (members, ...) maps, got shape {array.shape}")
    if not bool(jnp.isfinite(array).all()):
        raise ArgumentError(f"{what} targets must be finite")
    return array


def match(layer: str, targets: Any) -> Match:
    """Relative squared distance to ``targets`` ``(B, *layer shape)``, one map per member.

    >>> obj = match("rgb", np.ones((2, 4, 4, 3)))
    >>> obj.batch_size, float(obj.take(0)({"rgb": jnp.zeros((4, 4, 3))}))
    (2, 1.0)
    """
    return Match(layer=layer, targets=_targets(targets, "match"))


def likeness(layer: str, targets: Any, power: float = DEFAULT_POWER) -> Caricature:
    """Caricature's objective: how far the activations go along ``targets`` ``(B, ...)``
    (1: as far as the target), times ``max(cosine, 0.1) ** power``.

    >>> obj = likeness("rgb", np.ones((1, 2, 2, 3)), power=1.0)
    >>> float(obj.take(0)({"rgb": jnp.full((2, 2, 3), 2.0)}))
    2.0
    """
    if not np.isfinite(power) or power < 0:
        raise ArgumentError(f"power must be a number >= 0, got {power!r}")
    return Caricature(layer=layer, targets=_targets(targets, "likeness"), power=jnp.float32(power))


def pair_ids(units: Any, n_images: int) -> np.ndarray:
    """``(U * I,)`` ids of every (unit, image) pair, unit-major: ``image << PAIR_BITS | unit``.

    >>> pair_ids([3, 5], 2).tolist()
    [3, 65539, 5, 65541]
    """
    units = np.asarray(units, np.int64)
    if units.size and (units.min() < 0 or units.max() >= 2**PAIR_BITS):
        raise ArgumentError(f"pairs take units 0..{2**PAIR_BITS - 1}, got {units.tolist()}")
    if not 1 <= n_images < 2 ** (31 - PAIR_BITS):
        raise ArgumentError(f"pairs take 1..{2 ** (31 - PAIR_BITS) - 1} images, got {n_images}")
    return ((np.arange(n_images)[None] << PAIR_BITS) | units[:, None]).reshape(-1)


# -- what the natural images say ------------------------------------------------------------


def layer_activations(model: Model, images: Any, layers: Iterable[str]) -> dict[str, np.ndarray]:
    """``{layer: (N, ...)}`` of ``images (N, H, W, 3)``, ``_MEASURE_BATCH`` at a time
    (:data:`~fvjax.models.adapters.INPUT`: the images themselves).

    >>> import fvjax
    >>> model = fvjax.models.from_fn(lambda x: {"rgb": x})
    >>> layer_activations(model, np.zeros((3, 4, 4, 3)), ["rgb"])["rgb"].shape
    (3, 4, 4, 3)
    """
    images = np.asarray(images, np.float32)
    layers = tuple(sorted(set(layers)))
    model_layers = tuple(name for name in layers if name != INPUT)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in model_layers}
    for first in range(0, len(images), _MEASURE_BATCH):
        batch = jnp.asarray(images[first : first + _MEASURE_BATCH])
        out = selected_activations(model.apply, model_layers, model.params, batch)
        for name in model_layers:
            parts[name].append(np.asarray(out[name], np.float32))
    found = {name: np.concatenate(values) for name, values in parts.items()}
    if INPUT in layers:
        found[INPUT] = images
    return found


def checked_images(model: Model, images: Any, layers: Iterable[str]) -> np.ndarray:
    """``images`` as ``(I, H, W, 3)`` float32 in [0, 1], the layers checked at their size.

    >>> import fvjax
    >>> model = fvjax.models.from_fn(lambda x: {"rgb": x})
    >>> checked_images(model, np.zeros((2, 4, 4, 3)), ["rgb"]).shape
    (2, 4, 4, 3)
    """
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[-1] != 3 or len(images) == 0:
        raise ArgumentError(
            f"natural images must be a batch (I, H, W, 3) of RGB pictures, got shape {images.shape}"
        )
    if not np.isfinite(images).all() or images.min() < 0 or images.max() > 1:
        raise ArgumentError("natural images must have every value in [0, 1]")
    for layer in layers:
        if layer != INPUT:
            model.check_layer(layer, images.shape[1:3])  # names the known layers if not one
    return images


def _render_settings(images: np.ndarray, settings: dict[str, Any], transforms: Any) -> dict:
    """``render``'s settings: the images' size, ``transforms`` unless given, no progress bar."""
    size = tuple(images.shape[1:3])
    asked = settings.pop("size", None)
    if asked is not None and tuple(np.broadcast_to(asked, 2)) != size:
        raise ArgumentError(f"size={asked!r}, but the natural images are {size[0]}x{size[1]}")
    settings.setdefault("transforms", transforms)
    settings.setdefault("progress", False)
    return {"size": size, **settings}


# -- results --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ImageResult:
    """Pictures made of natural images (:func:`invert`, :func:`caricature`), one row each.

    Attributes:
        images: ``(I, seeds, H, W, 3)``.
        error: ``(I, seeds)`` relative error ``|a - t| / |t|`` of the picture's activations
            ``a`` at the layer to the image's ``t``.
        cosine: ``(I, seeds)`` cosine of ``a`` and ``t``.
        scale: ``(I, seeds)`` ``a.t / |t|^2``: how far ``a`` goes along ``t`` (1: as far as
            the image).
        render: the render itself (its objective values, history, timing).
    """

    images: np.ndarray
    error: np.ndarray
    cosine: np.ndarray
    scale: np.ndarray
    render: RenderResult


@dataclasses.dataclass(frozen=True)
class AccentuationResult:
    """Accentuations of every unit in every image (:func:`accentuate`).

    Attributes:
        images: ``(U, I, H, W, 3)``: unit ``u`` accentuated in image ``i``.
        activations: ``(U, I)`` the unit's objective on the picture.
        natural: ``(U, I)`` the unit's objective on the image itself.
        distance: ``(U, I)`` relative distance ``|a - t| / |t|`` of the picture's activations
            at the regularization layer to the image's.
        units: ``(U,)`` the units.
        render: the render itself (``U * I`` pairs, one seed).
    """

    images: np.ndarray
    activations: np.ndarray
    natural: np.ndarray
    distance: np.ndarray
    units: np.ndarray
    render: RenderResult


def compare(found: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, ...]:
    """``(error, cosine, scale)`` of activations ``found (..., *shape)`` against ``targets``
    of the same shape, one figure per leading index.

    >>> [float(x[0]) for x in compare(np.full((1, 4), 2.0), np.ones((1, 4)))]
    [1.0, 1.0, 2.0]
    """
    a = np.asarray(found, np.float64).reshape(len(found), -1)
    t = np.asarray(targets, np.float64).reshape(len(targets), -1)
    tt = np.maximum((t**2).sum(1), 1e-12)
    aa = np.maximum((a**2).sum(1), 1e-12)
    dot = (a * t).sum(1)
    error = np.sqrt(((a - t) ** 2).sum(1) / tt)
    return error, dot / np.sqrt(aa * tt), dot / tt


# -- the three renders ------------------------------------------------------------------------


#: The objectives of pictures made of natural images, one member per image, by name (a job's
#: ``objective``): ``(layer, targets, power) -> objective``; only caricature's takes ``power``.
IMAGE_OBJECTIVES = {
    "invert": lambda layer, targets, power=DEFAULT_POWER: -match(layer, targets),
    "caricature": likeness,
}


def image_result(model: Model, layer: str, targets: Any, result: RenderResult) -> ImageResult:
    """``result``, a render of pictures ``(I, seeds, H, W, 3)`` held to ``targets (I, ...)``
    at ``layer`` (:data:`IMAGE_OBJECTIVES`), with each picture's error, cosine and scale.

    >>> import fvjax
    >>> model = fvjax.models.from_fn(lambda x: {"rgb": x})
    >>> pictures = np.full((1, 2, 4, 4, 3), 0.5, np.float32)  # 1 image, 2 seeds
    >>> done = RenderResult(pictures, np.zeros((1, 2)), None, np.arange(1), (0, 1), "", "rgb",
    ...                     0.0, 0.0)
    >>> image_result(model, "rgb", np.ones((1, 4, 4, 3)), done).scale.tolist()
    [[0.5, 0.5]]
    """
    n, seeds = result.images.shape[:2]
    flat = result.images.reshape(n * seeds, *result.images.shape[2:])
    found = layer_activations(model, flat, [layer])[layer]
    error, cosine, scale = compare(found, np.repeat(np.asarray(targets), seeds, axis=0))
    shape = (n, seeds)
    return ImageResult(
        result.images, error.reshape(shape), cosine.reshape(shape), scale.reshape(shape), result
    )


def _image_render(model, images, layer, kind, power, settings) -> ImageResult:
    images = checked_images(model, images, [layer])
    targets = layer_activations(model, images, [layer])[layer]
    settings = _render_settings(images, dict(settings), transforms_lib.identity())
    result = render(model, IMAGE_OBJECTIVES[kind](layer, targets, power), **settings)
    return image_result(model, layer, targets, result)


def invert(model: Model, images: Any, layer: str, **settings: Any) -> ImageResult:
    """Feature inversion: for each natural image, pictures (one per seed) from random starts
    whose activations at ``layer`` match the image's. ``settings`` are :func:`fvjax.render`'s
    (``size`` is the images'; ``transforms`` default to none: see the module docstring).

    >>> import fvjax
    >>> model = fvjax.models.from_fn(lambda x: {"rgb": x})
    >>> images = np.random.default_rng(0).uniform(size=(2, 8, 8, 3)).astype(np.float32)
    >>> found = invert(model, images, "rgb", steps=64, param=fvjax.param.pixel())
    >>> bool((found.error < 0.2).all())
    True
    """
    return _image_render(model, images, layer, "invert", DEFAULT_POWER, settings)


def caricature(
    model: Model, images: Any, layer: str, power: float = DEFAULT_POWER, **settings: Any
) -> ImageResult:
    """Caricatures: for each natural image, pictures from random starts whose activations at
    ``layer`` point the image's way, exaggerated (:func:`likeness` with ``power``).

    >>> import fvjax
    >>> model = fvjax.models.from_fn(lambda x: {"rgb": x - 0.5})
    >>> images = np.random.default_rng(0).uniform(size=(1, 8, 8, 3)).astype(np.float32)
    >>> found = caricature(model, images, "rgb", steps=32, param=fvjax.param.pixel())
    >>> bool(found.cosine[0, 0] > 0.5)
    True
    """
    return _image_render(model, images, layer, "caricature", power, settings)


def accentuation(
    model: Model,
    objective: Objective,
    images: Any,
    reg_layer: str = INPUT,
    weight: float = DEFAULT_WEIGHT,
) -> tuple[Paired, np.ndarray]:
    """Accentuation's objective and start pictures for a unit ``objective`` (``B`` units, say
    ``channel(layer, units)``) and natural ``images (I, H, W, 3)``: ``Paired`` members, one
    per (unit, image), unit-major, each ``objective - weight * match(reg_layer, image's
    activations)`` (``reg_layer``: the pixels by default, ``""`` the objective's layer);
    starts ``(B * I, 1, H, W, 3)``, each pair's image.

    >>> import fvjax
    >>> model = fvjax.models.from_fn(lambda x: {"rgb": x})
    >>> obj, starts = accentuation(model, fvjax.objectives.channel("rgb", [0, 2]),
    ...                            np.zeros((3, 4, 4, 3)))
    >>> obj.batch_size, starts.shape
    (6, (6, 1, 4, 4, 3))
    """
    reg_layer = reg_layer or objective.layer
    if not np.isfinite(weight) or weight < 0:
        raise ArgumentError(f"accentuation's weight must be a number >= 0, got {weight!r}")
    images = checked_images(model, images, [reg_layer, *objective.layers - {INPUT}])
    n_units, n_images = objective.batch_size or 1, len(images)
    ids = pair_ids(objective.unit_ids(), n_images)
    targets = layer_activations(model, images, [reg_layer])[reg_layer]
    members = np.repeat(np.arange(n_units), n_images)
    image_of = np.tile(np.arange(n_images), n_units)
    paired = objective.take(members) - weight * match(reg_layer, targets[image_of])
    return Paired(objective=paired, ids=jnp.asarray(ids, jnp.int32)), images[image_of][:, None]


def by_unit(result: RenderResult) -> RenderResult:
    """A render of :class:`Paired` members ``(U * I, 1)`` as ``(U, I)``: a row per unit, the
    images on the seeds axis (``seeds`` are the image indices).

    >>> ids = pair_ids([4, 7], 3)
    >>> flat = RenderResult(np.zeros((6, 1, 2, 2, 3)), np.arange(6.0)[:, None], None, ids,
    ...                     (0,), "paired(c)", "c", 0.0, 0.0)
    >>> grid = by_unit(flat)
    >>> grid.units.tolist(), grid.seeds, grid.activations[1].tolist()
    ([4, 7], (0, 1, 2), [3.0, 4.0, 5.0])
    """
    ids = np.asarray(result.units, np.int64)
    units, images = ids & (2**PAIR_BITS - 1), ids >> PAIR_BITS
    n_images = int(images.max()) + 1
    n_units = len(ids) // n_images
    if len(result.seeds) != 1 or not np.array_equal(ids, pair_ids(units[::n_images], n_images)):
        raise ArgumentError("by_unit takes a render of accentuation's pairs, one seed")
    history = result.history
    return dataclasses.replace(
        result,
        images=result.images.reshape(n_units, n_images, *result.images.shape[2:]),
        activations=result.activations.reshape(n_units, n_images),
        history=None if history is None else history.reshape(len(history), n_units, n_images),
        units=units[::n_images],
        seeds=tuple(range(n_images)),
    )


def accentuate(
    model: Model,
    images: Any,
    layer: str,
    units: int | Iterable[int],
    reg_layer: str = INPUT,
    weight: float = DEFAULT_WEIGHT,
    seed: int = 0,
    **settings: Any,
) -> AccentuationResult:
    """Feature accentuation: every unit of ``units`` (channels of ``layer``) raised in every
    natural image, each picture started at its image and held near it at ``reg_layer`` (the
    pixels by default; ``""``: ``layer``) by ``weight``; one program for all ``U * I`` pairs.
    ``settings`` are :func:`fvjax.render`'s (``size`` is the images'; ``transforms`` default
    to MACO's crops and noise).

    >>> import fvjax
    >>> model = fvjax.models.from_fn(lambda x: {"rgb": x})
    >>> images = np.full((2, 8, 8, 3), 0.5, np.float32)
    >>> found = accentuate(model, images, "rgb", [0, 2], weight=1.0, steps=8,
    ...                    param=fvjax.param.pixel(), transforms=fvjax.transforms.identity())
    >>> found.images.shape, bool((found.activations > found.natural).all())
    ((2, 2, 8, 8, 3), True)
    """
    taken = sorted({"seeds", "starts"} & set(settings))
    if taken:
        raise ArgumentError(f"accentuate sets {', '.join(taken)} itself (one seed: seed=)")
    unit_objective = objectives_lib.channel(layer, units)
    images = checked_images(model, images, [layer])
    settings = _render_settings(images, dict(settings), maco.transforms())
    objective, starts = accentuation(model, unit_objective, images, reg_layer, weight)
    reg_layer = reg_layer or layer
    result = by_unit(render(model, objective, seeds=(seed,), starts=starts, **settings))
    n_units, n_images = result.activations.shape
    pictures = result.images.reshape(n_units * n_images, *images.shape[1:])
    seen = layer_activations(model, np.concatenate([pictures, images]), [layer, reg_layer])
    acts = seen[layer]
    means = acts.reshape(len(acts), -1, acts.shape[-1]).mean(1)[:, result.units]  # (N, U)
    unit_of = np.repeat(np.arange(n_units), n_images)
    activations = means[np.arange(len(pictures)), unit_of].reshape(n_units, n_images)
    reg = seen[reg_layer]
    distance, _, _ = compare(reg[: len(pictures)], np.concatenate([reg[len(pictures) :]] * n_units))
    return AccentuationResult(
        images=result.images,
        activations=activations,
        natural=means[len(pictures) :].T,
        distance=distance.reshape(n_units, n_images),
        units=result.units,
        render=result,
    )
