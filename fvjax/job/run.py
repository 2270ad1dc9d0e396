"""A render job from start to end: plan it, render each layer, write the outputs.

>>> import tempfile
>>> from fvjax.job.config import Config
>>> out = tempfile.mkdtemp()
>>> config = Config(model="tiny", layers=["block2"], steps=2, size=16, output=out, progress=False)
>>> manifest = run(config)
>>> manifest["complete"], len(manifest["images"])
(True, 16)
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from fvjax.errors import ShardError
from fvjax.job import config as config_lib
from fvjax.job import shards
from fvjax.job.check import check
from fvjax.job.outputs import RenderOutput, read_manifest
from fvjax.job.plan import JobPlan, build_plan
from fvjax.progress import Progress
from fvjax.rendering.engine import run_plan


def run(config: config_lib.Config, stream: TextIO | None = None) -> dict[str, Any]:
    """Render every layer of ``config`` and write its outputs; returns the manifest.

    Everything is checked (model, layers, units, sizes) before the first picture is rendered
    (:func:`~fvjax.job.plan.build_plan`); the manifest and gallery are rewritten after each
    layer. Process ``K`` of ``N`` (the ``shard`` key, see :mod:`fvjax.job.shards`) renders its
    slice of the units into ``OUTPUT/shard-K-of-N``; in a ``distributed`` job process 0 then
    merges the slices.
    """
    start = time.perf_counter()
    stream = stream if stream is not None else sys.stderr
    if config.distributed:
        shards.initialize_distributed()  # before anything touches a JAX backend
    plan = build_plan(config)
    _note_other_job(plan, stream)
    out = RenderOutput(
        plan.output,
        config_lib.to_dict(config),
        config_lib.sha256(config),
        model=plan.model.name,
        started=start,
    )
    setup_seconds = time.perf_counter() - start
    # One bar over the whole job, every layer's chunks and steps.
    bar = Progress(plan.total_steps, stream=stream, enabled=config.progress)
    for i, (layer, render_plan) in enumerate(plan.layers.items()):
        bar.label = f"[{i + 1}/{len(plan.layers)}] {layer}"
        result = run_plan(
            render_plan,
            progress=bar,
            checkpoint_dir=plan.checkpoint_dir(layer),
            checkpoint_every=config.checkpoint_every or None,
        )
        names = [plan.model.unit_name(layer, int(u)) for u in result.units]
        out.add_layer(layer, result, plan.shapes[layer], names if any(names) else None)
    bar.close()
    manifest = out.finish(setup_seconds=setup_seconds)
    _remove_checkpoints(plan)
    shard, n_shards = plan.shard
    if config.checks.enabled and n_shards == 1:
        manifest = check(config, stream)
    if config.distributed and n_shards > 1:
        shards.wait_for_all("fvjax-render-done")
        if shard == 0:
            manifest = _merge_if_visible(Path(config.output), stream) or manifest
    return manifest


def _remove_checkpoints(plan: JobPlan) -> None:
    """Every output is written: the checkpoints have done their job."""
    if plan.checkpoints is None:
        return
    shutil.rmtree(plan.checkpoints, ignore_errors=True)
    if plan.checkpoints.parent.is_dir() and not any(plan.checkpoints.parent.iterdir()):
        plan.checkpoints.parent.rmdir()


def _merge_if_visible(path: Path, stream: TextIO) -> dict[str, Any] | None:
    """Merge a distributed job's slices where process 0 sees them all (a shared filesystem)."""
    try:
        return shards.merge(path)
    except ShardError as exc:
        stream.write(
            f"fvjax: note: slices not merged ({exc}); gather every shard-K-of-N directory "
            f"under {path} and run: fvjax merge {path}\n"
        )
        return None


def _note_other_job(plan: JobPlan, stream: TextIO) -> None:
    """Say so when the output directory holds the pictures of a job with another identity."""
    try:
        previous = read_manifest(plan.output)
        theirs = config_lib.identity(previous["config"])
    except (OSError, ValueError, KeyError, TypeError):
        return
    if theirs != config_lib.identity(plan.config):
        stream.write(
            f"fvjax: note: {plan.output} holds another job's outputs; files this job writes "
            "replace theirs, others stay but leave the manifest and gallery\n"
        )
