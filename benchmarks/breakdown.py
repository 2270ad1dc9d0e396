"""Where the time of a render step goes: the model, the parameterization, the transforms and the
optimizer, measured (ablations) and counted (XLA's static cost figures).

**Measured**, in one run, interleaved, at batch ``B``: image-steps/s of the model's own forward +
backward (at ``S`` px, and at the ``S'`` px the transforms hand it), and of ``render`` with each
part switched on in turn: pixel parameterization, no transforms, no optimizer update
(``optax.set_to_zero``); then sgd, adam; Fourier without and with colour decorrelation; the
standard transforms; the full default. Differences of those give each part's share of the
default step (noisy: they are differences of noisy times).

**Counted**: each part compiled alone for ``B`` pictures (forward and backward where it has
one) and the full default step (:func:`fvjax.cost.compile_step`), with XLA's
``cost_analysis()`` flops and bytes accessed per image-step. These do not depend on a noisy
machine: the flop shares carry over to any backend (the bytes depend on the backend's fusions).

Prints the tables and appends them to ``benchmarks/RESULTS.md`` (not with ``--no-record``).

    python benchmarks/breakdown.py [--model worldnet|inceptionv1|resnet50|vgg16] [--layer L]
        [--batch 64] [--size S] [--steps 16] [--rounds 2] [--detail] [--static-only]
        [--no-record]
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

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
from fvjax.rendering import cost, step

OPTIMIZERS = {
    "none": optax.set_to_zero(),
    "sgd": optax.sgd(0.05),
    "adam": step.default_optimizer(),
}


def costs(compiled: Any) -> tuple[float, float]:
    """``(flops, bytes accessed)`` of a compiled program, from XLA's cost analysis."""
    found = compiled.cost_analysis()
    found = found[0] if isinstance(found, list | tuple) else found  # older jax: one per device
    return float(found.get("flops", 0.0)), float(found.get("bytes accessed", 0.0))


def param_program(param: Any, batch: int, size: tuple[int, int]) -> Any:
    """``param.to_image`` on ``batch`` pictures, forward and backward, compiled."""

    def to_images(raw: Any) -> jax.Array:
        return jax.vmap(lambda r: param.to_image(r, size))(raw)

    def run(raw: Any, cotangent: jax.Array) -> tuple[jax.Array, Any]:
        images, vjp = jax.vjp(to_images, raw)
        return images, vjp(cotangent)[0]

    keys = jax.eval_shape(lambda: jax.random.split(jax.random.key(0), batch))
    raw = jax.eval_shape(jax.vmap(lambda k: param.init(k, size)), keys)
    images = jax.ShapeDtypeStruct((batch, *size, 3), jnp.float32)
    return jax.jit(run).lower(raw, images).compile()


def transform_program(transform: Any, batch: int, size: tuple[int, int]) -> Any:
    """``transform`` on ``batch`` pictures (own key each), forward and backward, compiled."""

    def run(keys: jax.Array, images: jax.Array, cotangent: jax.Array):
        out, vjp = jax.vjp(lambda x: jax.vmap(transform)(keys, x), images)
        return out, vjp(cotangent)[0]

    keys = jax.eval_shape(lambda: jax.random.split(jax.random.key(0), batch))
    images = jax.ShapeDtypeStruct((batch, *size, 3), jnp.float32)
    seen = jax.eval_shape(jax.vmap(transform), keys, images)
    return jax.jit(run).lower(keys, images, seen).compile()


def optimizer_program(optimizer: Any, param: Any, batch: int, size: tuple[int, int]) -> Any:
    """One update of ``batch`` pictures' variables (each its own state), as render does it."""

    def run(grads: Any, opt_state: Any, raw: Any) -> tuple[Any, Any]:
        updates, opt_state = jax.vmap(optimizer.update)(grads, opt_state, raw)
        return optax.apply_updates(raw, updates), opt_state

    keys = jax.eval_shape(lambda: jax.random.split(jax.random.key(0), batch))
    raw = jax.eval_shape(jax.vmap(lambda k: param.init(k, size)), keys)
    state = jax.eval_shape(jax.vmap(optimizer.init), raw)
    return jax.jit(run, donate_argnums=(1, 2)).lower(raw, state, raw).compile()


def static_table(model, objective, args, transforms, seen) -> str:
    """The counted table: each part's flops and bytes per image-step, and its share."""
    batch, size = args.batch, (args.size, args.size)
    fourier, flat = P.fourier(), P.fourier(decorrelate=False)
    full = cost.compile_step(
        model, objective, size=size, param=fourier, transforms=transforms,
        optimizer=OPTIMIZERS["adam"],
    )  # fmt: skip
    parts = {
        "model_size": costs(limit(model, args.layer, batch, size).compiled),
        "model_seen": costs(limit(model, args.layer, batch, seen).compiled),
        "flat": costs(param_program(flat, batch, size)),
        "fourier": costs(param_program(fourier, batch, size)),
        "transforms": costs(transform_program(transforms, batch, size)),
        **{k: costs(optimizer_program(o, fourier, batch, size)) for k, o in OPTIMIZERS.items()},
        "full": costs(full),
    }
    per_image = {k: (f / batch, b / batch) for k, (f, b) in parts.items()}

    def minus(a: tuple[float, float], *others: tuple[float, float]) -> tuple[float, float]:
        return a[0] - sum(o[0] for o in others), a[1] - sum(o[1] for o in others)

    p = per_image
    rows = {
        f"model fwd+bwd at {args.size} px": p["model_size"],
        f"model: the extra of {seen[0]} px pictures": minus(p["model_seen"], p["model_size"]),
        "Fourier parameterization (FFTs, 1/f scale, sigmoid), fwd+bwd": p["flat"],
        "colour decorrelation, fwd+bwd": minus(p["fourier"], p["flat"]),
        f"transforms `standard({args.transform_scale:g})`, fwd+bwd": p["transforms"],
        "optimizer update: adam": p["adam"],
        "rest (objective, finiteness checks; < 0: fusion)": minus(
            p["full"], p["model_seen"], p["fourier"], p["transforms"], p["adam"]
        ),
        "**full default step**": p["full"],
        "(alternative) update: sgd": p["sgd"],
        "(alternative) update: none": p["none"],
    }
    total_flops, total_bytes = p["full"]
    lines = [
        "| component | GFLOP / image-step | share | MB accessed / image-step | share |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {name} | {f / 1e9:.4f} | {f / total_flops:.1%} | {b / 1e6:.2f} | "
            f"{b / total_bytes:.1%} |"
            for name, (f, b) in rows.items()
        ),
    ]
    return "\n".join(lines)


def measured_table(model, objective, args, transforms, seen) -> str:
    """The timed ablations, and each part's share of the default step by differences."""
    size = args.size
    pixel, fourier, nothing = P.pixel(), P.fourier(), T.identity()
    # key: (row name, render settings); the keys name the rows the shares are taken from.
    cases = {
        "none": ("pixel, no transforms, no update", dict(param=pixel, transforms=nothing,
                                                         optimizer=OPTIMIZERS["none"])),
        "sgd": ("pixel, no transforms, sgd", dict(param=pixel, transforms=nothing,
                                                  optimizer=OPTIMIZERS["sgd"])),
        "adam": ("pixel, no transforms, adam", dict(param=pixel, transforms=nothing)),
        "flat": ("fourier without decorrelation, no transforms, adam",
                 dict(param=P.fourier(decorrelate=False), transforms=nothing)),
        "fourier": ("fourier + decorrelation, no transforms, adam",
                    dict(param=fourier, transforms=nothing)),
        "pixel_tf": ("pixel + transforms, adam", dict(param=pixel, transforms=transforms)),
        "default": ("default: fourier + decorrelation + transforms, adam",
                    dict(param=fourier, transforms=transforms)),
    }  # fmt: skip
    if args.detail:
        stack = transforms
        cases.update(
            {
                "pads": ("pixel + pad & jitters, adam", dict(param=pixel, transforms=T.compose(
                    T.pad(stack.pad), T.jitter(stack.jitter[0]), T.jitter(stack.jitter[1])))),
                "scale": ("pixel + random scale, adam",
                          dict(param=pixel, transforms=T.random_scale(stack.scales))),
                "rotate": ("pixel + random rotate, adam",
                           dict(param=pixel, transforms=T.random_rotate(stack.angles))),
                "unfused": ("fourier + the 4 transforms unfused, adam", dict(
                    param=fourier,
                    transforms=T.compose(
                        T.pad(stack.pad), T.jitter(stack.jitter[0]),
                        T.random_scale(stack.scales), T.random_rotate(stack.angles),
                        T.jitter(stack.jitter[1]),
                    ),
                )),
            }
        )  # fmt: skip
    at_size = limit(model, args.layer, args.batch, size)
    at_seen = limit(model, args.layer, args.batch, seen)
    names = {
        "limit": f"model fwd+bwd at {size} px (limit)",
        "seen": f"model fwd+bwd at {seen[0]} px",
        **{key: name for key, (name, _) in cases.items()},
    }
    runs = {
        "limit": lambda: at_size.rate(model.params, args.steps),
        "seen": lambda: at_seen.rate(model.params, args.steps),
        **{
            key: (lambda case=case: render_rate(model, objective, args.steps, size, **case))
            for key, (_, case) in cases.items()
        },
    }
    for run in runs.values():  # compile everything first
        run()
    best = {key: 0.0 for key in runs}
    for _ in range(args.rounds):
        for key, run in runs.items():
            best[key] = max(best[key], run())
            print(f"{names[key]:55s} {best[key]:9.1f} image-steps/s", flush=True)
    ms = {key: 1e3 / rate for key, rate in best.items()}
    parts = {
        f"model fwd+bwd at {size} px": ms["limit"],
        f"model: the extra of {seen[0]} px pictures": ms["seen"] - ms["limit"],
        "objective, checks, render overhead": ms["none"] - ms["limit"],
        "optimizer update: adam": ms["adam"] - ms["none"],
        "Fourier parameterization (FFTs, 1/f scale)": ms["flat"] - ms["adam"],
        "colour decorrelation": ms["fourier"] - ms["flat"],
        "transforms (own work)": ms["pixel_tf"] - ms["adam"] - (ms["seen"] - ms["limit"]),
    }
    parts["not additive (interactions, noise)"] = ms["default"] - sum(parts.values())
    lines = [
        "| setting | ms / image-step | image-steps/s | / limit |",
        "|---|---:|---:|---:|",
        *(
            f"| {names[k]} | {ms[k]:.3f} | {best[k]:.1f} | {best[k] / best['limit']:.2f} |"
            for k in ms
        ),
        "",
        "Share of the default step, from differences of the rows above:",
        "",
        "| part | ms / image-step | share of default |",
        "|---|---:|---:|",
        *(f"| {n} | {v:.3f} | {v / ms['default']:.1%} |" for n, v in parts.items()),
        f"| **default step** | {ms['default']:.3f} | 100.0% |",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--detail", action="store_true", help="also each transform alone")
    parser.add_argument("--static-only", action="store_true", help="only XLA's cost figures")
    args = parse_args(parser)

    model = load_model(args.model)
    objective = channel_objective(model, args.layer, args.batch, args.size)
    transforms = T.standard(args.transform_scale)
    seen = T.output_size(transforms, (args.size, args.size))
    static = static_table(model, objective, args, transforms, seen)
    print("XLA's cost figures: done", flush=True)
    head = (
        f"model `{args.model}` layer `{args.layer}`, batch {args.batch}, {args.size} px "
        f"(the model sees {seen[0]} px after the transforms), channel objective, default "
        f"fourier + decorrelation + `standard({args.transform_scale:g})` + adam"
    )
    sections = []
    if not args.static_only:
        measured = measured_table(model, objective, args, transforms, seen)
        sections += [
            f"**Measured**: {args.steps} steps per render, best of {args.rounds} interleaved "
            "rounds, compile excluded; render rows include the render's own init and final "
            "programs.",
            "",
            measured,
            "",
        ]
    sections += [
        f"**Counted** by XLA ({jax.default_backend()} backend, `cost_analysis()` of each part "
        "compiled alone and of the full step): flops are the HLO's own count and carry over "
        "to other backends; bytes accessed depend on the backend's fusions.",
        "",
        static,
    ]
    record(args, "Where a render step's time goes", head + ".\n\n" + "\n".join(sections))


if __name__ == "__main__":
    main()
