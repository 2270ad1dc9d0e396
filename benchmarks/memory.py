"""How many pictures fit on a device: a render step's memory per picture, per model, from XLA's
buffer plan of the compiled step (nothing is run, so it needs no accelerator).

For each model (at its classic layer and size), float32 vs bfloat16 model compute and remat off
vs on: :func:`fvjax.engine.fit_memory` compiles one step of the default render (Fourier +
decorrelation, ``standard(scale)``, adam) at two batch sizes and fits ``bytes = fixed +
per_image * batch``; the table gives the bytes per picture and the largest batch for each
budget (``--fraction`` of the device's memory: JAX's GPU allocator takes 75% by default, see
``XLA_PYTHON_CLIENT_MEM_FRACTION``). Use that batch as ``render(..., batch_size=B)``.

On the CPU backend these are XLA CPU's figures: an estimate for a GPU (other fusions, cuDNN
workspaces) until this script is run there, where it reports the GPU's own plan. Prints a table
and appends it to ``benchmarks/RESULTS.md`` (not with ``--no-record``).

    python benchmarks/memory.py [--models worldnet inceptionv1 resnet50 vgg16] [--size S]
        [--batches 4 16] [--budgets 80 141 24] [--fraction 0.75] [--no-record]
"""

from __future__ import annotations

import argparse
import time

import jax

from fvjax import engine
from fvjax import transforms as T
from fvjax.benchmarking import MODEL_DEFAULTS, channel_objective, load_model, record

SETTINGS = (("float32", False), ("float32", True), ("bfloat16", False), ("bfloat16", True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["worldnet", "inceptionv1", "resnet50",
                                                         "vgg16"])  # fmt: skip
    parser.add_argument("--size", type=int, help="picture size; default: each model's own")
    parser.add_argument("--layer", help="objective layer (one model only); default: classic")
    parser.add_argument("--batches", type=int, nargs=2, default=[4, 16], help="the fit's points")
    parser.add_argument("--budgets", type=float, nargs="+", default=[80, 141, 24], help="GB")
    parser.add_argument("--fraction", type=float, default=0.75, help="usable part of a budget")
    parser.add_argument("--transform-scale", type=float, default=1.0)
    parser.add_argument("--no-record", action="store_true", help="print only")
    args = parser.parse_args()
    if args.layer and len(args.models) > 1:
        parser.error("--layer names one model's layer: give one model")

    transforms = T.standard(args.transform_scale)
    rows, skipped = [], []
    for name in args.models:
        model = load_model(name, missing_ok=True)
        if model is None:
            skipped.append(name)
            continue
        layer, size = MODEL_DEFAULTS.get(name, (None, 128))
        layer, size = args.layer or layer, args.size or size
        objective = channel_objective(model, layer, 1, size)
        for dtype, remat in SETTINGS:
            start = time.perf_counter()
            fit = engine.fit_memory(
                model, objective, tuple(args.batches), size=size, transforms=transforms,
                model_dtype=dtype, remat=remat,
            )  # fmt: skip
            seconds = (time.perf_counter() - start) / 2
            rows.append((name, layer, size, dtype, remat, fit, seconds))
            largest = [fit.largest_batch(args.fraction * gb * 1e9) for gb in args.budgets]
            print(
                f"{name} {layer} {size}px {dtype} remat={remat}: {fit.per_image_bytes / 1e6:.1f}"
                f" MB/picture + {fit.fixed_bytes / 1e6:.1f} MB; largest {largest} "
                f"({seconds:.1f} s per compile)",
                flush=True,
            )

    backend = jax.default_backend()
    budgets = " | ".join(f"{gb:g} GB" for gb in args.budgets)
    lines = [
        f"XLA {backend} backend's buffer plan of one compiled render step "
        "(`compiled.memory_analysis()`: arguments + outputs not written over donated inputs + "
        f"temporaries), default fourier + `standard({args.transform_scale:g})` + adam, fitted "
        f"as fixed + per picture x batch through batches {args.batches[0]} and "
        f"{args.batches[1]}. Largest batch for {args.fraction:g} x the budget (1 GB = 1e9 "
        "bytes).",
    ]
    if backend == "cpu":
        lines[0] += (
            " **These are CPU compile-time figures: an estimate for a GPU, whose fusions and "
            "convolution algorithms (cuDNN workspaces) differ, until measured there.** XLA CPU "
            "upcasts bfloat16 convolutions to float32, so its bfloat16 rows understate what "
            "bfloat16 saves on a GPU; and it merges much of a rematerialised forward pass back "
            "into the original, so its remat rows cannot show what remat saves. (`remat=True` "
            "wraps the whole model in one `jax.checkpoint`: its backward pass recomputes and "
            "holds every activation at once, so even on a GPU it should not lower the peak; "
            "per-block checkpoints would.)"
        )
    lines += [
        "",
        f"| model | layer | size | model dtype | remat | fixed MB | MB / picture | vs float32 "
        f"| {budgets} | s / compile |",
        "|---|---|---:|---|---|---:|---:|---:|" + "---:|" * len(args.budgets) + "---:|",
    ]
    base = {}
    for name, layer, size, dtype, remat, fit, seconds in rows:
        base.setdefault(name, fit.per_image_bytes)
        largest = " | ".join(
            str(fit.largest_batch(args.fraction * gb * 1e9)) for gb in args.budgets
        )
        lines.append(
            f"| {name} | `{layer}` | {size} | {dtype} | {'on' if remat else 'off'} | "
            f"{fit.fixed_bytes / 1e6:.1f} | {fit.per_image_bytes / 1e6:.2f} | "
            f"{fit.per_image_bytes / base[name]:.2f} | {largest} | {seconds:.1f} |"
        )
    if skipped:
        lines += ["", f"Not importable in this checkout: {', '.join(skipped)}."]
    record(args, "Memory: the largest batch per model", "\n".join(lines))


if __name__ == "__main__":
    main()
