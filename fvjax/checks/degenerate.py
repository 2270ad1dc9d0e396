"""Pictures that show nothing: saturated, flat, or left where they started.

A render can finish without a NaN and still make nothing useful: a learning rate of 1e30 drives
every pixel to 0 or 1 (saturated noise), a dead unit's objective never rises from its start, a
picture can end flat. :func:`degenerate_pictures` names what is wrong with each picture, so a
job warns about them, records them in its manifest, and fails where every picture is so.

>>> import numpy as np
>>> images = np.stack([np.full((8, 8, 3), 0.5), np.random.default_rng(0).random((8, 8, 3)) > 0.5])
>>> history = np.array([[0.0, 0.0], [1.0, 1.0]])  # (steps, pictures): both rose
>>> degenerate_pictures(images, history)
['flat: every pixel within 0.004 of the mean', 'saturated: 100% of values at 0 or 1']
"""

from __future__ import annotations

import numpy as np

from fvjax.rendering.alpha import GREY, over_background

#: A picture is saturated when at least this share of its values lie at 0 or 1 (within one
#: 8-bit level); a render at a sane learning rate keeps well under it (the default job at 64
#: steps: at most 0.45% of a picture's values, median 0; at ``learning_rate=1e30``: 100%).
SATURATED_SHARE = 0.9

#: One 8-bit level: values closer than this to 0 or 1 count as at the bound, a picture whose
#: pixels all lie this close to their mean is flat.
LEVEL = 1.0 / 255.0


def degenerate_pictures(images: np.ndarray, history: np.ndarray | None = None) -> list[str | None]:
    """For each picture of ``images (N, H, W, 3)`` in [0, 1], what makes it useless, or
    ``None``: most values at 0 or 1 (:data:`SATURATED_SHARE`), flat (every value within
    :data:`LEVEL` of the mean), or, given ``history (steps, N)`` (the objective at each step),
    an objective that ended no higher than it started. RGBA pictures ``(N, H, W, 4)`` are
    judged composited over grey, as the model saw them: one gone transparent is flat.
    """
    images = np.asarray(over_background(np.asarray(images, np.float32), GREY), np.float32)
    flat = images.reshape(len(images), -1)
    at_bound = ((flat <= LEVEL) | (flat >= 1.0 - LEVEL)).mean(1)
    spread = np.abs(flat - flat.mean(1, keepdims=True)).max(1)
    rose = None
    if history is not None and len(history) > 1:
        history = np.asarray(history, np.float32).reshape(len(history), len(images))
        rose = history[-1] > history[0] + 1e-6 * np.maximum(np.abs(history[0]), 1.0)
    out: list[str | None] = []
    for i in range(len(images)):
        if at_bound[i] >= SATURATED_SHARE:
            out.append(f"saturated: {at_bound[i]:.0%} of values at 0 or 1")
        elif spread[i] <= LEVEL:
            out.append(f"flat: every pixel within {LEVEL:.3f} of the mean")
        elif rose is not None and not rose[i]:
            start, end = history[0, i], history[-1, i]
            out.append(
                f"the objective did not rise: {start:.4g} at the first step, {end:.4g} at the last"
            )
        else:
            out.append(None)
    return out
