"""Layers for the zoo's networks (and yours) whose backward pass is the same on every run.

Autodiff turns a max pool (``flax.linen.max_pool``, ``lax.reduce_window``) into a
``select-and-scatter``, which XLA's GPU backend runs with atomic additions in no fixed order
(XLA's own notes on determinism list it, with scatter, as non-deterministic, and without a
deterministic implementation), so two renders of one picture drift apart.
:func:`max_pool` computes Flax's values (the same ``reduce_window``) and writes its backward
pass by hand as selects and pads. :func:`fvjax.rendering.determinism.census` counts what a
program still holds.
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
    ``((top, bottom), (left, right))``; pads read ``-inf``), the same values bit for bit,
    without ``select-and-scatter`` in its gradient. A window's gradient goes to its first
    maximum, as XLA's select-and-scatter gives it.

    >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    >>> max_pool(x, (2, 2), (2, 2))[0, ..., 0].tolist()
    [[5.0, 7.0], [13.0, 15.0]]
    """
    strides = tuple(strides) if strides is not None else (1, 1)
    if isinstance(padding, str):
        pads = tuple(jax.lax.padtype_to_pads(x.shape[-3:-1], window, strides, padding))
    else:
        pads = tuple(tuple(p) for p in padding)
    return _pool(x, tuple(window), strides, pads)


def _reduce(x: Array, window: tuple, strides: tuple, pads: tuple) -> Array:
    lead = (1,) * (x.ndim - 3)
    return jax.lax.reduce_window(
        x, -jnp.inf, jax.lax.max, (*lead, *window, 1), (*lead, *strides, 1),
        ((0, 0),) * (x.ndim - 3) + pads + ((0, 0),),
    )  # fmt: skip


_pool = jax.custom_vjp(_reduce, nondiff_argnums=(1, 2, 3))


def _pool_fwd(x: Array, window: tuple, strides: tuple, pads: tuple):
    out = _reduce(x, window, strides, pads)
    return out, (x, out)


def _pool_bwd(window: tuple, strides: tuple, pads: tuple, residuals, grad: Array):
    """Each window offset's strided slice of the padded input, where it holds the window's
    maximum and no earlier offset did, passes the gradient back through the slice's transpose
    (a pad): one fused loop of selects and adds, the same on every run."""
    x, out = residuals
    lead = [(0, 0, 0)] * (x.ndim - 3)
    grown = jnp.pad(x, [(0, 0)] * (x.ndim - 3) + list(pads) + [(0, 0)], constant_values=-jnp.inf)
    total = jnp.zeros(grown.shape, grad.dtype)
    zero = jnp.zeros((), grad.dtype)  # in the gradient's dtype: bfloat16 models too
    taken = jnp.zeros(out.shape, bool)
    for dy in range(window[0]):
        for dx in range(window[1]):
            limit = [*grown.shape[:-3], dy + (out.shape[-3] - 1) * strides[0] + 1,
                     dx + (out.shape[-2] - 1) * strides[1] + 1, grown.shape[-1]]  # fmt: skip
            part = jax.lax.slice(
                grown, [0] * (x.ndim - 3) + [dy, dx, 0], limit,
                [1] * (x.ndim - 3) + [strides[0], strides[1], 1],
            )  # fmt: skip
            hit = (part == out) & ~taken
            taken = taken | hit
            back = [(dy, grown.shape[-3] - limit[-3], strides[0] - 1),
                    (dx, grown.shape[-2] - limit[-2], strides[1] - 1), (0, 0, 0)]  # fmt: skip
            total = total + jax.lax.pad(jnp.where(hit, grad, 0), zero, lead + back)
    inner = [slice(None)] * (x.ndim - 3) + [
        slice(pads[0][0], grown.shape[-3] - pads[0][1]),
        slice(pads[1][0], grown.shape[-2] - pads[1][1]),
    ]
    return (total[tuple(inner)],)


_pool.defvjp(_pool_fwd, _pool_bwd)
