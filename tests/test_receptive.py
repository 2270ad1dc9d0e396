"""Receptive fields measured from models of known geometry, crops, and heat overlays."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fvjax
from fvjax.checks.receptive import (
    ReceptiveField,
    colormap,
    crop,
    heat_overlay,
    receptive_field,
    upsample,
)
from fvjax.models import from_fn


def _conv(x, kernel, stride, padding):
    return jax.lax.conv_general_dilated(
        x, kernel, (stride, stride), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def _kernels(*channels, seed=0):
    rng = np.random.default_rng(seed)
    pairs = zip(channels[:-1], channels[1:], strict=True)
    return [jnp.asarray(rng.normal(size=(3, 3, cin, cout)), jnp.float32) for cin, cout in pairs]


def _two_convs(strides, padding):
    """``conv1`` (3x3, ``strides[0]``), ReLU, ``conv2`` (3x3, ``strides[1]``), and the two
    layers with global support: ``mixed`` (conv2 plus its spatial mean) and ``pooled``."""

    def fn(kernels, x):
        first = _conv(x, kernels[0], strides[0], padding)
        second = _conv(jax.nn.relu(first), kernels[1], strides[1], padding)
        mixed = second + second.mean(axis=(1, 2), keepdims=True)
        return {"conv1": first, "conv2": second, "mixed": mixed, "pooled": second.mean((1, 2))}

    return from_fn(fn, params=_kernels(3, 8, 8), name=f"convs{strides}{padding}")


def _support_box(model, layer, size, i, j):
    """The bounding box of the input-gradient support at position ``(i, j)``, brute force."""
    images = np.random.default_rng(1).random((4, *size, 3), dtype=np.float32)

    def unit(x):
        return model.apply(model.params, x)[layer][:, i, j].sum()

    grad = np.abs(np.asarray(jax.grad(unit)(jnp.asarray(images)))).sum(axis=(0, 3))
    rows, cols = np.nonzero(grad > 1e-6 * grad.max())
    return rows.min(), cols.min(), rows.max() + 1, cols.max() + 1


def _clip(box, size):
    top, left, bottom, right = box
    return max(top, 0), max(left, 0), min(bottom, size[0]), min(right, size[1])


@pytest.mark.parametrize(
    ("strides", "padding", "layer", "expected"),
    [
        # (a) two 3x3 stride-1 convs: 3 + 2 = 5 pixels; SAME starts 2 pixels into the padding.
        ((1, 1), "VALID", "conv2", ((5, 5), (1.0, 1.0), (0.0, 0.0))),
        ((1, 1), "SAME", "conv2", ((5, 5), (1.0, 1.0), (-2.0, -2.0))),
        ((1, 1), "SAME", "conv1", ((3, 3), (1.0, 1.0), (-1.0, -1.0))),
        # (b) 3x3 stride 2 then 3x3: 3 + 2 * 2 = 7 pixels, stride 2. SAME stride 2 on an even
        # size pads (0, 1), so conv1 starts at 0 and conv2 one conv1 step (2 pixels) earlier.
        ((2, 1), "VALID", "conv2", ((7, 7), (2.0, 2.0), (0.0, 0.0))),
        ((2, 1), "SAME", "conv2", ((7, 7), (2.0, 2.0), (-2.0, -2.0))),
    ],
)
def test_stacked_convs_have_their_known_fields(strides, padding, layer, expected):
    model = _two_convs(strides, padding)
    size = (24, 20)
    field = receptive_field(model, layer, size)
    assert (field.size, field.stride, field.offset) == expected
    assert field.layer_shape == model.check_layer(layer, size)
    assert field.input_size == size and not field.whole_image
    # Every position, the corners included, by translation: the box, clipped to the image, is
    # the support measured at that position.
    h, w = field.layer_shape[:2]
    for i, j in [(0, 0), (0, w - 1), (h - 1, 0), (h // 2, w // 3), (h - 1, w - 1)]:
        assert _clip(field.box(i, j), size) == _support_box(model, layer, size, i, j)


def test_stride_is_measured_not_the_ratio_of_sizes():
    # 33 px through 3x3 stride 2 VALID: 16 positions, 33 / 16 is not the stride.
    model = _two_convs((2, 1), "VALID")
    field = receptive_field(model, "conv2", (33, 33))
    assert field.layer_shape[:2] == (14, 14)
    assert (field.size, field.stride, field.offset) == ((7, 7), (2.0, 2.0), (0.0, 0.0))


@pytest.mark.parametrize("layer", ["mixed", "pooled"])
def test_global_mixing_and_pooled_layers_see_the_whole_image(layer):
    # (c) each position plus the mean over positions; (d) a rank-1 pooled layer.
    field = receptive_field(_two_convs((1, 1), "SAME"), layer, (16, 12))
    assert field.whole_image
    assert field.size == (16, 12)
    assert field.box() == field.box(3, 5) == (0, 0, 16, 12)


def test_worldnet_block3_field_from_its_architecture():
    # WorldNet (flax SAME convs, VALID 2x2 max pools) at 64 px, as (size, stride, offset):
    #   block1/conv 3x3 stride 2, 64 -> 32, pads (0, 1):       3,  2,   0  (rows 2i .. 2i+2)
    #   2x2 max pool:                      3 + 1 * 2 =  5,  4,   0
    #   block2/conv 3x3 (pad 1):           5 + 2 * 4 = 13,  4,  -4  (one pool step, 4 px, back)
    #   2x2 max pool:                     13 + 1 * 4 = 17,  8,  -4
    #   block3/conv 3x3 (pad 1):          17 + 2 * 8 = 33,  8, -12  (one pool step, 8 px, back)
    model = fvjax.zoo.load("worldnet")
    field = receptive_field(model, "block3/conv", 64)
    assert field.layer_shape == (8, 8, 64)
    assert (field.size, field.stride, field.offset) == ((33, 33), (8.0, 8.0), (-12.0, -12.0))
    top, left, bottom, right = field.box(2, 3)
    assert field.box(3, 3) == (top + 8, left, bottom + 8, right)
    assert field.box(2, 4) == (top, left + 8, bottom, right + 8)
    assert (bottom - top, right - left) == (33, 33)
    assert receptive_field(model, "block4/conv", 64).size == (33 + 2 * 8,) * 2
    assert receptive_field(model, "logits", 64).whole_image


def test_crop_fills_outside_with_gray_and_keeps_the_size():
    image = np.random.default_rng(0).random((10, 12, 3), dtype=np.float32)
    field = ReceptiveField((5, 5), (2.0, 2.0), (-2.0, -2.0), (5, 6, 4), (10, 12))
    crops = [crop(image, field.box(i, j)) for i in range(5) for j in range(6)]
    assert {c.shape for c in crops} == {(5, 5, 3)}
    corner = crop(image, field.box(0, 0), fill=0.25)
    assert np.all(corner[:2] == 0.25) and np.all(corner[:, :2] == 0.25)
    np.testing.assert_array_equal(corner[2:, 2:], image[:3, :3])
    np.testing.assert_array_equal(crop(image, (3, 4, 8, 9)), image[3:8, 4:9])
    assert np.all(crop(image, (20, 20, 23, 24)) == 0.5)  # wholly outside: all gray


def test_upsample_is_jax_bilinear_with_half_pixel_centres():
    values = np.random.default_rng(0).random((7, 5), dtype=np.float32)
    for size in [(32, 20), (7, 5), (15, 11)]:
        expected = jax.image.resize(jnp.asarray(values), size, "linear")
        np.testing.assert_allclose(upsample(values, size), expected, atol=1e-6)


def test_colormap_runs_dark_blue_to_yellow_with_rising_luminance():
    colours = colormap(np.linspace(0, 1, 101))
    luminance = colours @ np.array([0.2126, 0.7152, 0.0722])
    assert np.all(np.diff(luminance) > 0)
    assert colours[0, 2] > colours[0, :2].max()  # blue at 0
    assert colours[-1, :2].min() > 0.9 > 0.2 > colours[-1, 2]  # yellow at 1


def test_heat_overlay_puts_yellow_on_the_hottest_cell():
    image = np.full((64, 48, 3), 0.5, np.float32)
    activation = np.random.default_rng(0).random((8, 6)) * 0.5
    activation[2, 5] = 3.0
    overlay = heat_overlay(image, activation, alpha=0.6)
    assert overlay.shape == image.shape and overlay.dtype == np.float32
    assert overlay.min() >= 0.0 and overlay.max() <= 1.0
    yellowness = overlay[..., 0] + overlay[..., 1] - 2 * overlay[..., 2]
    y, x = np.unravel_index(yellowness.argmax(), yellowness.shape)
    assert (y // 8, x // 8) == (2, 5)  # each map cell covers 8 x 8 pixels
    flat = heat_overlay(image, np.full((8, 6), 7.0), alpha=0.6)  # constant map: heat 0
    np.testing.assert_allclose(flat, 0.4 * image + 0.6 * colormap(np.zeros((64, 48))), atol=1e-6)
