"""MACO: the magnitude stays the dataset's exactly while the phase is optimized, a layer of
units is one program, and spectra come from the world, a folder or a file at any size."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import fvjax
from fvjax import objectives as O
from fvjax.errors import ArgumentError
from fvjax.rendering import maco, step
from fvjax.rendering.engine import plan_render

SIZE = 24


def _edges(kernel, x):
    out = jax.lax.conv_general_dilated(
        x, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return {"edges": jax.nn.relu(out)}


def _model():
    """Two ReLU units on the picture's luminance, a vertical and a horizontal edge detector
    (one ``apply`` for every call: the tests share compiled programs)."""
    kernel = np.zeros((3, 3, 3, 2), np.float32)
    kernel[:, 0, :, 0], kernel[:, 2, :, 0] = -1.0, 1.0
    kernel[0, :, :, 1], kernel[2, :, :, 1] = -1.0, 1.0
    return fvjax.from_fn(_edges, params=jnp.asarray(kernel), name="edges")


def test_the_magnitude_is_kept_exactly_while_the_phase_is_optimized():
    model, param = _model(), maco.param()
    objective = O.channel("edges", [0, 1, 0, 1])
    plan = plan_render(
        model, objective, steps=24, size=SIZE, param=param, transforms=maco.transforms()
    )
    setup, n = plan.setup, 4
    keys = jax.random.split(jax.random.key(0), n)
    state = step.init_state(setup, keys)
    start = np.asarray(state.raw)
    values = []
    for _ in range(24):  # one step a call, as render runs on a CPU: the next test's program
        state, value = step.run_steps(
            setup, 1, state, objective, keys, model.params, jnp.zeros((n, 0), jnp.float32)
        )
        values.append(np.asarray(value[0]))
    values = np.stack(values)
    assert (values[-4:].mean(0) > values[:4].mean(0)).all(), values  # the objective rose
    assert np.abs(np.asarray(state.raw) - start).max() > 0.5  # the phases moved
    signal = jax.vmap(lambda raw: param.signal(raw, (SIZE, SIZE)))(state.raw)
    found = np.abs(np.fft.rfft2(np.asarray(signal, np.float64), norm="ortho"))  # (n, 3, H, C)
    magnitude = param.magnitude((SIZE, SIZE))
    mean = found[:, :, 0, 0]
    found[:, :, 0, 0] = magnitude[:, 0, 0]  # the mean is free (M_0 |cos phase_0|)
    np.testing.assert_allclose(found, np.broadcast_to(magnitude, found.shape), rtol=2e-4, atol=1e-5)
    assert (mean <= magnitude[:, 0, 0] * (1 + 1e-4)).all()
    images = jax.vmap(lambda raw: param.to_image(raw, (SIZE, SIZE)))(state.raw)
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0


def test_a_layer_of_units_is_one_program_and_each_picture_draws_its_own():
    model = _model()
    kwargs = dict(seeds=2, steps=3, size=SIZE, param=maco.param(), transforms=maco.transforms())
    first = fvjax.render(model, O.channel("edges", [0, 1]), **kwargs)
    before = step.trace_count()
    again = fvjax.render(model, O.channel("edges", [1, 0]), **kwargs)
    assert step.trace_count() == before
    np.testing.assert_allclose(again.images[0], first.images[1], atol=1e-6)
    pictures = first.images.reshape(4, -1)
    assert all(np.abs(pictures[i] - pictures[j]).max() > 0.1 for i in range(4) for j in range(i))


def test_the_world_spectrum_is_estimated_once_per_size_in_the_decorrelated_space():
    spectrum = maco.world_spectrum(SIZE)
    assert spectrum is maco.world_spectrum((SIZE, SIZE))  # cached
    assert spectrum.magnitude.shape == (3, SIZE, SIZE // 2 + 1)
    again = maco.spectrum_from_images(
        fvjax.world.generate(maco.WORLD_SEED, maco.WORLD_IMAGES, SIZE).images
    )
    np.testing.assert_allclose(again.magnitude, spectrum.magnitude, rtol=1e-5)  # one batch
    # Grey pictures (R = G = B) put nearly all their energy in the first decorrelated channel.
    grey = np.repeat(np.random.default_rng(0).uniform(size=(4, 8, 8, 1)), 3, -1)
    energy = (maco.spectrum_from_images(grey).magnitude.astype(np.float64) ** 2).sum((1, 2))
    assert energy[0] > 0.97 * energy.sum(), energy
    with pytest.raises(ArgumentError, match=r"\(N, H, W, 3\)"):
        maco.spectrum_from_images(np.zeros((8, 8, 3)))


def test_a_spectrum_is_resampled_to_any_size_keeping_its_frequencies(tmp_path):
    spectrum = maco.world_spectrum(32)
    same = spectrum.resized(32)
    assert same is spectrum.magnitude
    for size in [(48, 40), (17, 21), 16]:
        resized = spectrum.resized(size)
        height, width = (size, size) if isinstance(size, int) else size
        assert resized.shape == (3, height, width // 2 + 1)
        flip = (-np.arange(height)) % height
        np.testing.assert_allclose(resized[:, :, 0], resized[:, flip, 0], rtol=1e-6)
        ratio = resized[:, 0, 0] / spectrum.magnitude[:, 0, 0]
        np.testing.assert_allclose(ratio, np.sqrt(height * width / 32**2), rtol=1e-5)
    # Twice the size: a frequency in cycles per pixel keeps its magnitude.
    doubled = spectrum.resized(64)
    np.testing.assert_allclose(doubled[:, 4, 6], spectrum.magnitude[:, 2, 3], rtol=1e-5)
    path = tmp_path / "m.npy"
    np.save(path, spectrum.magnitude)
    loaded = maco.load_spectrum(path, 64)
    assert loaded == spectrum and loaded.size == (32, 32)
    np.save(path, spectrum.magnitude[0])
    with pytest.raises(ArgumentError, match="must hold a"):
        maco.load_spectrum(path, 64)
    with pytest.raises(ArgumentError, match="neither"):
        maco.load_spectrum(tmp_path / "missing.npy", 64)


def test_a_folder_spectrum_is_its_images_at_the_render_size(tmp_path):
    rng = np.random.default_rng(0)
    pictures = (rng.uniform(size=(3, 20, 20, 3)) * 255).astype(np.uint8)
    for i, picture in enumerate(pictures):
        Image.fromarray(picture).save(tmp_path / f"{i}.png")
    spectrum = maco.load_spectrum(tmp_path, 20)
    assert spectrum == maco.spectrum_from_images(pictures.astype(np.float32) / 255.0)
    assert spectrum.source == str(tmp_path)
