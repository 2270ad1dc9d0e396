"""One job over many processes or hosts: each renders a slice of the units, then one joins them.

The pictures of a job are independent (each image's key comes from its seed, objective and
unit alone), so processes share no data while they render: process ``K`` of ``N`` takes the
units at positions ``K, K + N, K + 2N, ...`` of every layer, renders them on its own local
devices and writes a complete output directory ``OUTPUT/shard-K-of-N``. :func:`merge` joins
the ``N`` directories into one manifest and gallery at ``OUTPUT``, with the same pictures a
one-process render writes.

``K/N`` comes from the config's ``shard`` key: explicit (a scheduler's array job), or
``"auto"``: ``jax.process_index()`` of ``jax.process_count()``, which is ``0/1`` unless
``jax.distributed.initialize()`` has joined the processes (``distributed = true``).

>>> shard_dir(3, 8)
'shard-3-of-8'
>>> positions(1, 3, 7).tolist()
[1, 4]
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax._src import distributed
from jax.experimental import multihost_utils

from fvjax.data.images import read_picture
from fvjax.errors import ShardError
from fvjax.files import atomic_write, data_sha256
from fvjax.job.config import differences, identity
from fvjax.job.gallery import REGISTRATION
from fvjax.job.keys import parse_shard
from fvjax.job.outputs import RenderOutput, read_manifest
from fvjax.rendering.engine import RenderResult

_SHARD_DIR = re.compile(r"^shard-(\d+)-of-(\d+)$")


def this_process(shard: str) -> tuple[int, int]:
    """``(K, N)`` for a config's ``shard`` value; ``"auto"`` asks JAX which process this is."""
    if shard == "auto":
        return jax.process_index(), jax.process_count()
    return parse_shard(shard)


def shard_dir(index: int, count: int) -> str:
    """The output subdirectory of process ``index`` of ``count``."""
    return f"shard-{index}-of-{count}"


def positions(index: int, count: int, n_members: int) -> np.ndarray:
    """The member positions process ``index`` of ``count`` renders (strided: every process
    gets a share of each layer, and the shares differ by at most one)."""
    return np.arange(index, n_members, count)


def initialize_distributed() -> None:
    """``jax.distributed.initialize()`` once. Where the cluster is one JAX detects (Cloud TPU,
    SLURM, Open MPI, Kubernetes) it needs nothing; elsewhere set ``JAX_COORDINATOR_ADDRESS``
    (``host:port`` of process 0), ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``."""
    if distributed.global_state.client is not None:  # a second call would raise
        return
    settings = {}
    for name, variable in (
        ("num_processes", "JAX_NUM_PROCESSES"),
        ("process_id", "JAX_PROCESS_ID"),
    ):
        if os.environ.get(variable):
            try:
                settings[name] = int(os.environ[variable])
            except ValueError as exc:
                raise ShardError(
                    f"{variable} must be an integer, got {os.environ[variable]!r}"
                ) from exc
    jax.distributed.initialize(**settings)


def wait_for_all(name: str) -> None:
    """Block until every process of a distributed job gets here."""
    multihost_utils.sync_global_devices(name)


def _shards(path: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The shard directories under ``path`` and their manifests, in order; checked whole."""
    found: dict[tuple[int, int], Path] = {}
    for child in sorted(path.iterdir()) if path.is_dir() else ():
        match = _SHARD_DIR.match(child.name)
        if match and child.is_dir():
            found[int(match[1]), int(match[2])] = child
    if not found:
        raise ShardError(f"{path}: no shard-K-of-N directories to merge")
    counts = sorted({count for _, count in found})
    if len(counts) > 1:
        raise ShardError(f"{path}: shards of different jobs (of {counts}); keep one job's shards")
    count = counts[0]
    missing = [shard_dir(k, count) for k in range(count) if (k, count) not in found]
    if missing:
        raise ShardError(f"{path}: missing {', '.join(missing)}; render them, then merge again")
    shards = []
    for k in range(count):
        directory = found[k, count]
        try:
            manifest = read_manifest(directory)
        except (OSError, ValueError) as exc:
            raise ShardError(f"{directory}: no readable manifest.json ({exc})") from exc
        if not manifest.get("complete"):
            raise ShardError(f"{directory}: its render has not finished; resume it, then merge")
        shards.append((directory, manifest))
    return shards


def merge(path: str | Path) -> dict[str, Any]:
    """Join ``path/shard-K-of-N`` (all ``N`` of one job, finished) into one output at ``path``:
    pictures, grids, manifest and gallery as a one-process render writes them. Returns the
    manifest, whose ``shards`` entry records each shard's directory, config hash and backend.

    The merged manifest carries the run's label (``procedure``: exploratory or confirmatory,
    as process 0 recorded it) and a confirmatory run's registration is copied beside it.

    Raises :class:`ShardError` naming missing, unfinished or mismatched shards.
    """
    path = Path(path)
    shards = _shards(path)
    first = shards[0][1]
    for directory, manifest in shards[1:]:
        changed = differences(identity(first["config"]), identity(manifest["config"]))
        if changed:
            raise ShardError(
                f"{directory} rendered another job than {shards[0][0].name} "
                f"(config keys differ: {'; '.join(changed)})"
            )
    config = dict(first["config"], shard="auto")
    sha = data_sha256(config)
    out = RenderOutput(path, config, sha, model=first["model"])
    out.extra["shards"] = [
        {
            "dir": directory.name,
            "config_sha256": manifest["config_sha256"],
            "backend": manifest["backend"],
            "timings": manifest["timings"],
        }
        for directory, manifest in shards
    ]
    # What the run was (exploratory or confirmatory): process 0's label, which numbers the run
    # in the ledger; and the registration it ran under, if any, beside the merged manifest.
    labels = [m["procedure"] for _, m in shards if m.get("procedure")]
    if labels:
        out.extra["procedure"] = next((x for x in labels if x.get("run") is not None), labels[0])
    for directory, _ in shards:
        if (directory / REGISTRATION).is_file():
            atomic_write(path / REGISTRATION, (directory / REGISTRATION).read_bytes())
            break
    natural = first.get("natural")  # an accentuation's images, the same in every shard
    if natural:
        for image in natural["images"]:
            atomic_write(path / image["file"], (shards[0][0] / image["file"]).read_bytes())
        out.extra["natural"] = natural
    layers: list[str] = []
    for _, manifest in shards:
        layers += [entry["layer"] for entry in manifest["layers"] if entry["layer"] not in layers]
    for layer in layers:
        result, shape, names, degenerate = _merged_layer(layer, shards)
        out.add_layer(layer, result, shape, names if any(names) else None, degenerate)
    return out.finish()


def _merged_layer(
    layer: str, shards: list[tuple[Path, dict[str, Any]]]
) -> tuple[RenderResult, list[int], list[str | None], list[str | None]]:
    """One layer's pictures from every shard, back in the one-process order of units, with
    the units' names and each picture's ``degenerate`` mark (unit-major)."""
    count = len(shards)
    rows = []  # (position in the job, unit, {seed: image entry}, shard directory)
    entry = None
    for k, (directory, manifest) in enumerate(shards):
        mine = [e for e in manifest["layers"] if e["layer"] == layer]
        if not mine:
            continue  # this shard had no unit of the layer (more shards than units)
        entry = mine[0]
        images = {(e["unit"], e["seed"]): e for e in manifest["images"] if e["layer"] == layer}
        for i, unit in enumerate(entry["units"]):
            rows.append((k + count * i, unit, directory, images))
    rows.sort(key=lambda row: row[0])
    seeds = entry["seeds"]
    pictures = np.stack(
        [
            np.stack([read_picture(d / images[unit, seed]["file"]) for seed in seeds])
            for _, unit, d, images in rows
        ]
    )
    activations = np.array(
        [[images[unit, seed]["activation"] for seed in seeds] for _, unit, _, images in rows],
        np.float32,
    )
    names = [images[unit, seeds[0]].get("unit_name") for _, unit, _, images in rows]
    marks = [images[unit, seed].get("degenerate") for _, unit, _, images in rows for seed in seeds]
    seconds = [e["seconds"] for _, m in shards for e in m["layers"] if e["layer"] == layer]
    firsts = [
        e["first_call_seconds"] for _, m in shards for e in m["layers"] if e["layer"] == layer
    ]
    result = RenderResult(
        images=pictures,
        activations=activations,
        history=None,  # manifests keep no history
        units=np.array([unit for _, unit, _, _ in rows]),
        seeds=tuple(seeds),
        label=entry["label"],
        layer=layer,
        seconds=max(seconds),  # the shards ran side by side
        first_call_seconds=max(firsts),
    )
    return result, entry["shape"], names, marks
