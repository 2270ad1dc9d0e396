"""Image files: a folder of them streamed in batches, and the reading of one.

Nothing is held beyond the batch being built. Images come out as ``(B, H, W, 3)`` float32 RGB
in [0, 1], whatever the files held (greyscale, palette, RGBA composited over white, 16-bit),
resized so they cover ``size`` and then centre-cropped to it.

>>> import tempfile
>>> from PIL import Image
>>> folder = Path(tempfile.mkdtemp())
>>> Image.new("RGB", (40, 30), "red").save(folder / "red.png")
>>> batches = list(load_image_folder(folder, size=16, batch_size=8))
>>> batches[0].images.shape, batches[0].paths[0].name
((1, 16, 16, 3), 'red.png')
"""

from __future__ import annotations

import dataclasses
import io
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageOps

from fvjax.errors import ImageFolderError


def as_size(size: int | tuple[int, int]) -> tuple[int, int]:
    """``(height, width)`` of a picture size given as an int (square) or a pair.

    >>> as_size(64), as_size((48, 80))
    ((64, 64), (48, 80))
    """
    if isinstance(size, int | np.integer):
        return int(size), int(size)
    height, width = size
    return int(height), int(width)


class UnreadableImageWarning(UserWarning):
    """Some files of an image folder could not be read and were skipped."""


class ImageBatch(NamedTuple):
    """``images``: ``(B, H, W, 3)`` float32 in [0, 1]; ``paths``: the file of each image."""

    images: np.ndarray
    paths: tuple[Path, ...]


def image_extensions() -> frozenset[str]:
    """Lower-case file suffixes (``".png"``, ...) of every format pillow can open.

    >>> {".png", ".jpg", ".tiff"} <= image_extensions()
    True
    """
    Image.init()
    return frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def rgb_array(image: Image.Image) -> np.ndarray:
    """A pillow image as ``(h, w, 3)`` float32 RGB in [0, 1].

    16-bit and 32-bit integer images are scaled by 1/65535, float images clipped to [0, 1],
    transparent images composited over white, and the EXIF orientation applied.

    >>> rgb_array(Image.new("LA", (2, 1), (0, 0)))[0, 0].tolist()  # transparent: white
    [1.0, 1.0, 1.0]
    """
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        # Pillow cannot convert high-bit-depth images to RGB without truncating to 8 bits.
        scale = 1.0 if image.mode == "F" else 1 / 65535
        grey = np.clip(np.asarray(image, np.float32) * scale, 0.0, 1.0)
        return np.repeat(grey[..., None], 3, axis=-1)
    transparent = image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or ("transparency" in image.info)
    if not transparent:
        return np.asarray(image.convert("RGB"), np.float32) / 255
    rgba = np.asarray(image.convert("RGBA"), np.float32) / 255
    alpha = rgba[..., 3:]
    return rgba[..., :3] * alpha + (1.0 - alpha)


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as it is, ``(h, w, 3)`` float32 RGB in [0, 1] (no resizing).

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "a.png"
    >>> Image.new("RGB", (3, 2), (255, 0, 0)).save(path)
    >>> read_rgb(path)[0, 0].tolist()
    [1.0, 0.0, 0.0]
    """
    with Image.open(path) as image:
        return rgb_array(image)


def read_picture(path: str | Path) -> np.ndarray:
    """A picture file as it is: ``(h, w, 4)`` RGBA float32 in [0, 1] when the file has an
    alpha channel (a transparent picture, as ``param.alpha`` jobs write), else ``(h, w, 3)``
    as :func:`read_rgb` reads it.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "a.png"
    >>> Image.new("RGBA", (3, 2), (255, 0, 0, 51)).save(path)
    >>> read_picture(path)[0, 0].tolist()
    [1.0, 0.0, 0.0, 0.20000000298023224]
    """
    with Image.open(path) as image:
        if image.mode in ("RGBA", "LA"):
            return np.asarray(image.convert("RGBA"), np.float32) / 255
        return rgb_array(image)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float pictures in [0, 1] to ``uint8`` (rounded, clipped).

    >>> to_uint8(np.array([0.0, 0.5, 1.2])).tolist()
    [0, 128, 255]
    """
    return np.clip(np.round(np.asarray(image, np.float32) * 255.0), 0, 255).astype(np.uint8)


def png_bytes(image: np.ndarray) -> bytes:
    """PNG encoding of an ``(H, W, 3)`` picture, or an ``(H, W, 4)`` RGBA one (float in
    [0, 1] or ``uint8``)."""
    image = np.asarray(image)
    pixels = image if image.dtype == np.uint8 else to_uint8(image)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGBA" if pixels.shape[-1] == 4 else "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def resize_and_crop(rgb: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """``(h, w, 3)`` -> ``(H, W, 3)``: scale to cover ``size``, keep the centre (Lanczos).

    >>> resize_and_crop(np.zeros((30, 60, 3), np.float32), 16).shape
    (16, 16, 3)
    """
    height, width = as_size(size)
    source_height, source_width = rgb.shape[:2]
    scale = max(height / source_height, width / source_width)
    crop_height, crop_width = height / scale, width / scale
    top, left = (source_height - crop_height) / 2, (source_width - crop_width) / 2
    box = (left, top, left + crop_width, top + crop_height)
    channels = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(rgb[..., c]), mode="F").resize(
                (width, height), Image.Resampling.LANCZOS, box=box
            )
        )
        for c in range(3)
    ]
    return np.clip(np.stack(channels, axis=-1), 0.0, 1.0)  # Lanczos overshoots at edges


def load_image(path: str | Path, size: int | tuple[int, int]) -> np.ndarray:
    """One image file as ``(H, W, 3)`` float32 RGB in [0, 1], resized and centre-cropped.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "grey.png"
    >>> Image.new("L", (8, 8), 255).save(path)
    >>> load_image(path, 4).shape
    (4, 4, 3)
    """
    height, width = as_size(size)
    with Image.open(path) as image:
        image.draft("RGB", (width, height))  # JPEG decodes at a reduced scale: much faster
        image.load()
        return resize_and_crop(rgb_array(image), (height, width))


@dataclasses.dataclass
class ImageFolder:
    """The images of a folder, streamed in batches; iterate it as often as you like.

    Files that fail to load are skipped: after each pass ``skipped`` lists them as
    ``(path, reason)`` and an :class:`UnreadableImageWarning` names them. A pass in which no
    file loads raises :class:`ImageFolderError` naming the folder and the files.

    Attributes:
        path: the folder.
        files: the candidate image files (by suffix), sorted.
        size: ``(H, W)`` of the images.
        batch_size: images per batch (the last batch may be smaller).
        skipped: ``[(path, reason)]`` of the files the last pass could not read.
    """

    path: Path
    files: tuple[Path, ...]
    size: tuple[int, int]
    batch_size: int
    skipped: list[tuple[Path, str]] = dataclasses.field(default_factory=list)

    def __iter__(self) -> Iterator[ImageBatch]:
        self.skipped.clear()
        images: list[np.ndarray] = []
        paths: list[Path] = []
        loaded = 0
        for file in self.files:
            try:
                images.append(load_image(file, self.size))
            # Broken files raise all sorts (OSError, SyntaxError, struct.error, ...) from
            # pillow's decoders; any of them means "cannot read this one".
            except Exception as exc:
                self.skipped.append((file, f"{type(exc).__name__}: {exc}"))
                continue
            paths.append(file)
            loaded += 1
            if len(images) == self.batch_size:
                yield ImageBatch(np.stack(images), tuple(paths))
                images, paths = [], []
        if images:
            yield ImageBatch(np.stack(images), tuple(paths))
        if loaded == 0:
            raise ImageFolderError(
                f"none of the {len(self.files)} image files in {self.path} could be read:\n"
                + self._skipped_lines()
            )
        if self.skipped:
            warnings.warn(
                f"skipped {len(self.skipped)} unreadable file(s) in {self.path}:\n"
                + self._skipped_lines(),
                UnreadableImageWarning,
                stacklevel=2,
            )

    def _skipped_lines(self) -> str:
        return "\n".join(f"  {path.name}: {reason}" for path, reason in self.skipped)


def load_image_folder(
    path: str | Path,
    size: int | tuple[int, int],
    batch_size: int,
    recursive: bool = False,
) -> ImageFolder:
    """Stream the images of a folder as :class:`ImageBatch` es of ``(B, H, W, 3)`` float32.

    Files are taken by suffix (any format pillow opens), in sorted order; hidden files are
    ignored. A missing folder, or one without image files, is an error right away; unreadable
    files are reported while streaming (see :class:`ImageFolder`).

    Args:
        path: the folder.
        size: ``H`` (square) or ``(H, W)``.
        batch_size: images per batch.
        recursive: also take the images of sub-folders.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> for name in "abc":
    ...     Image.new("RGB", (8, 8)).save(folder / f"{name}.png")
    >>> [batch.images.shape[0] for batch in load_image_folder(folder, 8, batch_size=2)]
    [2, 1]
    """
    folder = Path(path)
    if not folder.exists():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is not a folder")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    extensions = image_extensions()
    candidates = sorted(
        p
        for p in (folder.rglob("*") if recursive else folder.iterdir())
        if p.is_file() and not p.name.startswith(".")
    )
    files = tuple(p for p in candidates if p.suffix.lower() in extensions)
    if not files:
        others = ", ".join(p.name for p in candidates[:5]) or "nothing"
        raise ImageFolderError(
            f"no image files in {folder} (found {others}); "
            f"image suffixes are e.g. .png, .jpg, .jpeg, .webp, .bmp, .tif"
        )
    return ImageFolder(path=folder, files=files, size=as_size(size), batch_size=batch_size)
