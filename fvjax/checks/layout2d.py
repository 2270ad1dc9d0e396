"""A 2-D layout of activation vectors: exact t-SNE in JAX (van der Maaten & Hinton 2008).

What the activation atlas (:mod:`fvjax.checks.atlas`) lays its grid over. Carter et al. 2019
lay their atlases out with UMAP; here the layout is t-SNE, exact (every pair of points), as
one jitted program:

- :func:`affinities`: each point's Gaussian over the others, its width found by a bisection
  on every row at once until the row's perplexity is the one asked for, then symmetrised;
- :func:`tsne`: the Student-t embedding by gradient descent with momentum and per-coordinate
  gains, as van der Maaten's reference code does, with early exaggeration (12 for the first
  250 steps), started from the first two principal components (Kobak & Linderman 2021: a
  PCA start keeps more of the global structure than a random one, and needs no key).

Why not UMAP's reference implementation (``umap-learn`` 0.5.12): it requires scikit-learn,
numba (with llvmlite), pynndescent, scipy and tqdm, compiles its numba kernels on first use,
and its layouts are reproducible only single-threaded: a fixed ``random_state`` sets
``n_jobs`` to 1, and without one no seed gives the same layout twice (lmcinnes/umap#298).
Exact t-SNE on a few thousand points is one small jitted program here, the same on every run
of a backend. Measured on our 2-core CPU (``benchmarks/atlas.py``, 1000 steps, worldnet
``block3/conv`` vectors, shared with other jobs): 1000 points 0.7-1.7 s, 2000 points
3.6-4.4 s, 4000 points 9-13 s; the first call of a size takes 1-3 s more (its compile; 9 s
more at 4000 points). Time grows as ``N**2`` (memory too: ``P`` is ``N x N``; the rest is
computed a block of rows at a time): a few thousand points at most.

>>> noise = np.random.default_rng(0).normal(size=(40, 3))
>>> points = noise + 10.0 * (np.arange(40) >= 20)[:, None]  # two blobs
>>> y = tsne(points, perplexity=10.0)
>>> gap = np.linalg.norm(y[:20].mean(0) - y[20:].mean(0))
>>> y.shape, bool(gap > 3 * y[:20].std(0).max())
((40, 2), True)
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fvjax.errors import ArgumentError

#: Early exaggeration of the affinities, and for how many steps (van der Maaten 2014).
EXAGGERATION = 12.0
EXAGGERATION_STEPS = 250
#: Momentum during and after the early exaggeration.
MOMENTUM = (0.5, 0.8)
#: Rows of the ``N x N`` computations done at a time (:func:`_by_blocks`).
BLOCK = 1024
#: Bisection steps of each row's precision: the interval in ``log(beta)`` halves 64 times,
#: far below float32's resolution of the target entropy.
BISECTION_STEPS = 64


class Layout(NamedTuple):
    """:func:`tsne`'s answer with its record: ``points (N, 2)`` float32; ``kl``: the
    Kullback-Leibler divergence of the final embedding (what t-SNE minimises, without the
    exaggeration); ``perplexity``: the realised mean perplexity of the rows' Gaussians."""

    points: np.ndarray
    kl: float
    perplexity: float


def _blocks(n: int) -> tuple[int, int]:
    """``(rows, block)``: ``N`` points as ``rows`` blocks of ``block`` (the last padded)."""
    rows = -(-n // BLOCK)
    return rows, -(-n // rows)


def _kernel_rows(y_rows: jax.Array, first: jax.Array, y: jax.Array, valid: jax.Array):
    """``(block, N)`` Student-t kernel ``1 / (1 + |y_i - y_j|^2)`` of rows ``first ..`` against
    every point; 0 on the diagonal and at padding."""
    squared = (y_rows * y_rows).sum(-1)[:, None] + (y * y).sum(-1)[None] - 2.0 * y_rows @ y.T
    own = (first + jnp.arange(y_rows.shape[0]))[:, None] == jnp.arange(y.shape[0])[None]
    return jnp.where(own | ~valid[None], 0.0, 1.0 / (1.0 + jnp.maximum(squared, 0.0)))


def _by_blocks(fn, rows: int, *arrays):
    """``fn(first, *block_of_each)`` over the row blocks of ``arrays``, one block at a time
    (``lax.map``): a block of rows against every point fits in cache where the whole ``N x N``
    does not (4000 points, a gradient step: 44.8 ms at once, 6.8 ms in 4 blocks)."""
    block = arrays[0].shape[0] // rows
    firsts = jnp.arange(rows) * block
    split = [a.reshape(rows, block, *a.shape[1:]) for a in arrays]
    return jax.lax.map(lambda args: fn(*args), (firsts, *split))


def _conditional(x: jax.Array, valid: jax.Array, perplexity: jax.Array, rows: int):
    """``(N, N)`` conditional ``p(j | i)`` with each row's entropy ``log(perplexity)``, and the
    realised ``(N,)`` perplexities: a bisection on ``log(beta)`` of every row of a block at
    once, :data:`BISECTION_STEPS` halvings."""
    target = jnp.log(perplexity)
    squared_x = (x * x).sum(-1)

    def block(first, x_rows, sq_rows):
        distances = sq_rows[:, None] + squared_x[None] - 2.0 * x_rows @ x.T
        own = (first + jnp.arange(x_rows.shape[0]))[:, None] == jnp.arange(x.shape[0])[None]
        left_out = own | ~valid[None]
        # Relative to each row's nearest neighbour: exp() neither underflows nor changes p.
        nearest = jnp.where(left_out, jnp.inf, distances).min(1, keepdims=True)
        shifted = jnp.maximum(distances - nearest, 0.0)

        def rows_at(log_beta):
            logits = jnp.where(left_out, -jnp.inf, -jnp.exp(log_beta)[:, None] * shifted)
            p = jax.nn.softmax(logits, axis=1)
            entropy = -jnp.where(left_out, 0.0, p * jnp.log(jnp.maximum(p, 1e-30))).sum(1)
            return p, entropy

        def bisect(_, bounds):
            low, high = bounds
            middle = 0.5 * (low + high)
            too_flat = rows_at(middle)[1] > target  # too wide a Gaussian: raise beta
            return jnp.where(too_flat, middle, low), jnp.where(too_flat, high, middle)

        # beta in [e^-20, e^20] over the typical shifted distance: wide enough for any
        # perplexity between 1 and N - 1 (a degenerate row gets an endpoint).
        typical = jnp.nanmedian(jnp.where(left_out, jnp.nan, shifted), axis=1)
        scale = jnp.log(jnp.maximum(typical, 1e-12))
        bounds = (-20.0 - scale, 20.0 - scale)
        low, high = jax.lax.fori_loop(0, BISECTION_STEPS, bisect, bounds)
        p, entropy = rows_at(0.5 * (low + high))
        return p, jnp.exp(entropy)

    p, realised = _by_blocks(block, rows, x, squared_x)
    n = x.shape[0]
    return p.reshape(n, n) * valid[:, None], realised.reshape(n)


@functools.partial(jax.jit, static_argnums=(3, 4))
def _joint(x: jax.Array, valid: jax.Array, perplexity: jax.Array, n: int, rows: int):
    """Symmetric ``P`` of ``n`` real points (padded ones weigh nothing) and the realised
    perplexity of each real row."""
    conditional, realised = _conditional(x, valid, perplexity, rows)
    return (conditional + conditional.T) / (2.0 * n), realised


def _padded(x: np.ndarray) -> tuple[jax.Array, jax.Array, int]:
    """``x`` padded with zero rows to whole blocks, which rows are real, and the blocks."""
    rows, block = _blocks(len(x))
    padded = np.zeros((rows * block, x.shape[1]), np.float32)
    padded[: len(x)] = x
    return jnp.asarray(padded), jnp.asarray(np.arange(rows * block) < len(x)), rows


def _pca_start(x: jax.Array, valid: jax.Array) -> jax.Array:
    """The first two principal components of the real points, scaled to a standard deviation
    of 1e-4 (openTSNE's start), each column's largest entry positive; padding at 0."""
    mean = (x * valid[:, None]).sum(0) / valid.sum()
    centred = (x - mean) * valid[:, None]
    _, _, vt = jnp.linalg.svd(centred, full_matrices=False)
    start = centred @ vt[:2].T
    start = start * jnp.sign(start[jnp.argmax(jnp.abs(start), axis=0), jnp.arange(2)])
    std = jnp.sqrt((start[:, 0] ** 2).sum() / valid.sum())
    return 1e-4 * start / jnp.maximum(std, 1e-12)


@functools.partial(jax.jit, static_argnums=(3, 4, 5))
def _embed(x, valid, perplexity, n: int, rows: int, steps: int, learning_rate):
    p, realised = _joint(x, valid, perplexity, n, rows)

    def normaliser(y):
        return _by_blocks(
            lambda first, y_rows: _kernel_rows(y_rows, first, y, valid).sum(), rows, y
        ).sum()

    def gradient(y, exaggeration):
        z = normaliser(y)

        def block(first, y_rows, p_rows):
            kernel = _kernel_rows(y_rows, first, y, valid)
            weight = (exaggeration * p_rows - kernel / z) * kernel
            return 4.0 * (weight.sum(1, keepdims=True) * y_rows - weight @ y)

        return _by_blocks(block, rows, y, p).reshape(y.shape) * valid[:, None]

    def step(i, state):
        y, update, gains = state
        early = i < EXAGGERATION_STEPS
        grad = gradient(y, jnp.where(early, EXAGGERATION, 1.0))
        # Delta-bar-delta gains (Jacobs 1988), as van der Maaten's code: a coordinate whose
        # gradient keeps its direction speeds up, one that flips slows down.
        gains = jnp.where(jnp.sign(grad) != jnp.sign(update), gains + 0.2, gains * 0.8)
        gains = jnp.maximum(gains, 0.01)
        momentum = jnp.where(early, MOMENTUM[0], MOMENTUM[1])
        update = momentum * update - learning_rate * gains * grad
        return y + update, update, gains

    y = _pca_start(x, valid)
    y, _, _ = jax.lax.fori_loop(0, steps, step, (y, jnp.zeros_like(y), jnp.ones_like(y)))
    z = normaliser(y)

    def divergence(first, y_rows, p_rows):
        q = _kernel_rows(y_rows, first, y, valid) / z
        ratio = jnp.maximum(p_rows, 1e-30) / jnp.maximum(q, 1e-30)
        return jnp.where(p_rows > 0, p_rows * jnp.log(ratio), 0.0).sum()

    kl = _by_blocks(divergence, rows, y, p).sum()
    mean = (y * valid[:, None]).sum(0) / n
    return (y - mean)[:n], kl, (realised * valid).sum() / n


def _check(x: np.ndarray, perplexity: float) -> None:
    if x.ndim != 2 or len(x) < 3:
        raise ArgumentError(f"t-SNE needs points of shape (N >= 3, D), got {x.shape}")
    if not np.isfinite(x).all():
        raise ArgumentError("t-SNE needs finite points; some are NaN or infinite")
    if not 1.0 <= perplexity <= len(x) - 1:
        raise ArgumentError(
            f"perplexity must be between 1 and N - 1 = {len(x) - 1} (the effective number of "
            f"neighbours of a point), got {perplexity}"
        )


def affinities(x, perplexity: float = 30.0) -> tuple[np.ndarray, np.ndarray]:
    """t-SNE's joint probabilities ``P (N, N)`` of points ``x (N, D)`` (symmetric, summing to
    1, zero diagonal) and each row's realised perplexity ``(N,)`` before symmetrising.

    >>> p, realised = affinities(np.random.default_rng(0).normal(size=(50, 4)), 10.0)
    >>> round(float(p.sum()), 4), bool(np.allclose(realised, 10.0, rtol=1e-3))
    (1.0, True)
    """
    x = np.asarray(x, np.float32)
    _check(x, perplexity)
    padded, valid, rows = _padded(x)
    p, realised = _joint(padded, valid, jnp.float32(perplexity), len(x), rows)
    return np.asarray(p)[: len(x), : len(x)], np.asarray(realised)[: len(x)]


def tsne_layout(
    x, perplexity: float = 30.0, steps: int = 1000, learning_rate: float | None = None
) -> Layout:
    """Exact t-SNE of points ``x (N, D)`` to 2-D, with its record (:class:`Layout`).

    ``learning_rate`` defaults to ``max(N / 12 / 4, 50)`` (Belkina et al. 2019, as
    scikit-learn's ``"auto"``). One compiled program per ``(N, D, steps)``; the same points
    give the same layout (no key: the start is their principal components).

    >>> layout = tsne_layout(np.eye(6), perplexity=2.0, steps=50)
    >>> layout.points.shape, layout.kl >= 0
    ((6, 2), True)
    """
    x = np.asarray(x, np.float32)
    _check(x, perplexity)
    if not isinstance(steps, int | np.integer) or steps < 1:
        raise ArgumentError(f"t-SNE steps must be an int >= 1, got {steps!r}")
    rate = max(len(x) / EXAGGERATION / 4.0, 50.0) if learning_rate is None else learning_rate
    if not rate > 0:
        raise ArgumentError(f"t-SNE learning_rate must be > 0, got {learning_rate!r}")
    padded, valid, rows = _padded(x)
    y, kl, realised = _embed(
        padded, valid, jnp.float32(perplexity), len(x), rows, int(steps), jnp.float32(rate)
    )
    return Layout(np.asarray(y), float(kl), float(realised))


def tsne(x, perplexity: float = 30.0, steps: int = 1000) -> np.ndarray:
    """``(N, 2)`` float32: exact t-SNE of points ``x (N, D)`` (:func:`tsne_layout`'s points).

    >>> tsne(np.random.default_rng(0).normal(size=(30, 5)), perplexity=5.0, steps=100).shape
    (30, 2)
    """
    return tsne_layout(x, perplexity, steps).points
