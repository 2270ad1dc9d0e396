"""Ground truth: the renderer recovers answers planted in networks by construction.

The planted networks (``fvjax.models.zoo.planted``) have preferred pictures known in advance: a
linear filter's best patch in closed form, oriented filters' stripe angles, colour units'
colours. The first tests check the planted answers themselves (no rendering); the others render
and compare.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fvjax
from fvjax import objectives as O
from fvjax.models.zoo import planted as P
from fvjax.rendering.step import trace_count

SIZE = 32
RED = P.COLOUR_UNITS.index("red_vs_green")
GREEN = P.COLOUR_UNITS.index("green_vs_red")
VERTICAL = P.ORIENTATIONS.index(90.0)


def _render(model, objective, **kwargs):
    """``fvjax.render`` at the test size (under standard promotion: optax needs it)."""
    return fvjax.render(model, objective, size=SIZE, **kwargs)


def _standard():
    return fvjax.transforms.standard(SIZE / 128)


# -- the planted answers themselves (strict dtype promotion: pure code must not rely on it) ----


@pytest.mark.usefixtures("strict_promotion")
@pytest.mark.parametrize("padding", ["VALID", "SAME"])
def test_linear_optimum_is_the_best_response(padding):
    model = P.linear_filter(3, size=5, bias=0.1, padding=padding)
    best = P.linear_optimum(model, SIZE)
    kernel = np.asarray(model.params["kernel"])[..., 0]
    assert (kernel > 0).any() and (kernel < 0).any()  # both signs: the optimum is not trivial
    assert best.value == pytest.approx(kernel[kernel > 0].sum() + 0.1, rel=1e-6)

    def centre(images):
        response = model.activations(images)[P.LINEAR_LAYER]
        return np.asarray(response[:, response.shape[1] // 2, response.shape[2] // 2, 0])

    assert centre(best.image[None])[0] == pytest.approx(best.value, abs=1e-4)
    worst = best.image.copy()
    worst[best.window] = 1.0 - best.patch
    assert centre(worst[None])[0] == pytest.approx(best.minimum, abs=1e-4)
    # No random picture does better, and pixels outside the receptive field change nothing.
    rng = np.random.default_rng(0)
    randoms = rng.uniform(size=(64, SIZE, SIZE, 3)).astype(np.float32)
    assert centre(randoms).max() < best.value
    outside = rng.uniform(size=(8, SIZE, SIZE, 3)).astype(np.float32)
    outside[:, best.window[0], best.window[1]] = best.patch
    np.testing.assert_allclose(centre(outside), best.value, atol=1e-4)


@pytest.mark.usefixtures("strict_promotion")
def test_linear_optimum_rejects_a_picture_too_small_for_the_field():
    model = P.linear_filter(0, size=5, padding="SAME")
    with pytest.raises(fvjax.ImageSizeError, match="receptive field"):
        P.linear_optimum(model, 4)


@pytest.mark.usefixtures("strict_promotion")
def test_weights_are_params_not_constants():
    images = jnp.full((1, SIZE, SIZE, 3), 0.7, jnp.float32)
    for model in (P.linear_filter(0), P.colour_opponent(), P.oriented_filters(), P.planted_model()):
        zeros = jax.tree.map(jnp.zeros_like, model.params)
        assert jax.tree.leaves(model.params), model.name
        for name, value in model.apply(zeros, images).items():
            assert float(jnp.abs(value).max()) == 0.0, (model.name, name)


@pytest.mark.usefixtures("strict_promotion")
def test_gabor_channels_prefer_their_own_orientation():
    model = P.oriented_filters(wavelength=4.0)
    angles = np.arange(0.0, 180.0, 5.0)
    # Average over phases: a finite window's mean of a ReLU wobbles with the stripes' phase.
    phases = np.linspace(0.0, 2 * np.pi, 4, endpoint=False)
    gratings = np.stack([P.stripes(a, 64, 4.0, p) for a in angles for p in phases])
    response = np.asarray(model.activations(gratings)[P.ORIENTATION_LAYER]).mean((1, 2))
    response = response.reshape(len(angles), len(phases), -1).mean(1)  # (angles, channels)
    for k, planted in enumerate(P.ORIENTATIONS):
        assert P.angle_difference(angles[response[:, k].argmax()], planted) <= 5.0
        across = angles[P.angle_difference(angles, planted) == 90.0]
        assert response[angles == across[0], k][0] < 0.05 * response[:, k].max()
    flat = np.full((1, 64, 64, 3), 0.8, np.float32)
    assert float(np.abs(model.activations(flat)[P.ORIENTATION_LAYER]).max()) < 1e-5


@pytest.mark.usefixtures("strict_promotion")
@pytest.mark.parametrize("size", [32, (48, 40)])
def test_dominant_orientation_reads_stripes(size):
    angles = np.arange(0.0, 180.0, 15.0)
    found = P.dominant_orientation(np.stack([P.stripes(a, size, 5.0, 0.7) for a in angles]))
    assert P.angle_difference(found.degrees, angles).max() < 1.0
    assert found.coherence.min() > 0.9
    noise = np.random.default_rng(0).uniform(size=(4, 32, 32, 3))
    assert P.dominant_orientation(noise).coherence.max() < 0.3


@pytest.mark.usefixtures("strict_promotion")
def test_colour_optimum_is_each_units_best_colour():
    model = P.colour_opponent()
    best = P.colour_optimum()
    flat = np.broadcast_to(best.colours[:, None, None], (6, 2, 2, 3)).astype(np.float32)
    response = np.asarray(model.activations(flat)[P.COLOUR_LAYER])[:, 0, 0]  # (colours, units)
    np.testing.assert_allclose(np.diag(response), best.values, atol=1e-6)
    assert (response.argmax(axis=1) == np.arange(6)).all()
    grey = np.full((1, 2, 2, 3), 0.5, np.float32)
    assert float(np.abs(model.activations(grey)[P.COLOUR_PRE_LAYER]).max()) < 1e-6
    randoms = np.random.default_rng(0).uniform(size=(256, 1, 1, 3)).astype(np.float32)
    random_response = np.asarray(model.activations(randoms)[P.COLOUR_LAYER])[:, 0, 0]
    assert (random_response.max(axis=0) <= best.values + 1e-6).all()


# -- the renderer recovers them ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("param", "steps", "bound", "signs"),
    [
        (fvjax.param.pixel(), 256, 0.97, 0.99),  # measured 0.983 (key 0), 0.982 (key 1)
        (fvjax.param.pixel(output="clip"), 64, 0.999, 0.99),  # measured 1.000
        (fvjax.param.fourier(), 256, 0.92, 0.9),  # measured 0.978 (key 0), 0.939 (key 1)
    ],
    ids=["pixel", "pixel-clip", "fourier"],
)
def test_neuron_render_reaches_the_linear_optimum(param, steps, bound, signs):
    """Adam(0.05), no transforms: the centre neuron gets within ``bound`` of its optimum."""
    first = P.linear_filter(0, size=5)
    for key in (0, 1):
        # The second filter's weights go through the first one's program: no retrace.
        model = dataclasses.replace(first, params=P.linear_filter(key, size=5).params)
        best = P.linear_optimum(model, SIZE)
        traces = trace_count()
        result = _render(
            model,
            O.neuron(P.LINEAR_LAYER, [0]),
            seeds=2,
            steps=steps,
            param=param,
            transforms=fvjax.transforms.identity(),
        )
        if key:
            assert trace_count() == traces
        fraction = result.activations[0] / best.value
        assert (fraction >= bound).all(), fraction
        assert (fraction <= 1.0 + 1e-5).all(), fraction  # never above the analytic optimum
        patches = result.images[0][:, best.window[0], best.window[1]]  # (seeds, k, k, 3)
        agree = ((patches > 0.5) == (best.patch > 0.5)).mean(axis=(1, 2, 3))
        assert (agree >= signs).all(), agree


def test_rendered_orientation_channels_recover_their_orientation():
    model = P.oriented_filters(wavelength=4.0)
    result = _render(
        model, O.channel(P.ORIENTATION_LAYER, range(4)), seeds=3, steps=64, transforms=_standard()
    )
    found = P.dominant_orientation(result.images)  # (units, seeds)
    error = P.angle_difference(found.degrees, np.asarray(P.ORIENTATIONS)[:, None])
    assert error.max() <= 20.0, error.round(1)  # measured at most 11.6 degrees
    assert np.median(error) <= 8.0, error.round(1)  # measured median 3.8
    assert found.coherence.min() > 0.4, found.coherence.round(2)  # they are stripes


def test_rendered_colour_units_recover_their_colour():
    result = _render(
        P.planted_model(),
        O.channel(P.COLOUR_LAYER, range(6)),
        seeds=2,
        steps=128,
        transforms=_standard(),
    )
    mean = result.images.mean(axis=(2, 3))  # (units, seeds, 3)
    projection = np.einsum("usc,kc->usk", mean - 0.5, P.COLOUR_DIRECTIONS)
    # Each picture's mean colour points along its own unit's direction more than any other's.
    assert (projection.argmax(axis=-1) == np.arange(6)[:, None]).all(), projection.round(3)
    own = projection[np.arange(6), :, np.arange(6)]
    assert own.min() > 0.15, own.round(3)  # measured 0.19-0.26
    red = mean[RED]
    assert (red[:, 0] - np.maximum(red[:, 1], red[:, 2]) > 0.15).all(), red.round(2)
    fraction = result.activations / P.colour_optimum().values[:, None]
    assert fraction.min() > 0.25, fraction.round(2)  # measured 0.35-0.59 at 128 steps


def test_objective_sum_gives_red_vertical_stripes():
    objective = O.channel(P.COLOUR_LAYER, [RED]) + O.channel(P.ORIENTATION_LAYER, [VERTICAL])
    result = _render(P.planted_model(), objective, seeds=2, steps=64, transforms=_standard())
    mean = result.images[0].mean(axis=(1, 2))  # (seeds, 3)
    assert (mean[:, 0] - np.maximum(mean[:, 1], mean[:, 2]) > 0.04).all(), mean.round(2)
    found = P.dominant_orientation(result.images[0])
    assert (P.angle_difference(found.degrees, 90.0) <= 15.0).all(), found.degrees.round(1)


def test_negated_objective_gives_the_opposite_colour():
    model = P.planted_model()
    # Before the ReLU the unit is affine: minimizing red-vs-green makes the picture green.
    result = _render(
        model, -O.channel(P.COLOUR_PRE_LAYER, [RED]), seeds=2, steps=64, transforms=_standard()
    )
    mean = result.images[0].mean(axis=(1, 2))
    assert (mean[:, 1] - mean[:, 0] > 0.08).all(), mean.round(2)
    assert ((mean - 0.5) @ P.COLOUR_DIRECTIONS[GREEN] > 0.05).all(), mean.round(2)
    # After the ReLU, minimizing only silences the unit: it ends at 0 and not red.
    result = _render(
        model, -O.channel(P.COLOUR_LAYER, [RED]), seeds=2, steps=64, transforms=_standard()
    )
    mean = result.images[0].mean(axis=(1, 2))
    assert (np.abs(result.activations) < 1e-3).all(), result.activations
    assert (mean[:, 0] < mean[:, 1]).all(), mean.round(3)  # measured G - R = 0.017
