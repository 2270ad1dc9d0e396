"""The evidence beside each picture: a unit's natural examples, concepts and scale.

:func:`unit_evidence` joins what the dataset pass learned about a layer
(:class:`~fvjax.checks.scan.LayerStatistics`) with the pictures rendered for its units:

- **synthetic vs natural**: each picture's *reach*, its activation on the scale the natural
  images set: ``(activation - natural mean) / (top natural - natural mean)``, so 0 is an
  average image and 1 the unit's best one (a plain ratio to the top image means nothing on a
  signed layer whose scores are all negative); and the fraction of natural images scoring at
  least as high (``rank``, with its error bound; 0 means above every natural image);
- **dataset examples**: the top-k (and, on a signed layer, bottom-k) images, each cropped around
  its peak to the unit's receptive field (computed from the model's input gradient) with the
  activation map over it;
- **Network Dissection**: the unit's best concept, the runners-up, and whether it detects it;
- **flags**: ``far-above-natural`` when every picture's reach exceeds ``FAR_ABOVE`` (the
  telltale of a component that never fires on natural images, Geirhos et al. 2023);
  ``off-path`` from the path check (:mod:`fvjax.checks.paths`).

>>> import numpy as np
>>> reach(np.array([5.0, 50.0]), natural_mean=1.0, natural_top=5.0).tolist()
[1.0, 12.25]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from fvjax.checks.card import unit_card_html
from fvjax.checks.dissection import DETECTOR_IOU, UnitLabel, label_units
from fvjax.checks.receptive import ReceptiveField, crop, heat_overlay, receptive_field
from fvjax.checks.scan import forward_maps
from fvjax.checks.statistics import LayerStatistics
from fvjax.data.datasets import Dataset
from fvjax.models.adapters import Model

#: A unit whose every picture reaches beyond this (in natural spreads above the mean) is
#: flagged. Optimized pictures are superstimuli; a silent component reaches far beyond them.
FAR_ABOVE = 30.0
FLAGS = ("far-above-natural", "off-path")


class Example(NamedTuple):
    """A natural image of a unit: its score, where its map peaks, and what it shows there."""

    index: int
    value: float
    position: tuple[int, int]
    source: str
    crop: np.ndarray  # (h, w, 3) float32: the receptive field around the peak
    overlay: np.ndarray  # the same crop with the unit's activation map over it


class UnitFacets(NamedTuple):
    """A unit's facets beside its pictures (see :mod:`fvjax.checks.facets`); ``F`` facets.

    Attributes:
        sizes: ``(F,)`` top natural images in each facet, largest first.
        members: ``F`` tuples of dataset indices, best first.
        silhouette: the clustering's mean silhouette (NaN with one facet).
        seed_facet: ``(S,)`` the facet each seed's picture lies nearest (activation space).
        covered: facets at least one seed lies nearest.
        pictures: ``(F, H, W, 3)`` a picture of each facet (started from its mean image,
            steered along what sets it apart), or ``None``.
        activations: ``(F,)`` their objective values, or ``None``.
        pictures_facet: ``(F,)`` the facet each facet picture lies nearest, or ``None``.
        pictures_covered: facets a facet picture lies nearest, or ``None``.
    """

    sizes: np.ndarray
    members: tuple[tuple[int, ...], ...]
    silhouette: float
    seed_facet: np.ndarray
    covered: int
    pictures: np.ndarray | None = None
    activations: np.ndarray | None = None
    pictures_facet: np.ndarray | None = None
    pictures_covered: int | None = None

    def summary(self) -> dict[str, Any]:
        """The facets as plain JSON values (what the manifest records)."""
        out: dict[str, Any] = {
            "n": len(self.sizes),
            "sizes": [int(n) for n in self.sizes],
            "members": [list(m) for m in self.members],
            "silhouette": _float(self.silhouette),
            "seed_facet": [int(f) for f in self.seed_facet],
            "covered": int(self.covered),
        }
        if self.pictures_covered is not None:
            out["guided_activation"] = _floats(self.activations)
            out["guided_facet"] = [int(f) for f in self.pictures_facet]
            out["guided_covered"] = int(self.pictures_covered)
        return out


class UnitEvidence(NamedTuple):
    """Everything a unit card shows. ``S`` seeds; natural figures use the pass's ``score``.

    Attributes:
        layer, unit, unit_name: which unit.
        seeds: ``(S,)`` the pictures' seeds.
        activations: ``(S,)`` each picture's objective value.
        reach: ``(S,)`` each picture's activation on the natural scale (0: the natural mean,
            1: the top natural image; NaN when every natural image scores the same).
        rank, rank_error: ``(S,)`` fraction of natural images scoring at least as high.
        top, bottom: natural examples (``bottom`` empty unless the layer is signed).
        label: the dissection, or ``None`` without concept masks.
        natural_edges, natural_counts: the histogram of natural scores (counts include the
            under/overflow bins at both ends).
        natural_max, natural_mean: over the dataset.
        plain: ``(S,)`` activations of the plain procedure (pixels, no transforms, no
            decorrelation, same steps), or ``None``.
        path: the path check's per-layer figures, or ``None``.
        flags: a subset of :data:`FLAGS`.
        pictures: ``(S, H, W, 3)`` the pictures, when given (a notebook shows them).
        history: ``(steps, S)`` the objective along the optimization, when given.
        facets: the unit's :class:`~fvjax.checks.facets.UnitFacets`, or ``None``.
    """

    layer: str
    unit: int
    unit_name: str | None
    seeds: tuple[int, ...]
    activations: np.ndarray
    reach: np.ndarray
    rank: np.ndarray
    rank_error: np.ndarray
    top: tuple[Example, ...]
    bottom: tuple[Example, ...]
    label: UnitLabel | None
    natural_edges: np.ndarray
    natural_counts: np.ndarray
    natural_max: float
    natural_mean: float
    plain: np.ndarray | None = None
    path: Any = None
    flags: tuple[str, ...] = ()
    pictures: np.ndarray | None = None
    history: np.ndarray | None = None
    facets: Any = None

    def summary(self) -> dict[str, Any]:
        """The unit's figures as plain JSON values (what the manifest records)."""
        out: dict[str, Any] = {
            "layer": self.layer,
            "unit": self.unit,
            "picture_activation": _floats(self.activations),
            "reach": _floats(self.reach),
            "natural_rank": _floats(self.rank),
            "natural_rank_error": _floats(self.rank_error),
            "natural_max": _float(self.natural_max),
            "natural_mean": _float(self.natural_mean),
            "top": [[e.index, _float(e.value)] for e in self.top],
            "bottom": [[e.index, _float(e.value)] for e in self.bottom],
            "flags": list(self.flags),
        }
        if self.label is not None:
            out["concept"] = self.label.best.concept
            out["concept_category"] = self.label.best.category
            out["iou"] = round(self.label.best.iou, 5)
            out["detector"] = self.label.detector
            out["runners_up"] = [[m.concept, round(m.iou, 5)] for m in self.label.runners_up]
        if self.plain is not None:
            out["plain_activation"] = _floats(self.plain)
        if self.path is not None:
            out["path"] = self.path.summary()
        if self.facets is not None:
            out["facets"] = self.facets.summary()
        return out

    def _repr_html_(self) -> str:
        """The unit's card, images embedded: how a notebook shows the evidence."""
        return unit_card_html(self, pictures=self.pictures, history=self.history)


def _float(value: float) -> float | None:
    return None if not np.isfinite(value) else round(float(value), 6)


def _floats(values: np.ndarray) -> list[float | None]:
    return [_float(v) for v in np.asarray(values, np.float64).reshape(-1)]


def reach(activations: np.ndarray, natural_mean: float, natural_top: float) -> np.ndarray:
    """Activations on a unit's natural scale: 0 at the natural mean, 1 at the top image."""
    spread = natural_top - natural_mean
    activations = np.asarray(activations, np.float64)
    if not spread > 0:
        return np.full(activations.shape, np.nan)
    return (activations - natural_mean) / spread


def flags_for(reaches: np.ndarray, far_above: float = FAR_ABOVE) -> tuple[str, ...]:
    """The flags that follow from a unit's pictures' reach.

    >>> flags_for(np.array([80.0, 95.0]))
    ('far-above-natural',)
    """
    reaches = np.asarray(reaches, np.float64)
    return ("far-above-natural",) if np.all(reaches > far_above) else ()


def _examples(
    model: Model,
    dataset: Dataset,
    stats: LayerStatistics,
    field: tuple[np.ndarray, np.ndarray, np.ndarray],
    units: Sequence[int],
    field_of_view: ReceptiveField,
    batch_size: int,
) -> dict[int, tuple[Example, ...]]:
    """Crops and overlays of the images named in ``field`` (values, indices, positions)."""
    values, indices, positions = field
    wanted = sorted({int(i) for u in units for i in indices[u] if i >= 0})
    maps, images = {}, {}
    for start in range(0, len(wanted), batch_size):
        chunk = wanted[start : start + batch_size]
        pixels = dataset.images(chunk)
        layers = (stats.layer,)
        out = np.asarray(forward_maps(model.apply, layers, model.params, pixels)[stats.layer])
        for i, index in enumerate(chunk):
            images[index], maps[index] = pixels[i], out[i]
    found = {}
    for u in units:
        examples = []
        for value, index, (y, x) in zip(values[u], indices[u], positions[u], strict=True):
            if index < 0:
                continue
            box = field_of_view.box(int(y), int(x))
            whole = heat_overlay(images[index], maps[index][..., u])
            examples.append(
                Example(
                    int(index),
                    float(value),
                    (int(y), int(x)),
                    dataset.describe(int(index)),
                    crop(images[index], box),
                    crop(whole, box),
                )
            )
        found[u] = tuple(examples)
    return found


def unit_evidence(
    model: Model,
    dataset: Dataset,
    stats: LayerStatistics,
    units: Sequence[int],
    activations: np.ndarray,
    seeds: Sequence[int],
    *,
    top_k: int | None = None,
    detector_iou: float = DETECTOR_IOU,
    far_above: float = FAR_ABOVE,
    plain: np.ndarray | None = None,
    paths: Sequence[Any] | None = None,
    pictures: np.ndarray | None = None,
    history: np.ndarray | None = None,
    facets: Sequence[Any] | None = None,
    batch_size: int = 64,
) -> list[UnitEvidence]:
    """The evidence of each of ``units`` (rows of ``activations (U, S)``, pictures' values).

    ``top_k`` examples are cropped per unit and end (default: all the pass kept). ``plain``
    ``(U, S)`` are the plain procedure's activations; ``paths`` one path check per unit;
    ``pictures (U, S, H, W, 3)`` and ``history (steps, U, S)`` ride along for notebooks;
    ``facets`` one :class:`~fvjax.checks.facets.UnitFacets` per unit.
    """
    units = [int(u) for u in units]
    activations = np.asarray(activations, np.float64).reshape(len(units), -1)
    k = stats.top_value.shape[1] if top_k is None else min(top_k, stats.top_value.shape[1])
    field_of_view = receptive_field(model, stats.layer, dataset.size)
    top = _examples(
        model, dataset, stats,
        (stats.top_value[:, :k], stats.top_index[:, :k], stats.top_position[:, :k]),
        units, field_of_view, batch_size,
    )  # fmt: skip
    signed = bool(np.nanmin(stats.bottom_value) < 0)
    bottom = (
        _examples(
            model,
            dataset,
            stats,
            (stats.bottom_value[:, :k], stats.bottom_index[:, :k], stats.bottom_position[:, :k]),
            units,
            field_of_view,
            batch_size,
        )  # fmt: skip
        if signed
        else {}
    )
    labels = (
        label_units(stats.iou[units], stats.concepts, detector_iou, units=units)
        if stats.concepts is not None
        else [None] * len(units)
    )
    evidence = []
    for row, unit in enumerate(units):
        reaches = reach(activations[row], stats.score_mean[unit], stats.top_value[unit, 0])
        ranks = np.array([stats.rank(unit, a) for a in activations[row]]).reshape(-1, 2)
        path = paths[row] if paths is not None else None
        flags = list(flags_for(reaches, far_above))
        if path is not None and path.off_path:
            flags.append("off-path")
        evidence.append(
            UnitEvidence(
                layer=stats.layer,
                unit=unit,
                unit_name=model.unit_name(stats.layer, unit),
                seeds=tuple(int(s) for s in seeds),
                activations=activations[row],
                reach=reaches,
                rank=ranks[:, 0],
                rank_error=ranks[:, 1],
                top=top[unit],
                bottom=bottom.get(unit, ()),
                label=labels[row],
                natural_edges=stats.score_edges[unit],
                natural_counts=stats.score_counts[unit],
                natural_max=float(stats.score_max[unit]),
                natural_mean=float(stats.score_mean[unit]),
                plain=None if plain is None else np.asarray(plain[row], np.float64),
                path=path,
                flags=tuple(sorted(flags, key=FLAGS.index)),
                pictures=None if pictures is None else np.asarray(pictures[row]),
                history=None if history is None else np.asarray(history)[:, row],
                facets=None if facets is None else facets[row],
            )
        )
    return evidence
