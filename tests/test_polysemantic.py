"""Planted polysemantic units: two facets with equal optima, each found alone, plain renders
blending them (``fvjax.models.zoo.polysemantic``)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fvjax
from fvjax.data import world
from fvjax.models.zoo import planted
from fvjax.models.zoo import polysemantic as S

SIZE = 32


@pytest.fixture(scope="module")
def model():
    return S.polysemantic_units()


def _auc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """How often a positive outranks a negative (ties count half)."""
    above = (positives[:, None] > negatives[None]).mean()
    return float(above + 0.5 * (positives[:, None] == negatives[None]).mean())


# -- the planted answers themselves ------------------------------------------------------------


def test_facets_and_units_share_one_grid(model):
    shapes = model.layer_shapes(48)
    assert shapes == {S.FACETS_LAYER: (36, 36, 8), S.POLY_LAYER: (36, 36, 4)}
    wide = S.polysemantic_units([(30.0, "orange")], wavelength=8.0)
    assert wide.layer_shapes((48, 40)) == {S.FACETS_LAYER: (32, 24, 2), S.POLY_LAYER: (32, 24, 1)}


@pytest.mark.usefixtures("strict_promotion")
def test_a_unit_is_the_max_of_its_two_facets(model):
    pictures = np.random.default_rng(0).uniform(size=(3, SIZE, SIZE, 3)).astype(np.float32)
    layers = model.activations(pictures)
    facets = np.asarray(layers[S.FACETS_LAYER])
    expected = np.maximum(facets[..., 0::2], facets[..., 1::2])
    np.testing.assert_array_equal(np.asarray(layers[S.POLY_LAYER]), expected)


@pytest.mark.usefixtures("strict_promotion")
def test_weights_are_params_not_constants(model):
    images = jnp.full((1, SIZE, SIZE, 3), 0.7, jnp.float32)
    zeros = jax.tree.map(jnp.zeros_like, model.params)
    for name, value in model.apply(zeros, images).items():
        assert float(jnp.abs(value).max()) == 0.0, name


@pytest.mark.usefixtures("strict_promotion")
@pytest.mark.parametrize("size", [SIZE, 48, (40, 56)])
def test_each_facets_best_picture_scores_one_and_leaves_the_other_facet_at_zero(model, size):
    optima = S.facet_optima(size)  # (units, facets, H, W, 3)
    scores = S.facet_scores(model, optima.reshape(-1, *optima.shape[2:])).reshape(4, 2, 4, 2)
    for unit in range(4):
        own = scores[unit, :, unit]  # (facet shown, facet scored)
        np.testing.assert_allclose(np.diag(own), 1.0, atol=0.01)  # measured 1.000
        assert own[0, 1] < 1e-6 and own[1, 0] < 1e-6, own  # exactly 0 in theory


@pytest.mark.usefixtures("strict_promotion")
def test_grey_stripes_are_no_colour_and_a_flat_colour_is_no_stripes(model):
    grey_stripes = np.stack([planted.stripes(a, SIZE, 6.0, 0.3) for a, _ in S.PAIRS])
    colours = [world.COLOUR_RGB[world.COLOURS.index(c)] for _, c in S.PAIRS]
    flats = np.stack([np.broadcast_to(0.2 + 0.6 * rgb, (SIZE, SIZE, 3)) for rgb in colours])
    scores = S.facet_scores(model, np.concatenate([grey_stripes, flats]).astype(np.float32))
    assert np.abs(scores[:4, :, 1]).max() < 1e-6
    assert np.abs(scores[4:, :, 0]).max() < 1e-6
    own = scores[np.arange(8), np.tile(np.arange(4), 2), np.repeat([0, 1], 4)]
    # Measured 0.995-0.996 (sinusoids), 0.998 (colours at chroma 0.6): the gains at work.
    assert (own > 0.5).all(), own.round(2)


def test_colour_facets_need_a_named_colour_with_a_hue():
    with pytest.raises(ValueError, match="no hue"):
        S.polysemantic_units([(0.0, "white")])
    with pytest.raises(ValueError, match="unknown colour"):
        S.polysemantic_units([(0.0, "purple")])


def test_world_stripes_fire_facet_a_and_world_colours_fire_facet_b(model):
    scene = world.generate(seed=0, n=200, size=64)
    facets = np.asarray(model.activations(scene.images)[S.FACETS_LAYER])
    peak = facets.max(axis=(1, 2)).reshape(len(facets), 4, 2)  # the most excited neuron
    for unit, (degrees, colour) in enumerate(S.PAIRS):
        striped = scene.labels[:, world.CONCEPTS.index(f"orient_{int(degrees)}")]
        coloured = scene.labels[:, world.CONCEPTS.index(colour)]
        assert striped.sum() >= 20 and coloured.sum() >= 20
        stripes_auc = _auc(peak[striped, unit, 0], peak[~striped, unit, 0])
        colour_auc = _auc(peak[coloured, unit, 1], peak[~coloured, unit, 1])
        assert stripes_auc > 0.9, (unit, stripes_auc)  # measured 0.97-0.99
        assert colour_auc > 0.85, (unit, colour_auc)  # measured 0.91-0.97


@pytest.mark.parametrize("size", [48])  # 64 px measured the same: 13-15 A-driven, 17-19 B
def test_each_units_top_world_pictures_hold_both_facets(model, size):
    """Natural pictures, as a multifaceted method would cluster them: among each unit's top 32
    world pictures by the ``"poly"`` channel mean, at least 8 are driven by facet A (A's
    channel mean above B's) and at least 8 by B. Without the contrast gains 0-1 were A's."""
    scene = world.generate(seed=1, n=400, size=size)
    layers = model.activations(scene.images)
    poly = np.asarray(layers[S.POLY_LAYER]).mean(axis=(1, 2))  # (N, U)
    means = np.asarray(layers[S.FACETS_LAYER]).mean(axis=(1, 2)).reshape(len(poly), 4, 2)
    top = np.argsort(-poly, axis=0)[:32].T  # (U, 32)
    by_a = (means[top, np.arange(4)[:, None], 0] > means[top, np.arange(4)[:, None], 1]).sum(1)
    # Measured A-driven: 48 px 15, 15, 16, 10; 64 px 15, 15, 14, 13.
    assert (by_a >= 8).all() and (32 - by_a >= 8).all(), by_a
    # And the facets fire about as strongly: the top channel means (measured A 0.25-0.35,
    # B 0.23-0.31; without the gains A reached 0.07-0.11).
    peak = means.max(axis=0)  # (U, 2)
    assert (peak[:, 0] > 0.6 * peak[:, 1]).all() and (peak[:, 1] > 0.6 * peak[:, 0]).all(), peak


@pytest.mark.usefixtures("strict_promotion")
def test_no_picture_beats_the_optimum_and_blob_edges_stay_low(model):
    """The gains keep the optimum of 1: A stays below ``1 + STRIPE_HALF^2``, B at most 1, on
    gratings of every phase and period, saturated colours and noise; a colour blob on grey,
    whose straight edges run at two units' angles, scores little on A."""
    gratings = [
        S._square_grating(angle, 48, wavelength, phase)
        for angle, _ in S.PAIRS
        for wavelength in (3.5, 4.5, 6.0, 8.0)
        for phase in (0.0, 1.0, 2.0)
    ]
    flats = [np.broadcast_to(rgb, (48, 48, 3)) for rgb in world.COLOUR_RGB]
    rng = np.random.default_rng(0)
    noise = [rng.uniform(size=(48, 48, 3)), rng.integers(0, 2, size=(48, 48, 3))]
    pictures = np.stack(gratings + flats + noise).astype(np.float32)
    scores = S.facet_scores(model, pictures)
    assert scores[..., 0].max() <= 1.0 + S.STRIPE_HALF**2, scores[..., 0].max()
    assert scores[..., 1].max() <= 1.0 + 1e-6, scores[..., 1].max()
    assert scores[..., 1].min() >= -S.COLOUR_FLOOR - 1e-6, scores[..., 1].min()

    rows, cols = np.mgrid[:48, :48] + 0.5
    square = (np.abs(rows - 24) <= 8) & (np.abs(cols - 24) <= 8)
    disk = (rows - 24) ** 2 + (cols - 24) ** 2 <= 100
    colours = [world.COLOUR_RGB[world.COLOURS.index(c)] for _, c in S.PAIRS]
    blobs = np.stack([np.where(m[..., None], rgb, 0.5) for m in (square, disk) for rgb in colours])
    scores = S.facet_scores(model, blobs.astype(np.float32))
    assert scores[..., 0].max() < 0.15, scores[..., 0].round(3)  # measured at most 0.12


@pytest.mark.usefixtures("strict_promotion")
def test_half_stripes_half_colour_is_a_blend_and_pure_pictures_are_not(model):
    optima = S.facet_optima(48)
    side_by_side, stacked = optima[:, 0].copy(), optima[:, 0].copy()
    side_by_side[:, :, 24:] = optima[:, 1, :, 24:]
    stacked[:, 24:] = optima[:, 1, 24:]
    grey = np.full((4, 48, 48, 3), 0.5, np.float32)
    noise = np.random.default_rng(0).uniform(size=(4, 48, 48, 3)).astype(np.float32)
    pictures = [optima[:, 0], optima[:, 1], side_by_side, stacked, grey, noise]
    scores = S.facet_scores(model, np.concatenate(pictures))
    shown = S.facet_shown(scores).reshape(len(pictures), 4, 4)  # (picture, its unit, unit)
    own = shown[:, np.arange(4), np.arange(4)]
    assert own.tolist() == [[0] * 4, [1] * 4, [-1] * 4, [-1] * 4, [-1] * 4, [-1] * 4]
    blended = scores.reshape(len(pictures), 4, 4, 2)[2:4, np.arange(4), np.arange(4)]
    assert (blended > 0.4).all(), blended.round(2)  # measured A 0.54-0.62, B 0.50


# -- the renderer finds each facet, and plain renders of the units blend -----------------------


def test_rendering_each_facet_alone_reaches_its_optimum_of_one(model):
    """Pixels (clipped), no transforms: the best of two seeds comes within 10% of 1 and no
    picture beats the bound of each window's best pattern (1.023); the other facet of the same
    unit stays near 0 and the stripes run at their planted angle."""
    result = fvjax.render(
        model,
        fvjax.objectives.channel(S.FACETS_LAYER, range(8)),
        seeds=2,
        steps=64,  # 128 steps gained 0.001 on every facet
        size=SIZE,
        param=fvjax.param.pixel(output="clip"),
        transforms=fvjax.transforms.identity(),
    )
    reached = result.activations.reshape(4, 2, 2)  # (unit, facet, seed)
    # Measured: stripes 0.996, colours 0.996-0.997; the other facet at most 0.01.
    assert (reached.max(axis=-1) >= 0.9).all(), reached.round(3)
    assert (reached <= 1.03).all(), reached.round(3)
    pictures = result.images.reshape(-1, SIZE, SIZE, 3)
    scores = S.facet_scores(model, pictures).reshape(4, 2, 2, 4, 2)
    for unit in range(4):
        assert scores[unit, 0, :, unit, 1].max() < 0.05, scores[unit, 0, :, unit].round(3)
        assert scores[unit, 1, :, unit, 0].max() < 0.05, scores[unit, 1, :, unit].round(3)
    found = planted.dominant_orientation(result.images[0::2])  # (units, seeds)
    error = planted.angle_difference(found.degrees, np.array([a for a, _ in S.PAIRS])[:, None])
    assert error.max() <= 10.0, error.round(1)  # measured at most 3.2 degrees


@pytest.mark.slow
def test_fourier_renders_of_each_facet_show_that_facet_alone(model):
    """fvjax's defaults on each facet's channel: the picture scores high on its facet and low
    on the other, so :func:`facet_shown` can tell a facet found alone from a blend. Colour
    renders leave few edges for A because B is floored below 0 (``COLOUR_FLOOR``)."""
    settings = {"seeds": 1, "steps": 96, "size": 48}
    result = fvjax.render(model, fvjax.objectives.channel(S.FACETS_LAYER, range(8)), **settings)
    scores = S.facet_scores(model, result.images.reshape(-1, 48, 48, 3)).reshape(4, 2, 1, 4, 2)
    own = np.stack([scores[unit, :, :, unit] for unit in range(4)])  # (unit, shown, seed, scored)
    # Measured at 96 steps: stripes 0.90-0.91 (B at most 0.03), colours 0.69-0.74 (A at most
    # 0.06); at 128 steps the colours reached 0.79-0.87.
    assert (own[:, 0, :, 0] > 0.6).all() and (own[:, 1, :, 1] > 0.6).all(), own.round(2)
    assert own[:, 0, :, 1].max() < 0.06 and own[:, 1, :, 0].max() < 0.15, own.round(3)
