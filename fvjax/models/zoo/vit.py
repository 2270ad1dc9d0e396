"""ViT-B/16 as torchvision has it (``torchvision.models.vit_b_16``), in Flax linen.

A 16x16 stride-16 convolution cuts the picture into patches (``conv_proj``), a learned class
token goes first, learned position embeddings are added, and 12 pre-norm encoder blocks follow
(``x + attention(ln_1(x))``, then ``x + mlp(ln_2(x))``: 12 heads of 64, an MLP of 3072 with
exact GELU, layer norms with eps 1e-6); a last layer norm, and the class token's row goes through
``heads.head`` to 1000 ImageNet logits. Dropout is the identity at inference and left out.

torchvision takes 224 px only. Here any size of 16 px or more works: the patch grid is
``floor(H / 16) x floor(W / 16)`` and the 14 x 14 position embeddings of the patches are resized
to it bilinearly (half-pixel centres, no antialiasing: ``torch.nn.functional.interpolate(...,
mode="bilinear", align_corners=False)``), as feature visualization needs for the larger pictures
the standard transforms hand a model. At 224 px nothing is resized.

Layers (shapes at 224 px). Objectives address units in space, so each block's output and MLP
units also come as a patch grid, without the class token::

    block0 ... block11         (14, 14, 768)   the residual stream after encoder block i
    block0/mlp ... block11/mlp (14, 14, 3072)  the MLP's hidden units after GELU, the units
                                               feature visualizations of ViTs usually show
    block0/cls ...             (768,)          the class token after block i
    encoder/ln                 (197, 768)      the final layer norm, class token first
    heads/head (and output)    (1000,)         ImageNet logits

and every torchvision module path, ``/`` for ``.``, with the class token first:
``encoder/layers/encoder_layer_5`` (197, 768), ``.../ln_1``, ``.../self_attention``,
``.../mlp/0`` (before GELU, 3072), ``.../mlp/3``, ``conv_proj`` (14, 14, 768).

The network takes ImageNet-normalized RGB; :func:`build` puts ``(x - mean) / std`` in the model,
so fvjax passes pictures in ``[0, 1]``. Weights: a torchvision ``vit_b_16`` state dict
(``conv_proj.weight``, ``class_token``, ``encoder.pos_embedding``,
``encoder.layers.encoder_layer_0.self_attention.in_proj_weight``, ..., ``heads.head.bias``)
through :func:`torchvision_table`.

>>> shapes = build(random_params()).layer_shapes(224)  # random weights
>>> shapes["block5/mlp"], shapes["encoder/layers/encoder_layer_5"], shapes["output"]
((14, 14, 3072), (197, 768), (1000,))
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fvjax.errors import ImageSizeError
from fvjax.models.adapters import IMAGENET_MEAN, IMAGENET_STD, Model, from_linen, normalize
from fvjax.models.weights import Entry, params_tree, shape_leaves
from fvjax.models.zoo.architecture import Architecture

PATCH = 16
WIDTH = 768
DEPTH = 12
HEADS = 12
MLP_WIDTH = 3072
#: The patch grid the position embeddings were trained for (224 px / 16).
GRID = 14
N_CLASSES = 1000
LAYERNORM_EPS = 1e-6


def _layer_norm(name: str) -> nn.LayerNorm:
    # Two-pass variance, as torch computes it.
    return nn.LayerNorm(epsilon=LAYERNORM_EPS, use_fast_variance=False, name=name)


def resize_positions(positions: jax.Array, grid: tuple[int, int]) -> jax.Array:
    """Position embeddings ``(1, 1 + GRID**2, C)`` for a patch ``grid``: the class token's as
    is, the patches' resized bilinearly (no antialiasing, as torch's ``interpolate``).

    >>> resize_positions(jnp.zeros((1, 1 + GRID * GRID, 8)), (10, 12)).shape
    (1, 121, 8)
    """
    if grid == (GRID, GRID):
        return positions
    cls, patches = positions[:, :1], positions[:, 1:]
    patches = patches.reshape(1, GRID, GRID, -1)
    shape = (1, *grid, patches.shape[-1])
    patches = jax.image.resize(patches, shape, "bilinear", antialias=False)
    return jnp.concatenate([cls, patches.reshape(1, grid[0] * grid[1], -1)], axis=1)


class SelfAttention(nn.Module):
    """torch's ``nn.MultiheadAttention(WIDTH, HEADS)`` on ``(B, N, C)`` tokens, queries = keys =
    values: one packed projection ``in_proj`` to queries, keys and values, ``out_proj`` after."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        batch, tokens, width = x.shape
        qkv = nn.Dense(3 * width, name="in_proj")(x).reshape(batch, tokens, 3, HEADS, -1)
        query, key, value = (qkv[:, :, i] for i in range(3))  # (B, N, heads, head width)
        scale = jnp.asarray(1.0 / np.sqrt(width // HEADS), x.dtype)
        weights = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", query * scale, key), axis=-1)
        mixed = jnp.einsum("bhqk,bkhd->bqhd", weights, value).reshape(batch, tokens, width)
        return nn.Dense(width, name="out_proj")(mixed)


class MLP(nn.Module):
    """torchvision's ``MLPBlock``: ``0`` (Dense to 3072), exact GELU, ``3`` (Dense back). Sows
    the hidden units after GELU as ``hidden``."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        hidden = nn.gelu(nn.Dense(MLP_WIDTH, name="0")(x), approximate=False)
        self.sow("intermediates", "hidden", hidden)
        return nn.Dense(x.shape[-1], name="3")(hidden)


class EncoderBlock(nn.Module):
    """``x + self_attention(ln_1(x))``, then ``+ mlp(ln_2(.))``."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + SelfAttention(name="self_attention")(_layer_norm("ln_1")(x))
        return x + MLP(name="mlp")(_layer_norm("ln_2")(x))


class Layers(nn.Module):
    """torchvision's ``encoder.layers``: blocks ``encoder_layer_0`` ... ``encoder_layer_11``."""

    remat: bool = False  # each block rematerialized (``nn.remat``)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        block = nn.remat(EncoderBlock) if self.remat else EncoderBlock
        for i in range(DEPTH):
            x = block(name=f"encoder_layer_{i}")(x)
        return x


class Encoder(nn.Module):
    """Position embeddings (resized to the patch grid), the blocks, the final layer norm."""

    remat: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, grid: tuple[int, int]) -> jax.Array:
        positions = self.param(
            "pos_embedding", nn.initializers.normal(0.02), (1, 1 + GRID * GRID, x.shape[-1])
        )
        x = x + resize_positions(positions, grid).astype(x.dtype)
        return _layer_norm("ln")(Layers(self.remat, name="layers")(x))


class ViTB16(nn.Module):
    """ViT-B/16: ImageNet logits ``(B, 1000)`` for ``(B, H, W, 3)`` ImageNet-normalized RGB
    (:func:`build` normalizes pictures in ``[0, 1]``), ``H, W >= 16``.

    >>> images = jax.ShapeDtypeStruct((1, 64, 48, 3), jnp.float32)
    >>> jax.eval_shape(ViTB16().apply, {"params": param_shapes()}, images).shape
    (1, 1000)
    """

    #: Each encoder block rematerialized (``nn.remat``). Same params and layers.
    remat: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if min(x.shape[1:3]) < PATCH:
            raise ImageSizeError(
                f"ViT-B/16 cuts pictures into {PATCH}x{PATCH} patches: "
                f"{x.shape[1]}x{x.shape[2]} is too small; use {PATCH} px or more"
            )
        conv = nn.Conv(WIDTH, (PATCH, PATCH), strides=PATCH, padding="VALID", name="conv_proj")
        patches = conv(x)
        batch, height, width, _ = patches.shape
        token = self.param("class_token", nn.initializers.zeros, (1, 1, WIDTH))
        token = jnp.broadcast_to(token, (batch, 1, WIDTH)).astype(patches.dtype)
        tokens = jnp.concatenate([token, patches.reshape(batch, height * width, WIDTH)], axis=1)
        final = Encoder(self.remat, name="encoder")(tokens, (height, width))
        return Heads(name="heads")(final[:, 0])


class Heads(nn.Module):
    """torchvision's ``heads``: one Dense named ``head``."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.Dense(N_CLASSES, name="head")(x)


def _layers() -> list[tuple[Entry, tuple[int, ...]]]:
    """Every parameter, in torchvision's order: its import entry and its Flax shape (HWIO
    kernel, ``(in, out)`` dense kernel, ``(features,)`` layer norm, or the tensor itself)."""
    rows = [
        (Entry("conv_proj", ("conv_proj",), "conv"), (PATCH, PATCH, 3, WIDTH)),
        (Entry("class_token", ("class_token",), "param"), (1, 1, WIDTH)),
        (
            Entry("encoder.pos_embedding", ("encoder", "pos_embedding"), "param"),
            (1, 1 + GRID * GRID, WIDTH),
        ),
    ]
    for i in range(DEPTH):
        torch_block = f"encoder.layers.encoder_layer_{i}"
        block = ("encoder", "layers", f"encoder_layer_{i}")
        for torch_name, path, kind, shape in (
            ("ln_1", ("ln_1",), "layernorm", (WIDTH,)),
            ("self_attention", ("self_attention", "in_proj"), "in_proj", (WIDTH, 3 * WIDTH)),
            ("self_attention.out_proj", ("self_attention", "out_proj"), "linear", (WIDTH, WIDTH)),
            ("ln_2", ("ln_2",), "layernorm", (WIDTH,)),
            ("mlp.0", ("mlp", "0"), "linear", (WIDTH, MLP_WIDTH)),
            ("mlp.3", ("mlp", "3"), "linear", (MLP_WIDTH, WIDTH)),
        ):
            rows.append((Entry(f"{torch_block}.{torch_name}", (*block, *path), kind), shape))
    rows.append((Entry("encoder.ln", ("encoder", "ln"), "layernorm"), (WIDTH,)))
    rows.append((Entry("heads.head", ("heads", "head"), "linear"), (WIDTH, N_CLASSES)))
    return rows


def torchvision_table() -> list[Entry]:
    """The import table of torchvision's ``vit_b_16`` state dict (see :mod:`fvjax.models.weights`).

    >>> table = torchvision_table()
    >>> table[1], len(table)
    (Entry(torch_name='class_token', flax_path=('class_token',), kind='param'), 77)
    """
    return [entry for entry, _ in _layers()]


def random_params(seed: int = 0) -> dict:
    """A params tree of :class:`ViTB16`'s shapes drawn with numpy (no Flax init trace):
    LeCun-normal kernels, small biases, layer norms near the identity, class token and position
    embeddings of standard deviation 0.02 (torchvision's own init zeroes the head, which would
    leave class logits flat)."""
    rng = np.random.default_rng(seed)

    def normal(shape: tuple[int, ...], std: float, mean: float = 0.0) -> np.ndarray:
        return mean + np.float32(std) * rng.standard_normal(shape, dtype=np.float32)

    def leaves(entry: Entry, shape: tuple[int, ...]) -> Any:
        if entry.kind == "param":
            return normal(shape, 0.02)
        if entry.kind == "layernorm":
            return {"scale": normal(shape, 0.05, mean=1.0), "bias": normal(shape, 0.02)}
        fan_in = int(np.prod(shape[:-1]))
        return {"kernel": normal(shape, np.sqrt(1.0 / fan_in)), "bias": normal(shape[-1:], 0.02)}

    return params_tree(_layers(), leaves)


def param_shapes() -> dict:
    """:class:`ViTB16`'s params tree as ``jax.ShapeDtypeStruct`` leaves: checks an import
    without drawing weights.

    >>> param_shapes()["encoder"]["layers"]["encoder_layer_0"]["self_attention"]["in_proj"][
    ...     "kernel"].shape
    (768, 2304)
    """
    return params_tree(_layers(), shape_leaves())


def _with_grids(apply: Any) -> Any:
    """``apply`` plus each block's patch grids: ``block<i>``, ``block<i>/mlp``, ``block<i>/cls``."""

    def apply_with_grids(params: Any, images: jax.Array) -> dict[str, jax.Array]:
        activations = apply(params, images)
        grid = activations["conv_proj"].shape[:3]  # (B, h, w)
        for i in range(DEPTH):
            block = f"encoder/layers/encoder_layer_{i}"
            tokens, hidden = activations[block], activations[f"{block}/mlp/hidden"]
            activations[f"block{i}"] = tokens[:, 1:].reshape(*grid, tokens.shape[-1])
            activations[f"block{i}/cls"] = tokens[:, 0]
            activations[f"block{i}/mlp"] = hidden[:, 1:].reshape(*grid, hidden.shape[-1])
        return activations

    return apply_with_grids


def build(params: Any) -> Model:
    """The fvjax model of a Flax params tree (``random_params()``'s structure), taking pictures
    in ``[0, 1]`` (ImageNet normalization inside); :func:`vit_b_16` shows it in use."""
    params = jax.tree_util.tree_map(jnp.asarray, params)
    model = from_linen(
        ViTB16(),
        {"params": params},
        preprocess=normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
        name="vit_b_16",
        remat_module=ViTB16(remat=True),
    )
    return dataclasses.replace(
        model, apply=_with_grids(model.apply), remat_apply=_with_grids(model.remat_apply)
    )


#: ``zoo.load("vit_b_16", weights=path)``: ``path`` is a torchvision ``vit_b_16`` state dict
#: (``.safetensors``, ``.npz``, or ``.pth`` when torch is installed) or its converted weights, e.g.
#: saved once on a machine with torchvision by
#: ``safetensors.torch.save_file(torchvision.models.vit_b_16(weights="IMAGENET1K_V1").state_dict(),
#: path)``. Without ``weights``: random weights (seed 0).
ARCHITECTURE = Architecture("vit_b_16", build, random_params, torchvision_table, param_shapes)
