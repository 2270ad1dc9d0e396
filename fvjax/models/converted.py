"""Converted weights: what ``fvjax convert`` writes, a state dict checked once against a zoo
model and stored as that model's Flax params tree, ready to load without the import table.

A converted-weights directory holds::

    params/           the Flax params tree, structure and all, as an orbax checkpoint
    record.json       what it is: format, model, source file and its SHA-256, versions

:func:`restore_params` reads it back, checked against the model's own params tree. It goes
wherever a weights file does (``weights=DIR`` in a config, ``zoo.load(NAME, weights=DIR)``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from fvjax.errors import WeightsError, misfit_parts
from fvjax.files import (
    atomic_write,
    exists,
    orbax_version,
    restore_tree,
    save_tree,
    saved_tree_structure,
    versions,
    write_directory,
)

PARAMS = "params"
RECORD = "record.json"
PARAMS_FORMAT = "fvjax-params/1"
_CONVERT = "`fvjax convert --model NAME WEIGHTS OUT`"


def save_params(
    path: str | os.PathLike, params: Mapping, record: Mapping[str, Any], overwrite: bool = False
) -> dict[str, Any]:
    """Write the params tree ``params`` as converted weights at ``path``; returns its record.

    ``record`` (e.g. ``{"model": ..., "source": ..., "source_sha256": ...}``) is stored with
    the format, the parameter count and size, and the versions of fvjax, JAX and orbax.
    Atomic: all is written to a hidden directory beside ``path`` and renamed into place, so a
    kill leaves nothing at ``path`` (with ``overwrite``: the old directory, until the swap).
    An existing ``path`` raises ``FileExistsError`` unless ``overwrite``.

    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp()) / "ckpt"
    >>> params = {"dense": {"kernel": np.ones((2, 3), np.float32)}}
    >>> save_params(out, params, {"model": "toy"})["parameters"]
    6
    >>> sorted(p.name for p in out.iterdir())
    ['params', 'record.json']
    """
    path = Path(path)
    if exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass --force (overwrite=True) to replace it")
    tree = jax.tree.map(np.asarray, dict(params))
    leaves = jax.tree.leaves(tree)
    record = {
        "format": PARAMS_FORMAT,
        **record,
        "parameters": int(sum(x.size for x in leaves)),
        "bytes": int(sum(x.nbytes for x in leaves)),
        "versions": versions() | {"orbax-checkpoint": orbax_version()},
    }

    def write(staging: Path) -> None:
        save_tree(staging / PARAMS, tree)
        atomic_write(staging / RECORD, json.dumps(record, indent=1, sort_keys=True) + "\n")

    write_directory(path, write)
    return record


def read_record(path: str | os.PathLike) -> dict[str, Any]:
    """The record of the converted weights at ``path``; a :class:`~fvjax.errors.WeightsError`
    saying how to make them when ``path`` holds none."""
    path = Path(path)
    try:
        record = json.loads((path / RECORD).read_text())
    except (OSError, ValueError):
        record = None
    if not isinstance(record, dict) or record.get("format") != PARAMS_FORMAT:
        raise WeightsError(
            f"{path} is a directory but not converted weights (no {RECORD} of format "
            f"{PARAMS_FORMAT!r}). Weights are a state dict file (.safetensors, .npz, .pth) or "
            f"the directory that {_CONVERT} writes"
        )
    if not (path / PARAMS).is_dir():
        raise WeightsError(
            f"{path}: the converted weights have no {PARAMS}/; rewrite them with {_CONVERT}"
        )
    return record


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    """``{"conv2d0/pre_relu/kernel": shape}`` of a params tree or of its orbax metadata."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {
        jax.tree_util.keystr(keys, simple=True, separator="/"): tuple(getattr(leaf, "shape", ()))
        for keys, leaf in flat
    }


def _differences(saved: Mapping[str, tuple], wanted: Mapping[str, tuple]) -> list[str]:
    """What keeps the ``saved`` leaves from being the ``wanted`` ones, a phrase per kind."""
    missing = sorted(set(wanted) - set(saved))
    unexpected = sorted(set(saved) - set(wanted))
    mismatched = [
        f"{k}: saved {saved[k]}, expected {wanted[k]}"
        for k in sorted(set(saved) & set(wanted))
        if saved[k] != wanted[k]
    ]
    return misfit_parts(missing, unexpected, mismatched, most=12)


def restore_params(path: str | os.PathLike, like: Mapping) -> dict:
    """The params tree of the converted weights at ``path``: numpy arrays of ``like``'s dtypes
    (``like``'s leaves: arrays or ``jax.ShapeDtypeStruct``).

    Checked against ``like`` (the model's params tree, e.g. a random init): weights of
    another structure or other shapes raise one :class:`~fvjax.errors.WeightsError` naming
    the model it was converted for and the missing, unexpected and mis-shaped leaves.

    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp()) / "ckpt"
    >>> _ = save_params(out, {"dense": {"kernel": np.ones((2, 3), np.float32)}}, {})
    >>> restore_params(out, {"dense": {"kernel": np.zeros((2, 3), np.float32)}})["dense"]
    {'kernel': array([[1., 1., 1.],
           [1., 1., 1.]], dtype=float32)}
    >>> restore_params(out, {"dense": {"kernel": np.zeros((3, 3), np.float32)}})
    Traceback (most recent call last):
    fvjax.errors.WeightsError: the converted weights ... shape mismatches (1): dense/kernel: ...
    """
    path = Path(path)
    record = read_record(path)
    wanted = _shapes(like)
    try:
        params = restore_tree(path / PARAMS, like)
        saved = _shapes(params)
    except (ValueError, OSError) as exc:  # another tree structure (or unreadable files)
        try:
            saved = _shapes(saved_tree_structure(path / PARAMS))
        except (ValueError, OSError, AttributeError):
            saved = {}
        if not saved or not _differences(saved, wanted):
            raise WeightsError(f"{path}: cannot restore the converted weights: {exc}") from exc
    problems = _differences(saved, wanted)
    if problems:  # orbax restores other shapes without a word: this check is ours
        raise WeightsError(
            f"the converted weights {path} (converted for model {record.get('model')!r} from "
            f"{record.get('source')!r}) does not fit this model: {'; '.join(problems)}. "
            f"Convert this model's own state dict: {_CONVERT}"
        )
    return params
