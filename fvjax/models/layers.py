"""Layers for the zoo's networks (and yours) whose backward pass is the same on every run.

Autodiff turns a max pool (``flax.linen.max_pool``, ``lax.reduce_window``) into a
``select-and-scatter``, which XLA's GPU backend runs with atomic additions in no fixed order
(XLA's own notes on determinism list it, with scatter, as non-deterministic, and without a
deterministic implementation), so two renders of one picture drift apart.
:func:`max_pool` gives the same values as Flax's, bit for bit, from the maximum of the
window's strided slices: its backward pass is selects and pads.
:func:`fvjax.rendering.determinism.census` counts what a program still holds.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

Array = jax.Array


def max_pool(
    x: Array,
    window: tuple[int, int],
    strides: tuple[int, int] | None = None,
    padding: str | Sequence[tuple[int, int]] = "VALID",
) -> Array:
    """``flax.linen.max_pool`` of ``x (..., H, W, C)`` (``padding`` ``"SAME"``, ``"VALID"`` or
    ``((top, bottom), (left, right))``; pads read ``-inf``), without ``select-and-scatter`` in
    its gradient. Ties share the gradient (Flax's gives it to one of them).

    >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    >>> max_pool(x, (2, 2), (2, 2))[0, ..., 0].tolist()
    [[5.0, 7.0], [13.0, 15.0]]
    """
    strides = tuple(strides) if strides is not None else (1, 1)
    spatial = x.shape[-3:-1]
    tiles = tuple(window) == strides and all(
        s % w == 0 for s, w in zip(spatial, window, strict=True)
    )
    if tiles and (padding == "VALID" or padding == "SAME" or not any(map(any, padding))):
        # Windows that tile the picture: one reduction, whose gradient is one select (on our
        # CPU 3x faster than the slices' backward below).
        shape = (*x.shape[:-3], spatial[0] // window[0], window[0], spatial[1] // window[1],
                 window[1], x.shape[-1])  # fmt: skip
        return x.reshape(shape).max(axis=(-4, -2))
    if isinstance(padding, str):
        pads = jax.lax.padtype_to_pads(spatial, window, strides, padding)
    else:
        pads = [tuple(p) for p in padding]
    lead = [(0, 0)] * (x.ndim - 3)
    grown = jnp.pad(x, [*lead, *pads, (0, 0)], constant_values=-jnp.inf)
    out = [(grown.shape[-3 + a] - window[a]) // strides[a] + 1 for a in range(2)]
    if min(out) < 1:  # too small for one window: empty, as Flax's (the model check names it)
        return jnp.zeros((*x.shape[:-3], *(max(0, n) for n in out), x.shape[-1]), x.dtype)
    pooled = None
    for dy in range(window[0]):
        for dx in range(window[1]):
            start = [0] * (x.ndim - 3) + [dy, dx, 0]
            limit = [*grown.shape[:-3], dy + (out[0] - 1) * strides[0] + 1,
                     dx + (out[1] - 1) * strides[1] + 1, grown.shape[-1]]  # fmt: skip
            step = [1] * (x.ndim - 3) + [strides[0], strides[1], 1]
            part = jax.lax.slice(grown, start, limit, step)
            pooled = part if pooled is None else jnp.maximum(pooled, part)
    return pooled
