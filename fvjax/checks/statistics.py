"""What a dataset pass learns about a layer's units, and the host-side fold that gathers it.

:func:`~fvjax.checks.scan.dataset_pass` runs the compiled batch step; each batch's
result is folded here into fixed-size arrays (:class:`Fold`), and :func:`finish` turns the
fold into a :class:`LayerStatistics`: the top/bottom-k examples, the score histogram, the
dissection threshold actually used and its exact realized quantile, and the IoU counts.

>>> import numpy as np
>>> histogram(np.array([[0.5], [2.5], [9.0]]), np.array([[0.0, 1.0, 2.0, 3.0]])).tolist()
[[0, 1, 0, 1, 1]]
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from fvjax.data.datasets import Concepts


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


class Fold:
    """The host-side fold of one layer's batches into fixed-size arrays."""

    def __init__(self, edges: np.ndarray, top_k: int, ladder: int, n_concepts: int, groups: int):
        units = len(edges)
        self.top = (
            np.full((units, 0), -np.inf),
            np.zeros((units, 0), np.int64),
            np.zeros((units, 0), np.int64),
        )
        self.bottom = self.top
        self.top_k = top_k
        self.edges = edges
        self.counts = np.zeros((units, edges.shape[1] + 1), np.int64)
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

    def add(self, batch: Any, index: np.ndarray, n: int) -> None:
        """Fold in one batch's ``_Batch`` (its first ``n`` rows are real images)."""
        score = np.asarray(batch.score[:n], np.float64)  # (n, U)
        peak, trough = np.asarray(batch.peak[:n]), np.asarray(batch.trough[:n])
        self.top = self._best(self.top, score, index, peak, self.top_k)
        negated = (-self.bottom[0], *self.bottom[1:])
        lowest = self._best(negated, -score, index, trough, self.top_k)
        self.bottom = (-lowest[0], *lowest[1:])
        self.minimum = np.minimum(self.minimum, score.min(0))
        self.maximum = np.maximum(self.maximum, score.max(0))
        self.total += score.sum(0)
        self.counts += histogram(score, self.edges)
        self.above += np.asarray(batch.above)
        self.intersection += np.asarray(batch.intersection)
        self.active += np.asarray(batch.active)
        self.concept_pixels += np.asarray(batch.concept_pixels)


def score_edges(scores: np.ndarray, bins: int) -> np.ndarray:
    """``(U, bins + 1)`` evenly spaced histogram edges per unit, 1% beyond the range of
    ``scores (n, U)`` at each end (later scores outside land in the under/overflow counts).

    >>> score_edges(np.array([[0.0], [1.0]]), 2).round(3).tolist()
    [[-0.01, 0.5, 1.01]]
    """
    low, high = scores.min(0), scores.max(0)
    span = np.where(high > low, high - low, 1.0)
    return np.linspace(low - 0.01 * span, high + 0.01 * span, bins + 1, axis=1)


def histogram(score: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``(U, bins + 2)`` counts of ``score (n, U)`` against each unit's evenly spaced
    ``edges (U, bins + 1)``: below the first edge, each bin, at or above the last."""
    units, n_edges = edges.shape
    width = (edges[:, -1] - edges[:, 0]) / (n_edges - 1)
    position = np.floor((score - edges[:, 0]) / width) + 1  # (n, U): 1 .. bins inside
    position = np.clip(np.nan_to_num(position, nan=0.0), 0, n_edges).astype(np.int64)
    flat = position + np.arange(units) * (n_edges + 1)
    return np.bincount(flat.reshape(-1), minlength=units * (n_edges + 1)).reshape(units, -1)


def finish(name, score, shape, running: Fold, thresholds, quantile, exact, concepts, n):
    """The :class:`LayerStatistics` of a finished fold: per unit, the threshold whose realized
    quantile is nearest ``quantile``, its counts, and the examples with ``(y, x)`` positions."""
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
