"""Make the README's pictures of redirected ReLU gradients, MACO and the Laplacian pyramid
(deterministic: the same bits on one backend; about 60 s on our 2-core CPU).

    python scripts/method_pictures.py [--out docs]

- ``redirect-relu.png``: the planted oriented filters' 8 centre neurons (one column each,
  0 to 157.5 degrees), pixel parameterization, no transforms, 256 steps at 32 px; top row
  without redirection (the grey ones started dead and never moved), bottom row with
  ``redirect_relu=16``. The script prints the fraction of each neuron's analytic optimum.
- ``maco.png``: worldnet ``block3/conv`` units 1, 5, 8 and 9 at 64 px, 256 steps; top row the
  default (Fourier + ``standard(0.5)``), bottom row MACO (the world's spectrum, its crops and
  noise).
- ``laplacian.png``: the same units and settings, bottom row a 4-level Laplacian pyramid
  (``param.laplacian()``) behind the same transforms.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import fvjax
from fvjax import objectives as O
from fvjax.data.images import png_bytes
from fvjax.models.zoo import planted

ANGLES = tuple(np.arange(8) * 22.5)


def _grid(rows: list[np.ndarray], scale: int, gap: int = 2) -> np.ndarray:
    """``rows`` of pictures ``(n, H, W, 3)`` side by side on white, each ``scale`` times."""
    rows = [np.asarray(r).repeat(scale, 1).repeat(scale, 2) for r in rows]
    n, height, width, _ = rows[0].shape
    out = np.ones((len(rows) * (height + gap) - gap, n * (width + gap) - gap, 3), np.float32)
    for i, row in enumerate(rows):
        for j, picture in enumerate(row):
            top, left = i * (height + gap), j * (width + gap)
            out[top : top + height, left : left + width] = picture
    return out


def redirect_picture() -> tuple[np.ndarray, np.ndarray]:
    """The picture, and ``(2, 8)`` fractions of the optimum (without, with redirection)."""
    model = planted.oriented_filters(ANGLES)
    best = planted.orientation_optimum(model)
    rows, fractions = [], []
    for redirect in (0, 16):
        result = fvjax.render(
            model, O.neuron(planted.ORIENTATION_LAYER, range(8)), seeds=1, steps=256, size=32,
            param=fvjax.param.pixel(), transforms=fvjax.transforms.identity(),
            redirect_relu=redirect, progress=False,
        )  # fmt: skip
        rows.append(result.images[:, 0])
        fractions.append(result.activations[:, 0] / best)
    return _grid(rows, scale=3), np.stack(fractions)


def maco_picture(other: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The picture, and ``(2, 4)`` final activations (default, then MACO or ``other``: the
    render settings of the bottom row)."""
    model = fvjax.zoo.load("worldnet")
    objective = O.channel("block3/conv", [1, 5, 8, 9])
    rows, values = [], []
    for kwargs in (
        dict(transforms=fvjax.transforms.standard(0.5)),
        other or dict(param=fvjax.maco.param(), transforms=fvjax.maco.transforms()),
    ):
        result = fvjax.render(model, objective, steps=256, size=64, progress=False, **kwargs)
        rows.append(result.images[:, 0])
        values.append(result.activations[:, 0])
    return _grid(rows, scale=2), np.stack(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs", help="folder for the PNGs (default docs)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    picture, fractions = redirect_picture()
    (out / "redirect-relu.png").write_bytes(png_bytes(picture))
    print("fraction of the optimum, without / with redirect_relu=16:")
    print(np.round(fractions, 3))
    picture, values = maco_picture()
    (out / "maco.png").write_bytes(png_bytes(picture))
    print("block3/conv units 1, 5, 8, 9, default / MACO:")
    print(np.round(values, 2))
    pyramid = dict(param=fvjax.param.laplacian(), transforms=fvjax.transforms.standard(0.5))
    picture, values = maco_picture(pyramid)
    (out / "laplacian.png").write_bytes(png_bytes(picture))
    print("block3/conv units 1, 5, 8, 9, default / Laplacian pyramid:")
    print(np.round(values, 2))


if __name__ == "__main__":
    main()
