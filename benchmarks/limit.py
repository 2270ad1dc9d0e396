"""How close fvjax gets to the model's own speed limit, and what batching buys over the old way.

In one run, interleaved (rounds of every variant, best round kept), at batch ``B``:

* **limit**: the model's own jitted forward + backward-to-input (images/s): the most any
  renderer could do per step;
* **fvjax minimal**: ``render`` with the pixel parameterization and no transforms;
* **fvjax default**: ``render`` with Fourier + colour decorrelation + the standard transforms;
* **old way**: the same units rendered one at a time (batch 1 per optimization, as
  per-neuron tools do), default settings.

Rates are image-steps/s with compilation excluded. Prints a table and appends it to
``benchmarks/RESULTS.md``.

    python benchmarks/limit.py [--model worldnet] [--layer block3/conv] [--batch 64] [--size 64]
"""

from __future__ import annotations

import time

import jax

import fvjax
from fvjax import objectives as O
from fvjax import param as P
from fvjax import transforms as T
from fvjax import zoo
from fvjax.benchmarking import append_results, machine_header
from fvjax.benchmarking import parser as benchmark_parser


def limit_rate(model, layer: str, batch: int, size: int, steps: int) -> float:
    """Images/s of the model's jitted forward + backward to the input, weights as arguments."""

    @jax.jit
    def step(params, images):
        def loss(x):
            return model.apply(params, x)[layer].mean()

        return images + jax.grad(loss)(images)

    images = jax.random.uniform(jax.random.key(0), (batch, size, size, 3))
    images = step(model.params, images).block_until_ready()  # compile
    start = time.perf_counter()
    for _ in range(steps):
        images = step(model.params, images)
    images.block_until_ready()
    return batch * steps / (time.perf_counter() - start)


def render_rate(model, objective, n_images: int, steps: int, size: int, **kwargs) -> float:
    start = time.perf_counter()
    fvjax.render(model, objective, seeds=1, steps=steps, size=size, **kwargs)
    return n_images * steps / (time.perf_counter() - start)


def main() -> None:
    parser = benchmark_parser(__doc__, steps=32)
    parser.add_argument("--old-units", type=int, default=4, help="units rendered one at a time")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    model = zoo.load(args.model)
    n_channels = model.layer_shapes(args.size)[args.layer][-1]
    units = [u % n_channels for u in range(args.batch)]
    batched = O.channel(args.layer, units)
    minimal = dict(param=P.pixel(), transforms=T.identity())
    singles = [O.channel(args.layer, [u]) for u in range(args.old_units)]

    def old_way() -> float:
        start = time.perf_counter()
        for objective in singles:
            fvjax.render(model, objective, seeds=1, steps=args.steps, size=args.size)
        return args.old_units * args.steps / (time.perf_counter() - start)

    variants = {
        "limit (model fwd+bwd)": lambda: limit_rate(
            model, args.layer, args.batch, args.size, args.steps
        ),
        "fvjax minimal": lambda: render_rate(
            model, batched, args.batch, args.steps, args.size, **minimal
        ),
        "fvjax default": lambda: render_rate(model, batched, args.batch, args.steps, args.size),
        "old way (1 unit per run)": old_way,
    }
    for run in variants.values():  # compile everything first
        run()
    best = {name: 0.0 for name in variants}
    for _ in range(args.rounds):
        for name, run in variants.items():
            best[name] = max(best[name], run())
            print(f"{name:26s} {best[name]:9.1f} image-steps/s")
    limit = best["limit (model fwd+bwd)"]
    default = best["fvjax default"]
    lines = [
        f"model `{args.model}` layer `{args.layer}`, batch {args.batch}, {args.size} px, "
        f"{args.steps} steps, channel objective, adam; old way: {args.old_units} units one at "
        f"a time; best of {args.rounds} interleaved rounds, compile excluded.",
        "",
        "| variant | image-steps/s | / limit | fvjax default / this |",
        "|---|---:|---:|---:|",
        *(
            f"| {name} | {rate:.1f} | {rate / limit:.2f} | {default / rate:.2f} |"
            for name, rate in best.items()
        ),
    ]
    text = "\n".join(lines)
    print(text)
    append_results("fvjax against the limit and the old way", machine_header() + "\n\n" + text)


if __name__ == "__main__":
    main()
