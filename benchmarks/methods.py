"""The field's methods against the default step: redirected ReLU gradients, MACO, the
Laplacian pyramid, a CPPN, alpha and feature accentuation.

In one run, interleaved, at the same layer, size and batch: steady-state image-steps/s of
``render`` with the default procedure (Fourier + standard transforms + adam), with
``redirect_relu=-1`` (every ReLU redirected at every step: one program serves the redirected
and the real steps, so a step costs the same whichever it is), with MACO's parameterization
behind the standard transforms, with MACO's parameterization and its own crops and noise, and
with a 4-level Laplacian pyramid behind the standard transforms, with a CPPN (Lucid's 8
layers of 24 channels, one network per picture) behind the standard transforms, and with RGBA
Fourier pictures each composited over its own random background before the standard transforms
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

import numpy as np

from fvjax import alpha, cppn, maco, world
from fvjax import param as P
from fvjax import transforms as T
from fvjax.benchmarking import channel_objective, compare_renders, load_model, parse_args, record
from fvjax.benchmarking import parser as benchmark_parser
from fvjax.rendering import inversion


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


def main() -> None:
    args = parse_args(benchmark_parser(__doc__, batch=32))
    model = load_model(args.model)
    objective = channel_objective(model, args.layer, args.batch, args.size)
    settings = {
        name: dict(objective=objective, **kwargs) for name, kwargs in variants(args).items()
    }
    settings["accentuation"] = accentuation(model, objective, args)
    found = compare_renders(model, settings, args.steps, args.size, args.rounds)
    for name in settings:
        rate = found.rate[name]
        print(f"{name:20s} {rate:8.1f} image-steps/s  {rate / found.rate['default']:.2f}")
    text = "\n".join(
        [
            f"model `{args.model}` layer `{args.layer}`, batch {args.batch}, {args.size} px, "
            f"{args.steps} steps, adam(0.05); default = fourier + standard"
            f"({args.transform_scale:g}); MACO's spectrum is the world's at {args.size} px, its "
            f"crops `maco.transforms()`; steady state best of {args.rounds} interleaved rounds; "
            "first call = trace + compile + one step; flops = XLA's count per image-step.",
            "",
            *found.table(),
        ]
    )
    record(args, "Redirected ReLU, MACO, Laplacian pyramid, CPPN, alpha and accentuation "
           "against the default step", text)  # fmt: skip


if __name__ == "__main__":
    main()
