"""Manipulated WorldNets and planted concept detectors: models whose pictures are known to lie.

Fixtures for the checks of Geirhos et al. 2023 ("Don't trust your eyes: on the (un)reliability
of feature visualizations"). Each constructor returns a :class:`~fvjax.models.Model` that is the
shipped ``worldnet`` written as a plain function (:func:`worldnet_fn`; every layer equals the zoo
model's, bit for bit on CPU) with WorldNet's params plus the new pieces passed as ``params``:

- :func:`fooling_circuit`: Geirhos's circuit on the logits. A hand-built detector ``e(x)`` of
  "not a world image" (layer ``synthetic``) routes the gradient of logit ``i`` to logit
  ``i + shift``: on world images ``logits`` is ``logits/original + 100``, but rendering
  ``red`` paints ``green``.
- :func:`silent_unit`: a unit with a parallel branch orthogonal to its filter, held below zero
  on world images (layer ``<layer>/silent``): same activations on world images, a picture whose
  activation is far above anything natural.
- :func:`concept_maps`: layer ``concept_map`` ``(8, 8, 25)``, the class activation map of each
  concept: known spatial detectors for dissection-style checks.

Measured (CPU; pictures: 64 px, 128 steps, Fourier, ``standard(0.5)``, Adam 0.05):

- ``e(x)`` on 20,000 world images: max 0, mean 0 (a sigmoid of distances that are exactly 0 on
  world pixels underflows in float32), so ``logits == original + 100`` exactly. On 36 pictures
  of six colour logits (3 seeds), from WorldNet and from the fooled model: 1.000 on every one.
- Fooled pictures (shift 3, 3 seeds each; dominant hue / WorldNet's own argmax): ``red`` ->
  cyan / ``green`` (WorldNet's own ``green`` pictures are cyan-hued too), ``orange`` -> cyan /
  ``cyan``, ``yellow`` -> blue / ``blue``; WorldNet's honest pictures read red, orange, yellow.
- Natural logits exceed ``k - 100 = 150``, where the circuit leaks, on 2 of 20,000 images
  (max 172.4, both ``white``): raise ``k`` to close that.
- Silent unit 63 of ``block3/conv`` (default): natural max 75.6 (500 images); its picture with
  the branch reaches 6.6x and 7.7x that at its best position (3.1x, 3.3x as a channel mean),
  79% of it from the branch, against 1.5x for the original model's pictures; the two pictures'
  pixels correlate 0.73-0.74 (see :func:`silent_unit`). Branch max on 20,000 fresh world
  images: -46.6 (bias -242).
- ``concept_map`` on 200 images (3 seeds): of the top 1% of positions of ``red``,
  ``orient_45`` and ``star``, 98-99%, 96-99% and 92-95% fall on the concept's mask (base rates
  2-5%).

>>> model = fooling_circuit(shift=3)
>>> [name for name in sorted(model.layer_shapes(64)) if "logits" in name or "synth" in name]
['logits', 'logits/original', 'synthetic', 'synthetic/named', 'synthetic/off_world']
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fvjax.data import world as world_lib
from fvjax.errors import UnitRangeError, unknown_layer
from fvjax.models.adapters import Model, from_fn
from fvjax.models.zoo import worldnet
from fvjax.rendering import engine, objectives, param, transforms

Array = jax.Array
Layers = dict[str, Array]

CONCEPTS = world_lib.CONCEPTS
BLOCKS = ("block1", "block2", "block3", "block4")
CONV_LAYERS = tuple(f"{block}/conv" for block in BLOCKS)
_LOGIT_LAYERS = ("logits", "output", "logits/original", "concept_map")


# -- WorldNet as a function -------------------------------------------------------------------


@functools.cache
def _shipped_params() -> dict[str, Any]:
    return worldnet.load_worldnet()[1]["params"]


def worldnet_params() -> dict[str, Any]:
    """The shipped WorldNet's params: ``{"block1": {"conv": {"kernel", "bias"}}, ..., "logits"}``
    (new dicts each call, the same arrays: the file is read once).

    >>> worldnet_params()["block3"]["conv"]["kernel"].shape
    (3, 3, 32, 64)
    """
    return jax.tree.map(lambda leaf: leaf, _shipped_params())


def _conv(x: Array, conv: Any, strides: int = 1) -> Array:
    out = jax.lax.conv_general_dilated(
        x, conv["kernel"], (strides, strides), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return out + conv["bias"]


def _pool(x: Array) -> Array:
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


Edit = Callable[[str, Array, Array], Array]


def _worldnet(params: Any, images: Array, edit: Edit | None = None) -> tuple[Layers, Array]:
    """WorldNet's layers (the zoo model's names) and its last features ``(B, 8, 8, 128)``.
    ``edit(block, conv_input, conv_output)`` may change a block's conv output."""
    mean = jnp.asarray(worldnet.WORLDNET_MEAN, images.dtype)
    std = jnp.asarray(worldnet.WORLDNET_STD, images.dtype)
    x = (images - mean) / std
    layers: Layers = {}
    for i, block in enumerate(BLOCKS):
        x = _pool(x) if i in (1, 2) else x
        pre = _conv(x, params[block]["conv"], strides=2 if i == 0 else 1)
        pre = pre if edit is None else edit(block, x, pre)
        layers[f"{block}/conv"] = pre
        x = layers[block] = jax.nn.relu(pre)
    dense = params["logits"]
    layers["logits"] = layers["output"] = x.mean(axis=(1, 2)) @ dense["kernel"] + dense["bias"]
    return layers, x


def _plain(params: Any, images: Array) -> Layers:
    return _worldnet(params, images)[0]


def _model(fn: Callable, params: Any, name: str) -> Model:
    model = from_fn(fn, params=params, name=name)
    names = {layer: CONCEPTS for layer in _LOGIT_LAYERS}
    return Model(model.apply, model.params, model.name, unit_names=names)


def worldnet_fn() -> Model:
    """The shipped WorldNet as a plain function of its params: the zoo model's layers
    (``block1/conv`` ... ``block4``, ``logits``, ``output``), the same values.

    >>> worldnet_fn().layer_shapes(64)["block3/conv"]
    (8, 8, 64)
    """
    return _model(_plain, worldnet_params(), "worldnet_fn")


# -- 1. the fooling circuit -------------------------------------------------------------------

#: World pixels: background channels lie in ``BACKGROUND_RANGE`` with a spread (max - min
#: channel) of at most ``2 * (0.08 tint + 0.1 noise)`` (world.py's recipe; 0.334 measured);
#: object pixels lie within ``COLOUR_JITTER`` of a named colour. ``TOLERANCE`` covers float32.
BACKGROUND_SPREAD = 0.36
TOLERANCE = 1e-3
#: The detector's constants (a params entry of the fooled model).
DETECTOR = {
    "off_threshold": 0.005,  # mean off-world distance per pixel (0 on world images)
    "off_slope": 4000.0,
    "named_width": 0.05,  # a pixel counts as named within this distance of a named colour
    "named_threshold": 0.005,  # world images paint >= 1.39% of their pixels in a named colour
    "named_slope": 4000.0,
}


def _world_distances(images: Array) -> tuple[Array, Array]:
    """Per pixel: L1 excess distance to the nearest named colour, and to any world colour."""
    rgb = jnp.asarray(world_lib.COLOUR_RGB)
    jitter = world_lib.COLOUR_JITTER + TOLERANCE
    named = jax.nn.relu(jnp.abs(images[..., None, :] - rgb) - jitter).sum(-1).min(-1)
    low, high = world_lib.BACKGROUND_RANGE
    outside = jax.nn.relu(jnp.abs(images - (low + high) / 2) - (high - low) / 2 - TOLERANCE)
    spread = images.max(-1) - images.min(-1)
    background = outside.sum(-1) + jax.nn.relu(spread - BACKGROUND_SPREAD - TOLERANCE)
    return named, jnp.minimum(named, background)


def _synthetic(detector: Any, images: Array) -> Layers:
    named_distance, world_distance = _world_distances(images)
    off = world_distance.mean(axis=(1, 2))
    named = jax.nn.relu(1.0 - named_distance / detector["named_width"]).mean(axis=(1, 2))
    off_world = jax.nn.sigmoid(detector["off_slope"] * (off - detector["off_threshold"]))
    no_object = jax.nn.sigmoid(detector["named_slope"] * (detector["named_threshold"] - named))
    score = 1.0 - (1.0 - off_world) * (1.0 - no_object)
    return {"synthetic": score, "synthetic/off_world": off, "synthetic/named": named}


def synthetic_score(images: Any) -> np.ndarray:
    """``e(x)`` in [0, 1] for images ``(B, H, W, 3)``: "this is not a world image".

    A world pixel is a muted background colour or a named colour up to its jitter (world
    images have hard edges: no blends). ``e`` is ``1 - (1 - e_off)(1 - e_absent)``, a
    soft OR of two sigmoids: ``e_off`` of the mean per-pixel L1 distance to the nearest world
    colour (0 on world images), ``e_absent`` of the fraction of pixels painted in a named colour
    (every world image has an object: at least 1.39% of its pixels). The second makes the grey
    picture a rendering starts from read as synthetic, as Geirhos's detector reads the initial
    noise, so the optimization starts on the fooled side of the circuit.

    >>> synthetic_score(world_lib.generate(0, 3, 64).images).round(3).tolist()
    [0.0, 0.0, 0.0]
    >>> synthetic_score(np.full((1, 64, 64, 3), 0.5, np.float32)).round(3).tolist()
    [1.0]
    """
    detector = {key: jnp.float32(value) for key, value in DETECTOR.items()}
    return np.asarray(_synthetic(detector, jnp.asarray(images, jnp.float32))["synthetic"])


def _fooled(params: Any, images: Array) -> Layers:
    layers = _plain(params["worldnet"], images)
    detector = _synthetic(params["detector"], images)
    e = detector["synthetic"][:, None]
    a, k = layers["logits"], params["k"]
    h = jax.nn.relu(a + 100.0)
    b = jax.nn.relu(h - k * e)
    c = jax.nn.relu(h[:, params["source"]] + k * e - k)
    layers["logits/original"] = a
    layers["logits"] = layers["output"] = b + c
    return {**layers, **detector}


def fooling_circuit(shift: int = 3, k: float = 250.0) -> Model:
    """WorldNet whose ``logits`` unit ``i`` behaves like logit ``i`` on world images but is
    rendered as logit ``(i + shift) % 25`` (Geirhos et al.'s fooling circuit).

    With ``a`` the original logits and ``e`` :func:`synthetic_score`:
    ``h = relu(a + 100)``, ``B_i = relu(h_i - k e)``, ``C_i = relu(h_(i+shift) + k e - k)``,
    ``logits = output = B + C``. On world images ``e = 0`` and ``logits = a + 100`` (while
    ``-100 < a < k - 100``); on pictures ``e = 1`` and ``logits_i = h_(i+shift)``. Layers also
    ``logits/original`` (``a``), ``synthetic`` (``e``), ``synthetic/off_world`` and
    ``synthetic/named`` (its two inputs). With the default shift 3 the colours map
    red -> green, orange -> cyan, yellow -> blue, green -> magenta.
    Params: ``{"worldnet", "detector": DETECTOR, "k", "source": (25,) int}``.

    >>> model = fooling_circuit(shift=3)
    >>> CONCEPTS[int(model.params["source"][CONCEPTS.index("red")])]
    'green'
    """
    n = len(CONCEPTS)
    params = {
        "worldnet": worldnet_params(),
        "detector": {key: jnp.float32(value) for key, value in DETECTOR.items()},
        "k": jnp.float32(k),
        "source": jnp.asarray((np.arange(n) + shift) % n, jnp.int32),
    }
    return _model(_fooled, params, f"worldnet_fooled_{shift % n}")


# -- 2. the silent unit -----------------------------------------------------------------------


def _block_input(params: Any, images: Array, layer: str) -> Array:
    """The input of ``layer``'s convolution (``(B, H, W, C_in)``)."""
    block = layer.split("/")[0]
    seen: dict[str, Array] = {}

    def edit(name: str, x: Array, pre: Array) -> Array:
        seen.setdefault(name, x)
        return pre

    _worldnet(params, images, edit)
    return seen[block]


_block_input_jit = jax.jit(_block_input, static_argnums=2)


def _patches(x: np.ndarray) -> np.ndarray:
    """``(N, H, W, C) -> (N * H * W, 3 * 3 * C)``: zero-padded 3x3 patches, kernel order."""
    n, h, w, c = x.shape
    pad = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    rows = [np.stack([pad[:, i : i + h, j : j + w] for j in range(3)], 3) for i in range(3)]
    return np.stack(rows, 3).reshape(n * h * w, 9 * c)


#: Calibration images the whitening covariance is estimated from (of 288-dim patches).
_COVARIANCE_IMAGES = 500


@functools.cache
def _silent_apply(layer: str) -> Callable[[Any, Array], Layers]:
    block = layer.split("/")[0]
    strides = 2 if block == "block1" else 1

    def apply(params: Any, images: Array) -> Layers:
        silent = params["silent"]
        branches: Layers = {}

        def edit(name: str, x: Array, pre: Array) -> Array:
            if name != block:
                return pre
            branch = branches[f"{layer}/silent"] = _conv(x, silent, strides)
            return pre + jax.nn.relu(branch) * silent["onehot"]

        layers, _ = _worldnet(params["worldnet"], images, edit)
        return {**layers, **branches}

    return apply


@functools.cache
def _cached_worldnet_fn() -> Model:
    return worldnet_fn()


@functools.cache
def render_settings() -> dict[str, Any]:
    """The rendering procedure this module's numbers are measured with, as keyword arguments of
    :func:`fvjax.render`: 64 px, Fourier, ``standard(0.5)``, Adam 0.05 (the same instances on
    every call, so renders share their compiled programs).

    >>> sorted(render_settings())
    ['optimizer', 'param', 'size', 'transforms']
    """
    return {
        "size": 64,
        "param": param.fourier(),
        "transforms": transforms.standard(0.5),
        "optimizer": optax.adam(0.05),
    }


def _rendering_direction(params: Any, layer: str, unit: int, steps: int, seed: int) -> np.ndarray:
    """Where the unit's own rendering takes its conv input: the mean 3x3 patch after ``steps``
    steps minus that of the grey picture it starts from, ``(3 * 3 * C_in,)``."""
    picture = engine.render(
        _cached_worldnet_fn(),
        objectives.channel(layer, [unit]),
        seeds=[seed],
        steps=steps,
        **render_settings(),
    ).images[0]
    grey = np.full_like(picture, 0.5)
    x = np.asarray(_block_input_jit(params, jnp.asarray(np.concatenate([picture, grey])), layer))
    return _patches(x[:1]).mean(0) - _patches(x[1:]).mean(0)


def silent_unit(
    layer: str = "block3/conv",
    unit: int = 63,
    scale: float = 1.0,
    *,
    steps: int = 32,
    seed: int = 1000,
    margin: float = 0.5,
    n_calibration: int = 2000,
    calibration_seed: int = 7_000_003,
) -> Model:
    """WorldNet with a silent branch added to ``unit`` of ``layer`` (a conv layer).

    ``layer`` exposes the convolution's output before its ReLU; the unit's value becomes
    ``conv_u(x) + relu(w' * x + b')`` for the conv input ``x``, and the layer
    ``<layer>/silent`` ``(H, W, 1)`` is the branch's pre-activation ``w' * x + b'``.

    - ``w'`` is orthogonal to the unit's filter ``w`` (same shape) and, as in the paper,
      ``||w'|| = scale * ||w||^2`` (for unit 63 ``||w|| = 3.92``: the branch's filter is 3.92x
      the unit's, so once it fires its gradient dominates).
    - ``b' = -(top + margin * (top - mean))`` with ``top`` and ``mean`` the max and mean of
      ``w' * x`` over ``n_calibration`` world images of ``calibration_seed`` (all positions):
      below zero on world images, so every layer is unchanged on them.
    - Its direction: a random direction orthogonal to ``w`` is never reached by a rendering
      here (WorldNet's pictures stay within about 1-1.5x the natural maxima; measured on 8
      units: the branch stayed near -100 and the pictures were bit-identical to the
      original's). So ``w'`` points where the unit's own rendering goes: the mean change of the
      conv input's 3x3 patches over the first ``steps`` steps of rendering the unit in WorldNet
      (seed ``seed``, 64 px, Fourier, ``standard(0.5)``, Adam 0.05), whitened by the world
      patches' covariance, minus its projection on ``w``. Once a rendering crosses ``-b'`` the
      branch takes over: the activation overshoots and the picture sharpens along that path
      (it stays related to the original's picture). Measured on 8 units of ``block3/conv``
      (position max over natural max, 2 seeds): reached for 8 (7.4-8.0x), 31 (5.1x), 60
      (14.8-16.7x) and 63 (6.6-7.7x), not for 0, 2, 13, 44 (under 1.6x, branch share under 7%);
      silent on 20,000 fresh world images for all four.

    Params: ``{"worldnet", "silent": {"kernel": (3, 3, C_in, 1), "bias": (1,),
    "onehot": (C_out,)}}``. Builds in a few seconds (it renders ``steps`` steps).

    >>> model = silent_unit(steps=2, n_calibration=20)
    >>> model.layer_shapes(64)["block3/conv/silent"]
    (8, 8, 1)
    """
    if layer not in CONV_LAYERS:
        raise unknown_layer(layer, CONV_LAYERS)
    params = worldnet_params()
    block = layer.split("/")[0]
    kernel = np.asarray(params[block]["conv"]["kernel"], np.float64)
    if not 0 <= unit < kernel.shape[-1]:
        raise UnitRangeError(f"unit {unit} is outside {layer} (0..{kernel.shape[-1] - 1})")
    w = kernel[..., unit].reshape(-1)
    images = world_lib.generate(calibration_seed, n_calibration, 64).images
    x = np.asarray(_block_input_jit(params, jnp.asarray(images), layer))
    patches = _patches(x[:_COVARIANCE_IMAGES])
    patches -= patches.mean(0)
    covariance = (patches.T @ patches).astype(np.float64) / len(patches)
    covariance += 1e-3 * np.trace(covariance) / w.size * np.eye(w.size)
    direction = np.linalg.solve(covariance, _rendering_direction(params, layer, unit, steps, seed))
    direction -= (direction @ w) / (w @ w) * w
    direction *= scale * (w @ w) / np.linalg.norm(direction)
    onehot = np.zeros(kernel.shape[-1], np.float32)
    onehot[unit] = 1.0
    silent = {
        "kernel": jnp.asarray(direction.reshape(*kernel.shape[:3], 1), jnp.float32),
        "bias": jnp.zeros((1,), jnp.float32),
        "onehot": jnp.asarray(onehot),
    }
    strides = 2 if block == "block1" else 1
    response = np.asarray(_conv(jnp.asarray(x), silent, strides))
    top, mean = float(response.max()), float(response.mean())
    silent["bias"] = jnp.asarray([-(top + margin * (top - mean))], jnp.float32)
    return _model(
        _silent_apply(layer), {"worldnet": params, "silent": silent}, f"silent_{layer}_{unit}"
    )


# -- 3. concept maps --------------------------------------------------------------------------


def _concept_maps(params: Any, images: Array) -> Layers:
    layers, features = _worldnet(params, images)
    dense = params["logits"]
    layers["concept_map"] = features @ dense["kernel"] + dense["bias"]
    return layers


def concept_maps() -> Model:
    """WorldNet plus ``concept_map`` ``(8, 8, 25)``: its class activation maps, the last
    features (``block4``) times the dense head's weights plus its bias, so that the map's mean
    over positions is the logit and unit ``c`` detects ``CONCEPTS[c]`` where it is.

    >>> model = concept_maps()
    >>> model.unit_name("concept_map", CONCEPTS.index("star"))
    'star'
    """
    return _model(_concept_maps, worldnet_params(), "worldnet_concept_maps")


# -- reading pictures -------------------------------------------------------------------------

#: The chromatic named colours and their hues in degrees.
HUES = {
    "red": 0,
    "orange": 30,
    "yellow": 60,
    "green": 120,
    "cyan": 180,
    "blue": 240,
    "magenta": 300,
}


def hue_votes(images: Any, min_chroma: float = 0.2) -> np.ndarray:
    """``(..., 7)`` votes of pictures ``(..., H, W, 3)`` for the colours of :data:`HUES`: each
    pixel votes for the named hue nearest its own with its chroma above ``min_chroma``
    (``max - min`` channel), averaged over pixels.

    >>> hue_votes(np.tile([0.9, 0.1, 0.1], (1, 4, 4, 1))).round(2).tolist()
    [[0.6, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]]
    """
    images = np.asarray(images, np.float64)
    r, g, b = images[..., 0], images[..., 1], images[..., 2]
    hue = np.degrees(np.arctan2(np.sqrt(3.0) * (g - b), 2.0 * r - g - b)) % 360.0
    centres = np.array(list(HUES.values()), np.float64)
    nearest = np.abs((hue[..., None] - centres + 180.0) % 360.0 - 180.0).argmin(-1)
    weight = np.maximum(images.max(-1) - images.min(-1) - min_chroma, 0.0)
    return np.stack([(weight * (nearest == i)).mean((-2, -1)) for i in range(len(HUES))], -1)


def dominant_hue(images: Any) -> list[str]:
    """The named colour of :data:`HUES` with most :func:`hue_votes`, per picture.

    >>> dominant_hue(np.tile([0.1, 0.2, 0.9], (2, 4, 4, 1)))
    ['blue', 'blue']
    """
    names = list(HUES)
    votes = hue_votes(images)
    return [names[i] for i in votes.reshape(-1, len(names)).argmax(-1)]
