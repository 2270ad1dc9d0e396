"""Where the time of a render step goes: each parameterization and transform switched on alone.

In one run, interleaved, at batch ``B``: image-steps/s of ``render`` with the pixel
parameterization and no transforms (the floor), then with the Fourier parameterization, each
transform alone, and the full default stack. Prints a table and appends it to
``benchmarks/RESULTS.md``.

    python benchmarks/breakdown.py [--model worldnet] [--layer block3/conv] [--batch 64]
"""

from __future__ import annotations

import time

import fvjax
from fvjax import objectives as O
from fvjax import param as P
from fvjax import transforms as T
from fvjax import zoo
from fvjax.benchmarking import append_results, machine_header
from fvjax.benchmarking import parser as benchmark_parser


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    model = zoo.load(args.model)
    n_channels = model.layer_shapes(args.size)[args.layer][-1]
    objective = O.channel(args.layer, [u % n_channels for u in range(args.batch)])
    scale = args.size / 128
    stack = T.standard(scale)
    pads = T.compose(T.pad(stack.pad), T.jitter(stack.jitter[0]), T.jitter(stack.jitter[1]))
    cases = {
        "pixel, no transforms (floor)": dict(param=P.pixel(), transforms=T.identity()),
        "fourier + decorrelation": dict(param=P.fourier(), transforms=T.identity()),
        "pixel + pad & jitters": dict(param=P.pixel(), transforms=pads),
        "pixel + random scale": dict(param=P.pixel(), transforms=T.random_scale(stack.scales)),
        "pixel + random rotate": dict(param=P.pixel(), transforms=T.random_rotate(stack.angles)),
        "pixel + standard (fused)": dict(param=P.pixel(), transforms=stack),
        "fourier + the 4 transforms unfused": dict(
            param=P.fourier(),
            transforms=T.compose(
                T.pad(stack.pad),
                T.jitter(stack.jitter[0]),
                T.random_scale(stack.scales),
                T.random_rotate(stack.angles),
                T.jitter(stack.jitter[1]),
            ),  # fmt: skip
        ),
        "fourier + standard (default)": dict(param=P.fourier(), transforms=stack),
    }
    kwargs = dict(seeds=1, steps=args.steps, size=args.size)
    for case in cases.values():
        fvjax.render(model, objective, **kwargs, **case)  # compile
    best = {name: 0.0 for name in cases}
    for _ in range(args.rounds):
        for name, case in cases.items():
            start = time.perf_counter()
            fvjax.render(model, objective, **kwargs, **case)
            best[name] = max(best[name], args.batch * args.steps / (time.perf_counter() - start))
    floor = best["pixel, no transforms (floor)"]
    text = "\n".join(
        [
            f"model `{args.model}` layer `{args.layer}`, batch {args.batch}, {args.size} px, "
            f"{args.steps} steps, adam, transforms `standard({scale:g})`; best of "
            f"{args.rounds} interleaved rounds, compile excluded.",
            "",
            "| setting | image-steps/s | / floor |",
            "|---|---:|---:|",
            *(f"| {name} | {rate:.1f} | {rate / floor:.2f} |" for name, rate in best.items()),
        ]
    )
    print(text)
    append_results("Where a render step's time goes", machine_header() + "\n\n" + text)


if __name__ == "__main__":
    main()
