"""One streaming pass over a dataset: every statistic the checks of a picture read.

For each requested layer, a compiled batch step (all units at once, the batch split over the
devices) computes each image's score per unit, where its map peaks, and, on a dataset with
concept masks, the Network Dissection counts; the host folds each batch into a fixed-size
:class:`LayerStatistics`:

- top-k and bottom-k images per unit: score, image index and the map position of the peak
  (of the trough, for bottom-k);
- a histogram of the per-image scores (the scale of a unit: "is 27 high for this unit?");
- the threshold of the unit's top ``quantile`` of activations over all images and positions,
  and per (unit, concept) the intersection and union counts of the thresholded, upsampled
  maps with the concept masks (Bau et al. 2017, NetDissect-Lite), counted tile by tile
  (:mod:`fvjax.checks.overlap`).

**The threshold, exact or bounded.** The first images (up to ``calibration_bytes`` of
activations) are kept; if the dataset ends there, the threshold is the exact quantile
(``np.quantile``, linear interpolation) and every count is exact. A larger dataset takes its
thresholds from that prefix: a ladder of candidates at ``quantile * LADDER`` is counted over the
whole dataset, and the candidate whose *realized* quantile (the exact fraction of all positions
above it, counted in the pass) is nearest the requested one is used. The realized quantile is
reported per unit (``realized_quantile``): the documented error is the gap between it and the
request, and the counts at that threshold are exact. Memory does not grow with the dataset;
the prefix is read twice (once to calibrate, once to count), the rest once.

A unit is *active* above its threshold; activations equal to it count too (a saturated unit's
top is one repeated value, which NetDissect-Lite's ``>`` would leave empty), except when the
threshold is the unit's lowest value (a ReLU's zeros), which never counts.

The union follows NetDissect-Lite: a unit's active pixels count towards a concept's union only in
images where the concept's category is annotated (has a labelled pixel).

>>> from fvjax.data.datasets import world_dataset
>>> from fvjax.models import from_fn
>>> model = from_fn(lambda x: {"rgb": x})
>>> stats = dataset_pass(model, world_dataset(0, 16, 32), ["rgb"], top_k=4)["rgb"]
>>> stats.top_value.shape, stats.iou.shape, stats.exact
((3, 4), (3, 25), True)
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from fvjax.checks.overlap import image_counts
from fvjax.checks.statistics import Fold, LayerStatistics, finish, score_edges
from fvjax.data.datasets import Dataset, Examples
from fvjax.errors import ArgumentError, ConceptDatasetError
from fvjax.models.adapters import Model
from fvjax.progress import Progress
from fvjax.rendering.step import device_mesh

#: How a unit's map becomes one number per image: ``mean`` over positions (the ``channel``
#: objective), ``max``, or the ``center`` position (the ``neuron`` objective).
SCORES = ("mean", "max", "center")
#: Candidate thresholds, as multiples of the requested quantile, when the dataset is larger than
#: the calibration prefix: each costs a full count, so three (the nearest realized quantile is
#: within a factor 1.19 of the request when the prefix's estimate is off by up to 1.41).
LADDER = (2**-0.5, 1.0, 2**0.5)
DEFAULT_QUANTILE = 0.005


class _Batch(NamedTuple):
    """What the compiled step returns for one batch of one layer."""

    score: Any  # (B, U)
    peak: Any  # (B, U) flat map position of the max
    trough: Any  # (B, U) flat map position of the min
    above: Any  # (U, K) positions above each candidate threshold
    intersection: Any  # (U, K, C)
    active: Any  # (U, K, G) active pixels in images where category G is annotated
    concept_pixels: Any  # (C,)


def _as_maps(activations: jax.Array) -> jax.Array:
    """``(B, h, w, U)`` for a spatial layer; ``(B, 1, 1, U)`` for a dense one."""
    if activations.ndim == 4:
        return activations
    if activations.ndim == 2:
        return activations[:, None, None, :]
    raise ArgumentError(
        f"the dataset pass reads layers of shape (h, w, units) or (units,), got "
        f"{tuple(activations.shape[1:])}"
    )


def _score(maps: jax.Array, score: str) -> jax.Array:
    """``(B, U)`` per-image score of ``(B, h, w, U)`` maps (jax or numpy arrays alike)."""
    if score == "mean":
        return maps.mean(axis=(1, 2))
    if score == "max":
        return maps.max(axis=(1, 2))
    return maps[:, maps.shape[1] // 2, maps.shape[2] // 2]


def quantiles(values: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """``(U, K)`` float32: ``np.quantile(values (n, U), levels, axis=0).T`` (linear
    interpolation), from a partial sort of only the order statistics it needs (measured 3x
    faster than ``np.quantile`` on InceptionV1's mixed4a: no float64 copy, no full partition).

    >>> quantiles(np.arange(11.0)[:, None], [0.5, 0.95]).tolist()
    [[5.0, 9.5]]
    """
    n = len(values)
    where = np.asarray(levels, np.float64) * (n - 1)
    low, high = np.floor(where).astype(np.int64), np.ceil(where).astype(np.int64)
    ranks = np.unique(np.concatenate([low, high]))
    ordered = np.partition(values, ranks, axis=0)
    a, b = ordered[low].astype(np.float64), ordered[high].astype(np.float64)  # (K, U)
    fraction = (where - low)[:, None]
    return (a + (b - a) * fraction).T.astype(np.float32)


def _layer_batch(
    maps, valid, labels, masks, thresholds, score: str, vocabulary: tuple[int, int], category, axis
) -> _Batch:
    """One device's share of a batch: per-image scores and positions, summed counts."""
    b, h, w, u = maps.shape
    flat = maps.reshape(b, h * w, u)
    weight = valid.astype(jnp.int32)
    above = jnp.einsum("bpuk,b->uk", (flat[..., None] > thresholds).astype(jnp.int32), weight)
    k = thresholds.shape[-1]
    n_concepts, g = vocabulary
    if n_concepts:
        # (B, M, U, K), (B, U, K), (B, M)
        per_slot, counts, slot_pixels = image_counts(maps, masks, thresholds)
        slot_pixels = slot_pixels * weight[:, None]
        concept_id = jnp.where(labels >= 0, labels, n_concepts)  # dump empty slots
        per_slot = per_slot * weight[:, None, None, None]
        intersection = jax.ops.segment_sum(
            per_slot.reshape(-1, u, k), concept_id.reshape(-1), num_segments=n_concepts + 1
        )[:n_concepts].transpose(1, 2, 0)
        concept_pixels = jax.ops.segment_sum(
            slot_pixels.reshape(-1), concept_id.reshape(-1), num_segments=n_concepts + 1
        )[:n_concepts]
        slot_category = jnp.where(labels >= 0, category[jnp.maximum(labels, 0)], g)
        annotated = jnp.zeros((b, g + 1), jnp.int32)
        annotated = annotated.at[jnp.arange(b)[:, None], slot_category].max(
            (slot_pixels > 0).astype(jnp.int32)
        )[:, :g]
        active_in = jnp.einsum("buk,bg->ukg", counts, annotated * weight[:, None])
    else:
        intersection = jnp.zeros((u, k, 0), jnp.int32)
        concept_pixels = jnp.zeros((0,), jnp.int32)
        active_in = jnp.zeros((u, k, 0), jnp.int32)
    if axis is not None:
        above, intersection, active_in, concept_pixels = jax.lax.psum(
            (above, intersection, active_in, concept_pixels), axis
        )
    return _Batch(
        _score(maps, score),
        flat.argmax(1),
        flat.argmin(1),
        above,
        intersection,
        active_in,
        concept_pixels,
    )


def _counts(layers, score, vocabulary, mesh, maps, valid, labels, masks, thresholds, category):
    """Every layer's :class:`_Batch`, the batch split over ``mesh`` (devices never talk but
    to sum the counts)."""
    axis = None if mesh is None else "batch"

    def run(maps, valid, labels, masks, thresholds, category):
        return {
            name: _layer_batch(
                maps[name],
                valid,
                labels,
                masks,
                thresholds[name],
                score,
                vocabulary,
                category,
                axis,
            )
            for name in layers
        }

    if mesh is None:
        return run(maps, valid, labels, masks, thresholds, category)
    split, whole = PartitionSpec("batch"), PartitionSpec()
    out = {name: _Batch(split, split, split, whole, whole, whole, whole) for name in layers}
    return jax.shard_map(
        run, mesh=mesh, in_specs=(split,) * 4 + (whole,) * 2, out_specs=out, check_vma=False
    )(maps, valid, labels, masks, thresholds, category)


def _maps(apply, layers, params, images):
    activations = apply(params, images)
    return {name: _as_maps(activations[name]) for name in layers}


#: ``forward_maps(apply, layers, params, images) -> {layer: (B, h, w, U)}``, compiled (a dense
#: layer as ``1 x 1`` maps): the model's forward pass as every check reads it.
forward_maps = jax.jit(_maps, static_argnums=(0, 1))
_count = jax.jit(_counts, static_argnums=(0, 1, 2, 3))


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _step(apply, layers, score, vocabulary, mesh, params, images, *rest):
    """The compiled batch step of the main phase: forward and counts in one program."""
    return _counts(layers, score, vocabulary, mesh, _maps(apply, layers, params, images), *rest)


def _padded(examples: Examples, batch_size: int, slots: int, mask_size) -> tuple:
    """The batch padded to ``batch_size`` rows (one compiled shape), with its validity."""
    n = len(examples.images)
    pad = batch_size - n
    valid = np.arange(batch_size) < n

    def grow(array, fill=0):
        if not pad:  # a full batch is not copied (measured 0.4 ms an image for worldnet)
            return array
        return np.concatenate([array, np.full((pad, *array.shape[1:]), fill, array.dtype)])

    labels = examples.labels.astype(np.int32, copy=False)
    masks = examples.masks
    if slots == 0:
        labels = np.zeros((n, 0), np.int32)
        masks = np.zeros((n, 0, *mask_size), bool)
    return (
        grow(examples.images.astype(np.float32, copy=False)),
        valid,
        grow(labels, -1),
        grow(masks),
        n,
    )


def dataset_pass(
    model: Model,
    dataset: Dataset,
    layers: Sequence[str],
    *,
    top_k: int = 16,
    quantile: float = DEFAULT_QUANTILE,
    score: str = "mean",
    dissect: bool | None = None,
    batch_size: int = 64,
    bins: int = 256,
    calibration_bytes: int = 2**28,
    devices: int | Sequence[Any] | None = None,
    progress: Progress | None = None,
) -> dict[str, LayerStatistics]:
    """Run ``model`` once over ``dataset`` and gather every statistic of ``layers``' units.

    Args:
        model: any :class:`Model`.
        dataset: a :class:`~fvjax.data.datasets.Dataset` (world, folder, Broden layout).
        layers: layers of shape ``(h, w, units)`` or ``(units,)``.
        top_k: examples kept per unit, at each end.
        quantile: the top quantile of activations that dissection thresholds at.
        score: how a map becomes one number per image (:data:`SCORES`).
        dissect: count IoU against the dataset's concepts (default: when it has masks).
        batch_size: images per compiled step (a multiple of the device count).
        bins: bins of the per-image score histogram.
        calibration_bytes: activations kept to fix thresholds and histogram edges; a dataset
            whose activations fit is handled exactly.
        devices: a device count or the devices (default: all local devices).
        progress: a :class:`Progress` counting images.

    Returns:
        ``{layer: LayerStatistics}``.
    """
    layers = tuple(dict.fromkeys(layers))
    if not layers:
        raise ArgumentError("the dataset pass needs at least one layer")
    if score not in SCORES:
        raise ArgumentError(f"score must be one of {SCORES}, got {score!r}")
    if not 0.0 < quantile < 1.0:
        raise ArgumentError(f"quantile must lie in (0, 1), got {quantile!r}")
    for name, value, least in (("top_k", top_k, 1), ("bins", bins, 1)):
        if not isinstance(value, int) or value < least:
            raise ArgumentError(f"{name} must be an int >= {least}, got {value!r}")
    if len(dataset) == 0:
        raise ArgumentError(f"dataset {dataset.name} holds no images")
    concepts = dataset.concepts
    has_masks = concepts is not None and dataset.slots > 0
    if dissect is None:
        dissect = has_masks
    if dissect and not has_masks:
        raise ConceptDatasetError(
            f"dissection needs concept masks, and dataset {dataset.name} has none; use the "
            "world or a Broden-layout dataset, or dissect=False"
        )
    mesh = device_mesh(devices)
    n_devices = 1 if mesh is None else mesh.size
    if batch_size % n_devices:
        raise ArgumentError(
            f"batch_size={batch_size} must be a multiple of the {n_devices} devices"
        )
    shapes = {name: model.check_layer(name, dataset.size) for name in layers}
    for name, shape in shapes.items():
        if len(shape) not in (1, 3):
            raise ArgumentError(
                f"layer {name!r} has shape {shape}; the dataset pass reads (h, w, units) or "
                "(units,) layers"
            )
    n_concepts = len(concepts.names) if dissect else 0
    category = np.asarray(concepts.category, np.int32) if dissect else np.zeros(1, np.int32)
    slots = dataset.slots if dissect else 0
    groups = len(concepts.categories) if dissect else 0
    vocabulary = (n_concepts, groups)

    # Phase 1: the calibration prefix, activations kept.
    kept: list[dict[str, np.ndarray]] = []
    kept_bytes, calibrated = 0, 0
    for examples in dataset.batches(batch_size):
        images, valid, labels, masks, n = _padded(examples, batch_size, slots, dataset.mask_size)
        maps = forward_maps(model.apply, layers, model.params, images)
        maps = {name: np.asarray(value[:n]) for name, value in maps.items()}
        kept.append(maps)
        calibrated += n
        kept_bytes += sum(value.nbytes for value in maps.values())
        if progress is not None:
            progress.update(n, note="read")
        if kept_bytes >= calibration_bytes:
            break
    exact = calibrated == len(dataset)
    ratios = (1.0,) if exact else LADDER
    thresholds = {}
    for name in layers:
        values = np.concatenate([m[name] for m in kept])
        flat = values.reshape(-1, values.shape[-1])
        levels = [1.0 - min(quantile * r, 1.0) for r in ratios]
        found = quantiles(flat, levels)  # (U, K)
        # Ties at the threshold count as active (a saturated unit's top is one value), except
        # at the unit's floor (a ReLU's zeros): ``> nextafter(t, -inf)`` is ``>= t``.
        floor = flat.min(0).astype(np.float32)[:, None]
        lowered = np.nextafter(found, np.float32(-np.inf))
        thresholds[name] = np.where(found > floor, lowered, found)
    running = {
        name: Fold(
            score_edges(
                np.concatenate([_score(m[name].astype(np.float64), score) for m in kept]), bins
            ),
            top_k,
            len(ratios),
            n_concepts,
            groups,
        )
        for name in layers
    }

    # Phase 2: every image counted; the prefix from its kept activations.
    seen = 0
    for position, examples in enumerate(dataset.batches(batch_size)):
        images, valid, labels, masks, n = _padded(examples, batch_size, slots, dataset.mask_size)
        if position < len(kept):
            maps = {
                name: np.concatenate(
                    [value, np.zeros((batch_size - n, *value.shape[1:]), value.dtype)]
                )
                for name, value in kept[position].items()
            }
            out = _count(
                layers, score, vocabulary, mesh, maps, valid, labels, masks, thresholds, category
            )
        else:
            out = _step(
                model.apply,
                layers,
                score,
                vocabulary,
                mesh,
                model.params,
                images,
                valid,
                labels,
                masks,
                thresholds,
                category,
            )
            if progress is not None:
                progress.update(n, note="read")
        for name in layers:
            running[name].add(jax.device_get(out[name]), examples.index, n)
        seen += n
    if seen != len(dataset):
        raise ArgumentError(
            f"dataset {dataset.name} claims {len(dataset)} images but yielded {seen}"
        )
    return {
        name: finish(
            name,
            score,
            shapes[name],
            running[name],
            thresholds[name],
            quantile,
            exact,
            concepts if dissect else None,
            seen,
        )
        for name in layers
    }
