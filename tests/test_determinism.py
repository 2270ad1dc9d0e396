"""Determinism: no scatter in fvjax's programs, and XLA's flag set before JAX starts."""

import json
import os
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fvjax import alpha, cppn, inversion, maco
from fvjax import objectives as O
from fvjax import param as P
from fvjax import transforms as T
from fvjax.errors import ArgumentError
from fvjax.models import zoo
from fvjax.models.layers import max_pool
from fvjax.rendering import determinism, step
from fvjax.rendering.cost import lower_step
from fvjax.rendering.engine import plan_render
from fvjax.rendering.seeds import Diversity

SIZE = 32


def step_program(model, objective, seeds=1, **settings):
    """The lowered optimization step of a render (traced, not compiled): ``lower_step``'s,
    but with a unit's seeds together, as the seeds' terms (diversity) need."""
    if seeds == 1 and "diversity" not in settings:
        return lower_step(model, objective, size=SIZE, **settings)
    plan = plan_render(model, objective, seeds=seeds, steps=2, size=SIZE, **settings)
    n = len(objective.unit_ids()) * seeds
    keys = jax.random.split(jax.random.key(0), n)
    state = jax.eval_shape(lambda k: step.init_state(plan.setup, k), keys)
    members = plan.objective.take(np.repeat(np.arange(n // seeds), seeds))  # unit-major
    return step.run_steps.lower(
        plan.setup, 2, state, members, keys, model.params, jnp.zeros((n, 0))
    )


NONE = {"scatter": 0, "select_and_scatter": 0}


@pytest.fixture(scope="module")
def worldnet():
    return zoo.load("worldnet")


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"param": P.pixel(), "transforms": T.identity()},
        {"param": P.laplacian()},
        {"param": maco.param(), "transforms": maco.transforms()},
        {"param": cppn.cppn()},
        {"param": alpha.param()},
        {
            "transforms": T.compose(
                T.pad(4),
                T.jitter(2),
                T.random_scale([0.9, 1.1]),
                T.random_rotate([-10, 10]),
                T.random_crop(),
                T.noise(0.02),
            )
        },
        {"redirect_relu": -1, "remat": "convs"},
        {"seeds": 2, "diversity": Diversity("block2/conv", 0.1)},
    ],  # fmt: skip
    ids=[
        "default",
        "pixel",
        "laplacian",
        "maco",
        "cppn",
        "alpha",
        "every-transform",
        "relu",
        "diversity",
    ],  # fmt: skip
)
def test_no_step_of_any_setting_holds_a_scatter(worldnet, settings):
    objective = O.channel("block3/conv", [0, 5])
    assert determinism.census(step_program(worldnet, objective, **settings)) == NONE


MAPS = np.ones((2, 8, 8, 32), np.float32)  # block2/conv at 32 px


@pytest.mark.parametrize(
    "objective, settings",
    [
        (O.neuron("block3/conv", [1, 2]), {}),
        (O.neuron("block3/conv", [1, 2], x=3, y=1), {}),
        (O.direction("block3/conv", np.eye(64)[:2]), {}),
        (alpha.priced(O.channel("block3/conv", [0, 1]), 0.5), {"param": alpha.param()}),
        (inversion.match("block2/conv", MAPS), {"transforms": T.identity()}),
        (inversion.likeness("block2/conv", MAPS), {"transforms": T.identity()}),
    ],
    ids=["neuron", "neuron-at", "direction", "priced", "match", "likeness"],
)
def test_no_objective_adds_a_scatter(worldnet, objective, settings):
    assert determinism.census(step_program(worldnet, objective, **settings)) == NONE


@pytest.mark.parametrize(
    "name, layer, size",
    [
        ("inceptionv1", "mixed4a", 64),
        ("resnet50", "layer3", 64),
        ("vgg16", "conv4_3", 64),
        ("vit_b_16", "block5/mlp", 32),
    ],  # fmt: skip
)
def test_the_zoo_s_default_steps_hold_no_scatter(name, layer, size):
    lowered = lower_step(zoo.load(name), O.channel(layer, [0]), size=size)
    assert determinism.census(lowered) == NONE


def test_the_census_finds_what_autodiff_makes_of_gathers_and_flax_pools():
    x = jnp.ones((1, 8, 8, 2))
    pooled = jax.jit(jax.grad(lambda x: nn.max_pool(x, (3, 3), (2, 2), "SAME").sum()))
    assert determinism.census(pooled.lower(x))["select_and_scatter"] == 1
    gathered = jax.jit(jax.grad(lambda x, i: x[i].sum()))
    assert determinism.census(gathered.lower(x, jnp.array([0, 0])))["scatter"] >= 1


POOLS = [((3, 3), (1, 1), "SAME"), ((3, 3), (2, 2), "SAME"), ((2, 2), (2, 2), "VALID"),
         ((3, 3), (2, 2), ((1, 1), (1, 1))), ((2, 2), (2, 2), "SAME")]  # fmt: skip


@pytest.mark.parametrize("window, strides, padding", POOLS)
def test_max_pool_is_flax_s_values_and_gradient_without_select_and_scatter(
    window, strides, padding
):
    x = jax.random.normal(jax.random.key(0), (2, 9, 12, 3))
    ours = lambda x: max_pool(x, window, strides, padding)  # noqa: E731
    flax_s = lambda x: nn.max_pool(x, window, strides=strides, padding=padding)  # noqa: E731
    np.testing.assert_array_equal(ours(x), flax_s(x))
    weights = jax.random.normal(jax.random.key(1), flax_s(x).shape)
    grads = [jax.grad(lambda x, f=f: (f(x) * weights).sum())(x) for f in (ours, flax_s)]
    np.testing.assert_allclose(grads[0], grads[1], atol=1e-6)
    lowered = jax.jit(jax.grad(lambda x: ours(x).sum())).lower(x)
    assert determinism.census(lowered) == NONE
    ties = jnp.round(x)  # many windows with two or more maxima: each goes to the first, as Flax's
    grads = [jax.grad(lambda x, f=f: (f(x) * weights).sum())(ties) for f in (ours, flax_s)]
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-6, atol=1e-6)  # sums in another order


def test_max_pool_keeps_a_bfloat16_model_in_bfloat16():
    """The backward's zeros once came as float32: a bfloat16 InceptionV1 render failed."""
    x = jax.random.normal(jax.random.key(0), (2, 9, 12, 3)).astype(jnp.bfloat16)
    weights = jax.random.normal(jax.random.key(1), (2, 5, 6, 3)).astype(jnp.bfloat16)
    grads = [jax.grad(lambda x, f=f: (f(x, (3, 3), strides=(2, 2), padding="SAME") * weights)
                      .sum())(x) for f in (max_pool, nn.max_pool)]  # fmt: skip
    assert grads[0].dtype == jnp.bfloat16
    # Overlapping windows add in another order: within 2 bfloat16 steps (2 ** -7 each).
    np.testing.assert_allclose(*(np.asarray(g, np.float32) for g in grads), rtol=2**-6)


def _map_coordinates_resample(image, matrix, offset, size, cval):
    """What resample computed before: JAX's map_coordinates, whose gradient is a scatter-add."""
    ys, xs = jnp.meshgrid(jnp.arange(size[0]) * 1.0, jnp.arange(size[1]) * 1.0, indexing="ij")
    rows = matrix[0, 0] * ys + matrix[0, 1] * xs + offset[0]
    cols = matrix[1, 0] * ys + matrix[1, 1] * xs + offset[1]
    sample = jax.scipy.ndimage.map_coordinates
    return jnp.stack(
        [sample(image[..., c], [rows, cols], order=1, mode="constant", cval=cval)
         for c in range(image.shape[-1])], axis=-1,
    )  # fmt: skip


@pytest.mark.parametrize("angle, scale", [(0.0, 1.0), (10.0, 0.9), (-30.0, 1.3), (45.0, 0.5)])
def test_resample_and_its_gradients_equal_map_coordinates(angle, scale):
    image = jax.random.uniform(jax.random.key(2), (13, 11, 3))
    turn = np.deg2rad(angle)
    matrix = jnp.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]]) / scale
    offset = jnp.array([1.3, -0.6])
    size, reach = (12, 14), scale * (abs(np.cos(turn)) + abs(np.sin(turn)))
    weights = jax.random.normal(jax.random.key(3), (*size, 3))

    def loss(f):
        return lambda i, m, b: (f(i, m, b) * weights).sum()

    ours = lambda i, m, b: T.resample(i, m, b, size, 0.3, reach)  # noqa: E731
    theirs = lambda i, m, b: _map_coordinates_resample(i, m, b, size, 0.3)  # noqa: E731
    np.testing.assert_allclose(
        ours(image, matrix, offset), theirs(image, matrix, offset), atol=1e-5
    )
    found = jax.grad(loss(ours), argnums=(0, 1, 2))(image, matrix, offset)
    wanted = jax.grad(loss(theirs), argnums=(0, 1, 2))(image, matrix, offset)
    for a, b in zip(found, wanted, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_a_reach_too_small_for_the_map_loses_gradient():
    """The reach is what makes the gather see every reader: the test above could not fail
    if it were not used."""
    image = jax.random.uniform(jax.random.key(2), (12, 12, 1))
    zoom = jnp.eye(2) * 0.4  # each input pixel read by output pixels up to 2.5 away
    grad = lambda reach: jax.grad(  # noqa: E731
        lambda i: T.resample(i, zoom, jnp.zeros(2), (24, 24), 0.0, reach).sum()
    )(image)
    assert float(jnp.abs(grad(2.5) - grad(1.0)).max()) > 0.1


def _python(code: str, env: dict) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_import_fvjax_sets_xla_s_flag_before_a_backend_starts_and_xla_reads_it(tmp_path):
    """XLA_FLAGS as fvjax leaves it is what XLA reads: a dump flag beside ours takes effect."""
    env = {**os.environ, "XLA_FLAGS": f"--xla_dump_to={tmp_path / 'dump'}"}
    out = _python(
        """
        import json, os
        import fvjax
        from fvjax.rendering import determinism
        started = determinism.backend_started()
        import jax.numpy as jnp
        float(jnp.ones(3).sum())
        print(json.dumps([started, os.environ["XLA_FLAGS"], determinism.status()]))
        """,
        env,
    )
    started, flags, status = json.loads(out.splitlines()[-1])
    assert not started
    assert flags.split() == [f"--xla_dump_to={tmp_path / 'dump'}", f"{determinism.FLAG}=true"]
    assert any((tmp_path / "dump").iterdir())  # the string was read when the backend started
    assert status == {"deterministic_ops": True, "backend": "cpu", "bit_reproducible": True}


def test_a_user_s_own_flag_is_kept_and_the_job_s_key_decides(tmp_path):
    env = {**os.environ, "XLA_FLAGS": f"{determinism.FLAG}=false"}
    out = _python(
        """
        import os
        import fvjax
        print(os.environ["XLA_FLAGS"])
        fvjax.determinism.request(True)
        print(os.environ["XLA_FLAGS"])
        fvjax.determinism.request(False)
        print(repr(os.environ["XLA_FLAGS"]))
        """,
        env,
    )
    assert out.splitlines() == [f"{determinism.FLAG}=false", f"{determinism.FLAG}=true", "''"]


def test_after_the_backend_starts_a_gpu_without_the_flag_is_refused(monkeypatch):
    jnp.ones(1).block_until_ready()  # the backend has started
    monkeypatch.setenv("XLA_FLAGS", "")
    determinism.request(True)  # on a CPU nothing needs to change
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    with pytest.raises(
        ArgumentError, match="xla_gpu_deterministic_ops=true.*deterministic = false"
    ):
        determinism.request(True)
    determinism.request(False)  # speed asked for: let pass
    assert determinism.status()["bit_reproducible"] is False
    monkeypatch.setenv("XLA_FLAGS", f"{determinism.FLAG}=true")
    determinism.request(True)
    assert determinism.status()["bit_reproducible"] is True


def test_the_job_records_its_determinism_and_its_key_reaches_xla(tmp_path):
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    args = ["model=\"tiny\"", "layers=[\"block1\"]", "units=[0]", "steps=2", "size=16",
            "progress=false", f"output={json.dumps(str(out))}"]  # fmt: skip
    for setting in ("true", "false"):
        done = subprocess.run(
            [sys.executable, "-m", "fvjax.cli", "render", "--config", "configs/tiny.toml",
             *args, f"deterministic={setting}"],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["determinism"] == {
            "deterministic_ops": setting == "true", "backend": "cpu", "bit_reproducible": True
        }  # fmt: skip
        assert manifest["config"]["deterministic"] is (setting == "true")
