"""What ties a unit's seeds together: diversity pushes them apart, a guide steers each one.

Every other part of a render treats pictures alone. These two terms are the exceptions, and
they stay inside one unit: the engine keeps a unit's seeds in the same chunk (and on the same
device), so a unit's pictures never depend on which other units share its chunk.

- :class:`Diversity` (Lucid's ``diversity`` objective; Olah et al. 2017): the loss gains
  ``weight`` times, per unit, the mean over its seeds of their summed cosine similarity to the
  unit's other seeds, of their Gram matrices of ``layer`` (channel x channel, summed over
  positions): seeds that share a style pay for it.
- :class:`Guide` (for Nguyen et al. 2016's multifaceted feature visualization): each picture
  is pulled along its own direction at ``layer`` (say what sets one facet of the unit's top
  natural examples apart): the loss gains ``-weight`` times the dot product of the picture's
  activation vector (its mean over positions) with that direction (Lucid's ``direction``
  objective), so each picture's pull is scaled by its direction's length. A dot product, not
  a cosine: a cosine also rewards shrinking whatever lies off the direction, the unit's own
  activation included. On the planted polysemantic units, pictures steered by the cosine
  lost their facet at 2x the pull that first isolated it (0.5 against 1); by the dot
  product, every pull from 2 to 8 isolated every facet (``tests/test_facets_truth.py``).

>>> import jax.numpy as jnp
>>> same = jnp.ones((4, 3, 3, 2))  # 2 units x 2 seeds, every picture alike
>>> gram_similarity(same, group=2).tolist()
[1.0, 1.0]
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from fvjax.errors import ArgumentError

Array = jax.Array

#: The similarity term is at most ``seeds - 1`` a seed; a weight near the objective's own range
#: balances the two (Lucid's notebook uses 100 for InceptionV1's ``mixed4a`` channels). On a
#: small conv net whose units reach ~3, weight 0.5 cut the similarity of 3 seeds from 1.98 to
#: 0.5-0.85 for 40-60% of the activation (``tests/test_seeds.py``).
DEFAULT_DIVERSITY_WEIGHT = 1.0


class Diversity(NamedTuple):
    """Push the seeds of each unit apart at ``layer`` (see the module docstring)."""

    layer: str
    weight: float = DEFAULT_DIVERSITY_WEIGHT


class Guide(NamedTuple):
    """Steer each picture along its own direction at ``layer``; the directions are the
    render's ``directions`` argument, ``(units, seeds, channels)``."""

    layer: str
    weight: float = 1.0


def checked(term: Diversity | Guide | None, what: str) -> Diversity | Guide | None:
    """``term`` with its weight a finite float >= 0 and its layer a non-empty name."""
    if term is None:
        return None
    layer, weight = term
    if not isinstance(layer, str) or not layer:
        raise ArgumentError(f"{what} needs a layer name, got {layer!r}")
    if isinstance(weight, bool) or not isinstance(weight, int | float):
        raise ArgumentError(f"{what} weight must be a number, got {weight!r}")
    if not math.isfinite(weight) or weight < 0:
        raise ArgumentError(f"{what} weight must be finite and >= 0, got {weight!r}")
    return type(term)(layer, float(weight))


def _as_positions(activations: Array) -> Array:
    """``(N, positions, channels)`` of a spatial ``(N, h, w, C)`` or dense ``(N, C)`` layer."""
    return activations.reshape(activations.shape[0], -1, activations.shape[-1])


def gram_similarity(activations: Array, group: int) -> Array:
    """``(N // group,)``: per group of ``group`` consecutive pictures (a unit's seeds), the mean
    over its pictures of their summed cosine similarity to the group's other pictures, of
    their Gram matrices of ``activations (N, ...)``. 0 for one picture alone.

    >>> import jax
    >>> x = jax.random.normal(jax.random.key(0), (6, 4, 4, 3))
    >>> gram_similarity(x, group=3).shape
    (2,)
    """
    flat = _as_positions(activations.astype(jnp.float32))
    grams = jnp.einsum("npc,npd->ncd", flat, flat).reshape(flat.shape[0], -1)
    grams = grams / jnp.maximum(jnp.linalg.norm(grams, axis=-1, keepdims=True), 1e-10)
    grams = grams.reshape(-1, group, grams.shape[-1])
    similar = jnp.einsum("gsk,gtk->gst", grams, grams)
    return (similar.sum((1, 2)) - jnp.trace(similar, axis1=1, axis2=2)) / group


def guide_similarity(activations: Array, directions: Array) -> Array:
    """``(N,)``: the dot product of each picture's activation vector (its mean over
    positions) with its direction ``directions (N, C)``.

    >>> guide_similarity(jnp.ones((1, 2, 2, 1)), jnp.full((1, 1), 2.0)).round(4).tolist()
    [2.0]
    """
    mean = _as_positions(activations.astype(jnp.float32)).mean(1)
    return (mean * directions).sum(-1)


def penalty(
    diversity: Diversity | None,
    guide: Guide | None,
    group: int,
    activations: dict[str, Array],
    directions: Array,
) -> Array:
    """The scalar these terms add to a batch's loss (0 without them)."""
    total = jnp.zeros((), jnp.float32)
    if diversity is not None and diversity.weight:
        total += diversity.weight * gram_similarity(activations[diversity.layer], group).sum()
    if guide is not None and guide.weight:
        total -= guide.weight * guide_similarity(activations[guide.layer], directions).sum()
    return total
