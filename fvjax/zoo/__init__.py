"""Built-in models by name: ``load("worldnet")``, ``load("inceptionv1", weights=path)``.

A loader runs on first use only (``worldnet`` reads its weights then) and the model is kept,
so every job in a process shares one :class:`fvjax.models.Model` per name, and with it the
compiled programs (a model is hashed by identity).

Real networks (InceptionV1, ...) are :class:`Architecture` entries: built here in Flax, filled
from a weights file the user supplies (random weights without one).

>>> names()
['inceptionv1', 'resnet50', 'tiny', 'vgg16', 'vit_b_16', 'worldnet']
>>> sorted(load("tiny").layer_shapes(16))[:3]
['block1', 'block1/conv', 'block2']
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence

from fvjax.errors import ConfigError, did_you_mean
from fvjax.models import Model, from_linen
from fvjax.weights import Entry, load_params

_LOADERS: dict[str, Callable[[], Model]] = {}
_WEIGHTS_LOADERS: dict[str, Callable[[str], Model]] = {}
_LOADED: dict[str, Model] = {}
_ARCHITECTURES: dict[str, Architecture] = {}


@dataclasses.dataclass(frozen=True)
class Architecture:
    """A network built in Flax whose weights come from the user's files.

    ``build(params) -> Model`` wraps a Flax params tree; ``random_params(seed)`` draws one;
    ``param_shapes()`` is the tree as ``jax.ShapeDtypeStruct`` leaves, the template every
    import is checked against (no weights drawn); ``table()`` is the import table of the
    network's PyTorch-layout state dict (:mod:`fvjax.weights`).
    """

    build: Callable[[dict], Model]
    random_params: Callable[[int], dict]
    param_shapes: Callable[[], dict]
    table: Callable[[], Sequence[Entry]]

    def params(self, weights: str | os.PathLike | None = None) -> dict:
        """The params tree from ``weights`` (a state dict file or a converted checkpoint), or
        random weights (seed 0) when ``None``."""
        if weights is None:
            return self.random_params(0)
        return load_params(weights, self.table(), self.param_shapes())

    def load(self, weights: str | os.PathLike | None = None) -> Model:
        return self.build(self.params(weights))


def register(
    name: str, loader: Callable[[], Model], with_weights: Callable[[str], Model] | None = None
) -> None:
    """Make ``loader`` (called once, on first :func:`load`) available as ``name``;
    ``with_weights(path)`` builds the model from a user's weights file, where it can."""
    _LOADERS[name] = loader
    _LOADED.pop(name, None)
    if with_weights is not None:
        _WEIGHTS_LOADERS[name] = with_weights


def register_architecture(name: str, architecture: Architecture) -> None:
    """Make ``architecture`` loadable as ``name``, with or without a weights file."""
    _ARCHITECTURES[name] = architecture
    register(name, architecture.load, with_weights=architecture.load)


def architecture(name: str) -> Architecture:
    """The :class:`Architecture` registered as ``name`` (for ``fvjax convert``)."""
    if name not in _LOADERS:
        load(name)  # the unknown-model error, with suggestions
    if name not in _ARCHITECTURES:
        raise ConfigError(
            f"model {name!r} takes no weights file.{did_you_mean(name, _ARCHITECTURES)} "
            f"Models that do: {', '.join(sorted(_ARCHITECTURES))}"
        )
    return _ARCHITECTURES[name]


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


def _lazy(module: str, attr: str) -> Callable:
    """``module.attr``, imported when first called: a network's code loads only when used."""

    def call(*args, **kwargs):
        import importlib

        return getattr(importlib.import_module(module), attr)(*args, **kwargs)

    return call


register("tiny", _tiny)
register("worldnet", _worldnet)
for _name, _module, _table in (
    ("inceptionv1", "fvjax.zoo.inception", "lucent_table"),
    ("resnet50", "fvjax.zoo.resnet", "torchvision_table"),
    ("vgg16", "fvjax.zoo.vgg", "torchvision_table"),
    ("vit_b_16", "fvjax.zoo.vit", "torchvision_table"),
):
    register_architecture(
        _name,
        Architecture(
            build=_lazy(_module, "build"),
            random_params=_lazy(_module, "random_params"),
            param_shapes=_lazy(_module, "param_shapes"),
            table=_lazy(_module, _table),
        ),
    )
