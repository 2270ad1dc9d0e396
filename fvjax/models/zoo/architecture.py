"""What the zoo knows of a network: how to build it from a params tree, its default weights, and
(for networks whose weights come from the user's files) the import table those files follow."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any

from fvjax.models.adapters import Model
from fvjax.models.weights import Entry, load_params


@dataclasses.dataclass(frozen=True)
class Architecture:
    """A network of the zoo, one value per network module (its ``ARCHITECTURE``), e.g.
    ``Architecture("resnet50", build, random_params, torchvision_table, param_shapes)``.

    ``build(params) -> Model`` wraps a params tree; ``default_params()`` is the tree a model
    gets without a weights file (the shipped weights, or random weights drawn with seed 0).
    Networks filled from the user's files also have ``table()``, the import table of their
    PyTorch-layout state dict (:mod:`fvjax.models.weights`), and ``param_shapes()``, the tree
    as ``jax.ShapeDtypeStruct`` leaves that every import is checked against (no weights drawn).
    """

    name: str
    build: Callable[[Any], Model]
    default_params: Callable[[], Any]
    table: Callable[[], Sequence[Entry]] | None = None
    param_shapes: Callable[[], Any] | None = None

    @property
    def takes_weights(self) -> bool:
        """Whether a weights file (state dict or converted weights) can fill it."""
        return self.table is not None

    def params(self, weights: str | os.PathLike | None = None) -> Any:
        """The params tree from ``weights`` (a state dict file or converted weights, for an
        architecture that :attr:`takes_weights`), or :attr:`default_params` when ``None``."""
        if weights is None:
            return self.default_params()
        return load_params(weights, self.table(), self.param_shapes())

    def load(self, weights: str | os.PathLike | None = None) -> Model:
        """The model, from ``weights`` or with its default params."""
        return self.build(self.params(weights))
