"""Built-in models by name: ``load("tiny")``, ``load("worldnet")``.

A loader runs on first use only (``worldnet`` reads its weights then) and the model is kept,
so every job in a process shares one :class:`fvjax.models.Model` per name, and with it the
compiled programs (a model is hashed by identity).

>>> names()
['inceptionv1', 'tiny', 'worldnet']
>>> sorted(load("tiny").layer_shapes(16))[:3]
['block1', 'block1/conv', 'block2']
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from fvjax.errors import ConfigError, did_you_mean
from fvjax.models import Model, from_linen

_LOADERS: dict[str, Callable[[], Model]] = {}
_WEIGHTS_LOADERS: dict[str, Callable[[str], Model]] = {}
_LOADED: dict[str, Model] = {}


def register(
    name: str, loader: Callable[[], Model], with_weights: Callable[[str], Model] | None = None
) -> None:
    """Make ``loader`` (called once, on first :func:`load`) available as ``name``;
    ``with_weights(path)`` builds the model from a user's weights file, where it can."""
    _LOADERS[name] = loader
    _LOADED.pop(name, None)
    if with_weights is not None:
        _WEIGHTS_LOADERS[name] = with_weights


def names() -> list[str]:
    """The registered model names, sorted."""
    return sorted(_LOADERS)


def load(name: str, weights: str | None = None) -> Model:
    """The built-in model ``name`` (the same instance on every call), or built from the
    ``weights`` file when given (for the models that take one, e.g. ``inceptionv1``).

    Raises :class:`ConfigError` naming the known models when ``name`` is not one of them.
    """
    if name not in _LOADERS:
        raise ConfigError(
            f"unknown model {name!r}.{did_you_mean(name, _LOADERS)} "
            f"Built-in models: {', '.join(names())}; or give 'package.module:factory'"
        )
    if weights:
        if name not in _WEIGHTS_LOADERS:
            raise ConfigError(
                f"model {name!r} ships its own weights and takes no weights file; models that "
                f"take one: {', '.join(sorted(_WEIGHTS_LOADERS))}"
            )
        return _WEIGHTS_LOADERS[name](weights)
    if name not in _LOADED:
        _LOADED[name] = _LOADERS[name]()
    return _LOADED[name]


def _tiny() -> Model:
    from fvjax.zoo.tiny import load_tiny

    module, variables, _ = load_tiny()
    return from_linen(module, variables, name="tiny")


def _worldnet() -> Model:
    # Imported here: the module and its weights are only needed when asked for.
    try:
        from fvjax.zoo.worldnet import load_worldnet
    except ModuleNotFoundError as exc:
        if exc.name != "fvjax.zoo.worldnet":
            raise
        raise ConfigError("model 'worldnet' is not available in this install") from exc
    try:
        module, variables, info = load_worldnet()
    except FileNotFoundError as exc:
        raise ConfigError(
            f"model 'worldnet' cannot load: {exc.filename} is missing "
            "(scripts/train_worldnet.py makes it)"
        ) from exc
    model = from_linen(module, variables, name="worldnet")
    concepts = tuple(info["concepts"])
    return dataclasses.replace(model, unit_names={"logits": concepts, "output": concepts})


def _inceptionv1(weights: str | None = None) -> Model:
    from fvjax.zoo.inception import inceptionv1

    return inceptionv1(weights=weights)


register("tiny", _tiny)
register("worldnet", _worldnet)
register("inceptionv1", _inceptionv1, with_weights=_inceptionv1)
