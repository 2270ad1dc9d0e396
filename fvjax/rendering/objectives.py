"""Objectives: pure, composable values that score one image's activations.

An objective is a frozen dataclass and a JAX pytree. Layer names are static (part of the tree
structure); unit indices, positions, directions and weights are array *leaves*, so one compiled
program serves any set of units of the same size, and ``jax.vmap`` maps over a batch of them.

A *batched* objective holds ``B`` members along the leading axis of its unit leaves
(``channel("block3/conv", range(128))`` has ``B = 128``); calling it on one image's activations
``{layer: (H, W, C)}`` requires first selecting a member, which :func:`fvjax.render` does with
``jax.vmap(..., in_axes=objective.vmap_axes())``.

Regularizers (:func:`total_variation`, :func:`l1`, :func:`l2`, :func:`blur`) score the picture
itself, seen as layer ``"input"``; they are positive, so subtract them:

>>> obj = channel("block3/conv", units=range(8)) - 1e-3 * total_variation()
>>> obj.batch_size
8
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from fvjax.errors import UnitRangeError
from fvjax.models.adapters import INPUT, layer_shape

Array = jax.Array
#: ``x`` or ``y`` of a neuron objective that means "the centre of the layer".
CENTRE = -1


def objective_class(cls: type) -> type:
    """Make a subclass of :class:`Objective` a frozen dataclass registered as a pytree:
    ``_static`` fields are structure, the rest leaves (how every objective here is defined)."""
    cls = dataclasses.dataclass(frozen=True)(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    meta = [f for f in fields if f in cls._static]
    data = [f for f in fields if f not in cls._static]
    return jax.tree_util.register_dataclass(cls, data_fields=data, meta_fields=meta)


class Objective:
    """Base of all objectives: ``objective(activations) -> scalar`` for one image.

    Every objective reads one ``layer`` (a :class:`Sum` of them: its first batched term's) and
    checks its own fields against the model in :meth:`validate`. Supports ``a + b``,
    ``a - b``, ``-a``, ``2.0 * a``, ``a / 2`` and :func:`total`.
    """

    _static: ClassVar[tuple[str, ...]] = ()
    _batched: ClassVar[tuple[str, ...]] = ()
    layer: str

    def __call__(self, activations: Mapping[str, Array]) -> Array:
        raise NotImplementedError

    # -- batching -------------------------------------------------------------------------
    @property
    def batch_size(self) -> int | None:
        """Number of members along the batched leaves, or ``None`` when not batched."""
        sizes = {int(np.shape(getattr(self, f))[0]) for f in self._batched}
        return sizes.pop() if sizes else None

    def vmap_axes(self) -> Objective:
        """A prefix tree for ``jax.vmap(in_axes=...)``: 0 on batched leaves, ``None`` elsewhere."""
        return self._map_leaves(lambda name, value: 0 if name in self._batched else None)

    def take(self, index: Any) -> Objective:
        """The members at ``index`` (an int array), e.g. to repeat each unit once per seed."""
        index = jnp.asarray(index)
        return self._map_leaves(
            lambda name, value: value[index] if name in self._batched else value
        )

    def _map_leaves(self, fn: Any) -> Objective:
        names = [f.name for f in dataclasses.fields(self) if f.name not in self._static]
        leaves = {name: fn(name, getattr(self, name)) for name in names}
        return dataclasses.replace(self, **leaves)

    # -- description and checks ---------------------------------------------------------------
    @property
    def layers(self) -> frozenset[str]:
        """The layers this objective reads."""
        return frozenset({self.layer})

    @property
    def label(self) -> str:
        """A static name such as ``"channel:block3/conv"`` (used to derive random keys)."""
        return f"{_kind(self)}:{self.layer}"

    def unit_ids(self) -> np.ndarray:
        """``(B,)`` integer id of each member, ``(1,)`` when not batched: its position here;
        objectives over units (:class:`Channel`, :class:`Neuron`) give the unit index."""
        return np.arange(self.batch_size or 1)

    def validate(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        """Check the layer (and, in subclasses, units, positions, widths) against ``{layer:
        shape}`` on the host: under jit JAX clamps out-of-range indices silently."""
        layer_shape(shapes, self.layer)

    # -- algebra --------------------------------------------------------------------------------
    def __add__(self, other: Objective) -> Objective:
        if not isinstance(other, Objective):
            return NotImplemented
        return total([self, other])

    def __sub__(self, other: Objective) -> Objective:
        if not isinstance(other, Objective):
            return NotImplemented
        return total([self, other], weights=[1.0, -1.0])

    def __mul__(self, scalar: Any) -> Objective:
        if isinstance(scalar, Objective):
            raise TypeError("objectives can be multiplied by numbers, not by each other")
        return total([self], weights=[scalar])

    __rmul__ = __mul__

    def __truediv__(self, scalar: Any) -> Objective:
        return self * (1.0 / scalar)

    def __neg__(self) -> Objective:
        return self * -1.0


def _kind(objective: Objective) -> str:
    return type(objective).__name__.lower()


def _unit_array(units: int | Iterable[int]) -> Array:
    array = np.asarray(list(units) if not isinstance(units, int | np.integer) else [units])
    if array.ndim != 1 or array.size == 0 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"units must be a non-empty sequence of integers, got {units!r}")
    return jnp.asarray(array, jnp.int32)


def _positions(value: int | Sequence[int] | None, n: int, what: str) -> Array:
    array = np.broadcast_to(np.asarray(CENTRE if value is None else value), (n,))
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{what} must be integers, got {value!r}")
    return jnp.asarray(array, jnp.int32)


def _check_units(layer: str, units: Any, shape: tuple[int, ...]) -> None:
    size = shape[-1]
    units = np.asarray(units)
    bad = units[(units < 0) | (units >= size)]
    if bad.size:
        raise UnitRangeError(
            f"unit {int(bad[0])} is out of range for layer {layer!r}, which has {size} "
            f"channels (valid units: 0..{size - 1}); {bad.size} bad unit(s) in all"
        )


def _check_position(layer: str, shape: tuple[int, ...], xs: Any, ys: Any) -> None:
    if len(shape) != 3:
        return  # dense layer: no position
    height, width = shape[0], shape[1]
    for axis, values, limit in (("x", xs, width), ("y", ys, height)):
        values = np.asarray(values)
        bad = values[(values != CENTRE) & ((values < 0) | (values >= limit))]
        if bad.size:
            raise UnitRangeError(
                f"neuron {axis}={int(bad[0])} is outside layer {layer!r}, whose activations are "
                f"{height}x{width} (valid {axis}: 0..{limit - 1}, or None for the centre)"
            )


def _checked_position(objective: Neuron | NeuronDirection, shapes: Mapping) -> tuple[int, ...]:
    """The shape of ``objective``'s layer, its positions checked against it."""
    shape = layer_shape(shapes, objective.layer)
    _check_position(objective.layer, shape, objective.x, objective.y)
    return shape


def _at(act: Array, x: Array, y: Array) -> Array:
    """The ``(C,)`` vector at ``(y, x)`` of an ``(H, W, C)`` map (centre where ``-1``)."""
    if act.ndim == 1:
        return act
    x = jnp.where(x == CENTRE, act.shape[1] // 2, x)
    y = jnp.where(y == CENTRE, act.shape[0] // 2, y)
    row = _pick(jnp.moveaxis(act, 0, -1), y)  # (W, C): selects, not gathers (see _pick)
    return _pick(jnp.moveaxis(row, 0, -1), x)


def _pick(values: Array, index: Array) -> Array:
    """``values[..., index]`` as a select, exact: a gather's gradient is a scatter-add, whose
    additions GPUs order differently each run (:mod:`fvjax.rendering.determinism`)."""
    chosen = jnp.arange(values.shape[-1]) == jnp.asarray(index)[..., None]
    return jnp.where(chosen, values, 0.0).sum(-1)


def _spatial_mean(act: Array) -> Array:
    return act.reshape(-1, act.shape[-1]).mean(axis=0)


@objective_class
class Channel(Objective):
    """Mean activation of channel ``units`` over all positions."""

    layer: str
    units: Array
    _static = ("layer",)
    _batched = ("units",)

    def __call__(self, activations: Mapping[str, Array]) -> Array:
        return _pick(_spatial_mean(activations[self.layer]), self.units)

    def unit_ids(self) -> np.ndarray:
        return np.asarray(self.units)

    def validate(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        _check_units(self.layer, self.units, layer_shape(shapes, self.layer))


@objective_class
class Neuron(Objective):
    """Activation of channel ``units`` at one position ``(y, x)``, or of a dense unit."""

    layer: str
    units: Array
    x: Array
    y: Array
    _static = ("layer",)
    _batched = ("units", "x", "y")

    def __call__(self, activations: Mapping[str, Array]) -> Array:
        return _pick(_at(activations[self.layer], self.x, self.y), self.units)

    def unit_ids(self) -> np.ndarray:
        return np.asarray(self.units)

    def validate(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        _check_units(self.layer, self.units, _checked_position(self, shapes))


@objective_class
class Direction(Objective):
    """Mean over positions of the dot product of the activation vector with ``vectors``."""

    layer: str
    vectors: Array
    _static = ("layer",)
    _batched = ("vectors",)

    def __call__(self, activations: Mapping[str, Array]) -> Array:
        return jnp.dot(_spatial_mean(activations[self.layer]), self.vectors)

    def validate(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        _check_width(self.layer, self.vectors, layer_shape(shapes, self.layer))


@objective_class
class NeuronDirection(Objective):
    """Dot product of the activation vector at ``(y, x)`` with ``vectors``."""

    layer: str
    vectors: Array
    x: Array
    y: Array
    _static = ("layer",)
    _batched = ("vectors", "x", "y")

    def __call__(self, activations: Mapping[str, Array]) -> Array:
        return jnp.dot(_at(activations[self.layer], self.x, self.y), self.vectors)

    def validate(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        _check_width(self.layer, self.vectors, _checked_position(self, shapes))


def _check_width(layer: str, vectors: Array, shape: tuple[int, ...]) -> None:
    if vectors.shape[-1] != shape[-1]:
        raise ValueError(
            f"direction vectors have {vectors.shape[-1]} entries but layer {layer!r} has "
            f"{shape[-1]} channels"
        )


@objective_class
class LayerEnergy(Objective):
    """Mean squared activation of a whole layer (DeepDream)."""

    layer: str
    _static = ("layer",)

    def __call__(self, activations: Mapping[str, Array]) -> Array:
        return jnp.mean(activations[self.layer] ** 2)


@objective_class
class TotalVariation(Objective):
    """Mean absolute difference between neighbouring pixels of the picture."""

    layer: str = INPUT
    _static = ("layer",)

    def __call__(self, activations: Mapping[str, Array]) -> Array:
        image = activations[self.layer]
        dy = jnp.abs(image[1:] - image[:-1]).mean()
        dx = jnp.abs(image[:, 1:] - image[:, :-1]).mean()
        return dx + dy


@objective_class
class Norm(Objective):
    """Mean ``|picture - constant| ** power`` (L1 for power 1, squared L2 for power 2)."""

    power: Array
    constant: Array
    layer: str = INPUT
    _static = ("layer",)

    def __call__(self, activations: Mapping[str, Array]) -> Array:
        return jnp.mean(jnp.abs(activations[self.layer] - self.constant) ** self.power)


@objective_class
class Blur(Objective):
    """Mean squared distance of the picture to its own blur (penalises high frequencies)."""

    layer: str = INPUT
    _static = ("layer",)

    def __call__(self, activations: Mapping[str, Array]) -> Array:
        image = activations[self.layer]
        kernel = jnp.array([0.25, 0.5, 0.25], image.dtype)
        padded = jnp.pad(image, ((1, 1), (1, 1), (0, 0)), mode="edge")
        blurred = sum(k * padded[i : i + image.shape[0]] for i, k in enumerate(kernel))
        blurred = sum(k * blurred[:, i : i + image.shape[1]] for i, k in enumerate(kernel))
        return jnp.mean((image - jax.lax.stop_gradient(blurred)) ** 2)


@objective_class
class Sum(Objective):
    """A weighted sum of objectives; weights are leaves, so changing them does not retrace."""

    terms: tuple[Objective, ...]
    weights: Array

    def __call__(self, activations: Mapping[str, Array]) -> Array:
        values = jnp.stack([term(activations) for term in self.terms])
        return jnp.dot(self.weights, values)

    @property
    def batch_size(self) -> int | None:
        sizes = {t.batch_size for t in self.terms} - {None}
        return sizes.pop() if sizes else None

    def vmap_axes(self) -> Objective:
        return Sum(terms=tuple(t.vmap_axes() for t in self.terms), weights=None)

    def take(self, index: Any) -> Objective:
        return Sum(terms=tuple(t.take(index) for t in self.terms), weights=self.weights)

    @property
    def layers(self) -> frozenset[str]:
        return frozenset().union(*(t.layers for t in self.terms))

    @property
    def label(self) -> str:
        return "sum(" + ",".join(t.label for t in self.terms) + ")"

    @property
    def layer(self) -> str:
        """The layer of the first batched term (what a gallery files the result under)."""
        return self._lead.layer

    @property
    def _lead(self) -> Objective:
        """The first batched term (the first term when none is batched)."""
        return next((t for t in self.terms if t.batch_size is not None), self.terms[0])

    def unit_ids(self) -> np.ndarray:
        return self._lead.unit_ids() if self._lead.batch_size is not None else np.arange(1)

    def validate(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        for term in self.terms:
            term.validate(shapes)


def total(objectives: Iterable[Objective], weights: Iterable[float] | None = None) -> Sum:
    """``sum(w_i * objective_i)``, flattening nested sums so each weight multiplies only its term.

    >>> obj = total([channel("a", [0, 1]), channel("b", [2, 3])], weights=[1.0, 0.5])
    >>> obj.weights.tolist()
    [1.0, 0.5]
    """
    objectives = list(objectives)
    weights = [1.0] * len(objectives) if weights is None else list(weights)
    if len(weights) != len(objectives):
        raise ValueError(f"{len(objectives)} objectives but {len(weights)} weights")
    terms: list[Objective] = []
    flat: list[Any] = []
    for objective, weight in zip(objectives, weights, strict=True):
        if isinstance(objective, Sum):
            terms.extend(objective.terms)
            flat.extend(weight * w for w in objective.weights)
        else:
            terms.append(objective)
            flat.append(weight)
    sizes = {t.batch_size for t in terms} - {None}
    if len(sizes) > 1:
        raise ValueError(
            f"cannot combine objectives with different numbers of units: {sorted(sizes)}"
        )
    return Sum(terms=tuple(terms), weights=jnp.asarray(jnp.stack(flat), jnp.float32))


# -- constructors --------------------------------------------------------------------------------


def channel(layer: str, units: int | Iterable[int]) -> Channel:
    """Mean activation of each channel in ``units`` of ``layer``.

    >>> channel("block3/conv", units=range(128)).batch_size
    128
    """
    return Channel(layer=layer, units=_unit_array(units))


def neuron(
    layer: str,
    units: int | Iterable[int],
    x: int | Sequence[int] | None = None,
    y: int | Sequence[int] | None = None,
) -> Neuron:
    """Activation of each unit at position ``(y, x)`` (the centre by default); on a dense
    layer, the unit's activation.

    >>> neuron("block2/conv", units=[3, 4], x=5, y=2).x.tolist()
    [5, 5]
    """
    units = _unit_array(units)
    n = units.shape[0]
    return Neuron(layer=layer, units=units, x=_positions(x, n, "x"), y=_positions(y, n, "y"))


def class_logit(units: int | Iterable[int], layer: str = "logits") -> Neuron:
    """The logit of each class in ``units`` (a neuron objective on the logits layer).

    >>> class_logit([0, 5]).layer
    'logits'
    """
    return neuron(layer, units)


def _vectors(vectors: Any) -> Array:
    array = jnp.asarray(vectors, jnp.float32)
    return array[None] if array.ndim == 1 else array


def direction(layer: str, vectors: Any) -> Direction:
    """Mean over positions of ``activation . vector``; ``vectors`` is ``(C,)`` or ``(B, C)``.

    >>> direction("block3", jnp.ones((4, 64))).batch_size
    4
    """
    return Direction(layer=layer, vectors=_vectors(vectors))


def neuron_direction(
    layer: str,
    vectors: Any,
    x: int | Sequence[int] | None = None,
    y: int | Sequence[int] | None = None,
) -> NeuronDirection:
    """``activation[y, x] . vector`` for each vector (the centre by default).

    >>> neuron_direction("block3", jnp.ones(64)).batch_size
    1
    """
    vectors = _vectors(vectors)
    n = vectors.shape[0]
    return NeuronDirection(
        layer=layer, vectors=vectors, x=_positions(x, n, "x"), y=_positions(y, n, "y")
    )


def layer(name: str) -> LayerEnergy:
    """DeepDream: mean squared activation of layer ``name``.

    >>> layer("block2").layers
    frozenset({'block2'})
    """
    return LayerEnergy(layer=name)


def total_variation() -> TotalVariation:
    """Total variation of the picture (subtract it to smooth).

    >>> (channel("c", [0]) - 0.1 * total_variation()).batch_size
    1
    """
    return TotalVariation()


def l1(constant: float = 0.5) -> Norm:
    """Mean ``|picture - constant|``.

    >>> float(l1()({"input": jnp.ones((2, 2, 3))}))
    0.5
    """
    return Norm(power=jnp.float32(1.0), constant=jnp.float32(constant))


def l2(constant: float = 0.5) -> Norm:
    """Mean ``(picture - constant) ** 2``.

    >>> float(l2()({"input": jnp.ones((2, 2, 3))}))
    0.25
    """
    return Norm(power=jnp.float32(2.0), constant=jnp.float32(constant))


def blur() -> Blur:
    """Mean squared distance of the picture to its blur, gradient through the picture only.

    >>> float(blur()({"input": jnp.ones((4, 4, 3))}))
    0.0
    """
    return Blur()


def stable_hash(text: str) -> int:
    """A 31-bit hash of ``text`` that is the same in every process (unlike ``hash``)."""
    return zlib.crc32(text.encode()) & 0x7FFFFFFF


#: The objectives a whole layer is rendered with, one per unit (config key ``objective``,
#: :func:`fvjax.render_layer`'s ``kind``).
LAYER_OBJECTIVES = {"channel": channel, "neuron": neuron}
