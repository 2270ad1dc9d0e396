"""Data: the procedural world with its per-pixel concept masks, and folders of image files.

Plain numpy and pillow, no model: everything here is what a model is run *on*
(:mod:`fvjax.checks` runs models over it).

- :mod:`~fvjax.data.world`: ``generate(seed, n, size)`` scenes with 25 concept labels and
  masks, and :func:`world_batches` to stream them;
- :mod:`~fvjax.data.images`: :func:`load_image_folder` streams any folder pillow reads.
"""

from fvjax.data import world
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
