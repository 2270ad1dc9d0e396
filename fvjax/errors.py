"""Errors fvjax raises for bad input: each names the bad value and what is allowed."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


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


class NonFiniteError(FloatingPointError):
    """The objective, its gradient or the image became NaN or infinite while optimizing."""


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
