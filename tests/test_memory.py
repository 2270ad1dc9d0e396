"""compile_step / step_memory / fit_memory: XLA's static figures of a render step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fvjax
from fvjax import objectives as O
from fvjax import param as P
from fvjax import transforms as T
from fvjax import zoo
from fvjax.errors import UnitRangeError
from fvjax.rendering.cost import (
    MemoryFit,
    StepMemory,
    compile_step,
    fit_memory,
    lower_step,
    residual_bytes,
    step_memory,
)
from fvjax.rendering.step import REMAT

CHEAP = dict(param=P.pixel(), transforms=T.identity())  # quick to compile


def _conv_net(depth: int = 4, width: int = 8):
    """``depth`` 3x3 convolutions with ReLU and a tanh squash; every one is a layer ``conv{i}``.
    Its ``remat_apply`` puts each convolution block under its own ``jax.checkpoint``."""
    rng = np.random.default_rng(0)
    shapes = [(3, 3, 3 if i == 0 else width, width) for i in range(depth)]
    params = [jnp.asarray(rng.standard_normal(s) * 0.3, jnp.float32) for s in shapes]

    def block(kernel, x):
        y = jax.lax.conv_general_dilated(
            x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return jnp.tanh(jax.nn.relu(y))

    def network(checkpoint):
        def apply(params, x):
            activations = {}
            for i, kernel in enumerate(params):
                x = checkpoint(block)(kernel, x)
                activations[f"conv{i}"] = x
            return activations

        return apply

    return fvjax.from_fn(
        network(lambda f: f), params=params, name="convnet", remat_fn=network(jax.checkpoint)
    )


@pytest.fixture(scope="module")
def net():
    return _conv_net()


def test_bytes_per_picture_grow_with_the_picture(net):
    objective = O.channel("conv3", [0, 1])
    small = fit_memory(net, objective, (2, 4), size=16, **CHEAP)
    large = fit_memory(net, objective, (2, 4), size=32, **CHEAP)
    assert small.per_image_bytes > 0
    # 4x the pixels: activations, pictures and optimizer state all grow about 4x.
    assert 3.5 < large.per_image_bytes / small.per_image_bytes < 4.5
    # The weights are arguments, read once whatever the batch: the fixed part holds them.
    weights = sum(w.size * 4 for w in net.params)
    assert large.points[0].argument_bytes >= weights


def test_the_fitted_batch_fits_the_budget(net):
    objective = O.channel("conv3", [0, 1, 2])
    fit = fit_memory(net, objective, (2, 4), size=16, **CHEAP)
    budget = fit.bytes_at(37) + 0.5 * fit.per_image_bytes
    assert fit.largest_batch(budget) == 37
    # Compiled at that batch, XLA's own plan agrees with the straight line (within 1%).
    assert step_memory(net, objective, 37, size=16, **CHEAP).total_bytes <= budget * 1.01
    assert step_memory(net, objective, 41, size=16, **CHEAP).total_bytes > budget
    assert fit.largest_batch(fit.fixed_bytes / 2) == 0


def test_the_state_is_written_in_place(net):
    """The step donates its pictures and optimizer state: its outputs reuse their buffers."""
    found = step_memory(net, O.channel("conv1", [0]), 8, size=16, **CHEAP)
    assert found.alias_bytes > 0.99 * found.output_bytes
    assert found.total_bytes == (
        found.argument_bytes + found.output_bytes - found.alias_bytes + found.temp_bytes
    )


def test_flops_per_picture_do_not_depend_on_the_batch(net):
    """Pictures never talk to each other: the step's work is the same per picture at any batch."""
    objective = O.channel("conv3", [0, 1])
    flops = {b: compile_step(net, objective, batch=b, size=16, **CHEAP).cost_analysis()["flops"]
             for b in (2, 8)}  # fmt: skip
    assert flops[2] > 0
    np.testing.assert_allclose(flops[8] / 8, flops[2] / 2, rtol=0.01)


def test_bad_arguments_fail_before_compiling(net):
    objective = O.channel("conv3", [0])
    with pytest.raises(UnitRangeError):
        compile_step(net, O.channel("conv3", [8]), size=16, **CHEAP)
    with pytest.raises(ValueError, match="model_dtype"):
        compile_step(net, objective, size=16, model_dtype="float16", **CHEAP)
    with pytest.raises(ValueError, match="batch"):
        compile_step(net, objective, batch=0, size=16, **CHEAP)
    with pytest.raises(ValueError, match="two different"):
        MemoryFit.through(StepMemory(2, 1, 0, 0, 1), StepMemory(2, 1, 0, 0, 1))


# --- rematerialisation ---------------------------------------------------------------------


def _per_picture(model, objective, **kwargs):
    """Bytes the backward pass keeps per picture (the weights cancel out)."""
    two, six = (residual_bytes(model, objective, b, **kwargs) for b in (2, 6))
    return (six - two) / 4


def test_remat_keeps_less_and_recomputes_more_for_the_same_pictures(net):
    objective = O.channel("conv3", [0, 5])
    kept = {m: _per_picture(net, objective, size=16, remat=m, **CHEAP) for m in REMAT}
    # Without remat the backward keeps every block's masks and tanh; "convs" only the
    # convolution outputs; "blocks" only each block's input (one per block, 8 channels).
    assert kept["none"] > 1.5 * kept["convs"] > 1.5 * kept["blocks"] > 0
    assert kept["blocks"] <= 4 * 16 * 16 * 8 * 4 * 1.01
    flops = {
        m: lower_step(net, objective, batch=4, size=16, remat=m, **CHEAP).cost_analysis()["flops"]
        for m in REMAT
    }
    assert flops["none"] < flops["convs"] < flops["blocks"]  # blocks run their convs again
    renders = {m: fvjax.render(net, objective, seeds=2, steps=10, size=16, remat=m, **CHEAP)
               for m in REMAT}  # fmt: skip
    for m in ("convs", "blocks"):
        np.testing.assert_allclose(renders[m].images, renders["none"].images, atol=1e-5)
        np.testing.assert_allclose(renders[m].history, renders["none"].history, rtol=1e-5)


def test_remat_names_the_allowed_modes_and_needs_blocks_for_blocks(net):
    objective = O.channel("conv3", [0])
    with pytest.raises(ValueError, match="must be one of 'none', 'convs', 'blocks', got True"):
        compile_step(net, objective, size=16, remat=True, **CHEAP)
    flat = fvjax.from_fn(lambda x: {"rgb": x}, name="flat")
    with pytest.raises(ValueError, match="model 'flat' has no per-block remat for remat='blocks'"):
        fvjax.render(flat, O.channel("rgb", [0]), steps=2, size=8, remat="blocks", **CHEAP)
    assert residual_bytes(flat, O.channel("rgb", [0]), 2, size=8, remat="convs", **CHEAP) > 0


def test_convs_remat_needs_no_blocks_even_in_nnx():
    from flax import nnx
    from test_models import NnxNet

    model = fvjax.from_nnx(NnxNet(nnx.Rngs(0)))
    objective = O.channel("stages/0", [0, 1])
    kept = {m: _per_picture(model, objective, size=16, remat=m) for m in ("none", "convs")}
    # Less, not much less: so small a network keeps little, and the picture pipeline keeps 6
    # floats a pixel since the resampling's backward became a gather (60 before).
    assert kept["convs"] < 0.9 * kept["none"]
    plain, lean = (fvjax.render(model, objective, steps=4, size=16, remat=m)
                   for m in ("none", "convs"))  # fmt: skip
    np.testing.assert_allclose(lean.images, plain.images, atol=1e-5)


@pytest.mark.parametrize(
    ("name", "layer", "most"),
    # The most "blocks" may keep, as a fraction of "none", with the default render at 96 px
    # (measured at 224 px: 0.12, 0.37, 0.07, 0.04).
    [
        ("inceptionv1", "mixed4a", 0.2),
        ("resnet50", "layer3", 0.5),
        ("vgg16", "conv4_3", 0.1),
        ("vit_b_16", "block6/mlp", 0.1),
    ],
)
def test_zoo_blocks_compute_the_same_layers_and_keep_far_less(name, layer, most):
    model = zoo.load(name)
    images = jax.random.uniform(jax.random.key(0), (2, 64, 64, 3))
    # Jitted: op by op, InceptionV1's two forward passes took 3x as long (9.7 s against 3.2 s).
    plain = jax.jit(model.apply)(model.params, images)
    blocks = jax.jit(model.remat_apply)(model.params, images)
    assert sorted(blocks) == sorted(plain)
    for key in plain:
        np.testing.assert_allclose(blocks[key], plain[key], rtol=1e-5, atol=1e-5, err_msg=key)
    objective = O.channel(layer, [0])
    kept = {m: _per_picture(model, objective, size=96, remat=m) for m in REMAT}
    assert kept["blocks"] < most * kept["none"]
    assert kept["blocks"] < kept["convs"] < kept["none"]


def test_a_zoo_model_renders_the_same_pictures_with_block_remat():
    model = zoo.load("inceptionv1")
    kwargs = dict(size=64, steps=4, seeds=1, steps_per_call=4)
    plain = fvjax.render_layer(model, "mixed3a", units=[0, 100], **kwargs)
    blocks = fvjax.render_layer(model, "mixed3a", units=[0, 100], remat="blocks", **kwargs)
    np.testing.assert_allclose(blocks.images, plain.images, atol=1e-4)


@pytest.mark.parametrize(("name", "layer"), [("inceptionv1", "mixed4a"), ("resnet50", "layer3")])
def test_bfloat16_zoo_models_keep_bfloat16_activations(name, layer):
    """The preprocessing's float32 statistics once promoted a bfloat16 model back to float32."""
    model = zoo.load(name)
    objective = O.channel(layer, [0])
    kept = {d: _per_picture(model, objective, size=96, model_dtype=d)
            for d in ("float32", "bfloat16")}  # fmt: skip
    assert kept["bfloat16"] < 0.75 * kept["float32"]  # the pictures' pipeline stays float32
    # The whole step traces in bfloat16, backward included (a pool's float32 zeros once broke it).
    lower_step(model, objective, size=64, model_dtype="bfloat16")
    images = jnp.ones((1, 8, 8, 3), jnp.bfloat16)
    assert fvjax.models.normalize((0.5,) * 3, (0.2,) * 3)(images).dtype == jnp.bfloat16
