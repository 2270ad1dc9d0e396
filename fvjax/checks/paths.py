"""The path check: does a picture reach its unit the way natural images do?

Geirhos et al. 2023 showed that a picture can drive a unit through other paths than the natural
images that drive it (a fooling circuit, a silent component). This check follows each picture
down the network. At each layer below the unit, an image is described by what feeds the unit
where it fires: the channel means of the layer over the unit's receptive field around the peak
of its map (a photo shows a feature once, a picture tiles it; the whole image for a dense
unit), each channel standardized by its mean and spread over random natural images (else
channels that are busy on every image make every pair look alike). Two images are compared by
the Spearman rank correlation of these vectors.

Per unit and layer (``T``: the unit's top natural examples, ``R``: random natural images):

- ``picture``: for each picture, its correlation with the nearest of ``T``, averaged over seeds;
- ``natural``: for each of ``T``, its correlation with the nearest *other* of ``T`` (how
  alike the unit's own examples are: the reference);
- ``random``: for each of ``R``, its correlation with the nearest of ``T`` (how alike any
  image looks to them: the floor), summarised by its median;
- ``rival``: the share of the *other checked units* whose top examples the pictures resemble
  more than their own unit's (channels standardized over all random rows; averaged over
  seeds); ``natural_rival``: the same share for the unit's own top examples (each left out of
  its own set), what near-duplicate units show without any manipulation.

**The flag.** A unit is ``off-path`` when, over the last two path layers (just below the unit,
where a clean picture should look most like its examples), its pictures' ``rival`` exceeds its
natural examples' ``natural_rival`` by more than :data:`RIVAL_LIMIT` (0.3): the pictures look
like other units' natural examples more often than the unit's own examples do. A fooling
circuit's pictures take the path of the unit they were routed to. With fewer than
:data:`MIN_RIVALS` other units checked the contrast is too thin, and the flag falls back to
``picture <= random`` at the last layer (no closer to the unit's examples than a median random
image). Geirhos et al. found that pictures and unrelated images look alike below the last
layers; on worldnet the random floor alone flagged 17 of 64 clean ``block3/conv`` units.

Measured on worldnet (1000 world images, the default procedure: 4 seeds, 256 steps): clean
logits 1 of 25 flagged, clean ``block3/conv`` 8 of 64, a fooling circuit's logits 15 of 25.

>>> spearman(np.array([[1.0, 2.0, 3.0]]), np.array([[1.0, 5.0, 9.0], [3.0, 2.0, 1.0]])).round(6)
array([[ 1., -1.]])
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fvjax.checks.card import svg_lines
from fvjax.checks.receptive import receptive_field
from fvjax.checks.statistics import LayerStatistics
from fvjax.data.datasets import Dataset
from fvjax.errors import ArgumentError
from fvjax.models.adapters import Model

#: Most layers the automatic choice follows (spread evenly by receptive field).
MAX_PATH_LAYERS = 6
#: Other checked units needed for the ``rival`` flag (else the random-floor fallback).
MIN_RIVALS = 3
#: The ``rival`` share above which a unit is flagged ``off-path``.
RIVAL_LIMIT = 0.3
#: The unit's field is read as a ``GRID x GRID`` grid of channel means (where in the field a
#: feature sits matters to a conv unit; a whole-image field is read as one part).
GRID = 3


class PathCheck(NamedTuple):
    """One unit's path figures, a value per path layer (lowest first)."""

    layers: tuple[str, ...]
    picture: np.ndarray
    natural: np.ndarray
    random: np.ndarray
    rival: np.ndarray
    natural_rival: np.ndarray
    off_path: bool

    def summary(self) -> dict[str, Any]:
        def rounded(values: np.ndarray) -> list[float]:
            return [round(float(v), 4) for v in values]

        return {
            "layers": list(self.layers),
            "picture_to_top": rounded(self.picture),
            "top_to_top": rounded(self.natural),
            "random_to_top": rounded(self.random),
            "rival_units": rounded(self.rival),
            "natural_rival_units": rounded(self.natural_rival),
            "off_path": self.off_path,
        }

    def svg(self) -> str:
        """The path plot: the three curves over the layers."""
        return svg_lines(
            [
                ("pictures to top examples", self.picture),
                ("top examples to each other", self.natural),
                ("random images to top examples", self.random),
                ("share of other units' examples nearer: pictures", self.rival),
                ("... the same for its natural examples", self.natural_rival),
            ],
            title="Spearman correlation of channel means, layer by layer",
            x_labels=self.layers,
            width=760,
            legend=270,
        )


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks along the last axis, ties given their mean rank."""
    order = np.argsort(x, axis=-1, kind="stable")
    ranks = np.empty_like(x, dtype=np.float64)
    np.put_along_axis(ranks, order, np.arange(x.shape[-1], dtype=np.float64)[None], axis=-1)
    for row in range(x.shape[0]):  # ties: rare on real activations, exact zeros after a ReLU
        values, inverse, counts = np.unique(x[row], return_inverse=True, return_counts=True)
        if len(values) < x.shape[-1]:
            sums = np.zeros(len(values))
            np.add.at(sums, inverse, ranks[row])
            ranks[row] = (sums / counts)[inverse]
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(n, m)`` Spearman rank correlations between the rows of ``a (n, d)`` and ``b (m, d)``."""
    ra, rb = _ranks(np.asarray(a, np.float64)), _ranks(np.asarray(b, np.float64))
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    norms = np.linalg.norm(ra, axis=1)[:, None] * np.linalg.norm(rb, axis=1)[None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norms > 0, ra @ rb.T / np.where(norms > 0, norms, 1.0), 0.0)


def path_layers(
    model: Model, layer: str, size: Any, most: int = MAX_PATH_LAYERS
) -> tuple[str, ...]:
    """The layers below ``layer``, found without knowing the network: those whose receptive
    field is smaller than ``layer``'s (deeper layers see more), lowest first, at most
    ``most`` spread evenly. Name them yourself for a network where that does not hold."""
    shapes = model.layer_shapes(size)
    model.check_layer(layer, size)

    def extent(name: str) -> int:
        if len(shapes[name]) != 3:
            return 10**9  # dense: sees everything
        field = receptive_field(model, name, size)
        return 10**9 if field.whole_image else field.size[0] * field.size[1]

    target = extent(layer)
    below = sorted(
        ((extent(name), name) for name in shapes if name != layer and len(shapes[name]) == 3),
    )
    below = [name for area, name in below if area < target]
    if len(below) > most:
        picks = np.linspace(0, len(below) - 1, most).round().astype(int)
        below = [below[i] for i in sorted(set(picks))]
    return tuple(below)


def _overlaps(start, length: float, parts: int, cells: int, extent: float):
    """``(B, parts, cells)``: how much of each of ``parts`` equal slices of the span
    ``[start, start + length)`` (input pixels) each layer cell covers, per row."""
    cell = extent / cells
    edges = start[:, None] + length * jnp.arange(parts + 1)[None] / parts  # (B, parts + 1)
    low, high = edges[:, :-1, None], edges[:, 1:, None]
    lefts = jnp.arange(cells)[None, None] * cell
    return jnp.maximum(0.0, jnp.minimum(high, lefts + cell) - jnp.maximum(low, lefts))


def _window(field: Any, peak_y, peak_x, shape: tuple[int, ...], size: tuple[int, int]):
    """``(B, G, G, h, w)`` weights: a ``G x G`` grid over the field of each row's peak, each
    part averaging the cells of a ``shape`` layer it covers (by area). The whole image, as one
    part, when the field is the whole image."""
    h, w = shape[0], shape[1]
    if field.whole_image:
        return jnp.full((peak_y.shape[0], 1, 1, h, w), 1.0 / (h * w))
    top = field.offset[0] + peak_y * field.stride[0]
    left = field.offset[1] + peak_x * field.stride[1]
    rows = _overlaps(top, field.size[0], GRID, h, size[0])  # (B, G, h)
    cols = _overlaps(left, field.size[1], GRID, w, size[1])  # (B, G, w)
    weights = rows[:, :, None, :, None] * cols[:, None, :, None, :]
    return weights / jnp.maximum(weights.sum((3, 4), keepdims=True), 1e-12)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _features(apply, target, layers, field, size, params, images, units):
    """Each row's features per path layer: the layer's channels averaged over each part of a
    grid laid on its unit's field around the peak, flattened ``(B, G * G * C)``."""
    out = apply(params, images)
    maps = out[target]
    if maps.ndim == 4:
        b, h, w, _ = maps.shape
        mine = jnp.take_along_axis(maps, units[:, None, None, None], axis=3)[..., 0]
        peak = mine.reshape(b, -1).argmax(1)
        peak_y, peak_x = peak // w, peak % w
    else:
        peak_y = peak_x = jnp.zeros(images.shape[0], jnp.int32)
    features = {}
    for name in layers:
        layer = out[name]
        if layer.ndim != 4:
            features[name] = layer
            continue
        weights = _window(field, peak_y, peak_x, layer.shape[1:], size)
        pooled = jnp.einsum("bpqhw,bhwc->bpqc", weights, layer)
        features[name] = pooled.reshape(pooled.shape[0], -1)
    return features


def _describe(model, target, layers, field, size, images, units, batch_size):
    """Path features of ``images[i]`` as seen by ``units[i]``, in batches."""
    parts = []
    for i in range(0, len(images), batch_size):
        chunk, who = images[i : i + batch_size], np.asarray(units[i : i + batch_size], np.int32)
        pad = batch_size - len(chunk)  # one compiled shape
        if pad:
            chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
            who = np.concatenate([who, np.zeros(pad, np.int32)])
        found = _features(model.apply, target, layers, field, size, model.params, chunk, who)
        parts.append({k: np.asarray(v)[: batch_size - pad] for k, v in found.items()})
    return {name: np.concatenate([p[name] for p in parts]) for name in layers}


def _shares(nearest: np.ndarray, own: int) -> np.ndarray:
    """Per row of ``nearest (n, U)``: the share of the other units scoring above ``own``."""
    others = nearest.shape[1] - 1
    return (nearest > nearest[:, own : own + 1]).sum(1) / max(others, 1)


def _rivals(found, layers, units, top_ids, n_top, n_random_rows, seeds) -> np.ndarray:
    """``(layers, U, 2)``: per unit, the share of the other units whose top examples its
    pictures resemble more than its own (``[..., 0]``), and the same for its own top examples,
    each left out of its own set and never matched to itself (``[..., 1]``: the share a
    natural example of the unit shows, the reference for near-duplicate units). Channels are
    standardized over all random rows."""
    bounds = np.cumsum([0] + [len(top_ids[u]) for u in units])
    image_of = np.array([i for u in units for i in top_ids[u]])
    out = np.zeros((len(layers), len(units), 2))
    if len(units) < 2:
        return out
    for i, name in enumerate(layers):
        table = found[name]
        randoms = table[n_top : n_top + n_random_rows]
        mu, sd = randoms.mean(0), randoms.std(0) + 1e-6
        tops = (table[:n_top] - mu) / sd
        drawn = (table[n_top + n_random_rows :] - mu) / sd
        for queries, same, column in (
            (drawn, None, 0),
            (tops, image_of[:, None] == image_of[None, :], 1),
        ):
            similarity = spearman(queries, tops)  # (queries, all top rows)
            if same is not None:  # a natural example is never its own (or its twin's) match
                similarity = np.where(same, -np.inf, similarity)
            nearest = np.stack(
                [similarity[:, a:b].max(1) for a, b in zip(bounds[:-1], bounds[1:], strict=True)],
                axis=1,
            )  # (queries, U)
            for row in range(len(units)):
                if column == 0:
                    mine = nearest[row * seeds : (row + 1) * seeds]
                else:
                    mine = nearest[bounds[row] : bounds[row + 1]]
                if len(mine):
                    out[i, row, column] = _shares(mine, row).mean()
    return out


def check_paths(
    model: Model,
    dataset: Dataset,
    stats: LayerStatistics,
    units: Sequence[int],
    pictures: np.ndarray,
    layers: Sequence[str],
    *,
    top_k: int = 8,
    n_random: int = 32,
    seed: int = 0,
    batch_size: int = 64,
) -> list[PathCheck]:
    """The path check of each of ``units``, whose pictures are ``pictures (U, S, H, W, 3)``.

    ``layers`` are the path layers, lowest first (see :func:`path_layers`); the unit's
    ``top_k`` natural examples and ``n_random`` images drawn with ``seed`` are compared.
    """
    layers = tuple(layers)
    if not layers:
        raise ArgumentError(
            f"the path check of {stats.layer!r} needs at least one layer below it; name them"
        )
    pictures = np.asarray(pictures, np.float32)
    units = [int(u) for u in units]
    if pictures.ndim != 5 or len(pictures) != len(units):
        raise ArgumentError(
            f"pictures must be (units={len(units)}, seeds, H, W, 3), got {pictures.shape}"
        )
    k = min(top_k, stats.top_index.shape[1])
    size = tuple(dataset.size)
    field = receptive_field(model, stats.layer, size)
    rng = np.random.default_rng(seed)
    random_ids = np.sort(rng.choice(len(dataset), min(n_random, len(dataset)), replace=False))
    randoms_pixels = dataset.images(random_ids)
    seeds = pictures.shape[1]
    # Rows: (image, unit) pairs; each image is read through its unit's field.
    top_ids = {u: [int(i) for i in stats.top_index[u, :k] if i >= 0] for u in units}
    wanted = sorted({i for ids in top_ids.values() for i in ids})
    pixels = dict(zip(wanted, dataset.images(wanted), strict=True))
    top_rows = [(pixels[i], u) for u in units for i in top_ids[u]]
    random_rows = [(image, u) for u in units for image in randoms_pixels]
    picture_rows = [(image, u) for row, u in enumerate(units) for image in pictures[row]]
    rows = top_rows + random_rows + picture_rows
    found = _describe(
        model, stats.layer, layers, field, size,
        np.stack([image for image, _ in rows]).astype(np.float32),
        [u for _, u in rows], batch_size,
    )  # fmt: skip
    n_top, n_random_rows = len(top_rows), len(random_rows)
    rivals = _rivals(found, layers, units, top_ids, n_top, n_random_rows, seeds)
    checks, start = [], 0
    for row, unit in enumerate(units):
        n_mine = len(top_ids[unit])
        picture, reference, floor = [], [], []
        for name in layers:
            table = found[name]
            randoms = table[n_top + row * len(random_ids) : n_top + (row + 1) * len(random_ids)]
            mu, sd = randoms.mean(0), randoms.std(0) + 1e-6

            def standard(x, mu=mu, sd=sd):
                return (x - mu) / sd

            top = standard(table[start : start + n_mine])
            own = standard(table[n_top + n_random_rows + row * seeds :][:seeds])
            others = standard(randoms[~np.isin(random_ids, top_ids[unit])])
            picture.append(spearman(own, top).max(1).mean())
            among = spearman(top, top)
            np.fill_diagonal(among, -np.inf)
            reference.append(among.max(1).mean() if n_mine > 1 else np.nan)
            floor.append(np.median(spearman(others, top).max(1)))
        start += n_mine
        picture, reference, floor = map(np.array, (picture, reference, floor))
        rival, natural_rival = rivals[:, row, 0], rivals[:, row, 1]
        if len(units) - 1 >= MIN_RIVALS:
            off = bool((rival - natural_rival)[-2:].mean() > RIVAL_LIMIT)
        else:
            off = bool(picture[-1] <= floor[-1])
        checks.append(PathCheck(layers, picture, reference, floor, rival, natural_rival, off))
    return checks
