"""CPPN pictures: each picture its own network in one program, the same weights at any size,
the planted colour units' optimum reached, and the config keys that make a job of it."""

import io
import json
import re

import jax
import numpy as np
import optax
import pytest

import fvjax
from fvjax import objectives as O
from fvjax.data.images import read_rgb
from fvjax.errors import ArgumentError
from fvjax.job import check as check_lib
from fvjax.job import plan as plan_lib
from fvjax.job import run as run_lib
from fvjax.job.config import from_dict
from fvjax.models.zoo import planted as P
from fvjax.rendering import cppn as cppn_lib
from fvjax.rendering import step

SMALL = cppn_lib.cppn(width=8, depth=3)
NONE = fvjax.transforms.identity()


@pytest.fixture(scope="module")
def colour():
    return P.colour_opponent()


def test_each_picture_has_its_own_network_and_gradient(colour):
    keys = jax.random.split(jax.random.key(0), 2)
    raw = jax.vmap(lambda k: SMALL.init(k, (8, 8)))(keys)
    for kernel, _ in raw[:-1]:
        assert np.abs(np.asarray(kernel[0] - kernel[1])).min() > 0  # two draws, every weight
    # A random output layer, so that every layer's weights get a gradient.
    kernel, bias = raw[-1]
    raw = (*raw[:-1], (jax.random.normal(jax.random.key(1), kernel.shape), bias))

    def first_picture_objective(raw):
        images = jax.vmap(lambda r: SMALL.to_image(r, (8, 8)))(raw)
        return colour.activations(images)[P.COLOUR_PRE_LAYER][0, ..., 0].mean()

    grads = jax.jit(jax.grad(first_picture_objective))(raw)
    for leaf in jax.tree.leaves(grads):
        assert np.abs(np.asarray(leaf[0])).max() > 0 and not np.asarray(leaf[1]).any()


def test_a_layer_is_one_program_deterministic_and_not_retraced_for_new_units(colour):
    kwargs = dict(seeds=2, steps=4, size=12, param=SMALL, transforms=NONE, progress=False)
    first = fvjax.render(colour, O.channel(P.COLOUR_LAYER, [0, 1]), **kwargs)
    before = step.trace_count()
    again = fvjax.render(colour, O.channel(P.COLOUR_LAYER, [1, 0]), **kwargs)
    assert step.trace_count() == before
    np.testing.assert_array_equal(again.images[0], first.images[1])  # same key, same picture
    np.testing.assert_array_equal(again.images[1], first.images[0])
    pictures = first.images.reshape(4, -1)
    assert all(np.abs(pictures[i] - pictures[j]).max() > 0.05 for i in range(4) for j in range(i))


def test_the_same_weights_render_at_any_size():
    raw = SMALL.init(jax.random.key(3), (16, 16))
    kernel, bias = raw[-1]
    raw = (*raw[:-1], (4.0 * jax.random.normal(jax.random.key(4), kernel.shape), bias))
    to_image = jax.jit(SMALL.to_image, static_argnums=1)
    small, large = np.asarray(to_image(raw, (16, 16))), np.asarray(to_image(raw, (48, 48)))
    # 3n pixel centres hold the centres of n: the large picture is the small one, finer.
    np.testing.assert_allclose(large[1::3, 1::3], small, atol=1e-6)
    assert np.abs(large[1::3, 1::3] - large[::3, ::3]).max() > 0.01  # the new pixels differ
    # A narrower picture shows the middle of the square one, not a squeezed copy.
    np.testing.assert_allclose(to_image(raw, (16, 8)), small[:, 4:12], atol=1e-6)
    assert small.std() > 0.05 and small.min() >= 0 and small.max() <= 1


def test_colour_units_reach_their_analytic_optimum(colour):
    best = P.colour_optimum()
    result = fvjax.render(
        colour, O.channel(P.COLOUR_LAYER, range(6)), seeds=2, steps=32, size=12,
        param=cppn_lib.cppn(), transforms=NONE, progress=False,
    )  # fmt: skip
    fraction = result.activations / best.values[:, None]
    assert fraction.min() > 0.98, fraction.round(3)  # measured 0.994-0.996
    mean = result.images.mean(axis=(2, 3))  # (units, seeds, 3): each picture's colour
    matters = np.broadcast_to((best.colours != 0.5)[:, None], mean.shape)  # 0.5: any value
    assert np.abs(mean - best.colours[:, None])[matters].max() < 0.02, mean.round(3)  # 0.003


def test_the_scale_trades_for_adams_learning_rate():
    def pictures(param, optimizer):
        """The picture after 6 Adam steps up its mean red."""
        gradient = jax.grad(lambda raw: -param.to_image(raw, (8, 8))[..., 0].mean())

        def climb(_, carry):
            raw, state = carry
            updates, state = optimizer.update(gradient(raw), state)
            return optax.apply_updates(raw, updates), state

        @jax.jit
        def run(raw):
            return jax.lax.fori_loop(0, 6, climb, (raw, optimizer.init(raw)))[0]

        return np.asarray(param.to_image(run(param.init(jax.random.key(0), (8, 8))), (8, 8)))

    scaled = pictures(SMALL, optax.adam(0.05))
    plain = pictures(cppn_lib.cppn(width=8, depth=3, scale=1.0), optax.adam(0.05 * SMALL.scale))
    np.testing.assert_allclose(plain, scaled, atol=1e-5)
    assert np.abs(scaled - pictures(SMALL, optax.adam(0.05 * SMALL.scale))).max() > 1e-3


def test_bad_settings_and_start_pictures_are_refused(colour):
    for bad in [dict(width=0), dict(depth=-1), dict(width=2.5), dict(depth="8"), dict(width=True)]:
        ((name, value),) = bad.items()
        with pytest.raises(
            ArgumentError, match=re.escape(f"{name} must be an integer >= 1, got {value!r}")
        ):
            cppn_lib.cppn(**bad)
    with pytest.raises(ArgumentError, match="scale must be"):
        cppn_lib.cppn(scale=0.0)
    starts = np.full((1, 1, 8, 8, 3), 0.5, np.float32)
    with pytest.raises(ArgumentError, match="Cppn has none"):
        fvjax.render(colour, O.channel(P.COLOUR_LAYER, [0]), seeds=1, steps=1, size=8,
                     param=SMALL, starts=starts)  # fmt: skip


def test_a_cppn_job_from_its_config_keys(tmp_path):
    keys = ["param.kind='cppn'", "param.cppn_width=6", "param.cppn_depth=2"]
    job = {"model": "tiny", "layers": ["block2"], "units": [0, 1], "seeds": 1, "steps": 3,
           "size": 16, "progress": False, "output": str(tmp_path / "out")}  # fmt: skip
    config = from_dict(job, keys)
    assert plan_lib.build_param(config) == cppn_lib.cppn(width=6, depth=2)
    manifest = run_lib.run(config, stream=io.StringIO())
    pictures = [read_rgb(tmp_path / "out" / image["file"]) for image in manifest["images"]]
    assert len(pictures) == 2 and all(p.shape == (16, 16, 3) for p in pictures)
    saved = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert (
        saved["config"]["param"]["kind"] == "cppn" and saved["config"]["param"]["cppn_width"] == 6
    )
    with pytest.raises(fvjax.ConfigError, match="param.cppn_depth"):
        from_dict(job, ["param.cppn_depth=0"])


def test_facet_pictures_of_a_cppn_job_are_refused_before_any_work(tmp_path):
    job = {"model": "tiny", "layers": ["block2"], "units": [0], "steps": 2, "size": 16,
           "progress": False, "output": str(tmp_path / "out"), "param": {"kind": "cppn"},
           "checks": {"enabled": True, "images": 20}, "facets": {"enabled": True}}  # fmt: skip
    message = "facets.render starts each facet's picture .* param.kind = 'cppn' cannot start"
    with pytest.raises(fvjax.ConfigError, match=message):
        plan_lib.build_plan(from_dict(job))
    with pytest.raises(fvjax.ConfigError, match=message):
        check_lib.check(from_dict(job))
    assert not (tmp_path / "out" / "manifest.json").exists()
    plan_lib.build_plan(from_dict(job, ["facets.render=false"]))  # without facet pictures: fine
