"""The activation atlas's costs: exact t-SNE by the number of points, and the cells' render
step against the default step.

t-SNE (:func:`fvjax.checks.layout2d.tsne_layout`, 1000 steps, perplexity 30) on ``N`` points
drawn from ``--model``'s ``--layer`` over world images (seed 1; for each ``N`` in
``--points``): the first call (trace, compile, run) and the best of ``--rounds`` calls after.
Then, in one run, interleaved, at the same layer, size and batch: steady-state image-steps/s
of ``render`` with the default channel objective and with :func:`fvjax.checks.atlas.
cell_direction` (the atlas's objective: a whitened direction times a power of its cosine),
both behind the standard transforms, with their first calls and XLA's flops per image-step.
Prints a table and appends it to ``benchmarks/RESULTS.md`` (not with ``--no-record``).

    python benchmarks/atlas.py [--model worldnet] [--layer L] [--batch 64] [--size S]
        [--steps 16] [--rounds 2] [--points 500 1000 2000 4000] [--no-record]
"""

from __future__ import annotations

import time

import numpy as np

from fvjax import transforms as T
from fvjax.benchmarking import channel_objective, compare_renders, load_model, parse_args, record
from fvjax.benchmarking import parser as benchmark_parser
from fvjax.checks.atlas import cell_direction, sample_activations, whitening
from fvjax.checks.layout2d import tsne_layout
from fvjax.data import world_dataset


def tsne_seconds(vectors: np.ndarray, rounds: int) -> tuple[float, float]:
    """``(first call, best later call)`` of a 1000-step t-SNE of ``vectors``, in seconds."""
    start = time.perf_counter()
    tsne_layout(vectors)
    first = time.perf_counter() - start
    best = np.inf
    for _ in range(rounds):
        start = time.perf_counter()
        tsne_layout(vectors)
        best = min(best, time.perf_counter() - start)
    return first, best


def main() -> None:
    found = benchmark_parser(__doc__, batch=64)
    found.add_argument("--points", type=int, nargs="+", default=[500, 1000, 2000, 4000])
    args = parse_args(found)
    model = load_model(args.model)
    data = world_dataset(seed=1, n=max(args.points), size=args.size)
    samples = sample_activations(model, data, args.layer, max(args.points), seed=0)
    vectors = samples.vectors / np.linalg.norm(samples.vectors, axis=1, keepdims=True)
    tsne = {n: tsne_seconds(vectors[:n], args.rounds) for n in args.points}
    for n, (first, best) in tsne.items():
        print(f"t-SNE {n:5d} points: first call {first:.2f} s, then {best:.2f} s")
    channel = channel_objective(model, args.layer, args.batch, args.size)
    means = samples.vectors[np.arange(args.batch) % len(samples.vectors)]
    cells = cell_direction(args.layer, means, whitening(samples.vectors))
    transforms = T.standard(args.transform_scale)
    variants = {
        "default (channel)": dict(objective=channel, transforms=transforms),
        "atlas cells (cell_direction)": dict(objective=cells, transforms=transforms),
    }
    found = compare_renders(model, variants, args.steps, args.size, args.rounds)
    text = "\n".join(
        [
            f"model `{args.model}` layer `{args.layer}`, world images (seed 1) at {args.size} "
            f"px; t-SNE: 1000 steps, perplexity 30, on the L2-normalised activation vectors, "
            f"best of {args.rounds} after the first call.",
            "",
            "| points | t-SNE first call (s) | t-SNE (s) |",
            "|---:|---:|---:|",
            *(f"| {n} | {f:.2f} | {b:.2f} |" for n, (f, b) in tsne.items()),
            "",
            f"Render step: batch {args.batch}, {args.steps} steps, adam(0.05), fourier + "
            f"standard({args.transform_scale:g}); steady state best of {args.rounds} "
            "interleaved rounds; first call = trace + compile + one step.",
            "",
            *found.table("objective"),
        ]
    )
    record(args, "The activation atlas: t-SNE and the cells' render step", text)


if __name__ == "__main__":
    main()
