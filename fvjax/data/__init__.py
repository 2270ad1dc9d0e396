"""Data: the procedural world with its per-pixel concept masks, and folders of image files.

Plain numpy and pillow, no model: everything here is what a model is run *on*
(:mod:`fvjax.checks` runs models over it).

- :mod:`~fvjax.data.world`: ``generate(seed, n, size)`` scenes with 25 concept labels and
  masks, and :func:`world_batches` to stream them;
- :mod:`~fvjax.data.images`: :func:`load_image_folder` streams any folder pillow reads;
- :mod:`~fvjax.data.datasets`: one :class:`Dataset` interface for the checks
  (:func:`world_dataset`, :func:`folder_dataset`);
- :mod:`~fvjax.data.broden`: :func:`load_broden` reads NetDissect's Broden layout,
  :func:`write_broden` exports the world in it.
"""

from fvjax.data import world
from fvjax.data.broden import load_broden, write_broden
from fvjax.data.datasets import (
    Concepts,
    Dataset,
    Examples,
    FolderDataset,
    WorldDataset,
    folder_dataset,
    world_dataset,
)
from fvjax.data.images import (
    ImageBatch,
    ImageFolder,
    UnreadableImageWarning,
    as_size,
    image_extensions,
    load_image,
    load_image_folder,
    resize_and_crop,
    rgb_array,
)
from fvjax.data.world import World, world_batches
from fvjax.errors import ImageFolderError

__all__ = [
    "Concepts",
    "Dataset",
    "Examples",
    "FolderDataset",
    "WorldDataset",
    "folder_dataset",
    "load_broden",
    "world_dataset",
    "write_broden",
    "ImageBatch",
    "ImageFolder",
    "ImageFolderError",
    "UnreadableImageWarning",
    "World",
    "as_size",
    "image_extensions",
    "load_image",
    "load_image_folder",
    "resize_and_crop",
    "rgb_array",
    "world",
    "world_batches",
]
