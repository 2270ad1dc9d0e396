"""Model adapters: anything that maps images to a dict of named activations.

A :class:`Model` is ``apply(params, images) -> {layer: activations}`` plus its ``params``.
Images are NHWC RGB in ``[0, 1]``; preprocessing (mean/std, input range) lives inside ``apply``
so pictures are always plain RGB. ``params`` travel as a jit *argument* (weights captured as
constants make XLA fold the backward pass at compile time, 20-50x slower to compile).

Flax stays behind this one module (the zoo's networks are written in Flax; fvjax's code reads
them only through these adapters): :func:`from_linen` reads every submodule's output with
``capture_intermediates``, :func:`from_nnx` with ``nnx.capture(method_outputs=...)``; both
address layers by module path (``"block3/conv"``), the model's code untouched.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fvjax.data.images import as_size
from fvjax.errors import FvjaxError, ImageSizeError, ModelOutputError, unknown_layer

Array = jax.Array
Activations = dict[str, Array]

#: The name under which objectives see the picture itself, ``(H, W, 3)`` in [0, 1].
INPUT = "input"


@dataclasses.dataclass(frozen=True, eq=False)
class Model:
    """A model fvjax can render: ``apply(params, images (B, H, W, 3)) -> {layer: (B, ...)}``.

    Compared and hashed by identity, so a jitted program keyed on ``apply`` compiles once.

    >>> model = from_fn(lambda x: {"mean": x.mean(axis=(1, 2))})
    >>> model.layer_shapes(8)
    {'mean': (3,)}
    """

    apply: Callable[[Any, Array], Activations]
    params: Any = None
    name: str = "model"
    #: Optional names of a layer's units, e.g. ``{"logits": ("red", "green", ...)}``.
    unit_names: Mapping[str, Sequence[str]] = dataclasses.field(default_factory=dict)
    #: ``apply`` with each block of the network rematerialized (``jax.checkpoint``; the same
    #: params, the same activations): what ``render(..., remat="blocks")`` runs. ``None``: the
    #: model has no blocks to rematerialize.
    remat_apply: Callable[[Any, Array], Activations] | None = None

    def unit_name(self, layer: str, unit: int) -> str | None:
        """The name of ``unit`` of ``layer``, when the model names it."""
        names = self.unit_names.get(layer)
        return str(names[unit]) if names is not None and 0 <= unit < len(names) else None

    def activations(self, images: Array) -> Activations:
        """All named activations for a batch of images ``(B, H, W, 3)`` in [0, 1]."""
        return self.apply(self.params, jnp.asarray(images, jnp.float32))

    def layer_shapes(self, size: int | tuple[int, int]) -> dict[str, tuple[int, ...]]:
        """``{layer: shape of one image's activations}`` for images of ``size``, no compute.

        Raises :class:`ImageSizeError` when the model cannot take images that small.
        """
        height, width = as_size(size)
        images = jax.ShapeDtypeStruct((1, height, width, 3), jnp.float32)
        try:
            shapes = jax.eval_shape(self.apply, self.params, images)
        except FvjaxError:
            raise
        except (TypeError, ValueError) as exc:
            raise ImageSizeError(
                f"model {self.name!r} cannot take {height}x{width} images: {exc}"
            ) from exc
        if not isinstance(shapes, Mapping):
            raise ModelOutputError(
                f"model {self.name!r} must return a dict of named activations, "
                f"got {type(shapes).__name__}"
            )
        result = {name: tuple(s.shape[1:]) for name, s in sorted(shapes.items())}
        empty = [name for name, shape in result.items() if 0 in shape]
        if empty:
            raise ImageSizeError(
                f"{height}x{width} images are too small for model {self.name!r}: "
                f"layers {', '.join(empty)} come out empty; use a larger size"
            )
        return result

    def check_layer(self, layer: str, size: int | tuple[int, int]) -> tuple[int, ...]:
        """The shape of ``layer`` at ``size``; a clear error naming the known layers if absent."""
        return layer_shape(self.layer_shapes(size), layer)


@functools.partial(jax.jit, static_argnums=(0, 1))
def selected_activations(apply: Any, layers: tuple[str, ...], params: Any, images: Array) -> dict:
    """``{layer: (B, ...)}`` of ``apply(params, images)``, only ``layers``: one compiled
    program per ``(apply, layers)``, the weights an argument (what the dataset pass and the
    natural images' maps read).

    >>> model = from_fn(lambda x: {"rgb": x, "mean": x.mean(axis=(1, 2))})
    >>> sorted(selected_activations(model.apply, ("mean",), model.params, jnp.zeros((2, 4, 4, 3))))
    ['mean']
    """
    activations = apply(params, images)
    return {name: activations[name] for name in layers}


def layer_shape(shapes: Mapping[str, tuple[int, ...]], layer: str) -> tuple[int, ...]:
    """``shapes[layer]``, or the unknown-layer error naming the nearest and all known layers:
    the one place a layer name is checked.

    >>> layer_shape({"block3/conv": (8, 8, 64)}, "block3/conv")
    (8, 8, 64)
    """
    if layer not in shapes:
        raise unknown_layer(layer, shapes)
    return tuple(shapes[layer])


#: torchvision's ImageNet statistics of RGB in [0, 1]: ``normalize(IMAGENET_MEAN, IMAGENET_STD)``.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(mean: Any, std: Any, scale: float = 1.0) -> Callable[[Array], Array]:
    """Preprocessing ``(scale * images - mean) / std`` for a model trained on such inputs.

    >>> pre = normalize(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    >>> float(pre(jnp.ones((1, 2, 2, 3)))[0, 0, 0, 0])
    1.0
    """
    mean = np.asarray(mean, np.float32)
    std = np.asarray(std, np.float32)

    def preprocess(images: Array) -> Array:
        # In the images' dtype: float32 statistics would promote a bfloat16 model to float32.
        return (scale * images - mean.astype(images.dtype)) / std.astype(images.dtype)

    return preprocess


def _identity(images: Array) -> Array:
    return images


# Kept for the life of the process, as jit's own cache keeps the programs compiled for them.
_FN_APPLY: dict[Callable, dict[tuple[bool, str], Callable]] = {}


def _fn_apply(fn: Callable, with_params: bool, name: str) -> Callable[[Any, Array], Activations]:
    """The ``apply`` wrapping ``fn``: one per (fn, with_params, name), so models made from the
    same function share their compiled programs."""
    cache = _FN_APPLY.setdefault(fn, {})
    if (with_params, name) not in cache:

        def apply(params: Any, images: Array) -> Activations:
            out = fn(params, images) if with_params else fn(images)
            if not isinstance(out, Mapping):
                raise ModelOutputError(
                    f"model {name!r} must return a dict of named activations, "
                    f"got {type(out).__name__}"
                )
            return dict(out)

        cache[(with_params, name)] = apply
    return cache[(with_params, name)]


def from_fn(
    fn: Callable[..., Mapping[str, Array]],
    params: Any = None,
    name: str = "fn",
    remat_fn: Callable[..., Mapping[str, Array]] | None = None,
) -> Model:
    """A model from a plain function: ``fn(images)``, or ``fn(params, images)`` when ``params``
    is given (pass weights that way: they then stay arguments of the jitted program).
    ``remat_fn``: the same function with its blocks wrapped in ``jax.checkpoint``, for
    ``render(..., remat="blocks")``.

    >>> model = from_fn(lambda w, x: {"proj": x @ w}, params=jnp.ones((3, 2)))
    >>> model.layer_shapes(4)
    {'proj': (4, 4, 2)}
    """

    with_params = params is not None
    remat_apply = None if remat_fn is None else _fn_apply(remat_fn, with_params, name)
    return Model(_fn_apply(fn, with_params, name), params, name, remat_apply=remat_apply)


def _flatten_captured(tree: Mapping, prefix: tuple[str, ...] = ()) -> Activations:
    """Flatten captured intermediates to ``{"a/b/c": array}``.

    A module's output is stored under ``__call__`` as a tuple with one entry per call; a module
    called more than once gets ``#i`` suffixes. Non-array outputs (tuples, dicts) are skipped.
    """
    out: Activations = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(_flatten_captured(value, (*prefix, str(key))))
            continue
        path = prefix if key == "__call__" else (*prefix, str(key))
        values = value if isinstance(value, tuple) else (value,)
        arrays = [v for v in values if isinstance(v, jax.Array | np.ndarray)]
        name = "/".join(path) or "output"
        if len(arrays) == 1:
            out[name] = arrays[0]
        else:
            out.update({f"{name}#{i}": a for i, a in enumerate(arrays)})
    return out


def from_linen(
    module: Any,
    variables: Any,
    preprocess: Callable[[Array], Array] | None = None,
    name: str | None = None,
    remat_module: Any = None,
    **apply_kwargs: Any,
) -> Model:
    """A model from a Flax linen module and its variables, without touching its code.

    Every submodule's output becomes a layer named by its module path (``"block3/conv"``), and
    values the module ``sow``s into ``"intermediates"`` are layers too. The whole model's output
    is ``"output"``. ``apply_kwargs`` go to ``module.apply`` (e.g. ``train=False``).
    ``remat_module``: the same network with its blocks wrapped in ``nn.remat`` (same variables,
    same module paths), for ``render(..., remat="blocks")``.

    >>> import flax.linen as nn
    >>> module = nn.Sequential([nn.Conv(4, (3, 3)), nn.relu, nn.Conv(2, (3, 3))])
    >>> variables = module.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    >>> sorted(from_linen(module, variables).layer_shapes(8))
    ['layers_0', 'layers_2', 'output']
    """
    preprocess = preprocess or _identity

    def applying(network: Any) -> Callable[[Any, Array], Activations]:
        # Capturing inside a rematerialized block costs nothing: outputs no objective reads are
        # dropped before autodiff decides what to keep for the backward pass.
        def apply(variables: Any, images: Array) -> Activations:
            _, state = network.apply(
                variables,
                preprocess(images),
                capture_intermediates=True,
                mutable=["intermediates"],
                **apply_kwargs,
            )
            return _flatten_captured(state["intermediates"])

        return apply

    remat_apply = None if remat_module is None else applying(remat_module)
    return Model(
        applying(module), variables, name or type(module).__name__, remat_apply=remat_apply
    )


def from_nnx(
    module: Any,
    preprocess: Callable[[Array], Array] | None = None,
    name: str | None = None,
) -> Model:
    """A model from a Flax nnx module, without touching its code.

    Each submodule's ``__call__`` output becomes a layer named by its attribute path
    (``"layers/0/conv"``); the module's own output is ``"output"``. The module is split into a
    static graph and a state that is passed to the jitted program as its params.

    >>> from flax import nnx
    >>> module = nnx.Conv(3, 4, (3, 3), rngs=nnx.Rngs(0))
    >>> from_nnx(module).layer_shapes(8)
    {'output': (8, 8, 4)}
    """
    from flax import nnx

    preprocess = preprocess or _identity
    graphdef, state = nnx.split(module)

    def apply(state: Any, images: Array) -> Activations:
        model = nnx.merge(graphdef, state)
        capture = nnx.capture(model, nnx.Intermediate, method_outputs=nnx.Intermediate)
        _, intermediates = capture(preprocess(images))
        nested: dict = {}
        for path, variable in intermediates.flat_state():
            node = nested
            for part in path[:-1]:
                node = node.setdefault(str(part), {})
            node[str(path[-1])] = variable.get_value()
        return _flatten_captured(nested)

    return Model(apply=apply, params=state, name=name or type(module).__name__)


def describe_layers(model: Model, size: int | tuple[int, int]) -> str:
    """A table of the model's layers and activation shapes at ``size``, one line each."""
    shapes = model.layer_shapes(size)
    width = max(len(name) for name in shapes)
    return "\n".join(f"{name:<{width}}  {shape}" for name, shape in shapes.items())
