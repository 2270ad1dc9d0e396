"""Helpers for ``benchmarks/`` scripts: who measured what, where, and appending to RESULTS.md."""

from __future__ import annotations

import argparse
import datetime
import os
import platform
from pathlib import Path

import jax

from fvjax.outputs import versions

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "RESULTS.md"


def machine_header() -> str:
    """One line naming the date, machine, devices and versions of a measurement."""
    devices = jax.devices()
    kinds = sorted({d.device_kind for d in devices})
    found = ", ".join(f"{k}={v}" for k, v in versions().items())
    return (
        f"{datetime.date.today().isoformat()} · {platform.machine()} {platform.processor() or ''}"
        f" {os.cpu_count()} cores · backend {jax.default_backend()} · "
        f"{len(devices)} device(s): {', '.join(kinds)} · {found}"
    )


def append_results(title: str, body: str, path: Path = RESULTS) -> None:
    """Append a section ``## title`` with ``body`` to ``benchmarks/RESULTS.md``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(
            "# Benchmark results\n\nAppended by the scripts in `benchmarks/`; each section "
            "names its machine, versions and date. Compare ratios within a section: the "
            "machines are noisy (+-20-30% run to run).\n"
        )
    with path.open("a") as f:
        f.write(f"\n## {title}\n\n{body}\n")


def parser(doc: str, steps: int = 16, batch: int | None = 64) -> argparse.ArgumentParser:
    """The arguments every benchmark takes: model, layer, size, steps (and batch).

    >>> parser("A benchmark.").parse_args([]).layer
    'block3/conv'
    """
    found = argparse.ArgumentParser(description=doc.splitlines()[0])
    found.add_argument("--model", default="worldnet")
    found.add_argument("--layer", default="block3/conv")
    found.add_argument("--size", type=int, default=64)
    found.add_argument("--steps", type=int, default=steps)
    if batch is not None:
        found.add_argument("--batch", type=int, default=batch)
    return found
