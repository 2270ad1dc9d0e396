"""Built-in models by name: ``load("tiny")``, ``load("worldnet")``.

A loader runs on first use only (``worldnet`` reads its weights then) and the model is kept,
so every job in a process shares one :class:`fvjax.models.Model` per name, and with it the
compiled programs (a model is hashed by identity).

>>> names()
['tiny', 'worldnet']
>>> sorted(load("tiny").layer_shapes(16))[:3]
['block1', 'block1/conv', 'block2']
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from fvjax.errors import ConfigError, did_you_mean
from fvjax.models import Model, from_linen

_LOADERS: dict[str, Callable[[], Model]] = {}
_LOADED: dict[str, Model] = {}


def register(name: str, loader: Callable[[], Model]) -> None:
    """Make ``loader`` (called once, on first :func:`load`) available as ``name``."""
    _LOADERS[name] = loader
    _LOADED.pop(name, None)


def names() -> list[str]:
    """The registered model names, sorted."""
    return sorted(_LOADERS)


def load(name: str) -> Model:
    """The built-in model ``name`` (the same instance on every call).

    Raises :class:`ConfigError` naming the known models when ``name`` is not one of them.
    """
    if name not in _LOADERS:
        raise ConfigError(
            f"unknown model {name!r}.{did_you_mean(name, _LOADERS)} "
            f"Built-in models: {', '.join(names())}; or give 'package.module:factory'"
        )
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


register("tiny", _tiny)
register("worldnet", _worldnet)
