"""Network Dissection's counts by tiles against the dense computation, bit for bit."""

import jax
import numpy as np
import pytest

from fvjax.checks import overlap

_tiles = jax.jit(overlap._tile_counts)
_dense = jax.jit(overlap._dense_counts)


def _case(seed, b, h, w, u, mask_h, mask_w, slots, quantiles):
    rng = np.random.default_rng(seed)
    maps = rng.normal(size=(b, h, w, u)).astype(np.float32)
    masks = rng.random((b, slots, mask_h, mask_w)) < 0.3
    levels = np.quantile(maps.reshape(-1, u), quantiles, axis=0).T.astype(np.float32)
    return maps, masks, levels


def _assert_same(maps, masks, thresholds):
    tiles, dense = _tiles(maps, masks, thresholds), _dense(maps, masks, thresholds)
    for name, a, b in zip(("per slot", "active", "slot pixels"), tiles, dense, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)
    return dense


@pytest.mark.parametrize(
    "shape",
    [
        (3, 4, 4, 5, 16, 16, 3),  # scale 4
        (2, 7, 5, 4, 14, 20, 3),  # scales 2 and 4, not square
        (2, 1, 1, 3, 32, 32, 2),  # a dense layer: one value held over the image
        (2, 14, 14, 8, 112, 112, 15),  # InceptionV1's mixed4a at NetDissect's 112 px
        (1, 3, 3, 2, 48, 48, 33),  # scale 16; more than 32 slots (two words a pixel)
    ],
)
def test_tiles_count_what_the_dense_upsampling_counts(shape):
    # One threshold for an odd batch, a ladder of three for an even one.
    quantiles = [0.99] if shape[0] % 2 else [0.9, 0.95, 0.995]
    maps, masks, thresholds = _case(0, *shape, quantiles)
    active = _assert_same(maps, masks, thresholds)[1]
    assert np.asarray(active).sum() > 0  # the thresholds leave something to count


def test_tiles_beyond_one_chunk_are_all_counted():
    maps, masks, _ = _case(1, 4, 8, 8, 32, 32, 32, 4, [0.5])
    low = np.full((32, 1), -10.0, np.float32)  # every tile hot: 4 x 9 x 9 x 32 > CHUNK
    assert overlap.CHUNK < 4 * 9 * 9 * 32
    per_slot, active, _ = _assert_same(maps, masks, low)
    assert np.asarray(active).sum() == 4 * 32 * 32 * 32
    np.testing.assert_array_equal(np.asarray(per_slot)[..., 0].sum(-1), masks.sum((2, 3)) * 32)


def test_a_saturated_unit_counts_its_ties_as_the_dense_path_does():
    rng = np.random.default_rng(2)
    maps = np.minimum(rng.normal(size=(3, 6, 6, 4)), 0.5).astype(np.float32)
    masks = rng.random((3, 2, 24, 24)) < 0.5
    below = np.full((4, 1), np.nextafter(np.float32(0.5), np.float32(-1)), np.float32)
    active = _assert_same(maps, masks, below)[1]
    assert np.asarray(active).sum() > 0
    nothing = np.full((4, 1), 0.5, np.float32)  # nothing lies above the saturation
    assert np.asarray(_assert_same(maps, masks, nothing)[1]).sum() == 0


def test_odd_and_fractional_scales_are_counted_densely():
    assert overlap.tiled(7, 112) and overlap.tiled(14, 28)
    assert not overlap.tiled(4, 12) and not overlap.tiled(8, 4) and not overlap.tiled(3, 8)
    maps, masks, thresholds = _case(3, 2, 4, 4, 3, 12, 12, 2, [0.9])
    np.testing.assert_array_equal(
        np.asarray(overlap.image_counts(maps, masks, thresholds)[0]),
        np.asarray(_dense(maps, masks, thresholds)[0]),
    )


@pytest.mark.parametrize("density", [0.0, 0.003, 0.3, 1.0])
def test_the_finder_lists_the_set_flags_in_order(density):
    flags = np.random.default_rng(4).random(3 * overlap.CHUNK + 77) < density
    find = jax.jit(overlap._finder)(flags)
    found = np.concatenate(
        [np.asarray(find(start)) for start in range(0, len(flags), overlap.CHUNK)]
    )
    expected = np.flatnonzero(flags)
    assert int(find.count) == len(expected)
    np.testing.assert_array_equal(found[: len(expected)], expected)
    assert not found[len(expected) :].any()


def test_select_finds_the_set_bit_of_each_rank():
    words = np.random.default_rng(5).integers(1, 2**32, 500, dtype=np.uint64).astype(np.uint32)
    bits = [[i for i in range(32) if word >> i & 1] for word in words.tolist()]
    rank = np.array([len(b) // 2 for b in bits], np.uint32)
    got = np.asarray(overlap._select(words, rank))
    assert got.tolist() == [b[r] for b, r in zip(bits, rank.tolist(), strict=True)]
