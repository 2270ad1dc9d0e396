"""A unit's card: its pictures beside the evidence, as one HTML page (or notebook cell).

The card shows the seeds' pictures large; the top-k natural crops with their activations (and
the bottom-k on a signed layer); the dissection concepts with IoU; a histogram of the unit's
natural scores with the pictures' activations marked (the scale a bare number lacks); the
optimization curve; the path plot; the price of the priors; and the procedure's hash. Charts are
inline SVG, drawn here (no plotting library); images are PNGs, either files beside the page or
``data:`` URIs (a notebook). The card reads a :class:`~fvjax.checks.evidence.UnitEvidence`.

>>> svg_histogram(np.linspace(0, 1, 5), np.array([0, 3, 1, 0, 2, 0]), [(0.9, "seed 0")])[:4]
'<svg'
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from fvjax.data.images import png_bytes

#: ``src(name, image) -> str``: where a card finds an image (a file it wrote, or a data URI).
ImageSource = Callable[[str, np.ndarray], str]

CSS = """
.fv-card{font:14px/1.45 system-ui,sans-serif;color:#222;max-width:1100px}
.fv-card h2{font-size:20px;margin:.2em 0}.fv-card h3{font-size:15px;margin:1em 0 .3em}
.fv-card figure{display:inline-block;margin:0 8px 8px 0;text-align:center;vertical-align:top}
.fv-card figcaption{font-size:12px;color:#555;max-width:224px;white-space:normal}
.fv-card img{image-rendering:pixelated;border:1px solid #ccc;background:#eee;height:auto;
display:inline-block;margin-right:2px}
.fv-card img.picture{width:224px}.fv-card img.crop{width:96px}
.fv-card img.picture{background:repeating-conic-gradient(#d9d9d9 0 25%,#f7f7f7 0 50%) 0 0/12px 12px}
.fv-card figure{flex:none;min-width:0}
.fv-card .flag{background:#c62828;color:#fff;border-radius:3px;padding:1px 6px;margin-left:6px;
font-size:12px}.fv-card .ok{background:#2e7d32}
.fv-card table{border-collapse:collapse}.fv-card td,.fv-card th{padding:2px 8px;
border-bottom:1px solid #ddd;text-align:left}.fv-card .muted{color:#777}
.fv-card svg{background:#fafafa;border:1px solid #ddd;margin-right:10px}
.fv-card h4{font-size:13px;margin:.6em 0 .2em}.fv-card .row{white-space:nowrap;overflow-x:auto}
"""

_PALETTE = ("#1565c0", "#c62828", "#2e7d32", "#ef6c00", "#6a1b9a", "#00838f")


def png_data_uri(image: np.ndarray) -> str:
    """A float RGB image in [0, 1] as a ``data:image/png`` URI.

    >>> png_data_uri(np.zeros((2, 2, 3)))[:22]
    'data:image/png;base64,'
    """
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode("ascii")


def inline_source(name: str, image: np.ndarray) -> str:
    """An :data:`ImageSource` that embeds every image (for a notebook)."""
    return png_data_uri(image)


def _x_scale(low: float, high: float, left: float, right: float) -> Callable[[float], float]:
    span = high - low if high > low else 1.0
    return lambda v: left + (right - left) * (v - low) / span


def svg_histogram(
    edges: np.ndarray,
    counts: np.ndarray,
    marks: Sequence[tuple[float, str]] = (),
    width: int = 420,
    height: int = 150,
    title: str = "natural images' scores",
) -> str:
    """Bars of ``counts`` (under/overflow at both ends) over ``edges``, with vertical marks
    (e.g. the pictures' activations) wherever they fall, the axis stretched to show them."""
    edges = np.asarray(edges, np.float64)
    inner = np.asarray(counts, np.float64)[1:-1]
    values = [v for v, _ in marks if np.isfinite(v)]
    low, high = min([edges[0], *values]), max([edges[-1], *values])
    x = _x_scale(low, high, 30, width - 10)
    peak = max(inner.max() if inner.size else 1.0, 1.0)
    base = height - 22
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img"><title>{html.escape(title)}</title>',
        f'<text x="30" y="12" font-size="11" fill="#555">{html.escape(title)}</text>',
    ]
    for left, right, count in zip(edges[:-1], edges[1:], inner, strict=True):
        if count <= 0:
            continue
        top = base - (base - 18) * np.sqrt(count / peak)  # sqrt: the tail stays visible
        parts.append(
            f'<rect x="{x(left):.1f}" y="{top:.1f}" width="{max(x(right) - x(left), 0.8):.1f}" '
            f'height="{base - top:.1f}" fill="#90a4ae"/>'
        )
    parts.append(f'<line x1="30" y1="{base}" x2="{width - 10}" y2="{base}" stroke="#999"/>')
    for value, anchor in ((low, "start"), (0.0, "middle"), (high, "end")):
        if low <= value <= high:
            parts.append(
                f'<text x="{x(value):.1f}" y="{height - 6}" font-size="10" fill="#555" '
                f'text-anchor="{anchor}">{value:.3g}</text>'
            )
    for i, (value, label) in enumerate(marks):
        if not np.isfinite(value):
            continue
        colour = _PALETTE[i % len(_PALETTE)]
        parts.append(
            f'<line x1="{x(value):.1f}" y1="16" x2="{x(value):.1f}" y2="{base}" '
            f'stroke="{colour}" stroke-width="2"><title>{html.escape(label)}: {value:.4g}'
            "</title></line>"
        )
    parts.append("</svg>")
    return "".join(parts)


def svg_lines(
    series: Sequence[tuple[str, Sequence[float]]],
    width: int = 420,
    height: int = 150,
    title: str = "",
    x_labels: Sequence[str] | None = None,
    legend: int = 0,
) -> str:
    """A line per ``(name, values)`` on shared axes (the optimization curve, the path plot);
    ``legend`` pixels on the right hold the names (0: written over the plot's top right).

    >>> svg_lines([("seed 0", [0.0, 1.0, 2.0])], title="curve").count("<polyline")
    1
    """
    finite = [float(v) for _, values in series for v in values if np.isfinite(v)]
    low, high = (min(finite), max(finite)) if finite else (0.0, 1.0)
    if high <= low:
        high = low + 1.0
    n = max((len(values) for _, values in series), default=1)
    x = _x_scale(0, max(n - 1, 1), 40, width - 10 - legend)
    base = height - 30

    def y(v: float) -> float:
        return base - (base - 18) * (v - low) / (high - low)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img"><title>{html.escape(title)}</title>',
        f'<text x="40" y="12" font-size="11" fill="#555">{html.escape(title)}</text>',
        f'<text x="36" y="{y(high) + 4:.1f}" font-size="10" fill="#555" '
        f'text-anchor="end">{high:.3g}</text>',
        f'<text x="36" y="{base:.1f}" font-size="10" fill="#555" text-anchor="end">{low:.3g}'
        "</text>",
    ]
    for i, (name, values) in enumerate(series):
        points = " ".join(
            f"{x(j):.1f},{y(float(v)):.1f}" for j, v in enumerate(values) if np.isfinite(v)
        )
        colour = _PALETTE[i % len(_PALETTE)]
        parts.append(
            f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.8">'
            f"<title>{html.escape(name)}</title></polyline>"
        )
        if legend:
            spot = f'x="{width - legend + 4}" y="{24 + 14 * i}" text-anchor="start"'
        else:
            spot = f'x="{width - 12}" y="{24 + 12 * i}" text-anchor="end"'
        parts.append(f'<text {spot} font-size="10" fill="{colour}">{html.escape(name)}</text>')
    for j, label in enumerate(x_labels or ()):
        parts.append(  # staggered, so long layer names do not overlap
            f'<text x="{x(j):.1f}" y="{height - 14 + 9 * (j % 2)}" font-size="9" fill="#555" '
            f'text-anchor="middle">{html.escape(label)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def svg_bars(counts: dict[str, float], width: int = 420, title: str = "") -> str:
    """Horizontal bars, one per ``{name: value}`` (the layer's detectors per category).

    >>> svg_bars({"colour": 3, "shape": 1}).count("<rect")
    2
    """
    height = 24 + 18 * len(counts)
    peak = max([*counts.values(), 1])
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img"><title>{html.escape(title)}</title>',
        f'<text x="4" y="13" font-size="11" fill="#555">{html.escape(title)}</text>',
    ]
    for i, (name, value) in enumerate(counts.items()):
        top = 20 + 18 * i
        length = (width - 150) * value / peak
        parts.append(
            f'<text x="96" y="{top + 12}" font-size="11" text-anchor="end">'
            f"{html.escape(name)}</text>"
            f'<rect x="100" y="{top}" width="{length:.1f}" height="14" fill="#1565c0"/>'
            f'<text x="{104 + length:.1f}" y="{top + 12}" font-size="11">{value:g}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _figure(src: str, caption: str, alt: str) -> str:
    return (
        f'<figure><img class="picture" src="{html.escape(src, quote=True)}" '
        f'alt="{html.escape(alt, quote=True)}"><figcaption>{caption}</figcaption></figure>'
    )


def _reach_text(reach: float) -> str:
    return "reach n/a" if not np.isfinite(reach) else f"reach {reach:.3g}"


def _example_figure(src: ImageSource, name: str, example: Any) -> str:
    a = src(f"{name}.png", example.crop)
    b = src(f"{name}_map.png", example.overlay)
    caption = f"{example.value:.4g} &middot; {html.escape(example.source)}"
    return (
        f'<figure><img class="crop" src="{html.escape(a, quote=True)}" alt="crop">'
        f'<img class="crop" src="{html.escape(b, quote=True)}" alt="map">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def _facets_html(e: Any, src: ImageSource, tag: str) -> str:
    """A unit's facets side by side with their natural examples (and each facet's picture:
    started from its mean image, steered along what sets it apart)."""
    f = e.facets
    n = len(f.sizes)
    cover = f"the seeds ({', '.join(map(str, e.seeds))}) match facets "
    cover += f"{', '.join(str(int(m) + 1) for m in f.seed_facet)}: they cover {f.covered} of {n}"
    if f.pictures is not None:
        cover += f"; the facet pictures cover {f.pictures_covered} of {n}"
    silhouette = "" if not np.isfinite(f.silhouette) else f" (silhouette {f.silhouette:.2f})"
    rows = []
    top_rank = {ex.index: rank for rank, ex in enumerate(e.top)}
    for j in range(n):
        figures = []
        if f.pictures is not None:
            where = src(f"{tag}_facet{j}.png", f.pictures[j])
            caption = f"facet {j + 1}'s picture &middot; {f.activations[j]:.4g}"
            figures.append(_figure(where, caption, f"facet {j + 1}"))
        for index in f.members[j]:
            if int(index) in top_rank:
                rank = top_rank[int(index)]
                figures.append(_example_figure(src, f"{tag}_top{rank:02d}", e.top[rank]))
        rows.append(
            f"<h4>facet {j + 1}: {f.sizes[j]} of the top images</h4>"
            f'<div class="row">{"".join(figures)}</div>'
        )
    return (
        f"<h3>Facets: {n} among the top natural images{silhouette}</h3>"
        f'<p class="muted">{cover}.</p>' + "".join(rows)
    )


def unit_card_html(
    evidence: Any,
    src: ImageSource = inline_source,
    pictures: np.ndarray | None = None,
    history: np.ndarray | None = None,
    procedure: str = "",
    standalone: bool = False,
) -> str:
    """The card of one unit's evidence as HTML.

    Args:
        evidence: a :class:`~fvjax.checks.evidence.UnitEvidence`.
        src: where images go (:func:`inline_source` embeds them).
        pictures: ``(S, H, W, 3)`` the seeds' pictures, or their ``src`` strings.
        history: ``(steps, S)`` the objective along the optimization.
        procedure: the procedure's hash (the config's SHA-256).
        standalone: a whole page rather than a fragment.
    """
    e = evidence
    name = f" &middot; {html.escape(e.unit_name)}" if e.unit_name else ""
    flags = "".join(f'<span class="flag">{html.escape(f)}</span>' for f in e.flags) or (
        '<span class="flag ok">no flags</span>'
    )
    out = [f'<div class="fv-card"><h2>{html.escape(e.layer)} unit {e.unit}{name}{flags}</h2>']
    if procedure:
        out.append(f'<p class="muted">procedure {html.escape(procedure[:16])}</p>')
    tag = f"unit{e.unit:04d}"
    if pictures is not None:
        figures = []
        for i, seed in enumerate(e.seeds):
            image = pictures[i]
            where = image if isinstance(image, str) else src(f"{tag}_seed{seed}.png", image)
            caption = (
                f"seed {seed} &middot; {e.activations[i]:.4g}<br>{_reach_text(e.reach[i])}"
                f" &middot; natural rank {100 * e.rank[i]:.2g}%"
            )
            figures.append(_figure(where, caption, f"seed {seed}"))
        out.append("<h3>Pictures</h3>" + "".join(figures))
    marks = [(float(a), f"seed {s}") for a, s in zip(e.activations, e.seeds, strict=True)]
    charts = [svg_histogram(e.natural_edges, e.natural_counts, marks)]
    if history is not None and len(history):
        history = np.asarray(history, np.float64).reshape(len(history), -1)
        charts.append(
            svg_lines(
                [(f"seed {s}", history[:, i]) for i, s in enumerate(e.seeds)],
                title="objective along the optimization",
                width=480,
                legend=60,
            )
        )
    out.append("<h3>Scale</h3>" + "".join(charts))
    out.append(
        f'<p class="muted">natural max {e.natural_max:.4g}, mean {e.natural_mean:.4g}; '
        "the marks are the pictures' activations. Reach: 0 at the natural mean, 1 at the "
        "top natural image.</p>"
    )
    if e.plain is not None:
        chosen, plain = float(np.mean(e.activations)), float(np.mean(e.plain))
        top = e.top[0].value if e.top else float("nan")
        out.append(
            "<h3>Price of the priors</h3>"
            + svg_bars(
                {
                    "chosen": round(chosen, 4),
                    "plain": round(plain, 4),
                    "top natural": round(top, 4),
                },
                title="mean activation: this procedure, a plain one, the best natural image",
            )
        )
    if e.label is not None:
        rows = "".join(
            f"<tr><td>{html.escape(m.concept)}</td><td>{html.escape(m.category)}</td>"
            f"<td>{m.iou:.4f}</td></tr>"
            for m in (e.label.best, *e.label.runners_up)
        )
        verdict = "detector" if e.label.detector else "not a detector"
        out.append(
            f"<h3>Concepts (Network Dissection): {html.escape(e.label.best.concept)}, "
            f"{verdict}</h3><table><tr><th>concept</th><th>category</th><th>IoU</th></tr>"
            f"{rows}</table>"
        )
    if e.path is not None:
        out.append("<h3>Processing path</h3>" + e.path.svg())
    if e.facets is not None:
        out.append(_facets_html(e, src, tag))
    for title, examples in (("Top natural images", e.top), ("Bottom natural images", e.bottom)):
        if not examples:
            continue
        kind = "top" if examples is e.top else "bottom"
        figures = [
            _example_figure(src, f"{tag}_{kind}{rank:02d}", ex) for rank, ex in enumerate(examples)
        ]
        out.append(f"<h3>{title}</h3>" + "".join(figures))
    out.append("</div>")
    body = "\n".join(out)
    if not standalone:
        return f"<style>{CSS}</style>{body}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(e.layer)} unit {e.unit}</title><style>{CSS}</style></head>"
        f"<body>{body}</body></html>\n"
    )
