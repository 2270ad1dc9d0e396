"""Checking pictures: what the pictures are held against.

The second half of fvjax. Today: :func:`stream_activations`, a model run over a dataset (the
world, an image folder) in batches, the pass every check builds on. The dataset examples,
Network Dissection, synthetic-vs-natural comparisons, facets and the unit card land here.
"""

from fvjax.checks.activations import stream_activations

__all__ = ["stream_activations"]
