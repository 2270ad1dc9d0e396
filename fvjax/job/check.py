"""The checks of a render job: the evidence beside its pictures, written into its output.

``fvjax check --config C`` (or ``fvjax render`` with ``checks.enabled``) reads the pictures a
render left in ``OUTPUT``, runs one dataset pass over the config's ``[checks]`` dataset for
every checked layer, then per unit: dissection, dataset examples, synthetic vs natural, the
price of the priors (a plain render beside) and the path check. It writes a card per unit
(``OUTPUT/<slug>/units/unit0003.html`` with its crops), a concept summary per layer
(``OUTPUT/<slug>/concepts.svg``), a ``checks`` section in ``manifest.json`` and the gallery
pages again, every file atomically.

>>> import tempfile
>>> from fvjax.job.config import from_dict
>>> from fvjax.job.run import run
>>> out = tempfile.mkdtemp()
>>> config = from_dict({"model": "tiny", "layers": ["block2"], "units": [0, 1], "steps": 2,
...     "size": 32, "output": out, "progress": False,
...     "checks": {"images": 40, "plain": False, "path": False}})
>>> _ = run(config)
>>> manifest = check(config)
>>> sorted(manifest["checks"]["layers"]["block2"]["units"])
['0', '1']
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import jax
import numpy as np

from fvjax.checks import atlas as atlas_lib
from fvjax.checks.activations import unit_length
from fvjax.checks.atlas_page import atlas_html, cell_examples
from fvjax.checks.card import svg_bars, unit_card_html
from fvjax.checks.dissection import detectors_by_category, label_units
from fvjax.checks.evidence import UnitEvidence, UnitFacets, unit_evidence
from fvjax.checks.facets import Facets, coverage, facet_directions, natural_facets
from fvjax.checks.paths import check_paths, path_layers
from fvjax.checks.scan import dataset_pass, forward_maps
from fvjax.data.broden import load_broden
from fvjax.data.datasets import Dataset, folder_dataset, world_dataset
from fvjax.data.images import as_size, png_bytes, read_picture
from fvjax.errors import ConceptDatasetError, ConfigError
from fvjax.files import atomic_write
from fvjax.job import config as config_lib
from fvjax.job import gallery, procedure
from fvjax.job.outputs import HISTORY, read_manifest, write_manifest
from fvjax.job.plan import (
    build_model,
    build_plan,
    check_facet_pictures,
    layer_objective,
    render_settings,
)
from fvjax.models.adapters import Model
from fvjax.progress import Progress
from fvjax.rendering import alpha, determinism
from fvjax.rendering.engine import RenderPlan, plan_render, run_plan
from fvjax.rendering.seeds import Guide

#: The per-image score that matches each layer objective (what the pictures' values are).
SCORE_OF_OBJECTIVE = {"channel": "mean", "neuron": "center"}
UNITS = "units"
CONCEPTS_SVG = "concepts.svg"
#: A layer's activation atlas: ``atlas.png``, ``atlas.html`` and its images in ``atlas/``.
ATLAS = "atlas"
#: What a card of an alpha job says of its pictures (the model never sees RGBA).
ALPHA_NOTE = (
    "<p>These pictures are RGBA (<code>param.alpha</code>): the checks read each one "
    f"composited over mid-grey ({alpha.GREY:g}), as the render's final values are.</p>"
)


def build_dataset(config: config_lib.Config) -> Dataset:
    """The ``[checks]`` dataset at the render's picture size."""
    name = config.checks.dataset
    if name == "world":
        return world_dataset(config.checks.seed, config.checks.images, config.size)
    path = Path(name)
    if not path.is_dir():
        raise ConfigError(
            f"checks.dataset {name!r} is not a folder; use 'world', a folder of images, or a "
            "Broden-layout folder (one with index.csv)"
        )
    if (path / "index.csv").exists():
        return load_broden(path, config.size)
    return folder_dataset(path, config.size)


def _layers(config: config_lib.Config, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    rendered = {entry["layer"]: entry for entry in manifest["layers"]}
    wanted = config.checks.layers or tuple(rendered)
    missing = [layer for layer in wanted if layer not in rendered]
    if missing:
        raise ConfigError(
            f"checks.layers names {missing[0]!r}, which this render did not cover; "
            f"its layers are: {', '.join(rendered)}"
        )
    return [rendered[layer] for layer in wanted]


def _read_render(config: config_lib.Config) -> tuple[Path, dict[str, Any]]:
    out = Path(config.output)
    try:
        manifest = read_manifest(out)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"no render to check in {out} ({exc}); run `fvjax render` with this config first"
        ) from exc
    if config_lib.identity(manifest["config"]) != config_lib.identity(config):
        raise ConfigError(
            f"{out} holds the pictures of another job than this config's (they differ in a "
            "key that decides the pictures); check with the config that rendered them"
        )
    if not manifest.get("complete"):
        raise ConfigError(f"the render in {out} is not complete; run `fvjax render` to finish it")
    return out, manifest


def _pictures(out: Path, entry: dict, images: list[dict]) -> tuple[np.ndarray, ...]:
    """``(U, S, H, W, 3)`` pictures read back (RGBA ones composited over grey, what the
    model saw for their values), ``(U, S)`` activations, and the history."""
    units, seeds = entry["units"], entry["seeds"]
    where = {(image["unit"], image["seed"]): image for image in images}
    pictures = np.zeros((len(units), len(seeds), *entry["image_size"], 3), np.float32)
    values = np.zeros((len(units), len(seeds)))
    for i, unit in enumerate(units):
        for j, seed in enumerate(seeds):
            image = where[(unit, seed)]
            pictures[i, j] = alpha.over_background(read_picture(out / image["file"]), alpha.GREY)
            values[i, j] = image["activation"]
    history_file = out / entry["slug"] / HISTORY
    history = np.load(history_file) if history_file.exists() else None
    return pictures, values, history


def plain_config(config: config_lib.Config) -> config_lib.Config:
    """The plain procedure beside ``config``: pixels, no decorrelation, no transforms; the
    same steps, seeds, size and optimizer (what the price of the priors compares with)."""
    return dataclasses.replace(
        config,
        param=dataclasses.replace(config.param, kind="pixel", decorrelate=False, alpha=False),
        transforms=dataclasses.replace(config.transforms, preset="none"),
        shard="0/1",
        checkpoint=False,
    )


def _plain(config: config_lib.Config, layers: list[str], stream: TextIO) -> dict[str, np.ndarray]:
    plain = plain_config(dataclasses.replace(config, layers=tuple(layers)))
    plan = build_plan(plain)
    bar = Progress(plan.total_steps, label="checks: plain render", stream=stream,
                   enabled=config.progress)  # fmt: skip
    found = {}
    for layer, render_plan in plan.layers.items():
        result = run_plan(render_plan, progress=bar)
        found[layer] = dict(zip(np.asarray(result.units).tolist(), result.activations, strict=True))
    bar.close()
    return found


def _vectors(pictures: np.ndarray, model: Model, layer: str, batch_size: int) -> np.ndarray:
    """``(U, S, C)``: each picture's ``layer`` map, its mean over positions (RGBA pictures
    composited over grey)."""
    flat = alpha.over_background(pictures, alpha.GREY).reshape(-1, *pictures.shape[2:4], 3)
    rows = []
    for start in range(0, len(flat), batch_size):
        batch = flat[start : start + batch_size]
        padded = np.concatenate([batch, np.zeros((batch_size - len(batch), *batch.shape[1:]))])
        maps = forward_maps(model.apply, (layer,), model.params, padded.astype(np.float32))
        rows.append(np.asarray(maps[layer]).mean(axis=(1, 2))[: len(batch)])
    return np.concatenate(rows).reshape(*pictures.shape[:2], -1)


def _guided(
    config, model, layer: str, found: Facets, reached: np.ndarray, length: np.ndarray
) -> RenderPlan:
    """One picture for each facet slot (slot ``j`` of a unit with ``n`` facets: facet
    ``j % n``), started from the facet's mean image (Nguyen et al. 2016) and steered along
    what sets the facet apart (:func:`~fvjax.checks.facets.facet_directions`).

    The pull is in the unit's own terms: a change of the seeds' activation vector's length
    (``length (U,)``, the mean over the unit's seeds) along the direction is worth
    ``facets.weight`` times the activation the seeds reached (``reached (U,)``). The natural
    scale does not serve: a unit whose best natural image scores below zero may still have
    pictures at 20."""
    slots = found.centroids.shape[1]
    which = np.arange(slots)[None, :] % np.maximum(found.n_facets, 1)[:, None]
    apart = facet_directions(found.centroids, found.sizes)
    directions = np.take_along_axis(apart, which[..., None], 1)
    scale = config.facets.weight * np.maximum(reached, 0.0) / np.maximum(length, 1e-12)
    scale = scale * (found.n_facets > 0)
    settings = {**render_settings(config), "seeds": slots}
    size = as_size(settings["size"])
    means = np.take_along_axis(found.mean_images, which[..., None, None, None], 1)
    if means.shape[2:4] != size:
        means = np.asarray(jax.image.resize(means, (*means.shape[:2], *size, 3), "linear"))
    objective = layer_objective(config, layer, found.units.tolist())
    guide = Guide(found.feature_layer, 1.0)
    return plan_render(
        model,
        objective,
        guide=guide,
        directions=directions * scale[:, None, None],
        starts=np.clip(means, 0.0, 1.0),
        **settings,
    )


def _facets(config, model, dataset, stats, entry, pictures, values, stream) -> list[UnitFacets]:
    """Each unit's facets: its top images clustered, its seeds' coverage of them, and (with
    ``facets.render``) a picture guided to each facet."""
    f, layer = config.facets, entry["layer"]
    feature = f.layer or layer
    found = natural_facets(
        model, dataset, stats, feature, k=f.k or None, k_max=f.k_max, key=f.seed,
        units=entry["units"], batch_size=config.checks.batch_size,
    )  # fmt: skip
    batch = config.checks.batch_size
    vectors = _vectors(pictures, model, feature, batch)
    seeds = coverage(unit_length(vectors), found.centroids, found.n_facets)
    guided = guided_cover = None
    if f.render:
        length = np.linalg.norm(vectors, axis=-1).mean(1)
        plan = _guided(config, model, layer, found, values.mean(1), length)
        bar = Progress(plan.total_steps, label="checks: facet pictures", stream=stream,
                       enabled=config.progress)  # fmt: skip
        guided = run_plan(plan, progress=bar)
        bar.close()
        guided_cover = coverage(
            unit_length(_vectors(guided.images, model, feature, batch)),
            found.centroids,
            found.n_facets,
        )
    out = []
    for i in range(len(found.units)):
        n = int(found.n_facets[i])
        members = tuple(tuple(int(m) for m in row if m >= 0) for row in found.members[i, :n])
        extra = {}
        if guided is not None:
            extra = dict(
                pictures=guided.images[i, :n],
                activations=guided.activations[i, :n],
                pictures_facet=np.asarray(guided_cover.matched[i, :n]),
                pictures_covered=int(
                    len(set(np.asarray(guided_cover.matched[i, :n]).tolist()) - {-1})
                ),
            )
        out.append(
            UnitFacets(
                sizes=found.sizes[i, :n],
                members=members,
                silhouette=float(found.silhouette[i]),
                seed_facet=np.asarray(seeds.matched[i]),
                covered=int(seeds.covered[i]),
                **extra,
            )
        )
    return out


def _card_page(
    evidence: UnitEvidence,
    body: str,
    neighbours: tuple[int | None, int | None],
    label: dict,
    note: str = "",
) -> str:
    """A unit's card page; ``label``: the manifest's ``procedure`` (what the run was, and the
    unit's verdict under a registration)."""
    links = [f'<a href="../{gallery.INDEX}#unit{evidence.unit}">&larr; {evidence.layer}</a>']
    for name, unit in zip(("previous", "next"), neighbours, strict=True):
        if unit is not None:
            links.append(f'<a href="unit{unit:04d}.html">{name}: unit {unit}</a>')
    nav = " &middot; ".join(links)
    verdict = label.get("verdicts", {}).get(evidence.layer, {}).get(str(evidence.unit))
    header = f"<p>{nav}</p>{gallery.procedure_html(label, '../../')}{gallery.verdict_html(verdict)}"
    header += note
    return gallery.page(f"{evidence.layer} unit {evidence.unit}", header, body)


def _write_cards(
    out: Path,
    entry: dict,
    evidence: list[UnitEvidence],
    history,
    config_hash: str,
    label: dict,
    note: str = "",
) -> None:
    folder = out / entry["slug"] / UNITS

    def source(name: str, image: np.ndarray) -> str:
        atomic_write(folder / name, png_bytes(image))
        return name

    units = [e.unit for e in evidence]
    for i, e in enumerate(evidence):
        own = [f"../unit{e.unit:04d}_seed{s}.png" for s in e.seeds]
        curve = None if history is None else history[:, i]
        body = unit_card_html(e, source, own, curve, config_hash)
        neighbours = (units[i - 1] if i else None, units[i + 1] if i + 1 < len(units) else None)
        page = _card_page(e, body, neighbours, label, note)
        atomic_write(folder / f"unit{e.unit:04d}.html", page)


def _atlas(config, model, dataset, layer: str, stream: TextIO) -> atlas_lib.Atlas:
    """The ``[atlas]`` of ``layer`` over the checks' dataset, its cells rendered as the job's
    pictures are (``atlas.steps`` steps), opaque: Lucid's atlas icons have no alpha."""
    a = config.atlas
    opaque = dataclasses.replace(config.param, alpha=False)
    settings = render_settings(
        dataclasses.replace(config, param=opaque, steps=a.steps or config.steps)
    )
    del settings["seeds"]  # one picture per cell, from atlas.seed
    cells = a.grid * a.grid  # at most: every cell kept
    chunks = -(-cells // (config.batch_size or cells))
    bar = Progress(settings["steps"] * chunks, label=f"checks: atlas of {layer}", stream=stream,
                   enabled=config.progress)  # fmt: skip
    found = atlas_lib.activation_atlas(
        model, dataset, layer, points=a.points, grid=a.grid, min_points=a.min_points,
        perplexity=a.perplexity, seed=a.seed, dataset_batch_size=config.checks.batch_size,
        progress=bar, **settings,
    )  # fmt: skip
    bar.close()
    return found


def _write_atlas(out: Path, entry: dict, found: atlas_lib.Atlas, examples, label: dict) -> None:
    folder = out / entry["slug"]

    def source(name: str, image: np.ndarray) -> str:
        atomic_write(folder / ATLAS / name, png_bytes(image))
        return f"{ATLAS}/{name}"

    atomic_write(folder / f"{ATLAS}.png", png_bytes(found.image))
    links = (
        f'<a href="{gallery.INDEX}">&larr; {entry["layer"]}</a> &middot; '
        f'<a href="../{gallery.INDEX}">all layers</a> &middot; <a href="{ATLAS}.png">atlas.png</a>'
    )
    header = (
        f"<p>{links}</p><h1>Activation atlas of {entry['layer']}</h1>"
        f"{gallery.procedure_html(label, '../')}"
    )
    body = atlas_html(found, source, examples)
    atomic_write(folder / f"{ATLAS}.html", gallery.page(f"{entry['layer']} atlas", header, body))


def _atlas_summary(found: atlas_lib.Atlas, slug: str, examples) -> dict[str, Any]:
    """What the manifest records of an atlas: its files, settings, figures and cells."""
    k = len(found.cells)
    return {
        "image": f"{slug}/{ATLAS}.png",
        "page": f"{slug}/{ATLAS}.html",
        "points": len(found.cell),
        "images": len(np.unique(found.samples.image)),
        "grid": found.grid,
        "min_points": found.min_points,
        "cells": k,
        "agreement": round(found.agreement, 4),
        "cosine_median": round(float(np.median(found.cosine)), 4),
        "kl": round(found.kl, 4),
        "perplexity": round(found.perplexity, 3),
        "seconds": found.seconds,
        "cell": [
            {
                "row": int(cell) // found.grid,
                "col": int(cell) % found.grid,
                "count": int(found.counts.flat[cell]),
                "value": round(float(found.values[i]), 4),
                "nearest": int(found.cells[found.nearest[i]]),
                "images": [int(j) for j in examples[i][1]],
            }
            for i, cell in enumerate(found.cells)
        ],
    }


def check(
    config: config_lib.Config,
    stream: TextIO | None = None,
    registration: procedure.Registration | None = None,
    record: procedure.Run | None = None,
) -> dict[str, Any]:
    """Run the ``[checks]`` of ``config`` over its finished render; returns the manifest.

    Under a ``registration`` the check is confirmatory (its render must be too) and each unit
    gets its verdict; ``record``: the render's run that calls it, else the check is a run of
    its own in the output's ledger (:mod:`fvjax.job.procedure`)."""
    stream = stream if stream is not None else sys.stderr
    start = time.perf_counter()
    determinism.request(config.deterministic)  # before anything touches a JAX backend
    c = config.checks
    if config.objective not in SCORE_OF_OBJECTIVE:  # pictures held to natural images
        raise ConfigError(
            f"the checks hold each unit's pictures from random starts against its natural "
            f"examples; objective {config.objective!r} makes pictures held to natural images, "
            "not a unit's: check a plain render (objective = 'channel') of these layers"
        )
    check_facet_pictures(config)
    out, manifest = _read_render(config)
    entries = _layers(config, manifest)
    model: Model = build_model(config)
    own = record is None
    if own:
        units = {entry["layer"]: entry["units"] for entry in manifest["layers"]}
        record = procedure.start_run(config, model.params, "check", units, out, registration)
    dataset = build_dataset(config)
    has_masks = dataset.concepts is not None and dataset.slots > 0
    if c.dissect and not has_masks:
        raise ConceptDatasetError(
            f"checks.dissect is on but dataset {dataset.name} has no concept masks; use the "
            "world or a Broden-layout folder, or set checks.dissect = false"
        )
    layers = [entry["layer"] for entry in entries]
    bar = Progress(len(dataset), label="checks: dataset pass", stream=stream, unit="image",
                   enabled=config.progress)  # fmt: skip
    stats = dataset_pass(
        model, dataset, layers, top_k=c.top_k, quantile=c.quantile,
        score=SCORE_OF_OBJECTIVE[config.objective], dissect=c.dissect,
        batch_size=c.batch_size, progress=bar,
    )  # fmt: skip
    bar.close()
    plain = _plain(config, layers, stream) if c.plain else {}
    section: dict[str, Any] = {
        "dataset": dataset.name,
        "images": len(dataset),
        "settings": config_lib.to_dict(config)["checks"],
        "layers": {},
    }
    cards, atlases = [], []
    for entry in entries:
        layer = entry["layer"]
        images = [image for image in manifest["images"] if image["layer"] == layer]
        pictures, values, history = _pictures(out, entry, images)
        units = entry["units"]
        paths = None
        if c.path:
            below = c.path_layers or path_layers(model, layer, config.size)
            if below:
                paths = check_paths(model, dataset, stats[layer], units, pictures, below,
                                    top_k=c.top_k)  # fmt: skip
        facets = None
        if config.facets.enabled:
            facets = _facets(config, model, dataset, stats[layer], entry, pictures, values, stream)
        evidence = unit_evidence(
            model, dataset, stats[layer], units, values, entry["seeds"], top_k=c.top_k,
            detector_iou=c.detector_iou, far_above=c.far_above, paths=paths,
            plain=np.array([plain[layer][u] for u in units]) if plain else None, facets=facets,
        )  # fmt: skip
        cards.append((entry, evidence, history))
        summary: dict[str, Any] = {
            "score": stats[layer].score,
            "threshold_exact": stats[layer].exact,
            "units": {str(e.unit): e.summary() for e in evidence},
        }
        if stats[layer].concepts is not None:
            labels = label_units(stats[layer].iou, stats[layer].concepts, c.detector_iou)
            counts = detectors_by_category(labels, stats[layer].concepts)
            summary["detectors_by_category"] = counts
            summary["concepts_svg"] = f"{entry['slug']}/{CONCEPTS_SVG}"
            atomic_write(
                out / entry["slug"] / CONCEPTS_SVG,
                svg_bars(counts, title=f"{layer}: units detecting a concept, by category"),
            )
        if config.atlas.enabled:
            found = _atlas(config, model, dataset, layer, stream)
            examples = cell_examples(model, dataset, found)
            atlases.append((entry, found, examples))
            summary["atlas"] = _atlas_summary(found, entry["slug"], examples)
        section["layers"][layer] = summary
    section["seconds"] = round(time.perf_counter() - start, 3)
    manifest["checks"] = section
    manifest["procedure"] = procedure.checked(record.label, section, registration)
    for entry, evidence, history in cards:
        _write_cards(
            out, entry, evidence, history, manifest["config_sha256"], manifest["procedure"],
            ALPHA_NOTE if config.param.alpha else "",
        )  # fmt: skip
    for entry, found, examples in atlases:
        _write_atlas(out, entry, found, examples, manifest["procedure"])
    write_manifest(out, manifest)
    gallery.write_pages(out, manifest)
    if own:
        procedure.finish_run(record)
    return manifest
