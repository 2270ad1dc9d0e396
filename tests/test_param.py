import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from fvjax import param
from fvjax.errors import ArgumentError

pytestmark = pytest.mark.usefixtures("strict_promotion")


@pytest.mark.parametrize(
    "p",
    [
        param.pixel(),
        param.pixel(decorrelate=True, output="clip"),
        param.fourier(),
        param.fourier(decorrelate=False, decay=1.5),
        param.laplacian(),
        param.laplacian(levels=2, decorrelate=False, output="clip"),
    ],
    ids=repr,
)
@pytest.mark.parametrize("size", [(16, 16), (15, 21)])
def test_images_are_rgb_in_unit_range_and_start_grey(p, size):
    raw = p.init(jax.random.key(0), size)
    image = p.to_image(raw, size)
    assert image.shape == (*size, 3)
    assert image.dtype == jnp.float32
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    assert abs(float(image.mean()) - 0.5) < 0.05  # a grey start
    # Far from the start the output still stays in range.
    big = jax.tree.map(lambda r: 1e3 * r, raw)
    image = p.to_image(big, size)
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0


@pytest.mark.parametrize(
    "p", [param.pixel(decorrelate=True), param.fourier(), param.laplacian(levels=3)], ids=repr
)
def test_gradients_match_finite_differences(p):
    size = (8, 10)
    raw = p.init(jax.random.key(1), size)
    weights = jax.random.normal(jax.random.key(2), (*size, 3))
    check_grads(
        lambda r: jnp.sum(p.to_image(r, size) * weights),
        (raw,),
        order=1,
        modes=["rev"],
        atol=1e-2,
        rtol=1e-2,
    )


def test_fourier_has_a_one_over_f_spectrum_scale():
    scale = param.spectrum_scale((32, 32), decay=1.0)
    assert scale.shape == (32, 17)
    assert scale[0, 0] == pytest.approx(32.0)  # DC clamped at 1 / max(H, W)
    assert scale[0, 8] == pytest.approx(1 / (8 / 32))
    assert scale[0, 16] < scale[0, 4] < scale[0, 1]


def test_fourier_spreads_a_single_coefficient_over_the_picture():
    p = param.fourier(decorrelate=False)
    raw = jnp.zeros((2, 3, 16, 9)).at[0, 0, 0, 2].set(1.0)  # one low frequency, red only
    image = np.asarray(p.to_image(raw, (16, 16)))
    assert np.ptp(image[..., 0]) > 0.01  # a wave across the red channel
    np.testing.assert_allclose(image[..., 1:], 0.5)  # other channels untouched


def test_settings_compare_by_value():
    assert param.fourier() == param.fourier()
    assert hash(param.pixel(True)) == hash(param.pixel(True))
    assert param.fourier() != param.fourier(decay=2.0)
    with pytest.raises(ValueError, match="'sigmoid' or 'clip'"):
        param.pixel(output="tanh")


def test_custom_parameterization_from_two_functions():
    p = param.Parameterization(
        init=lambda key, size: jnp.zeros((*size, 3)),
        to_image=lambda raw, size: jnp.clip(raw + 0.5, 0, 1),
    )
    assert p.to_image(p.init(None, (3, 3)), (3, 3)).shape == (3, 3, 3)


@pytest.mark.parametrize(
    "p",
    [
        param.pixel(),
        param.pixel(decorrelate=True, output="clip"),
        param.fourier(),
        param.fourier(decorrelate=False, decay=1.5, output="clip"),
        param.laplacian(levels=3),
    ],
    ids=repr,
)
@pytest.mark.parametrize("size", [(16, 16), (15, 21)])
def test_from_image_inverts_to_image(p, size):
    image = jax.random.uniform(jax.random.key(1), (*size, 3), minval=0.02, maxval=0.98)
    raw = param.from_image(p, image, size)
    assert jax.tree.map(jnp.shape, raw) == jax.tree.map(jnp.shape, p.init(jax.random.key(0), size))
    np.testing.assert_allclose(p.to_image(raw, size), image, atol=1e-5)
    # A sigmoid cannot reach 0 or 1: such pixels start EDGE inside.
    edges = jnp.zeros((*size, 3)).at[0].set(1.0)
    back = p.to_image(param.from_image(p, edges, size), size)
    if p.output == "sigmoid":
        np.testing.assert_allclose(back, jnp.clip(edges, param.EDGE, 1 - param.EDGE), atol=1e-5)
    else:
        np.testing.assert_allclose(back, edges, atol=1e-5)


def test_from_image_needs_an_inverse():
    custom = param.Parameterization(init=lambda k, s: jnp.zeros((*s, 3)), to_image=lambda r, s: r)
    with pytest.raises(ArgumentError, match="from_image"):
        param.from_image(custom, jnp.zeros((2, 2, 3)), (2, 2))


def test_a_laplacian_level_moves_a_whole_patch():
    p = param.laplacian(levels=3, decorrelate=False, output="clip")
    size = (16, 16)
    raw = tuple(jnp.zeros_like(r) for r in p.init(jax.random.key(0), size))
    coarse = (raw[0], raw[1], raw[2].at[0, 0, 0].set(0.4))  # one variable of the 4x4 level
    moved = np.asarray(p.to_image(coarse, size) - p.to_image(raw, size))[..., 0]
    assert (moved > 0).sum() >= 36 and np.isclose(moved.max(), 0.4)  # a patch, not a pixel
    with pytest.raises(ArgumentError, match="levels must be an integer >= 1"):
        param.laplacian(levels=0)
