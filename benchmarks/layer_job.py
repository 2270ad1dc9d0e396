"""A whole-layer job end to end: total wall time, compile apart, and the ratio to the limit.

Renders ``--units`` channels of a layer (``0`` = all) x ``--seeds`` seeds x ``--steps`` steps
with the default procedure (Fourier + decorrelation, standard transforms, adam), in chunks of
``--batch`` pictures, as ``fvjax render`` does. In the same run it measures the model's own
forward + backward at the chunk's batch (at the picture size and at the larger size the
standard transforms hand the model), so "/ limit" is how close the whole job came.

The GPU figure the project wants (InceptionV1 mixed4a, all 508 channels x 4 seeds x 512
steps at 224 px):

    python benchmarks/layer_job.py --model inceptionv1 --units 0 --seeds 4 --steps 512 \\
        --size 224 --batch 256

A CPU check of the same script at a size this machine finishes:

    python benchmarks/layer_job.py --model inceptionv1 --units 16 --seeds 1 --steps 16 \\
        --size 128 --batch 8
"""

from __future__ import annotations

import time

import fvjax
from fvjax import benchmarking as bench
from fvjax.rendering.engine import plan_chunks
from fvjax.rendering.transforms import output_size, standard


def main() -> None:
    parser = bench.parser(__doc__, steps=512, batch=64)
    parser.add_argument("--units", type=int, default=0, help="first N channels (0: all)")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument(
        "--model-dtype", default="float32", choices=("float32", "bfloat16"),
        help="the model's compute dtype, in the render and in its limits",
    )  # fmt: skip
    args = bench.parse_args(parser)
    model = bench.load_model(args.model)
    n_channels = model.check_layer(args.layer, args.size)[-1]
    units = list(range(args.units or n_channels))
    objective = fvjax.objectives.channel(args.layer, units)
    transforms = standard(args.transform_scale)
    n_pictures = len(units) * args.seeds
    chunk, n_chunks = plan_chunks(n_pictures, args.batch)

    start = time.perf_counter()
    result = fvjax.render(
        model,
        objective,
        seeds=args.seeds,
        steps=args.steps,
        size=args.size,
        transforms=transforms,
        batch_size=args.batch,
        model_dtype=args.model_dtype,
        progress=True,
    )
    total = time.perf_counter() - start
    seen = output_size(transforms, (args.size, args.size))
    sizes = {"limit at the picture size": args.size}
    if tuple(seen) != (args.size, args.size):
        sizes[f"limit at the model's {seen[0]} px"] = seen
    limits = {
        name: bench.limit(model, args.layer, chunk, at, args.model_dtype)
        for name, at in sizes.items()
    }
    rates = {name: lim.rate(model.params, min(args.steps, 16)) for name, lim in limits.items()}
    steady = n_pictures * args.steps / max(total - result.first_call_seconds, 1e-9)
    overall = n_pictures * args.steps / total
    lines = [
        f"model `{args.model}` layer `{args.layer}`: {len(units)} channels x {args.seeds} seeds x "
        f"{args.steps} steps at {args.size} px = {n_pictures} pictures in {n_chunks} chunk(s) of "
        f"{chunk}; default procedure (fourier + decorrelation, standard({args.transform_scale}), "
        f"adam), the model in {args.model_dtype}; limits measured in the same run at the "
        "chunk's batch, in the same dtype.",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| total wall time (s) | {total:.1f} |",
        f"| first call, compile included (s) | {result.first_call_seconds:.1f} |",
        f"| image-steps/s, whole job | {overall:.1f} |",
        f"| image-steps/s, first call excluded | {steady:.1f} |",
        *(f"| {name} (image-steps/s) | {rate:.1f} |" for name, rate in rates.items()),
        *(
            f"| whole job (first call excluded) / {name} | {steady / rate:.2f} |"
            for name, rate in rates.items()
        ),  # fmt: skip
    ]
    bench.record(args, "A whole layer, end to end", "\n".join(lines))


if __name__ == "__main__":
    main()
