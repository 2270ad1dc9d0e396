"""fvjax and Lucent side by side, in one run, on one machine: the same small CNN in both.

A 4-conv CNN (3 -> 32 -> 64 -> 64 -> 128 channels at ``--width 1``, 3x3, strides 1, 2, 2,
1, ReLU between) is built twice from one set of weights, in PyTorch for Lucent and in Flax for
fvjax (the twins' layer agrees within 1e-4, checked here). Each renders ``--units`` channels
of ``conv4`` for ``--steps`` steps at ``--size`` px with its own default procedure (Fourier +
decorrelation, pad 12 / jitter 8 / scale / rotate / jitter 4, Adam 0.05):

* **fvjax**: one ``render`` of every channel at once;
* **Lucent, one unit per call**: ``render_vis`` once per channel, as its documentation does
  (its default upsamples pictures under 224 px to 224 before the model);
* **Lucent batched**: one ``render_vis`` of ``param.image(size, batch=N)`` and the Python sum of
  ``channel("conv4", u, batch=i)`` objectives, its transforms drawn once for the batch; with its
  default upsampling to 224, and at ``fixed_image_size`` = the size the transforms hand the
  model (as fvjax's model sees it);
* **limit**: the Flax model's own jitted forward + backward at the size the model sees, each
  picture climbing its own channel; and, for the record, the same on the layer's mean (the
  limit until 2026-11-30, which XLA makes cheaper for this linear layer);
* **PyTorch's limit**: the same step of the PyTorch twin, where every Lucent row starts from.
  On our CPU it ran 1.14x (full width) and 1.44x (half width) XLA's: at half width Lucent
  batched can pass fvjax on the model's speed alone.

Rates are image-steps/s, compile and first calls excluded; best of ``--rounds`` interleaved
rounds. Prints a table and appends it to ``benchmarks/RESULTS.md`` (not with ``--no-record``).

Lucent is not a dependency of fvjax. In the environment that runs this (PyTorch installed)::

    pip install --no-deps torch-lucent==0.1.8 kornia==0.4.1 tqdm

Lucent imports ``torchvision`` only for ``Normalize``; where no working torchvision is
installed, this script puts a 6-line ``Normalize`` in its place (Lucent's code is unchanged).

    python benchmarks/vs_lucent.py [--size 128] [--units 32] [--steps 32] [--rounds 2]
        [--lucent-units 2] [--width 1.0] [--no-record]
"""

from __future__ import annotations

import sys
import time
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import torch

import fvjax
from fvjax import benchmarking as bench
from fvjax import transforms as T

#: Output channels of conv1..conv4 at ``--width 1``, and their strides.
WIDTHS = (32, 64, 64, 128)
STRIDES = (1, 2, 2, 1)


def weights(width: float = 1.0, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """He-normal ``(kernel (3, 3, in, out), bias)`` of each conv, float32, with ``width``
    times :data:`WIDTHS` channels; both twins read their shapes from these."""
    rng = np.random.default_rng(seed)
    channels = [3, *(round(w * width) for w in WIDTHS)]
    return [
        (rng.normal(0, np.sqrt(2 / (9 * c_in)), (3, 3, c_in, c_out)).astype(np.float32),
         rng.normal(0, 0.01, c_out).astype(np.float32))
        for c_in, c_out in zip(channels[:-1], channels[1:], strict=True)
    ]  # fmt: skip


class FlaxCNN(nn.Module):
    widths: tuple[int, ...]

    @nn.compact
    def __call__(self, x):
        for i, (c_out, stride) in enumerate(zip(self.widths, STRIDES, strict=True)):
            if i:
                x = nn.relu(x)
            x = nn.Conv(c_out, (3, 3), stride, padding=((1, 1), (1, 1)), name=f"conv{i + 1}")(x)
        return x


def fvjax_model(found: list) -> fvjax.Model:
    params = {f"conv{i + 1}": {"kernel": k, "bias": b} for i, (k, b) in enumerate(found)}
    widths = tuple(kernel.shape[-1] for kernel, _ in found)
    return fvjax.from_linen(FlaxCNN(widths), {"params": params}, name="cnn4")


def torch_model(found: list):
    class TorchCNN(torch.nn.Module):
        def __init__(self):
            super().__init__()
            for i, ((kernel, _), stride) in enumerate(zip(found, STRIDES, strict=True)):
                c_in, c_out = kernel.shape[2], kernel.shape[3]
                setattr(self, f"conv{i + 1}", torch.nn.Conv2d(c_in, c_out, 3, stride, 1))

        def forward(self, x):
            for i in range(len(found)):
                x = getattr(self, f"conv{i + 1}")(x if i == 0 else torch.relu(x))
            return x

    net = TorchCNN().eval()
    with torch.no_grad():
        for i, (kernel, bias) in enumerate(found):
            conv = getattr(net, f"conv{i + 1}")
            conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))))
            conv.bias.copy_(torch.from_numpy(bias))
    return net


def torch_limit(net, n: int, size: int, steps: int) -> float:
    """Image-steps/s of the PyTorch twin's own forward + backward to its input at ``size``,
    picture ``i`` climbing channel ``i`` (mod the layer's channels), as ``bench.limit`` does."""
    images = torch.rand(n, 3, size, size, requires_grad=True)
    rows = torch.arange(n)

    def step() -> None:
        out = net(images)
        own = out[rows, rows % out.shape[1]].mean((1, 2)).sum()
        torch.autograd.grad(own, images)

    step()  # first call apart
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return n * steps / (time.perf_counter() - start)


def import_lucent():
    """Lucent's modules, with a stand-in ``torchvision.transforms.Normalize`` if needed."""
    try:
        import torchvision.transforms  # noqa: F401 (Lucent imports it)
    except Exception:  # noqa: BLE001 (absent, or built for another torch)

        class Normalize(torch.nn.Module):
            def __init__(self, mean, std):
                super().__init__()
                self.mean, self.std = (
                    torch.tensor(mean)[:, None, None],
                    torch.tensor(std)[:, None, None],
                )

            def forward(self, x):
                return (x - self.mean) / self.std

        for name in [n for n in sys.modules if n.startswith("torchvision")]:
            del sys.modules[name]
        package, transforms = (
            types.ModuleType("torchvision"),
            types.ModuleType("torchvision.transforms"),
        )
        transforms.Normalize, package.transforms = Normalize, transforms
        sys.modules.update({"torchvision": package, "torchvision.transforms": transforms})
    try:
        from lucent.optvis import objectives, param, render  # not a dependency: imported here
    except ImportError as exc:
        raise SystemExit(
            f"Lucent cannot be imported ({exc}): pip install --no-deps torch-lucent==0.1.8 "
            "kornia==0.4.1 tqdm"
        ) from exc
    return objectives, param, render


def main() -> None:
    parser = bench.parser(__doc__, steps=32, batch=None)
    parser.add_argument("--units", type=int, default=32, help="channels of conv4 rendered")
    parser.add_argument(
        "--lucent-units", type=int, default=2, help="units Lucent renders one by one"
    )
    parser.add_argument(
        "--width", type=float, default=1.0, help="channels of every conv times this (0.5: 16..64)"
    )
    args = parser.parse_args()
    args.model, args.layer = "cnn4", "conv4"
    args.size = args.size or 128
    objectives, param, render = import_lucent()

    found = weights(args.width)
    model, net = fvjax_model(found), torch_model(found)
    probe = np.random.default_rng(1).uniform(size=(2, args.size, args.size, 3)).astype(np.float32)
    ours = np.asarray(model.apply(model.params, jnp.asarray(probe))["conv4"])
    with torch.no_grad():
        theirs = net(torch.from_numpy(probe.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
    agreement = float(np.abs(ours - theirs).max())
    assert agreement < 1e-4, f"the twins disagree by {agreement}"

    units, n = list(range(args.units)), args.units
    transforms = T.standard()
    seen = T.output_size(transforms, (args.size, args.size))[0]
    limit = bench.limit(model, "conv4", n, seen)
    on_mean = bench.limit(model, "conv4", n, seen, objective="mean")
    objective = fvjax.objectives.channel("conv4", units)

    def fvjax_run() -> float:
        start = time.perf_counter()
        fvjax.render(model, objective, steps=args.steps, size=args.size, progress=False)
        return n * args.steps / (time.perf_counter() - start)

    def lucent_batched(fixed: int | None) -> float:
        summed = sum(objectives.channel("conv4", u, batch=i) for i, u in enumerate(units))
        start = time.perf_counter()
        render.render_vis(
            net, summed, param_f=lambda: param.image(args.size, batch=n), thresholds=(args.steps,),
            show_image=False, progress=False, fixed_image_size=fixed,
        )  # fmt: skip
        return n * args.steps / (time.perf_counter() - start)

    def lucent_singles() -> float:
        start = time.perf_counter()
        for u in units[: args.lucent_units]:
            render.render_vis(
                net, objectives.channel("conv4", u), param_f=lambda: param.image(args.size),
                thresholds=(args.steps,), show_image=False, progress=False,
            )  # fmt: skip
        return args.lucent_units * args.steps / (time.perf_counter() - start)

    variants = {
        f"limit: the model's fwd+bwd at {seen} px": lambda: limit.rate(model.params, args.steps),
        "limit on the layer's mean (before 2026-11-30)": lambda: on_mean.rate(
            model.params, args.steps
        ),
        f"limit, PyTorch: the twin's own fwd+bwd at {seen} px": lambda: torch_limit(
            net, n, seen, args.steps
        ),
        "fvjax, every unit in one render": fvjax_run,
        f"Lucent batched, model at {seen} px": lambda: lucent_batched(seen),
        "Lucent batched, its default 224 px": lambda: lucent_batched(None),
        "Lucent, one unit per call (its docs)": lucent_singles,
    }
    fvjax_run()  # compile
    best = dict.fromkeys(variants, 0.0)
    for _ in range(args.rounds):
        for name, run in variants.items():
            best[name] = max(best[name], run())
            print(f"{name:45s} {best[name]:9.1f} image-steps/s", flush=True)
    base = best["fvjax, every unit in one render"]
    lim = next(iter(best.values()))
    text = "\n".join(
        [
            f"4-conv CNN ({' -> '.join(str(k.shape[-1]) for k, _ in found)} channels, `conv4` "
            "rendered; "
            f"PyTorch and Flax twins agree within "
            f"{agreement:.1e}), {n} units x {args.steps} steps at {args.size} px; torch "
            f"{torch.__version__} ({torch.get_num_threads()} threads), jax {jax.__version__}; "
            f"best of {args.rounds} interleaved rounds, compile excluded.",
            "",
            "| variant | image-steps/s | / limit | fvjax / this |",
            "|---|---:|---:|---:|",
            *(
                f"| {name} | {rate:.1f} | {rate / lim:.2f} | {base / rate:.2f} |"
                for name, rate in best.items()
            ),
        ]
    )
    bench.record(args, "fvjax and Lucent side by side (a 4-conv CNN)", text)


if __name__ == "__main__":
    main()
