"""Models: the adapters that make any JAX model a :class:`Model` (``images -> {layer:
activations}``), the readers of the user's weights files, converted weights, and the zoo.

- :mod:`~fvjax.models.adapters`: :class:`Model`, :func:`from_linen`, :func:`from_nnx`,
  :func:`from_fn`, input preprocessing (:func:`normalize`);
- :mod:`~fvjax.models.weights`: PyTorch-layout state dicts and the import tables that map them
  onto Flax params trees;
- :mod:`~fvjax.models.converted`: what ``fvjax convert`` writes, and reads back;
- :mod:`~fvjax.models.layers`: layers whose backward pass is the same on every run (``max_pool``);
- :mod:`~fvjax.models.zoo`: the built-in networks by name, and planted networks with known
  answers.
"""

from fvjax.models.adapters import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    INPUT,
    Model,
    as_size,
    describe_layers,
    from_fn,
    from_linen,
    from_nnx,
    layer_shape,
    normalize,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INPUT",
    "Model",
    "as_size",
    "describe_layers",
    "from_fn",
    "from_linen",
    "from_nnx",
    "layer_shape",
    "normalize",
]
