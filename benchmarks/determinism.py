"""Determinism: which operations break it, and what keeping it costs.

XLA reads its flags once per process, so this process runs with XLA's deterministic GPU ops
``--xla-deterministic on`` or ``off`` (``benchmarks/gpu.sh`` runs it both ways; their rates
side by side are the flag's cost). In it, at batch ``B``, each program renders the same job
twice (``render``, default procedure):

* **fvjax**: the programs as they are, holding no scatter (the transforms' resampling
  transposed by hand as a gather, max pools of selects: ``fvjax.rendering.determinism``);
* **with scatters**: the same job with the operations autodiff makes scatters of, as fvjax had
  them before 2026-11-30: ``jax.scipy.ndimage.map_coordinates`` for the standard transforms'
  resampling and ``flax.linen.max_pool`` in the model (``--no-scatters`` leaves it out).

For each: its census (scatters, select-and-scatters in the step), the first call (trace,
compile, run), image-steps/s of the second render, and how far apart the two renders'
pictures are (bit-identical or not). Prints a table and appends it to ``RESULTS.md``.

    python benchmarks/determinism.py [--model inceptionv1] [--size 224] [--batch 64]
        [--steps 32] [--xla-deterministic on|off] [--no-scatters] [--no-record]
"""

from __future__ import annotations

import contextlib
import dataclasses
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import fvjax
from fvjax import benchmarking as bench
from fvjax.models.zoo import inception, resnet, vgg, worldnet
from fvjax.rendering import determinism
from fvjax.rendering.cost import lower_step
from fvjax.rendering.transforms import RandomAffine, standard


@dataclasses.dataclass(frozen=True)
class ScatteringAffine(RandomAffine):
    """``standard()``'s transform resampled with ``map_coordinates`` (whose gradient is a
    scatter-add), as fvjax's was before 2026-11-30."""

    def __call__(self, key: jax.Array, image: jax.Array) -> jax.Array:
        matrix, offset, out = self.draw(key, image.shape[:2])  # the same draw as fvjax's
        ys, xs = jnp.meshgrid(jnp.arange(out[0]) * 1.0, jnp.arange(out[1]) * 1.0, indexing="ij")
        rows = matrix[0, 0] * ys + matrix[0, 1] * xs + offset[0]
        cols = matrix[1, 0] * ys + matrix[1, 1] * xs + offset[1]
        sample = jax.scipy.ndimage.map_coordinates
        return jnp.stack(
            [sample(image[..., c], [rows, cols], order=1, mode="constant", cval=self.value)
             for c in range(image.shape[2])], axis=-1,
        )  # fmt: skip


@contextlib.contextmanager
def flax_pools(name: str):
    """The zoo network ``name`` traced with Flax's max pool (select-and-scatter gradient)."""
    target = {"inceptionv1": inception, "worldnet": worldnet, "resnet50": resnet, "vgg16": vgg}.get(
        name
    )
    if target is None:
        yield
        return

    def pool(x, window, strides=None, padding="VALID"):
        return nn.max_pool(x, window, strides=strides, padding=padding)

    kept = target.max_pool
    target.max_pool = pool
    try:
        yield
    finally:
        target.max_pool = kept


def main() -> None:
    parser = bench.parser(__doc__, steps=32)
    parser.add_argument("--xla-deterministic", choices=("on", "off"), default="on")
    parser.add_argument("--no-scatters", action="store_true", help="only fvjax's programs")
    args = bench.parse_args(parser)
    # Nothing above starts a JAX backend (importing JAX does not): XLA reads its flags then.
    determinism.request(args.xla_deterministic == "on")
    model = bench.load_model(args.model)
    objective = bench.channel_objective(model, args.layer, args.batch, args.size)
    programs = {"fvjax (no scatter)": (standard(args.transform_scale), contextlib.nullcontext)}
    if not args.no_scatters:
        old = ScatteringAffine(**dataclasses.asdict(standard(args.transform_scale)))
        programs["with scatters (before 2026-11-30)"] = (old, lambda: flax_pools(args.model))
    rows = []
    for name, (transforms, context) in programs.items():
        with context():
            ops = determinism.census(
                lower_step(model, objective, size=args.size, transforms=transforms)
            )
            kwargs = dict(seeds=1, steps=args.steps, size=args.size, transforms=transforms)
            start = time.perf_counter()
            first = fvjax.render(model, objective, **kwargs).images
            first_call = time.perf_counter() - start
            start = time.perf_counter()
            second = fvjax.render(model, objective, **kwargs).images
            rate = args.batch * args.steps / (time.perf_counter() - start)
        apart = float(np.abs(first - second).max())
        same = bool(np.array_equal(first, second))
        rows.append((name, ops, first_call, rate, apart, same))
        print(f"{name}: {ops} first {first_call:.1f} s, {rate:.1f} image-steps/s, "
              f"max |a - b| {apart:.3g}, bit-identical {same}", flush=True)  # fmt: skip
    status = determinism.status()
    text = "\n".join(
        [
            f"model `{args.model}` layer `{args.layer}`, {args.size} px, batch {args.batch}, "
            f"{args.steps} steps, default procedure, rendered twice per program; XLA flag "
            f"`{determinism.FLAG}` {'on' if status['deterministic_ops'] else 'off'} "
            f"(backend {status['backend']}).",
            "",
            "| program | scatters | select-and-scatters | first call (s) | image-steps/s "
            "| vs fvjax | max abs difference of the two renders | bit-identical |",
            "|---|---:|---:|---:|---:|---:|---:|---|",
            *(
                f"| {name} | {ops['scatter']} | {ops['select_and_scatter']} | {first:.1f} | "
                f"{rate:.1f} | {rate / rows[0][3]:.2f} | {apart:.3g} | {'yes' if same else 'no'} |"
                for name, ops, first, rate, apart, same in rows
            ),
        ]
    )
    bench.record(args, "Determinism: scatters, and the flag's cost", text)


if __name__ == "__main__":
    main()
