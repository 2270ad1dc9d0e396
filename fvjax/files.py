"""What fvjax writes, written whole: atomic files and directories, hashes of canonical JSON, the
versions and backend that made a result, and array trees on disk (the one module that imports
orbax).

A reader of anything fvjax writes sees the old version or the new one, never half of one: a file
goes through a temporary sibling and ``os.replace``; a directory is filled under a hidden
sibling and renamed into place.

>>> import tempfile
>>> folder = Path(tempfile.mkdtemp())
>>> atomic_write(folder / "a.json", canonical_json({"b": 1, "a": [2]})).read_text()
'{"a":[2],"b":1}'
>>> data_sha256({"a": 1, "b": 2}) == data_sha256({"b": 2, "a": 1})
True
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import secrets
import shutil
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import jax
import numpy as np

from fvjax.errors import OutputPathError

#: fvjax's own version (also ``fvjax.__version__``).
FVJAX_VERSION = "0.1.0"


# -- atomic files and directories -----------------------------------------------------------


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    A reader sees the old file or the new one, never a partial one; on error the temporary
    file is removed. (Not fsynced: atomic against a crash of this process, not a power cut.)

    >>> import tempfile
    >>> path = atomic_write(Path(tempfile.mkdtemp()) / "a.txt", "hello")
    >>> path.read_text()
    'hello'
    """
    path = Path(path)
    make_directory(path.parent)
    payload = data.encode() if isinstance(data, str) else data
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(payload)
        os.chmod(temp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    return path


def exists(path: Path) -> bool:
    """``path`` is there, as a file, a directory or a (possibly dangling) link."""
    return path.exists() or path.is_symlink()


def make_directory(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Create folder ``path`` and its parents (nothing to do when it is there), or raise
    :class:`~fvjax.errors.OutputPathError`: a sentence naming ``what`` and ``path``, the
    problem and what to do, where ``mkdir`` would say ``[Errno 17] File exists``.

    >>> import tempfile
    >>> file = Path(tempfile.mkdtemp()) / "notes.txt"
    >>> _ = file.write_text("mine")
    >>> make_directory(file / "out")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    fvjax.errors.OutputPathError: output folder ... cannot be created: .../notes.txt is a file, ...
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        problem = directory_problem(path, what)
        raise OutputPathError(
            problem
            or f"{what} {path} cannot be created ({exc.strerror or exc}); choose another "
            "output path"
        ) from exc
    return path


def directory_problem(path: str | os.PathLike, what: str = "output folder") -> str | None:
    """Why folder ``path`` cannot be made or written, as a sentence (``None``: it can).

    Looks before any work starts, creating nothing: an existing file at ``path`` or above it, or
    a folder that takes no new entries (permissions, a read-only or virtual filesystem such as
    ``/proc``: a probe folder is made there and removed at once).

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> directory_problem(folder / "new" / "out") is None
    True
    >>> _ = (folder / "out").write_text("mine")
    >>> print(directory_problem(folder / "out"))  # doctest: +ELLIPSIS
    output folder .../out is an existing file, not a folder; choose another output path or ...
    """
    path = Path(path)
    # os.path's lexists and isdir say False where pathlib would raise (a folder we cannot read)
    if os.path.lexists(path) and not os.path.isdir(path):
        kind = "an existing file" if os.path.exists(path) else "a broken link"
        return f"{what} {path} is {kind}, not a folder; choose another output path or move it away"
    # The nearest part of the path that is there ('.' or '/' at the latest).
    there = next(p for p in (path, *path.parents) if os.path.lexists(p))
    if not os.path.isdir(there):
        return (
            f"{what} {path} cannot be created: {there} is a file, not a folder; "
            "choose another output path"
        )
    try:
        probe = tempfile.mkdtemp(dir=there, prefix=".fvjax-probe-")
    except OSError as exc:
        problem = "cannot be written: it" if there == path else f"cannot be created: {there}"
        return (
            f"{what} {path} {problem} takes no new folders ({exc.strerror or exc}); "
            "choose another output path, in a folder you can write to"
        )
    os.rmdir(probe)
    return None


def write_directory(path: Path, write: Callable[[Path], None]) -> None:
    """Make directory ``path`` whole or not at all: ``write(staging)`` fills a hidden sibling,
    which is then renamed into place (replacing an old ``path``). A kill mid-way leaves the old
    ``path`` or, between the two renames of a replacement, no ``path``; never a partial one.
    Leftover staging directories match ``.<name>.*.tmp*`` (see :func:`remove_staging`)."""
    try:
        make_directory(path.parent)
    except OutputPathError as exc:  # say it of `path`, the folder asked for
        raise OutputPathError(directory_problem(path) or str(exc)) from exc
    # A sibling, so the renames stay on one filesystem (and atomic); hidden while unfinished.
    staging = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    staging.mkdir()
    try:
        write(staging)
        if exists(path):  # rename() cannot replace a non-empty directory
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


def remove_staging(directory: Path) -> None:
    """Remove what a killed :func:`write_directory` or :func:`remove_directory` left in
    ``directory``."""
    for leftover in directory.glob(".*.tmp*"):
        shutil.rmtree(leftover, ignore_errors=True)


def remove_directory(path: Path) -> None:
    """Remove directory ``path`` whole or not at all: it is renamed to a hidden sibling first,
    then deleted. ``shutil.rmtree`` deletes file by file, and a kill mid-way left a directory
    with some of its files gone, which read as damaged; now a kill leaves ``path`` as it was or
    gone, and a leftover that :func:`remove_staging` finds.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> (folder / "inflight").mkdir()
    >>> remove_directory(folder / "inflight"); list(folder.iterdir())
    []
    """
    doomed = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp.old")
    try:
        os.rename(path, doomed)
    except FileNotFoundError:
        return
    shutil.rmtree(doomed, ignore_errors=True)


# -- hashes ---------------------------------------------------------------------------------


def canonical_json(data: Any) -> str:
    """JSON with sorted keys and no whitespace: equal data, equal text."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def data_sha256(data: Any) -> str:
    """SHA-256 hex of ``data``'s :func:`canonical_json`: equal data, equal hash."""
    return hashlib.sha256(canonical_json(data).encode()).hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 hex of a file's bytes, read a megabyte at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- what made a result ---------------------------------------------------------------------


def versions() -> dict[str, str]:
    """Versions of fvjax, its main dependencies and Python."""
    found = {}
    for name in ("fvjax", "jax", "jaxlib", "flax", "optax", "numpy"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "unknown"
    if found["fvjax"] == "unknown":  # running from a source checkout
        found["fvjax"] = FVJAX_VERSION
    found["python"] = platform.python_version()
    return found


def backend() -> dict[str, Any]:
    """The JAX backend this process renders on."""
    devices = jax.devices()
    return {
        "platform": jax.default_backend(),
        "device_count": len(devices),
        "device_kind": devices[0].device_kind if devices else "none",
    }


# -- array trees on disk (orbax) ------------------------------------------------------------
# orbax is imported where it is used: ``import fvjax`` stays fast, and only saving or restoring
# pays for it.


def save_arrays(path: Path, tree: Any) -> None:
    """Write the arrays of ``tree`` (any pytree) to directory ``path``, atomically.

    Only the leaves are stored; :func:`restore_arrays` puts them back into a tree like it.
    """
    import orbax.checkpoint as ocp

    leaves = {"leaves": [np.asarray(x) for x in jax.tree.leaves(tree)]}

    def write(staging: Path) -> None:
        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save((staging / "tree").resolve(), leaves)
        checkpointer.wait_until_finished()

    write_directory(path, write)


def restore_arrays(path: Path, like: Any) -> Any:
    """The arrays :func:`save_arrays` wrote to ``path``, in the structure (and dtypes) of
    ``like``, as numpy arrays."""
    import orbax.checkpoint as ocp

    leaves, treedef = jax.tree.flatten(like)
    abstract = {"leaves": [jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype) for x in leaves]}
    restored = ocp.StandardCheckpointer().restore((path / "tree").resolve(), abstract)["leaves"]
    return jax.tree.unflatten(treedef, [np.asarray(x) for x in restored])


def _tree_checkpointer():
    import orbax.checkpoint as ocp

    # Synchronous, numpy in and numpy out: restores InceptionV1 in about half the time
    # StandardCheckpointer takes on a CPU (async writer, jax arrays).
    return ocp.Checkpointer(ocp.PyTreeCheckpointHandler())


def save_tree(path: Path, tree: Any) -> None:
    """Write a nested dict of arrays, structure and all, as an orbax checkpoint at ``path``
    (inside a directory that :func:`write_directory` is filling)."""
    import orbax.checkpoint as ocp

    _tree_checkpointer().save(path.resolve(), args=ocp.args.PyTreeSave(tree))


def restore_tree(path: Path, like: Any) -> Any:
    """The tree :func:`save_tree` wrote, its leaves numpy arrays of ``like``'s dtypes
    (``like``'s leaves: arrays or ``jax.ShapeDtypeStruct``). orbax restores other shapes than
    ``like``'s without a word: check them (``ValueError`` for another tree structure)."""
    import orbax.checkpoint as ocp

    restore_args = jax.tree.map(
        lambda x: ocp.RestoreArgs(restore_type=np.ndarray, dtype=np.dtype(x.dtype)), like
    )
    return _tree_checkpointer().restore(
        path.resolve(), args=ocp.args.PyTreeRestore(restore_args=restore_args)
    )


def saved_tree_structure(path: Path) -> Any:
    """The leaves' metadata (with ``.shape``) of a tree :func:`save_tree` wrote, unrestored."""
    return _tree_checkpointer().metadata(path.resolve()).item_metadata


def orbax_version() -> str:
    """The installed orbax-checkpoint's version (recorded beside converted weights)."""
    return metadata.version("orbax-checkpoint")
