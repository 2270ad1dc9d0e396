"""The facets of a unit: k-means, the silhouette and the k it chooses, coverage, against
planted blobs and brute force; the natural facets of a tiny model over the world.

The clustering tests share one shape of points and one k, so most reuse a compiled program."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_scan import _conv_model

from fvjax.checks import facets
from fvjax.checks.facets import choose_k, coverage, kmeans, natural_facets, silhouette
from fvjax.checks.scan import dataset_pass
from fvjax.data.datasets import world_dataset
from fvjax.errors import ArgumentError, UnitRangeError

SIZE = 32
UNITS, N, D, K = 6, 30, 16, 3


def _blobs(seed, counts, spread=10.0, sigma=0.3):
    """Per unit ``u``, ``counts[u]`` Gaussian blobs of ``N // counts[u]`` points around
    centres of its own: points ``(U, N, D)`` float32, labels ``(U, N)``, centres (per unit)."""
    rng = np.random.default_rng(seed)
    points, labels, centres = [], [], []
    for count in counts:
        centre = rng.uniform(-spread, spread, (count, D))
        label = np.arange(N) % count
        points.append(centre[label] + sigma * rng.normal(size=(N, D)))
        labels.append(label)
        centres.append(centre)
    return np.asarray(points, np.float32), np.asarray(labels), centres


def _kmeans(key, points, valid=None):
    return jax.device_get(kmeans(jax.random.key(key), points, K, valid=valid))


def _numpy_lloyd(points, valid, centroids, iterations):
    """Lloyd in float64, one unit, every distance taken directly."""
    x, c = points.astype(np.float64), centroids.astype(np.float64).copy()
    for _ in range(iterations):
        label = ((x[:, None] - c[None]) ** 2).sum(-1).argmin(1)
        for j in range(len(c)):
            members = valid & (label == j)
            assert members.any(), "this reference does not re-seed empty clusters"
            c[j] = x[members].mean(0)
    distance = ((x[:, None] - c[None]) ** 2).sum(-1)
    label = np.where(valid, distance.argmin(1), -1)
    return c, label, distance.min(1)[valid].sum()


def _same_partition(a, b):
    """Whether two labelings of the same points group them alike (up to renaming)."""
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_kmeans_recovers_planted_blobs_in_every_unit(strict_promotion):
    points, labels, centres = _blobs(0, [K] * UNITS)
    clusters = kmeans(jax.random.key(0), points, K)
    assert clusters.centroids.shape == (UNITS, K, D) and clusters.assignment.dtype == jnp.int32
    clusters = jax.device_get(clusters)
    for unit in range(UNITS):
        found, assignment = clusters.centroids[unit], clusters.assignment[unit]
        assert _same_partition(assignment, labels[unit])
        for cluster in range(K):  # the mean of its blob, near the planted centre
            blob = points[unit][assignment == cluster]
            np.testing.assert_allclose(found[cluster], blob.mean(0), atol=1e-5)
            assert np.linalg.norm(centres[unit] - found[cluster], axis=-1).min() < 0.5
    own = np.take_along_axis(clusters.centroids, clusters.assignment[..., None], 1)
    np.testing.assert_allclose(clusters.inertia, ((points - own) ** 2).sum((1, 2)), rtol=1e-4)


@pytest.mark.parametrize("sigma", [0.3, 6.0])  # apart, and overlapping (Lloyd has work)
def test_kmeans_matches_a_numpy_lloyd_from_the_same_seeding(sigma):
    points, _, _ = _blobs(1, [2, 3, 4, 3, 2, 3], sigma=sigma)
    start = np.asarray(facets.kmeans_plus_plus(jax.random.key(3), points, K))
    clusters = _kmeans(3, points)
    for unit in range(UNITS):
        valid = np.ones(N, bool)
        lloyd = _numpy_lloyd(points[unit], valid, start[unit], facets.ITERATIONS)
        np.testing.assert_allclose(clusters.centroids[unit], lloyd[0], atol=1e-4)
        np.testing.assert_array_equal(clusters.assignment[unit], lloyd[1])
        np.testing.assert_allclose(clusters.inertia[unit], lloyd[2], rtol=1e-4)


def test_kmeans_plus_plus_seeds_on_points_of_distinct_blobs():
    points, labels, _ = _blobs(2, [K] * UNITS)
    start = np.asarray(facets.kmeans_plus_plus(jax.random.key(0), points, K))
    for unit in range(UNITS):
        on = [np.flatnonzero((points[unit] == c).all(-1)) for c in start[unit]]
        assert all(len(where) == 1 for where in on)  # every seed is one of the points
        assert sorted(labels[unit][[w[0] for w in on]]) == list(range(K))


def test_invalid_points_are_assigned_minus_one_and_move_nothing():
    points, _, centres = _blobs(4, [2, 3, 3, 2, 3, 3])
    valid = np.random.default_rng(5).random(points.shape[:2]) < 0.7
    first, second = (
        _kmeans(1, np.where(valid[..., None], points, fill), valid) for fill in (1e3, np.nan)
    )
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)  # the invalid values are never read
    assignment = first.assignment
    assert (assignment[~valid] == -1).all() and (assignment[valid] >= 0).all()
    for unit in range(UNITS):  # each centroid: the mean of its valid members, by a blob
        for cluster in range(K):
            mine = points[unit][assignment[unit] == cluster]
            np.testing.assert_allclose(first.centroids[unit, cluster], mine.mean(0), atol=1e-5)
    gap = np.linalg.norm(first.centroids[1][:, None] - centres[1][None], axis=-1).min(0)
    assert gap.max() < 1.0  # blobs lie tens apart
    own = np.take_along_axis(first.centroids, np.maximum(assignment, 0)[..., None], 1)
    expected = (((points - own) ** 2).sum(-1) * valid).sum(1)
    np.testing.assert_allclose(first.inertia, expected, rtol=1e-4)


def test_an_empty_cluster_is_reseeded_at_the_farthest_point():
    points = np.array([[0.0], [0.1], [0.3], [10.0]], np.float32)
    centroids = np.array([[0.1], [50.0], [60.0]], np.float32)  # both far ones start empty
    step = jax.jit(facets._lloyd_step)(points, np.ones(4, bool), centroids, 3)
    np.testing.assert_allclose(np.asarray(step)[:, 0], [2.6, 10.0, 0.3], rtol=1e-6)


def test_fewer_distinct_points_than_clusters_keep_finite_centroids():
    points = np.ones((UNITS, N, D), np.float32)
    clusters = _kmeans(0, points)
    np.testing.assert_array_equal(clusters.centroids, np.ones((UNITS, K, D)))
    assert (clusters.assignment == 0).all() and (clusters.inertia == 0).all()
    none = _kmeans(0, points, np.zeros((UNITS, N), bool))
    assert np.isfinite(none.centroids).all() and (none.assignment == -1).all()


def _brute_silhouette(points, label, valid):
    scores = []
    for i in np.flatnonzero(valid):

        def distance(j, i=i):
            return np.linalg.norm(points[i] - points[j])

        mine = [j for j in np.flatnonzero(valid) if label[j] == label[i] and j != i]
        if not mine:
            scores.append(0.0)
            continue
        a = np.mean([distance(j) for j in mine])
        others = {label[j] for j in np.flatnonzero(valid)} - {label[i]}
        b = min(
            np.mean([distance(j) for j in np.flatnonzero(valid & (label == c))]) for c in others
        )
        scores.append((b - a) / max(a, b))
    return np.mean(scores)


def test_the_silhouette_equals_a_brute_force_count():
    rng = np.random.default_rng(6)
    points = rng.normal(size=(UNITS, N, D)).astype(np.float32)
    label = rng.integers(0, K, (UNITS, N))
    label[1, 0] = 5  # a cluster of one point
    valid = rng.random((UNITS, N)) < 0.8
    got = np.asarray(silhouette(points, label, valid))
    expected = [_brute_silhouette(points[u], label[u], valid[u]) for u in range(UNITS)]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    one = np.asarray(silhouette(points, np.zeros((UNITS, N), int), valid))
    assert np.isnan(one).all()  # one cluster has no silhouette


def test_the_criterion_picks_one_two_or_three_facets_from_as_many_blobs():
    counts = [1, 2, 3, 1, 2, 3]
    points, _, _ = _blobs(7, counts, sigma=1.0)
    choice = jax.device_get(choose_k(jax.random.key(2), points, 4))
    assert choice.k.tolist() == counts
    assert np.isnan(choice.silhouettes[:, 0]).all()
    many = np.array([1, 2, 4, 5])
    assert (choice.silhouettes[many, np.array(counts)[many] - 1] > 0.7).all()
    assert (choice.silhouettes[[0, 3], 1] < facets.MIN_SILHOUETTE).all()  # one blob stays one
    three = _kmeans(2, points)  # the chosen clusters are kmeans' at that k
    for unit in (2, 5):
        np.testing.assert_array_equal(choice.clusters.assignment[unit], three.assignment[unit])
        np.testing.assert_allclose(
            choice.clusters.centroids[unit, :K], three.centroids[unit], atol=1e-5
        )
    for unit, k in enumerate(counts):
        assert not choice.clusters.centroids[unit, k:].any()


def test_a_unit_with_too_few_points_has_one_facet():
    points, _, _ = _blobs(8, [2] * UNITS)
    valid = np.ones((UNITS, N), bool)
    valid[1, 2:] = False  # two valid points: no k >= 2 has a silhouette
    valid[3] = False
    chosen = np.asarray(choose_k(jax.random.key(0), points, 4, valid).k)
    assert chosen.tolist() == [2, 1, 2, 1, 2, 2]


def test_coverage_equals_a_brute_force_count():
    rng = np.random.default_rng(9)
    seeds = rng.normal(size=(UNITS, 5, D)).astype(np.float32)
    centroids = rng.normal(size=(UNITS, 4, D)).astype(np.float32)
    n_facets = np.array([0, 1, 2, 3, 4, 4])
    found = jax.device_get(coverage(seeds, centroids, n_facets))
    for unit in range(UNITS):
        matched = [
            min(range(n_facets[unit]), key=lambda j: np.sum((s - centroids[unit, j]) ** 2))
            if n_facets[unit]
            else -1
            for s in seeds[unit]
        ]
        assert found.matched[unit].tolist() == matched
        assert found.covered[unit] == len({m for m in matched if m >= 0})
    assert found.covered.tolist()[:2] == [0, 1] and found.covered.max() > 1


def test_new_units_and_points_reuse_the_compiled_programs():
    n_facets = np.array([1, 2, 3, 3, 2, 1])

    def run(points, seed):
        key = jax.random.key(seed)
        clusters = kmeans(key, points, K)
        choose_k(key, points, 4)
        coverage(points[:, :5], clusters.centroids, n_facets)
        silhouette(points, clusters.assignment, np.ones((UNITS, N), bool))

    functions = (kmeans, choose_k, coverage, silhouette)
    run(_blobs(10, [2, 3, 1, 1, 2, 3])[0], 0)
    programs = [f._cache_size() for f in functions]
    run(_blobs(11, [1, 1, 3, 3, 3, 2])[0], 1)
    run(np.random.default_rng(0).normal(size=(UNITS, N, D)).astype(np.float32), 2)
    assert [f._cache_size() for f in functions] == programs


def test_the_same_key_gives_the_same_clusters_and_a_unit_ignores_its_neighbours():
    points, _, _ = _blobs(12, [3, 2, 4, 1, 2, 3], sigma=3.0)
    key = jax.random.key(5)
    first, second = (jax.device_get(choose_k(key, points, 4)) for _ in range(2))
    jax.tree.map(np.testing.assert_array_equal, first, second)
    neighbours = points.copy()
    neighbours[3:] = _blobs(13, [4, 4, 4], sigma=3.0)[0][:3]
    np.testing.assert_array_equal(_kmeans(5, points)[0][:3], _kmeans(5, neighbours)[0][:3])
    seeds = [np.asarray(facets.kmeans_plus_plus(jax.random.key(i), points, K)) for i in (5, 6)]
    assert not np.array_equal(*seeds)


class _Counting:
    """A dataset that records every index it is asked to read."""

    def __init__(self, dataset):
        self.dataset, self.reads = dataset, []

    def __getattr__(self, name):
        return getattr(self.dataset, name)

    def __len__(self):
        return len(self.dataset)

    def images(self, indices):
        self.reads.append(list(indices))
        return self.dataset.images(indices)


def _unit_vectors(model, data, layer, index, pool="mean", peak=None):
    maps = np.asarray(model.activations(data.images(index))[layer], np.float64)
    maps = maps if maps.ndim == 4 else maps[:, None, None]
    if pool == "peak":
        vectors = maps[np.arange(len(index)), peak[:, 0], peak[:, 1]]
    else:
        vectors = maps.mean((1, 2))
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def world_pass():
    """The model, 24 world images and the pass over its ``pre`` units (compiled once)."""
    model, world = _conv_model(), world_dataset(3, 24, SIZE)
    return model, world, dataset_pass(model, world, ["pre"], top_k=8, batch_size=24)["pre"]


@pytest.mark.parametrize(
    ("layer", "k", "pool"), [("pre", 2, "mean"), ("pooled", None, "mean"), ("pre", 3, "peak")]
)
def test_natural_facets_group_each_units_top_images(world_pass, layer, k, pool):
    model, world, stats = world_pass
    data = _Counting(world)
    found = natural_facets(model, data, stats, layer, k=k, k_max=3, pool=pool, batch_size=16)
    slots = 3 if k is None else k
    assert found.layer == "pre" and found.feature_layer == layer and found.pool == pool
    assert found.centroids.shape[:2] == (6, slots) and found.members.shape == (6, slots, 8)
    assert found.mean_images.shape == (6, slots, SIZE, SIZE, 3)
    assert found.mean_images.dtype == found.centroids.dtype == np.float32
    read = sorted(i for batch in data.reads for i in batch)
    assert read == np.unique(stats.top_index).tolist()  # each top image read once
    assert max(len(batch) for batch in data.reads) <= 16
    assert (found.sizes.sum(1) == 8).all() and (np.diff(found.sizes, axis=1) <= 0).all()
    assert (found.n_facets == (found.sizes > 0).sum(1)).all()
    if k is None:
        assert ((found.n_facets >= 1) & (found.n_facets <= 3)).all()
    for unit in range(6):
        index = stats.top_index[unit]
        vectors = _unit_vectors(model, world, layer, index, pool, stats.top_position[unit])
        assert sorted(found.members[unit][found.members[unit] >= 0]) == sorted(index)
        for facet in range(found.n_facets[unit]):
            mine = found.assignment[unit] == facet
            size = found.sizes[unit, facet]
            assert found.members[unit, facet, :size].tolist() == index[mine].tolist()
            assert (found.members[unit, facet, size:] == -1).all()
            mean = world.images(index[mine]).mean(0)
            np.testing.assert_allclose(found.mean_images[unit, facet], mean, atol=1e-6)
            # Lloyd has converged: each centroid is its members' mean normalised vector.
            np.testing.assert_allclose(
                found.centroids[unit, facet], vectors[mine].mean(0), atol=1e-5
            )
        assert not found.mean_images[unit, found.n_facets[unit] :].any()


def test_natural_facets_of_a_dataset_smaller_than_top_k(world_pass):
    model, _, _ = world_pass
    data = world_dataset(4, 5, SIZE)
    stats = dataset_pass(model, data, ["pre"], top_k=8, batch_size=24)["pre"]
    found = natural_facets(model, data, stats, "pre", k=2, units=[5, 1], key=3)
    assert found.units.tolist() == [5, 1]
    assert (found.assignment[:, 5:] == -1).all() and (found.assignment[:, :5] >= 0).all()
    assert (found.members[..., 5:] == -1).all() and (found.sizes.sum(1) == 5).all()
    again = natural_facets(model, data, stats, "pre", k=2, units=[5, 1], key=3)
    np.testing.assert_array_equal(found.centroids, again.centroids)


def test_natural_facets_refuse_what_they_cannot_read(world_pass):
    model, data, stats = world_pass
    with pytest.raises(ArgumentError, match="peak"):
        natural_facets(model, data, stats, "pooled", pool="peak")
    with pytest.raises(ArgumentError, match="pool"):
        natural_facets(model, data, stats, "pre", pool="median")
    with pytest.raises(ArgumentError, match="k must"):
        natural_facets(model, data, stats, "pre", k=0)
    with pytest.raises(UnitRangeError):
        natural_facets(model, data, stats, "pre", units=[6])
