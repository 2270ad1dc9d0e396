import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import fvjax
from fvjax.errors import ImageSizeError, UnknownLayerError


class LinenBlock(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x):
        return nn.relu(nn.Conv(self.features, (3, 3), name="conv")(x))


class LinenNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = LinenBlock(4, name="block1")(x)
        x = nn.max_pool(x, (2, 2), (2, 2))
        x = LinenBlock(6, name="block2")(x)
        self.sow("intermediates", "pooled", x.mean(axis=(1, 2)))
        return nn.Dense(3, name="logits")(x.mean(axis=(1, 2)))


class NnxBlock(nnx.Module):
    def __init__(self, cin, cout, rngs):
        self.conv = nnx.Conv(cin, cout, (3, 3), rngs=rngs)

    def __call__(self, x):
        return nnx.relu(self.conv(x))


class NnxNet(nnx.Module):
    def __init__(self, rngs):
        self.block1 = NnxBlock(3, 4, rngs)
        self.stages = nnx.List([NnxBlock(4, 5, rngs)])
        self.logits = nnx.Linear(5, 3, rngs=rngs)

    def __call__(self, x):
        x = self.block1(x)
        for stage in self.stages:
            x = stage(x)
        return self.logits(x.mean(axis=(1, 2)))


def linen_model(preprocess=None):
    module = LinenNet()
    variables = module.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
    return fvjax.from_linen(module, variables, preprocess=preprocess), module, variables


def test_linen_layers_are_module_paths():
    model, module, variables = linen_model()
    shapes = model.layer_shapes(16)
    assert shapes == {
        "block1": (16, 16, 4),
        "block1/conv": (16, 16, 4),
        "block2": (8, 8, 6),
        "block2/conv": (8, 8, 6),
        "logits": (3,),
        "output": (3,),
        "pooled": (6,),
    }
    images = jax.random.uniform(jax.random.key(1), (2, 16, 16, 3))
    acts = model.activations(images)
    np.testing.assert_allclose(acts["output"], module.apply(variables, images), rtol=1e-6)
    np.testing.assert_allclose(acts["block1"], jnp.maximum(acts["block1/conv"], 0))


def test_preprocessing_lives_in_the_adapter():
    pre = fvjax.models.normalize(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    model, module, variables = linen_model(preprocess=pre)
    images = jax.random.uniform(jax.random.key(1), (2, 16, 16, 3))
    np.testing.assert_allclose(
        model.activations(images)["output"],
        module.apply(variables, (images - 0.5) / 0.25),
        rtol=1e-5,
    )


def test_nnx_layers_are_attribute_paths():
    module = NnxNet(nnx.Rngs(0))
    model = fvjax.from_nnx(module)
    assert model.layer_shapes(8) == {
        "block1": (8, 8, 4),
        "block1/conv": (8, 8, 4),
        "logits": (3,),
        "output": (3,),
        "stages/0": (8, 8, 5),
        "stages/0/conv": (8, 8, 5),
    }
    images = jax.random.uniform(jax.random.key(1), (2, 8, 8, 3))
    np.testing.assert_allclose(model.activations(images)["output"], module(images), rtol=1e-6)


def test_plain_functions_with_and_without_params():
    w = jnp.ones((3, 2))
    with_params = fvjax.from_fn(lambda p, x: {"proj": x @ p}, params=w)
    assert with_params.layer_shapes((4, 6)) == {"proj": (4, 6, 2)}
    bare = fvjax.from_fn(lambda x: {"sum": x.sum(-1)})
    assert bare.layer_shapes(5) == {"sum": (5, 5)}


def test_a_model_that_does_not_return_a_dict_is_refused():
    with pytest.raises(TypeError, match="dict of named activations"):
        fvjax.from_fn(lambda x: x).layer_shapes(4)


def test_too_small_images_get_a_clear_error():
    model, _, _ = linen_model()
    with pytest.raises(ImageSizeError, match="1x1 images are too small"):
        model.layer_shapes(1)
    valid = fvjax.from_fn(
        lambda x: {
            "conv": jax.lax.conv_general_dilated(
                x,
                jnp.ones((5, 5, 3, 1)),
                (1, 1),
                "VALID",
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
            )
        }
    )
    with pytest.raises(ImageSizeError, match="3x3"):
        valid.layer_shapes(3)


def test_unknown_layer_lists_the_known_ones():
    model, _, _ = linen_model()
    with pytest.raises(UnknownLayerError, match="'block3'.*Did you mean.*block1/conv"):
        model.check_layer("block3", 16)


def test_describe_layers_is_a_table():
    model, _, _ = linen_model()
    table = fvjax.models.describe_layers(model, 16)
    assert "block2/conv  (8, 8, 6)" in table.replace("   ", "  ")
