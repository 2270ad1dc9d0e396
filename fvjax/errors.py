"""Errors fvjax raises for bad input: each names the bad value and what is allowed.

Every input error is a :class:`FvjaxError` (a ``ValueError``); the ``fvjax`` command prints it
as one line and exits with status 2. :class:`NonFiniteError` is a failed run (status 1).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence


class FvjaxError(ValueError):
    """Base class of fvjax's input errors (a ``ValueError``)."""


class UnknownLayerError(FvjaxError, KeyError):
    """An objective names a layer the model does not have."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class UnitRangeError(FvjaxError, IndexError):
    """A unit index (or position) is outside the layer."""


class ImageSizeError(FvjaxError):
    """The image is too small for the model or the transforms."""


class ModelOutputError(FvjaxError, TypeError):
    """A model does not return a dict of named activations."""


class ConfigError(FvjaxError):
    """A config key or value is not allowed."""


class ArgumentError(FvjaxError):
    """An argument of a render (``remat``, ``model_dtype``, ``devices``, ...) is not allowed."""


class WeightsError(FvjaxError):
    """A weights file cannot be read, or its state dict does not fit the model."""


class CheckpointMismatchError(FvjaxError):
    """A checkpoint directory holds another render, which cannot be resumed as this one."""


class ShardError(FvjaxError):
    """Shard directories that cannot be joined into one job."""


class ProcedureError(FvjaxError):
    """A registered run that would deviate from its registration (a key, an override, other
    weights or units), a registration edited after it was written, or one whose procedure's
    results exist already."""


class OutputPathError(FvjaxError):
    """An output path is an existing file, lies under a file, or cannot be created or written."""


class ImageFolderError(FvjaxError):
    """A folder holds no image fvjax could read."""


class FailedRunError(Exception):
    """A run that went through and made nothing useful (the command exits with status 1)."""


class NonFiniteError(FailedRunError, FloatingPointError):
    """The objective, its gradient or the image became NaN or infinite while optimizing."""


class DegenerateError(FailedRunError):
    """Every picture of a run is degenerate: saturated, flat, or its objective never rose."""


def nearest(name: str, known: Iterable[str], n: int = 3) -> list[str]:
    """The names in ``known`` closest to ``name`` (for "did you mean" hints).

    >>> nearest("block3/cnv", ["block3/conv", "block2/conv", "logits"])
    ['block3/conv', 'block2/conv']
    """
    return difflib.get_close_matches(name, list(known), n=n, cutoff=0.5)


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """A " did you mean ...?" suffix, or an empty string when nothing is close."""
    close = nearest(name, known)
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def unknown_layer(layer: str, known: Iterable[str]) -> UnknownLayerError:
    """The error for ``layer`` missing from a model whose layers are ``known``."""
    known = sorted(known)
    return UnknownLayerError(
        f"unknown layer {layer!r}.{did_you_mean(layer, known)} "
        f"The model's layers are: {', '.join(known)}"
    )


def misfit_parts(
    missing: Sequence[str],
    unexpected: Sequence[str],
    mismatched: Sequence[str],
    noun: str = "",
    most: int | None = None,
) -> list[str]:
    """One phrase per kind of misfit between weights and a model (none when they fit), each
    listing its items (the first ``most`` of them, when given).

    >>> misfit_parts(["a.weight"], [], ["b.bias: got (2,), expected (3,)"], noun="keys")
    ['missing keys (1): a.weight', 'shape mismatches (1): b.bias: got (2,), expected (3,)']
    """

    def listing(items: Sequence[str], separator: str) -> str:
        shown = list(items) if most is None else list(items)[:most]
        more = (
            f"{separator}... and {len(items) - len(shown)} more" if len(shown) < len(items) else ""
        )
        return separator.join(shown) + more

    label = f" {noun}" if noun else ""
    parts = []
    if missing:
        parts.append(f"missing{label} ({len(missing)}): {listing(missing, ', ')}")
    if unexpected:
        parts.append(f"unexpected{label} ({len(unexpected)}): {listing(unexpected, ', ')}")
    if mismatched:
        parts.append(f"shape mismatches ({len(mismatched)}): {listing(mismatched, '; ')}")
    return parts


class ConceptDatasetError(FvjaxError):
    """A concept dataset (NetDissect's Broden layout) lacks a file, or holds a value that is not
    allowed (a missing image or mask, a mask of the wrong size, an unknown category or label)."""
