"""The dataset pass against the model's own forward throughput, on the same batches.

In one run, interleaved (rounds of every variant, best round kept), over ``--images`` world
images held in memory (so data generation is left out of every variant):

* **forward**: the model's own jitted forward pass, the layer's activations brought to the host;
* **pass**: :func:`fvjax.checks.dataset_pass` without dissection (top/bottom-k, histogram,
  thresholds);
* **pass + dissection**: with the IoU counts against the world's 25 concept masks.

Images/s with compilation excluded (each variant runs once before timing). The pass keeps its
calibration prefix (``calibration_bytes``) and counts every image once more from it.

    python benchmarks/dataset_pass.py [--model worldnet|inceptionv1|...] [--layer L]
        [--size S] [--batch 64] [--images 1024] [--mask-size M] [--rounds 2] [--no-record]
"""

from __future__ import annotations

import time

import jax
import numpy as np

from fvjax.benchmarking import load_model, parse_args, record
from fvjax.benchmarking import parser as benchmark_parser
from fvjax.checks.scan import dataset_pass
from fvjax.data.datasets import world_dataset


class InMemory:
    """A dataset's batches made once and replayed (the pass and the forward see the same)."""

    def __init__(self, data, batch_size: int, mask_size: int | None):
        self.name, self.size, self.slots, self.concepts = (
            data.name,
            data.size,
            data.slots,
            data.concepts,
        )
        self.mask_size = data.mask_size
        self.batch_list = list(data.batches(batch_size))
        if mask_size:
            step = data.mask_size[0] // mask_size
            self.mask_size = (mask_size, mask_size)
            self.batch_list = [
                b._replace(masks=b.masks[..., ::step, ::step]) for b in self.batch_list
            ]
        self.n = len(data)

    def __len__(self) -> int:
        return self.n

    def batches(self, batch_size: int, start: int = 0):
        return iter(self.batch_list)


def main() -> None:
    parser = benchmark_parser(__doc__, steps=1)
    parser.add_argument("--images", type=int, default=1024, help="world images")
    parser.add_argument("--mask-size", type=int, default=0, help="masks downsampled to M px")
    args = parse_args(parser)
    model = load_model(args.model)
    data = InMemory(world_dataset(1, args.images, args.size), args.batch, args.mask_size)
    layer = args.layer

    @jax.jit
    def forward(params, images):
        return model.apply(params, images)[layer]

    def run_forward() -> None:
        for batch in data.batch_list:
            np.asarray(forward(model.params, batch.images))

    def run_pass(dissect: bool):
        return lambda: dataset_pass(model, data, [layer], batch_size=args.batch, dissect=dissect)

    variants = {
        "forward": run_forward,
        "pass": run_pass(False),
        "pass + dissection": run_pass(True),
    }
    for fn in variants.values():
        fn()  # compile
    best = dict.fromkeys(variants, 0.0)
    for _ in range(args.rounds):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            best[name] = max(best[name], args.images / (time.perf_counter() - start))
    masks = f"{data.mask_size[0]} px" if data.slots else "none"
    lines = [
        f"model `{args.model}` layer `{layer}`, {args.images} world images at {args.size} px, "
        f"batch {args.batch}, concept masks {masks} (25 concepts); best of {args.rounds} "
        "interleaved rounds, compile excluded.",
        "",
        "| variant | images/s | / forward |",
        "|---|---:|---:|",
    ]
    for name, rate in best.items():
        lines.append(f"| {name} | {rate:.1f} | {rate / best['forward']:.2f} |")
    text = "\n".join(lines)
    print(text)
    record(args, "The dataset pass against the model's forward", text)


if __name__ == "__main__":
    main()
