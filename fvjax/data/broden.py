"""Concept datasets in NetDissect's Broden layout: read one, or export the world as one.

A Broden folder holds ``index.csv`` (a row per image: its file under ``images/``, its size
``ih, iw``, its masks' size ``sh, sw``, and per category a ``;``-separated list of label PNGs or
whole-image label numbers), ``category.csv``, ``label.csv`` and a ``c_<category>.csv`` per
category. A label PNG holds label number ``R + 256 * G`` at each pixel, 0 where unlabelled. A
label listed under several categories takes as its *primary* category the one where its
coverage (``c_<category>.csv``) is largest, as NetDissect does.

>>> import tempfile
>>> folder = write_broden(Path(tempfile.mkdtemp()) / "broden", seed=0, n=4, size=32)
>>> data = load_broden(folder, size=32)
>>> batch = next(data.batches(4))
>>> batch.images.shape, batch.masks.shape[-2:], data.concepts.names[:2]
((4, 32, 32, 3), (32, 32), ('disk', 'square'))
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from fvjax.data import world as world_lib
from fvjax.data.datasets import Concepts, Examples, check_batch_size, checked_indices
from fvjax.data.images import as_size, load_image, to_uint8
from fvjax.errors import ArgumentError, ConceptDatasetError, did_you_mean
from fvjax.files import write_directory

#: The columns of each file (``index.csv`` adds one column per category).
INDEX_COLUMNS = ("image", "split", "ih", "iw", "sh", "sw")
CATEGORY_COLUMNS = ("name", "first", "last", "count", "frequency")
LABEL_COLUMNS = ("number", "name", "category", "frequency", "coverage", "syns")
CODE_COLUMNS = ("code", "number", "name", "frequency", "coverage")

_WORKERS = min(8, os.cpu_count() or 1)  # PNG decoding releases the GIL
_CHUNK = 256  # world images generated at a time by write_broden


# -- writing --------------------------------------------------------------------------------


def write_broden(
    directory: str | Path,
    seed: int,
    n: int,
    size: int | tuple[int, int],
    mask_size: int | tuple[int, int] | None = None,
) -> Path:
    """Export images ``0 .. n-1`` of ``world.generate(seed, n, size)`` as a Broden folder.

    The categories are the world's ``CONCEPT_GROUPS``, label ``c + 1`` is ``CONCEPTS[c]``.
    Images are lossless PNGs (the world's pixels rounded to 8 bits); each image gets one label
    PNG per category it shows (objects never overlap, so one channel holds a category), at
    ``mask_size`` (default ``size``, nearest-neighbour). The statistics are NetDissect's:
    ``frequency`` the images showing a label, ``coverage`` the pixels it covers in units of
    whole images (the sum over images of its fraction of the mask), a category's
    ``frequency`` the sum of its labels'. The folder appears whole or not at all.

    >>> import tempfile
    >>> folder = write_broden(Path(tempfile.mkdtemp()) / "w", seed=1, n=2, size=24)
    >>> sorted(p.name for p in folder.iterdir())[:4]
    ['c_colour.csv', 'c_orientation.csv', 'c_scale.csv', 'c_shape.csv']
    """
    if not isinstance(n, int | np.integer) or isinstance(n, bool) or n < 1:
        raise ArgumentError(f"write_broden needs n >= 1 images, got {n!r}")
    size = as_size(size)
    mask_size = size if mask_size is None else as_size(mask_size)
    if min(mask_size) < 1:
        raise ArgumentError(f"mask_size must be at least 1x1, got {mask_size}")
    path = Path(directory)
    spans, first = {}, 0
    for group, members in world_lib.CONCEPT_GROUPS.items():
        spans[group] = (first, first + len(members))
        first += len(members)

    def write(staging: Path) -> None:
        folder = staging / "images" / "world"
        folder.mkdir(parents=True)
        frequency = np.zeros(len(world_lib.CONCEPTS) + 1, np.int64)
        coverage = np.zeros(len(world_lib.CONCEPTS) + 1, np.float64)
        rows = []
        digits = len(str(n - 1))
        batches = world_lib.world_batches(int(seed), size, _CHUNK, int(n))
        for start, world in zip(range(0, n, _CHUNK), batches, strict=True):
            masks = world.masks()
            for j, image in enumerate(world.images):
                stem = f"{start + j:0{digits}d}"
                Image.fromarray(to_uint8(image), "RGB").save(folder / f"{stem}.png")
                row = {"image": f"world/{stem}.png", "split": "train", "ih": size[0]}
                row |= {"iw": size[1], "sh": mask_size[0], "sw": mask_size[1]}
                for group, (low, high) in spans.items():
                    numbers = np.zeros(size, np.int64)
                    for concept in range(low, high):
                        numbers[masks[j, concept]] = concept + 1
                    numbers = _nearest(numbers, mask_size)
                    counts = np.bincount(numbers.ravel(), minlength=len(frequency))
                    counts[0] = 0
                    row[group] = ""
                    if counts.any():
                        row[group] = f"world/{stem}_{group}.png"
                        _save_label_png(folder / f"{stem}_{group}.png", numbers)
                        frequency += counts > 0
                        coverage += counts / numbers.size
                rows.append(row)
        _write_csv(staging / "index.csv", INDEX_COLUMNS + tuple(spans), rows)
        labels, categories = [], []
        for group, (low, high) in spans.items():
            codes = []
            for code, concept in enumerate(range(low, high), start=1):
                number, name = concept + 1, world_lib.CONCEPTS[concept]
                stats = {"frequency": frequency[number], "coverage": f"{coverage[number]:.6f}"}
                of = {"category": f"{group}({frequency[number]})", "syns": ""}
                labels.append({"number": number, "name": name} | stats | of)
                codes.append({"code": code, "number": number, "name": name} | stats)
            _write_csv(staging / f"c_{group}.csv", CODE_COLUMNS, codes)
            total = int(frequency[low + 1 : high + 1].sum())
            categories.append(
                {"name": group, "first": low + 1, "last": high, "count": high - low}
                | {"frequency": total}
            )
        _write_csv(staging / "category.csv", CATEGORY_COLUMNS, categories)
        _write_csv(staging / "label.csv", LABEL_COLUMNS, labels)

    write_directory(path, write)
    return path


def _write_csv(path: Path, columns: Sequence[str], rows: list[dict]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(text.getvalue())


def _save_label_png(path: Path, numbers: np.ndarray) -> None:
    """Label numbers (< 65536) as an RGB PNG: ``R = number % 256``, ``G = number // 256``."""
    rgb = np.zeros((*numbers.shape, 3), np.uint8)
    rgb[..., 0] = numbers % 256
    rgb[..., 1] = numbers // 256
    Image.fromarray(rgb, "RGB").save(path)


def _nearest(
    values: np.ndarray, size: tuple[int, int], box: tuple[float, ...] = (0.0, 0.0, 1.0, 1.0)
) -> np.ndarray:
    """``(h, w)`` -> ``size`` by nearest neighbour: output pixel ``i`` takes the source pixel
    under its centre. ``box``: ``(top, left, height, width)``, the part of the source (as
    fractions) the output covers."""
    if values.shape == tuple(size) and box == (0.0, 0.0, 1.0, 1.0):
        return values
    top, left, height, width = box
    picks = []
    for start, extent, out, source in zip(
        (top, left), (height, width), size, values.shape, strict=True
    ):
        centres = (start + (np.arange(out) + 0.5) / out * extent) * source
        picks.append(np.clip(np.floor(centres + 1e-6).astype(np.int64), 0, source - 1))
    return values[picks[0][:, None], picks[1]]


# -- reading --------------------------------------------------------------------------------


class BrodenRow(NamedTuple):
    """One image of a Broden folder (files relative to ``images/``)."""

    image: str
    image_size: tuple[int, int]  # (ih, iw)
    mask_size: tuple[int, int]  # (sh, sw)
    channels: tuple[str, ...]  # label PNGs of the chosen categories
    scalars: tuple[int, ...]  # whole-image label numbers


@dataclasses.dataclass(frozen=True, eq=False)
class BrodenDataset:
    """A Broden folder as a :class:`~fvjax.data.datasets.Dataset` (see :func:`load_broden`).

    Slot ``k`` of an image holds its ``k``-th distinct concept (ascending ids), ``-1`` after
    the last. ``numbers[c]`` is concept ``c``'s Broden label number.
    """

    directory: Path
    size: tuple[int, int]
    mask_size: tuple[int, int]
    slots: int
    concepts: Concepts
    numbers: tuple[int, ...]
    rows: tuple[BrodenRow, ...] = dataclasses.field(repr=False)
    lookup: np.ndarray = dataclasses.field(repr=False)  # (65536,) number -> concept id or -1

    @property
    def name(self) -> str:
        height, width = self.size
        return (
            f"Broden {self.directory} ({len(self)} images at {height}x{width}, "
            f"categories {', '.join(self.concepts.categories)})"
        )

    def __len__(self) -> int:
        return len(self.rows)

    def batches(self, batch_size: int, start: int = 0) -> Iterator[Examples]:
        batch_size = check_batch_size(batch_size)
        for first in range(start, len(self), batch_size):
            positions = range(first, min(first + batch_size, len(self)))
            with ThreadPoolExecutor(_WORKERS) as pool:
                images = list(pool.map(self._image, positions))
                examples = list(pool.map(self._example, positions))
            yield Examples(
                images=np.stack(images),
                index=np.arange(first, first + len(positions), dtype=np.int64),
                labels=np.stack([labels for labels, _ in examples]),
                masks=np.stack([masks for _, masks in examples]),
            )

    def images(self, indices: Sequence[int]) -> np.ndarray:
        indices = checked_indices(indices, len(self))
        if not len(indices):
            return np.zeros((0, *self.size, 3), np.float32)
        with ThreadPoolExecutor(_WORKERS) as pool:
            images = list(pool.map(self._image, indices.tolist()))
        return np.stack(images).reshape(len(indices), *self.size, 3)

    def describe(self, index: int) -> str:
        return str(self.directory / "images" / self.rows[index].image)

    def _image(self, position: int) -> np.ndarray:
        path = self.directory / "images" / self.rows[position].image
        try:
            return load_image(path, self.size)
        except Exception as exc:  # pillow raises many kinds for a broken file
            raise ConceptDatasetError(
                f"cannot read image {path}: {type(exc).__name__}: {exc}"
            ) from exc

    def _example(self, position: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``(M,)`` concept ids and ``(M, h, w)`` masks of one image."""
        row = self.rows[position]
        box = _crop_box(row.image_size, self.size)
        planes: dict[int, np.ndarray] = {}
        for file, numbers in _label_maps(self.directory, row):
            numbers = _nearest(numbers, self.mask_size, box)
            for number in np.unique(numbers[numbers > 0]):
                concept = self._concept(int(number), file)
                planes[concept] = planes.get(concept, False) | (numbers == number)
        for number in row.scalars:
            planes[int(self.lookup[number])] = np.ones(self.mask_size, bool)
        if len(planes) > self.slots:
            raise ConceptDatasetError(
                f"image {row.image} has {len(planes)} distinct labels, more than the "
                f"{self.slots} mask slots; load it with slots={len(planes)} or more"
            )
        labels = np.full(self.slots, -1, np.int32)
        masks = np.zeros((self.slots, *self.mask_size), bool)
        for slot, concept in enumerate(sorted(planes)):
            labels[slot], masks[slot] = concept, planes[concept]
        return labels, masks

    def _concept(self, number: int, file: Path) -> int:
        concept = int(self.lookup[number])
        if concept < 0:
            raise ConceptDatasetError(
                f"mask {file} holds label number {number}, which no c_<category>.csv of the "
                f"categories {', '.join(self.concepts.categories)} lists"
            )
        return concept

    def _count_labels(self, position: int) -> int:
        """Distinct labels of one image (at its own mask size, so never fewer than later)."""
        row = self.rows[position]
        found = set(row.scalars)
        for file, numbers in _label_maps(self.directory, row):
            counts = np.bincount(numbers.ravel())
            counts[0] = 0  # unlabelled
            for number in np.flatnonzero(counts).tolist():
                self._concept(number, file)  # an unknown number is an error now, not later
                found.add(number)
        return len(found)


def load_broden(
    directory: str | Path,
    size: int | tuple[int, int],
    categories: Sequence[str] | None = None,
    mask_size: int | tuple[int, int] | None = None,
    slots: int | None = None,
) -> BrodenDataset:
    """A Broden folder as a dataset: images resized and centre-cropped to ``size``, masks the
    same part of the image at ``mask_size`` (nearest neighbour).

    Args:
        directory: the folder holding ``index.csv`` and ``images/``.
        size: ``H`` (square) or ``(H, W)`` of the images.
        categories: the categories to read (default: all of ``category.csv``). As in
            NetDissect, rows without a label in them are left out.
        mask_size: ``(h, w)`` of the masks (default: ``sh, sw`` of the first row).
        slots: mask slots per image (default: the most distinct labels an image has, found by
            reading every label PNG once; give it to skip that pass). An image with more
            labels than ``slots`` is an error when it is read.

    Concepts are the labels the chosen categories' ``c_<category>.csv`` list, by ascending
    label number (``numbers`` maps back). The ``split`` column is not read: every row counts.

    >>> import tempfile
    >>> folder = write_broden(Path(tempfile.mkdtemp()) / "w", seed=2, n=3, size=32)
    >>> data = load_broden(folder, size=32, categories=["colour"], mask_size=16)
    >>> data.concepts.categories, data.mask_size, data.slots <= 3
    (('colour',), (16, 16), True)
    """
    root = Path(directory)
    if not root.is_dir():
        raise ConceptDatasetError(f"Broden folder {root} does not exist or is not a folder")
    available = [row["name"] for _, row in _read_csv(root / "category.csv", ("name",))]
    chosen = _choose(available, categories, root)

    names = {}
    for where, row in _read_csv(root / "label.csv", LABEL_COLUMNS):
        names[_int(row["number"], f"{where}, column number")] = row["name"]
    coverage: dict[int, dict[str, float]] = {}
    for category in chosen:
        for where, row in _read_csv(root / f"c_{category}.csv", CODE_COLUMNS):
            number = _int(row["number"], f"{where}, column number")
            if number == 0:
                continue
            if number not in names or not 0 < number < 65536:
                raise ConceptDatasetError(
                    f"{where}: label number {number} is not in label.csv (numbers: 1..65535)"
                )
            try:
                coverage.setdefault(number, {})[category] = float(row["coverage"] or 0)
            except ValueError:
                raise ConceptDatasetError(
                    f"{where}: coverage {row['coverage']!r} is not a number"
                ) from None
    numbers = tuple(sorted(coverage))
    primary = [
        max(coverage[n], key=lambda c, n=n: (coverage[n][c], -chosen.index(c))) for n in numbers
    ]
    concepts = Concepts(
        names=tuple(names[n] for n in numbers),
        categories=tuple(chosen),
        category=np.array([chosen.index(c) for c in primary], np.int64),
    )
    lookup = np.full(65536, -1, np.int32)
    lookup[list(numbers)] = np.arange(len(numbers), dtype=np.int32)

    rows = _read_index(root, chosen, lookup)
    mask_size = rows[0].mask_size if mask_size is None else as_size(mask_size)
    if min(mask_size) < 1:
        raise ArgumentError(f"mask_size must be at least 1x1, got {mask_size}")
    if slots is not None and (not isinstance(slots, int | np.integer) or slots < 1):
        raise ArgumentError(f"slots must be an int >= 1, got {slots!r}")
    dataset = BrodenDataset(
        root, as_size(size), mask_size, int(slots or 1), concepts, numbers, rows, lookup
    )
    if slots is None:
        with ThreadPoolExecutor(_WORKERS) as pool:
            most = max(pool.map(dataset._count_labels, range(len(rows))))
        dataset = dataclasses.replace(dataset, slots=max(1, most))
    return dataset


def _choose(available: list[str], categories: Sequence[str] | None, root: Path) -> list[str]:
    if categories is None:
        return available
    categories = [categories] if isinstance(categories, str) else list(categories)
    for category in categories:
        if category not in available:
            raise ConceptDatasetError(
                f"unknown category {category!r}.{did_you_mean(category, available)} "
                f"{root / 'category.csv'} lists: {', '.join(available)}"
            )
    if not categories:
        raise ArgumentError(f"categories is empty; choose from {', '.join(available)}")
    return [c for c in available if c in categories]


def _read_csv(path: Path, columns: Sequence[str]) -> list[tuple[str, dict[str, str]]]:
    """``(where, row)`` for each row of a CSV file that must have ``columns``."""
    if not path.is_file():
        raise ConceptDatasetError(
            f"{path} is missing: a Broden folder holds index.csv, category.csv, label.csv "
            "and a c_<category>.csv per category"
        )
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        missing = [c for c in columns if c not in (reader.fieldnames or ())]
        if missing:
            raise ConceptDatasetError(
                f"{path} lacks the column(s) {', '.join(missing)}; it has "
                f"{', '.join(reader.fieldnames or ()) or 'no header'}"
            )
        rows = list(reader)
    return [(f"{path} line {line}", row) for line, row in enumerate(rows, start=2)]


def _int(value: str | None, where: str) -> int:
    try:
        return int(value or "")
    except ValueError:
        raise ConceptDatasetError(f"{where}: {value!r} is not an integer") from None


def _read_index(root: Path, chosen: list[str], lookup: np.ndarray) -> tuple[BrodenRow, ...]:
    """The rows of ``index.csv`` with a label in ``chosen``, their files checked to exist."""
    index = root / "index.csv"
    table = _read_csv(index, INDEX_COLUMNS + tuple(chosen))
    if not table:
        raise ConceptDatasetError(f"{index} has no rows: the dataset holds no images")
    rows = []
    for where, record in table:
        sizes = [_int(record[c], f"{where}, column {c}") for c in ("ih", "iw", "sh", "sw")]
        if min(sizes) < 1:
            raise ConceptDatasetError(f"{where}: ih, iw, sh, sw must be >= 1, got {sizes}")
        channels, scalars = [], []
        for category in chosen:
            for item in (record[category] or "").split(";"):
                item = item.strip()
                if item.isdigit():
                    if not 0 < int(item) < 65536 or lookup[int(item)] < 0:
                        raise ConceptDatasetError(
                            f"{where}, column {category}: label number {item} is not listed "
                            f"in c_{category}.csv"
                        )
                    scalars.append(int(item))
                elif item:
                    channels.append(item)
        if not channels and not scalars:
            continue
        for file in (record["image"], *channels):
            if not (root / "images" / file).is_file():
                raise ConceptDatasetError(f"{where}: file {root / 'images' / file} does not exist")
        rows.append(
            BrodenRow(
                record["image"],
                (sizes[0], sizes[1]),
                (sizes[2], sizes[3]),
                tuple(dict.fromkeys(channels)),
                tuple(dict.fromkeys(scalars)),
            )
        )
    if not rows:
        raise ConceptDatasetError(
            f"none of the {len(table)} rows of {index} has a label in the categories "
            f"{', '.join(chosen)}"
        )
    return tuple(rows)


def _crop_box(image_size: tuple[int, int], size: tuple[int, int]) -> tuple[float, ...]:
    """``(top, left, height, width)``: the part of an image ``load_image`` keeps, as fractions."""
    scale = max(size[0] / image_size[0], size[1] / image_size[1])
    height, width = size[0] / scale / image_size[0], size[1] / scale / image_size[1]
    return ((1 - height) / 2, (1 - width) / 2, height, width)


def _label_maps(root: Path, row: BrodenRow) -> Iterator[tuple[Path, np.ndarray]]:
    """``(file, (sh, sw) int64 label numbers)`` of each label PNG of a row."""
    for channel in row.channels:
        path = root / "images" / channel
        try:
            with Image.open(path) as image:
                mode, pixels = image.mode, np.asarray(image)
        except Exception as exc:  # pillow raises many kinds for a broken file
            raise ConceptDatasetError(
                f"cannot read mask {path}: {type(exc).__name__}: {exc}"
            ) from exc
        if pixels.shape[:2] != row.mask_size:
            raise ConceptDatasetError(
                f"mask {path} is {pixels.shape[0]}x{pixels.shape[1]} (h x w), but its row of "
                f"index.csv gives sh x sw = {row.mask_size[0]}x{row.mask_size[1]}"
            )
        if mode in ("RGB", "RGBA"):
            numbers = pixels[..., 0].astype(np.int64) + 256 * pixels[..., 1].astype(np.int64)
        elif mode in ("L", "I", "I;16"):
            numbers = pixels.astype(np.int64)
        else:
            raise ConceptDatasetError(
                f"mask {path} is a {mode} image; label PNGs are RGB (R + 256 * G) or greyscale"
            )
        yield path, numbers
