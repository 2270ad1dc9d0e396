"""Scaling with batch size and image size, compile time reported apart from steady state.

For each setting: the first render in a fresh program cache (compile + run) and ``--rounds``
identical ones (run only); "compile" is the first's time minus the best of the others, "steady"
the best one's image-steps/s. Default settings (Fourier, adam, the standard transforms scaled
to the size: ``standard(transform_scale * size / 128)``). Batches vary at ``--size``, sizes at
``--batch``. Prints a table and appends it to ``benchmarks/RESULTS.md`` (not with
``--no-record``).

    python benchmarks/scaling.py [--model worldnet|inceptionv1|resnet50|vgg16] [--layer L]
        [--batches 1 8 32 128] [--sizes S/2 S 2S] [--size S] [--batch 32] [--steps 8]
        [--rounds 1] [--no-record]
"""

from __future__ import annotations

import time

import jax

import fvjax
from fvjax import transforms as T
from fvjax.benchmarking import channel_objective, load_model, parse_args, record
from fvjax.benchmarking import parser as benchmark_parser


def measure(model, args, batch: int, size: int) -> tuple[float, float]:
    """``(compile seconds, steady image-steps/s)`` of one setting."""
    objective = channel_objective(model, args.layer, batch, size)
    transforms = T.standard(args.transform_scale * size / 128)
    kwargs = dict(seeds=1, steps=args.steps, size=size, transforms=transforms)
    jax.clear_caches()
    start = time.perf_counter()
    fvjax.render(model, objective, **kwargs)
    first = time.perf_counter() - start
    runs = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        fvjax.render(model, objective, **kwargs)
        runs.append(time.perf_counter() - start)
    return first - min(runs), batch * args.steps / min(runs)


def main() -> None:
    parser = benchmark_parser(__doc__, steps=8, batch=32)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--sizes", type=int, nargs="+", help="default: size/2, size, 2*size")
    parser.set_defaults(rounds=1)
    args = parse_args(parser)
    sizes = args.sizes or [args.size // 2, args.size, 2 * args.size]
    model = load_model(args.model)
    rows = []
    for varied, batch, size in [("batch", b, args.size) for b in args.batches] + [
        ("size", args.batch, s) for s in sizes
    ]:
        rows.append((varied, batch, size, *measure(model, args, batch, size)))
        print(rows[-1], flush=True)
    text = "\n".join(
        [
            f"model `{args.model}` layer `{args.layer}`, {args.steps} steps, default fourier + "
            f"standard({args.transform_scale:g} * size/128) + adam, steps_per_call default. "
            f"compile = first render minus the best of {args.rounds} identical ones (steady).",
            "",
            "| varied | batch | size | compile (s) | steady image-steps/s | per image vs batch 1 |",
            "|---|---:|---:|---:|---:|---:|",
        ]
    )
    base = next((r[4] for r in rows if r[0] == "batch" and r[1] == 1), None)
    for varied, batch, size, compile_s, rate in rows:
        relative = f"{rate / base:.2f}" if base and varied == "batch" else "-"
        text += f"\n| {varied} | {batch} | {size} | {compile_s:.1f} | {rate:.1f} | {relative} |"
    record(args, "Scaling with batch and image size", text)


if __name__ == "__main__":
    main()
