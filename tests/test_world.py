"""The procedural world: deterministic, fast, and its masks agree with its pixels."""

import time

import numpy as np
import pytest

from fvjax import world

SIZE = 48


@pytest.fixture(scope="module")
def sample() -> world.World:
    return world.generate(seed=11, n=300, size=SIZE)


def assert_worlds_equal(a: world.World, b: world.World) -> None:
    for field, x, y in zip(a._fields[:-1], a[:-1], b[:-1], strict=True):
        np.testing.assert_array_equal(x, y, err_msg=field)
    for field, x, y in zip(a.objects._fields, a.objects, b.objects, strict=True):
        np.testing.assert_array_equal(x, y, err_msg=field)


def test_vocabularies_are_consistent():
    assert len(set(world.CONCEPTS)) == len(world.CONCEPTS)
    assert sum(world.CONCEPT_GROUPS.values(), ()) == world.CONCEPTS
    assert world.COLOUR_RGB.shape == (len(world.COLOURS), 3)
    assert world.ORIENTATIONS == ("orient_0", "orient_45", "orient_90", "orient_135")
    assert len(world.SCALE_PERIODS) == len(world.SCALES)


def test_shapes_and_dtypes(sample):
    n, c = 300, len(world.CONCEPTS)
    assert sample.images.shape == (n, SIZE, SIZE, 3) and sample.images.dtype == np.float32
    assert sample.labels.shape == (n, c) and sample.labels.dtype == bool
    assert sample.object_map.shape == (n, SIZE, SIZE) and sample.object_map.dtype == np.int8
    assert sample.painted.shape == (n, SIZE, SIZE) and sample.painted.dtype == bool
    assert sample.masks().shape == (n, c, SIZE, SIZE) and sample.masks().dtype == bool
    assert sample.images.min() >= 0.0 and sample.images.max() <= 1.0
    objects_per_image = sample.objects.active.sum(axis=1)
    assert set(np.unique(objects_per_image)) == {1, 2, 3}


def test_rectangular_images():
    batch = world.generate(seed=0, n=4, size=(32, 48))
    assert batch.images.shape == (4, 32, 48, 3)
    assert batch.masks().shape == (4, len(world.CONCEPTS), 32, 48)


def test_same_seed_same_world_bit_for_bit():
    assert_worlds_equal(world.generate(5, 40, SIZE), world.generate(5, 40, SIZE))


def test_different_seeds_differ():
    a, b = world.generate(5, 8, SIZE), world.generate(6, 8, SIZE)
    assert not np.array_equal(a.images, b.images)
    assert not np.array_equal(a.labels, b.labels)


def test_batches_join_up_into_one_call():
    # 256x256 images are rendered in chunks of 16: this also crosses a chunk boundary.
    whole = world.generate(seed=2, n=20, size=256)
    first = world.generate(seed=2, n=7, size=256)
    rest = world.generate(seed=2, n=13, size=256, start=7)
    np.testing.assert_array_equal(whole.images[:7], first.images)
    np.testing.assert_array_equal(whole.images[7:], rest.images)
    np.testing.assert_array_equal(whole.object_map[7:], rest.object_map)


def test_labels_are_exactly_the_non_empty_masks(sample):
    np.testing.assert_array_equal(sample.labels, sample.masks().any(axis=(2, 3)))
    # Every concept occurs somewhere in a few hundred images.
    assert sample.labels.any(axis=0).all()


def test_every_object_is_visible_and_painted(sample):
    for slot in range(world.MAX_OBJECTS):
        active = sample.objects.active[:, slot]
        inside = sample.object_map == slot
        assert (inside.any(axis=(1, 2)) == active).all()
        assert (inside & sample.painted).any(axis=(1, 2))[active].all()


def test_colour_masks_hold_that_colour(sample):
    masks = sample.masks(world.COLOURS)
    for c, rgb in enumerate(world.COLOUR_RGB):
        pixels = sample.images[masks[:, c]]
        assert len(pixels) > 0, world.COLOURS[c]
        assert np.abs(pixels - rgb).max() <= world.COLOUR_JITTER + 1e-6, world.COLOURS[c]
    # Each painted pixel has exactly one colour, and the rest is background.
    np.testing.assert_array_equal(masks.sum(axis=1), sample.painted)


def test_background_is_never_a_named_colour(sample):
    background = sample.images[~sample.painted]  # (pixels, 3)
    distance = np.abs(background[:, None, :] - world.COLOUR_RGB).max(axis=-1)
    assert distance.min() >= 0.2 - world.COLOUR_JITTER - 1e-6


def test_silhouette_masks_partition_the_objects(sample):
    masks = sample.masks()
    objects = sample.object_map >= 0

    def group(name):
        return masks[:, [world.CONCEPTS.index(c) for c in world.CONCEPT_GROUPS[name]]]

    # Each object pixel has exactly one shape and one texture; the background none.
    np.testing.assert_array_equal(group("shape").sum(axis=1), objects)
    np.testing.assert_array_equal(group("texture").sum(axis=1), objects)
    stripes = masks[:, world.CONCEPTS.index("stripes")]
    solid = masks[:, world.CONCEPTS.index("solid")]
    # Orientation masks cover exactly the striped objects; scales exactly the patterned ones.
    np.testing.assert_array_equal(group("orientation").sum(axis=1), stripes)
    np.testing.assert_array_equal(group("scale").sum(axis=1), objects & ~solid)


def test_solid_objects_are_fully_painted_and_patterns_have_gaps(sample):
    masks = sample.masks(["solid", "stripes", "checker", "dots"])
    solid, patterned = masks[:, 0], masks[:, 1:].any(axis=1)
    assert sample.painted[solid].all()
    assert 0.3 < sample.painted[patterned].mean() < 0.9


def test_stripe_orientation_masks_match_the_pixels():
    batch = world.generate(seed=4, n=200, size=64)
    masks = batch.masks(world.ORIENTATIONS)
    painted = batch.painted.astype(np.int8)
    # One pixel step along each orientation's stripes (x right, y down) and across them.
    along = {0: (0, 1), 45: (-1, 1), 90: (1, 0), 135: (1, 1)}
    across = {0: (1, 0), 45: (1, 1), 90: (0, 1), 135: (-1, 1)}
    checked = 0
    for o, degrees in enumerate(world.ORIENTATION_DEGREES):
        interior = masks[:, o]
        for axis in (1, 2):  # stay two pixels clear of the outline
            for shift in (-2, 2):
                interior = interior & np.roll(masks[:, o], shift, axis=axis)

        def change(step, interior=interior):
            shifted = np.roll(painted, step, axis=(1, 2))
            return np.abs(painted - shifted)[interior].mean()

        assert interior.sum() > 100, degrees
        assert change(along[degrees]) < 0.5 * change(across[degrees]), degrees
        checked += 1
    assert checked == 4


def test_scale_masks_match_the_pattern_period():
    batch = world.generate(seed=8, n=200, size=64)
    masks = batch.masks(["stripes", "fine", "coarse"])
    painted = batch.painted.astype(np.int8)
    # Fine patterns switch between painted and gap more often than coarse ones.
    switches = {}
    for name, m in (("fine", masks[:, 1]), ("coarse", masks[:, 2])):
        inside = m & np.roll(m, 1, axis=1) & np.roll(m, 1, axis=2)
        flips = np.abs(painted - np.roll(painted, 1, axis=1))
        flips = flips + np.abs(painted - np.roll(painted, 1, axis=2))
        switches[name] = flips[inside].mean()
    assert switches["fine"] > 1.3 * switches["coarse"]


def test_masks_by_name():
    batch = world.generate(seed=1, n=3, size=32)
    red = batch.masks(["red"])
    np.testing.assert_array_equal(red[:, 0], batch.masks()[:, world.CONCEPTS.index("red")])
    with pytest.raises(KeyError, match="purple"):
        batch.masks(["purple"])


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least"):
        world.generate(0, 2, size=8)
    with pytest.raises(ValueError, match="non-negative"):
        world.generate(0, -1, size=32)
    assert world.generate(0, 0, size=32).images.shape == (0, 32, 32, 3)


def test_generation_is_fast():
    start = time.perf_counter()
    world.generate(seed=0, n=1000, size=64)
    assert time.perf_counter() - start < 5.0  # about 0.5 s on two CPU cores
