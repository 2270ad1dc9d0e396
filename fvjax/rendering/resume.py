"""Resume: the checkpoints a long render saves as it goes, so that a killed job starts again
where it stopped and gives the same pictures. ("Checkpoint" in fvjax means these saves only.)

A render's checkpoint directory (``render(..., checkpoint_dir=...)``) holds::

    job.json          the render's identity (:meth:`fvjax.rendering.engine.RenderPlan.identity`);
                      another render refuses to resume from it
    chunk_00003/      a finished chunk: its pictures, final activations and history
    inflight/         the chunk in flight: optimizer state, step, history so far

Each save is staged in a hidden sibling and renamed into place (:mod:`fvjax.files`), so a kill
leaves the previous save intact.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from fvjax.errors import CheckpointMismatchError
from fvjax.files import (
    atomic_write,
    make_directory,
    remove_directory,
    remove_staging,
    restore_arrays,
    save_arrays,
)


class ResumeStore:
    """The checkpoint directory of one render.

    >>> import tempfile
    >>> store = ResumeStore(tempfile.mkdtemp(), {"label": "channel:a", "steps": 4})
    >>> store.finished_chunks()
    []
    """

    def __init__(self, directory: str | Path, identity: dict[str, Any]) -> None:
        self.directory = make_directory(directory, "checkpoint folder")
        remove_staging(self.directory)  # what a killed save left behind
        job_file = self.directory / "job.json"
        if job_file.exists():
            previous = json.loads(job_file.read_text())
            if previous != identity:
                differ = sorted(
                    k for k in set(previous) | set(identity) if previous.get(k) != identity.get(k)
                )
                raise CheckpointMismatchError(
                    f"checkpoint directory {self.directory} holds another job (differs in: "
                    f"{', '.join(differ)}); use a new directory or delete it to start afresh"
                )
        else:
            atomic_write(job_file, json.dumps(identity, sort_keys=True, indent=1))

    def _chunk_path(self, chunk: int) -> Path:
        return self.directory / f"chunk_{chunk:05d}"

    def finished_chunks(self) -> list[int]:
        """Indices of the chunks saved as finished."""
        return sorted(int(p.name[6:]) for p in self.directory.glob("chunk_*") if p.is_dir())

    def save_chunk(self, chunk: int, results: dict[str, np.ndarray]) -> None:
        """Save a finished chunk's arrays and drop the in-flight state."""
        save_arrays(self._chunk_path(chunk), results)
        remove_directory(self.directory / "inflight")  # whole or not at all, even if killed

    def load_chunk(self, chunk: int, like: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A finished chunk's arrays, shaped like ``like``."""
        return restore_arrays(self._chunk_path(chunk), like)

    def save_inflight(self, chunk: int, done: int, state: Any, history: np.ndarray) -> None:
        """Save the chunk in flight after ``done`` steps."""
        meta = np.array([chunk, done], np.int32)
        save_arrays(self.directory / "inflight", {"meta": meta, "state": state, "history": history})

    def load_inflight(self, chunk: int, state_like: Any, history_like: np.ndarray):
        """``(done, state, history)`` of ``chunk`` if it was in flight, else ``None``."""
        path = self.directory / "inflight"
        if not path.is_dir():
            return None
        like = {"meta": np.zeros(2, np.int32), "state": state_like, "history": history_like}
        try:
            restored = restore_arrays(path, like)
        except (ValueError, OSError) as exc:  # e.g. written by an older fvjax, or damaged
            warnings.warn(
                f"{path}: unreadable in-flight checkpoint ({exc}); its chunk starts over",
                stacklevel=2,
            )
            remove_directory(path)
            return None
        saved_chunk, done = (int(v) for v in restored["meta"])
        if saved_chunk != chunk:
            return None
        return done, restored["state"], restored["history"]
