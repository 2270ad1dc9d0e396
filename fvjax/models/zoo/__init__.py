"""Built-in models by name: ``load("worldnet")``, ``load("inceptionv1", weights=path)``.

One registry, :data:`ARCHITECTURES`: each network module exports one
:class:`~fvjax.models.zoo.architecture.Architecture` value. A model is built on first use and
kept, so every job in a process shares one :class:`fvjax.models.Model` per name, and with it
the compiled programs (a model is hashed by identity). Real networks (InceptionV1, ResNet-50,
VGG-16, ViT-B/16) are filled from a weights file the user supplies (random weights, seed 0,
without one); ``tiny`` and ``worldnet`` ship their own. :mod:`~fvjax.models.zoo.planted` holds
networks with known answers, made by constructors rather than names.

>>> names()
['inceptionv1', 'resnet50', 'tiny', 'vgg16', 'vit_b_16', 'worldnet']
>>> sorted(load("tiny").layer_shapes(16))[:3]
['block1', 'block1/conv', 'block2']
"""

from __future__ import annotations

import os

from fvjax.errors import ConfigError, did_you_mean
from fvjax.models.adapters import Model
from fvjax.models.zoo import inception, resnet, tiny, vgg, vit, worldnet
from fvjax.models.zoo.architecture import Architecture

#: Every built-in network by name.
ARCHITECTURES: dict[str, Architecture] = {
    module.ARCHITECTURE.name: module.ARCHITECTURE
    for module in (inception, resnet, tiny, vgg, vit, worldnet)
}
_LOADED: dict[str, Model] = {}  # default-weights models, built once


def names() -> list[str]:
    """The built-in model names, sorted."""
    return sorted(ARCHITECTURES)


def architecture(name: str, weights: bool = False) -> Architecture:
    """The :class:`Architecture` named ``name`` (one that takes a weights file, if ``weights``).

    Raises :class:`ConfigError` naming the known models, or those that take weights.
    """
    if name not in ARCHITECTURES:
        raise ConfigError(
            f"unknown model {name!r}.{did_you_mean(name, ARCHITECTURES)} "
            f"Built-in models: {', '.join(names())}; or give 'package.module:factory'"
        )
    found = ARCHITECTURES[name]
    if weights and not found.takes_weights:
        takers = sorted(n for n, a in ARCHITECTURES.items() if a.takes_weights)
        raise ConfigError(
            f"model {name!r} ships its own weights and takes no weights file; models that "
            f"take one: {', '.join(takers)}"
        )
    return found


def load(name: str, weights: str | os.PathLike | None = None) -> Model:
    """The built-in model ``name`` (the same instance on every call), or a new one built from
    the ``weights`` file when given (for the models that take one, e.g. ``inceptionv1``).

    Raises :class:`ConfigError` naming the known models when ``name`` is not one of them.
    """
    if weights:
        return architecture(name, weights=True).load(weights)
    if name not in _LOADED:
        _LOADED[name] = architecture(name).load()
    return _LOADED[name]
