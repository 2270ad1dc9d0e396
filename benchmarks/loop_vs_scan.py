"""Host loop over a jitted step vs ``lax.scan`` inside the program, side by side.

Measures steady-state image-steps/s of ``fvjax.render`` with ``steps_per_call=1`` (a host loop
over one jitted, donated step) and ``steps_per_call=K`` (K steps scanned inside one call), at
several batch sizes, interleaved in one run so machine noise hits both alike. Compilation is
excluded: each setting is warmed up first. Prints a table and appends it to
``benchmarks/RESULTS.md``.

    python benchmarks/loop_vs_scan.py [--model worldnet] [--steps 32] [--batches 1 16 64]
"""

from __future__ import annotations

import time

import jax

import fvjax
from fvjax import zoo
from fvjax.benchmarking import append_results, machine_header
from fvjax.benchmarking import parser as benchmark_parser


def steady_rate(model, objective, n_images: int, steps: int, steps_per_call: int, size: int):
    """Image-steps per second of a warmed-up render (best of 2 runs)."""
    kwargs = dict(seeds=1, steps=steps, size=size, steps_per_call=steps_per_call)
    fvjax.render(model, objective, **kwargs)  # compile
    best = 0.0
    for _ in range(2):
        start = time.perf_counter()
        fvjax.render(model, objective, **kwargs)
        best = max(best, n_images * steps / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = benchmark_parser(__doc__, steps=32, batch=None)
    parser.add_argument("--scan", type=int, default=16, help="steps per call of the scan variant")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64])
    args = parser.parse_args()

    model = zoo.load(args.model)
    n_channels = model.layer_shapes(args.size)[args.layer][-1]
    rows = []
    for batch in args.batches:
        units = [u % n_channels for u in range(batch)]
        objective = fvjax.objectives.channel(args.layer, units)
        loop = steady_rate(model, objective, batch, args.steps, 1, args.size)
        scan = steady_rate(model, objective, batch, args.steps, args.scan, args.size)
        rows.append((batch, loop, scan, loop / scan))
        print(f"batch {batch:4d}: host loop {loop:8.1f}  scan {scan:8.1f}  ratio {loop / scan:.2f}")

    table = [
        f"model `{args.model}` layer `{args.layer}`, {args.size} px, {args.steps} steps, "
        f"default fourier + standard transforms + adam; scan = {args.scan} steps per call; "
        "steady state (compile excluded), best of 2.",
        "",
        "| batch | host loop (image-steps/s) | scan (image-steps/s) | loop / scan |",
        "|---:|---:|---:|---:|",
        *(f"| {b} | {lo:.1f} | {sc:.1f} | {r:.2f} |" for b, lo, sc, r in rows),
    ]
    text = "\n".join(table)
    print(text)
    append_results("Host loop vs lax.scan", machine_header() + "\n\n" + text)
    print(f"backend: {jax.default_backend()}")


if __name__ == "__main__":
    main()
