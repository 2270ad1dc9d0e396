"""An activation atlas as one HTML page: its cells in their grid, each picture with how many
points fell in the cell and crops of the dataset images they came from, beside the t-SNE
scatter of every point (inline SVG). Reads an :class:`~fvjax.checks.atlas.Atlas`; images
go through an :data:`~fvjax.checks.card.ImageSource` (files beside the page, or ``data:``
URIs in a notebook).

>>> from fvjax.checks.card import inline_source
>>> found = _example_atlas()
>>> page = atlas_html(found, inline_source)
>>> page.count('class="fv-cell"'), page.count("<circle")
(2, 6)
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np

from fvjax.checks.atlas import Atlas, Samples
from fvjax.checks.card import ImageSource
from fvjax.checks.receptive import crop, receptive_field
from fvjax.data.datasets import Dataset, world_dataset
from fvjax.models.adapters import Model, from_fn

CSS = """
.fv-atlas{font:14px/1.45 system-ui,sans-serif;color:#222}
.fv-atlas .grid{display:grid;gap:4px;margin:10px 0 18px}
.fv-atlas .fv-cell,.fv-atlas .empty{background:#fff;border:1px solid #ddd;border-radius:4px;
padding:3px;min-height:40px}.fv-atlas .empty{background:transparent;border-style:dashed}
.fv-atlas .fv-cell img{display:block;width:100%;height:auto;image-rendering:pixelated}
.fv-atlas .crops{display:flex;gap:2px;margin-top:2px}
.fv-atlas .crops img{flex:1 1 0;min-width:0;width:0}
.fv-atlas .cap{font-size:11px;color:#555;text-align:center}
.fv-atlas .off{outline:2px solid #c62828}
.fv-atlas svg{background:#fafafa;border:1px solid #ddd}
"""


def cell_examples(
    model: Model, dataset: Dataset, found: Atlas, per_cell: int = 3
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per kept cell, ``(crops (n, h, w, 3), dataset indices (n,))`` of up to ``per_cell`` of
    its points nearest the cell's centre: each crop the receptive field of the point's
    position (:func:`~fvjax.checks.receptive.receptive_field`; the whole image on a layer
    without positions).

    >>> crops, index = cell_examples(*_example_atlas(examples=True))[0]
    >>> crops.shape, index.tolist()
    ((3, 16, 16, 3), [1, 2, 0])
    """
    field = receptive_field(model, found.layer, dataset.size)
    chosen = [found.members(k)[:per_cell] for k in range(len(found.cells))]
    wanted = np.unique(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)
    images = dict(zip(wanted.tolist(), dataset.images(found.samples.image[wanted]), strict=True))
    out = []
    for points in chosen:
        crops = []
        for p in points.tolist():
            y, x = int(found.samples.y[p]), int(found.samples.x[p])
            box = field.box(y, x) if y >= 0 else (0, 0, *dataset.size)
            crops.append(crop(images[p], box))
        out.append((np.stack(crops), found.samples.image[points]))
    return out


def svg_scatter(found: Atlas, width: int = 360) -> str:
    """The t-SNE layout, a dot per point, over the atlas's grid; points of kept cells dark,
    of empty ones light.

    >>> svg_scatter(_example_atlas()).count("<line")
    6
    """
    pad, inner = 6, width - 12
    kept = np.isin(found.cell, found.cells)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{width}" role="img">'
        f"<title>t-SNE layout of {len(found.cell)} activation vectors</title>"
    ]
    for i in range(found.grid + 1):
        at = pad + inner * i / found.grid
        parts.append(
            f'<line x1="{at:.1f}" y1="{pad}" x2="{at:.1f}" y2="{pad + inner}" stroke="#ddd"/>'
            f'<line x1="{pad}" y1="{at:.1f}" x2="{pad + inner}" y2="{at:.1f}" stroke="#ddd"/>'
        )
    for (u, v), dark in zip(found.layout, kept, strict=True):
        colour = "#1565c0" if dark else "#9fb3d9"
        parts.append(
            f'<circle cx="{pad + inner * u:.1f}" cy="{pad + inner * v:.1f}" r="1.6" '
            f'fill="{colour}"/>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _src(source: ImageSource, name: str, image: np.ndarray) -> str:
    return html.escape(source(name, image), quote=True)


def atlas_html(
    found: Atlas,
    source: ImageSource,
    examples: list[tuple[np.ndarray, np.ndarray]] | None = None,
    cell_px: int = 96,
) -> str:
    """The atlas's HTML (no ``<html>`` around it): a summary line, the cells in their grid
    (each ``cell_px`` wide: picture, point count, ``examples`` from :func:`cell_examples`),
    and the scatter. A picture nearer another cell's direction than its own is outlined red.

    >>> from fvjax.checks.card import inline_source
    >>> "<b>2 of 2</b> pictures point closest" in atlas_html(_example_atlas(), inline_source)
    True
    """
    grid, k = found.grid, len(found.cells)
    cells = {}
    for i, cell in enumerate(found.cells.tolist()):
        row, col = divmod(cell, grid)
        count = int(found.counts[row, col])
        picture = _src(source, f"cell_{row}_{col}.png", found.pictures[i])
        own = found.nearest[i] == i
        title = f"row {row}, column {col}: {count} points; cosine to its direction "
        title += f"{found.cosine[i]:.2f}" + ("" if own else " (nearer another cell's)")
        crops = ""
        if examples is not None:
            images, index = examples[i]
            crops = (
                '<div class="crops">'
                + "".join(
                    f'<img src="{_src(source, f"cell_{row}_{col}_ex{j}.png", image)}" '
                    f'alt="dataset image {int(index[j])}" title="dataset image {int(index[j])}">'
                    for j, image in enumerate(images)
                )
                + "</div>"
            )
        cells[cell] = (
            f'<div class="fv-cell{"" if own else " off"}" title="{html.escape(title)}">'
            f'<img src="{picture}" alt="cell {row}, {col}"><div class="cap">{count}</div>'
            f"{crops}</div>"
        )
    grid_html = "".join(cells.get(c, '<div class="empty"></div>') for c in range(grid * grid))
    n_images = len(np.unique(found.samples.image))
    summary = (
        f"<p><b>{html.escape(found.layer)}</b>: {len(found.cell)} activation vectors from "
        f"{n_images} dataset images, laid out by t-SNE (KL {found.kl:.3f}, perplexity "
        f"{found.perplexity:.1f}); {k} of the {grid}x{grid} cells hold at least "
        f"{found.min_points} points, each rendered from its mean activation. "
        f"<b>{np.sum(found.nearest == np.arange(k))} of {k}</b> pictures point closest to "
        f"their own cell's direction (whitened cosine, median {np.median(found.cosine):.2f}); "
        "the others are outlined red. The number under a picture counts its cell's points; "
        "the crops beside it are the dataset images of the points nearest the cell's centre."
        "</p>"
    )
    return (
        f'<div class="fv-atlas"><style>{CSS}</style>{summary}'
        f'<div class="grid" style="grid-template-columns:repeat({grid},{cell_px}px)">'
        f"{grid_html}</div><h3>The layout</h3>{svg_scatter(found)}</div>"
    )


def _example_atlas(examples: bool = False) -> Any:
    """A hand-made 2x2 atlas of 6 points on two channels, for the examples here (with
    ``examples``: ``(model, dataset, atlas)``, a model to crop for and 6 world images)."""
    from_colour = np.array([[1, 0], [1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [0, 1]], np.float32)
    samples = Samples(from_colour, np.arange(6), np.full(6, -1), np.full(6, -1))
    found = Atlas(
        layer="mean", grid=2, min_points=2, samples=samples,
        layout=np.array([[0.1, 0.1], [0.2, 0.2], [0.3, 0.1], [0.9, 0.9], [0.8, 0.7], [0.9, 0.6]],
                        np.float32),
        kl=0.1, perplexity=2.0, cell=np.array([0, 0, 0, 3, 3, 3]),
        counts=np.array([[3, 0], [0, 3]]), cells=np.array([0, 3]),
        vectors=np.array([[0.97, 0.03], [0.03, 0.97]], np.float32), whiten=np.eye(2),
        pictures=np.zeros((2, 4, 4, 3), np.float32), values=np.ones(2),
        nearest=np.array([0, 1]), cosine=np.ones(2), image=np.zeros((8, 8, 3), np.float32),
        seconds={},
    )  # fmt: skip
    if not examples:
        return found
    model = from_fn(lambda x: {"mean": x.mean(axis=(1, 2))[:, :2]})
    return model, world_dataset(0, 6, 16), found
