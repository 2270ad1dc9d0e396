"""The renderer: all (unit, seed) pairs optimized together in one compiled XLA program.

Data flow of one step, for a batch of ``N`` images (each a (unit, seed) pair)::

    raw (N, ...) --param.to_image--> images (N, H, W, 3) --transform (own key per image)-->
    model.apply(params, .) --> {layer: (N, ...)} --objective, vmapped--> values (N,)

and ``optax`` updates each image's variables with its own optimizer state (the update is
``vmap``ped, so no statistic is shared between images). Each image's random key comes from
``(seed, objective label, unit)`` alone, so a picture does not depend on which chunk it was
rendered in. Model weights are passed to the program as arguments, never baked in.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Iterable, Sequence
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, PartitionSpec

from fvjax import objectives as objectives_lib
from fvjax import param as param_lib
from fvjax import transforms as transforms_lib
from fvjax.errors import ImageSizeError, NonFiniteError
from fvjax.models import INPUT, Model, as_size
from fvjax.progress import Progress

Array = jax.Array

_TRACES = {"run": 0}


def trace_count() -> int:
    """How many times the optimization program has been traced (for "no retrace" checks)."""
    return _TRACES["run"]


@dataclasses.dataclass(frozen=True)
class RenderResult:
    """Pictures and what they scored.

    Attributes:
        images: ``(units, seeds, H, W, 3)`` float32 in [0, 1].
        activations: ``(units, seeds)`` objective value on the final, untransformed picture.
        history: ``(steps, units, seeds)`` objective value at each step (transformed picture).
        units: ``(units,)`` unit id of each row.
        seeds: the seeds, one per column.
        label: the objective's static name, e.g. ``"channel:block3/conv"``.
        layer: the layer the objective is about (``None`` when it has none).
        seconds: wall time of the whole render.
        first_call_seconds: wall time of the first optimization call, which includes compiling
            the step program (the small init and final programs compile outside it).
    """

    images: np.ndarray
    activations: np.ndarray
    history: np.ndarray
    units: np.ndarray
    seeds: tuple[int, ...]
    label: str
    layer: str | None
    seconds: float
    first_call_seconds: float


class _Setup(NamedTuple):
    """Everything static about a program; hashable, so equal setups share a compilation."""

    apply: Any
    param: Any
    transform: Any
    optimizer: optax.GradientTransformation
    size: tuple[int, int]
    mesh: Mesh | None = None  # images split over its "batch" axis; None: one device
    model_dtype: str = "float32"  # the model's compute dtype; pictures stay float32
    remat: str = "none"  # what the backward pass recomputes: see REMAT


def _make_setup(
    model: Model,
    objective: objectives_lib.Objective,
    size: int | tuple[int, int],
    param: Any,
    transforms: Any,
    optimizer: optax.GradientTransformation | None,
    model_dtype: str,
    remat: str,
    mesh: Mesh | None = None,
) -> _Setup:
    """:func:`render`'s defaults filled in and its arguments checked, as one :class:`_Setup`."""
    size = as_size(size)
    param = param if param is not None else param_lib.fourier()
    transform = transforms if transforms is not None else transforms_lib.standard()
    optimizer = optimizer if optimizer is not None else default_optimizer()
    check_sizes(model, objective, size, transform)
    if model_dtype not in ("float32", "bfloat16"):
        raise ValueError(f"model_dtype must be 'float32' or 'bfloat16', got {model_dtype!r}")
    if not isinstance(remat, str) or remat not in REMAT:
        raise ValueError(f"remat must be one of {', '.join(map(repr, REMAT))}, got {remat!r}")
    apply = model.apply
    if remat == "blocks":
        if model.remat_apply is None:
            raise ValueError(
                f"model {model.name!r} has no per-block checkpoints for remat='blocks' (give "
                "from_linen a remat_module, or from_fn a remat_fn); remat='convs' needs none"
            )
        apply = model.remat_apply
    return _Setup(apply, param, transform, optimizer, size, mesh, model_dtype, remat)


#: What the backward pass recomputes instead of keeping from the forward pass:
#: ``"none"`` keeps all that autodiff saves; ``"convs"`` keeps only the outputs of convolutions
#: and matrix products and recomputes the cheap rest (activation functions, normalizations,
#: pooling), in any model; ``"blocks"`` keeps only the inputs of the model's blocks and runs
#: each block's forward pass again (one more forward pass of compute), for models that define
#: blocks (``Model.remat_apply``: the zoo's InceptionV1, ResNet-50, VGG-16).
REMAT = ("none", "convs", "blocks")


def _saves_products(primitive: Any, *args: Any, **params: Any) -> bool:
    """The ``jax.checkpoint`` policy of ``remat="convs"``: keep what is costly to recompute."""
    return primitive.name in ("conv_general_dilated", "dot_general")


_BATCH, _REPLICATED = PartitionSpec("batch"), PartitionSpec()


def _on_devices(setup: _Setup, fn: Any, in_specs: Any, out_specs: Any) -> Any:
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


class _State(NamedTuple):
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


def _model_activations(
    setup: _Setup, params: Any, images: Array, layers: Iterable[str]
) -> dict[str, Array]:
    """The model's ``layers`` on ``images``, computed in ``setup.model_dtype``, in float32."""
    apply = setup.apply  # remat="blocks": the model's own checkpoints are in it
    if setup.remat == "convs":
        apply = jax.checkpoint(apply, policy=_saves_products)
    if setup.model_dtype == "float32":
        activations = apply(params, images)
        return {name: activations[name] for name in layers}
    dtype = jnp.dtype(setup.model_dtype)

    def cast(x: Any) -> Any:
        return x.astype(dtype) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating) else x

    activations = apply(jax.tree.map(cast, params), images.astype(dtype))
    wider = sorted(name for name in layers if activations[name].dtype.itemsize > dtype.itemsize)
    if wider:  # at trace time: once per compiled program
        warnings.warn(
            f"model_dtype={setup.model_dtype!r}, but layers {', '.join(wider)} come out as "
            f"{activations[wider[0]].dtype}: a float32 constant inside the model (say its input "
            "normalization) promotes the computation; cast such constants to the input's dtype",
            stacklevel=2,
        )
    return {name: activations[name].astype(jnp.float32) for name in layers}


def _objective_values(
    setup: _Setup, raw: Any, objective: Any, keys: Array | None, params: Any, step: Array
) -> Array:
    """``(N,)`` objective values of the pictures ``raw`` (transformed when ``keys`` given)."""

    def pictures(raw: Any) -> tuple[Array, Array]:
        images = jax.vmap(lambda r: setup.param.to_image(r, setup.size))(raw)
        if keys is None:
            return images, images
        step_keys = jax.vmap(lambda k: jax.random.fold_in(k, step))(keys)
        return images, jax.vmap(setup.transform)(step_keys, images)

    if setup.remat != "none":
        # The transforms' resampling keeps ~60 floats per pixel for its backward pass (more
        # than InceptionV1's stem does): recompute the whole picture pipeline, which is cheap.
        pictures = jax.checkpoint(pictures)
    images, inputs = pictures(raw)
    layers = [name for name in objective.layers if name != INPUT]
    needed = _model_activations(setup, params, inputs, layers)
    if INPUT in objective.layers:
        needed[INPUT] = images
    return jax.vmap(lambda o, a: o(a), in_axes=(objective.vmap_axes(), 0))(objective, needed)


def _per_image_finite(tree: Any) -> Array:
    leaves = jax.tree.leaves(tree)
    return jnp.all(jnp.stack([jnp.isfinite(x.reshape(x.shape[0], -1)).all(1) for x in leaves]), 0)


def _loss(setup: _Setup, objective: Any, keys: Array, params: Any, step: Array):
    """``raw -> (loss, (N,) objective values)``: every picture climbs its own objective."""

    def loss(raw: Any) -> tuple[Array, Array]:
        values = _objective_values(setup, raw, objective, keys, params, step)
        return -values.sum(), values

    return loss


def _step(setup: _Setup, state: _State, objective: Any, keys: Array, params: Any):
    loss = _loss(setup, objective, keys, params, state.step)
    grads, values = jax.grad(loss, has_aux=True)(state.raw)
    updates, opt_state = jax.vmap(setup.optimizer.update)(grads, state.opt_state, state.raw)
    raw = optax.apply_updates(state.raw, updates)
    finite = jnp.isfinite(values) & _per_image_finite(grads)
    bad_step = jnp.where((state.bad_step < 0) & ~finite, state.step, state.bad_step)
    return _State(raw, opt_state, state.step + 1, bad_step), values


_STATE_SPECS = _State(_BATCH, _BATCH, _REPLICATED, _BATCH)


@partial(jax.jit, static_argnums=(0, 1), donate_argnums=(2,))
def _run_steps(setup: _Setup, n_steps: int, state: _State, objective: Any, keys: Array, params):
    """``n_steps`` optimization steps: ``(state, values (n_steps, N))``."""
    _TRACES["run"] += 1

    def run(state: _State, objective: Any, keys: Array, params: Any):
        if n_steps == 1:  # no loop: on CPU convolutions compile faster outside a loop body
            state, values = _step(setup, state, objective, keys, params)
            return state, values[None]

        def body(state: _State, _: None) -> tuple[_State, Array]:
            return _step(setup, state, objective, keys, params)

        return jax.lax.scan(body, state, None, length=n_steps)

    specs = (_STATE_SPECS, _objective_specs(objective), _BATCH, _REPLICATED)
    out_specs = (_STATE_SPECS, PartitionSpec(None, "batch"))
    return _on_devices(setup, run, specs, out_specs)(state, objective, keys, params)


@partial(jax.jit, static_argnums=0)
def _init_state(setup: _Setup, keys: Array) -> _State:
    def init(keys: Array) -> _State:
        raw = jax.vmap(lambda k: setup.param.init(k, setup.size))(keys)
        opt_state = jax.vmap(setup.optimizer.init)(raw)
        n = keys.shape[0]
        return _State(raw, opt_state, jnp.zeros((), jnp.int32), jnp.full((n,), -1, jnp.int32))

    return _on_devices(setup, init, (_BATCH,), _STATE_SPECS)(keys)


@partial(jax.jit, static_argnums=0)
def _final(setup: _Setup, raw: Any, objective: Any, params: Any) -> tuple[Array, Array]:
    def final(raw: Any, objective: Any, params: Any) -> tuple[Array, Array]:
        images = jax.vmap(lambda r: setup.param.to_image(r, setup.size))(raw)
        values = _objective_values(setup, raw, objective, None, params, jnp.int32(0))
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
            raise ValueError(
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


def plan_chunks(n_items: int, batch_size: int | None, n_devices: int = 1) -> tuple[int, int]:
    """``(chunk, n_chunks)``: images per compiled chunk (a multiple of ``n_devices``, so every
    device gets the same share) and how many chunks cover ``n_items``.

    >>> plan_chunks(10, 4, n_devices=3)
    (6, 2)
    """
    chunk = min(batch_size or n_items, n_items)
    chunk = -(-chunk // n_devices) * n_devices
    return chunk, -(-n_items // chunk)


def default_steps_per_call() -> int:
    """Steps per compiled call: 1 (a host loop) on CPU, where it measured 2.2x faster than
    ``lax.scan`` at batch 1 and equal from batch 16; 32 elsewhere, to amortise dispatch."""
    return 1 if jax.default_backend() == "cpu" else 32


def check_sizes(model: Model, objective: Any, size: tuple[int, int], transform: Any) -> None:
    """Validate the objective against the model on the host, before anything is traced."""
    try:
        seen = transforms_lib.output_size(transform, size)
    except (TypeError, ValueError) as exc:
        raise ImageSizeError(
            f"image size {size[0]}x{size[1]} is too small for the transforms: {exc}"
        ) from exc
    if min(seen) < 1:
        raise ImageSizeError(
            f"image size {size[0]}x{size[1]} is too small for the transforms, which crop it "
            f"to {seen[0]}x{seen[1]}; use a larger size or smaller jitter/pad"
        )
    for shape_size in {size, seen}:
        shapes = dict(model.layer_shapes(shape_size))
        shapes[INPUT] = (*shape_size, 3)
        objective.validate(shapes)


def render(
    model: Model,
    objective: objectives_lib.Objective,
    *,
    seeds: int | Iterable[int] = 1,
    steps: int = 512,
    size: int | tuple[int, int] = 128,
    param: Any = None,
    transforms: Any = None,
    optimizer: optax.GradientTransformation | None = None,
    batch_size: int | None = None,
    steps_per_call: int | None = None,
    progress: bool | Progress = False,
    checkpoint_dir: str | None = None,
    checkpoint_every: int | None = None,
    devices: int | Sequence[Any] | None = None,
    model_dtype: str = "float32",
    remat: str = "none",
) -> RenderResult:
    """Optimize a picture for every member of ``objective`` and every seed, in one program.

    Args:
        model: a :class:`fvjax.models.Model` (see ``from_linen``, ``from_nnx``, ``from_fn``).
        objective: a (batched) objective, e.g. ``channel("block3/conv", range(128))``.
        seeds: how many seeds (``0..seeds-1``) or the seeds themselves.
        steps: optimization steps.
        size: picture size, ``int`` or ``(H, W)``.
        param: parameterization (default ``fourier()``).
        transforms: a ``(key, image) -> image`` transform (default ``standard()``; use
            ``transforms.identity()`` for none).
        optimizer: an ``optax`` optimizer (default ``adam(0.05)``). Reuse one instance across
            calls: a new instance is a new program to compile.
        batch_size: images per compiled chunk (default: all at once). The last chunk is padded,
            so there is one compilation whatever the number of units.
        steps_per_call: steps per compiled call (``lax.scan`` inside); default
            :func:`default_steps_per_call`.
        progress: show a progress bar on stderr (or pass a :class:`Progress` to update).
        checkpoint_dir: save each finished chunk there (and, every ``checkpoint_every`` steps,
            the chunk in flight) with orbax; a render killed at any moment and called again
            with the same arguments resumes there and gives the same pictures. The optimizer
            is not recorded in the directory's job description: resume with the same one.
        checkpoint_every: steps between saves of the chunk in flight (default: only finished
            chunks are saved).
        devices: how many local devices (or which) share each chunk's images; default all.
            Pictures equal a one-device render's within float rounding, and are bit for bit
            reproducible for a fixed device count.
        model_dtype: ``"float32"`` or ``"bfloat16"``: the dtype the model computes in (its
            weights and inputs are cast); the parameterization, optimizer and objective stay
            float32.
        remat: what the backward pass recomputes rather than keeps (:data:`REMAT`):
            ``"none"``, ``"convs"`` (keep convolution outputs only; any model) or ``"blocks"``
            (keep block inputs only; models with ``remat_apply``). Same pictures within float
            rounding; less memory per picture for a little (``convs``) or one forward pass
            (``blocks``) more compute. :func:`residual_bytes` measures what is kept.

    Returns:
        a :class:`RenderResult` with ``images`` of shape ``(units, seeds, H, W, 3)``.

    >>> import fvjax
    >>> model = fvjax.models.from_fn(lambda x: {"rgb": x})
    >>> result = render(model, fvjax.objectives.channel("rgb", [0, 2]), seeds=2, steps=8,
    ...                 size=16, transforms=fvjax.transforms.identity())
    >>> result.images.shape, result.activations.shape
    ((2, 2, 16, 16, 3), (2, 2))
    """
    start = time.perf_counter()
    seeds = tuple(range(seeds)) if isinstance(seeds, int) else tuple(int(s) for s in seeds)
    if not seeds:
        raise ValueError("seeds must name at least one seed")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    steps_per_call = min(steps_per_call or default_steps_per_call(), steps)
    mesh = device_mesh(devices)
    setup = _make_setup(
        model, objective, size, param, transforms, optimizer, model_dtype, remat, mesh
    )
    size, param, transform = setup.size, setup.param, setup.transform

    unit_ids = np.asarray(objective.unit_ids())
    n_units, n_seeds = len(unit_ids), len(seeds)
    n_items = n_units * n_seeds
    item_unit = np.repeat(np.arange(n_units), n_seeds)  # images are unit-major
    item_seed = np.tile(np.asarray(seeds), n_units)
    # One key per image: half draws its starting point, half its transforms at each step.
    init_keys, keys = jnp.moveaxis(
        jax.vmap(jax.random.split)(image_keys(item_seed, objective.label, unit_ids[item_unit])),
        1,
        0,
    )
    n_devices = 1 if mesh is None else mesh.size
    chunk, n_chunks = plan_chunks(n_items, batch_size, n_devices)

    bar = progress if isinstance(progress, Progress) else None
    if bar is None:
        bar = Progress(n_chunks * steps, label=objective.label, enabled=bool(progress))
    images = np.zeros((n_items, *size, 3), np.float32)
    finals = np.zeros((n_items,), np.float32)
    history = np.zeros((steps, n_items), np.float32)
    ckpt = None
    if checkpoint_dir is not None:
        from fvjax.checkpoint import RenderCheckpoint

        job = {
            "label": objective.label,
            "units": unit_ids.tolist(),
            "seeds": list(seeds),
            "steps": steps,
            "size": list(size),
            "chunk": chunk,
            "steps_per_call": steps_per_call,
            "param": repr(param),
            "transforms": repr(transform),
            "model": model.name,
            "devices": n_devices,
            "model_dtype": model_dtype,
            "remat": remat,
        }
        ckpt = RenderCheckpoint(checkpoint_dir, job)
    finished = set(ckpt.finished_chunks()) if ckpt else set()
    first_call = None
    for c in range(n_chunks):
        # Pad the last chunk by repeating its last image: same shape, same program.
        index = np.minimum(np.arange(c * chunk, (c + 1) * chunk), n_items - 1)
        real = index[: min(chunk, n_items - c * chunk)]
        if c in finished:
            like = {"images": images[real], "finals": finals[real], "history": history[:, real]}
            saved = ckpt.load_chunk(c, like)
            images[real], finals[real] = saved["images"], saved["finals"]
            history[:, real] = saved["history"]
            bar.update(steps, note=f"chunk {c + 1}/{n_chunks} (from checkpoint)")
            continue
        chunk_objective = objective.take(item_unit[index])
        chunk_keys = keys[index]
        state = _init_state(setup, init_keys[index])
        chunk_history = np.zeros((steps, chunk), np.float32)
        done = 0
        inflight = ckpt.load_inflight(c, state, chunk_history) if ckpt else None
        if inflight is not None:
            done, state, chunk_history = inflight
            bar.update(done, note=f"chunk {c + 1}/{n_chunks} (resumed at step {done})")
        while done < steps:
            n = min(steps_per_call, steps - done)
            call_start = time.perf_counter()
            state, values = _run_steps(setup, n, state, chunk_objective, chunk_keys, model.params)
            chunk_history[done : done + n] = np.asarray(values)
            if first_call is None:
                first_call = time.perf_counter() - call_start
            _raise_if_non_finite(state, index, item_unit, item_seed, unit_ids, objective.label)
            done += n
            if ckpt and checkpoint_every and done < steps and done % checkpoint_every < n:
                ckpt.save_inflight(c, done, state, chunk_history)
            bar.update(n, note=f"chunk {c + 1}/{n_chunks}")
        chunk_images, chunk_values = _final(setup, state.raw, chunk_objective, model.params)
        count = len(real)
        images[real] = np.asarray(chunk_images)[:count]
        finals[real] = np.asarray(chunk_values)[:count]
        history[:, real] = chunk_history[:, :count]
        if ckpt:
            ckpt.save_chunk(
                c, {"images": images[real], "finals": finals[real], "history": history[:, real]}
            )
    if not isinstance(progress, Progress):
        bar.close()
    return RenderResult(
        images=images.reshape(n_units, n_seeds, *size, 3),
        activations=finals.reshape(n_units, n_seeds),
        history=history.reshape(steps, n_units, n_seeds),
        units=unit_ids,
        seeds=seeds,
        label=objective.label,
        layer=getattr(objective, "layer", None),
        seconds=time.perf_counter() - start,
        first_call_seconds=float(first_call or 0.0),
    )


def _raise_if_non_finite(state, index, item_unit, item_seed, unit_ids, label) -> None:
    bad_step = np.asarray(state.bad_step)
    bad = np.flatnonzero(bad_step >= 0)
    if bad.size == 0:
        return
    first = int(bad_step[bad].min())
    items = index[bad]
    pairs = sorted({(int(unit_ids[item_unit[i]]), int(item_seed[i])) for i in items})
    shown = ", ".join(f"unit {u} seed {s}" for u, s in pairs[:10])
    more = f" and {len(pairs) - 10} more" if len(pairs) > 10 else ""
    raise NonFiniteError(
        f"objective {label!r} or its gradient became NaN/inf at step {first} for {shown}{more}. "
        "Lower the learning rate, add a regularizer, or check the model at these inputs."
    )


def render_layer(
    model: Model,
    layer: str,
    units: Iterable[int] | None = None,
    *,
    kind: str = "channel",
    size: int | tuple[int, int] = 128,
    **kwargs: Any,
) -> RenderResult:
    """Render every unit (or ``units``) of ``layer``: the normal case, one program.

    ``kind`` is ``"channel"`` (mean over positions) or ``"neuron"`` (the centre position);
    other keyword arguments go to :func:`render`.

    >>> import fvjax
    >>> model = fvjax.models.from_fn(lambda x: {"rgb": x})
    >>> render_layer(model, "rgb", size=8, steps=2).images.shape[:2]
    (3, 1)
    """
    shape = model.check_layer(layer, size)
    units = range(shape[-1]) if units is None else units
    makers = {"channel": objectives_lib.channel, "neuron": objectives_lib.neuron}
    if kind not in makers:
        raise ValueError(f"kind must be one of {sorted(makers)}, got {kind!r}")
    return render(model, makers[kind](layer, units), size=size, **kwargs)


# -- what a step costs, compiled but not run ---------------------------------------------------


def lower_step(
    model: Model,
    objective: objectives_lib.Objective,
    *,
    batch: int | None = None,
    size: int | tuple[int, int] = 128,
    param: Any = None,
    transforms: Any = None,
    optimizer: optax.GradientTransformation | None = None,
    model_dtype: str = "float32",
    remat: str = "none",
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
    ...                            **cheap).cost_analysis()["flops"] for remat in REMAT[:2]}
    >>> flops["convs"] > flops["none"]  # sin is computed again in the backward pass
    True
    """
    setup = _make_setup(model, objective, size, param, transforms, optimizer, model_dtype, remat)
    state, chunk_objective, keys, params = _abstract_step(setup, model, objective, batch)
    return _run_steps.lower(setup, 1, state, chunk_objective, keys, params)


def compile_step(
    model: Model, objective: objectives_lib.Objective, **kwargs: Any
) -> jax.stages.Compiled:
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


def _abstract_step(setup: _Setup, model: Model, objective: Any, batch: int | None) -> tuple:
    """Shapes of one step's ``(state, objective, keys, params)`` for ``batch`` images that
    cycle through the members of ``objective`` (default: one image per member)."""
    members = len(objective.unit_ids())
    batch = members if batch is None else int(batch)
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    keys = jax.eval_shape(lambda: jax.random.split(jax.random.key(0), batch))
    state = jax.eval_shape(partial(_init_state, setup), keys)
    return state, objective.take(np.arange(batch) % members), keys, abstract(model.params)


def residual_bytes(
    model: Model,
    objective: objectives_lib.Objective,
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
    setup = _make_setup(model, objective, size, param, transforms, None, model_dtype, remat)
    state, chunk_objective, keys, params = _abstract_step(setup, model, objective, batch)

    def backward(raw: Any, objective: Any, keys: Array, params: Any, step: Array) -> Any:
        return jax.vjp(_loss(setup, objective, keys, params, step), raw, has_aux=True)[1]

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


def step_memory(
    model: Model, objective: objectives_lib.Objective, batch: int, **kwargs: Any
) -> StepMemory:
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
    objective: objectives_lib.Objective,
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
