"""Checkpoints of long renders, so a killed job resumes where it stopped.

The only module that imports orbax. A render's checkpoint directory holds::

    job.json          what the job is (objective, units, seeds, steps, size, chunking, ...);
                      a different job refuses to resume from it
    chunk_00003/      a finished chunk: its pictures, final activations and history
    inflight/         the chunk in flight: optimizer state, step, history so far

Orbax writes each checkpoint to a temporary directory and renames it when complete, so a kill
leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np

from fvjax.errors import FvjaxError
from fvjax.outputs import atomic_write


class CheckpointMismatchError(FvjaxError):
    """A checkpoint directory holds another job."""


def _checkpointer():
    import orbax.checkpoint as ocp

    return ocp.StandardCheckpointer()


def _save(path: Path, tree: Any) -> None:
    if path.exists():
        shutil.rmtree(path)
    checkpointer = _checkpointer()
    checkpointer.save(path.resolve(), {"leaves": [np.asarray(x) for x in jax.tree.leaves(tree)]})
    checkpointer.wait_until_finished()


def _restore(path: Path, like: Any) -> Any:
    """Restore into the structure (and dtypes) of ``like``."""
    leaves, treedef = jax.tree.flatten(like)
    abstract = {"leaves": [jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype) for x in leaves]}
    restored = _checkpointer().restore(path.resolve(), abstract)["leaves"]
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
        restored = _restore(path, like)
        saved_chunk, done = (int(v) for v in restored["meta"])
        if saved_chunk != chunk:
            return None
        return done, restored["state"], restored["history"]
