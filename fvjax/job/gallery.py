"""The gallery: static HTML pages over an output directory, one per job and one per layer.

Plain HTML and CSS with relative links: it opens from the filesystem, no server, no
JavaScript. :mod:`fvjax.job.outputs` writes the pages beside the pictures they show. Every
page says what its run was (:func:`procedure_html`): confirmatory, under a registration, or
exploratory (:mod:`fvjax.job.procedure`).
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fvjax.files import atomic_write

MANIFEST = "manifest.json"
INDEX = "index.html"
GRID = "grid.png"
#: The ledger of every run in an output root, and a confirmatory run's copy of its
#: registration (:mod:`fvjax.job.procedure`).
LEDGER = "ledger.jsonl"
REGISTRATION = "registration.json"


_CSS = """
:root { color-scheme: light; --ink: #1d2430; --muted: #5d6675; --line: #d9dde3; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: var(--ink); background: #f3f4f6; }
header { padding: 18px 28px 14px; background: #fff; border-bottom: 1px solid var(--line); }
header h1 { margin: 0 0 4px; font-size: 20px; font-weight: 600; }
header p { margin: 2px 0; color: var(--muted); }
header a { color: #2357c5; text-decoration: none; }
header a:hover { text-decoration: underline; }
main { padding: 20px 28px 40px; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  background: #eef0f3; padding: 1px 4px; border-radius: 3px; }
.meta { display: flex; flex-wrap: wrap; gap: 6px 18px; margin-top: 8px; color: var(--muted); }
.meta b { color: var(--ink); font-weight: 600; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr));
  gap: 18px; }
.card { display: block; background: #fff; border: 1px solid var(--line); border-radius: 8px;
  overflow: hidden; color: inherit; text-decoration: none; }
.card:hover { border-color: #9fb3d9; box-shadow: 0 2px 8px rgba(30, 50, 90, .12); }
.card .thumb { height: 280px; padding: 10px; background: #fafafa;
  border-bottom: 1px solid var(--line); }
.card .thumb img { display: block; width: 100%; height: 100%; object-fit: contain; }
.card .thumb img.small { image-rendering: pixelated; }
.card .text { padding: 10px 14px 12px; }
.card h2 { margin: 0 0 4px; font-size: 16px; }
.card p { margin: 0; color: var(--muted); }
.tiles { display: grid; grid-template-columns: repeat(auto-fill, minmax(var(--tile), 1fr));
  gap: 12px; }
.tile { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 8px; }
.tile h3 { margin: 0 0 6px; font-size: 13px; font-weight: 600; display: flex;
  justify-content: space-between; }
.tile h3 span { color: var(--muted); font-weight: 400; }
.seeds { display: flex; gap: 6px; }
figure { margin: 0; flex: 1 1 0; min-width: 0; }
figure img { display: block; width: 100%; height: auto; image-rendering: pixelated;
  border-radius: 2px; /* a checkerboard behind transparent (param.alpha) pictures */
  background: repeating-conic-gradient(#d9d9d9 0 25%, #f7f7f7 0 50%) 0 0 / 12px 12px; }
figcaption { margin-top: 2px; font-size: 11px; color: var(--muted); text-align: center;
  white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.running { color: #b25b00; font-weight: 600; }
.tile a.card-link { color: inherit; text-decoration: none; display: block; }
.tile a.card-link:hover h3 { color: #2357c5; }
.facts { font-size: 11px; color: var(--muted); margin-top: 4px; }
.facts b { color: var(--ink); font-weight: 600; }
.flag { background: #c62828; color: #fff; border-radius: 3px; padding: 0 5px; font-size: 11px;
  margin-left: 4px; }
.views a, .views b { margin-right: 12px; }
.procedure { margin: 8px 0 2px; padding: 6px 10px; border-radius: 4px; color: var(--ink); }
.exploratory { background: #fff3dc; } .confirmatory { background: #e3f3e6; }
.procedure ul { margin: 4px 0 0; padding-left: 20px; }
.runs { border-collapse: collapse; font-size: 12px; margin-top: 6px; }
.runs td, .runs th { padding: 1px 8px 1px 0; text-align: left; }
.verdict { font-size: 11px; margin-top: 4px; }
.verdict b { color: #1b7a34; } .verdict.not b { color: #c62828; }
figure.degenerate img { opacity: 0.35; outline: 2px solid #c62828; }
figure.degenerate figcaption b { color: #c62828; }
"""

#: The layer page's views over its units: file, title, sort key, filter (over a unit's
#: checks summary; units without checks sort last and pass no filter).
VIEWS = (
    ("index.html", "by unit", None, None),
    ("by-concept.html", "by concept IoU", "iou", None),
    ("by-reach.html", "by reach", "reach", None),
    ("detectors.html", "detectors only", "iou", "detector"),
    ("flagged.html", "flagged only", "reach", "flags"),
    ("facets.html", "facets the seeds miss", "facets", "facets"),
)


def _fact(summary: Mapping[str, Any], key: str) -> float:
    """The sort value of a unit: its IoU, the facets its seeds miss (then its facets), or its
    pictures' highest reach."""
    if key == "iou":
        return float(summary.get("iou", -1.0))
    if key == "facets":
        facets = summary.get("facets", {"n": 0, "covered": 0})
        return facets["n"] - facets["covered"] + facets["n"] / 100
    reaches = [r for r in summary.get("reach", []) if r is not None]
    return max(reaches) if reaches else -1.0


def _facts_html(summary: Mapping[str, Any]) -> str:
    parts = []
    if "concept" in summary:
        kind = "detector" if summary["detector"] else "best"
        parts.append(f"{kind} <b>{html.escape(summary['concept'])}</b> IoU {summary['iou']:.3f}")
    reaches = [r for r in summary.get("reach", []) if r is not None]
    if reaches:
        parts.append(f"reach <b>{max(reaches):.3g}</b>")
    if "facets" in summary:
        facets = summary["facets"]
        parts.append(f"seeds cover <b>{facets['covered']}</b> of {facets['n']} facets")
    flags = "".join(f'<span class="flag">{html.escape(f)}</span>' for f in summary["flags"])
    return f'<div class="facts">{" &middot; ".join(parts)}{flags}</div>'


def procedure_html(label: Mapping[str, Any] | None, root: str = "", runs: bool = False) -> str:
    """What a run was, for the top of a page (``label``: the manifest's ``procedure``):
    confirmatory, with its registration and verdicts; or exploratory, which of the procedures
    tried on the model, and how its config differs from the previous run's. ``root``: the
    output directory, relative to the page; ``runs``: list every run of the ledger too.

    >>> text = procedure_html({"kind": "exploratory", "run": 7, "procedure": 7,
    ...     "procedures": 7, "differences": ["steps: 4 -> 8"], "ledger": []})
    >>> "exploratory</b>: procedure 7 of 7 tried on this model" in text, "steps: 4 -&gt; 8" in text
    (True, True)
    """
    if not label:
        return ""
    kind, run = label["kind"], label.get("run")
    ledger = f'<a href="{root}{LEDGER}">ledger</a>'
    where = "not in the ledger (process 0 of the job keeps it)" if run is None else f"run {run}"
    if kind == "confirmatory":
        units = [v for layer in label.get("verdicts", {}).values() for v in layer.values()]
        found = Counter(v["verdict"] for v in units)
        counts = ", ".join(f"{n} {html.escape(k)}" for k, n in sorted(found.items()))
        text = (
            f"<b>confirmatory</b>: the procedure registered {html.escape(label['registered'])}, "
            f'<a href="{root}{REGISTRATION}">registration</a> SHA-256 '
            f"<code>{label['registration_sha256'][:16]}</code>, {where} of the {ledger}; "
            "verdicts by the registered thresholds: "
            f"{counts or 'none yet (fvjax check --registered)'}"
        )
        details = "".join(
            f"<li>versions differ from the registration's: {html.escape(d)}</li>"
            for d in label.get("versions_differ", [])
        )
    else:
        text = (
            f"<b>exploratory</b>: procedure {label['procedure']} of {label['procedures']} tried "
            f"on this model ({where} of the {ledger}); pictures tuned by looking cannot confirm "
            "a hypothesis: register a procedure first (fvjax preregister)"
        )
        changed = label.get("differences")
        if changed is None:
            details = "<li>the first run in this output</li>"
        elif not changed:
            details = "<li>the same config as the previous run</li>"
        else:
            details = "".join(f"<li><code>{html.escape(d)}</code></li>" for d in changed)
            text += f"; its config differs from the previous run's in {len(changed)} key(s):"
    table = ""
    if runs and label.get("ledger"):
        columns = ("run", "command", "kind", "status", "started", "config_sha256", "differences")
        cells = [["" if e.get(k) is None else str(e[k])[: 12 if k == "config_sha256" else 25]
                  for k in columns] for e in label["ledger"]]  # fmt: skip
        rows = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in cells
        )
        head = "".join(f"<th>{h}</th>" for h in (*columns[:5], "config", "keys changed"))
        table = f'<table class="runs"><tr>{head}</tr>{rows}</table>'
    details = f"<ul>{details}</ul>" if details else ""
    return f'<div class="procedure {kind}">{text}{details}{table}</div>'


def verdict_html(verdict: Mapping[str, Any] | None) -> str:
    """A unit's verdict under a registration (the manifest's ``procedure.verdicts``), or "".

    >>> verdict_html({"verdict": "supported", "reasons": []})
    '<div class="verdict">verdict <b>supported</b></div>'
    """
    if not verdict:
        return ""
    supported = verdict["verdict"] == "supported"
    concept = f" (detects {html.escape(verdict['concept'])})" if verdict.get("concept") else ""
    reasons = "; ".join(html.escape(r) for r in verdict["reasons"])
    return (
        f'<div class="verdict{"" if supported else " not"}">verdict <b>'
        f"{html.escape(verdict['verdict'])}</b>{concept}{': ' + reasons if reasons else ''}</div>"
    )


def page(title: str, header: str, body: str) -> str:
    """A whole gallery page: the house style around ``header`` and ``body`` HTML."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<header>\n{header}\n</header>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


def _number(value: float) -> str:
    return f"{value:.4g}"


def _href(path: str) -> str:
    return html.escape("/".join(_quote(part) for part in path.split("/")), quote=True)


def _quote(part: str) -> str:
    return quote(part, safe="")


def _checked_line(manifest: Mapping[str, Any], layer: str) -> str:
    checks = manifest.get("checks", {}).get("layers", {}).get(layer)
    if not checks:
        return ""
    units = checks["units"].values()
    detectors = sum(bool(u.get("detector")) for u in units)
    flagged = sum(bool(u["flags"]) for u in units)
    concepts = "" if "detectors_by_category" not in checks else f"{detectors} detector(s), "
    return f"<p>checked: {concepts}{flagged} flagged unit(s); a card per unit</p>"


def _slug_of(manifest: Mapping[str, Any], layer: str) -> str:
    return next(entry["slug"] for entry in manifest["layers"] if entry["layer"] == layer)


def _atlas_link(atlas: Mapping[str, Any], folder: str) -> str:
    """A link to a layer's activation atlas (the manifest's ``checks.layers.<layer>.atlas``)
    from a page ``folder`` above it.

    >>> _atlas_link({"cells": 5, "points": 90, "agreement": 0.8}, "b3/").split(" (")[0]
    '<a href="b3/atlas.html">activation atlas</a>'
    """
    return (
        f'<a href="{folder}atlas.html">activation atlas</a> ({atlas["cells"]} cells from '
        f"{atlas['points']} activation vectors; {atlas['agreement']:.0%} of the pictures "
        "nearest their own cell's direction)"
    )


def index_page(manifest: Mapping[str, Any]) -> str:
    """``index.html``: the job's settings and a card per layer linking to its page."""
    config = manifest.get("config", {})
    n_images = len(manifest["images"])
    status = "" if manifest["complete"] else ' <span class="running">(rendering...)</span>'
    size = config.get("size", "?")
    size = f"{size[0]}x{size[1]}" if isinstance(size, list) else f"{size}x{size}"
    param = config.get("param", {})
    settings = [
        ("model", manifest["model"]),
        ("objective", config.get("objective", "?")),
        ("size", size),
        ("steps", config.get("steps", "?")),
        ("seeds", config.get("seeds", "?")),
        ("param", param.get("kind", "?")),
        ("config", manifest["config_sha256"][:12]),
        ("backend", manifest["backend"]["platform"]),
        ("created", manifest["created"]),
    ]
    meta = "".join(
        f"<span>{html.escape(k)} <b>{html.escape(str(v))}</b></span>" for k, v in settings
    )
    header = (
        f"<h1>fvjax gallery: {html.escape(manifest['model'])}{status}</h1>\n"
        f"<p>{len(manifest['layers'])} layer(s), {n_images} picture(s). "
        f'Details in <a href="{MANIFEST}">{MANIFEST}</a>.</p>\n<div class="meta">{meta}</div>'
        f"{procedure_html(manifest.get('procedure'), runs=True)}"
    )
    checked = manifest.get("checks", {}).get("layers", {})
    atlases = [
        f"{html.escape(layer)}: {_atlas_link(c['atlas'], f'{_slug_of(manifest, layer)}/')}"
        for layer, c in checked.items()
        if "atlas" in c
    ]
    if atlases:
        header += f"\n<p>Activation atlases: {'; '.join(atlases)}</p>"
    cards = []
    for layer in manifest["layers"]:
        shape = "x".join(str(d) for d in layer["shape"]) if layer["shape"] else "?"
        # Enlarged grids stay crisp; shrunk ones are smoothed.
        small = ' class="small"' if max(layer.get("grid_size", [0])) < 260 else ""
        cards.append(
            f'<a class="card" href="{_href(layer["page"])}">'
            f'<div class="thumb"><img src="{_href(layer["grid"])}"{small} '
            f'alt="grid of {html.escape(layer["layer"])}"></div>'
            f'<div class="text"><h2>{html.escape(layer["layer"])}</h2>'
            f"<p>{len(layer['units'])} unit(s) x {len(layer['seeds'])} seed(s), "
            f"activations {html.escape(shape)}</p>"
            f"<p>activation mean {_number(layer['activation_mean'])}, "
            f"max {_number(layer['activation_max'])}, {layer['seconds']:.1f} s</p>"
            f"{_checked_line(manifest, layer['layer'])}</div></a>"
        )
    body = '<div class="cards">\n' + "\n".join(cards) + "\n</div>" if cards else "<p>None yet.</p>"
    return page(f"fvjax: {manifest['model']}", header, body)


def _degenerate_attributes(image: Mapping[str, Any]) -> str:
    """A picture marked degenerate in the manifest (:mod:`fvjax.checks.degenerate`) is struck
    through on its tile, with the reason as its tooltip."""
    reason = image.get("degenerate")
    return f' class="degenerate" title="degenerate: {html.escape(reason)}"' if reason else ""


def _caption_figure(image: Mapping[str, Any]) -> str:
    """What a tile's caption says of a picture: its objective's value, or for a picture held
    to a natural image (inversion, caricature) how near its map came: error and cosine."""
    if "error" in image:
        return f"err {image['error']:.3f}, cos {image['cosine']:.3f}"
    return _number(image["activation"])


def _captions_line(images: Sequence[Mapping[str, Any]]) -> str:
    if images and "error" in images[0]:
        return (
            "<p>Each caption is the picture's map against its image's: relative error, cosine.</p>"
        )
    return "<p>Each caption is the objective's value on the final picture (higher is stronger).</p>"


def _degenerate_line(images: Sequence[Mapping[str, Any]]) -> str:
    bad = sum("degenerate" in image for image in images)
    if not bad:
        return ""
    return (
        f'<p class="running">{bad} of {len(images)} picture(s) are degenerate (saturated, flat '
        "or left where they started: struck through below); they show nothing of their unit.</p>"
    )


def layer_page(
    layer: Mapping[str, Any],
    images: Sequence[Mapping[str, Any]],
    model: str,
    checks: Mapping[str, Any] | None = None,
    view: str = INDEX,
    procedure: Mapping[str, Any] | None = None,
) -> str:
    """``<slug>/index.html``: a tile per unit with each seed's picture and final activation.

    With the layer's ``checks`` (the manifest's ``checks.layers[layer]``), each tile links to
    the unit's card and shows its concept, reach and flags, and the page has one file per
    :data:`VIEWS` entry (``view``), sorting or filtering the units by those figures. The run's
    ``procedure`` (the manifest's) heads the page, and gives each unit its verdict, if any.
    """
    by_unit: dict[int, list[Mapping[str, Any]]] = {}
    for image in images:
        by_unit.setdefault(image["unit"], []).append(image)
    n_seeds = len(layer["seeds"])
    height, width = layer["image_size"]
    # Tiles at least 100 px a picture (small pictures are enlarged, pixelated), at most 256;
    # an inversion's or caricature's row begins with its natural image.
    shown = min(max(width, 100), 256)
    columns = n_seeds + any("natural" in image for image in images)
    tile = columns * shown + (columns - 1) * 6 + 18
    prefix = layer["slug"] + "/"
    summaries = dict(checks["units"]) if checks else {}
    _, view_title, key, only = next(v for v in VIEWS if v[0] == view)
    order = list(by_unit)
    if key is not None:
        order.sort(key=lambda u: -_fact(summaries.get(str(u), {}), key))
    if only is not None:
        order = [u for u in order if summaries.get(str(u), {}).get(only)]
    tiles = []
    for unit in order:
        members = by_unit[unit]
        best = max(m["activation"] for m in members)
        figures = "".join(
            f'<figure{_degenerate_attributes(m)}><img src="{_href(m["file"].removeprefix(prefix))}"'
            f' width="{width}" height="{height}" loading="lazy" alt="unit {unit} seed {m["seed"]}">'
            f"<figcaption>seed {m['seed']} &middot; {_caption_figure(m)}"
            f"{'<b> degenerate</b>' if 'degenerate' in m else ''}</figcaption></figure>"
            for m in members
        )
        if "natural" in members[0]:
            figures = (
                f'<figure><img src="{_href("../" + members[0]["natural"])}" width="{width}" '
                f'height="{height}" loading="lazy" alt="the image"><figcaption>image'
                f"</figcaption></figure>{figures}"
            )
        named = members[0].get("unit_name")
        title = f"unit {unit}" + (f" &middot; {html.escape(named)}" if named else "")
        inner = (
            f'<h3>{title}<span>max {_number(best)}</span></h3><div class="seeds">{figures}</div>'
        )
        summary = summaries.get(str(unit))
        guided = (summary or {}).get("facets", {}).get("guided_facet")
        if key == "facets" and guided:  # beside the seeds, a picture guided to each facet
            facets = "".join(
                f'<figure><img src="units/unit{unit:04d}_facet{j}.png" width="{width}" '
                f'height="{height}" loading="lazy" alt="unit {unit} facet {j + 1}">'
                f"<figcaption>facet {j + 1}</figcaption></figure>"
                for j in range(len(guided))
            )
            inner += f'<div class="seeds">{facets}</div>'
        if summary is not None:
            inner = (
                f'<a class="card-link" href="units/unit{unit:04d}.html" '
                f'title="the card of unit {unit}">{inner}{_facts_html(summary)}</a>'
            )
        verdicts = (procedure or {}).get("verdicts", {}).get(layer["layer"], {})
        inner += verdict_html(verdicts.get(str(unit)))
        tiles.append(f'<div class="tile" id="unit{unit}">{inner}</div>')
    shape = "x".join(str(d) for d in layer["shape"]) if layer["shape"] else "?"
    views = ""
    if checks:
        views = (
            '<p class="views">'
            + "".join(
                f"<b>{html.escape(title)}</b>"
                if name == view
                else f'<a href="{name}">{html.escape(title)}</a>'
                for name, title, _, _ in VIEWS
            )
            + "</p>\n<p>Click a unit for its card: natural examples, concepts, scale, path.</p>"
        )
        if "concepts_svg" in checks:  # the layer's detectors, by category
            views += (
                '\n<p><img src="concepts.svg" alt="units detecting a concept, by category"></p>'
            )
        if "atlas" in checks:
            views += f"\n<p>{_atlas_link(checks['atlas'], '')}</p>"
    header = (
        f'<p><a href="../{INDEX}">&larr; all layers</a></p>\n'
        f"<h1>{html.escape(layer['layer'])}</h1>\n"
        f"<p>{html.escape(model)} &middot; <code>{html.escape(layer['label'])}</code> &middot; "
        f"activations {html.escape(shape)} &middot; {len(by_unit)} unit(s) x {n_seeds} seed(s) "
        f"&middot; {width}x{height} px &middot; "
        f'<a href="{GRID}">grid.png</a></p>\n'
        f"{_captions_line(images)}{_degenerate_line(images)}{procedure_html(procedure, '../')}"
        f"{views}"
    )
    if not tiles:
        body = f"<p>No unit in this view ({html.escape(view_title)}).</p>"
    else:
        body = f'<div class="tiles" style="--tile: {tile}px">\n' + "\n".join(tiles) + "\n</div>"
    return page(f"{layer['layer']} - fvjax", header, body)


def write_pages(out: Path, manifest: Mapping[str, Any]) -> None:
    """Write the gallery of ``manifest`` into ``out`` again: the index and every layer's
    pages (each of :data:`VIEWS` where the layer was checked), atomically."""
    checked = manifest.get("checks", {}).get("layers", {})
    for entry in manifest["layers"]:
        images = [image for image in manifest["images"] if image["layer"] == entry["layer"]]
        checks = checked.get(entry["layer"])
        for view, *_ in VIEWS if checks else VIEWS[:1]:
            text = layer_page(
                entry, images, manifest["model"], checks, view, manifest.get("procedure")
            )
            atomic_write(out / entry["slug"] / view, text)
    atomic_write(out / INDEX, index_page(manifest))
