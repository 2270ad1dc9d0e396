"""bfloat16 model compute vs float32: speed, and the effect on ground-truth recovery.

In one run, interleaved: (1) steady-state image-steps/s of rendering the shipped model's layer
with ``model_dtype="float32"`` and ``"bfloat16"`` (the parameterization, optimizer and objective
stay float32); (2) the fraction of the analytic optimum a planted linear filter's centre neuron
reaches, and the orientation error on planted Gabor channels, under each dtype. Prints a table
and appends it to ``benchmarks/RESULTS.md`` (not with ``--no-record``). ``--model`` changes the
speed part only: the ground truth is planted in its own small models.

    python benchmarks/precision.py [--model worldnet|inceptionv1|resnet50|vgg16] [--layer L]
        [--batch 64] [--size S] [--steps 16] [--rounds 2] [--no-record]
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

import fvjax
from fvjax import objectives as O
from fvjax import transforms as T
from fvjax.benchmarking import channel_objective, load_model, parse_args, record
from fvjax.benchmarking import parser as benchmark_parser
from fvjax.models.zoo import planted

DTYPES = ("float32", "bfloat16")


def speeds(model, args) -> dict[str, float]:
    """Image-steps/s per model dtype: compiled first, then interleaved rounds, best kept."""
    objective = channel_objective(model, args.layer, args.batch, args.size)
    transforms = T.standard(args.transform_scale)
    kwargs = dict(seeds=1, steps=args.steps, size=args.size, transforms=transforms)
    for dtype in DTYPES:
        fvjax.render(model, objective, model_dtype=dtype, **kwargs)  # compile
    best = dict.fromkeys(DTYPES, 0.0)
    for _ in range(args.rounds):
        for dtype in DTYPES:
            start = time.perf_counter()
            fvjax.render(model, objective, model_dtype=dtype, **kwargs)
            rate = args.batch * args.steps / (time.perf_counter() - start)
            best[dtype] = max(best[dtype], rate)
    return best


def linear_fraction(dtype: str) -> float:
    """Mean fraction of the analytic optimum over two planted filters (pixel param, 256 steps)."""
    first = planted.linear_filter(0, size=5)
    fractions = []
    for key in (0, 1):
        model = dataclasses.replace(first, params=planted.linear_filter(key, size=5).params)
        best = planted.linear_optimum(model, 32)
        result = fvjax.render(
            model, O.neuron(planted.LINEAR_LAYER, [0]), seeds=2, steps=256, size=32,
            param=fvjax.param.pixel(), transforms=T.identity(), model_dtype=dtype,
        )  # fmt: skip
        fractions.append(float(result.activations.mean() / best.value))
    return float(np.mean(fractions))


def orientation_error(dtype: str) -> tuple[float, float]:
    """(worst, median) orientation error in degrees over 4 Gabor channels x 3 seeds."""
    model = planted.oriented_filters(wavelength=4.0)
    result = fvjax.render(
        model, O.channel(planted.ORIENTATION_LAYER, range(4)), seeds=3, steps=64, size=32,
        transforms=T.standard(0.25), model_dtype=dtype,
    )  # fmt: skip
    found = planted.dominant_orientation(result.images)
    error = planted.angle_difference(found.degrees, np.asarray(planted.ORIENTATIONS)[:, None])
    return float(error.max()), float(np.median(error))


def main() -> None:
    args = parse_args(benchmark_parser(__doc__))
    model = load_model(args.model)
    rates = speeds(model, args)
    rows = {}
    for dtype in DTYPES:
        rate = rates[dtype]
        worst, median = orientation_error(dtype)
        rows[dtype] = (rate, linear_fraction(dtype), worst, median)
        print(dtype, rows[dtype])
    base = rows["float32"][0]
    text = "\n".join(
        [
            f"speed: model `{args.model}` layer `{args.layer}`, batch {args.batch}, "
            f"{args.size} px, {args.steps} steps, default fourier + "
            f"standard({args.transform_scale:g}) + adam (compile excluded, best of "
            f"{args.rounds} interleaved rounds). Ground truth: planted linear filter (pixel "
            "param, 256 steps, no transforms, 32 px, mean of 2 filters x 2 seeds) and Gabor "
            "channels (64 steps, standard(0.25), 4 units x 3 seeds).",
            "",
            "| model dtype | image-steps/s | vs float32 | fraction of linear optimum "
            "| orientation error worst / median (deg) |",
            "|---|---:|---:|---:|---:|",
            *(
                f"| {d} | {r:.1f} | {r / base:.2f} | {f:.3f} | {w:.1f} / {m:.1f} |"
                for d, (r, f, w, m) in rows.items()
            ),
        ]
    )
    record(args, "bfloat16 model compute", text)


if __name__ == "__main__":
    main()
