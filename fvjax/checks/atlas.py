"""The activation atlas of a layer (Carter et al. 2019): what the layer sees over a dataset,
laid out in 2-D, one rendered picture per region.

A unit's pictures show one direction of a layer at a time; the atlas shows the directions
the layer's activations actually take on natural images:

1. :func:`sample_activations`: activation vectors of ``layer`` at random positions of random
   dataset images (one vector a point; drawn from a seed);
2. a 2-D layout of them: exact t-SNE (:mod:`fvjax.checks.layout2d`) of the L2-normalised
   vectors, so that points lie near others of the same direction (Carter et al. lay theirs out
   with UMAP under the cosine distance);
3. :func:`grid_cells`: a ``grid x grid`` grid over the layout's bounding box; a cell with at
   least ``min_points`` points is kept, and the mean of its points' raw activation vectors is
   its direction;
4. every kept cell's picture in **one** :func:`~fvjax.rendering.engine.render` call of a
   :class:`CellDirection` objective (Lucid's atlas objective: a dot product times a power of
   the cosine, after whitening the layer; a batch of directions: one compiled program, no
   retrace per cell), composed at the cells' grid positions (:func:`compose`);
5. a check of the atlas itself: each picture's whitened activation vector is compared
   (cosine) with every cell's whitened direction; ``Atlas.agreement`` is the share of
   pictures nearest their own cell's.

>>> objective = cell_direction("block3/conv", np.ones((5, 64)))  # 5 cells' mean activations
>>> objective.batch_size, objective.directions.shape
(5, (5, 64))
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fvjax.checks.activations import stream_activations, unit_length
from fvjax.checks.layout2d import tsne_layout
from fvjax.data.datasets import Dataset, check_batch_size
from fvjax.errors import ArgumentError
from fvjax.models.adapters import Model, layer_shape
from fvjax.rendering.engine import render
from fvjax.rendering.objectives import Objective, objective_class

#: Lucid's floor on the cosine of :class:`CellDirection`: a picture that starts pointing away
#: from its direction still gets the dot product's gradient.
COSINE_FLOOR = 0.1
#: The power of the cosine in :class:`CellDirection` (Lucid's ``cossim_pow``; its atlas
#: notebook uses 4). On worldnet ``block3/conv`` 2 put more pictures nearest their own cell
#: than 1 (0.81 against 0.77 of 53 cells, 128 steps) and than 0 (0.87 against 0.70 of 47
#: cells, 256 steps: ``scripts/atlas_picture.py``).
COSINE_POWER = 2.0
#: :func:`whitening` floors the second moment's eigenvalues at this fraction of the largest,
#: so directions the dataset hardly takes are amplified 32x at most, not without bound.
WHITEN_FLOOR = 1e-3


def readout(activations: jax.Array) -> jax.Array:
    """The ``(C,)`` vector a cell's picture is scored on: the mean over the positions of an
    ``(H, W, C)`` map (the whole picture shows the direction); a ``(C,)`` layer as it is.

    >>> readout(jnp.arange(8.0).reshape(2, 2, 2)).tolist()
    [3.0, 4.0]
    """
    return activations.reshape(-1, activations.shape[-1]).mean(0)


def whitening(vectors: np.ndarray) -> np.ndarray:
    """``(C, C)`` ``W = M ** -1/2`` of the second moment ``M = E[a a^T]`` of ``vectors (N, C)``
    (eigenvalues floored at :data:`WHITEN_FLOOR` of the largest): Lucid's atlas compares
    directions by ``a^T M^-1 v = (W a) . (W v)``, so what every activation shares (the
    dataset's mean, its strongest channels) weighs no more than what sets a cell apart.

    >>> w = whitening(np.random.default_rng(0).normal(size=(5000, 3)) * [1.0, 3.0, 10.0])
    >>> np.round(np.diag(w) * [1.0, 3.0, 10.0], 1).tolist()
    [1.0, 1.0, 1.0]
    """
    vectors = np.asarray(vectors, np.float64)
    values, basis = np.linalg.eigh(vectors.T @ vectors / len(vectors))
    values = np.maximum(values, WHITEN_FLOOR * max(values.max(), 1e-30))
    return ((basis / np.sqrt(values)) @ basis.T).astype(np.float32)


@objective_class
class CellDirection(Objective):
    """``(b . u) * max(0.1, cos(b, u)) ** power`` with ``b = W a`` the picture's whitened
    activation vector (the mean over positions of ``layer``) and ``u`` the cell's whitened,
    unit-length direction (Lucid's atlas objective, ``direction_neuron_cossim`` with its
    whitening ``S``). The dot product alone is highest far along the layer's strongest
    directions, whatever the cell; the cosine keeps the picture pointing at its own."""

    layer: str
    directions: jax.Array
    whiten: jax.Array
    power: jax.Array
    _static: ClassVar[tuple[str, ...]] = ("layer",)
    _batched: ClassVar[tuple[str, ...]] = ("directions",)

    def __call__(self, activations: Mapping[str, jax.Array]) -> jax.Array:
        b = self.whiten @ readout(activations[self.layer])
        dot = b @ self.directions
        cosine = dot / jnp.maximum(jnp.linalg.norm(b), 1e-6)
        return dot * jnp.maximum(COSINE_FLOOR, cosine) ** self.power

    def validate(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        width = layer_shape(shapes, self.layer)[-1]
        if self.directions.shape[-1] != width:
            raise ArgumentError(
                f"cell directions have {self.directions.shape[-1]} entries but layer "
                f"{self.layer!r} has {width} channels"
            )


def cell_direction(
    layer: str, vectors: Any, whiten: Any = None, power: float = COSINE_POWER
) -> CellDirection:
    """A :class:`CellDirection` objective per row of ``vectors (K, C)`` (cells' mean
    activations), compared after ``whiten (C, C)`` (:func:`whitening`; default: none).

    >>> cell_direction("block3/conv", np.ones((5, 64))).batch_size
    5
    """
    vectors = np.asarray(vectors, np.float32)
    if vectors.ndim != 2 or not len(vectors) or not np.isfinite(vectors).all():
        raise ArgumentError(f"cell vectors must be a finite (K >= 1, C) array, got {vectors.shape}")
    whiten = np.eye(vectors.shape[1], dtype=np.float32) if whiten is None else whiten
    whiten = np.asarray(whiten, np.float32)
    if whiten.shape != (vectors.shape[1],) * 2:
        raise ArgumentError(
            f"whiten must be ({vectors.shape[1]}, {vectors.shape[1]}), got {whiten.shape}"
        )
    directions = unit_length(vectors @ whiten.T)
    return CellDirection(layer, jnp.asarray(directions), jnp.asarray(whiten), jnp.float32(power))


class Samples(NamedTuple):
    """Activation vectors drawn from a dataset: ``vectors (N, C)`` float32; ``image (N,)``
    each one's dataset index; ``y, x (N,)`` its position in the layer's map (-1 on a layer
    without positions)."""

    vectors: np.ndarray
    image: np.ndarray
    y: np.ndarray
    x: np.ndarray


def sample_activations(
    model: Model, dataset: Dataset, layer: str, points: int, seed: int = 0, batch_size: int = 64
) -> Samples:
    """``points`` activation vectors of ``layer`` over ``dataset``: (image, position) pairs
    drawn without replacement from ``seed``, in dataset order. Capped at the pairs there are.

    >>> from fvjax.data import world_dataset
    >>> from fvjax.models import from_fn
    >>> model = from_fn(lambda x: {"rgb": x})
    >>> found = sample_activations(model, world_dataset(0, 5, 16), "rgb", 10)
    >>> found.vectors.shape, bool((np.diff(found.image) >= 0).all())
    ((10, 3), True)
    """
    shape = model.check_layer(layer, dataset.size)
    spatial = len(shape) == 3
    positions = shape[0] * shape[1] if spatial else 1
    if not isinstance(points, int | np.integer) or points < 3:
        raise ArgumentError(f"an atlas needs points >= 3, got {points!r}")
    total = len(dataset) * positions
    flat = np.sort(np.random.default_rng(seed).choice(total, min(points, total), replace=False))
    image, position = np.divmod(flat, positions)
    y, x = np.divmod(position, shape[1]) if spatial else (np.full_like(flat, -1),) * 2
    vectors = np.zeros((len(flat), shape[-1]), np.float32)
    batches = dataset.batches(check_batch_size(batch_size))
    first = 0
    for out in stream_activations(model, batches, [layer]):
        maps = out[layer]
        here = (image >= first) & (image < first + len(maps))
        rows = image[here] - first
        vectors[here] = maps[rows, y[here], x[here]] if spatial else maps[rows]
        first += len(maps)
    return Samples(vectors, image.astype(np.int64), y, x)


def grid_cells(layout: np.ndarray, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """``(N, 2)`` points in [0, 1] (the layout over its bounding box) and each point's cell
    ``row * grid + col`` of a ``grid x grid`` grid (column from the first coordinate, row from
    the second, as on a screen).

    >>> unit, cell = grid_cells(np.array([[0.0, 0.0], [1.0, 1.0], [0.9, 0.2]]), 2)
    >>> cell.tolist()
    [0, 3, 1]
    """
    layout = np.asarray(layout, np.float64)
    low, span = layout.min(0), np.ptp(layout, 0)
    unit = (layout - low) / np.where(span > 0, span, 1.0)
    col, row = np.minimum((unit * grid).astype(np.int64), grid - 1).T
    return unit.astype(np.float32), row * grid + col


class Atlas(NamedTuple):
    """A layer's activation atlas (numpy; ``N`` points, ``K`` kept cells, pictures ``H x W``).

    Attributes:
        layer, grid, min_points: what was asked.
        samples: the points' :class:`Samples`.
        layout: ``(N, 2)`` float32 t-SNE layout over its bounding box, in [0, 1].
        kl, perplexity: the layout's KL divergence and realised mean perplexity.
        cell: ``(N,)`` each point's cell, ``row * grid + col``.
        counts: ``(grid, grid)`` points per cell.
        cells: ``(K,)`` the kept cells (``counts >= min_points``), in row-major order.
        vectors: ``(K, C)`` each kept cell's mean activation vector: its direction.
        whiten: ``(C, C)`` the points' :func:`whitening`, where directions are compared.
        pictures: ``(K, H, W, 3)`` each kept cell's picture; ``values (K,)`` its objective.
        nearest: ``(K,)`` for each picture, the kept cell (an index into ``cells``) whose
            whitened direction its whitened activation vector is closest to by cosine;
            ``cosine (K,)`` its cosine with its own cell's.
        image: ``(grid * H, grid * W, 3)`` the pictures at their cells, white where empty.
        seconds: ``{"sample", "layout", "render"}`` wall times.
    """

    layer: str
    grid: int
    min_points: int
    samples: Samples
    layout: np.ndarray
    kl: float
    perplexity: float
    cell: np.ndarray
    counts: np.ndarray
    cells: np.ndarray
    vectors: np.ndarray
    whiten: np.ndarray
    pictures: np.ndarray
    values: np.ndarray
    nearest: np.ndarray
    cosine: np.ndarray
    image: np.ndarray
    seconds: dict[str, float]

    @property
    def agreement(self) -> float:
        """The share of kept cells whose picture points closest to its own cell's direction."""
        return float(np.mean(self.nearest == np.arange(len(self.cells))))

    def members(self, k: int) -> np.ndarray:
        """The points (indices into ``samples``) of kept cell ``k``, nearest its centre first."""
        row, col = divmod(int(self.cells[k]), self.grid)
        inside = np.flatnonzero(self.cell == self.cells[k])
        centre = (np.array([col, row]) + 0.5) / self.grid
        return inside[np.argsort(((self.layout[inside] - centre) ** 2).sum(1), kind="stable")]


def compose(pictures: np.ndarray, cells: np.ndarray, grid: int, fill: float = 1.0) -> np.ndarray:
    """``(grid * H, grid * W, 3)``: ``pictures (K, H, W, 3)`` at their ``cells`` (row-major
    indices), ``fill`` elsewhere.

    >>> compose(np.zeros((1, 2, 2, 3)), np.array([3]), 2)[:, :, 0].tolist()[2]
    [1.0, 1.0, 0.0, 0.0]
    """
    pictures = np.asarray(pictures, np.float32)
    _, height, width, channels = pictures.shape
    out = np.full((grid, height, grid, width, channels), fill, np.float32)
    rows, cols = np.divmod(np.asarray(cells), grid)
    out[rows, :, cols] = pictures
    return out.reshape(grid * height, grid * width, channels)


def picture_vectors(model: Model, layer: str, pictures: np.ndarray) -> np.ndarray:
    """``(K, C)``: the :func:`readout` of ``layer`` for each of ``pictures (K, H, W, 3)``.

    >>> from fvjax.models import from_fn
    >>> picture_vectors(from_fn(lambda x: {"rgb": x}), "rgb", np.ones((2, 4, 4, 3))).shape
    (2, 3)
    """
    (maps,) = (out[layer] for out in stream_activations(model, [pictures], [layer]))
    return np.asarray(jax.vmap(readout)(jnp.asarray(maps)))


def _check_settings(grid: Any, min_points: Any) -> None:
    for name, value in (("grid", grid), ("min_points", min_points)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ArgumentError(f"atlas {name} must be an int >= 1, got {value!r}")


def cell_means(
    vectors: np.ndarray, cell: np.ndarray, grid: int, min_points: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(counts (grid * grid,), kept cells (K,), means (K, C))``: the cells holding at least
    ``min_points`` of the points, and the mean of each one's raw ``vectors`` (as Carter et al.
    average them).

    >>> counts, kept, means = cell_means(np.eye(3), np.array([0, 0, 3]), 2, 2)
    >>> counts.tolist(), kept.tolist(), means.tolist()
    ([2, 0, 0, 1], [0], [[0.5, 0.5, 0.0]])
    """
    _check_settings(grid, min_points)
    counts = np.bincount(cell, minlength=grid * grid)
    kept = np.flatnonzero(counts >= min_points)
    if not len(kept):
        raise ArgumentError(
            f"no cell of the {grid}x{grid} atlas holds min_points = {min_points} of its "
            f"{len(cell)} points (the fullest holds {counts.max()}); lower min_points or grid"
        )
    sums = np.zeros((grid * grid, vectors.shape[1]), np.float64)
    np.add.at(sums, cell, vectors)
    return counts, kept, (sums[kept] / counts[kept, None]).astype(np.float32)


def activation_atlas(
    model: Model,
    dataset: Dataset,
    layer: str,
    *,
    points: int = 2000,
    grid: int = 8,
    min_points: int = 4,
    perplexity: float = 30.0,
    tsne_steps: int = 1000,
    seed: int = 0,
    dataset_batch_size: int = 64,
    power: float = COSINE_POWER,
    **settings: Any,
) -> Atlas:
    """The activation atlas of ``layer`` over ``dataset`` (see the module docstring).

    ``points`` vectors are drawn from ``seed`` (the dataset read ``dataset_batch_size`` images
    at a time), laid out by t-SNE (``perplexity``, ``tsne_steps``) and gridded; each cell with
    ``min_points`` or more points is rendered from its mean vector (:class:`CellDirection`
    with cosine ``power``), all in one :func:`~fvjax.rendering.engine.render` call with
    ``settings`` (``steps``, ``size``, ``param``, ``transforms``, ``optimizer``,
    ``progress``...), seed ``seed``. The kept cells are padded to a whole number of grid rows
    (the padding repeats the last cell), so atlases that fill as many rows share one compiled
    program.

    >>> import fvjax
    >>> from fvjax.data import world_dataset
    >>> from fvjax.models.zoo.planted import colour_opponent
    >>> found = activation_atlas(colour_opponent(), world_dataset(1, 10, 16), "colour",
    ...     points=30, grid=2, min_points=2, perplexity=5.0, steps=2, size=8,
    ...     param=fvjax.param.pixel(), transforms=fvjax.transforms.identity())
    >>> found.image.shape, int(found.counts.sum()), found.pictures.shape[1:]
    ((16, 16, 3), 30, (8, 8, 3))
    """
    _check_settings(grid, min_points)
    if "seeds" in settings:
        raise ArgumentError("an atlas renders one picture per cell, from its seed: drop seeds=")
    clock = time.perf_counter()
    samples = sample_activations(model, dataset, layer, points, seed, dataset_batch_size)
    sampled = time.perf_counter()
    found = tsne_layout(unit_length(samples.vectors), perplexity, tsne_steps)
    unit, cell = grid_cells(found.points, grid)
    laid_out = time.perf_counter()
    counts, cells, vectors = cell_means(samples.vectors, cell, grid, min_points)
    whiten = whitening(samples.vectors)
    padded = np.concatenate([vectors, np.repeat(vectors[-1:], -len(cells) % grid, 0)])
    objective = cell_direction(layer, padded, whiten, power)
    result = render(model, objective, seeds=[seed], **settings)
    pictures = result.images[: len(cells), 0]
    mine = unit_length(picture_vectors(model, layer, pictures) @ whiten.T)
    similarity = mine @ np.asarray(objective.directions[: len(cells)]).T
    return Atlas(
        layer=layer,
        grid=grid,
        min_points=min_points,
        samples=samples,
        layout=unit,
        kl=found.kl,
        perplexity=found.perplexity,
        cell=cell,
        counts=counts.reshape(grid, grid),
        cells=cells,
        vectors=vectors,
        whiten=whiten,
        pictures=pictures,
        values=result.activations[: len(cells), 0],
        nearest=similarity.argmax(1),
        cosine=np.diagonal(similarity).copy(),
        image=compose(pictures, cells, grid),
        seconds={
            "sample": round(sampled - clock, 3),
            "layout": round(laid_out - sampled, 3),
            "render": round(time.perf_counter() - laid_out, 3),
        },
    )
