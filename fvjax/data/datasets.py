"""Datasets the checks read: images with, where known, per-pixel concept masks.

Every source (the procedural world, a folder of image files, a concept dataset in NetDissect's
Broden layout) offers the same small interface, :class:`Dataset`: its length, batches of
:class:`Examples` in a fixed order, and random access to images by index (a unit card shows
its top images again after the pass). Concepts are named once per dataset by a
:class:`Concepts` vocabulary; a batch holds, per image, a fixed number ``M`` of mask *slots*,
each a concept id and a boolean mask (id ``-1``: an empty slot). A fixed ``M`` keeps the
compiled pass to one shape whatever each image holds.

>>> data = world_dataset(seed=0, n=6, size=32)
>>> batch = next(data.batches(4))
>>> batch.images.shape, batch.labels.shape, batch.masks.shape
((4, 32, 32, 3), (4, 15), (4, 15, 32, 32))
>>> data.concepts.names[:2], data.concepts.categories[:2]
(('disk', 'square'), ('shape', 'colour'))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np

from fvjax.data import world as world_lib
from fvjax.data.images import ImageFolder, as_size, load_image, load_image_folder
from fvjax.errors import ArgumentError


class Concepts(NamedTuple):
    """A concept vocabulary: concept ``c`` is ``names[c]``, of category
    ``categories[category[c]]`` (NetDissect's "primary category": colour, object, texture...).

    >>> concepts = Concepts(("red", "disk"), ("colour", "shape"), np.array([0, 1]))
    >>> concepts.of_category("shape")
    ('disk',)
    """

    names: tuple[str, ...]
    categories: tuple[str, ...]
    category: np.ndarray  # (C,) int

    def of_category(self, category: str) -> tuple[str, ...]:
        index = self.categories.index(category)
        return tuple(n for n, c in zip(self.names, self.category, strict=True) if c == index)


class Examples(NamedTuple):
    """A batch of a dataset.

    Attributes:
        images: ``(B, H, W, 3)`` float32 RGB in [0, 1].
        index: ``(B,)`` int64, each image's position in its dataset.
        labels: ``(B, M)`` int32 concept ids of the mask slots, ``-1`` for an empty slot.
        masks: ``(B, M, h, w)`` bool, the pixels of each slot's concept (``h, w``: the
            dataset's mask size, which may be smaller than the images, as Broden's are).
    """

    images: np.ndarray
    index: np.ndarray
    labels: np.ndarray
    masks: np.ndarray


@runtime_checkable
class Dataset(Protocol):
    """What the checks need of a dataset.

    Attributes:
        name: a short description, for reports ("world seed 0, 2000 images at 64 px").
        size: ``(H, W)`` of the images.
        mask_size: ``(h, w)`` of the masks.
        slots: ``M``, mask slots per image (0 when the dataset has no masks).
        concepts: the vocabulary, or ``None`` for images without masks.
    """

    name: str
    size: tuple[int, int]
    mask_size: tuple[int, int]
    slots: int
    concepts: Concepts | None

    def __len__(self) -> int: ...

    def batches(self, batch_size: int, start: int = 0) -> Iterator[Examples]:
        """Images ``start ..`` in order, ``batch_size`` at a time (the last may be smaller)."""
        ...

    def images(self, indices: Sequence[int]) -> np.ndarray:
        """``(n, H, W, 3)`` float32: the images at ``indices``."""
        ...

    def describe(self, index: int) -> str:
        """Where image ``index`` comes from: a file name, or the world's seed and index."""
        ...


def check_batch_size(batch_size: int) -> int:
    if not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ArgumentError(f"batch_size must be an int >= 1, got {batch_size!r}")
    return int(batch_size)


#: Mask slots of a world image: every concept it can hold at once.
WORLD_SLOTS = world_lib.MAX_OBJECTS * len(world_lib.CONCEPT_GROUPS)

WORLD_CONCEPTS = Concepts(
    names=world_lib.CONCEPTS,
    categories=tuple(world_lib.CONCEPT_GROUPS),
    category=np.array(
        [i for i, group in enumerate(world_lib.CONCEPT_GROUPS.values()) for _ in group]
    ),
)


@dataclasses.dataclass(frozen=True)
class WorldDataset:
    """Images ``0 .. n-1`` of ``world.generate(seed, n, size)`` with every concept's mask.

    An image holds at most :data:`WORLD_SLOTS` concepts (3 objects, each one concept of each
    of the 5 categories at most), so its non-empty masks always fit ``M = 15`` slots (fewer
    slots than the 25 concepts: less work for dissection).
    """

    seed: int
    n: int
    size: tuple[int, int]
    concepts: Concepts = WORLD_CONCEPTS

    @property
    def name(self) -> str:
        return f"world seed {self.seed}, {self.n} images at {self.size[0]}x{self.size[1]}"

    @property
    def mask_size(self) -> tuple[int, int]:
        return self.size

    @property
    def slots(self) -> int:
        return WORLD_SLOTS

    def __len__(self) -> int:
        return self.n

    def batches(self, batch_size: int, start: int = 0) -> Iterator[Examples]:
        batch_size = check_batch_size(batch_size)
        for first in range(start, self.n, batch_size):
            count = min(batch_size, self.n - first)
            world = world_lib.generate(self.seed, count, self.size, start=first)
            masks = world.masks()  # (n, 25, H, W)
            present = masks.any(axis=(2, 3))
            order = np.argsort(~present, axis=1, kind="stable")[:, :WORLD_SLOTS]
            labels = np.where(np.take_along_axis(present, order, 1), order, -1).astype(np.int32)
            yield Examples(
                images=world.images,
                index=np.arange(first, first + count, dtype=np.int64),
                labels=labels,
                masks=np.take_along_axis(masks, order[:, :, None, None], 1),
            )

    def images(self, indices: Sequence[int]) -> np.ndarray:
        indices = checked_indices(indices, self.n)
        out = np.zeros((len(indices), *self.size, 3), np.float32)
        for i, index in enumerate(indices):
            out[i] = world_lib.generate(self.seed, 1, self.size, start=int(index)).images[0]
        return out

    def describe(self, index: int) -> str:
        return f"world seed {self.seed} image {index}"


def world_dataset(seed: int, n: int, size: int | tuple[int, int]) -> WorldDataset:
    """The first ``n`` images of the world drawn from ``seed``, with their concept masks.

    >>> len(world_dataset(seed=0, n=10, size=32))
    10
    """
    if not isinstance(n, int | np.integer) or n < 1:
        raise ArgumentError(f"a world dataset needs n >= 1 images, got {n!r}")
    return WorldDataset(seed=int(seed), n=int(n), size=as_size(size))


@dataclasses.dataclass(frozen=True)
class FolderDataset:
    """The readable images of a folder, without masks (dissection needs a concept dataset)."""

    folder: ImageFolder
    concepts: Concepts | None = None
    slots: int = 0

    @property
    def name(self) -> str:
        return f"{self.folder.path} ({len(self.folder.files)} images)"

    @property
    def size(self) -> tuple[int, int]:
        return self.folder.size

    @property
    def mask_size(self) -> tuple[int, int]:
        return self.folder.size

    def __len__(self) -> int:
        return len(self.folder.files)

    def batches(self, batch_size: int, start: int = 0) -> Iterator[Examples]:
        batch_size = check_batch_size(batch_size)
        files = self.folder.files[start:]
        for first in range(0, len(files), batch_size):
            chunk = files[first : first + batch_size]
            images = np.stack([self._load(path) for path in chunk])
            count = len(chunk)
            yield Examples(
                images=images,
                index=np.arange(start + first, start + first + count, dtype=np.int64),
                labels=np.zeros((count, 0), np.int32),
                masks=np.zeros((count, 0, *self.size), bool),
            )

    def _load(self, path: Path) -> np.ndarray:
        try:
            return load_image(path, self.size)
        except Exception as exc:  # pillow raises many kinds for a broken file
            raise OSError(f"cannot read image {path}: {type(exc).__name__}: {exc}") from exc

    def images(self, indices: Sequence[int]) -> np.ndarray:
        indices = checked_indices(indices, len(self))
        return np.stack([self._load(self.folder.files[i]) for i in indices]).reshape(
            len(indices), *self.size, 3
        )

    def describe(self, index: int) -> str:
        return str(self.folder.files[index])


def folder_dataset(path: str | Path, size: int | tuple[int, int]) -> FolderDataset:
    """The images of a folder (sorted by name), resized and centre-cropped to ``size``.

    A broken file stops the pass with its name: a check over a silently shrunken dataset
    would report other numbers than the user thinks.
    """
    return FolderDataset(load_image_folder(path, size, batch_size=1))


def checked_indices(indices: Sequence[int], n: int) -> np.ndarray:
    indices = np.asarray(indices, np.int64).reshape(-1)
    bad = indices[(indices < 0) | (indices >= n)]
    if bad.size:
        raise ArgumentError(f"image indices {bad[:5].tolist()} out of range for {n} images")
    return indices
