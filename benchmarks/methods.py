"""The field's methods against the default step: redirected ReLU gradients, MACO, the
Laplacian pyramid and a CPPN.

In one run, interleaved, at the same layer, size and batch: steady-state image-steps/s of
``render`` with the default procedure (Fourier + standard transforms + adam), with
``redirect_relu=-1`` (every ReLU redirected at every step: one program serves the redirected
and the real steps, so a step costs the same whichever it is), with MACO's parameterization
behind the standard transforms, with MACO's parameterization and its own crops and noise, and
with a 4-level Laplacian pyramid behind the standard transforms, with a CPPN (Lucid's 8
layers of 24 channels, one network per picture) behind the standard transforms, and with RGBA
Fourier
pictures each composited over its own random background before the standard transforms
(the objective unchanged: the opacity term is one mean over the picture).
Feature accentuation (:func:`accentuation`) brings its own objective, the channel less a
distance to each image's map at the layer, and start pictures, behind MACO's crops and noise.
Each variant's first call (trace and compile) is timed apart, and XLA's static flop count per
image-step (:func:`fvjax.rendering.cost.lower_step`), which does not depend on a noisy machine.
Prints a table and appends it to ``benchmarks/RESULTS.md`` (not with ``--no-record``).

    python benchmarks/methods.py [--model worldnet|inceptionv1|resnet50|vgg16] [--layer L]
        [--batch 32] [--size S] [--steps 16] [--rounds 2] [--transform-scale 1.0] [--no-record]
"""

from __future__ import annotations

import time

import numpy as np

from fvjax import alpha, cppn, maco, world
from fvjax import param as P
from fvjax import transforms as T
from fvjax.benchmarking import channel_objective, load_model, parse_args, record
from fvjax.benchmarking import parser as benchmark_parser
from fvjax.rendering import cost, inversion
from fvjax.rendering.engine import render


def variants(args) -> dict[str, dict]:
    """The settings of each variant (``render`` keyword arguments)."""
    standard = T.standard(args.transform_scale)
    return {
        "default": dict(transforms=standard),
        "redirect_relu=-1": dict(transforms=standard, redirect_relu=-1),
        "maco param": dict(transforms=standard, param=maco.param()),
        "maco param + crops": dict(transforms=maco.transforms(), param=maco.param()),
        "laplacian(4) param": dict(transforms=standard, param=P.laplacian(levels=4)),
        "cppn param": dict(transforms=standard, param=cppn.cppn()),
        "alpha (fourier)": dict(
            transforms=T.compose(alpha.background(), standard), param=alpha.param()
        ),
    }


def accentuation(model, objective, args) -> dict:
    """Feature accentuation's variant: the ``batch`` members as (unit, image) pairs of
    ``batch // 4`` units in 4 world images (seed 1), each begun at its image and held near it
    at the layer, behind MACO's crops and noise: its own objective and start pictures."""
    n_images = 4 if args.batch % 4 == 0 else 1
    images = world.generate(seed=1, n=n_images, size=args.size).images
    units = objective.take(np.arange(args.batch // n_images))
    paired, starts = inversion.accentuation(model, units, images)
    return dict(objective=paired, starts=starts, transforms=maco.transforms())


def split(kwargs: dict, objective) -> tuple:
    """``(objective, render's settings, the step's settings)`` of a variant, which may bring
    its own objective and start pictures (the step never sees the starts)."""
    settings = {k: v for k, v in kwargs.items() if k != "objective"}
    step = {k: v for k, v in settings.items() if k != "starts"}
    return kwargs.get("objective", objective), settings, step


def main() -> None:
    args = parse_args(benchmark_parser(__doc__, batch=32))
    model = load_model(args.model)
    objective = channel_objective(model, args.layer, args.batch, args.size)
    settings = variants(args)
    settings["accentuation"] = accentuation(model, objective, args)
    common = dict(seeds=1, steps=args.steps, size=args.size, progress=False)
    first, flops = {}, {}
    for name, kwargs in settings.items():
        own, kwargs, step = split(kwargs, objective)
        lowered = cost.lower_step(model, own, size=args.size, **step)
        flops[name] = float(lowered.cost_analysis()["flops"]) / args.batch
        first[name] = render(model, own, **common, **kwargs).first_call_seconds
    best = dict.fromkeys(settings, 0.0)
    for _ in range(args.rounds):
        for name, kwargs in settings.items():
            own, kwargs, _ = split(kwargs, objective)
            start = time.perf_counter()
            render(model, own, **common, **kwargs)
            rate = args.batch * args.steps / (time.perf_counter() - start)
            best[name] = max(best[name], rate)
    base, base_flops = best["default"], flops["default"]
    for name in settings:
        print(f"{name:20s} {best[name]:8.1f} image-steps/s  {best[name] / base:.2f}")
    text = "\n".join(
        [
            f"model `{args.model}` layer `{args.layer}`, batch {args.batch}, {args.size} px, "
            f"{args.steps} steps, adam(0.05); default = fourier + standard"
            f"({args.transform_scale:g}); MACO's spectrum is the world's at {args.size} px, its "
            f"crops `maco.transforms()`; steady state best of {args.rounds} interleaved rounds; "
            "first call = trace + compile + one step; flops = XLA's count per image-step.",
            "",
            "| variant | image-steps/s | vs default | first call (s) | MFLOP per image-step "
            "| flops vs default |",
            "|---|---:|---:|---:|---:|---:|",
            *(
                f"| {name} | {best[name]:.1f} | {best[name] / base:.2f} | {first[name]:.2f} | "
                f"{flops[name] / 1e6:.2f} | {flops[name] / base_flops:.3f} |"
                for name in settings
            ),
        ]
    )
    record(args, "Redirected ReLU, MACO, Laplacian pyramid, CPPN against the default step", text)


if __name__ == "__main__":
    main()
