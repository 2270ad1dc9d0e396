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
  maps with the concept masks (Bau et al. 2017, NetDissect-Lite).

**The threshold, exact or bounded.** The first images (up to ``calibration_bytes`` of
activations) are kept; if the dataset ends there, the threshold is the exact quantile
(``np.quantile``, linear interpolation) and every count is exact. A larger dataset takes its
thresholds from that prefix: a ladder of candidates at ``quantile * LADDER`` is counted over the
whole dataset, and the candidate whose *realized* quantile (the exact fraction of all positions
above it, counted in the pass) is nearest the requested one is used. The realized quantile is
reported per unit (``realized_quantile``): the documented error is the gap between it and the
request, and the counts at that threshold are exact. Memory does not grow with the dataset;
the prefix is read twice (once to calibrate, once to count), the rest once.

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

from fvjax.data.datasets import Concepts, Dataset, Examples
from fvjax.errors import ArgumentError
from fvjax.models.adapters import Model
from fvjax.progress import Progress
from fvjax.rendering.step import device_mesh

#: How a unit's map becomes one number per image: ``mean`` over positions (the ``channel``
#: objective), ``max``, or the ``center`` position (the ``neuron`` objective).
SCORES = ("mean", "max", "center")
#: Candidate thresholds, as multiples of the requested quantile, when the dataset is larger than
#: the calibration prefix (ratios 2^(j/4): the nearest is within 9% of the request when the
#: prefix's quantiles are off by up to a factor 2).
LADDER = tuple(float(2 ** (j / 4)) for j in range(-4, 5))
DEFAULT_QUANTILE = 0.005


class LayerStatistics(NamedTuple):
    """What one pass learned about the units of a layer (numpy; ``U`` units, ``k`` examples).

    Attributes:
        layer, score: the layer and the per-image score (:data:`SCORES`).
        map_shape: ``(h, w)`` of the unit maps (``(1, 1)`` for a dense layer).
        n_images: images seen.
        top_value, top_index, top_position: ``(U, k)``, ``(U, k)``, ``(U, k, 2)``: the k
            highest-scoring images per unit, best first, and the ``(y, x)`` map position of
            each one's peak; unfilled entries (fewer than k images) have index -1.
        bottom_value, bottom_index, bottom_position: the same for the lowest scores, lowest
            first, with the position of each map's trough.
        score_edges: ``(U, bins + 1)`` histogram edges of the per-image scores.
        score_counts: ``(U, bins + 2)`` counts: below the first edge, each bin, above the last.
        score_min, score_max, score_mean: ``(U,)`` over all images.
        quantile: the requested top quantile of dissection.
        threshold: ``(U,)`` the activation threshold used.
        realized_quantile: ``(U,)`` the exact fraction of all (image, position) activations
            above ``threshold``.
        exact: whether ``threshold`` is the exact quantile (the whole dataset was calibrated).
        concepts: the dataset's vocabulary, or ``None`` (no dissection).
        intersection, union: ``(U, C)`` int64 pixel counts at ``threshold``.
        concept_pixels: ``(C,)`` int64, each concept's labelled pixels.
    """

    layer: str
    score: str
    map_shape: tuple[int, int]
    n_images: int
    top_value: np.ndarray
    top_index: np.ndarray
    top_position: np.ndarray
    bottom_value: np.ndarray
    bottom_index: np.ndarray
    bottom_position: np.ndarray
    score_edges: np.ndarray
    score_counts: np.ndarray
    score_min: np.ndarray
    score_max: np.ndarray
    score_mean: np.ndarray
    quantile: float
    threshold: np.ndarray
    realized_quantile: np.ndarray
    exact: bool
    concepts: Concepts | None
    intersection: np.ndarray
    union: np.ndarray
    concept_pixels: np.ndarray

    @property
    def units(self) -> int:
        return len(self.top_value)

    @property
    def iou(self) -> np.ndarray:
        """``(U, C)`` float64 intersection over union (0 where the union is empty)."""
        return self.intersection / np.maximum(self.union, 1)

    def rank(self, unit: int, value: float) -> tuple[float, float]:
        """The fraction of natural images scoring at least ``value`` on ``unit``, and the
        bound on its error: exact (error 0) within the top-k and above the maximum, else read
        from the histogram (error: the fraction in ``value``'s bin).

        >>> import numpy as np
        """
        n = max(self.n_images, 1)
        top = self.top_value[unit][self.top_index[unit] >= 0]
        if value > self.score_max[unit]:
            return 0.0, 0.0
        if len(top) and value >= top[-1]:
            return float(np.sum(top >= value)) / n, 0.0
        edges, counts = self.score_edges[unit], self.score_counts[unit]
        position = int(np.searchsorted(edges, value, side="right"))  # 0: below first edge
        above = counts[position + 1 :].sum()
        inside = counts[position]
        if 1 <= position < len(edges):
            low, high = edges[position - 1], edges[position]
            share = (high - value) / (high - low) if high > low else 0.5
        else:
            share = 0.5
        return float(above + share * inside) / n, float(inside) / n


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
    if score == "mean":
        return maps.mean(axis=(1, 2))
    if score == "max":
        return maps.max(axis=(1, 2))
    return maps[:, maps.shape[1] // 2, maps.shape[2] // 2]


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
        mask_h, mask_w = masks.shape[-2:]
        up = jax.image.resize(maps, (b, mask_h, mask_w, u), "bilinear").reshape(b, -1, u)
        active = (up[..., None] > thresholds).astype(jnp.float32)  # (B, P, U, K)
        hot = masks.reshape(b, masks.shape[1], -1).astype(jnp.float32)  # (B, M, P)
        per_slot = jnp.einsum("bpuk,bmp->bmuk", active, hot).astype(jnp.int32)
        slot_pixels = hot.sum(-1).astype(jnp.int32) * weight[:, None]  # (B, M)
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
        counts = active.sum(1).astype(jnp.int32)  # (B, U, K)
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


_forward = jax.jit(_maps, static_argnums=(0, 1))
_count = jax.jit(_counts, static_argnums=(0, 1, 2, 3))


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _step(apply, layers, score, vocabulary, mesh, params, images, *rest):
    """The compiled batch step of the main phase: forward and counts in one program."""
    return _counts(layers, score, vocabulary, mesh, _maps(apply, layers, params, images), *rest)


class _Running:
    """The host-side fold of one layer's batches into fixed-size arrays."""

    def __init__(self, units: int, top_k: int, ladder: int, n_concepts: int, groups: int):
        self.top = (
            np.full((units, 0), -np.inf),
            np.zeros((units, 0), np.int64),
            np.zeros((units, 0), np.int64),
        )
        self.bottom = self.top
        self.top_k = top_k
        self.scores: list[np.ndarray] = []  # kept until the histogram edges are fixed
        self.edges: np.ndarray | None = None
        self.counts: np.ndarray | None = None
        self.minimum = np.full(units, np.inf)
        self.maximum = np.full(units, -np.inf)
        self.total = np.zeros(units)
        self.above = np.zeros((units, ladder), np.int64)
        self.intersection = np.zeros((units, ladder, n_concepts), np.int64)
        self.active = np.zeros((units, ladder, groups), np.int64)
        self.concept_pixels = np.zeros(n_concepts, np.int64)

    @staticmethod
    def _best(kept, score, index, position, k):
        """Merge a batch's ``score (n, U)`` into the kept highest ``k`` per unit (``(U, k)``
        values, image indices, positions); ties go to the lower image index."""
        values = np.concatenate([kept[0], score.T], 1)
        indices = np.concatenate([kept[1], np.broadcast_to(index, score.T.shape)], 1)
        positions = np.concatenate([kept[2], position.T], 1)
        order = np.lexsort((indices, -values), axis=1)[:, :k]
        return tuple(np.take_along_axis(a, order, 1) for a in (values, indices, positions))

    def add(self, batch: _Batch, index: np.ndarray, n: int, histogram) -> None:
        score = np.asarray(batch.score[:n], np.float64)  # (n, U)
        peak, trough = np.asarray(batch.peak[:n]), np.asarray(batch.trough[:n])
        self.top = self._best(self.top, score, index, peak, self.top_k)
        negated = (-self.bottom[0], *self.bottom[1:])
        lowest = self._best(negated, -score, index, trough, self.top_k)
        self.bottom = (-lowest[0], *lowest[1:])
        self.minimum = np.minimum(self.minimum, score.min(0))
        self.maximum = np.maximum(self.maximum, score.max(0))
        self.total += score.sum(0)
        if self.edges is None:
            self.scores.append(score)
        else:
            self.counts += histogram(score, self.edges)
        self.above += np.asarray(batch.above)
        self.intersection += np.asarray(batch.intersection)
        self.active += np.asarray(batch.active)
        self.concept_pixels += np.asarray(batch.concept_pixels)

    def fix_histogram(self, bins: int, histogram) -> None:
        """Edges from the scores seen so far (the calibration prefix); later scores outside
        them land in the under/overflow counts."""
        low, high = self.minimum, self.maximum
        span = np.where(high > low, high - low, 1.0)
        self.edges = np.linspace(low - 0.01 * span, high + 0.01 * span, bins + 1, axis=1)
        self.counts = np.zeros((len(low), bins + 2), np.int64)
        for score in self.scores:
            self.counts += histogram(score, self.edges)
        self.scores = []


def _histogram(score: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``(U, bins + 2)`` counts of ``score (n, U)`` against per-unit ``edges (U, bins + 1)``."""
    units, n_edges = edges.shape
    position = np.stack(
        [np.searchsorted(edges[u], score[:, u], side="right") for u in range(units)]
    )
    counts = np.zeros((units, n_edges + 1), np.int64)
    np.add.at(counts, (np.arange(units)[:, None], position), 1)
    return counts


def _padded(examples: Examples, batch_size: int, slots: int, mask_size) -> tuple:
    """The batch padded to ``batch_size`` rows (one compiled shape), with its validity."""
    n = len(examples.images)
    pad = batch_size - n
    valid = np.arange(batch_size) < n

    def grow(array, fill=0):
        return np.concatenate([array, np.full((pad, *array.shape[1:]), fill, array.dtype)])

    labels = examples.labels.astype(np.int32)
    masks = examples.masks
    if slots == 0:
        labels = np.zeros((n, 0), np.int32)
        masks = np.zeros((n, 0, *mask_size), bool)
    return grow(examples.images.astype(np.float32)), valid, grow(labels, -1), grow(masks), n


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
        raise ArgumentError(
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
        maps = _forward(model.apply, layers, model.params, images)
        maps = {name: np.asarray(value[:n]) for name, value in maps.items()}
        kept.append(maps)
        calibrated += n
        kept_bytes += sum(value.nbytes for value in maps.values())
        if progress is not None:
            progress.update(n, note="calibrating")
        if kept_bytes >= calibration_bytes:
            break
    exact = calibrated == len(dataset)
    ratios = (1.0,) if exact else LADDER
    thresholds = {}
    for name in layers:
        values = np.concatenate([m[name] for m in kept])
        flat = values.reshape(-1, values.shape[-1]).astype(np.float64)
        levels = [1.0 - min(quantile * r, 1.0) for r in ratios]
        thresholds[name] = np.quantile(flat, levels, axis=0).T.astype(np.float32)  # (U, K)
    running = {
        name: _Running(thresholds[name].shape[0], top_k, len(ratios), n_concepts, groups)
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
                progress.update(n, note="counting")
        for name in layers:
            running[name].add(jax.device_get(out[name]), examples.index, n, _histogram)
        seen += n
        if position + 1 == len(kept):
            for name in layers:
                running[name].fix_histogram(bins, _histogram)
    if seen != len(dataset):
        raise ArgumentError(
            f"dataset {dataset.name} claims {len(dataset)} images but yielded {seen}"
        )
    return {
        name: _finish(
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


def _finish(name, score, shape, running: _Running, thresholds, quantile, exact, concepts, n):
    h, w = (shape[0], shape[1]) if len(shape) == 3 else (1, 1)
    realized = running.above / float(n * h * w)  # (U, K)
    with np.errstate(divide="ignore"):
        gap = np.abs(np.log(np.maximum(realized, 1e-300) / quantile))
    pick = gap.argmin(1)
    units = np.arange(len(pick))
    intersection = running.intersection[units, pick]  # (U, C)
    if concepts is not None:
        active = running.active[units, pick][:, concepts.category]  # (U, C)
        union = active + running.concept_pixels[None] - intersection
    else:
        union = np.zeros_like(intersection)

    def positions(flat):
        return np.stack([flat // w, flat % w], -1).astype(np.int32)

    def filled(kept):
        values, index, where = kept
        k = running.top_k
        missing = k - values.shape[1]
        if missing > 0:
            values = np.pad(values, ((0, 0), (0, missing)), constant_values=np.nan)
            index = np.pad(index, ((0, 0), (0, missing)), constant_values=-1)
            where = np.pad(where, ((0, 0), (0, missing)))
        return values.astype(np.float32), index, positions(where)

    top, bottom = filled(running.top), filled(running.bottom)
    return LayerStatistics(
        layer=name,
        score=score,
        map_shape=(h, w),
        n_images=n,
        top_value=top[0],
        top_index=top[1],
        top_position=top[2],
        bottom_value=bottom[0],
        bottom_index=bottom[1],
        bottom_position=bottom[2],
        score_edges=running.edges,
        score_counts=running.counts,
        score_min=running.minimum,
        score_max=running.maximum,
        score_mean=running.total / n,
        quantile=quantile,
        threshold=thresholds[units, pick],
        realized_quantile=realized[units, pick],
        exact=exact,
        concepts=concepts,
        intersection=intersection,
        union=union,
        concept_pixels=running.concept_pixels,
    )
