"""The facets of a unit: its top natural images, clustered (Nguyen et al. 2016, multifaceted
feature visualization).

A unit may fire for several different things (a "grocery store" neuron: the fruit stall, the
shelves, the shop front). Nguyen et al. cluster the activation vectors of a unit's top images
and start one visualization from the mean image of each cluster. Here:

- :func:`kmeans` clusters every unit's points at once (k-means++ seeding, Lloyd iterations,
  one compiled program, ``vmap`` over units); :func:`silhouette` scores a clustering;
- :func:`choose_k` picks the number of facets per unit by the silhouette criterion
  (:data:`MIN_SILHOUETTE`);
- :func:`facet_directions` gives what sets each facet apart from the unit's other top images,
  the direction a picture of that facet is steered to;
- :func:`coverage` says which facets a set of pictures (seeds) reaches;
- :func:`natural_facets` reads the top images of a layer's units (from the dataset pass) and
  returns their :class:`Facets`: centroids, members, and each facet's mean image.

Points, validity masks and keys are traced: new units or new values reuse the compiled
program; only the shapes, ``k`` and ``iterations`` are static.

>>> import jax, jax.numpy as jnp
>>> points = jnp.array([[[0.0], [1.0], [5.0], [6.0]]])  # (units=1, N=4, D=1)
>>> clusters = kmeans(jax.random.key(0), points, 2)
>>> sorted(clusters.centroids[0, :, 0].tolist())
[0.5, 5.5]
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fvjax.checks.activations import unit_length
from fvjax.checks.scan import forward_maps
from fvjax.checks.statistics import LayerStatistics
from fvjax.data.datasets import Dataset, check_batch_size
from fvjax.errors import ArgumentError, UnitRangeError
from fvjax.models.adapters import Model

#: Lloyd iterations: a fixed count, so every unit runs the same program (no early stop).
#: Measured: the centroids stop moving within 6 steps on the tests' overlapping blobs and
#: within 3 on 200 units of 16 to 64 random unit vectors in 16 to 512 dimensions.
ITERATIONS = 20
#: The least mean silhouette at which more than one facet is believed: Kaufman & Rousseeuw
#: (1990) read an average silhouette below 0.25 as "no substantial structure".
MIN_SILHOUETTE = 0.25
#: How a layer's map of an image becomes one vector: the ``mean`` or ``max`` over positions,
#: or the vector at the ``peak`` of the unit's own map in that image (``top_position``).
POOLS = ("mean", "max", "peak")


class Clusters(NamedTuple):
    """A clustering of every unit's points (``U`` units, ``N`` points, ``k`` clusters).

    Attributes:
        centroids: ``(U, k, D)``.
        assignment: ``(U, N)`` int32, each point's nearest centroid; -1 for invalid points.
        inertia: ``(U,)`` the sum of squared distances of valid points to their centroids.
    """

    centroids: jax.Array
    assignment: jax.Array
    inertia: jax.Array


class Choice(NamedTuple):
    """:func:`choose_k`'s answer: ``k (U,)`` int32, the chosen number of clusters; ``clusters``
    at that k (centroids ``(U, k_max, D)``, slots from k on zero); ``silhouettes (U, k_max)``,
    the mean silhouette at each k = 1 .. k_max (NaN where undefined, always at k = 1)."""

    k: jax.Array
    clusters: Clusters
    silhouettes: jax.Array


class Coverage(NamedTuple):
    """:func:`coverage`'s answer: ``matched (U, S)`` int32, each seed's nearest facet (-1 for a
    unit without facets); ``covered (U,)`` int32, the distinct facets matched by a seed."""

    matched: jax.Array
    covered: jax.Array


class Facets(NamedTuple):
    """The facets of a layer's units (numpy; ``U`` units, ``T`` top images, ``K`` slots: ``k``
    when it is fixed, else ``k_max``). Facets are sorted by size, largest first, so the first
    ``n_facets`` of each unit are its non-empty ones; later slots are zero (-1 in ``members``).

    Attributes:
        layer: the units' layer (``stats.layer``).
        feature_layer: the layer whose activations describe the images.
        pool: how a map became a vector (:data:`POOLS`).
        units: ``(U,)`` the units' indices in ``layer``.
        n_facets: ``(U,)`` int32 non-empty facets (0 for a unit without top images).
        centroids: ``(U, K, D)`` float32, in the space of the L2-normalised vectors.
        assignment: ``(U, T)`` int32, the facet of each top image (aligned with
            ``stats.top_index[units]``), -1 where there is no image.
        members: ``(U, K, T)`` int64 dataset indices of each facet's images, best first,
            padded with -1.
        sizes: ``(U, K)`` int32 images per facet.
        mean_images: ``(U, K, H, W, 3)`` float32, the mean of each facet's images (where
            Nguyen et al. start a facet's visualization).
        silhouette: ``(U,)`` float32 mean silhouette of the facets (NaN with fewer than two).
    """

    layer: str
    feature_layer: str
    pool: str
    units: np.ndarray
    n_facets: np.ndarray
    centroids: np.ndarray
    assignment: np.ndarray
    members: np.ndarray
    sizes: np.ndarray
    mean_images: np.ndarray
    silhouette: np.ndarray


def _squared_distances(a: jax.Array, b: jax.Array) -> jax.Array:
    """``(n, m)`` squared Euclidean distances between ``a (n, D)`` and ``b (m, D)`` (by the
    Gram matrix: no ``(n, m, D)`` array; clipped at 0 against rounding)."""
    gram = a @ b.T
    squared = (a * a).sum(-1)[:, None] + (b * b).sum(-1)[None, :] - 2.0 * gram
    return jnp.maximum(squared, 0.0)


def _inputs(points, valid) -> tuple[jax.Array, jax.Array]:
    """``points`` with the invalid ones zeroed (a NaN there must not reach a centroid through
    a zero weight) and ``valid`` (default: all)."""
    points = jnp.asarray(points)
    valid = jnp.ones(points.shape[:2], bool) if valid is None else jnp.asarray(valid, bool)
    return jnp.where(valid[..., None], points, 0.0), valid


def _unit_keys(key: jax.Array, units: int) -> jax.Array:
    """One key per unit, ``fold_in(key, unit)``: a unit's clusters do not depend on the
    other units clustered beside it."""
    return jax.vmap(lambda unit: jax.random.fold_in(key, unit))(jnp.arange(units))


def _seed(key, points, valid, k: int):
    """k-means++ (Arthur & Vassilvitskii 2007) on one unit: the first centroid uniform among
    the valid points, each next one with probability proportional to its squared distance to
    the nearest chosen centroid; uniform among the valid points once every distance is 0."""
    weight = valid.astype(points.dtype)
    weight = jnp.where(weight.sum() > 0, weight, jnp.ones_like(weight))  # no valid point
    # Every pick's Gumbel noise in one draw, outside the loop: argmax of log-chance + noise
    # is a draw from the chances (what ``categorical`` does, one compiled threefry, not k).
    noise = jax.random.gumbel(key, (k, len(points)), points.dtype)

    def pick(i, state):
        centroids, nearest = state
        spread = jnp.where(jnp.isfinite(nearest), nearest, 1.0) * weight  # pick 0: uniform
        chances = jnp.where(spread.sum() > 0, spread, weight)
        chosen = jnp.argmax(jnp.log(chances) + noise[i])
        centroid = points[chosen]
        nearest = jnp.minimum(nearest, ((points - centroid) ** 2).sum(-1))
        return centroids.at[i].set(centroid), nearest

    start = (
        jnp.zeros((k, points.shape[-1]), points.dtype),
        jnp.full(len(points), jnp.inf, points.dtype),
    )
    return jax.lax.fori_loop(0, k, pick, start)[0]


def _assign(points, centroids, valid, active):
    """Each point's nearest of the first ``active`` centroids (-1 where invalid) and its
    squared distance (0 where invalid)."""
    distances = _squared_distances(points, centroids)
    distances = jnp.where(jnp.arange(len(centroids)) < active, distances, jnp.inf)
    nearest = distances.argmin(-1).astype(jnp.int32)
    return jnp.where(valid, nearest, -1), jnp.where(valid, distances.min(-1), 0.0)


def _lloyd_step(points, valid, centroids, active):
    """One Lloyd iteration on one unit's first ``active`` centroids (the others stay). An
    empty cluster is re-seeded at a far point: the j-th empty cluster takes the j-th farthest
    valid point from its centroid, unless that point already sits on a centroid (then the
    empty cluster keeps its centroid)."""
    k = len(centroids)
    assignment, distance = _assign(points, centroids, valid, active)
    members = (assignment[:, None] == jnp.arange(k)).astype(points.dtype)  # (N, k)
    count = members.sum(0)
    mean = (members.T @ points) / jnp.maximum(count, 1.0)[:, None]
    empty = (count == 0) & (jnp.arange(k) < active)
    far, order = jax.lax.top_k(jnp.where(valid, distance, -1.0), min(k, len(points)))
    rank = jnp.clip(jnp.cumsum(empty) - 1, 0, len(order) - 1)
    reseed = empty & (far[rank] > 0)
    kept = jnp.where((count == 0)[:, None], centroids, mean)
    return jnp.where(reseed[:, None], points[order[rank]], kept)


def _unit_kmeans(key, points, valid, active, *, slots: int, iterations: int):
    """k-means of one unit with ``active`` of ``slots`` clusters (traced: :func:`choose_k`
    runs every k in one program); the inactive centroids come back zero."""
    centroids = _seed(key, points, valid, slots)
    centroids = jax.lax.fori_loop(
        0, iterations, lambda _, c: _lloyd_step(points, valid, c, active), centroids
    )
    assignment, distance = _assign(points, centroids, valid, active)
    centroids = jnp.where((jnp.arange(slots) < active)[:, None], centroids, 0.0)
    return centroids, assignment, distance.sum()


@functools.partial(jax.jit, static_argnames=("k",))
def kmeans_plus_plus(key, points, k: int, *, valid=None) -> jax.Array:
    """``(U, k, D)`` k-means++ initial centroids of each unit's ``points (U, N, D)`` (only
    the ``valid (U, N)`` ones; default all), unit ``u`` drawing from ``fold_in(key, u)``.
    :func:`kmeans` starts from exactly these.

    >>> import jax, jax.numpy as jnp
    >>> kmeans_plus_plus(jax.random.key(0), jnp.array([[[0.0], [1.0]]]), 2).shape
    (1, 2, 1)
    """
    keys = _unit_keys(key, len(points))
    return jax.vmap(functools.partial(_seed, k=k))(keys, *_inputs(points, valid))


@functools.partial(jax.jit, static_argnames=("k", "iterations"))
def kmeans(key, points, k: int, *, iterations: int = ITERATIONS, valid=None) -> Clusters:
    """k-means of every unit's ``points (U, N, D)`` at once: k-means++ seeding
    (:func:`kmeans_plus_plus`), then ``iterations`` Lloyd steps (an empty cluster is
    re-seeded at the farthest point from its centroid). Deterministic for a given key.

    Args:
        key: a PRNG key; unit ``u`` uses ``fold_in(key, u)``.
        points: ``(U, N, D)`` float.
        k: clusters (static).
        iterations: Lloyd steps (static).
        valid: ``(U, N)`` bool, the points to cluster (default: all); the others are
            assigned -1 and move no centroid.

    >>> import jax, jax.numpy as jnp
    >>> points = jnp.array([[[0.0], [1.0], [9.0], [4.0]]])
    >>> clusters = kmeans(jax.random.key(0), points, 2, valid=jnp.array([[1, 1, 0, 1]], bool))
    >>> clusters.assignment[0, 2].item(), sorted(clusters.centroids[0, :, 0].tolist())
    (-1, [0.5, 4.0])
    """
    run = functools.partial(_unit_kmeans, active=k, slots=k, iterations=iterations)
    keys = _unit_keys(key, len(points))
    return Clusters(*jax.vmap(run)(keys, *_inputs(points, valid)))


def _unit_silhouette(points, assignment, valid):
    """The mean silhouette of one unit's clustering (NaN with fewer than two clusters)."""
    distance = jnp.sqrt(_squared_distances(points, points))
    distance = distance * (1.0 - jnp.eye(len(points), dtype=points.dtype))
    # Same-cluster matrix: (distance @ same)[i, j] sums i's distances to j's cluster.
    same = (assignment[:, None] == assignment[None, :]) & valid[:, None] & valid[None, :]
    same = same.astype(points.dtype)
    size = same.sum(0)  # (N,) the size of each valid point's cluster
    summed = distance @ same
    to_cluster = summed / jnp.maximum(size, 1.0)[None, :]  # mean distance from i to c_j
    own = jnp.diagonal(summed) / jnp.maximum(size - 1.0, 1.0)
    other = valid[None, :] & (same == 0)
    nearest_other = jnp.where(other, to_cluster, jnp.inf).min(-1)
    scale = jnp.maximum(own, nearest_other)
    score = jnp.where(scale > 0, (nearest_other - own) / jnp.where(scale > 0, scale, 1.0), 0.0)
    score = jnp.where(size > 1, score, 0.0)  # a point alone in its cluster scores 0
    clusters_found = jnp.isfinite(nearest_other) & valid
    mean = jnp.where(valid, score, 0.0).sum() / jnp.maximum(valid.astype(score.dtype).sum(), 1.0)
    return jnp.where(clusters_found.any(), mean, jnp.nan)


@jax.jit
def silhouette(points, assignment, valid=None) -> jax.Array:
    """``(U,)`` the mean silhouette (Rousseeuw 1987) of each unit's clustering: per valid
    point, ``(b - a) / max(a, b)`` with ``a`` its mean Euclidean distance to the rest of its
    cluster and ``b`` the least mean distance to another cluster; 0 for a point alone in its
    cluster (as scikit-learn); NaN for a unit with fewer than two clusters.

    Args:
        points: ``(U, N, D)``; assignment: ``(U, N)`` int cluster labels; valid: ``(U, N)``
            bool (default: all).

    >>> import jax.numpy as jnp
    >>> points = jnp.array([[[0.0], [1.0], [10.0], [11.0]]])
    >>> round(silhouette(points, jnp.array([[0, 0, 1, 1]]))[0].item(), 3)
    0.9
    """
    points, valid = _inputs(points, valid)
    return jax.vmap(_unit_silhouette)(points, assignment, valid)


@functools.partial(jax.jit, static_argnames=("k_max", "iterations", "min_silhouette"))
def choose_k(
    key,
    points,
    k_max: int,
    valid=None,
    *,
    iterations: int = ITERATIONS,
    min_silhouette: float = MIN_SILHOUETTE,
) -> Choice:
    """The number of clusters of each unit's ``points (U, N, D)``, and its clusters.

    **Criterion.** For each k = 2 .. k_max, ``kmeans(key, points, k)`` and its mean
    :func:`silhouette`; the unit takes the k of the highest mean silhouette if that reaches
    ``min_silhouette`` (:data:`MIN_SILHOUETTE`), else k = 1. A k is a candidate only while it
    is below the unit's valid points (the silhouette needs 2 <= k <= n - 1) and its clusters
    are at least two. Every k starts from the first k of the same k_max k-means++ seeds (a
    k-means++ seeding of k), so the chosen clusters are those of ``kmeans(key, points, k)``,
    up to rounding (JAX's default, partitionable threefry draws the first rows of noise alike
    whatever the number of rows).

    The threshold reads distances, which concentrate as the dimension grows: one Gaussian
    blob of 16 to 40 points split in two scores 0.34 to 0.37 on average in 2-D, 0.12 to 0.15
    in 8-D, 0.07 to 0.09 in 16-D and under 0.04 in 64-D (measured, 64 draws each), so in a
    few dimensions a lone blob can pass for two; activation vectors have hundreds.

    >>> import jax, jax.numpy as jnp
    >>> points = jnp.array([[[0.0], [0.1], [0.2], [5.0], [5.1], [5.2]]])
    >>> choose_k(jax.random.key(0), points, 3).k.tolist()
    [2]
    """
    ks = jnp.arange(1, k_max + 1)
    run = functools.partial(_unit_kmeans, slots=k_max, iterations=iterations)

    def unit(key, points, valid):
        # Every k in one program (one k-means traced, not k_max: measured 4x less to compile).
        centroids, assignment, inertia = jax.vmap(run, (None, None, None, 0))(
            key, points, valid, ks
        )
        scores = jax.vmap(_unit_silhouette, (None, 0, None))(points, assignment, valid)
        allowed = ks < valid.sum()  # the silhouette needs 2 <= k <= n - 1
        usable = jnp.where(allowed & jnp.isfinite(scores), scores, -jnp.inf)
        best = usable.argmax()
        chosen = jnp.where(usable[best] >= min_silhouette, best, 0)
        clusters = Clusters(centroids[chosen], assignment[chosen], inertia[chosen])
        return Choice((chosen + 1).astype(jnp.int32), clusters, scores)

    keys = _unit_keys(key, len(points))
    return jax.vmap(unit)(keys, *_inputs(points, valid))


@jax.jit
def coverage(seed_points, centroids, n_facets) -> Coverage:
    """Which of each unit's facets a set of pictures reaches: every seed's nearest facet among
    the unit's first ``n_facets``, by Euclidean distance on the vectors as given (normalise
    them first for cosine, as :func:`natural_facets`' centroids are of normalised vectors).

    Args:
        seed_points: ``(U, S, D)`` one vector per seed (picture).
        centroids: ``(U, k, D)`` the facets.
        n_facets: ``(U,)`` int, how many of each unit's centroids are facets.

    >>> import jax.numpy as jnp
    >>> centroids = jnp.array([[[0.0], [10.0], [20.0]]])
    >>> found = coverage(jnp.array([[[1.0], [2.0], [19.0]]]), centroids, jnp.array([2]))
    >>> found.matched.tolist(), found.covered.tolist()
    ([[0, 0, 1]], [2])
    """
    k = centroids.shape[1]
    distances = jax.vmap(_squared_distances)(seed_points, centroids)  # (U, S, k)
    facet = jnp.arange(k) < jnp.asarray(n_facets)[:, None, None]
    matched = jnp.where(facet, distances, jnp.inf).argmin(-1).astype(jnp.int32)
    matched = jnp.where(jnp.asarray(n_facets)[:, None] > 0, matched, -1)
    hit = (matched[..., None] == jnp.arange(k)).any(1)
    return Coverage(matched, hit.sum(-1).astype(jnp.int32))


def facet_directions(centroids, sizes) -> np.ndarray:
    """``(U, K, D)``: what sets each facet apart from its unit's other top images, the
    facet's centroid minus the size-weighted mean of the unit's centroids, L2-normalised (0
    for an empty facet, and for the one facet of a unit that has one).

    A centroid holds what all of a unit's top images share as well as the facet's own
    content, so a picture steered to the centroid itself also takes the shared part. On
    the planted polysemantic units the world's pictures all hold stripes of every angle:
    the colour facet's centroid had 0.29-0.37 on each stripe channel beside 0.55 on its
    colour, and pictures steered to it were still half stripes; steered to this difference
    (with each started from its facet's mean image) every picture showed its facet alone.

    >>> centroids = np.array([[[1.0, 1.0], [1.0, 0.0]]])  # (U=1, K=2, D=2)
    >>> facet_directions(centroids, np.array([[1, 1]])).round(3).tolist()
    [[[0.0, 1.0], [0.0, -1.0]]]
    """
    centroids = np.asarray(centroids, np.float32)
    weights = np.asarray(sizes, np.float32)[..., None]
    mean = (centroids * weights).sum(1, keepdims=True) / np.maximum(
        weights.sum(1, keepdims=True), 1
    )
    apart = np.where(weights > 0, centroids - mean, 0.0)
    norm = np.linalg.norm(apart, axis=-1, keepdims=True)
    return np.where(norm > 1e-6, apart / np.maximum(norm, 1e-12), 0.0).astype(np.float32)


def natural_facets(
    model: Model,
    dataset: Dataset,
    stats: LayerStatistics,
    layer: str,
    *,
    k: int | None = None,
    k_max: int = 4,
    key: int | jax.Array = 0,
    units: Sequence[int] | None = None,
    batch_size: int = 32,
    pool: str = "mean",
    iterations: int = ITERATIONS,
) -> Facets:
    """The facets of ``stats``' units: their top images clustered by what ``layer`` sees.

    Each unit's top images (``stats.top_index``) are described by one vector each: the
    ``layer`` map of the image pooled over positions (``pool="mean"``, the default, or
    ``"max"``) or read at the unit's peak (``"peak"``, ``stats.top_position``: ``layer``
    must have the units' map size), then L2-normalised (a zero vector stays zero), so
    Euclidean k-means clusters by direction. ``layer`` may be the units' own layer or
    another one (Nguyen et al. cluster fc7 codes). Clusters per unit: ``k`` fixed, or chosen
    by :func:`choose_k` up to ``k_max`` when ``k`` is None.

    Every distinct top image is read once (shared by all the units that rank it), in
    batches of ``batch_size``, and kept until the mean images are taken: ``M`` distinct
    images hold ``M x H x W x 3`` float32 (4,000 at 224 px: 2.4 GB); ``units`` narrows it.

    Args:
        model, dataset: those of the pass that made ``stats``.
        stats: the :class:`LayerStatistics` of the units' layer.
        layer: where the images' activation vectors are read.
        k: facets per unit, or None to choose up to ``k_max``.
        key: an int seed or a PRNG key (same key, same facets).
        units: the units to look at (default: all of ``stats``).
        batch_size: images per forward pass (one compiled shape).
        pool: :data:`POOLS`.
        iterations: Lloyd steps.

    >>> from fvjax.checks.scan import dataset_pass
    >>> from fvjax.data.datasets import world_dataset
    >>> from fvjax.models import from_fn
    >>> model, data = from_fn(lambda x: {"rgb": x}), world_dataset(0, 12, 32)
    >>> stats = dataset_pass(model, data, ["rgb"], top_k=6)["rgb"]
    >>> facets = natural_facets(model, data, stats, "rgb", k=2, units=[0, 2])
    >>> facets.members.shape, facets.mean_images.shape, facets.sizes.sum(1).tolist()
    ((2, 2, 6), (2, 2, 32, 32, 3), [6, 6])
    """
    if pool not in POOLS:
        raise ArgumentError(f"pool must be one of {POOLS}, got {pool!r}")
    for name, value in (("k_max", k_max), ("k", 1 if k is None else k)):
        if not isinstance(value, int) or value < 1:
            raise ArgumentError(f"{name} must be an int >= 1, got {value!r}")
    batch_size = check_batch_size(batch_size)
    units = np.arange(stats.units) if units is None else np.asarray(units, np.int64)
    if units.ndim != 1 or ((units < 0) | (units >= stats.units)).any():
        raise UnitRangeError(f"units must lie in 0 .. {stats.units - 1}, got {units.tolist()}")
    shape = model.check_layer(layer, dataset.size)
    map_shape = shape[:2] if len(shape) == 3 else (1, 1)
    if pool == "peak" and tuple(map_shape) != tuple(stats.map_shape):
        raise ArgumentError(
            f"pool='peak' reads {layer!r} at the peaks of {stats.layer!r}'s maps, and their "
            f"map sizes differ ({map_shape} vs {stats.map_shape}); use pool='mean'"
        )
    index = stats.top_index[units]  # (U, T)
    valid = index >= 0
    unique, inverse = np.unique(index[valid], return_inverse=True)
    row = np.full(index.shape, -1, np.int64)  # each (unit, rank)'s row in ``unique``
    row[valid] = inverse
    images, vectors = _read(
        model, dataset, layer, pool, unique, row, stats.top_position[units], shape[-1], batch_size
    )
    points = unit_length(vectors)
    key = jax.random.key(key) if isinstance(key, int | np.integer) else key
    if k is None:
        clusters = choose_k(key, points, k_max, valid, iterations=iterations).clusters
    else:
        clusters = kmeans(key, points, k, iterations=iterations, valid=valid)
    centroids, assignment = np.asarray(clusters.centroids), np.asarray(clusters.assignment)
    slots = centroids.shape[1]
    sizes = (assignment[:, :, None] == np.arange(slots)).sum(1)
    # Largest facet first; a label's new place is its rank in that order.
    order = np.argsort(-sizes, axis=1, kind="stable")
    place = np.argsort(order, axis=1)
    assignment = np.where(
        valid, np.take_along_axis(place, np.maximum(assignment, 0), 1), -1
    ).astype(np.int32)
    sizes = np.take_along_axis(sizes, order, 1).astype(np.int32)
    centroids = np.take_along_axis(centroids, order[..., None], 1) * (sizes > 0)[..., None]
    in_facet = assignment[:, None, :] == np.arange(slots)[None, :, None]  # (U, K, T)
    first = np.argsort(~in_facet, axis=-1, kind="stable")  # members first, rank kept
    members = np.where(
        np.take_along_axis(in_facet, first, -1),
        np.take_along_axis(np.broadcast_to(index[:, None, :], in_facet.shape), first, -1),
        -1,
    )
    return Facets(
        layer=stats.layer,
        feature_layer=layer,
        pool=pool,
        units=units,
        n_facets=(sizes > 0).sum(1).astype(np.int32),
        centroids=centroids.astype(np.float32),
        assignment=assignment,
        members=members,
        sizes=sizes,
        mean_images=_mean_images(images, row, assignment, sizes),
        silhouette=np.asarray(silhouette(points, assignment, valid)),
    )


def _read(model, dataset, layer, pool, unique, row, peak, channels, batch_size):
    """The distinct top images ``(M, H, W, 3)``, each read once, and the vector of every
    (unit, rank) ``(U, T, channels)`` (zero where there is no image)."""
    images = np.zeros((len(unique), *dataset.size, 3), np.float32)
    vectors = np.zeros((*row.shape, channels), np.float32)
    for start in range(0, len(unique), batch_size):
        batch = np.asarray(dataset.images(unique[start : start + batch_size]), np.float32)
        n = len(batch)
        images[start : start + n] = batch
        padding = np.zeros((batch_size - n, *batch.shape[1:]), np.float32)  # one shape
        maps = forward_maps(model.apply, (layer,), model.params, np.concatenate([batch, padding]))
        maps = maps[layer][:n]  # (n, h, w, C)
        here = (row >= start) & (row < start + n)
        if pool == "peak":
            y, x = peak[here].T
            vectors[here] = np.asarray(maps)[row[here] - start, y, x]
        else:
            pooled = maps.mean((1, 2)) if pool == "mean" else maps.max((1, 2))
            vectors[here] = np.asarray(pooled)[row[here] - start]
    return images, vectors


def _mean_images(images, row, assignment, sizes):
    """``(U, K, H, W, 3)`` the mean of each facet's images, summed rank by rank (one image
    per unit at each rank: no ``(U, T, H, W, 3)`` gather)."""
    units, slots = sizes.shape
    total = np.zeros((units, slots, *images.shape[1:]), np.float32)
    every = np.arange(units)
    for rank in range(assignment.shape[1]):
        has = assignment[:, rank] >= 0
        total[every[has], assignment[has, rank]] += images[row[has, rank]]
    return total / np.maximum(sizes, 1).astype(np.float32)[..., None, None, None]
