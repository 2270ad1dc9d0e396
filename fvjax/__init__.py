"""fvjax: batched feature visualization in JAX, and the checks that stand beside the pictures.

The package, as the data flows::

    fvjax.models     adapters (any JAX model -> images to named activations), weights, zoo
    fvjax.rendering  objectives, param, transforms -> the compiled step -> the chunked engine
    fvjax.checks     the pictures held against real data
    fvjax.data       the procedural world and image folders
    fvjax.job        config -> plan -> run -> outputs and gallery (what the CLI runs)

The names most code needs are here, flat:

>>> import fvjax
>>> model = fvjax.models.from_fn(lambda x: {"rgb": x})
>>> result = fvjax.render(model, fvjax.objectives.channel("rgb", [0, 1]), seeds=2, steps=4,
...                       size=16, transforms=fvjax.transforms.identity())
>>> result.images.shape
(2, 2, 16, 16, 3)

``import fvjax`` asks XLA for deterministic GPU programs when no JAX backend has started yet and
``XLA_FLAGS`` does not say otherwise (:mod:`fvjax.rendering.determinism`).
"""

from fvjax import checks, data, errors, job, models, rendering
from fvjax.data import world
from fvjax.errors import (
    ConfigError,
    FvjaxError,
    ImageSizeError,
    NonFiniteError,
    UnitRangeError,
    UnknownLayerError,
)
from fvjax.files import FVJAX_VERSION as __version__
from fvjax.models import Model, from_fn, from_linen, from_nnx, zoo
from fvjax.rendering import alpha, cppn, determinism, inversion, maco, objectives, param, transforms
from fvjax.rendering.engine import RenderResult, render, render_layer
from fvjax.rendering.seeds import Diversity, Guide

determinism.default_request()  # no import above starts a backend (tested)

__all__ = [
    "ConfigError",
    "Diversity",
    "FvjaxError",
    "Guide",
    "ImageSizeError",
    "Model",
    "NonFiniteError",
    "RenderResult",
    "UnitRangeError",
    "UnknownLayerError",
    "__version__",
    "alpha",
    "checks",
    "cppn",
    "data",
    "determinism",
    "errors",
    "from_fn",
    "from_linen",
    "from_nnx",
    "inversion",
    "job",
    "maco",
    "models",
    "objectives",
    "param",
    "render",
    "render_layer",
    "rendering",
    "transforms",
    "world",
    "zoo",
]
