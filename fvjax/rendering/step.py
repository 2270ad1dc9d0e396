"""The compiled program: one optimization step for a batch of pictures, each its own
(unit, seed) pair, and the small programs that start and finish them.

Data flow of one step, for a batch of ``N`` images::

    raw (N, ...) --param.to_image--> images (N, H, W, 3) --transform (own key per image)-->
    model.apply(params, .) --> {layer: (N, ...)} --objective, vmapped--> values (N,)

(RGBA pictures ``(N, H, W, 4)``, :mod:`fvjax.rendering.alpha`, reach the model composited:
by their transform while optimizing, over grey for the final values.)

and ``optax`` updates each image's variables with its own optimizer state (the update is
``vmap``ped, so no statistic is shared between images). Each image's random key comes from
``(seed, objective label, unit)`` alone (:func:`image_keys`), so a picture does not depend on
which chunk it was rendered in. Model weights are passed to the program as arguments, never
baked in. :func:`make_setup` checks every argument of a render once, before anything is
traced; :mod:`fvjax.rendering.engine` runs the program over chunks.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, PartitionSpec

from fvjax.errors import ArgumentError, FvjaxError, ImageSizeError
from fvjax.models.adapters import INPUT, Model, as_size
from fvjax.rendering import alpha as alpha_lib
from fvjax.rendering import objectives as objectives_lib
from fvjax.rendering import param as param_lib
from fvjax.rendering import redirect as redirect_lib
from fvjax.rendering import seeds as seeds_lib
from fvjax.rendering import transforms as transforms_lib

Array = jax.Array

#: The dtypes a model may compute in (``render(..., model_dtype=)``); pictures stay float32.
MODEL_DTYPES = ("float32", "bfloat16")

#: What the backward pass recomputes instead of keeping from the forward pass:
#: ``"none"`` keeps all that autodiff saves; ``"convs"`` keeps only the outputs of convolutions
#: and matrix products and recomputes the cheap rest (activation functions, normalizations,
#: pooling), in any model; ``"blocks"`` keeps only the inputs of the model's blocks and runs
#: each block's forward pass again (one more forward pass of compute), for models that define
#: blocks (``Model.remat_apply``: the zoo's InceptionV1, ResNet-50, VGG-16, ViT-B/16).
REMAT = ("none", "convs", "blocks")

_TRACES = {"run": 0}


def trace_count() -> int:
    """How many times the optimization program has been traced (for "no retrace" checks)."""
    return _TRACES["run"]


class Setup(NamedTuple):
    """Everything static about a program; hashable, so equal setups share a compilation.
    Made by :func:`make_setup`."""

    apply: Any
    param: Any
    transform: Any
    optimizer: optax.GradientTransformation
    size: tuple[int, int]
    mesh: Mesh | None = None  # images split over its "batch" axis; None: one device
    model_dtype: str = "float32"  # the model's compute dtype; pictures stay float32
    remat: str = "none"  # what the backward pass recomputes: see REMAT
    diversity: Any = None  # a seeds.Diversity: a unit's seeds pushed apart
    guide: Any = None  # a seeds.Guide: each picture steered towards its own direction
    group: int = 1  # pictures per unit, consecutive in a chunk (the seeds diversity couples)
    redirect_relu: int = 0  # steps with redirected ReLU gradients: 0 none, -1 every step


def make_setup(
    model: Model,
    objective: objectives_lib.Objective,
    size: int | tuple[int, int],
    param: Any,
    transforms: Any,
    optimizer: optax.GradientTransformation | None,
    model_dtype: str,
    remat: str,
    mesh: Mesh | None = None,
    diversity: Any = None,
    guide: Any = None,
    group: int = 1,
    redirect_relu: int = 0,
) -> Setup:
    """A render's defaults filled in and its arguments checked, as one :class:`Setup`: the one
    place ``size``, ``model_dtype``, ``remat`` and ``redirect_relu`` are validated (with the
    objective against the model, :func:`check_sizes`)."""
    size = as_size(size)
    param = param if param is not None else param_lib.fourier()
    channels = picture_shape(param, size)[-1]
    transform = transforms if transforms is not None else transforms_lib.standard()
    if transforms is None and channels == 4:  # RGBA: each picture over its own background
        transform = transforms_lib.compose(alpha_lib.background(), transform)
    optimizer = optimizer if optimizer is not None else default_optimizer()
    check_sizes(model, objective, size, transform, channels)
    if model_dtype not in MODEL_DTYPES:
        raise ArgumentError(f"model_dtype must be 'float32' or 'bfloat16', got {model_dtype!r}")
    if not isinstance(remat, str) or remat not in REMAT:
        raise ArgumentError(f"remat must be one of {', '.join(map(repr, REMAT))}, got {remat!r}")
    if isinstance(redirect_relu, bool) or not isinstance(redirect_relu, int | np.integer):
        raise ArgumentError(f"redirect_relu must be a number of steps, got {redirect_relu!r}")
    if redirect_relu < -1:
        raise ArgumentError(f"redirect_relu must be >= -1 (-1: every step), got {redirect_relu}")
    apply = model.apply
    if remat == "blocks":
        if model.remat_apply is None:
            raise ArgumentError(
                f"model {model.name!r} has no per-block remat for remat='blocks' (give "
                "from_linen a remat_module, or from_fn a remat_fn); remat='convs' works on any "
                "model"
            )
        apply = model.remat_apply
    diversity = seeds_lib.checked(diversity, "diversity")
    guide = seeds_lib.checked(guide, "guide")
    for term in (diversity, guide):
        if term is not None:
            model.check_layer(term.layer, size)  # names the layers there are if it is not one
    if diversity is not None and group < 2:
        raise ArgumentError(
            f"diversity pushes a unit's seeds apart and needs at least 2 seeds, got {group}"
        )
    return Setup(
        apply, param, transform, optimizer, size, mesh, model_dtype, remat, diversity, guide, group,
        int(redirect_relu),
    )  # fmt: skip


def _saves_products(primitive: Any, *args: Any, **params: Any) -> bool:
    """The ``jax.checkpoint`` policy of ``remat="convs"``: keep what is costly to recompute."""
    return primitive.name in ("conv_general_dilated", "dot_general")


_BATCH, _REPLICATED = PartitionSpec("batch"), PartitionSpec()


def _on_devices(setup: Setup, fn: Any, in_specs: Any, out_specs: Any) -> Any:
    """``fn`` as is on one device; else ``shard_map``ped over the images. Images never talk to
    each other, so each device runs its share with no communication (a plain jit of the split
    batch instead inserted all-gathers around the FFT)."""
    if setup.mesh is None:
        return fn
    return jax.shard_map(
        fn, mesh=setup.mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False
    )


def _objective_specs(objective: Any) -> Any:
    return jax.tree.map(
        lambda axis: _REPLICATED if axis is None else _BATCH,
        objective.vmap_axes(),
        is_leaf=lambda x: x is None,
    )


class State(NamedTuple):
    """The optimization state of a batch of pictures, carried from call to call."""

    raw: Any  # (N, ...) optimized variables
    opt_state: Any  # (N, ...) optimizer state, one per image
    step: Array  # () int32
    bad_step: Array  # (N,) int32: first step with a non-finite value or gradient, else -1


_DEFAULTS: dict[str, Any] = {}


def default_optimizer() -> optax.GradientTransformation:
    """``optax.adam(0.05)``, one shared instance so that default renders share compilations."""
    if "optimizer" not in _DEFAULTS:
        _DEFAULTS["optimizer"] = optax.adam(0.05)
    return _DEFAULTS["optimizer"]


def cast_floats(tree: Any, dtype: Any) -> Any:
    """``tree`` with its floating-point leaves in ``dtype`` (integer leaves as they are)."""

    def cast(x: Any) -> Any:
        return x.astype(dtype) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating) else x

    return jax.tree.map(cast, tree)


def _model_activations(
    setup: Setup, params: Any, images: Array, layers: Iterable[str], step: Array
) -> dict[str, Array]:
    """The model's ``layers`` on ``images``, computed in ``setup.model_dtype``, in float32;
    its ReLUs redirected at ``step`` when ``setup.redirect_relu`` says so."""
    apply = setup.apply  # remat="blocks": the model's own checkpoints are in it
    if setup.redirect_relu:
        # A traced switch: the redirected and the real steps share one compiled program.
        on = jnp.asarray(setup.redirect_relu < 0) | (step < setup.redirect_relu)
        apply = redirect_lib.redirect_relu(apply, on)
    if setup.remat == "convs":
        apply = jax.checkpoint(apply, policy=_saves_products)
    if setup.model_dtype == "float32":
        activations = apply(params, images)
        return {name: activations[name] for name in layers}
    dtype = jnp.dtype(setup.model_dtype)
    activations = apply(cast_floats(params, dtype), images.astype(dtype))
    wider = sorted(name for name in layers if activations[name].dtype.itemsize > dtype.itemsize)
    if wider:  # at trace time: once per compiled program
        warnings.warn(
            f"model_dtype={setup.model_dtype!r}, but layers {', '.join(wider)} come out as "
            f"{activations[wider[0]].dtype}: a float32 constant inside the model (say its input "
            "normalization) promotes the computation; cast such constants to the input's dtype",
            stacklevel=2,
        )
    return {name: activations[name].astype(jnp.float32) for name in layers}


def _coupled_layers(setup: Setup) -> list[str]:
    """The layers the seeds' terms (diversity, guide) read."""
    return [term.layer for term in (setup.diversity, setup.guide) if term is not None]


def _objective_values(
    setup: Setup, raw: Any, objective: Any, keys: Array | None, params: Any, step: Array
) -> tuple[Array, dict[str, Array]]:
    """``(N,)`` objective values of the pictures ``raw`` (transformed when ``keys`` given), and
    the activations the seeds' terms read."""

    def pictures(raw: Any) -> tuple[Array, Array]:
        # Named scopes name each part in XLA's ops and profiles (benchmarks/profile_step.py).
        with jax.named_scope("parameterization"):
            images = jax.vmap(lambda r: setup.param.to_image(r, setup.size))(raw)
        if keys is None:  # RGBA pictures over grey, RGB ones as they are
            return images, alpha_lib.over_background(images, alpha_lib.GREY)
        with jax.named_scope("transforms"):
            step_keys = jax.vmap(lambda k: jax.random.fold_in(k, step))(keys)
            return images, jax.vmap(setup.transform)(step_keys, images)

    if setup.remat != "none":
        # The picture pipeline keeps 6 floats a pixel for its backward pass (the resampling's
        # input and the parameterization's output): recompute it, which is cheap.
        pictures = jax.checkpoint(pictures)
    images, inputs = pictures(raw)
    wanted = set(objective.layers) | set(_coupled_layers(setup))
    with jax.named_scope("model"):
        needed = _model_activations(setup, params, inputs, sorted(wanted - {INPUT}), step)
    if INPUT in wanted:
        needed[INPUT] = images
    with jax.named_scope("objective"):
        values = jax.vmap(lambda o, a: o(a), in_axes=(objective.vmap_axes(), 0))(objective, needed)
    return values, needed


def _per_image_finite(tree: Any) -> Array:
    leaves = jax.tree.leaves(tree)
    return jnp.all(jnp.stack([jnp.isfinite(x.reshape(x.shape[0], -1)).all(1) for x in leaves]), 0)


def picture_loss(
    setup: Setup, objective: Any, keys: Array, params: Any, step: Array, directions: Array
):
    """``raw -> (loss, (N,) objective values)``: every picture climbs its own objective, plus
    the seeds' terms (:mod:`fvjax.rendering.seeds`) within each unit; ``directions (N, C)``
    are the guide's (``(N, 0)`` without one). Also what
    :func:`fvjax.rendering.cost.residual_bytes` differentiates."""

    def loss(raw: Any) -> tuple[Array, Array]:
        values, needed = _objective_values(setup, raw, objective, keys, params, step)
        coupled = seeds_lib.penalty(setup.diversity, setup.guide, setup.group, needed, directions)
        return coupled - values.sum(), values

    return loss


def _step(setup: Setup, state: State, objective: Any, keys: Array, params: Any, directions):
    loss = picture_loss(setup, objective, keys, params, state.step, directions)
    grads, values = jax.grad(loss, has_aux=True)(state.raw)
    with jax.named_scope("optimizer"):
        updates, opt_state = jax.vmap(setup.optimizer.update)(grads, state.opt_state, state.raw)
        raw = optax.apply_updates(state.raw, updates)
    with jax.named_scope("finiteness"):
        finite = jnp.isfinite(values) & _per_image_finite(grads)
    bad_step = jnp.where((state.bad_step < 0) & ~finite, state.step, state.bad_step)
    return State(raw, opt_state, state.step + 1, bad_step), values


STATE_SPECS = State(_BATCH, _BATCH, _REPLICATED, _BATCH)


@partial(jax.jit, static_argnums=(0, 1), donate_argnums=(2,))
def run_steps(
    setup: Setup,
    n_steps: int,
    state: State,
    objective: Any,
    keys: Array,
    params: Any,
    directions: Array,
):
    """``n_steps`` optimization steps: ``(state, values (n_steps, N))``. ``directions (N, C)``
    are the guide's, ``(N, 0)`` without one."""
    _TRACES["run"] += 1

    def run(state: State, objective: Any, keys: Array, params: Any, directions: Array):
        if n_steps == 1:  # no loop: on CPU convolutions compile faster outside a loop body
            state, values = _step(setup, state, objective, keys, params, directions)
            return state, values[None]

        def body(state: State, _: None) -> tuple[State, Array]:
            return _step(setup, state, objective, keys, params, directions)

        return jax.lax.scan(body, state, None, length=n_steps)

    specs = (STATE_SPECS, _objective_specs(objective), _BATCH, _REPLICATED, _BATCH)
    out_specs = (STATE_SPECS, PartitionSpec(None, "batch"))
    return _on_devices(setup, run, specs, out_specs)(state, objective, keys, params, directions)


@partial(jax.jit, static_argnums=0)
def init_state(setup: Setup, keys: Array, starts: Array | None = None) -> State:
    """Each picture's first state: the parameterization's draw from its key, added to the raw
    variables of its start image ``starts (N, H, W, 3)`` when given."""

    def init(keys: Array, starts: Array | None) -> State:
        raw = jax.vmap(lambda k: setup.param.init(k, setup.size))(keys)
        if starts is not None:
            begun = jax.vmap(lambda image: param_lib.from_image(setup.param, image, setup.size))
            raw = jax.tree.map(jnp.add, raw, begun(starts))
        opt_state = jax.vmap(setup.optimizer.init)(raw)
        n = keys.shape[0]
        return State(raw, opt_state, jnp.zeros((), jnp.int32), jnp.full((n,), -1, jnp.int32))

    return _on_devices(setup, init, (_BATCH, _BATCH), STATE_SPECS)(keys, starts)


@partial(jax.jit, static_argnums=0)
def final(setup: Setup, raw: Any, objective: Any, params: Any) -> tuple[Array, Array]:
    """The pictures as the parameterization makes them (RGBA ones keep their alpha) and the
    objective on them untransformed (RGBA composited over :data:`~fvjax.rendering.alpha.GREY`
    for the model)."""

    def final(raw: Any, objective: Any, params: Any) -> tuple[Array, Array]:
        images = jax.vmap(lambda r: setup.param.to_image(r, setup.size))(raw)
        values, _ = _objective_values(setup, raw, objective, None, params, jnp.int32(0))
        return images, values

    specs = (_BATCH, _objective_specs(objective), _REPLICATED)
    return _on_devices(setup, final, specs, (_BATCH, _BATCH))(raw, objective, params)


def device_mesh(devices: int | Sequence[Any] | None = None) -> Mesh | None:
    """A one-axis ("batch") mesh over ``devices`` (a count of local devices, or the devices);
    all local devices by default; ``None`` when that is a single device."""
    if devices is None:
        devices = jax.local_devices()
    elif isinstance(devices, int | np.integer):
        available = jax.local_devices()
        if not 1 <= devices <= len(available):
            raise ArgumentError(
                f"devices={devices} but {len(available)} local device(s) are available"
            )
        devices = available[:devices]
    devices = list(devices)
    return Mesh(np.array(devices), ("batch",)) if len(devices) > 1 else None


def image_keys(seeds: Sequence[int], label: str, unit_ids: Sequence[int]) -> Array:
    """``(N,)`` keys, key ``i`` derived from ``(seeds[i], label, unit_ids[i])`` alone.

    >>> image_keys([0, 1], "channel:a", [3, 3]).shape
    (2,)
    """
    tag = objectives_lib.stable_hash(label)

    def one(seed: Array, unit: Array) -> Array:
        key = jax.random.fold_in(jax.random.key(seed), tag)
        return jax.random.fold_in(key, unit)

    seeds = jnp.asarray(np.asarray(seeds, np.uint32))
    return jax.vmap(one)(seeds, jnp.asarray(np.asarray(unit_ids, np.uint32)))


def default_steps_per_call() -> int:
    """Steps per compiled call: 1 (a host loop) on CPU, where it measured 2.2x faster than
    ``lax.scan`` at batch 1 and equal from batch 16; 32 elsewhere, to amortise dispatch."""
    return 1 if jax.default_backend() == "cpu" else 32


def picture_shape(param: Any, size: tuple[int, int]) -> tuple[int, ...]:
    """``(H, W, C)`` of ``param``'s pictures, traced, not computed: ``C`` is 3, or 4 for RGBA.

    >>> picture_shape(param_lib.fourier(), (8, 6)), picture_shape(alpha_lib.param(), (8, 6))
    ((8, 6, 3), (8, 6, 4))
    """
    shape = jax.eval_shape(
        lambda key: param.to_image(param.init(key, size), size), jax.random.key(0)
    ).shape
    if len(shape) != 3 or shape[:2] != tuple(size) or shape[-1] not in (3, 4):
        raise ArgumentError(
            f"a parameterization must make (H, W, 3) RGB or (H, W, 4) RGBA pictures of "
            f"{size[0]}x{size[1]}, {type(param).__name__} makes {shape}"
        )
    return tuple(int(n) for n in shape)


def check_sizes(
    model: Model, objective: Any, size: tuple[int, int], transform: Any, channels: int = 3
) -> None:
    """Validate the objective against the model on the host, before anything is traced;
    ``channels``: the pictures' (4: RGBA, which the transform must composite to RGB)."""
    try:
        seen_shape = transforms_lib.output_shape(transform, (*size, channels))
    except FvjaxError:
        raise
    except (TypeError, ValueError) as exc:
        raise ImageSizeError(
            f"image size {size[0]}x{size[1]} is too small for the transforms: {exc}"
        ) from exc
    if seen_shape[-1] != 3:
        raise ArgumentError(
            f"the transforms hand the model {seen_shape[-1]}-channel pictures; RGBA pictures "
            "need a transform that composites them first, e.g. "
            "transforms.compose(alpha.background(), transforms.standard())"
        )
    seen = seen_shape[:2]
    if min(seen) < 1:
        raise ImageSizeError(
            f"image size {size[0]}x{size[1]} is too small for the transforms, which crop it "
            f"to {seen[0]}x{seen[1]}; use a larger size or smaller jitter/pad"
        )
    for shape_size in {size, seen}:
        shapes = dict(model.layer_shapes(shape_size))
        shapes[INPUT] = (*shape_size, channels)
        objective.validate(shapes)
