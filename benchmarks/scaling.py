"""Scaling with batch size and image size, compile time reported apart from steady state.

For each setting: the first render in a fresh program cache (compile + run) and a second,
identical one (run only); "compile" is their difference, "steady" the second's image-steps/s.
Default settings (Fourier, standard transforms scaled to the size, adam). Prints a table and
appends it to ``benchmarks/RESULTS.md``.

    python benchmarks/scaling.py [--model worldnet] [--batches 1 8 32 128] [--sizes 32 64 128]
"""

from __future__ import annotations

import time

import jax

import fvjax
from fvjax import objectives as O
from fvjax import transforms as T
from fvjax import zoo
from fvjax.benchmarking import append_results, machine_header
from fvjax.benchmarking import parser as benchmark_parser


def measure(model, layer: str, batch: int, size: int, steps: int) -> tuple[float, float]:
    """``(compile seconds, steady image-steps/s)`` of one setting."""
    n_channels = model.layer_shapes(size)[layer][-1]
    objective = O.channel(layer, [u % n_channels for u in range(batch)])
    kwargs = dict(seeds=1, steps=steps, size=size, transforms=T.standard(size / 128))
    jax.clear_caches()
    start = time.perf_counter()
    fvjax.render(model, objective, **kwargs)
    first = time.perf_counter() - start
    start = time.perf_counter()
    fvjax.render(model, objective, **kwargs)
    second = time.perf_counter() - start
    return first - second, batch * steps / second


def main() -> None:
    parser = benchmark_parser(__doc__, steps=8, batch=32)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    args = parser.parse_args()
    model = zoo.load(args.model)
    rows = []
    for batch in args.batches:
        rows.append(("batch", batch, args.size, *measure(model, args.layer, batch, args.size,
                                                          args.steps)))  # fmt: skip
        print(rows[-1])
    for size in args.sizes:
        rows.append(("size", args.batch, size, *measure(model, args.layer, args.batch, size,
                                                         args.steps)))  # fmt: skip
        print(rows[-1])
    text = "\n".join(
        [
            f"model `{args.model}` layer `{args.layer}`, {args.steps} steps, default fourier + "
            "standard(size/128) + adam, steps_per_call default. compile = first render minus an "
            "identical second one.",
            "",
            "| varied | batch | size | compile (s) | steady image-steps/s | per image vs batch 1 |",
            "|---|---:|---:|---:|---:|---:|",
        ]
    )
    base = next((r[4] for r in rows if r[0] == "batch" and r[1] == 1), None)
    for varied, batch, size, compile_s, rate in rows:
        relative = f"{rate / base:.2f}" if base and varied == "batch" else "-"
        text += f"\n| {varied} | {batch} | {size} | {compile_s:.1f} | {rate:.1f} | {relative} |"
    print(text)
    append_results("Scaling with batch and image size", machine_header() + "\n\n" + text)


if __name__ == "__main__":
    main()
