"""What a render step costs, compiled but not run: its program (:func:`lower_step`), the
work it counts, what its backward pass keeps (:func:`residual_bytes`), and how its memory grows
with the batch (:func:`step_memory`, :func:`fit_memory`, a ``batch_size`` for a device).

Benchmarks (``benchmarks/``) and the memory tests read these; a render never does.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fvjax.errors import ArgumentError
from fvjax.models.adapters import Model
from fvjax.rendering.engine import plan_render
from fvjax.rendering.objectives import Objective
from fvjax.rendering.step import Setup, init_state, picture_loss, run_steps

Array = jax.Array


def lower_step(
    model: Model,
    objective: Objective,
    *,
    batch: int | None = None,
    size: int | tuple[int, int] = 128,
    param: Any = None,
    transforms: Any = None,
    optimizer: optax.GradientTransformation | None = None,
    model_dtype: str = "float32",
    remat: str = "none",
    redirect_relu: int = 0,
) -> jax.stages.Lowered:
    """The program of one render step for ``batch`` images on one device, as handed to XLA.

    The same program :func:`render` runs with ``steps_per_call=1`` (state donated, weights as
    arguments); nothing is allocated or run. Its ``.cost_analysis()["flops"]`` counts the work
    before XLA's optimizations, recomputation by ``remat`` included (XLA's CPU compiler merges
    that back; see :func:`residual_bytes`); ``.compile()`` gives :func:`compile_step`'s
    result. ``batch`` images cycle through the members of ``objective`` (default: one image
    per member); the other arguments are :func:`render`'s.

    >>> import fvjax
    >>> model = fvjax.models.from_fn(lambda x: {"sq": jnp.sin(x) * x})
    >>> cheap = dict(batch=2, size=8, param=fvjax.param.pixel(),
    ...              transforms=fvjax.transforms.identity())
    >>> flops = {remat: lower_step(model, fvjax.objectives.channel("sq", [0]), remat=remat,
    ...                            **cheap).cost_analysis()["flops"] for remat in ("none", "convs")}
    >>> flops["convs"] > flops["none"]  # sin is computed again in the backward pass
    True
    """
    setup = plan_render(
        model, objective, size=size, param=param, transforms=transforms, optimizer=optimizer,
        model_dtype=model_dtype, remat=remat, redirect_relu=redirect_relu, devices=1,
    ).setup  # fmt: skip
    state, chunk_objective, keys, params = _abstract_step(setup, model, objective, batch)
    none = jax.ShapeDtypeStruct((keys.shape[0], 0), jnp.float32)  # no guide
    return run_steps.lower(setup, 1, state, chunk_objective, keys, params, none)


def compile_step(model: Model, objective: Objective, **kwargs: Any) -> jax.stages.Compiled:
    """:func:`lower_step`'s program compiled, not run (same keyword arguments).

    Ask the result for XLA's static figures: ``.cost_analysis()`` (a dict with ``"flops"``,
    ``"bytes accessed"``, ...) and ``.memory_analysis()`` (see :func:`step_memory`).

    >>> import fvjax
    >>> model = fvjax.models.from_fn(lambda x: {"rgb": x})
    >>> step = compile_step(model, fvjax.objectives.channel("rgb", [0, 1]), batch=4, size=16,
    ...                     transforms=fvjax.transforms.identity())
    >>> step.cost_analysis()["flops"] > 0
    True
    """
    return lower_step(model, objective, **kwargs).compile()


def _abstract_step(setup: Setup, model: Model, objective: Any, batch: int | None) -> tuple:
    """Shapes of one step's ``(state, objective, keys, params)`` for ``batch`` images that
    cycle through the members of ``objective`` (default: one image per member)."""
    members = len(objective.unit_ids())
    batch = members if batch is None else int(batch)
    if batch < 1:
        raise ArgumentError(f"batch must be at least 1, got {batch}")
    keys = jax.eval_shape(lambda: jax.random.split(jax.random.key(0), batch))
    state = jax.eval_shape(partial(init_state, setup), keys)
    return state, objective.take(np.arange(batch) % members), keys, abstract(model.params)


def residual_bytes(
    model: Model,
    objective: Objective,
    batch: int,
    *,
    size: int | tuple[int, int] = 128,
    param: Any = None,
    transforms: Any = None,
    model_dtype: str = "float32",
    remat: str = "none",
) -> int:
    """Bytes a render step's backward pass keeps from its forward pass, for ``batch`` images.

    These are the values autodiff saves (activations, masks, the weights the backward pass
    reads), as JAX hands them to the compiler, so the figure is the same on every backend and
    shows what ``remat`` changes. XLA's CPU compiler undoes rematerialisation (it merges the
    recomputed forward pass back into the first), so there :func:`step_memory` cannot show
    it. XLA may still fuse away a few cheap saved values (broadcast zeros), so the ``"none"``
    figure is an upper bound. Nothing is compiled or run.

    >>> import fvjax
    >>> model = fvjax.models.from_fn(lambda x: {"sq": jnp.sin(x) * x})
    >>> cheap = dict(size=8, param=fvjax.param.pixel(), transforms=fvjax.transforms.identity())
    >>> residual_bytes(model, fvjax.objectives.channel("sq", [0]), 2, **cheap) > 0
    True
    """
    setup = plan_render(
        model, objective, size=size, param=param, transforms=transforms,
        model_dtype=model_dtype, remat=remat, devices=1,
    ).setup  # fmt: skip
    state, chunk_objective, keys, params = _abstract_step(setup, model, objective, batch)

    def backward(raw: Any, objective: Any, keys: Array, params: Any, step: Array) -> Any:
        none = jnp.zeros((batch, 0), jnp.float32)  # no guide
        loss = picture_loss(setup, objective, keys, params, step, none)
        return jax.vjp(loss, raw, has_aux=True)[1]

    saved = jax.eval_shape(backward, state.raw, chunk_objective, keys, params, state.step)
    return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(saved))


def abstract(tree: Any) -> Any:
    """Shapes and dtypes of ``tree``'s arrays, for compiling a program without its data."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)), tree)


class StepMemory(NamedTuple):
    """XLA's buffer plan for one compiled render step (bytes, one device).

    ``total_bytes`` is what the step holds at once: its arguments (the pictures' variables and
    optimizer state, the weights the step reads), its outputs less those written in place of
    donated arguments, and its temporaries (activations kept for the backward pass, ...).
    """

    batch: int
    argument_bytes: int
    output_bytes: int
    alias_bytes: int
    temp_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes


def step_memory(model: Model, objective: Objective, batch: int, **kwargs: Any) -> StepMemory:
    """How much memory one render step of ``batch`` images needs, by compiling it (not running).

    Keyword arguments are :func:`compile_step`'s (``size``, ``param``, ``transforms``,
    ``optimizer``, ``model_dtype``, ``remat``). The figures are the compiling backend's:
    XLA's CPU backend plans buffers differently from a GPU's (other fusions, no convolution
    workspace), so on CPU they estimate a GPU's needs, to be checked there. (The CPU
    backend's own ``peak_memory_in_bytes`` leaves the temporaries out; ``total_bytes`` adds
    them.)

    >>> import fvjax
    >>> model = fvjax.models.from_fn(lambda x: {"rgb": x})
    >>> cheap = dict(size=16, param=fvjax.param.pixel(), transforms=fvjax.transforms.identity())
    >>> small = step_memory(model, fvjax.objectives.channel("rgb", [0]), 2, **cheap)
    >>> large = step_memory(model, fvjax.objectives.channel("rgb", [0]), 8, **cheap)
    >>> large.total_bytes > small.total_bytes
    True
    """
    stats = compile_step(model, objective, batch=batch, **kwargs).memory_analysis()
    return StepMemory(
        batch=int(batch),
        argument_bytes=int(stats.argument_size_in_bytes),
        output_bytes=int(stats.output_size_in_bytes),
        alias_bytes=int(stats.alias_size_in_bytes),
        temp_bytes=int(stats.temp_size_in_bytes),
    )


class MemoryFit(NamedTuple):
    """``bytes = fixed_bytes + per_image_bytes * batch``, through two :class:`StepMemory`.

    >>> fit = MemoryFit.through(StepMemory(2, 100, 0, 0, 40), StepMemory(4, 100, 0, 0, 80))
    >>> fit.per_image_bytes, fit.fixed_bytes, fit.largest_batch(300)
    (20.0, 100.0, 10)
    """

    fixed_bytes: float
    per_image_bytes: float
    points: tuple[StepMemory, ...] = ()

    @classmethod
    def through(cls, first: StepMemory, second: StepMemory) -> MemoryFit:
        if first.batch == second.batch:
            raise ValueError("a fit needs two different batch sizes")
        per_image = (second.total_bytes - first.total_bytes) / (second.batch - first.batch)
        fixed = first.total_bytes - per_image * first.batch
        return cls(float(fixed), float(per_image), (first, second))

    def bytes_at(self, batch: int) -> float:
        return self.fixed_bytes + self.per_image_bytes * batch

    def largest_batch(self, budget_bytes: float) -> int:
        """The most images per step whose fitted bytes fit ``budget_bytes`` (0: none fits)."""
        if self.per_image_bytes <= 0:
            raise ValueError("memory does not grow with the batch: no largest batch")
        images = (budget_bytes - self.fixed_bytes) / self.per_image_bytes
        return max(0, math.floor(images + 1e-9))  # 1e-9: bytes_at(n) itself fits n


def fit_memory(
    model: Model,
    objective: Objective,
    batches: tuple[int, int] = (4, 16),
    **kwargs: Any,
) -> MemoryFit:
    """Fit a render step's memory against the batch from two compiles (:func:`step_memory`);
    ``fit.largest_batch(budget)`` is then a ``batch_size`` for :func:`render` on a device with
    ``budget`` bytes free (weights, pictures and optimizer state included).

    >>> import fvjax
    >>> model = fvjax.models.from_fn(lambda x: {"rgb": x})
    >>> cheap = dict(size=16, param=fvjax.param.pixel(), transforms=fvjax.transforms.identity())
    >>> fit = fit_memory(model, fvjax.objectives.channel("rgb", [0]), **cheap)
    >>> fit.largest_batch(fit.bytes_at(100)) >= 100
    True
    """
    first, second = (step_memory(model, objective, b, **kwargs) for b in batches)
    return MemoryFit.through(first, second)
