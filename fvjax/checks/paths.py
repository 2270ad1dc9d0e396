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
  image looks to them: the floor), summarised by its median.

**The flag.** A unit is ``off-path`` when, at the layer just below it (the last path layer,
where a clean picture should look most like its examples), its pictures are *no closer* to
the unit's top examples than the median random natural image is: ``picture <= random``. The
other layers are reported and drawn, not judged (Geirhos et al. found that pictures and
unrelated images look alike in early layers).

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


class PathCheck(NamedTuple):
    """One unit's path figures, a value per path layer (lowest first)."""

    layers: tuple[str, ...]
    picture: np.ndarray
    natural: np.ndarray
    random: np.ndarray
    off_path: bool

    def summary(self) -> dict[str, Any]:
        def rounded(values: np.ndarray) -> list[float]:
            return [round(float(v), 4) for v in values]

        return {
            "layers": list(self.layers),
            "picture_to_top": rounded(self.picture),
            "top_to_top": rounded(self.natural),
            "random_to_top": rounded(self.random),
            "off_path": self.off_path,
        }

    def svg(self) -> str:
        """The path plot: the three curves over the layers."""
        return svg_lines(
            [
                ("pictures to top examples", self.picture),
                ("top examples to each other", self.natural),
                ("random images to top examples", self.random),
            ],
            title="Spearman correlation of channel means, layer by layer",
            x_labels=self.layers,
            width=520,
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


def _window(field: Any, peak_y, peak_x, shape: tuple[int, ...], size: tuple[int, int]):
    """``(B, h, w)`` weights: the cells of a ``shape`` layer whose centres lie in the field of
    each row's peak (all cells when the field is the whole image), normalised to sum 1."""
    h, w = shape[0], shape[1]
    if field.whole_image:
        cells = jnp.ones((peak_y.shape[0], h, w))
    else:
        top = field.offset[0] + peak_y * field.stride[0]
        left = field.offset[1] + peak_x * field.stride[1]
        ys = (jnp.arange(h) + 0.5) * size[0] / h
        xs = (jnp.arange(w) + 0.5) * size[1] / w
        inside_y = (ys[None] >= top[:, None]) & (ys[None] < top[:, None] + field.size[0])
        inside_x = (xs[None] >= left[:, None]) & (xs[None] < left[:, None] + field.size[1])
        cells = (inside_y[:, :, None] & inside_x[:, None, :]).astype(jnp.float32)
    return cells / jnp.maximum(cells.sum((1, 2), keepdims=True), 1.0)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _features(apply, target, layers, field, size, params, images, units):
    """Each row's ``(B, C)`` channel means over its unit's field, per path layer."""
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
        features[name] = jnp.einsum("bhw,bhwc->bc", weights, layer)
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
        checks.append(PathCheck(layers, picture, reference, floor, bool(picture[-1] <= floor[-1])))
    return checks
