"""The engine: every (unit, seed) picture of an objective, rendered in chunks of one compiled
program (:mod:`fvjax.rendering.step`), with checkpoints so a killed render resumes.

A render is planned, then run. :func:`plan_render` checks every argument and makes every
decision (defaults, devices, chunks) before anything is compiled; the :class:`RenderPlan` it
returns says how much work there is (a job sizes its progress bar from it) and what makes the
render itself (:meth:`RenderPlan.identity`, what its checkpoints are kept under).
:func:`run_plan` carries a plan out and returns a :class:`RenderResult`. :func:`render` does
both, and :func:`render_layer` renders every unit of a layer.

>>> import fvjax
>>> model = fvjax.models.from_fn(lambda x: {"rgb": x})
>>> plan = plan_render(model, fvjax.objectives.channel("rgb", [0, 1, 2]), seeds=2, steps=4,
...                    size=8, batch_size=4, transforms=fvjax.transforms.identity())
>>> plan.n_images, plan.chunk, plan.n_chunks
(6, 4, 2)
>>> run_plan(plan).images.shape
(3, 2, 8, 8, 3)
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fvjax.errors import ArgumentError, NonFiniteError
from fvjax.models.adapters import Model
from fvjax.progress import Progress
from fvjax.rendering import objectives as objectives_lib
from fvjax.rendering import param as param_lib
from fvjax.rendering.resume import ResumeStore
from fvjax.rendering.seeds import Diversity, Guide
from fvjax.rendering.step import (
    Setup,
    default_steps_per_call,
    device_mesh,
    final,
    image_keys,
    init_state,
    make_setup,
    picture_shape,
    run_steps,
)


@dataclasses.dataclass(frozen=True)
class RenderResult:
    """Pictures and what they scored.

    Attributes:
        images: ``(units, seeds, H, W, 3)`` float32 in [0, 1]; ``(units, seeds, H, W, 4)``
            RGBA with an alpha parameterization (:mod:`fvjax.rendering.alpha`).
        activations: ``(units, seeds)`` objective value on the final, untransformed picture.
        history: ``(steps, units, seeds)`` objective value at each step (transformed picture);
            ``None`` for a result read back from an output directory, which keeps no history.
        units: ``(units,)`` unit id of each row.
        seeds: the seeds, one per column.
        label: the objective's static name, e.g. ``"channel:block3/conv"``.
        layer: the layer the objective is about.
        seconds: wall time of the whole render.
        first_call_seconds: wall time of the first optimization call, which includes compiling
            the step program (the small init and final programs compile outside it).
    """

    images: np.ndarray
    activations: np.ndarray
    history: np.ndarray | None
    units: np.ndarray
    seeds: tuple[int, ...]
    label: str
    layer: str
    seconds: float
    first_call_seconds: float


@dataclasses.dataclass(frozen=True, eq=False)
class RenderPlan:
    """A render with its arguments checked and its work laid out; made by :func:`plan_render`.

    Images are unit-major (image ``i`` is unit ``i // len(seeds)``, seed ``i % len(seeds)``)
    and go through the program ``chunk`` at a time; the last chunk is padded, so there is one
    compilation whatever the number of units. With diversity, a chunk (and each device's
    share of it) holds whole units, and the padding repeats the last unit's seeds.
    """

    model: Model
    objective: objectives_lib.Objective
    setup: Setup
    seeds: tuple[int, ...]
    steps: int
    steps_per_call: int
    chunk: int
    n_chunks: int
    directions: np.ndarray | None = None  # (units, seeds, C): the guide's, if any
    starts: np.ndarray | None = None  # (units, seeds, H, W, 3): start pictures, if any
    channels: int = 3  # of the pictures: 4 for RGBA (an alpha parameterization)

    @property
    def n_images(self) -> int:
        return len(self.objective.unit_ids()) * len(self.seeds)

    @property
    def n_devices(self) -> int:
        return 1 if self.setup.mesh is None else self.setup.mesh.size

    @property
    def total_steps(self) -> int:
        """Chunk-steps the render runs: what a progress bar counts."""
        return self.n_chunks * self.steps

    def identity(self) -> dict[str, Any]:
        """What makes this render itself: equal identities, equal pictures. A checkpoint
        directory keeps it and refuses to resume another render. (The optimizer is not in it:
        resume with the same one.)"""
        return {
            "label": self.objective.label,
            "units": np.asarray(self.objective.unit_ids()).tolist(),
            "seeds": list(self.seeds),
            "steps": self.steps,
            "size": list(self.setup.size),
            "chunk": self.chunk,
            "steps_per_call": self.steps_per_call,
            "param": repr(self.setup.param),
            "transforms": repr(self.setup.transform),
            "model": self.model.name,
            "devices": self.n_devices,
            "model_dtype": self.setup.model_dtype,
            "remat": self.setup.remat,
            **_coupling_identity(self.setup, self.directions),
            **({"redirect_relu": self.setup.redirect_relu} if self.setup.redirect_relu else {}),
            **({} if self.starts is None else {"starts": _digest(self.starts)}),
        }


def _digest(values: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(values, np.float32).tobytes()).hexdigest()[:16]


def _coupling_identity(setup: Setup, directions: np.ndarray | None) -> dict[str, Any]:
    """The seeds' terms in a render's identity (absent when unused: older checkpoints match)."""
    out: dict[str, Any] = {}
    if setup.diversity is not None:
        out["diversity"] = [setup.diversity.layer, setup.diversity.weight]
    if setup.guide is not None:
        out["guide"] = [setup.guide.layer, setup.guide.weight, _digest(directions)]
    return out


def plan_chunks(
    n_items: int, batch_size: int | None, n_devices: int = 1, group: int = 1
) -> tuple[int, int]:
    """``(chunk, n_chunks)``: images per compiled chunk (a multiple of ``group * n_devices``,
    so every device gets the same share of whole groups) and how many chunks cover
    ``n_items`` (a multiple of ``group``).

    >>> plan_chunks(10, 4, n_devices=3)
    (6, 2)
    >>> plan_chunks(12, 5, group=4)  # a unit's 4 seeds never split
    (8, 2)
    """
    whole = group * n_devices
    chunk = min(batch_size or n_items, n_items)
    chunk = -(-chunk // whole) * whole
    return chunk, -(-n_items // chunk)


def chunk_index(c: int, chunk: int, n_items: int, group: int = 1) -> np.ndarray:
    """The images of chunk ``c``; past the last image, the last group again (same shape, same
    program; a unit's padded copies stay a whole group for diversity).

    >>> chunk_index(1, 4, 6, group=2).tolist()
    [4, 5, 4, 5]
    """
    index = np.arange(c * chunk, (c + 1) * chunk)
    past = index >= n_items
    return np.where(past, n_items - group + (index - n_items) % group, index)


def plan_render(
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
    devices: int | Sequence[Any] | None = None,
    model_dtype: str = "float32",
    remat: str = "none",
    diversity: Diversity | None = None,
    guide: Guide | None = None,
    directions: Any = None,
    starts: Any = None,
    redirect_relu: int = 0,
) -> RenderPlan:
    """Check a render's arguments and lay out its work (the arguments are :func:`render`'s).

    Raises :class:`~fvjax.errors.FvjaxError` naming the bad value before anything compiles.
    """
    seeds = tuple(range(seeds)) if isinstance(seeds, int) else tuple(int(s) for s in seeds)
    if not seeds:
        raise ArgumentError("seeds must name at least one seed")
    if steps < 1:
        raise ArgumentError(f"steps must be at least 1, got {steps}")
    mesh = device_mesh(devices)
    setup = make_setup(
        model,
        objective,
        size,
        param,
        transforms,
        optimizer,
        model_dtype,
        remat,
        mesh,
        diversity,
        guide,
        len(seeds) if diversity is not None else 1,
        redirect_relu,
    )
    n_units = len(objective.unit_ids())
    directions = _checked_directions(model, setup, directions, (n_units, len(seeds)))
    starts = _checked_starts(setup, starts, (n_units, len(seeds)))
    n_devices = 1 if mesh is None else mesh.size
    chunk, n_chunks = plan_chunks(n_units * len(seeds), batch_size, n_devices, setup.group)
    return RenderPlan(
        model=model,
        objective=objective,
        setup=setup,
        seeds=seeds,
        steps=steps,
        steps_per_call=min(steps_per_call or default_steps_per_call(), steps),
        chunk=chunk,
        n_chunks=n_chunks,
        directions=directions,
        starts=starts,
        channels=picture_shape(setup.param, setup.size)[-1],
    )


def _checked_starts(setup: Setup, starts: Any, shape: tuple) -> np.ndarray | None:
    """The start pictures as ``(units, seeds, H, W, 3)`` float32 in [0, 1], checked."""
    if starts is None:
        return None
    param_lib.check_invertible(setup.param)
    starts = np.asarray(starts, np.float32)
    want = (*shape, *setup.size, 3)
    if starts.shape != want:
        raise ArgumentError(
            f"starts must have shape (units, seeds, H, W, 3) = {want}, got {starts.shape}"
        )
    if not np.isfinite(starts).all() or starts.min() < 0 or starts.max() > 1:
        raise ArgumentError("starts must be pictures with every value in [0, 1]")
    return starts


def _checked_directions(model: Model, setup: Setup, directions: Any, shape: tuple) -> Any:
    """The guide's directions as ``(units, seeds, C)`` float32, checked against its layer."""
    if setup.guide is None:
        if directions is not None:
            raise ArgumentError("directions steer pictures only with a guide=Guide(layer, ...)")
        return None
    channels = model.check_layer(setup.guide.layer, setup.size)[-1]
    want = (*shape, channels)
    if directions is None:
        raise ArgumentError(f"guide={setup.guide} needs directions of shape {want}")
    directions = np.asarray(directions, np.float32)
    if directions.shape != want:
        raise ArgumentError(
            f"directions must have shape (units, seeds, channels of {setup.guide.layer!r}) = "
            f"{want}, got {directions.shape}"
        )
    if not np.isfinite(directions).all():
        raise ArgumentError("directions must be finite")
    return directions


def run_plan(
    plan: RenderPlan,
    *,
    progress: bool | Progress | None = None,
    checkpoint_dir: str | None = None,
    checkpoint_every: int | None = None,
) -> RenderResult:
    """Carry out ``plan``: every chunk compiled once, run, and (with ``checkpoint_dir``) saved.

    ``progress``, ``checkpoint_dir`` and ``checkpoint_every`` are :func:`render`'s.
    """
    start = time.perf_counter()
    objective, seeds, steps = plan.objective, plan.seeds, plan.steps
    unit_ids = np.asarray(objective.unit_ids())
    n_units, n_seeds, n_items = len(unit_ids), len(seeds), plan.n_images
    item_unit = np.repeat(np.arange(n_units), n_seeds)  # images are unit-major
    item_seed = np.tile(np.asarray(seeds), n_units)
    # One key per image: half draws its starting point, half its transforms at each step.
    init_keys, keys = jnp.moveaxis(
        jax.vmap(jax.random.split)(image_keys(item_seed, objective.label, unit_ids[item_unit])),
        1,
        0,
    )
    bar = progress if isinstance(progress, Progress) else None
    if bar is None:
        if progress is None:  # on where someone watches: stderr is a terminal
            progress = bool(getattr(sys.stderr, "isatty", lambda: False)())
        height, width = plan.setup.size
        what = f"{objective.label}: {n_items} pictures, {steps} steps, {height}x{width} px"
        bar = Progress(plan.total_steps, label=what, enabled=bool(progress))
    size = plan.setup.size
    images = np.zeros((n_items, *size, plan.channels), np.float32)
    finals = np.zeros((n_items,), np.float32)
    history = np.zeros((steps, n_items), np.float32)
    store = ResumeStore(checkpoint_dir, plan.identity()) if checkpoint_dir is not None else None
    finished = set(store.finished_chunks()) if store else set()
    first_call = None
    chunk, n_chunks = plan.chunk, plan.n_chunks
    group = plan.setup.group
    directions = (
        np.zeros((n_items, 0), np.float32)
        if plan.directions is None
        else plan.directions.reshape(n_items, -1)
    )
    starts = None if plan.starts is None else plan.starts.reshape(n_items, *size, 3)
    for c in range(n_chunks):
        index = chunk_index(c, chunk, n_items, group)
        real = index[: min(chunk, n_items - c * chunk)]
        if c in finished:
            like = {"images": images[real], "finals": finals[real], "history": history[:, real]}
            saved = store.load_chunk(c, like)
            images[real], finals[real] = saved["images"], saved["finals"]
            history[:, real] = saved["history"]
            bar.skip(steps, note=f"chunk {c + 1}/{n_chunks} (from checkpoint)")
            continue
        chunk_objective = objective.take(item_unit[index])
        chunk_keys = keys[index]
        state = init_state(plan.setup, init_keys[index], None if starts is None else starts[index])
        chunk_history = np.zeros((steps, chunk), np.float32)
        done = 0
        inflight = store.load_inflight(c, state, chunk_history) if store else None
        if inflight is not None:
            done, state, chunk_history = inflight
            bar.skip(done, note=f"chunk {c + 1}/{n_chunks} (resumed at step {done})")
        while done < steps:
            n = min(plan.steps_per_call, steps - done)
            call_start = time.perf_counter()
            state, values = run_steps(
                plan.setup,
                n,
                state,
                chunk_objective,
                chunk_keys,
                plan.model.params,
                directions[index],
            )
            chunk_history[done : done + n] = np.asarray(values)
            if first_call is None:
                first_call = time.perf_counter() - call_start
            _raise_if_non_finite(state, index, item_unit, item_seed, unit_ids, objective.label)
            done += n
            if store and checkpoint_every and done < steps and done % checkpoint_every < n:
                store.save_inflight(c, done, state, chunk_history)
            bar.update(n, note=f"chunk {c + 1}/{n_chunks}")
        chunk_images, chunk_values = final(
            plan.setup, state.raw, chunk_objective, plan.model.params
        )
        count = len(real)
        images[real] = np.asarray(chunk_images)[:count]
        finals[real] = np.asarray(chunk_values)[:count]
        history[:, real] = chunk_history[:, :count]
        if store:
            store.save_chunk(
                c, {"images": images[real], "finals": finals[real], "history": history[:, real]}
            )
    if not isinstance(progress, Progress):
        bar.close()
    return RenderResult(
        images=images.reshape(n_units, n_seeds, *size, plan.channels),
        activations=finals.reshape(n_units, n_seeds),
        history=history.reshape(steps, n_units, n_seeds),
        units=unit_ids,
        seeds=seeds,
        label=objective.label,
        layer=objective.layer,
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


def render(
    model: Model,
    objective: objectives_lib.Objective,
    *,
    progress: bool | Progress | None = None,
    checkpoint_dir: str | None = None,
    checkpoint_every: int | None = None,
    **settings: Any,
) -> RenderResult:
    """Optimize a picture for every member of ``objective`` and every seed, in one program:
    :func:`plan_render` with ``settings`` (every argument below but ``progress`` and the
    checkpoints), then :func:`run_plan`.

    Args:
        model: a :class:`fvjax.models.Model` (see ``from_linen``, ``from_nnx``, ``from_fn``).
        objective: a (batched) objective, e.g. ``channel("block3/conv", range(128))``.
        seeds: how many seeds (``0..seeds-1``) or the seeds themselves.
        steps: optimization steps.
        size: picture size, ``int`` or ``(H, W)``.
        param: parameterization (default ``fourier()``).
        transforms: a ``(key, image) -> image`` transform (default ``standard()``, after
            ``alpha.background()`` for RGBA pictures; ``transforms.identity()`` for none).
        optimizer: an ``optax`` optimizer (default ``adam(0.05)``). Reuse one instance across
            calls: a new instance is a new program to compile.
        batch_size: images per compiled chunk (default: all at once). The last chunk is padded,
            so there is one compilation whatever the number of units.
        steps_per_call: steps per compiled call (``lax.scan`` inside); default
            :func:`default_steps_per_call`.
        progress: show a progress bar on stderr, headed by what is rendered (pictures, steps,
            size); default: on when stderr is a terminal. Or pass a :class:`Progress` to
            update.
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
        remat: what the backward pass recomputes rather than keeps (``step.REMAT``):
            ``"none"``, ``"convs"`` (keep convolution outputs only; any model) or ``"blocks"``
            (keep block inputs only; models with ``remat_apply``). Same pictures within float
            rounding; less memory per picture for a little (``convs``) or one forward pass
            (``blocks``) more compute. :func:`fvjax.rendering.cost.residual_bytes` measures
            what is kept.
        diversity: a :class:`~fvjax.rendering.seeds.Diversity` ``(layer, weight)``: each
            unit's seeds pushed apart at ``layer`` (needs 2 or more seeds); a unit's pictures
            still do not depend on the other units in its chunk.
        guide: a :class:`~fvjax.rendering.seeds.Guide` ``(layer, weight)``: each picture
            pulled towards its own direction at ``layer``, given as ``directions``
            ``(units, seeds, channels)`` (say the facets of the unit's natural examples).
        starts: ``(units, seeds, H, W, 3)`` pictures in [0, 1] to start from (say the mean
            image of a facet's natural examples, as Nguyen et al. 2016 do): each picture's
            parameterization begins at its start plus its seed's usual small draw. Needs a
            parameterization with ``from_image`` (``pixel()`` and ``fourier()`` have it; an
            ``alpha.param()`` picture starts opaque).
        redirect_relu: for how many first steps the model's ReLUs pass the gradient that
            would raise a dead input (Lucid's redirected ReLU,
            :mod:`fvjax.rendering.redirect`): 0 never (the default), -1 every step. One
            compiled program for both phases; any JAX model.

    Returns:
        a :class:`RenderResult` with ``images`` of shape ``(units, seeds, H, W, 3)`` (``4``
        channels, RGBA, with an ``alpha.param()``).

    >>> import fvjax
    >>> model = fvjax.models.from_fn(lambda x: {"rgb": x})
    >>> result = render(model, fvjax.objectives.channel("rgb", [0, 2]), seeds=2, steps=8,
    ...                 size=16, transforms=fvjax.transforms.identity())
    >>> result.images.shape, result.activations.shape
    ((2, 2, 16, 16, 3), (2, 2))
    """
    plan = plan_render(model, objective, **settings)
    return run_plan(
        plan, progress=progress, checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every
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
    other keyword arguments go to :func:`render`, whose defaults hold: 512 steps of
    ``adam(0.05)`` on ``fourier()`` pictures of 128 x 128 px through ``standard()``
    transforms, one seed, a progress bar when stderr is a terminal.

    >>> import fvjax
    >>> model = fvjax.models.from_fn(lambda x: {"rgb": x})
    >>> render_layer(model, "rgb", size=8, steps=2).images.shape[:2]
    (3, 1)
    """
    shape = model.check_layer(layer, size)
    units = range(shape[-1]) if units is None else units
    makers = objectives_lib.LAYER_OBJECTIVES
    if kind not in makers:
        raise ArgumentError(f"kind must be one of {sorted(makers)}, got {kind!r}")
    return render(model, makers[kind](layer, units), size=size, **kwargs)
