"""Make the README's activation atlas, ``docs/atlas.png``, and print its figures
(deterministic: the same bits on one backend; about 3 min on our 2-core CPU).

    python scripts/atlas_picture.py [--out docs]

worldnet ``block3/conv`` over 2000 world images (seed 1, 64 px): 2000 activation vectors at
random positions, t-SNE, an 8x8 grid, a picture for each cell holding 4 or more points, as
the default job renders (fourier, ``standard(0.5)``, adam(0.05), 256 steps). The script also
renders the same cells with the cosine's power at 0 (the whitened dot product alone) and
without the whitening, and prints for each the share of pictures whose whitened activation
vector is nearest their own cell's whitened direction.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import fvjax
from fvjax.checks.atlas import activation_atlas, cell_direction, picture_vectors
from fvjax.data import world_dataset
from fvjax.data.images import png_bytes

LAYER = "block3/conv"
RENDER = dict(steps=256, size=64, transforms=fvjax.transforms.standard(0.5))


def agreement(found, pictures: np.ndarray) -> tuple[float, float]:
    """Share of ``pictures`` (one per kept cell) nearest their own cell's direction in
    ``found``'s whitened space, and the median cosine with their own."""
    model = fvjax.zoo.load("worldnet")
    mine = picture_vectors(model, LAYER, pictures) @ found.whiten.T
    mine /= np.linalg.norm(mine, axis=1, keepdims=True)
    theirs = found.vectors @ found.whiten.T
    theirs /= np.linalg.norm(theirs, axis=1, keepdims=True)
    similarity = mine @ theirs.T
    own = similarity.argmax(1) == np.arange(len(mine))
    return float(own.mean()), float(np.median(np.diagonal(similarity)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs", help="folder for the PNG (default docs)")
    out = Path(parser.parse_args().out)
    model = fvjax.zoo.load("worldnet")
    data = world_dataset(seed=1, n=2000, size=64)
    found = activation_atlas(model, data, LAYER, points=2000, grid=8, min_points=4, **RENDER)
    out.mkdir(parents=True, exist_ok=True)
    (out / "atlas.png").write_bytes(png_bytes(found.image))
    print(
        f"{len(found.cells)} of 64 cells kept; KL {found.kl:.3f}; perplexity "
        f"{found.perplexity:.2f}; seconds {found.seconds}"
    )
    images = len(np.unique(found.samples.image))
    print(f"{len(found.cell)} points from {images} images")
    print(f"points per kept cell: {np.percentile(found.counts.flat[found.cells], [0, 50, 100])}")
    print(f"cells' values: {np.percentile(found.values, [0, 50, 100]).round(1)}")
    print(f"cos^2, whitened (the atlas): agreement {found.agreement:.3f}, ", end="")
    print(f"median cosine {np.median(found.cosine):.3f}")
    variants = {
        "cos^0, whitened (dot product)": cell_direction(LAYER, found.vectors, found.whiten, 0.0),
        "cos^2, not whitened": cell_direction(LAYER, found.vectors, None, 2.0),
    }
    for name, objective in variants.items():
        pictures = fvjax.render(model, objective, seeds=[0], **RENDER).images[:, 0]
        share, cosine = agreement(found, pictures)
        print(f"{name}: agreement {share:.3f}, median cosine {cosine:.3f}")


if __name__ == "__main__":
    main()
