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

from fvjax.checks.degenerate import degenerate_pictures
from fvjax.errors import DegenerateError, NonFiniteError, ShardError
from fvjax.job import config as config_lib
from fvjax.job import procedure, shards
from fvjax.job.check import check
from fvjax.job.outputs import RenderOutput, read_manifest
from fvjax.job.plan import JobPlan, build_plan
from fvjax.progress import Progress
from fvjax.rendering import determinism
from fvjax.rendering import inversion as inversion_lib
from fvjax.rendering.engine import run_plan


def run(
    config: config_lib.Config,
    stream: TextIO | None = None,
    registration: procedure.Registration | None = None,
) -> dict[str, Any]:
    """Render every layer of ``config`` and write its outputs; returns the manifest.

    Everything is checked (model, layers, units, sizes) before the first picture is rendered
    (:func:`~fvjax.job.plan.build_plan`); the manifest and gallery are rewritten after each
    layer. Process ``K`` of ``N`` (the ``shard`` key, see :mod:`fvjax.job.shards`) renders its
    slice of the units into ``OUTPUT/shard-K-of-N``; in a ``distributed`` job process 0 then
    merges the slices.

    The run is recorded in the output's ledger before it renders (:mod:`fvjax.job.procedure`):
    confirmatory under a ``registration`` (:func:`~fvjax.job.procedure.read_registration`),
    refused where it deviates from it; exploratory otherwise.
    """
    start = time.perf_counter()
    stream = stream if stream is not None else sys.stderr
    determinism.request(config.deterministic)  # before anything touches a JAX backend
    if config.distributed:
        shards.initialize_distributed()
    plan = build_plan(config)
    previous = _previous_manifest(plan.output)
    _note_other_job(plan, previous, stream)
    units = procedure.units_of(config, plan.shapes)
    record = procedure.start_run(
        config, plan.model.params, "render", units, plan.output, registration, plan.shard
    )
    out = RenderOutput(
        plan.output,
        config_lib.to_dict(config),
        config_lib.sha256(config),
        model=plan.model.name,
        started=start,
    )
    out.extra["procedure"] = record.label
    for warning in plan.warnings:
        stream.write(f"fvjax: warning: {warning}\n")
    if plan.warnings:
        out.extra["warnings"] = list(plan.warnings)
    natural = plan.natural
    if natural is not None:  # the images the pictures are held to, each written once
        files = out.add_natural(natural.images, natural.names, natural.source)
    setup_seconds = time.perf_counter() - start
    # One bar over the whole job, every layer's chunks and steps.
    bar = Progress(plan.total_steps, stream=stream, enabled=config.progress)
    try:
        for i, (layer, render_plan) in enumerate(plan.layers.items()):
            bar.label = f"[{i + 1}/{len(plan.layers)}] {layer}"
            result = run_plan(
                render_plan,
                progress=bar,
                checkpoint_dir=plan.checkpoint_dir(layer),
                checkpoint_every=config.checkpoint_every or None,
            )
            if config.objective == "accentuate":  # (unit, image) pairs: a row per unit
                result = inversion_lib.by_unit(result)
            details = None
            if config.objective in inversion_lib.IMAGE_OBJECTIVES:  # a row per image
                names = list(natural.names)
                details = _image_details(plan, layer, result, files)
            else:
                names = [plan.model.unit_name(layer, int(u)) for u in result.units]
            degenerate = _degenerate(result, stream)
            out.add_layer(
                layer,
                result,
                plan.shapes[layer],
                names if any(names) else None,
                degenerate,
                details,
            )
    except NonFiniteError:
        _remove_checkpoints(plan)  # the same run would fail at the same step: nothing to resume
        raise
    except BaseException:
        if plan.checkpoints is not None and plan.checkpoints.exists():
            stream.write(
                f"\nfvjax: note: the unfinished render is kept in {plan.checkpoints}: run the "
                "same command to resume it, or delete that folder to start over\n"
            )
        raise
    bar.close()
    stale = _stale_layers(previous, out)
    if stale:
        out.extra["stale_layers"] = stale
        stream.write(
            f"fvjax: note: {plan.output} still holds the folders of layers an earlier run "
            f"rendered and this one did not: {', '.join(stale)} (not in this manifest; "
            "delete them if they are not wanted)\n"
        )
    manifest = out.finish(setup_seconds=setup_seconds)
    _remove_checkpoints(plan)
    useful = [image for image in manifest["images"] if "degenerate" not in image]
    if manifest["images"] and not useful:
        procedure.finish_run(record)
        raise DegenerateError(
            f"all {len(manifest['images'])} pictures in {plan.output} are degenerate (say "
            f"{manifest['images'][0]['degenerate']}): nothing useful was made. Lower "
            "optimizer.learning_rate, check that the units respond to images, or add steps"
        )
    shard, n_shards = plan.shard
    if config.checks.enabled and n_shards == 1:
        manifest = check(config, stream, registration, record)
    if config.distributed and n_shards > 1:
        shards.wait_for_all("fvjax-render-done")
        if shard == 0:
            manifest = _merge_if_visible(Path(config.output), stream) or manifest
    procedure.finish_run(record)
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


def _previous_manifest(output: Path) -> dict[str, Any] | None:
    """The manifest an earlier run left in ``output``, if any (read once, before this run
    writes its own)."""
    try:
        return read_manifest(output)
    except (OSError, ValueError):
        return None


def _note_other_job(plan: JobPlan, previous: dict[str, Any] | None, stream: TextIO) -> None:
    """Say so when the output directory holds the pictures of a job with another identity."""
    try:
        theirs = config_lib.identity(previous["config"])
    except (ValueError, KeyError, TypeError):  # no manifest, or not one of ours
        return
    if theirs != config_lib.identity(plan.config):
        stream.write(
            f"fvjax: note: {plan.output} holds another job's outputs; files this job writes "
            "replace theirs, others stay but leave the manifest and gallery\n"
        )


def _image_details(plan: JobPlan, layer: str, result: Any, files: list[str]) -> list[dict]:
    """Each picture of an ``invert`` or ``caricature`` layer (image-major): its image's file,
    and its map's relative error, cosine and scale against the image's
    (:func:`~fvjax.rendering.inversion.image_result`)."""
    found = inversion_lib.image_result(plan.model, layer, plan.natural.maps[layer], result)
    return [
        {
            "natural": files[i],
            "error": float(found.error[i, j]),
            "cosine": float(found.cosine[i, j]),
            "scale": float(found.scale[i, j]),
        }
        for i in range(len(files))
        for j in range(len(result.seeds))
    ]


def _degenerate(result: Any, stream: TextIO) -> list[str | None]:
    """Why each of the layer's pictures (unit-major) shows nothing, ``None`` where it is fine;
    said on ``stream`` when any does."""
    flat = result.images.reshape(-1, *result.images.shape[2:])
    history = None if result.history is None else result.history.reshape(len(result.history), -1)
    reasons = degenerate_pictures(flat, history)
    where = [(int(u), int(s)) for u in result.units for s in result.seeds]
    bad = [(w, r) for w, r in zip(where, reasons, strict=True) if r]
    if bad:
        shown = "; ".join(f"unit {u} seed {s}: {r}" for (u, s), r in bad[:3])
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        stream.write(
            f"fvjax: warning: {len(bad)} of {len(reasons)} pictures of {result.layer} are "
            f"degenerate ({shown}{more}); marked 'degenerate' in the manifest and gallery\n"
        )
    return reasons


def _stale_layers(previous: dict[str, Any] | None, out: RenderOutput) -> list[str]:
    """Folders of ``output`` an earlier run (its ``previous`` manifest) wrote for layers this
    run did not render."""
    before = {entry["slug"] for entry in (previous or {}).get("layers", [])}
    now = {entry["slug"] for entry in out.layers}
    return sorted(slug for slug in before - now if (out.path / slug).is_dir())
