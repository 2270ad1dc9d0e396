"""Network Dissection's overlap counts: each unit's map, upsampled to the concept masks and
thresholded, against every mask slot of every image.

NetDissect upsamples every map to the mask size (bilinear, half-pixel centres, edges held) and
counts, per image, the active pixels and their overlap with each concept. Done densely that is
``B x U x P`` upsampled values a batch (InceptionV1's mixed4a at 112 px masks: 204 M floats for
32 images), most of them far below the unit's top-0.005 threshold.

**Tiles.** When the mask size is an even multiple ``s`` of the map size, the upsampled image
splits into ``s x s`` tiles (the image padded by ``s / 2`` pixels on each side) whose every pixel
interpolates the *same* four map values, the tile's corners. A bilinear value never exceeds the
largest of its corners, so a tile whose corners all lie at or below a unit's threshold holds no
active pixel and is skipped without computing it. Only the tiles with a corner above the
threshold (a few percent) are upsampled, thresholded and counted, in fixed-size chunks, as many
as there are such tiles: the counts are those of the dense computation, whatever the data.
Other scales (odd or fractional) are counted densely, one image at a time.

>>> import numpy as np
>>> maps = np.zeros((1, 2, 2, 1), np.float32); maps[0, 0, 0, 0] = 1.0
>>> masks = np.zeros((1, 1, 8, 8), bool); masks[0, 0, :4, :4] = True
>>> per_slot, active, slot_pixels = image_counts(maps, masks, np.full((1, 1), 0.5, np.float32))
>>> int(per_slot[0, 0, 0, 0]), int(active[0, 0, 0]), int(slot_pixels[0, 0])
(15, 15, 16)
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

#: Tiles upsampled together: a ``(CHUNK, s*s, slots)`` block of mask pixels is the largest
#: array of a chunk (4 MB for InceptionV1 at 112 px masks, 15 slots).
CHUNK = 4096


def bilinear(n_in: int, n_out: int) -> jax.Array:
    """``(n_out, n_in)``: ``jax.image.resize``'s bilinear upsampling along one axis, as a
    matrix (half-pixel centres, edges held), so a map upsamples as ``Wy @ map @ Wx.T``.

    >>> bilinear(2, 4).tolist()
    [[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]]
    """
    # Evaluated once while tracing (a constant of the program, not work at every step):
    # measured 1.6x faster a batch than letting the program compute it.
    with jax.ensure_compile_time_eval():
        eye = jnp.eye(n_in, dtype=jnp.float32)
        return jax.vmap(lambda e: jax.image.resize(e, (n_out,), "bilinear"), 1, 1)(eye)


def tiled(n_in: int, n_out: int) -> bool:
    """Whether upsampling ``n_in`` to ``n_out`` goes by tiles (an even integer scale)."""
    return n_out % n_in == 0 and (n_out // n_in) % 2 == 0


def image_counts(maps, masks, thresholds):
    """Per image, each slot's pixels active in each unit at each threshold ``(B, M, U, K)``
    int32, each unit's active pixels ``(B, U, K)`` int32 and each slot's pixels ``(B, M)``
    int32 (a by-product of the tiles: a plain sum of the bool masks measured 19 ms for
    worldnet's batch of 256, more than its forward pass).

    Args:
        maps: ``(B, h, w, U)`` activations.
        masks: ``(B, M, H, W)`` bool concept masks (``M`` slots).
        thresholds: ``(U, K)``; a pixel is active above its unit's threshold.
    """
    maps, masks, thresholds = jnp.asarray(maps), jnp.asarray(masks), jnp.asarray(thresholds)
    h, w = maps.shape[1:3]
    mask_h, mask_w = masks.shape[-2:]
    if tiled(h, mask_h) and tiled(w, mask_w):
        return _tile_counts(maps, masks, thresholds)
    return _dense_counts(maps, masks, thresholds)


def _dense_counts(maps, masks, thresholds):
    """The maps upsampled whole, one image at a time (a whole batch's upsampled maps,
    ``B x P x U`` floats, measured 2.4x slower for InceptionV1's mixed4a at 112 px masks)."""
    b, h, w, u = maps.shape
    k = thresholds.shape[-1]
    mask_h, mask_w = masks.shape[-2:]
    rows, cols = bilinear(h, mask_h), bilinear(w, mask_w)
    hot = masks.reshape(b, masks.shape[1], -1).astype(jnp.float32)  # (B, M, P)

    def one(image):
        cells, slots = image
        # Two contractions, not one three-operand einsum: measured 1.9x faster here.
        half = jnp.einsum("Yy,yxu->Yxu", rows, cells)
        up = jnp.einsum("Yxu,Xx->YXu", half, cols).reshape(-1, u)
        active = (up[..., None] > thresholds).astype(jnp.float32).reshape(-1, u * k)
        return (slots @ active).reshape(-1, u, k), active.sum(0).reshape(u, k)

    per_slot, counts = jax.lax.map(one, (maps, hot))
    return per_slot.astype(jnp.int32), counts.astype(jnp.int32), hot.sum(-1).astype(jnp.int32)


def _corner_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Along one axis, for tile ``t`` (corners at map rows ``t - 1`` and ``t``, held at the
    edges) and pixel ``r`` of the tile: the two corners' weights ``(n_in + 1, s, 2)`` taken
    from :func:`bilinear`'s matrix, and whether the pixel lies in the image ``(n_in + 1, s)``."""
    matrix = np.asarray(bilinear(n_in, n_out))
    s = n_out // n_in
    weights = np.zeros((n_in + 1, s, 2), np.float32)
    inside = np.zeros((n_in + 1, s), bool)
    for t in range(n_in + 1):
        for r in range(s):
            pixel = t * s + r - s // 2
            if not 0 <= pixel < n_out:
                continue
            inside[t, r] = True
            if t >= 1:
                weights[t, r, 0] = matrix[pixel, t - 1]
            if t < n_in:
                weights[t, r, 1] = matrix[pixel, t]
    return weights, inside


def _tile_counts(maps, masks, thresholds):
    """:func:`image_counts` by tiles (see the module's docstring)."""
    b, h, w, u = maps.shape
    n_slots, mask_h, mask_w = masks.shape[1:]
    k = thresholds.shape[-1]
    sy, sx = mask_h // h, mask_w // w
    ty, tx = h + 1, w + 1
    with jax.ensure_compile_time_eval():
        wy, in_y = _corner_weights(h, mask_h)
        wx, in_x = _corner_weights(w, mask_w)
    # Corners: the maps padded by one held value; tile (i, j) reads rows i, i+1, cols j, j+1.
    held = jnp.pad(maps, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    lowest = thresholds.min(axis=-1)
    # A computed value may exceed its largest corner by rounding: a margin of a few ulps keeps
    # every tile that could hold an active pixel.
    margin = 4 * jnp.finfo(jnp.float32).eps * jnp.abs(lowest)
    rows = jnp.maximum(held[:, :-1], held[:, 1:])
    hot = (jnp.maximum(rows[:, :, :-1], rows[:, :, 1:]) > lowest - margin).reshape(-1)
    find = _finder(hot)
    # Mask pixels by tile (the masks padded by s/2: pixels outside the image hold no concept),
    # 32 to a word: a tile's overlap with a slot is the popcount of two words' AND.
    padded = jnp.pad(masks, ((0, 0), (0, 0), (sy // 2, sy // 2), (sx // 2, sx // 2)))
    slot_words = _pack(
        padded.reshape(b, n_slots, ty, sy, tx, sx)
        .transpose(0, 2, 4, 1, 3, 5)
        .reshape(b * ty * tx, n_slots, sy * sx)
    )  # (B * ty * tx, M, words)
    wy, wx, in_y, in_x = map(jnp.asarray, (wy, wx, in_y, in_x))

    def chunk(state):
        start, per_slot, counts = state
        real = start + jnp.arange(CHUNK) < find.count
        index = find(start)
        unit = index % u
        tile = index // u  # (image, row, col) flat
        row, col, image = (tile // tx) % ty, tile % tx, tile // (tx * ty)
        y, x = row + 1, col + 1  # the corners' indices in ``held``, at the bottom right
        c = jnp.stack(
            [
                held[image, y - 1, x - 1, unit],
                held[image, y - 1, x, unit],
                held[image, y, x - 1, unit],
                held[image, y, x, unit],
            ],
            axis=-1,
        )  # (C, 4)
        left = wy[row, :, 0] * c[:, :1] + wy[row, :, 1] * c[:, 2:3]  # (C, sy)
        right = wy[row, :, 0] * c[:, 1:2] + wy[row, :, 1] * c[:, 3:]
        value = left[:, :, None] * wx[col, None, :, 0] + right[:, :, None] * wx[col, None, :, 1]
        inside = in_y[row][:, :, None] & in_x[col][:, None, :] & real[:, None, None]
        active = (value[..., None] > thresholds[unit][:, None, None]) & inside[..., None]
        active = _pack(active.reshape(CHUNK, sy * sx, k).transpose(0, 2, 1))  # (C, K, words)
        both = jax.lax.population_count(active[:, None] & slot_words[tile][:, :, None])
        key = image * u + unit
        per_slot = per_slot.at[key].add(both.sum(-1, dtype=jnp.int32))  # (C, M, K)
        counts = counts.at[key].add(jax.lax.population_count(active).sum(-1, dtype=jnp.int32))
        return start + CHUNK, per_slot, counts

    start = (
        jnp.zeros((), jnp.int32),
        jnp.zeros((b * u, n_slots, k), jnp.int32),
        jnp.zeros((b * u, k), jnp.int32),
    )
    _, per_slot, counts = jax.lax.while_loop(lambda s: s[0] < find.count, chunk, start)
    return (
        per_slot.reshape(b, u, n_slots, k).transpose(0, 2, 1, 3),
        counts.reshape(b, u, k),
        jax.lax.population_count(slot_words)
        .reshape(b, ty * tx, n_slots, -1)
        .sum((1, 3), dtype=jnp.int32),
    )


def _pack(flags) -> jax.Array:
    """``(..., n)`` bool as ``(..., ceil(n / 32))`` uint32 words, flag ``i`` at bit ``i % 32``."""
    n = flags.shape[-1]
    flags = jnp.pad(flags, [(0, 0)] * (flags.ndim - 1) + [(0, -n % 32)])
    bits = flags.reshape(*flags.shape[:-1], -1, 32).astype(jnp.uint32)
    return (bits << jnp.arange(32, dtype=jnp.uint32)).sum(-1, dtype=jnp.uint32)


def _select(word, rank):
    """The bit position of each ``word``'s set bit of ``rank`` (0: the lowest), uint32."""
    position = jnp.zeros_like(word)
    for half in (16, 8, 4, 2, 1):
        low = jax.lax.population_count((word >> position) & jnp.uint32((1 << half) - 1))
        skip = low <= rank
        rank = jnp.where(skip, rank - low, rank)
        position = jnp.where(skip, position + half, position)
    return position


class _Finder(NamedTuple):
    """The positions of a flag array's set entries, found ``CHUNK`` at a time: a prefix sum
    over 32-flag words and a bit search within the word (a full ``nonzero`` over
    InceptionV1's 3.7 M tiles a batch measured 44 ms on our CPU, more than its forward pass
    spends on a tenth of the batch)."""

    words: jax.Array  # (words,) uint32
    ends: jax.Array  # (words,) set flags up to and including each word
    count: jax.Array  # () set flags in all

    def __call__(self, start):
        """``(CHUNK,)`` positions of set flags ``start, start + 1, ...`` (0 past the last)."""
        wanted = start + jnp.arange(CHUNK)
        word = jnp.minimum(jnp.searchsorted(self.ends, wanted, side="right"), len(self.ends) - 1)
        bits = self.words[word]
        rank = (wanted - (self.ends[word] - jax.lax.population_count(bits))).astype(jnp.uint32)
        position = word * 32 + _select(bits, rank).astype(word.dtype)
        return jnp.where(wanted < self.count, position, 0)


def _finder(flags) -> _Finder:
    words = _pack(flags)
    ends = jnp.cumsum(jax.lax.population_count(words).astype(jnp.int32))
    return _Finder(words, ends, ends[-1])
