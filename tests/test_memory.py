"""compile_step / step_memory / fit_memory: XLA's static figures of a render step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fvjax
from fvjax import objectives as O
from fvjax import param as P
from fvjax import transforms as T
from fvjax.engine import MemoryFit, StepMemory, compile_step, fit_memory, step_memory
from fvjax.errors import UnitRangeError

CHEAP = dict(param=P.pixel(), transforms=T.identity())  # quick to compile


def _conv_net(depth: int = 4, width: int = 8):
    """``depth`` 3x3 convolutions with ReLU; every one is a layer ``conv{i}``."""
    rng = np.random.default_rng(0)
    shapes = [(3, 3, 3 if i == 0 else width, width) for i in range(depth)]
    params = [jnp.asarray(rng.standard_normal(s) * 0.3, jnp.float32) for s in shapes]

    def apply(params, x):
        activations = {}
        for i, kernel in enumerate(params):
            x = jax.nn.relu(
                jax.lax.conv_general_dilated(
                    x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
                )
            )
            activations[f"conv{i}"] = x
        return activations

    return fvjax.from_fn(apply, params=params, name="convnet")


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
