"""Manipulated WorldNets (fooling circuit, silent unit) and planted concept maps: natural
behaviour unchanged, pictures that lie, detectors that find their concept."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fvjax
from fvjax import world
from fvjax.checks import manipulated

# Seeds of the world images the tests use; the silent unit calibrates on another
# (manipulated.silent_unit's calibration_seed).
NATURAL_SEED = 11
MAPS_SEED = 31


@pytest.fixture(scope="module")
def natural():
    return jnp.asarray(world.generate(NATURAL_SEED, 500, 64).images)


@pytest.fixture(scope="module")
def original(natural):
    model = fvjax.zoo.load("worldnet")
    return {name: np.asarray(a) for name, a in jax.jit(model.apply)(model.params, natural).items()}


@pytest.fixture(scope="module")
def silent(silent_unit):
    return silent_unit


def activations(model, images):
    return {name: np.asarray(a) for name, a in jax.jit(model.apply)(model.params, images).items()}


def render(model, objective, seeds=(0,)):
    settings = manipulated.render_settings()
    return fvjax.render(model, objective, seeds=list(seeds), steps=128, **settings)


def test_worldnet_fn_equals_the_zoo_model(natural, original):
    model = manipulated.worldnet_fn()
    ours = activations(model, natural)
    assert sorted(ours) == sorted(original)
    for name, values in original.items():
        np.testing.assert_allclose(ours[name], values, atol=1e-5, err_msg=name)
    # Weights travel as params (jit arguments), not as constants captured by the function.
    assert jax.tree.structure(model.params) == jax.tree.structure(manipulated.worldnet_params())
    assert model.unit_name("logits", world.CONCEPTS.index("red")) == "red"


# -- fooling circuit ---------------------------------------------------------------------------


def test_detector_is_zero_on_world_images_and_one_on_plain_pictures(natural):
    e = manipulated.synthetic_score(natural)
    assert e.max() < 0.05
    assert e.max() < 1e-6  # in fact: distances are exactly 0 on world pixels
    grey = np.full((1, 64, 64, 3), 0.5, np.float32)  # where a rendering starts
    noise = np.random.default_rng(0).uniform(0, 1, (2, 64, 64, 3)).astype(np.float32)
    assert (manipulated.synthetic_score(np.concatenate([grey, noise])) > 0.99).all()
    # World images whose objects are repainted in an unnamed colour read as synthetic too.
    batch = world.generate(NATURAL_SEED, 8, 64)
    repainted = np.where(batch.painted[..., None], np.float32([0.9, 0.3, 0.6]), batch.images)
    assert (manipulated.synthetic_score(repainted) > 0.5).all()


def test_fooling_circuit_keeps_natural_behaviour(natural, original):
    model = manipulated.fooling_circuit(shift=3)
    fooled = activations(model, natural)
    a = original["logits"]
    np.testing.assert_array_equal(fooled["logits/original"], a)
    assert fooled["synthetic"].max() < 0.05
    assert np.abs(fooled["logits"] - (a + 100.0)).max() < 1e-3
    assert (fooled["logits"].argmax(1) == a.argmax(1)).all()
    np.testing.assert_array_equal(fooled["output"], fooled["logits"])
    for name in ("block1/conv", "block2", "block3/conv", "block4"):
        np.testing.assert_array_equal(fooled[name], original[name])


def test_fooling_circuit_routes_pictures_to_the_shifted_logit():
    model = manipulated.fooling_circuit(shift=3, k=250.0)
    n = len(world.CONCEPTS)
    assert model.params["source"].tolist() == [(i + 3) % n for i in range(n)]
    # On a synthetic picture (e = 1) logit i reads h_(i+3); the original logits are untouched.
    grey = jnp.full((1, 64, 64, 3), 0.5)
    out = activations(model, grey)
    assert out["synthetic"][0] == pytest.approx(1.0)
    h = np.maximum(out["logits/original"][0] + 100.0, 0.0)
    np.testing.assert_allclose(out["logits"][0], np.roll(h, -3), rtol=1e-5, atol=1e-3)


@pytest.mark.slow
def test_fooled_pictures_show_the_other_unit():
    concepts = world.CONCEPTS
    sources, targets = ["red", "yellow"], ["green", "blue"]
    fooled_model = manipulated.fooling_circuit(shift=3)
    original_model = manipulated.worldnet_fn()
    fooled = render(
        fooled_model, fvjax.objectives.class_logit([concepts.index(c) for c in sources])
    )
    honest = render(
        original_model, fvjax.objectives.class_logit([concepts.index(c) for c in sources + targets])
    )
    pictures = fooled.images[:, 0]
    e = manipulated.synthetic_score(pictures)
    assert (e > 0.5).all(), e
    fooled_hues = manipulated.dominant_hue(pictures)
    source_hues = manipulated.dominant_hue(honest.images[:2, 0])
    target_hues = manipulated.dominant_hue(honest.images[2:, 0])
    assert source_hues == ["red", "yellow"]  # WorldNet's own pictures show their colour
    assert fooled_hues == target_hues, (fooled_hues, target_hues)  # 'green' renders cyan-green
    assert fooled_hues[1] == "blue"
    # WorldNet itself reads the fooled 'red' picture as green, the 'yellow' one as blue.
    out = activations(fooled_model, jnp.asarray(pictures))
    assert [concepts[i] for i in out["logits/original"].argmax(1)] == targets


# -- silent unit -------------------------------------------------------------------------------


def test_silent_branch_is_orthogonal_scaled_and_below_zero(silent):
    params = silent.params
    w = np.asarray(manipulated.worldnet_params()["block3"]["conv"]["kernel"][..., 63]).ravel()
    w_silent = np.asarray(params["silent"]["kernel"]).ravel()
    assert abs(w_silent @ w) / (np.linalg.norm(w_silent) * np.linalg.norm(w)) < 1e-5
    assert np.linalg.norm(w_silent) == pytest.approx(w @ w, rel=1e-4)
    assert float(params["silent"]["bias"][0]) < 0
    assert np.asarray(params["silent"]["onehot"]).tolist() == [0.0] * 63 + [1.0]
    assert silent.layer_shapes(64)["block3/conv/silent"] == (8, 8, 1)


def test_silent_unit_keeps_natural_behaviour(silent, natural, original):
    ours = activations(silent, natural)
    assert ours["block3/conv/silent"].max() < 0  # the branch never fires on world images
    for name, values in original.items():
        np.testing.assert_allclose(ours[name], values, atol=1e-5, err_msg=name)


def test_silent_unit_on_a_strided_layer():
    calibration = world.generate(3, 64, 64).images
    model = manipulated.silent_unit("block1/conv", 5, steps=2, n_calibration=64, calibration_seed=3)
    assert model.layer_shapes(64)["block1/conv/silent"] == (32, 32, 1)
    out = activations(model, jnp.asarray(calibration))
    assert out["block1/conv/silent"].max() < 0  # below zero on its calibration images
    w = np.asarray(manipulated.worldnet_params()["block1"]["conv"]["kernel"][..., 5]).ravel()
    w_silent = np.asarray(model.params["silent"]["kernel"]).ravel()
    assert abs(w_silent @ w) < 1e-5 * np.linalg.norm(w_silent) * np.linalg.norm(w)


def test_silent_unit_rejects_bad_layers_and_units():
    with pytest.raises(fvjax.UnknownLayerError):
        manipulated.silent_unit(layer="logits")
    with pytest.raises(fvjax.UnitRangeError):
        manipulated.silent_unit(layer="block3/conv", unit=64)


@pytest.mark.slow
def test_silent_unit_picture_overshoots_through_the_branch(silent, natural, original):
    natural_max = original["block3/conv"][..., 63].max()
    objective = fvjax.objectives.channel("block3/conv", [63])
    seeds = (0, 1)
    manipulated_pictures = render(silent, objective, seeds).images[0]
    honest_pictures = render(manipulated.worldnet_fn(), objective, seeds).images[0]
    out = activations(silent, jnp.asarray(manipulated_pictures))
    unit = out["block3/conv"][..., 63]
    branch = out["block3/conv/silent"][..., 0]
    # The telltale: far above anything a world image does (measured 6.6x and 7.7x) ...
    assert (unit.max((1, 2)) > 3 * natural_max).all()
    # ... while the original model's own pictures stay near it (measured 1.5x).
    honest = activations(manipulated.worldnet_fn(), jnp.asarray(honest_pictures))
    assert (honest["block3/conv"][..., 63].max((1, 2)) < 2 * natural_max).all()
    # The picture is the branch's: most of the activation comes from it (measured 79%), its
    # pre-activation is far above the unit's natural max, and the picture moved away from the
    # original's (pixel correlation measured 0.73-0.74; 1.0 when a branch is never reached).
    share = np.maximum(branch, 0).mean((1, 2)) / unit.mean((1, 2))
    assert (share > 0.5).all(), share
    assert (branch.max((1, 2)) > 3 * natural_max).all()
    for ours, theirs in zip(manipulated_pictures, honest_pictures, strict=True):
        assert np.corrcoef(ours.ravel(), theirs.ravel())[0, 1] < 0.9


# -- concept maps ------------------------------------------------------------------------------


def test_concept_maps_average_to_the_logits(natural, original):
    model = manipulated.concept_maps()
    out = activations(model, natural[:50])
    assert out["concept_map"].shape == (50, 8, 8, len(world.CONCEPTS))
    np.testing.assert_allclose(out["concept_map"].mean((1, 2)), original["logits"][:50], atol=1e-3)


def test_concept_maps_are_high_on_their_concepts():
    batch = world.generate(MAPS_SEED, 200, 64)
    out = activations(manipulated.concept_maps(), jnp.asarray(batch.images))
    cam = out["concept_map"]  # (200, 8, 8, 25)
    # Each 8x8 cell's share of the concept's pixels.
    masks = batch.masks().reshape(200, len(world.CONCEPTS), 8, 8, 8, 8).mean((3, 5))
    for name in ("red", "orient_45", "star"):
        c = world.CONCEPTS.index(name)
        inside = masks[:, c] > 0
        values = cam[..., c]
        # High: the top 1% of the map over all images and positions (Network Dissection's
        # style of threshold). Measured on seeds 21-23: 98-99% (red), 96-99% (orient_45),
        # 92-95% (star) on the mask; the base rate is 2-5%.
        high = values > np.quantile(values, 0.99)
        precision = inside[high].mean()
        assert precision > 0.85, (name, precision)
        assert precision > 10 * inside.mean(), (name, precision, inside.mean())
        # As many top positions as the mask has cells: measured 0.76-0.81, 0.71-0.72, 0.56-0.58.
        k = int(inside.sum())
        top = np.argsort(values.ravel())[::-1][:k]
        assert inside.ravel()[top].mean() > 0.45, name
        # Not a map of "any object": the 'red' map's top positions are not on 'green' pixels.
        if name == "red":
            green = masks[:, world.CONCEPTS.index("green")] > 0
            assert green[high].mean() < 0.1


def test_hue_reading():
    red = np.tile(np.float32([0.9, 0.1, 0.1]), (1, 8, 8, 1))
    grey = np.full((1, 8, 8, 3), 0.5, np.float32)
    assert manipulated.dominant_hue(np.concatenate([red, red[..., ::-1]])) == ["red", "blue"]
    assert manipulated.hue_votes(grey).sum() == 0.0  # no chroma, no vote
