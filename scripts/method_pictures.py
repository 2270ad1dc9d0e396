"""Make the README's pictures of redirected ReLU gradients, MACO, the Laplacian pyramid, CPPN
and transparent pictures (deterministic: the same bits on one backend; about 90 s on our
2-core CPU, and 15-23 s more for ``cppn.png``).

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
- ``cppn.png``: the same units and settings, bottom row CPPN pictures (``cppn.cppn()``, one
  network per picture) behind the same transforms.
- ``alpha.png``: the same units and settings; top row the default, then RGBA pictures
  (``alpha.param()``, each over its own random background, ``standard(0.5)`` after) priced at
  ``OPACITY_WEIGHTS`` of their own activation (``alpha.priced``) for a fully opaque picture,
  each over a checkerboard, and under it its alpha map.
- ``inversion.png``: 4 world images (seed 1, 64 px), then their inversions and caricatures at
  worldnet's ``block3/conv``, and ``block3/conv`` unit 5 accentuated in each (256 steps, each
  method's defaults: :mod:`fvjax.rendering.inversion`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import fvjax
from fvjax import objectives as O
from fvjax.data.images import png_bytes
from fvjax.models.zoo import planted
from fvjax.rendering import inversion

ANGLES = tuple(np.arange(8) * 22.5)
#: The relative prices of opacity in ``alpha.png`` (``alpha.priced``: the fraction of its own
#: activation a fully opaque picture costs each unit).
OPACITY_WEIGHTS = (0.5, 1.0)


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


def cppn_picture() -> tuple[np.ndarray, np.ndarray]:
    """The picture and ``(2, 4)`` final activations, default then CPPN (Lucid's 8 layers of
    24 channels at ``adam(0.05)``, which its ``scale`` makes Lucid's slower rate)."""
    return maco_picture(dict(param=fvjax.cppn.cppn(), transforms=fvjax.transforms.standard(0.5)))


def checkerboard(height: int, width: int, tile: int = 8) -> np.ndarray:
    """``(H, W, 3)`` light and mid grey squares, what transparent pictures are shown over."""
    ys, xs = np.mgrid[:height, :width]
    return np.where((ys // tile + xs // tile) % 2 == 0, 0.95, 0.6)[..., None].repeat(3, -1)


def alpha_picture() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The picture, ``(1 + len(OPACITY_WEIGHTS), 4)`` final activations (over grey, without
    the price; the default's first) and ``(len(OPACITY_WEIGHTS), 4)`` mean alphas."""
    model = fvjax.zoo.load("worldnet")
    channel = O.channel("block3/conv", [1, 5, 8, 9])
    common = dict(steps=256, size=64, progress=False)
    default = fvjax.render(model, channel, transforms=fvjax.transforms.standard(0.5), **common)
    rows, values, alphas = [default.images[:, 0]], [default.activations[:, 0]], []
    board = checkerboard(64, 64)
    transforms = fvjax.transforms.compose(fvjax.alpha.background(), fvjax.transforms.standard(0.5))
    for weight in OPACITY_WEIGHTS:
        result = fvjax.render(
            model, fvjax.alpha.priced(channel, weight), param=fvjax.alpha.param(),
            transforms=transforms, **common,
        )  # fmt: skip
        pictures = result.images[:, 0]
        rows += [fvjax.alpha.over_background(pictures, board), pictures[..., 3:].repeat(3, -1)]
        # The unit's own activation over grey (``result.activations`` is the priced value).
        maps = model.activations(fvjax.alpha.over_background(pictures))["block3/conv"]
        values.append(np.asarray(maps.mean((1, 2)))[np.arange(4), [1, 5, 8, 9]])
        alphas.append(pictures[..., 3].mean((1, 2)))
    return _grid(rows, scale=2), np.stack(values), np.stack(alphas)


#: The unit accentuated in ``inversion.png``: worldnet ``block3/conv`` unit 5 (diagonal strokes).
ACCENTUATED = 5


def inversion_picture() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The picture and its figures: 4 world images (seed 1, 64 px), then their inversions and
    caricatures at worldnet's ``block3/conv`` and the accentuations of :data:`ACCENTUATED`
    in them, 256 steps each, every method's defaults."""
    model, layer = fvjax.zoo.load("worldnet"), "block3/conv"
    images = fvjax.world.generate(seed=1, n=4, size=64).images
    inverted = inversion.invert(model, images, layer, steps=256)
    drawn = inversion.caricature(model, images, layer, steps=256)
    raised = inversion.accentuate(model, images, layer, [ACCENTUATED], steps=256)
    rows = [images, inverted.images[:, 0], drawn.images[:, 0], raised.images[0]]
    figures = {
        "inversion: relative error": inverted.error[:, 0],
        "caricature: cosine": drawn.cosine[:, 0],
        "caricature: times as far": drawn.scale[:, 0],
        f"unit {ACCENTUATED} in the image": raised.natural[0],
        f"unit {ACCENTUATED} accentuated": raised.activations[0],
        "accentuation: relative distance": raised.distance[0],
        "seconds (invert, caricature, accentuate)": np.array(
            [inverted.render.seconds, drawn.render.seconds, raised.render.seconds]
        ),
    }
    return _grid(rows, scale=2), figures


def _save(out: Path, name: str, picture: np.ndarray, **figures: np.ndarray) -> None:
    """Write ``out/name`` and print the figures measured with it."""
    (out / name).write_bytes(png_bytes(picture))
    print(name)
    for what, values in figures.items():
        print(f"  {what}: {np.round(np.asarray(values, np.float64), 3).tolist()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs", help="folder for the PNGs (default docs)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    units = "block3/conv units 1, 5, 8, 9"
    picture, fractions = redirect_picture()
    _save(out, "redirect-relu.png", picture, **{"fraction of the optimum, without / with "
                                                "redirect_relu=16": fractions})  # fmt: skip
    picture, values = maco_picture()
    _save(out, "maco.png", picture, **{f"{units}, default / MACO": values})
    pyramid = dict(param=fvjax.param.laplacian(), transforms=fvjax.transforms.standard(0.5))
    picture, values = maco_picture(pyramid)
    _save(out, "laplacian.png", picture, **{f"{units}, default / Laplacian pyramid": values})
    picture, values = cppn_picture()
    _save(out, "cppn.png", picture, **{f"{units}, default / CPPN": values})
    picture, values, alphas = alpha_picture()
    what = f"{units}, default / alpha at opacity {OPACITY_WEIGHTS}"
    _save(out, "alpha.png", picture, **{what: values, "mean alpha": alphas})
    picture, figures = inversion_picture()
    _save(out, "inversion.png", picture, **figures)


if __name__ == "__main__":
    main()
