"""Checkpoints: of long renders, so a killed job resumes where it stopped, and of model params.

The only module that imports orbax. A render's checkpoint directory holds::

    job.json          what the job is (objective, units, seeds, steps, size, chunking, ...);
                      a different job refuses to resume from it
    chunk_00003/      a finished chunk: its pictures, final activations and history
    inflight/         the chunk in flight: optimizer state, step, history so far

Orbax writes each checkpoint to a temporary directory and renames it when complete, so a kill
leaves the previous checkpoint intact.

A params checkpoint (what ``fvjax convert`` writes, :func:`save_params`) holds::

    params/           the Flax params tree, structure and all, as an orbax checkpoint
    record.json       what it is: format, model, source file and its SHA-256, versions

:func:`restore_params` reads it back, checked against the model's own params tree.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import warnings
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import jax
import numpy as np

from fvjax.errors import FvjaxError
from fvjax.outputs import atomic_write, versions
from fvjax.weights import WeightsError, misfit_parts


class CheckpointMismatchError(FvjaxError):
    """A checkpoint directory holds another job."""


def _checkpointer():
    import orbax.checkpoint as ocp

    return ocp.StandardCheckpointer()


def _write_directory(path: Path, write: Callable[[Path], None]) -> None:
    """Make directory ``path`` whole or not at all: ``write(staging)`` fills a hidden sibling,
    which is then renamed into place (replacing an old ``path``). A kill mid-way leaves the old
    ``path`` or, between the two renames of a replacement, no ``path``; never a partial one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A sibling, so the renames stay on one filesystem (and atomic); hidden while unfinished.
    staging = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    staging.mkdir()
    try:
        write(staging)
        if _exists(path):  # rename() cannot replace a non-empty directory
            old = staging.with_name(f"{staging.name}.old")
            os.rename(path, old)
            os.rename(staging, path)
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old)
            else:
                old.unlink()
        else:
            os.rename(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _save(path: Path, tree: Any) -> None:
    leaves = {"leaves": [np.asarray(x) for x in jax.tree.leaves(tree)]}

    def write(staging: Path) -> None:
        checkpointer = _checkpointer()
        checkpointer.save((staging / "tree").resolve(), leaves)
        checkpointer.wait_until_finished()

    _write_directory(path, write)


def _restore(path: Path, like: Any) -> Any:
    """Restore into the structure (and dtypes) of ``like``."""
    leaves, treedef = jax.tree.flatten(like)
    abstract = {"leaves": [jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype) for x in leaves]}
    restored = _checkpointer().restore((path / "tree").resolve(), abstract)["leaves"]
    return jax.tree.unflatten(treedef, [np.asarray(x) for x in restored])


class RenderCheckpoint:
    """The checkpoint directory of one render job.

    >>> import tempfile
    >>> ckpt = RenderCheckpoint(tempfile.mkdtemp(), {"label": "channel:a", "steps": 4})
    >>> ckpt.finished_chunks()
    []
    """

    def __init__(self, directory: str | Path, job: dict[str, Any]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        for leftover in self.directory.glob(".*.tmp*"):  # staging of a killed save
            shutil.rmtree(leftover, ignore_errors=True)
        job_file = self.directory / "job.json"
        text = json.dumps(job, sort_keys=True, indent=1)
        if job_file.exists():
            previous = json.loads(job_file.read_text())
            if previous != job:
                differ = sorted(
                    k for k in set(previous) | set(job) if previous.get(k) != job.get(k)
                )
                raise CheckpointMismatchError(
                    f"checkpoint directory {self.directory} holds another job (differs in: "
                    f"{', '.join(differ)}); use a new directory or delete it to start afresh"
                )
        else:
            atomic_write(job_file, text)

    def _chunk_path(self, chunk: int) -> Path:
        return self.directory / f"chunk_{chunk:05d}"

    def finished_chunks(self) -> list[int]:
        """Indices of the chunks saved as finished."""
        return sorted(int(p.name[6:]) for p in self.directory.glob("chunk_*") if p.is_dir())

    def save_chunk(self, chunk: int, results: dict[str, np.ndarray]) -> None:
        """Save a finished chunk's arrays and drop the in-flight state."""
        _save(self._chunk_path(chunk), results)
        shutil.rmtree(self.directory / "inflight", ignore_errors=True)

    def load_chunk(self, chunk: int, like: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A finished chunk's arrays, shaped like ``like``."""
        return _restore(self._chunk_path(chunk), like)

    def save_inflight(self, chunk: int, done: int, state: Any, history: np.ndarray) -> None:
        """Save the chunk in flight after ``done`` steps."""
        meta = np.array([chunk, done], np.int32)
        _save(self.directory / "inflight", {"meta": meta, "state": state, "history": history})

    def load_inflight(self, chunk: int, state_like: Any, history_like: np.ndarray):
        """``(done, state, history)`` of ``chunk`` if it was in flight, else ``None``."""
        path = self.directory / "inflight"
        if not path.is_dir():
            return None
        like = {"meta": np.zeros(2, np.int32), "state": state_like, "history": history_like}
        try:
            restored = _restore(path, like)
        except (ValueError, OSError) as exc:  # e.g. written by an older fvjax, or damaged
            warnings.warn(
                f"{path}: unreadable in-flight checkpoint ({exc}); its chunk starts over",
                stacklevel=2,
            )
            shutil.rmtree(path, ignore_errors=True)
            return None
        saved_chunk, done = (int(v) for v in restored["meta"])
        if saved_chunk != chunk:
            return None
        return done, restored["state"], restored["history"]


# -- params checkpoints (fvjax convert) ---------------------------------------------------------

PARAMS = "params"
RECORD = "record.json"
PARAMS_FORMAT = "fvjax-params/1"
_CONVERT = "`fvjax convert --model NAME WEIGHTS OUT`"


def _params_checkpointer():
    import orbax.checkpoint as ocp

    # Synchronous, numpy in and numpy out: restores InceptionV1 in about half the time
    # StandardCheckpointer takes on a CPU (async writer, jax arrays).
    return ocp.Checkpointer(ocp.PyTreeCheckpointHandler())


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def save_params(
    path: str | os.PathLike, params: Mapping, record: Mapping[str, Any], overwrite: bool = False
) -> dict[str, Any]:
    """Write the params tree ``params`` as a params checkpoint at ``path``; returns its record.

    ``record`` (e.g. ``{"model": ..., "source": ..., "source_sha256": ...}``) is stored with
    the format, the parameter count and size, and the versions of fvjax, JAX and orbax.
    Atomic: all is written to a hidden directory beside ``path`` and renamed into place, so a
    kill leaves nothing at ``path`` (with ``overwrite``: the old checkpoint, until the swap).
    An existing ``path`` raises ``FileExistsError`` unless ``overwrite``.

    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp()) / "ckpt"
    >>> params = {"dense": {"kernel": np.ones((2, 3), np.float32)}}
    >>> save_params(out, params, {"model": "toy"})["parameters"]
    6
    >>> sorted(p.name for p in out.iterdir())
    ['params', 'record.json']
    """
    import orbax.checkpoint as ocp

    path = Path(path)
    if _exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass --force (overwrite=True) to replace it")
    tree = jax.tree.map(np.asarray, dict(params))
    leaves = jax.tree.leaves(tree)
    record = {
        "format": PARAMS_FORMAT,
        **record,
        "parameters": int(sum(x.size for x in leaves)),
        "bytes": int(sum(x.nbytes for x in leaves)),
        "versions": versions() | {"orbax-checkpoint": metadata.version("orbax-checkpoint")},
    }

    def write(staging: Path) -> None:
        _params_checkpointer().save((staging / PARAMS).resolve(), args=ocp.args.PyTreeSave(tree))
        atomic_write(staging / RECORD, json.dumps(record, indent=1, sort_keys=True) + "\n")

    _write_directory(path, write)
    return record


def read_record(path: str | os.PathLike) -> dict[str, Any]:
    """The record of the params checkpoint ``path``; a :class:`~fvjax.weights.WeightsError`
    saying how to make one when ``path`` is not one."""
    path = Path(path)
    try:
        record = json.loads((path / RECORD).read_text())
    except (OSError, ValueError):
        record = None
    if not isinstance(record, dict) or record.get("format") != PARAMS_FORMAT:
        raise WeightsError(
            f"{path} is a directory but not a params checkpoint (no {RECORD} of format "
            f"{PARAMS_FORMAT!r}). Weights are a state dict file (.safetensors, .npz, .pth) or "
            f"the directory that {_CONVERT} writes"
        )
    if not (path / PARAMS).is_dir():
        raise WeightsError(
            f"{path}: the params checkpoint has no {PARAMS}/; rewrite it with {_CONVERT}"
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
    """The params tree of the params checkpoint ``path``: numpy arrays of ``like``'s dtypes
    (``like``'s leaves: arrays or ``jax.ShapeDtypeStruct``).

    Checked against ``like`` (the model's params tree, e.g. a random init): a checkpoint of
    another structure or other shapes raises one :class:`~fvjax.weights.WeightsError` naming
    the model it was converted for and the missing, unexpected and mis-shaped leaves.

    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp()) / "ckpt"
    >>> _ = save_params(out, {"dense": {"kernel": np.ones((2, 3), np.float32)}}, {})
    >>> restore_params(out, {"dense": {"kernel": np.zeros((2, 3), np.float32)}})["dense"]
    {'kernel': array([[1., 1., 1.],
           [1., 1., 1.]], dtype=float32)}
    >>> restore_params(out, {"dense": {"kernel": np.zeros((3, 3), np.float32)}})
    Traceback (most recent call last):
    fvjax.weights.WeightsError: the params checkpoint ... shape mismatches (1): dense/kernel: ...
    """
    import orbax.checkpoint as ocp

    path = Path(path)
    record = read_record(path)
    wanted = _shapes(like)
    checkpointer, params_dir = _params_checkpointer(), (path / PARAMS).resolve()
    restore_args = jax.tree.map(
        lambda x: ocp.RestoreArgs(restore_type=np.ndarray, dtype=np.dtype(x.dtype)), like
    )
    try:
        params = checkpointer.restore(
            params_dir, args=ocp.args.PyTreeRestore(restore_args=restore_args)
        )
        saved = _shapes(params)
    except (ValueError, OSError) as exc:  # another tree structure (or an unreadable checkpoint)
        try:
            saved = _shapes(checkpointer.metadata(params_dir).item_metadata)
        except (ValueError, OSError, AttributeError):
            saved = {}
        if not saved or not _differences(saved, wanted):
            raise WeightsError(f"{path}: cannot restore the params checkpoint: {exc}") from exc
    problems = _differences(saved, wanted)
    if problems:  # orbax restores other shapes without a word: this check is ours
        raise WeightsError(
            f"the params checkpoint {path} (converted for model {record.get('model')!r} from "
            f"{record.get('source')!r}) does not fit this model: {'; '.join(problems)}. "
            f"Convert this model's own state dict: {_CONVERT}"
        )
    return params
