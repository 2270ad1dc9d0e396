"""Host loop over a jitted step vs ``lax.scan`` inside the program, side by side.

Measures steady-state image-steps/s of ``fvjax.render`` with ``steps_per_call=1`` (a host loop
over one jitted, donated step) and ``steps_per_call=K`` (K steps scanned inside one call), at
several batch sizes, interleaved in one run so machine noise hits both alike. Compilation is
excluded: each setting is warmed up first; the best of ``--rounds`` runs is kept. Prints a
table and appends it to ``benchmarks/RESULTS.md`` (not with ``--no-record``).

    python benchmarks/loop_vs_scan.py [--model worldnet|inceptionv1|resnet50|vgg16] [--layer L]
        [--size S] [--steps 32] [--scan 16] [--batches 1 16 64] [--rounds 2] [--no-record]
"""

from __future__ import annotations

import time

import fvjax
from fvjax import transforms as T
from fvjax.benchmarking import channel_objective, load_model, parse_args, record
from fvjax.benchmarking import parser as benchmark_parser


def steady_rate(model, objective, args, steps_per_call: int) -> float:
    """Image-steps per second of a warmed-up render (best of ``args.rounds`` runs)."""
    kwargs = dict(
        seeds=1, steps=args.steps, size=args.size, steps_per_call=steps_per_call,
        transforms=T.standard(args.transform_scale),
    )  # fmt: skip
    fvjax.render(model, objective, **kwargs)  # compile
    best = 0.0
    n_images = len(objective.unit_ids())
    for _ in range(args.rounds):
        start = time.perf_counter()
        fvjax.render(model, objective, **kwargs)
        best = max(best, n_images * args.steps / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = benchmark_parser(__doc__, steps=32, batch=None)
    parser.add_argument("--scan", type=int, default=16, help="steps per call of the scan variant")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64])
    args = parse_args(parser)

    model = load_model(args.model)
    rows = []
    for batch in args.batches:
        objective = channel_objective(model, args.layer, batch, args.size)
        loop = steady_rate(model, objective, args, 1)
        scan = steady_rate(model, objective, args, args.scan)
        rows.append((batch, loop, scan, loop / scan))
        print(f"batch {batch:4d}: host loop {loop:8.1f}  scan {scan:8.1f}  ratio {loop / scan:.2f}")

    table = [
        f"model `{args.model}` layer `{args.layer}`, {args.size} px, {args.steps} steps, "
        f"default fourier + standard({args.transform_scale:g}) + adam; scan = {args.scan} steps "
        f"per call; steady state (compile excluded), best of {args.rounds}.",
        "",
        "| batch | host loop (image-steps/s) | scan (image-steps/s) | loop / scan |",
        "|---:|---:|---:|---:|",
        *(f"| {b} | {lo:.1f} | {sc:.1f} | {r:.2f} |" for b, lo, sc, r in rows),
    ]
    record(args, "Host loop vs lax.scan", "\n".join(table))


if __name__ == "__main__":
    main()
