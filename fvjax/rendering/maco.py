"""MACO (Fel et al. 2023): pictures whose Fourier magnitude is fixed to a dataset's, only the
phase optimized, seen through random crops and noise.

The magnitude is a :class:`Spectrum`: the mean ``|rfft2|`` (``norm="ortho"``) of a dataset's
pictures in the **decorrelated colour space** of :mod:`fvjax.rendering.param` (``image - 0.5``
times the inverse of its colour mix, the space a ``fourier(decorrelate=True)`` picture is made
in), ``(3, H, W // 2 + 1)``. By default it is the world's (:mod:`fvjax.data.world`, 256 scenes
of seed 0), estimated at the render size on first use and kept for the process (0.09 s at
64 px, 0.5 s at 128 px on our CPU); :func:`spectrum_from_images`, :func:`folder_spectrum` and
:func:`load_spectrum` make others, and a spectrum of another size is resampled
(:meth:`Spectrum.resized`).

A picture (:class:`Maco`): ``signal = irfft2(M e^{i phase})``, recoloured with the colour mix,
plus grey, clipped to [0, 1] (Xplique and Horama standardize it and squash it by a sigmoid:
see :meth:`Maco.to_image`).
The phase is made Hermitian where ``rfft2`` pairs frequencies with themselves, so
``|rfft2(signal)|`` **is** ``M`` at every frequency but the mean: each channel's mean is
``M_0 cos(phase_0)``, free within the dataset's typical offset from grey (a picture may still
choose its colour). :func:`transforms` is MACO's per-picture random crop and noise. Each
picture draws its own phases, crops and noise; a whole layer is one program, as everywhere in
fvjax (Xplique's MACO takes one objective per run).

>>> p = param()
>>> raw = p.init(jax.random.key(0), (32, 32))
>>> raw.shape, p.to_image(raw, (32, 32)).shape
((3, 32, 17), (32, 32, 3))
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fvjax.data import world as world_lib
from fvjax.data.images import as_size, load_image_folder
from fvjax.errors import ArgumentError
from fvjax.rendering import param as param_lib
from fvjax.rendering import transforms as transforms_lib

Array = jax.Array

#: Scenes of the world the default spectrum is estimated from (seed 0: worldnet's training
#: world); 256 measured enough: a second 256 changes the mean magnitude by under 2%.
WORLD_SEED, WORLD_IMAGES = 0, 256


@dataclasses.dataclass(frozen=True)
class Spectrum:
    """A fixed Fourier magnitude ``(3, H, W // 2 + 1)`` in the decorrelated colour space.
    Equal (and hashed) by content, so a jitted program keyed on it compiles once.

    >>> spectrum = spectrum_from_images(np.full((2, 8, 8, 3), 0.5, np.float32))
    >>> spectrum.size, spectrum.magnitude.shape, float(spectrum.magnitude.max())
    ((8, 8), (3, 8, 5), 0.0)
    """

    digest: str
    size: tuple[int, int] = dataclasses.field(compare=False)
    source: str = dataclasses.field(compare=False)
    magnitude: np.ndarray = dataclasses.field(compare=False, repr=False)

    def resized(self, size: int | tuple[int, int]) -> np.ndarray:
        """The magnitude for pictures of ``size``: resampled bilinearly at the same
        frequencies in cycles per pixel (a texture keeps its period in pixels); the mean
        scaled by ``sqrt`` of the pixel count, as ``norm="ortho"`` scales an offset.

        >>> world_spectrum(16).resized(24).shape
        (3, 24, 13)
        """
        size = as_size(size)
        if size == self.size:
            return self.magnitude
        height, width = self.size
        source = self.magnitude.astype(np.float64)
        mean = source[:, 0, 0].copy()
        # The mean is no texture: interpolate the rest across it from its neighbours.
        source[:, 0, 0] = (source[:, 1, 0] + source[:, -1, 0] + source[:, 0, 1]) / 3.0
        # Rows in increasing frequency (fftshift), then linear along each axis in turn.
        source = np.fft.fftshift(source, axes=1)
        rows = np.fft.fftshift(np.fft.fftfreq(height))
        out = _interpolate(source, np.fft.rfftfreq(width), np.fft.rfftfreq(size[1]), axis=2)
        out = _interpolate(out, rows, np.fft.fftfreq(size[0]), axis=1)
        out[:, 0, 0] = mean * np.sqrt(size[0] * size[1] / (height * width))
        return _hermitian_magnitude(out, size).astype(np.float32)


def _interpolate(values: np.ndarray, at: np.ndarray, want: np.ndarray, axis: int) -> np.ndarray:
    """``values`` sampled at increasing ``at`` along ``axis``, linearly read at ``want``."""
    return np.apply_along_axis(lambda line: np.interp(want, at, line), axis, values)


def _hermitian_magnitude(magnitude: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``magnitude`` made even in the rows of the columns ``rfft2`` pairs with themselves
    (the first, and the last for an even width): what a real picture's spectrum is."""
    out = np.array(magnitude, np.float64)
    flip = (-np.arange(size[0])) % size[0]
    for col in _self_paired_columns(size):
        out[:, :, col] = (out[:, :, col] + out[:, flip, col]) / 2.0
    return out


def _self_paired_columns(size: tuple[int, int]) -> list[int]:
    return [0, size[1] // 2] if size[1] % 2 == 0 else [0]


def _as_spectrum(magnitude: np.ndarray, size: tuple[int, int], source: str) -> Spectrum:
    magnitude = np.ascontiguousarray(_hermitian_magnitude(magnitude, size), np.float32)
    magnitude.setflags(write=False)
    digest = hashlib.sha256(magnitude.tobytes() + repr(size).encode()).hexdigest()[:16]
    return Spectrum(digest, size, source, magnitude)


def spectrum_from_images(images: Any, source: str = "images") -> Spectrum:
    """The mean Fourier magnitude of ``images (N, H, W, 3)`` in [0, 1], in the decorrelated
    colour space (``(image - 0.5) @ inverse colour mix``), ``norm="ortho"``.

    >>> stripes = np.zeros((1, 8, 8, 3), np.float32); stripes[:, ::2] = 1.0
    >>> m = spectrum_from_images(stripes).magnitude  # rows alternate: 0.5 cycles per row
    >>> [int(i) for i in np.unravel_index(np.argmax(m[0]), m[0].shape)]
    [4, 0]
    """
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[0] < 1:
        raise ArgumentError(f"images must be (N, H, W, 3) with N >= 1, got {images.shape}")
    return _accumulate([images], images.shape[1:3], source)


def _accumulate(batches: Any, size: tuple[int, int], source: str) -> Spectrum:
    total, count = 0.0, 0
    for images in batches:
        decorrelated = np.moveaxis((images - 0.5) @ param_lib.COLOR_UNMIX, -1, 1)  # (B, 3, H, W)
        total = total + np.abs(np.fft.rfft2(decorrelated, norm="ortho")).sum(0)
        count += len(images)
    return _as_spectrum(total / count, tuple(size), source)


def world_spectrum(size: int | tuple[int, int]) -> Spectrum:
    """The default spectrum: the world's (``WORLD_IMAGES`` scenes of seed ``WORLD_SEED``)
    drawn at ``size`` (at least the world's 16 px a side: smaller pictures resample it);
    computed once per size and process.

    >>> world_spectrum(16) is world_spectrum((16, 16)), world_spectrum(16).magnitude.shape
    (True, (3, 16, 9))
    """
    return _world_spectrum(tuple(max(n, world_lib.MIN_SIZE) for n in as_size(size)))


@functools.lru_cache(maxsize=8)
def _world_spectrum(size: tuple[int, int]) -> Spectrum:
    batches = (
        world_lib.generate(WORLD_SEED, 64, size, start=start).images
        for start in range(0, WORLD_IMAGES, 64)
    )
    return _accumulate(batches, size, f"world(seed={WORLD_SEED}, n={WORLD_IMAGES})")


def folder_spectrum(path: str | Path, size: int | tuple[int, int]) -> Spectrum:
    """The spectrum of every image of a folder, each resized and cropped to ``size``."""
    size = as_size(size)
    folder = load_image_folder(path, size, batch_size=64)
    return _accumulate((batch.images for batch in folder), size, str(path))


def load_spectrum(path: str | Path, size: int | tuple[int, int]) -> Spectrum:
    """A spectrum from ``path``: a folder of images (estimated at ``size``) or a ``.npy``
    magnitude ``(3, H, W // 2 + 1)`` of an even width (resampled when used at another size).

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "m.npy"
    >>> np.save(path, world_spectrum(16).magnitude)
    >>> load_spectrum(path, 32) == world_spectrum(16)
    True
    """
    path = Path(path)
    if path.is_dir():
        return folder_spectrum(path, size)
    if path.suffix != ".npy" or not path.is_file():
        raise ArgumentError(f"a spectrum is a folder of images or a .npy file; {path} is neither")
    magnitude = np.load(path)
    if magnitude.ndim != 3 or magnitude.shape[0] != 3 or magnitude.shape[2] < 2:
        raise ArgumentError(
            f"{path} must hold a (3, H, W // 2 + 1) magnitude, got shape {magnitude.shape}"
        )
    if not np.isfinite(magnitude).all() or magnitude.min() < 0:
        raise ArgumentError(f"{path} must hold finite magnitudes >= 0")
    size_saved = (magnitude.shape[1], 2 * (magnitude.shape[2] - 1))
    return _as_spectrum(magnitude, size_saved, str(path))


@dataclasses.dataclass(frozen=True)
class Maco:
    """Phase-only pictures over a fixed magnitude: ``raw`` is ``(3, H, W // 2 + 1)`` phases.
    ``spectrum=None``: the world's, at the render size (:func:`world_spectrum`)."""

    spectrum: Spectrum | None = None
    init_std: float = 1.0

    def magnitude(self, size: tuple[int, int]) -> np.ndarray:
        """``(3, H, W // 2 + 1)`` the fixed magnitude at ``size``."""
        spectrum = self.spectrum if self.spectrum is not None else world_spectrum(size)
        return spectrum.resized(size)

    def init(self, key: Array, size: tuple[int, int]) -> Array:
        """``(3, H, W // 2 + 1)`` normal phases of ``init_std`` (Xplique's: 1)."""
        height, width = size
        return param_lib.normal(key, (3, height, width // 2 + 1), self.init_std)

    def signal(self, raw: Array, size: tuple[int, int]) -> Array:
        """``(3, H, W)`` the picture before its normalization: ``|rfft2|`` of it is the
        magnitude at every frequency but the mean (``M_0 cos(raw_0)``)."""
        magnitude = jnp.asarray(self.magnitude(size))
        columns = np.asarray(_self_paired_columns(size))
        # Odd in the rows of self-paired columns: the spectrum of a real picture, so irfft2
        # keeps every magnitude (a self-paired frequency gets phase 0).
        mirrored = jnp.roll(raw[:, ::-1], 1, axis=1)  # row -i mod H, a copy, not a gather
        # Selects with fixed masks, not scatters (see transforms.resample on scatters).
        paired = np.zeros(raw.shape[1:], bool)
        paired[:, columns] = True
        phase = jnp.where(paired, (raw - mirrored) / 2.0, raw)
        real, imag = magnitude * jnp.cos(phase), magnitude * jnp.sin(phase)
        mean = np.zeros(raw.shape[1:], bool)
        mean[0, 0] = True
        real = jnp.where(mean, magnitude * jnp.cos(raw), real)
        return jnp.fft.irfft2(jax.lax.complex(real, imag), s=size, norm="ortho")

    def to_image(self, raw: Array, size: tuple[int, int]) -> Array:
        """``(H, W, 3)`` in [0, 1]: the signal recoloured, plus grey, clipped (with
        :func:`~fvjax.rendering.param.clip_inward`'s gradient). Not standardized and squashed
        by a sigmoid as in Xplique: the picture keeps the dataset's contrast (on the world's
        spectrum Xplique's way gave grey pictures, pixel std 0.05 at the start against the
        world's 0.21, and 3-5x lower activations on worldnet)."""
        x = jnp.moveaxis(self.signal(raw, size), 0, -1)
        return param_lib.to_rgb(x, decorrelate=True, output="clip")


def param(spectrum: Spectrum | None = None, init_std: float = 1.0) -> Maco:
    """MACO's parameterization over ``spectrum`` (default: the world's at the render size).

    >>> param() == param(), param(world_spectrum(8)) == param(world_spectrum(8))
    (True, True)
    """
    if spectrum is not None and not isinstance(spectrum, Spectrum):
        raise ArgumentError(f"spectrum must be a maco.Spectrum or None, got {type(spectrum)}")
    return Maco(spectrum=spectrum, init_std=float(init_std))


def transforms(
    box: tuple[float, float] = (0.8, 1.0), noise: float = 0.04, centre_std: float = 0.15
) -> transforms_lib.Compose:
    """MACO's robustness: a random square crop zoomed to the picture (side drawn from
    ``box``, centre from ``N(0.5, centre_std)``), then pixel noise of ``noise`` (Xplique's
    0.08 on a [-1, 1] range); each picture draws its own at each step. The crop's side does not
    shrink over the steps as Xplique's (0.5 to 0.05 of a 512 px canvas seen at 224 px): a
    transform sees no step, and fvjax renders at the model's size. On worldnet's
    ``block3/conv`` (64 px, 256 steps) sides of 0.8-1 reached 1.2-1.3x the activation of 0.5-1.

    >>> transforms_lib.output_size(transforms(), (16, 16))  # same size: no compute needed
    (16, 16)
    """
    return transforms_lib.compose(
        transforms_lib.random_crop(box, centre_std), transforms_lib.noise(noise)
    )
