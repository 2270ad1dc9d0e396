"""How many pictures fit on a device, and what rematerialisation saves: a render step's memory
per picture, per model, from the compiled step's buffer plan and from what autodiff keeps for
the backward pass (nothing is run, so it needs no accelerator).

For each model (at its classic layer and size), float32 and bfloat16 model compute, and each
``remat`` mode (``none``, ``convs``, ``blocks``):

- *XLA plan*: :func:`fvjax.cost.fit_memory` compiles one step of the default render (Fourier +
  decorrelation, ``standard(scale)``, adam) at two batch sizes and fits ``bytes = fixed +
  per_picture * batch``;
- *kept*: :func:`fvjax.cost.residual_bytes`, what the backward pass keeps from the forward
  pass per picture, as JAX hands it to XLA (the same on every backend);
- *flops*: the step's work before XLA's optimizations (:func:`fvjax.cost.lower_step`), so the
  recomputation is counted.

XLA's CPU compiler drops the barriers that keep a recomputed forward pass apart and merges it
back into the first, so on CPU the remat rows' plan would equal the ``none`` plan: it is not
compiled there, and their largest batch is left to a GPU run (``kept`` overstates what XLA
keeps without remat, so subtracting it gives no safe estimate). On a GPU every row is the GPU's
own plan. The largest batch is for ``--fraction`` of each budget (JAX's GPU allocator takes 75%
by default, ``XLA_PYTHON_CLIENT_MEM_FRACTION``); use it as ``render(..., batch_size=B)``.
Prints a table and appends it to ``benchmarks/RESULTS.md`` (not with ``--no-record``).

    python benchmarks/memory.py [--models worldnet inceptionv1 resnet50 vgg16 vit_b_16] [--size S]
        [--batches 4 16] [--budgets 80 141 24] [--fraction 0.75] [--no-record]
"""

from __future__ import annotations

import argparse
import time
from typing import NamedTuple

import jax

from fvjax import transforms as T
from fvjax.benchmarking import MODEL_DEFAULTS, channel_objective, load_model, record
from fvjax.rendering import cost, step


class Row(NamedTuple):
    model: str
    layer: str
    size: int
    dtype: str
    remat: str
    plan: cost.MemoryFit | None  # None: not compiled (remat on the CPU backend)
    kept: float  # bytes per picture kept for the backward pass
    flops: float  # per picture, before XLA's optimizations
    seconds: float  # per compile

    def largest(self, budgets_gb: list[float], fraction: float) -> list[int | None]:
        if self.plan is None:
            return [None] * len(budgets_gb)
        return [self.plan.largest_batch(fraction * gb * 1e9) for gb in budgets_gb]


def measure(model, name, layer, size, dtype, remat, args, transforms) -> Row:
    settings = dict(size=size, transforms=transforms, model_dtype=dtype, remat=remat)
    objective = channel_objective(model, layer, 1, size)
    small, large = args.batches
    kept = [cost.residual_bytes(model, objective, b, **settings) for b in (small, large)]
    kept_per_picture = (kept[1] - kept[0]) / (large - small)
    flops = cost.lower_step(model, objective, batch=small, **settings).cost_analysis()["flops"]
    plan, seconds = None, 0.0
    if remat == "none" or jax.default_backend() != "cpu":
        start = time.perf_counter()
        plan = cost.fit_memory(model, objective, (small, large), **settings)
        seconds = (time.perf_counter() - start) / 2
    return Row(name, layer, size, dtype, remat, plan, kept_per_picture, flops / small, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["worldnet", "inceptionv1", "resnet50",
                                                         "vgg16", "vit_b_16"])  # fmt: skip
    parser.add_argument("--size", type=int, help="picture size; default: each model's own")
    parser.add_argument("--layer", help="objective layer (one model only); default: classic")
    parser.add_argument("--batches", type=int, nargs=2, default=[4, 16], help="the fit's points")
    parser.add_argument("--budgets", type=float, nargs="+", default=[80, 141, 24], help="GB")
    parser.add_argument("--fraction", type=float, default=0.75, help="usable part of a budget")
    parser.add_argument("--transform-scale", type=float, default=1.0)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
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
        for dtype in args.dtypes:
            for remat in step.REMAT:
                if remat == "blocks" and model.remat_apply is None:
                    continue
                row = measure(model, name, layer, size, dtype, remat, args, transforms)
                rows.append(row)
                plan = "" if row.plan is None else f", plan {row.plan.per_image_bytes / 1e6:.1f}"
                print(
                    f"{name} {layer} {size}px {dtype} remat={remat}: kept "
                    f"{row.kept / 1e6:.1f} MB/picture{plan}, {row.flops / 1e9:.2f} GFLOP/picture; "
                    f"largest {row.largest(args.budgets, args.fraction)}",
                    flush=True,
                )

    backend = jax.default_backend()
    budgets = " | ".join(f"{gb:g} GB" for gb in args.budgets)
    text = (
        f"One render step, default fourier + `standard({args.transform_scale:g})` + adam. "
        "*Plan*: XLA's buffer plan of the compiled step (arguments + outputs not written over "
        "donated inputs + temporaries), fitted as fixed + per picture x batch through batches "
        f"{args.batches[0]} and {args.batches[1]}. *Kept*: what the backward pass keeps from the "
        "forward pass per picture, as JAX hands the program to XLA (`cost.residual_bytes`; the "
        "same on every backend, an upper bound for `none`, where XLA may fuse a few cheap values "
        "away). *Flops*: the step's work before XLA's optimizations, recomputation included. "
        f"Largest batch for {args.fraction:g} x the budget (1 GB = 1e9 bytes)."
    )
    if backend == "cpu":
        text += (
            " **CPU figures: XLA CPU merges a recomputed forward pass back into the first, so the "
            "remat rows are not compiled here and their largest batch needs a GPU run of this "
            "script. The plans estimate a GPU's (other fusions, cuDNN workspaces), and XLA CPU "
            "upcasts bfloat16 convolutions to float32.**"
        )
    lines = [
        text,
        "",
        f"| model | layer | size | model dtype | remat | plan MB / picture | kept MB / picture "
        f"| kept vs none | flops vs none | {budgets} | s / compile |",
        "|---|---|---:|---|---|---:|---:|---:|---:|" + "---:|" * len(args.budgets) + "---:|",
    ]
    base: dict[tuple[str, str], Row] = {}
    for row in rows:
        none = base.setdefault((row.model, row.dtype), row)
        largest = " | ".join(
            "—" if n is None else str(n) for n in row.largest(args.budgets, args.fraction)
        )
        plan = "—" if row.plan is None else f"{row.plan.per_image_bytes / 1e6:.2f}"
        seconds = "—" if row.plan is None else f"{row.seconds:.1f}"
        lines.append(
            f"| {row.model} | `{row.layer}` | {row.size} | {row.dtype} | {row.remat} | {plan} | "
            f"{row.kept / 1e6:.2f} | {row.kept / none.kept:.2f} | {row.flops / none.flops:.2f} | "
            f"{largest} | {seconds} |"
        )
    if skipped:
        lines += ["", f"Not importable in this checkout: {', '.join(skipped)}."]
    record(args, "Memory: the largest batch per model, and what remat saves", "\n".join(lines))


if __name__ == "__main__":
    main()
