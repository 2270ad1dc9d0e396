"""Diversity and guides: the only terms that tie pictures together, and only a unit's own seeds."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import fvjax
from fvjax.errors import ArgumentError, UnknownLayerError
from fvjax.rendering import engine, step
from fvjax.rendering import objectives as O
from fvjax.rendering import param as P
from fvjax.rendering import transforms as T
from fvjax.rendering.seeds import Diversity, Guide, gram_similarity, guide_similarity

CHEAP = T.compose(T.pad(2), T.jitter(2))


@pytest.fixture(scope="module")
def conv_model():
    """Two small conv layers with ReLUs: channels with styles to tell apart."""
    k1 = jax.random.normal(jax.random.key(0), (3, 3, 3, 8)) * 0.5
    k2 = jax.random.normal(jax.random.key(1), (3, 3, 8, 6)) * 0.3

    def apply(params, x):
        dims = ("NHWC", "HWIO", "NHWC")
        a = jax.nn.relu(
            jax.lax.conv_general_dilated(x - 0.5, params[0], (1, 1), "SAME", dimension_numbers=dims)
        )
        b = jax.nn.relu(
            jax.lax.conv_general_dilated(a, params[1], (2, 2), "SAME", dimension_numbers=dims)
        )
        return {"a": a, "b": b, "pooled": b.mean(axis=(1, 2))}

    return fvjax.from_fn(apply, params=(k1, k2), name="two-convs")


def _brute_similarity(x, group):
    out = []
    flat = np.asarray(x, np.float64).reshape(len(x), -1, x.shape[-1])
    grams = [f.T @ f for f in flat]
    grams = [g / np.linalg.norm(g) for g in grams]
    for start in range(0, len(x), group):
        members = range(start, start + group)
        total = sum((grams[i] * grams[j]).sum() for i, j in itertools.permutations(members, 2))
        out.append(total / group)
    return np.array(out)


@pytest.mark.parametrize("shape", [(6, 4, 4, 3), (4, 5), (8, 2, 3, 4)])
def test_gram_similarity_is_the_mean_summed_cosine_of_a_groups_gram_matrices(shape):
    x = jax.random.normal(jax.random.key(2), shape)
    group = 2 if shape[0] % 3 else 3
    np.testing.assert_allclose(gram_similarity(x, group), _brute_similarity(x, group), rtol=1e-5)


def test_the_terms_have_true_gradients():
    x = jax.random.normal(jax.random.key(3), (4, 3, 3, 5))
    check_grads(lambda a: gram_similarity(a, 2).sum(), (x,), order=1, modes=["rev"], atol=1e-2)
    d = jax.random.normal(jax.random.key(4), (4, 5))
    check_grads(lambda a: guide_similarity(a, d).sum(), (x,), order=1, modes=["rev"], atol=1e-2)
    mean = np.asarray(x).mean((1, 2))
    np.testing.assert_allclose(guide_similarity(x, d), (mean * d).sum(1), rtol=1e-5, atol=1e-6)


def test_chunks_hold_whole_units_and_pad_with_the_last_unit():
    assert engine.plan_chunks(12, 5, group=4) == (8, 2)
    assert engine.plan_chunks(12, 5, n_devices=2, group=3) == (6, 2)
    assert engine.plan_chunks(6, None, n_devices=4, group=3) == (12, 1)
    index = engine.chunk_index(0, 12, 6, group=3)
    assert index.tolist() == [0, 1, 2, 3, 4, 5, 3, 4, 5, 3, 4, 5]


@pytest.mark.parametrize("param", [P.pixel(), P.fourier()], ids=["pixel", "fourier"])
def test_diversity_pulls_a_units_seeds_apart(conv_model, param):
    kwargs = dict(seeds=3, steps=48, size=16, param=param, transforms=CHEAP)
    objective = O.channel("b", [0, 3])
    plain = fvjax.render(conv_model, objective, **kwargs)
    diverse = fvjax.render(conv_model, objective, diversity=Diversity("b", 0.5), **kwargs)

    def similarity(result):
        images = jnp.asarray(result.images.reshape(-1, 16, 16, 3))
        return gram_similarity(conv_model.activations(images)["b"], 3)

    before, after = similarity(plain), similarity(diverse)
    # Measured: 1.97-1.99 (near the most, 2 for 3 seeds) -> 0.53-0.85 at weight 0.5, while
    # the units keep 40-60% of their activation.
    assert (after < before - 0.5).all(), (before, after)
    assert diverse.activations.mean() > 0.2 * plain.activations.mean()


def test_a_units_diverse_pictures_do_not_depend_on_its_chunk(conv_model):
    kwargs = dict(seeds=[0, 1], steps=6, size=16, transforms=CHEAP, diversity=Diversity("a", 5.0))
    whole = fvjax.render(conv_model, O.channel("b", [0, 1, 2]), **kwargs)
    chunked = fvjax.render(conv_model, O.channel("b", [0, 1, 2]), batch_size=3, **kwargs)
    alone = fvjax.render(conv_model, O.channel("b", [2]), **kwargs)
    np.testing.assert_allclose(chunked.images, whole.images, atol=1e-5)
    np.testing.assert_allclose(alone.images[0], whole.images[2], atol=1e-5)


def test_new_units_with_diversity_do_not_retrace(conv_model):
    kwargs = dict(seeds=2, steps=2, size=16, transforms=CHEAP, diversity=Diversity("a", 1.0))
    fvjax.render(conv_model, O.channel("b", [0, 1]), **kwargs)
    before = step.trace_count()
    fvjax.render(conv_model, O.channel("b", [4, 5]), **kwargs)
    assert step.trace_count() == before


def test_a_guide_pulls_each_seed_towards_its_own_direction(conv_model):
    directions = np.zeros((1, 2, 6), np.float32)
    directions[0, 0, 1] = directions[0, 1, 4] = 1.0  # seed 0 towards channel 1, seed 1 to 4
    kwargs = dict(seeds=2, steps=48, size=16, param=P.pixel(), transforms=CHEAP)
    guided = fvjax.render(
        conv_model,
        O.channel("b", [0]),
        guide=Guide("pooled", 5.0),
        directions=directions,
        **kwargs,
    )
    pooled = np.asarray(conv_model.activations(jnp.asarray(guided.images[0]))["pooled"])
    assert pooled[0, 1] > pooled[0, 4] and pooled[1, 4] > pooled[1, 1]
    changed = directions[:, ::-1]
    again = fvjax.render(
        conv_model, O.channel("b", [0]), guide=Guide("pooled", 5.0), directions=changed, **kwargs
    )
    assert not np.allclose(again.images, guided.images)  # the directions steer (and identify)


def test_bad_terms_name_what_is_wrong(conv_model):
    objective, kwargs = O.channel("b", [0]), dict(steps=2, size=16)
    with pytest.raises(ArgumentError, match="at least 2 seeds"):
        fvjax.render(conv_model, objective, seeds=1, diversity=Diversity("a"), **kwargs)
    with pytest.raises(UnknownLayerError, match="nope"):
        fvjax.render(conv_model, objective, seeds=2, diversity=Diversity("nope"), **kwargs)
    with pytest.raises(ArgumentError, match="finite and >= 0"):
        fvjax.render(conv_model, objective, seeds=2, diversity=Diversity("a", -1.0), **kwargs)
    with pytest.raises(ArgumentError, match=r"directions must have shape .*\(1, 2, 6\)"):
        fvjax.render(
            conv_model,
            objective,
            seeds=2,
            guide=Guide("pooled"),
            directions=np.ones((1, 6)),
            **kwargs,
        )
    with pytest.raises(ArgumentError, match="needs directions"):
        fvjax.render(conv_model, objective, seeds=2, guide=Guide("pooled"), **kwargs)
    with pytest.raises(ArgumentError, match="only with a guide"):
        fvjax.render(conv_model, objective, seeds=2, directions=np.ones((1, 2, 6)), **kwargs)
