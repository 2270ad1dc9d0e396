"""The same pictures on every run, on GPUs too.

XLA's CPU programs give the same bits on every run. On a GPU, XLA's own notes on determinism
name what does not: scatters and select-and-scatters (atomic additions, in no fixed order),
and the convolution and matrix-product algorithms its autotuner may pick. Two measures:

- **No scatter in fvjax's programs.** Autodiff makes a scatter-add of every gather's
  gradient and a select-and-scatter of every max pool's. The transforms' resampling
  (:func:`fvjax.rendering.transforms.resample`) transposes its gather by hand as a gather,
  the objectives pick units with selects, and the zoo pools with
  :func:`fvjax.models.layers.max_pool`. :func:`census` counts what a program still holds
  (tested: none in the default step of worldnet, InceptionV1, ResNet-50, VGG-16 and ViT).
- **XLA's flag** ``--xla_gpu_deterministic_ops=true``: deterministic algorithms for the rest.
  XLA reads ``XLA_FLAGS`` once, when JAX starts its first backend, so it is set then or
  never: ``import fvjax`` sets it (:func:`request`) when no backend has started yet and
  ``XLA_FLAGS`` does not already say; the job's ``deterministic`` key sets it either way
  before the job touches a backend.

:func:`status` is what the manifest records: the flag as XLA read it, the backend, and
whether the run's pictures are bit-reproducible there.

>>> FLAG
'--xla_gpu_deterministic_ops'
"""

from __future__ import annotations

import collections
import os
import re
from typing import Any

import jax
from jax._src import xla_bridge

from fvjax.errors import ArgumentError

#: XLA's switch for deterministic GPU programs (read from ``XLA_FLAGS``; CPUs ignore it).
FLAG = "--xla_gpu_deterministic_ops"

#: Operations whose additions GPUs order differently from run to run (XLA's notes).
NON_DETERMINISTIC = ("scatter", "select_and_scatter")

_FLAG_PATTERN = re.compile(re.escape(FLAG) + r"(?:=(\S*))?$")


def _flags() -> list[str]:
    return os.environ.get("XLA_FLAGS", "").split()


def flag_value() -> bool | None:
    """What ``XLA_FLAGS`` says of :data:`FLAG` (the last mention wins, as in XLA): ``True``,
    ``False``, or ``None`` when it does not mention it.

    >>> import os; os.environ["XLA_FLAGS"] = "--xla_gpu_deterministic_ops=false"
    >>> flag_value()
    False
    >>> del os.environ["XLA_FLAGS"]
    """
    value = None
    for flag in _flags():
        found = _FLAG_PATTERN.match(flag)
        if found:
            value = (found.group(1) or "true").lower() in ("true", "1")
    return value


def backend_started() -> bool:
    """Whether JAX has started a backend in this process (after which XLA_FLAGS is read).
    JAX's own answer is private (``jax._src.xla_bridge``); this is the one place that asks."""
    started = getattr(xla_bridge, "backends_are_initialized", None)
    if started is not None:
        return bool(started())
    return bool(getattr(xla_bridge, "_backends", None))  # older or newer JAX: its cache


def request(deterministic: bool = True) -> None:
    """Make this process's GPU programs deterministic (or free to be fast): write
    ``--xla_gpu_deterministic_ops=true`` into ``XLA_FLAGS`` (or take it out), which only
    works before JAX starts a backend. After that nothing can change it: on a CPU nothing
    needs to; on another backend a request for determinism that the running backend does not
    meet raises :class:`~fvjax.errors.ArgumentError` saying how to start it (a request for
    speed is let pass: the pictures are then still the same every run, only slower).
    """
    if not backend_started():
        kept = [flag for flag in _flags() if not _FLAG_PATTERN.match(flag)]
        if deterministic:
            kept.append(f"{FLAG}=true")
        os.environ["XLA_FLAGS"] = " ".join(kept)
        return
    if not deterministic or flag_value() or jax.default_backend() == "cpu":
        return
    raise ArgumentError(
        f"deterministic pictures need XLA_FLAGS to hold {FLAG}=true when JAX starts its "
        f"{jax.default_backend()} backend, and this process started it without (XLA_FLAGS="
        f"{os.environ.get('XLA_FLAGS', '')!r}): import fvjax before any JAX work, or set "
        "XLA_FLAGS, or set deterministic = false"
    )


def default_request() -> None:
    """What ``import fvjax`` does: :func:`request` determinism unless a backend has started
    or ``XLA_FLAGS`` already says what it wants."""
    if not backend_started() and flag_value() is None:
        request(True)


def status() -> dict[str, Any]:
    """What the manifest records of a run's determinism: ``deterministic_ops`` (the flag as
    XLA read it), ``backend``, and ``bit_reproducible``: ``True`` on a CPU, and on a GPU with
    the flag; ``False`` on a GPU without it; ``None`` where it was not measured (TPUs).

    >>> status()["backend"], status()["bit_reproducible"]
    ('cpu', True)
    """
    backend = jax.default_backend()
    flag = bool(flag_value())
    reproducible = {"cpu": True, "gpu": flag, "cuda": flag, "rocm": flag}.get(backend)
    return {"deterministic_ops": flag, "backend": backend, "bit_reproducible": reproducible}


def census(program: Any) -> dict[str, int]:
    """How many of each :data:`NON_DETERMINISTIC` operation a program holds: ``program`` is a
    ``jax.stages.Lowered`` (``jax.jit(f).lower(...)``) or its StableHLO text.

    >>> census(jax.jit(lambda x, i: x.at[i].add(1.0)).lower(jax.numpy.zeros(3), 1))
    {'scatter': 1, 'select_and_scatter': 0}
    """
    text = program if isinstance(program, str) else program.as_text()
    # Ops, not the ``#stablehlo.scatter<...>`` attribute that describes a scatter's dimensions.
    ops = re.findall(r"(?<!#)stablehlo\.(scatter|select_and_scatter)\b(?!<)", text)
    found = collections.Counter(ops)
    return {op: found[op] for op in NON_DETERMINISTIC}
