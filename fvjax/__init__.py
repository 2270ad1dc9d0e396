"""fvjax: batched feature visualization in JAX.

>>> import fvjax
>>> model = fvjax.models.from_fn(lambda x: {"rgb": x})
>>> result = fvjax.render(model, fvjax.objectives.channel("rgb", [0, 1]), seeds=2, steps=4,
...                       size=16, transforms=fvjax.transforms.identity())
>>> result.images.shape
(2, 2, 16, 16, 3)
"""

from fvjax import errors, models, objectives, param, transforms
from fvjax.engine import RenderResult, render, render_layer
from fvjax.errors import (
    ConfigError,
    FvjaxError,
    ImageSizeError,
    NonFiniteError,
    UnitRangeError,
    UnknownLayerError,
)
from fvjax.models import Model, from_fn, from_linen, from_nnx

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "FvjaxError",
    "ImageSizeError",
    "Model",
    "NonFiniteError",
    "RenderResult",
    "UnitRangeError",
    "UnknownLayerError",
    "errors",
    "from_fn",
    "from_linen",
    "from_nnx",
    "models",
    "objectives",
    "param",
    "render",
    "render_layer",
    "transforms",
]
