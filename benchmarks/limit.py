"""How close fvjax gets to the model's own speed limit, and what batching buys over the old way.

In one run, interleaved (rounds of every variant, best round kept), at batch ``B``:

* **limit**: the model's own jitted forward + backward-to-input at ``S`` px, each picture
  climbing its own channel (``benchmarking.limit``): the most any renderer could do per step;
* **limit at S' px**: the same at the size the transforms hand the model (``standard()`` pads
  12 and crops 12 of it: 128 px pictures reach the model at 140 px, 1.2x the pixels), the most
  a render *with those transforms* could do; and, beside it, that size's limit on the whole
  layer's mean (the limit until 2026-11-30: XLA makes a linear layer's backward cheaper for
  it, which no render of channels can get);
* **fvjax minimal**: ``render`` with the pixel parameterization and no transforms;
* **fvjax default**: ``render`` with Fourier + colour decorrelation + ``standard(scale)``;
* **old way**: ``--old-units`` units rendered one at a time (batch 1 per optimization, as
  per-neuron tools do), default settings.

Rates are image-steps/s with compilation excluded. Prints a table and appends it to
``benchmarks/RESULTS.md`` (not with ``--no-record``).

    python benchmarks/limit.py [--model worldnet|inceptionv1|resnet50|vgg16] [--layer L]
        [--batch 64] [--size S] [--steps 32] [--rounds 2] [--old-units 4] [--no-record]
"""

from __future__ import annotations

from fvjax import objectives as O
from fvjax import param as P
from fvjax import transforms as T
from fvjax.benchmarking import (
    channel_objective,
    limit,
    load_model,
    parse_args,
    record,
    render_rate,
)
from fvjax.benchmarking import parser as benchmark_parser


def main() -> None:
    parser = benchmark_parser(__doc__, steps=32)
    parser.add_argument("--old-units", type=int, default=4, help="units rendered one at a time")
    args = parse_args(parser)

    model = load_model(args.model)
    batched = channel_objective(model, args.layer, args.batch, args.size)
    transforms = T.standard(args.transform_scale)
    seen = T.output_size(transforms, (args.size, args.size))
    minimal = dict(param=P.pixel(), transforms=T.identity())
    singles = [O.channel(args.layer, [u]) for u in range(args.old_units)]
    at_size = limit(model, args.layer, args.batch, args.size)
    at_seen = limit(model, args.layer, args.batch, seen)
    on_mean = limit(model, args.layer, args.batch, seen, objective="mean")

    def old_way() -> float:
        rates = [
            render_rate(model, objective, args.steps, args.size, transforms=transforms)
            for objective in singles
        ]
        return len(rates) / sum(1 / r for r in rates)

    names = {
        "limit": f"limit (model fwd+bwd, {args.size} px)",
        "seen": f"limit at {seen[0]} px (what the transforms feed it)",
        "mean": f"limit at {seen[0]} px on the layer's mean (before 2026-11-30)",
    }
    variants = {
        names["limit"]: lambda: at_size.rate(model.params, args.steps),
        names["seen"]: lambda: at_seen.rate(model.params, args.steps),
        names["mean"]: lambda: on_mean.rate(model.params, args.steps),
        "fvjax minimal": lambda: render_rate(
            model, batched, args.steps, args.size, **minimal
        ),  # fmt: skip
        "fvjax default": lambda: render_rate(
            model, batched, args.steps, args.size, transforms=transforms
        ),
        "old way (1 unit per run)": old_way,
    }
    for run in variants.values():  # compile everything first
        run()
    best = {name: 0.0 for name in variants}
    for _ in range(args.rounds):
        for name, run in variants.items():
            best[name] = max(best[name], run())
            print(f"{name:50s} {best[name]:9.1f} image-steps/s", flush=True)
    base = best[names["limit"]]
    default = best["fvjax default"]
    lines = [
        f"model `{args.model}` layer `{args.layer}`, batch {args.batch}, {args.size} px, "
        f"{args.steps} steps, channel objective, adam, transforms "
        f"`standard({args.transform_scale:g})` ({args.size} px reach the model at {seen[0]} "
        f"px); old way: {args.old_units} units one at a time; best of {args.rounds} "
        "interleaved rounds, compile excluded.",
        "",
        "| variant | image-steps/s | / limit | fvjax default / this |",
        "|---|---:|---:|---:|",
        *(
            f"| {name} | {rate:.1f} | {rate / base:.2f} | {default / rate:.2f} |"
            for name, rate in best.items()
        ),
    ]
    record(args, "fvjax against the limit and the old way", "\n".join(lines))


if __name__ == "__main__":
    main()
