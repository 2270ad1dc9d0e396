import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fvjax import transforms as T

pytestmark = pytest.mark.usefixtures("strict_promotion")


def _ramp(size=16):
    y, x = np.mgrid[:size, :size] / size
    return jnp.asarray(np.stack([y, x, x * y], -1), jnp.float32)


def test_shapes_are_static_and_known_without_compute():
    image = _ramp()
    for transform, want in [
        (T.pad(3), (22, 22)),
        (T.jitter(4), (12, 12)),
        (T.random_scale([0.8, 1.2]), (16, 16)),
        (T.random_rotate([-10, 10]), (16, 16)),
        (T.compose(T.pad(4), T.jitter(2)), (22, 22)),
        (T.standard(0.5), (22, 22)),
    ]:
        assert transform(jax.random.key(0), image).shape == (*want, 3)
        assert T.output_size(transform, (16, 16)) == want


def test_neutral_draws_are_the_identity():
    image = _ramp()
    np.testing.assert_allclose(T.random_scale([1.0])(jax.random.key(0), image), image, atol=1e-5)
    np.testing.assert_allclose(T.random_rotate([0])(jax.random.key(0), image), image, atol=1e-5)
    np.testing.assert_array_equal(T.jitter(0)(jax.random.key(0), image), image)
    np.testing.assert_array_equal(T.identity()(jax.random.key(0), image), image)


def test_rotation_by_90_degrees_turns_the_picture():
    image = _ramp(15)  # odd size: the centre is a pixel
    rotated = T.random_rotate([90])(jax.random.key(0), image)
    candidates = [np.rot90(np.asarray(image), k) for k in (1, 3)]
    assert min(np.abs(np.asarray(rotated) - c).max() for c in candidates) < 1e-4


def test_jitter_is_a_crop_of_the_input():
    image = _ramp()
    out = np.asarray(T.jitter(5)(jax.random.key(3), image))
    found = [
        (dy, dx)
        for dy in range(6)
        for dx in range(6)
        if np.array_equal(out, np.asarray(image)[dy : dy + 11, dx : dx + 11])
    ]
    assert len(found) == 1


def test_every_image_in_a_batch_draws_its_own_randomness():
    # The Lucid family draws one shift for the whole batch; here each key gives its own.
    image = _ramp()
    batch = jnp.broadcast_to(image, (16, *image.shape))
    keys = jax.random.split(jax.random.key(0), 16)
    out = jax.vmap(T.standard(0.5))(keys, batch)
    distinct = {np.asarray(o).tobytes() for o in out}
    assert len(distinct) >= 14
    # ...and the same key gives the same picture.
    again = jax.vmap(T.standard(0.5))(keys, batch)
    np.testing.assert_array_equal(out, again)


def test_settings_compare_by_value_and_bad_modes_are_refused():
    assert T.standard() == T.standard()
    assert T.random_rotate(range(3)) == T.random_rotate([0, 1, 2])
    with pytest.raises(ValueError, match="pad mode"):
        T.pad(2, mode="wrap")


def test_the_fused_affine_matches_its_parts():
    image = _ramp(15)
    # Neutral draws: the identity.
    neutral = T.random_affine(0, (0, 0), [1.0], [0.0])(jax.random.key(0), image)
    np.testing.assert_allclose(neutral, image, atol=1e-5)
    # Padding alone: the same as pad().
    padded = T.random_affine(3, (0, 0), [1.0], [0.0])(jax.random.key(0), image)
    np.testing.assert_allclose(padded, T.pad(3)(None, image), atol=1e-5)
    # A quarter turn alone: the same as random_rotate([90]).
    turned = T.random_affine(0, (0, 0), [1.0], [90.0])(jax.random.key(0), image)
    want = T.random_rotate([90.0])(jax.random.key(0), image)
    np.testing.assert_allclose(turned, want, atol=1e-4)
    # Jitter alone: a crop of the padded picture.
    out = np.asarray(T.random_affine(2, (4, 0), [1.0], [0.0])(jax.random.key(5), image))
    big = np.asarray(T.pad(2)(None, image))
    crops = [big[y : y + 15, x : x + 15] for y in range(5) for x in range(5)]
    assert min(np.abs(out - c).max() for c in crops) < 1e-5


def test_a_whole_centred_crop_is_the_identity_and_smaller_ones_zoom_in():
    image = _ramp()
    whole = jax.jit(T.random_crop(box=(1.0, 1.0), centre_std=0.0))
    np.testing.assert_allclose(whole(jax.random.key(3), image), image, atol=1e-5)
    half = jax.jit(T.random_crop(box=(0.5, 0.5), centre_std=0.0))(jax.random.key(3), image)
    # The middle half, twice as large: the ramp's slope doubles.
    np.testing.assert_allclose(np.diff(half[:, 0, 0]), 0.5 / 16, atol=1e-5)
    crops = jax.jit(jax.vmap(T.random_crop()))(
        jax.random.split(jax.random.key(0), 4), jnp.stack([image] * 4)
    )
    assert all(float(jnp.abs(crops[i] - crops[0]).max()) > 0.01 for i in range(1, 4))
    noisy = jax.jit(T.noise(0.1))(jax.random.key(0), image) - image
    assert 0.08 < float(noisy.std()) < 0.12 and T.output_size(T.noise(0.1), (16, 16)) == (16, 16)
    with pytest.raises(ValueError, match="box"):
        T.random_crop(box=(0.0, 1.0))
