"""A model's activations over a dataset, streamed: what every check of a picture reads; and
activation vectors at unit length, the space facets and atlases compare them in."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from fvjax.models.adapters import Model, selected_activations


def stream_activations(
    model: Model, batches: Iterable, layers: Sequence[str]
) -> Iterator[dict[str, np.ndarray]]:
    """Run ``model`` over a stream of batches and yield ``{layer: (B, ...)}`` numpy arrays.

    ``batches`` yields image arrays ``(B, H, W, 3)`` in [0, 1], or anything with an ``images``
    attribute (an :class:`ImageBatch` from a folder, a ``World`` from :func:`world_batches`).
    Layers are checked before the first batch runs; weights stay arguments of the program.

    >>> from fvjax.data import world_batches
    >>> from fvjax.models import from_fn
    >>> model = from_fn(lambda x: {"mean": x.mean(axis=(1, 2))})
    >>> out = list(stream_activations(model, world_batches(0, 32, 4, 6), ["mean"]))
    >>> [a["mean"].shape for a in out]
    [(4, 3), (2, 3)]
    """
    layers = tuple(layers)
    checked = False
    for batch in batches:
        images = np.asarray(getattr(batch, "images", batch), np.float32)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"batches must be (B, H, W, 3) RGB images, got shape {images.shape}")
        if not checked:
            for name in layers:
                model.check_layer(name, images.shape[1:3])
            checked = True
        out = selected_activations(model.apply, layers, model.params, images)
        yield {name: np.asarray(value) for name, value in out.items()}


def unit_length(vectors: np.ndarray) -> np.ndarray:
    """``vectors (..., C)`` scaled to length 1 (all-zero ones stay 0): the space a unit's
    facets are clustered in (:mod:`fvjax.checks.facets`) and an atlas's points laid out in.

    >>> unit_length(np.array([[3.0, 4.0], [0.0, 0.0]])).tolist()
    [[0.6, 0.8], [0.0, 0.0]]
    """
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)
