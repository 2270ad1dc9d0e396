"""Helpers for ``benchmarks/`` scripts: arguments, the model's own limit, who measured what and
where, and appending to RESULTS.md.

Every script takes ``--model NAME`` (a :mod:`fvjax.models.zoo` name) and picks that model's classic
layer and picture size unless ``--layer`` / ``--size`` say otherwise (:data:`MODEL_DEFAULTS`);
``--no-record`` prints the table without appending it (for smoke runs).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from fvjax.files import versions
from fvjax.models import zoo
from fvjax.models.adapters import Model, as_size
from fvjax.rendering import cost, objectives
from fvjax.rendering import step as step_lib
from fvjax.rendering.cost import abstract
from fvjax.rendering.engine import render

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "RESULTS.md"

#: Per zoo model: ``(layer, size)`` a benchmark uses unless told otherwise.
MODEL_DEFAULTS: dict[str, tuple[str, int]] = {
    "worldnet": ("block3/conv", 64),
    "tiny": ("block3/conv", 32),
    "inceptionv1": ("mixed4a", 224),
    "resnet50": ("layer3", 224),
    "vgg16": ("conv4_3", 224),
    "vit_b_16": ("block6/mlp", 224),
}

#: Distributions whose versions say which accelerator stack ran (CUDA/ROCm/TPU plugins).
_ACCELERATOR_PACKAGES = ("jax-cuda", "jax_cuda", "jax-rocm", "jax_rocm", "libtpu", "nvidia-cudnn")


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _device_details(device: Any) -> str:
    """Kind, memory the allocator may use, compute capability, where the backend reports them."""
    parts = [device.device_kind]
    capability = getattr(device, "compute_capability", None)
    if capability:
        parts.append(f"sm {capability}")
    try:
        stats = device.memory_stats() or {}
    except Exception:  # not every backend implements it
        stats = {}
    if "bytes_limit" in stats:
        parts.append(f"{stats['bytes_limit'] / 1e9:.1f} GB usable")
    return " ".join(parts)


def _accelerator_versions() -> dict[str, str]:
    found = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"] or ""
        if name.lower().startswith(_ACCELERATOR_PACKAGES):
            found[name] = dist.version
    return dict(sorted(found.items()))


def machine_header() -> str:
    """One line naming the date, machine, devices and versions of a measurement.

    On an accelerator it names the device kind (e.g. ``NVIDIA H100 80GB HBM3``), its compute
    capability, the memory JAX's allocator may use, the CUDA/ROCm plugin versions and the XLA
    environment variables that change speed or memory.
    """
    devices = jax.devices()
    kinds = sorted({_device_details(d) for d in devices})
    found = ", ".join(f"{k}={v}" for k, v in {**versions(), **_accelerator_versions()}.items())
    env = [f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("XLA_")]
    return (
        f"{datetime.date.today().isoformat()} · {_cpu_name()}, {os.cpu_count()} cores · "
        f"backend {jax.default_backend()} · {len(devices)} device(s): {', '.join(kinds)} · "
        f"{found}" + (f" · {' '.join(env)}" if env else "")
    )


def append_results(title: str, body: str, path: Path = RESULTS) -> None:
    """Append a section ``## title`` with ``body`` to ``benchmarks/RESULTS.md``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(
            "# Benchmark results\n\nAppended by the scripts in `benchmarks/`; each section "
            "names its machine, versions and date. Compare ratios within a section: the "
            "machines are noisy (+-20-30% run to run).\n"
        )
    with path.open("a") as f:
        f.write(f"\n## {title}\n\n{body}\n")


def record(args: argparse.Namespace, title: str, text: str) -> None:
    """Print ``text``; append it under ``title`` with the machine header unless ``--no-record``."""
    print(text)
    if args.no_record:
        print("(--no-record: not appended to benchmarks/RESULTS.md)")
        return
    append_results(title, machine_header() + "\n\n" + text)
    print(f"appended to {RESULTS}")


def parser(doc: str, steps: int = 16, batch: int | None = 64) -> argparse.ArgumentParser:
    """The arguments every benchmark takes: model, layer, size, steps, rounds, --no-record (and
    batch). Read them with :func:`parse_args`, which fills in the model's layer and size.

    >>> parse_args(parser("A benchmark."), ["--model", "inceptionv1"]).layer
    'mixed4a'
    """
    found = argparse.ArgumentParser(description=doc.splitlines()[0])
    found.add_argument("--model", default="worldnet", help="a zoo model (default worldnet)")
    found.add_argument("--layer", help="default: the model's classic layer (MODEL_DEFAULTS)")
    found.add_argument("--size", type=int, help="picture size; default: the model's (64 or 224)")
    found.add_argument("--steps", type=int, default=steps, help="steps per timed render")
    found.add_argument("--rounds", type=int, default=2, help="timed rounds; the best is kept")
    found.add_argument(
        "--transform-scale", type=float, default=1.0,
        help="transforms are standard(SCALE) (1.0: render's default)",
    )  # fmt: skip
    found.add_argument(
        "--no-record", action="store_true", help="print only; do not append to RESULTS.md"
    )
    if batch is not None:
        found.add_argument("--batch", type=int, default=batch, help="images per step")
    return found


def parse_args(found: argparse.ArgumentParser, argv: list[str] | None = None):
    """``found.parse_args(argv)`` with ``layer`` and ``size`` filled from the model's defaults."""
    args = found.parse_args(argv)
    layer, size = MODEL_DEFAULTS.get(args.model, (None, 128))
    args.layer = args.layer or layer
    args.size = args.size or size
    if args.layer is None:
        found.error(f"model {args.model!r} has no default layer: give --layer")
    return args


def load_model(name: str, missing_ok: bool = False) -> Model | None:
    """The zoo model ``name`` (random weights for the real networks). When its module cannot
    be imported (yet): ``None`` if ``missing_ok``, else exit with a clear line."""
    try:
        return zoo.load(name)
    except (ImportError, AttributeError) as exc:
        if missing_ok:
            print(f"model {name!r} cannot be loaded: {exc}")
            return None
        raise SystemExit(f"model {name!r} cannot be loaded: {exc}") from exc


def channel_objective(model: Model, layer: str, batch: int, size: int) -> Any:
    """``batch`` channel objectives on ``layer``, cycling through its channels."""
    n_channels = model.check_layer(layer, size)[-1]
    return objectives.channel(layer, [u % n_channels for u in range(batch)])


class Limit(NamedTuple):
    """The model's own forward + backward to its input, compiled for ``shape`` pictures: one
    gradient step on a layer's mean and the mean itself, weights as arguments. No renderer
    can step faster."""

    compiled: Any  # jax.stages.Compiled: (params, images) -> (images, value)
    shape: tuple[int, ...]  # (batch, H, W, 3)

    def rate(self, params: Any, steps: int) -> float:
        """Image-steps/s over ``steps`` calls (compile excluded)."""
        images = jax.random.uniform(jax.random.key(0), self.shape)
        images, _ = self.compiled(params, images)  # first call: transfers
        images.block_until_ready()
        start = time.perf_counter()
        for _ in range(steps):
            images, _ = self.compiled(params, images)
        images.block_until_ready()
        return self.shape[0] * steps / (time.perf_counter() - start)


#: What the model's own step climbs (:func:`limit`): ``"channel"``, each picture its own
#: channel's mean, as a render's channel objective asks; ``"mean"``, the whole layer's mean.
LIMIT_OBJECTIVES = ("channel", "mean")


def limit(
    model: Model,
    layer: str,
    batch: int,
    size: int | tuple[int, int],
    model_dtype: str = "float32",
    objective: str = "channel",
) -> Limit:
    """:class:`Limit` of ``model`` at ``layer`` for ``batch`` pictures of ``size``, the model
    computing in ``model_dtype`` as a render's does (``render(..., model_dtype=)``).

    ``objective="channel"``: picture ``i`` climbs channel ``i`` (mod the layer's channels), the
    gradient a render of channel objectives sends back into the model. ``"mean"``: the whole
    layer's mean, the limit until 2026-11-30. Its gradient is the same at every position and
    channel, which XLA turns into a cheaper backward pass when the layer is linear (a
    convolution before its ReLU); no render can get that. On ``benchmarks/vs_lucent.py``'s
    4-conv CNN (140 px, batch 32, this CPU) that limit ran 1.07-1.10x the channel limit at half
    width, and 0.96-1.03x (noise) at full width, in three runs.

    The layer's value is an output, as a render's values are: without it XLA may drop the
    layer's own forward pass when the layer is linear, since the gradient does not need it.
    Until 2026-11-30 it was not; that limit ran 1.02-1.03x faster on the 4-conv CNN.

    >>> import fvjax
    >>> model = fvjax.models.from_fn(lambda x: {"sq": x * x})
    >>> limit(model, "sq", 2, 8, "bfloat16").rate(model.params, 2) > 0
    True
    """
    if model_dtype not in step_lib.MODEL_DTYPES:
        raise ValueError(f"model_dtype must be one of {step_lib.MODEL_DTYPES}, got {model_dtype!r}")
    if objective not in LIMIT_OBJECTIVES:
        raise ValueError(f"objective must be one of {LIMIT_OBJECTIVES}, got {objective!r}")
    dtype = jnp.dtype(model_dtype)

    @jax.jit
    def step(params: Any, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        def loss(x: jax.Array) -> tuple[jax.Array, jax.Array]:
            values = model.apply(step_lib.cast_floats(params, dtype), x.astype(dtype))[layer]
            values = values.astype(jnp.float32)
            if objective == "mean":
                return values.mean(), values.mean()
            flat = values.reshape(batch, -1, values.shape[-1])
            own = jnp.arange(batch) % flat.shape[-1]
            chosen = (jnp.arange(flat.shape[-1]) == own[:, None]).astype(flat.dtype)
            means = jnp.einsum("bpc,bc->b", flat, chosen) / flat.shape[1]
            return means.sum(), means

        grad, value = jax.grad(loss, has_aux=True)(images)
        return images + grad, value

    shape = (batch, *as_size(size), 3)
    images = jax.ShapeDtypeStruct(shape, jnp.float32)
    return Limit(step.lower(abstract(model.params), images).compile(), shape)


def render_rate(model: Model, objective: Any, steps: int, size: int, **kwargs: Any) -> float:
    """Image-steps/s of one :func:`~fvjax.rendering.engine.render` call (one seed per member),
    wall time."""
    n_images = len(objective.unit_ids())
    start = time.perf_counter()
    render(model, objective, seeds=1, steps=steps, size=size, **kwargs)
    return n_images * steps / (time.perf_counter() - start)


class Comparison(NamedTuple):
    """What :func:`compare_renders` measured, per variant name (the first is the base)."""

    rate: dict[str, float]  # steady-state image-steps/s, the best round
    first: dict[str, float]  # seconds of the first call: trace, compile and one step
    flops: dict[str, float]  # XLA's flops per image-step

    def table(self, what: str = "variant") -> list[str]:
        """Markdown rows: each variant's rate, first call and flops, and both as ratios to
        the base's."""
        base = next(iter(self.rate))
        return [
            f"| {what} | image-steps/s | vs {base} | first call (s) | MFLOP per image-step "
            f"| flops vs {base} |",
            "|---|---:|---:|---:|---:|---:|",
            *(
                f"| {name} | {self.rate[name]:.1f} | {self.rate[name] / self.rate[base]:.2f} | "
                f"{self.first[name]:.2f} | {self.flops[name] / 1e6:.2f} | "
                f"{self.flops[name] / self.flops[base]:.3f} |"
                for name in self.rate
            ),
        ]


def compare_renders(
    model: Model, variants: dict[str, dict[str, Any]], steps: int, size: int, rounds: int
) -> Comparison:
    """Time ``render`` of each variant (``{name: render's keyword arguments, with its
    "objective"}``, the base first) in one run, interleaved over ``rounds``: the first call
    apart, then the best steady-state image-steps/s; with XLA's flops per image-step of each
    variant's step (:func:`fvjax.rendering.cost.lower_step`: start pictures are the render's,
    not the step's).

    >>> from fvjax.models import from_fn
    >>> from fvjax.rendering import transforms
    >>> model = from_fn(lambda x: {"rgb": x})
    >>> same = dict(objective=objectives.channel("rgb", [0, 1]), transforms=transforms.identity())
    >>> found = compare_renders(model, {"a": same, "b": same}, steps=2, size=8, rounds=1)
    >>> found.table()[2].startswith("| a |"), round(found.flops["b"] / found.flops["a"], 3)
    (True, 1.0)
    """
    first, flops = {}, {}
    common = dict(seeds=1, steps=steps, size=size, progress=False)
    for name, kwargs in variants.items():
        objective = kwargs["objective"]
        step = {k: v for k, v in kwargs.items() if k not in ("objective", "starts")}
        lowered = cost.lower_step(model, objective, size=size, **step)
        flops[name] = float(lowered.cost_analysis()["flops"]) / len(objective.unit_ids())
        first[name] = render(model, **kwargs, **common).first_call_seconds
    rate = dict.fromkeys(variants, 0.0)
    for _ in range(rounds):
        for name, kwargs in variants.items():
            n_images = len(kwargs["objective"].unit_ids())
            start = time.perf_counter()
            render(model, **kwargs, **common)
            rate[name] = max(rate[name], n_images * steps / (time.perf_counter() - start))
    return Comparison(rate, first, flops)
