"""What a render job leaves on disk: PNGs, a grid per layer, ``manifest.json`` and a gallery.

Layout of an output directory ``OUT``::

    OUT/manifest.json                 every picture, the resolved config, versions, timings
    OUT/index.html                    the gallery: one card per layer
    OUT/<slug>/index.html             one tile per unit: its seeds' pictures and activations
    OUT/<slug>/grid.png               rows = units, columns = seeds (wrapped when very tall)
    OUT/<slug>/unit0003_seed1.png     one picture per (unit, seed)
    OUT/natural/image0003.png         a job's [natural] images, each once

``<slug>`` is the layer name made safe for a path (``block3/conv`` -> ``block3-conv``). Every
file is written atomically (a temporary file in the same folder, then ``os.replace``), so a
reader never sees half a file, and the manifest and pages are rewritten after each layer: a
long job's gallery can be opened while it runs. The gallery is static HTML and CSS with
relative links: it opens from the filesystem, no server, no JavaScript.

>>> import numpy as np, tempfile
>>> out = RenderOutput(tempfile.mkdtemp(), config={"model": "m"}, config_sha256="0" * 64)
>>> result = RenderResult(images=np.zeros((2, 1, 8, 8, 3)), activations=np.zeros((2, 1)),
...     history=None, units=np.array([0, 1]), seeds=(0,), label="channel:a/b", layer="a/b",
...     seconds=0.0, first_call_seconds=0.0)
>>> out.add_layer("a/b", result, shape=(8, 8, 2))["slug"]
'a-b'
>>> sorted(p.name for p in out.path.glob("a-b/*"))
['grid.png', 'index.html', 'unit0000_seed0.png', 'unit0001_seed0.png']
"""

from __future__ import annotations

import datetime
import io
import json
import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fvjax.data.images import png_bytes, to_uint8
from fvjax.files import atomic_write, backend, make_directory, versions
from fvjax.job.gallery import GRID, INDEX, MANIFEST, index_page, layer_page
from fvjax.rendering import determinism
from fvjax.rendering.engine import RenderResult

FORMAT = "fvjax-render/1"
#: ``(steps, units, seeds)`` objective values along the optimization, per layer folder.
HISTORY = "history.npy"
#: The folder of a job's natural images (``[natural]``), ``image0003.png`` each.
NATURAL = "natural"
#: Files and folders at the top of ``OUT`` that a layer's folder must not be named.
_RESERVED = {MANIFEST, INDEX, NATURAL}

# -- pictures -----------------------------------------------------------------------------------


def save_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write an ``(H, W, 3)`` picture (``(H, W, 4)``: RGBA, transparent) as a PNG, atomically."""
    return atomic_write(path, png_bytes(image))


def grid_layout(n_units: int, n_seeds: int, max_rows: int = 8) -> tuple[int, int]:
    """``(rows, blocks)``: units go down ``rows`` rows, then wrap into the next block of columns.

    Up to ``max_rows`` units stay in one block; beyond, the blocks make the grid roughly square.

    >>> grid_layout(8, 2), grid_layout(16, 2), grid_layout(128, 4)
    ((8, 1), (6, 3), (22, 6))
    """
    if n_units <= max_rows:
        return n_units, 1
    blocks = max(1, round(math.sqrt(n_units / n_seeds)))
    rows = math.ceil(n_units / blocks)
    return rows, math.ceil(n_units / rows)


def grid_image(
    images: np.ndarray, gutter: int = 2, max_rows: int = 8, max_side: int = 8192
) -> np.ndarray:
    """``uint8`` grid of ``(units, seeds, H, W, C)`` pictures: a row per unit, a column per seed
    (``C`` = 4: an RGBA grid, its gutters opaque white).

    Tiles are ``gutter`` pixels apart (white); many units wrap into several blocks of columns,
    ``3 * gutter`` apart. Tiles are shrunk when the grid would be wider or taller than
    ``max_side``.

    >>> grid_image(np.zeros((3, 2, 4, 4, 3))).shape
    (16, 10, 3)
    """
    images = np.asarray(images)
    n_units, n_seeds, height, width, channels = images.shape
    rows, blocks = grid_layout(n_units, n_seeds, max_rows)
    cols = blocks * n_seeds

    def extent(n_tiles: int, tile: int, n_blocks: int) -> int:
        return n_tiles * tile + (n_tiles - 1) * gutter + (n_blocks - 1) * 2 * gutter

    room_h = (max_side - extent(rows, 0, 1)) / rows  # what is left for tiles, per tile
    room_w = (max_side - extent(cols, 0, blocks)) / cols
    shrink = min(1.0, room_h / height, room_w / width)
    tile_h, tile_w = max(1, int(height * shrink)), max(1, int(width * shrink))
    grid = np.full((extent(rows, tile_h, 1), extent(cols, tile_w, blocks), channels), 255, np.uint8)
    for u in range(n_units):
        block, row = divmod(u, rows)
        for s in range(n_seeds):
            tile = to_uint8(images[u, s])
            if (tile_h, tile_w) != (height, width):
                tile = np.asarray(Image.fromarray(tile).resize((tile_w, tile_h), Image.BOX))
            col = block * n_seeds + s
            y = row * (tile_h + gutter)
            x = col * (tile_w + gutter) + block * 2 * gutter
            grid[y : y + tile_h, x : x + tile_w] = tile
    return grid


# -- names --------------------------------------------------------------------------------------


def slugify(layer: str) -> str:
    """A layer name made safe as a folder name.

    >>> slugify("block3/conv"), slugify("stage#1")
    ('block3-conv', 'stage-1')
    """
    return re.sub(r"[^A-Za-z0-9._-]+", "-", layer).strip("-.") or "layer"


def image_name(unit: int, seed: int) -> str:
    """File name of one picture.

    >>> image_name(3, 1)
    'unit0003_seed1.png'
    """
    return f"unit{int(unit):04d}_seed{int(seed)}.png"


# -- the output directory -----------------------------------------------------------------------


class RenderOutput:
    """Writes one job's pictures, manifest and gallery into ``path``, layer by layer.

    ``started`` is the job's ``time.perf_counter()`` start, for ``timings.total_seconds``.

    Call :meth:`add_layer` with each :class:`~fvjax.rendering.engine.RenderResult` as it arrives and
    :meth:`finish` at the end; after each call the manifest and gallery describe what is done.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        config: Mapping[str, Any],
        config_sha256: str,
        model: str | None = None,
        started: float | None = None,
    ) -> None:
        self.path = Path(path)
        make_directory(self.path)  # a sentence, not [Errno 17], where it cannot be
        self.config = dict(config)
        self.config_sha256 = config_sha256
        self.model = model if model is not None else str(self.config.get("model", "model"))
        self.layers: list[dict[str, Any]] = []
        self.images: list[dict[str, Any]] = []
        self.created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        self.timings: dict[str, float] = {"render_seconds": 0.0, "write_seconds": 0.0}
        self.complete = False
        #: more top-level manifest entries (e.g. ``shards`` of a merged job)
        self.extra: dict[str, Any] = {}
        self._start = started if started is not None else time.perf_counter()

    def _slug(self, layer: str) -> str:
        taken = {entry["slug"] for entry in self.layers} | _RESERVED
        slug, n = slugify(layer), 1
        while slug in taken:
            n += 1
            slug = f"{slugify(layer)}-{n}"
        return slug

    def add_layer(
        self,
        layer: str,
        result: RenderResult,
        shape: Sequence[int] | None = None,
        unit_names: Sequence[str | None] | None = None,
        degenerate: Sequence[str | None] | None = None,
        details: Sequence[Mapping[str, Any]] | None = None,
    ) -> dict:
        """Write ``result``'s pictures and grid for ``layer``; refresh manifest and gallery.

        ``unit_names``, one per row of ``result`` (``None`` where unnamed), label the units;
        ``degenerate``, one per picture (unit-major, ``None`` where fine), marks the pictures
        that show nothing (:func:`fvjax.checks.degenerate.degenerate_pictures`); ``details``,
        one per picture (unit-major), are more keys of its manifest entry (an inversion's
        ``natural`` image, shown beside its row, and its ``error``).

        Returns the layer's manifest entry.
        """
        start = time.perf_counter()
        slug = self._slug(layer)
        folder = self.path / slug
        activations = np.asarray(result.activations, np.float32)
        entries = []
        for i, unit in enumerate(np.asarray(result.units).tolist()):
            for j, seed in enumerate(result.seeds):
                name = image_name(unit, seed)
                save_png(folder / name, result.images[i, j])
                entry = {
                    "layer": layer,
                    "unit": int(unit),
                    "seed": int(seed),
                    "file": f"{slug}/{name}",
                    "activation": float(activations[i, j]),
                }
                if unit_names is not None and unit_names[i] is not None:
                    entry["unit_name"] = unit_names[i]
                if degenerate is not None and degenerate[len(entries)]:
                    entry["degenerate"] = degenerate[len(entries)]
                if details is not None:
                    entry.update(details[len(entries)])
                entries.append(entry)
        grid = grid_image(result.images)
        atomic_write(folder / GRID, png_bytes(grid))
        if result.history is not None:  # the unit cards draw the optimization curves
            buffer = io.BytesIO()
            np.save(buffer, np.asarray(result.history, np.float32))
            atomic_write(folder / HISTORY, buffer.getvalue())
        entry = {
            "layer": layer,
            "slug": slug,
            "label": result.label,
            "shape": list(shape) if shape is not None else None,
            "units": [int(u) for u in np.asarray(result.units).tolist()],
            "seeds": [int(s) for s in result.seeds],
            "image_size": list(np.asarray(result.images).shape[2:4]),
            "grid": f"{slug}/{GRID}",
            "grid_size": list(grid.shape[:2]),
            "page": f"{slug}/{INDEX}",
            "activation_mean": float(activations.mean()),
            "activation_max": float(activations.max()),
            "seconds": float(result.seconds),
            "first_call_seconds": float(result.first_call_seconds),
        }
        self.layers.append(entry)
        self.images.extend(entries)
        self.timings["render_seconds"] += float(result.seconds)
        page = layer_page(entry, entries, self.model, procedure=self.extra.get("procedure"))
        atomic_write(folder / INDEX, page)
        self.timings["write_seconds"] += time.perf_counter() - start
        self._write_index()
        return entry

    def add_natural(
        self, images: np.ndarray, names: Sequence[str], source: Mapping[str, Any]
    ) -> list[str]:
        """Write a job's natural images ``(I, H, W, 3)`` once, ``OUT/natural/image0003.png``,
        and record them as the manifest's ``natural``: ``source`` (where they come from) and
        each image's index, name and file. Returns the files, relative to ``OUT``.

        >>> import tempfile
        >>> out = RenderOutput(tempfile.mkdtemp(), config={}, config_sha256="0" * 64)
        >>> out.add_natural(np.zeros((2, 4, 4, 3)), ["a.png", "b.png"], {"source": "pics"})
        ['natural/image0000.png', 'natural/image0001.png']
        >>> out.manifest()["natural"]["images"][1]
        {'index': 1, 'name': 'b.png', 'file': 'natural/image0001.png'}
        """
        files = [f"{NATURAL}/image{i:04d}.png" for i in range(len(images))]
        for file, image in zip(files, images, strict=True):
            save_png(self.path / file, image)
        rows = zip(range(len(files)), names, files, strict=True)
        self.extra["natural"] = {
            **source,
            "images": [{"index": i, "name": name, "file": file} for i, name, file in rows],
        }
        return files

    def manifest(self) -> dict[str, Any]:
        """The manifest as a dict (what ``manifest.json`` holds)."""
        return {
            "format": FORMAT,
            "complete": self.complete,
            "created": self.created,
            "model": self.model,
            "config": self.config,
            "config_sha256": self.config_sha256,
            "versions": versions(),
            "backend": backend(),
            "determinism": determinism.status(),
            "timings": {
                **{k: round(v, 4) for k, v in self.timings.items()},
                "total_seconds": round(time.perf_counter() - self._start, 4),
            },
            "layers": self.layers,
            "images": self.images,
            **self.extra,
        }

    def _write_index(self) -> None:
        manifest = self.manifest()
        write_manifest(self.path, manifest)
        atomic_write(self.path / INDEX, index_page(manifest))

    def finish(self, **timings: float) -> dict[str, Any]:
        """Mark the job complete, record extra ``timings`` and write the final manifest."""
        self.complete = True
        self.timings.update({k: float(v) for k, v in timings.items()})
        self._write_index()
        return self.manifest()


def write_manifest(path: str | os.PathLike, manifest: Mapping[str, Any]) -> Path:
    """``path/manifest.json``, atomically (no NaN: the manifest is strict JSON)."""
    return atomic_write(Path(path) / MANIFEST, json.dumps(manifest, indent=1, allow_nan=False))


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest of an output directory (or of a ``manifest.json`` path)."""
    path = Path(path)
    return json.loads((path / MANIFEST if path.is_dir() else path).read_text())
