"""The dataset pass against brute force: every statistic recomputed from all activations kept."""

import jax
import numpy as np
import pytest
from PIL import Image

from fvjax.checks import scan as pass_lib
from fvjax.checks.scan import dataset_pass
from fvjax.data import world
from fvjax.data.datasets import world_dataset
from fvjax.errors import ArgumentError, ConceptDatasetError
from fvjax.models import from_fn

SIZE = 32


def _conv_model():
    """A signed 8x8x6 conv map (no ties at zero), its ReLU, and a dense pooled layer."""
    kernel = jax.random.normal(jax.random.key(1), (5, 5, 3, 6)) * 0.3

    def apply(params, x):
        pre = jax.lax.conv_general_dilated(
            x - 0.5, params, (4, 4), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return {"pre": pre, "relu": jax.nn.relu(pre), "pooled": pre.mean(axis=(1, 2))}

    return from_fn(apply, params=kernel, name="conv")


def _brute(model, dataset, layer, quantile, top_k, threshold=None):
    """Every activation kept: scores, top-k, the exact quantile, IoU with PIL's bilinear."""
    batch = next(dataset.batches(len(dataset)))
    maps = np.asarray(model.activations(batch.images)[layer], np.float64)
    if maps.ndim == 2:
        maps = maps[:, None, None, :]
    n, h, w, units = maps.shape
    score = maps.mean(axis=(1, 2))
    if threshold is None:
        threshold = np.quantile(maps.reshape(-1, units), 1 - quantile, axis=0)
    concepts = dataset.concepts
    masks = world.generate(dataset.seed, len(dataset), dataset.size).masks()  # (N, 25, H, W)
    inter = np.zeros((units, len(concepts.names)), np.int64)
    union = np.zeros_like(inter)
    for i in range(n):
        annotated = {concepts.category[c] for c in range(len(concepts.names)) if masks[i, c].any()}
        for u in range(units):
            up = Image.fromarray(maps[i, :, :, u].astype(np.float32), mode="F")
            active = np.asarray(up.resize(dataset.mask_size[::-1], Image.BILINEAR)) > threshold[u]
            for c in range(len(concepts.names)):
                both = int((active & masks[i, c]).sum())
                inter[u, c] += both
                union[u, c] += int(masks[i, c].sum()) - both
                if concepts.category[c] in annotated:
                    union[u, c] += int(active.sum())
    order = np.lexsort((np.broadcast_to(np.arange(n)[:, None], score.shape), -score), axis=0)
    return score, order[:top_k].T, threshold, inter, union


@pytest.mark.parametrize("layer", ["pre", "relu", "pooled"])
def test_streaming_statistics_equal_brute_force_on_a_small_dataset(layer):
    model, dataset = _conv_model(), world_dataset(seed=2, n=30, size=SIZE)
    stats = dataset_pass(model, dataset, [layer], top_k=5, quantile=0.01, batch_size=8)[layer]
    score, top, threshold, inter, union = _brute(model, dataset, layer, 0.01, 5)
    assert stats.exact and stats.n_images == 30
    np.testing.assert_array_equal(stats.top_index, top)
    np.testing.assert_allclose(stats.top_value, np.take_along_axis(score.T, top, 1), rtol=1e-5)
    bottom = np.lexsort((np.broadcast_to(np.arange(30)[:, None], score.shape), score), axis=0)
    np.testing.assert_array_equal(stats.bottom_index, bottom[:5].T)
    np.testing.assert_allclose(stats.threshold, threshold, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(stats.intersection, inter)
    np.testing.assert_array_equal(stats.union, union)
    np.testing.assert_allclose(stats.score_mean, score.mean(0), rtol=1e-5, atol=1e-6)
    assert stats.score_counts.sum(1).tolist() == [30] * stats.units
    assert stats.score_counts[:, 0].sum() == stats.score_counts[:, -1].sum() == 0


def test_the_peak_position_is_where_the_map_is_largest():
    model, dataset = _conv_model(), world_dataset(seed=2, n=12, size=SIZE)
    stats = dataset_pass(model, dataset, ["pre"], top_k=3, batch_size=5)["pre"]
    images = dataset.images(stats.top_index[2])
    maps = np.asarray(model.activations(images)["pre"])[..., 2]
    for image_map, (y, x) in zip(maps, stats.top_position[2], strict=True):
        assert image_map[y, x] == image_map.max()


def test_a_dataset_larger_than_its_calibration_reports_the_quantile_it_realized():
    model, dataset = _conv_model(), world_dataset(seed=3, n=96, size=SIZE)
    stats = dataset_pass(
        model, dataset, ["pre"], quantile=0.02, batch_size=16, calibration_bytes=1
    )["pre"]
    assert not stats.exact
    batch = next(dataset.batches(96))
    maps = np.asarray(model.activations(batch.images)["pre"]).reshape(-1, 6)
    realized = (maps > stats.threshold).mean(0)
    np.testing.assert_allclose(stats.realized_quantile, realized)
    # The documented error: the nearest rung of the ladder, within 30% of the request here.
    assert np.all(np.abs(stats.realized_quantile / 0.02 - 1) < 0.3), stats.realized_quantile
    # The counts at the threshold used are exact.
    _, _, _, inter, union = _brute(model, dataset, "pre", 0.02, 1, threshold=stats.threshold)
    np.testing.assert_array_equal(stats.intersection, inter)
    np.testing.assert_array_equal(stats.union, union)


def test_rank_is_exact_at_the_top_and_bounded_below_it():
    model, dataset = _conv_model(), world_dataset(seed=5, n=40, size=SIZE)
    stats = dataset_pass(model, dataset, ["pre"], top_k=4, bins=16)["pre"]
    scores = np.asarray(model.activations(next(dataset.batches(40)).images)["pre"]).mean((1, 2))
    assert stats.rank(0, scores[:, 0].max() + 1.0) == (0.0, 0.0)
    second = np.sort(scores[:, 0])[-2]
    assert stats.rank(0, second) == (2 / 40, 0.0)
    for value in np.quantile(scores[:, 0], [0.2, 0.5, 0.8]):
        fraction, error = stats.rank(0, value)
        assert abs(fraction - np.mean(scores[:, 0] >= value)) <= error + 1e-9


def test_bad_requests_name_what_is_wrong(tmp_path):
    model, dataset = _conv_model(), world_dataset(seed=0, n=4, size=SIZE)
    with pytest.raises(ArgumentError, match="score must be one of"):
        dataset_pass(model, dataset, ["pre"], score="median")
    with pytest.raises(ArgumentError, match="quantile must lie in"):
        dataset_pass(model, dataset, ["pre"], quantile=1.5)
    with pytest.raises(Exception, match="nope"):
        dataset_pass(model, dataset, ["nope"])
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    from fvjax.data.datasets import folder_dataset

    folder = folder_dataset(tmp_path, SIZE)
    with pytest.raises(ConceptDatasetError, match="dissection needs concept masks"):
        dataset_pass(model, folder, ["pre"], dissect=True)
    stats = dataset_pass(model, folder, ["pre"], top_k=2)["pre"]
    assert stats.concepts is None and stats.top_index[0].tolist() == [0, -1]


def test_the_step_compiles_once_for_a_ragged_last_batch(monkeypatch):
    model, dataset = _conv_model(), world_dataset(seed=0, n=11, size=SIZE)
    traces = []
    original = pass_lib._layer_batch

    def counted(*args, **kwargs):
        traces.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(pass_lib, "_layer_batch", counted)
    # The replay program is keyed on shapes alone: another test may have compiled it. (Not
    # jax.clear_caches(): every later test would compile its every operation again.)
    pass_lib._count.clear_cache()
    dataset_pass(model, dataset, ["pre"], batch_size=4, calibration_bytes=1)
    assert len(traces) == 2  # one trace of the replay program, one of forward + counts
