"""VGG-16 (torchvision's): layers, weight import, and parity with a PyTorch reference.

The network is 138M parameters (553 MB of float32): the random weights are drawn once for the
module (``model``) and every forward shares one jitted program (``forward``).
"""

import math

import jax
import numpy as np
import pytest

import fvjax
from fvjax import models
from fvjax.models import weights
from fvjax.models.zoo import vgg

SIZE = 224
#: A size where the adaptive pool is not the identity (pool5 is 3x5), nor square.
SMALL = (96, 160)
#: torchvision's vgg16 state dict: where its 13 convolutions and 3 linear layers sit.
TORCHVISION_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
TORCHVISION_LINEARS = (0, 3, 6)


@pytest.fixture(scope="module")
def model():
    return vgg.ARCHITECTURE.load()  # random weights (seed 0)


@pytest.fixture(scope="module")
def forward(model):
    """One jitted forward for every VGG-16 params tree (the module and preprocessing are fixed)."""
    return jax.jit(model.apply)


def test_layers_and_shapes_at_224(model):
    shapes = model.layer_shapes(SIZE)
    convs = [
        f"conv{b}_{k}" for b, n in enumerate((2, 2, 3, 3, 3), start=1) for k in range(1, n + 1)
    ]
    assert convs[-1] == "conv5_3" and len(convs) == 13
    sides = {"1": 224, "2": 112, "3": 56, "4": 28, "5": 14}
    widths = {"1": 64, "2": 128, "3": 256, "4": 512, "5": 512}
    for name, index in zip(convs, TORCHVISION_CONVS, strict=True):
        block = name[4]
        expected = (sides[block], sides[block], widths[block])
        assert shapes[name] == shapes[f"features/{index}"] == expected, name
        assert vgg.FEATURES_INDEX[name] == index
    for block in "12345":
        side = sides[block] // 2
        assert shapes[f"pool{block}"] == (side, side, widths[block])
    assert shapes["conv5_3"] == (14, 14, 512)
    assert shapes["pool5"] == shapes["avgpool"] == (7, 7, 512)
    assert shapes["fc6"] == shapes["fc7"] == shapes["classifier/0"] == (4096,)
    assert shapes["fc8"] == shapes["classifier/6"] == shapes["output"] == (1000,)
    names = {*convs, *(f"pool{b}" for b in "12345"), "avgpool", "fc6", "fc7", "fc8", "output"}
    names |= {f"features/{i}" for i in TORCHVISION_CONVS}
    names |= {f"classifier/{i}" for i in TORCHVISION_LINEARS}
    assert set(shapes) == names
    n_params = sum(x.size for x in jax.tree_util.tree_leaves(model.params))
    assert n_params == 138_357_544


def test_any_size_from_32_px(model):
    """The adaptive pool takes any pool5: 1x1 at 32 px; below that a block comes out empty."""
    assert model.layer_shapes(32)["pool5"] == (1, 1, 512)
    assert model.layer_shapes((48, 100))["avgpool"] == (7, 7, 512)
    with pytest.raises(fvjax.errors.ImageSizeError, match="too small"):
        model.layer_shapes(31)


def torch_bins(length: int, n: int = 7) -> list[tuple[int, int]]:
    """AdaptiveAvgPool2d's bins as torch defines them: ``[floor(i L / n), ceil((i+1) L / n))``."""
    return [(math.floor(i * length / n), math.ceil((i + 1) * length / n)) for i in range(n)]


def test_layers_pooling_and_preprocessing(model, forward, full_float32):
    """At 96x160 px pool5 is 3x5: torch's 7x7 bins overlap and differ in size. (The parity test
    runs the same shapes under the same precision, so the two share one compilation.)"""
    images = np.random.default_rng(1).uniform(size=(2, *SMALL, 3)).astype(np.float32)
    acts = {name: np.asarray(a) for name, a in forward(model.params, images).items()}
    # The literature's names are the module outputs after ReLU.
    for name, index in vgg.FEATURES_INDEX.items():
        if name.startswith("conv"):
            np.testing.assert_array_equal(acts[name], np.maximum(acts[f"features/{index}"], 0))
    np.testing.assert_array_equal(acts["fc6"], np.maximum(acts["classifier/0"], 0))
    np.testing.assert_array_equal(acts["fc7"], np.maximum(acts["classifier/3"], 0))
    np.testing.assert_array_equal(acts["fc8"], acts["classifier/6"])
    np.testing.assert_array_equal(acts["fc8"], acts["output"])
    # avgpool: each cell the mean of its bin's rectangle of pool5.
    pool5 = acts["pool5"]
    assert pool5.shape == (2, 3, 5, 512)
    expected = np.stack(
        [
            np.stack([pool5[:, r0:r1, c0:c1].mean(axis=(1, 2)) for c0, c1 in torch_bins(5)], 1)
            for r0, r1 in torch_bins(3)
        ],
        1,
    )
    np.testing.assert_allclose(acts["avgpool"], expected, rtol=1e-6, atol=1e-6)
    # The first convolution sees ImageNet-normalized pictures, padded 1 on each side.
    conv = model.params["params"]["features"]["0"]
    normalized = (images - np.float32(models.IMAGENET_MEAN)) / np.float32(models.IMAGENET_STD)
    first = jax.lax.conv_general_dilated(
        normalized,
        conv["kernel"],
        window_strides=(1, 1),
        padding=((1, 1), (1, 1)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    np.testing.assert_allclose(acts["features/0"], first + conv["bias"], rtol=1e-5, atol=1e-5)
    assert all(np.isfinite(a).all() for a in acts.values())
    assert acts["conv5_3"].std() > 0 and acts["fc8"].std() > 0  # He init keeps depth alive


# --- weights -------------------------------------------------------------------------------


def test_table_has_torchvision_names():
    table = vgg.torchvision_table()
    assert [e.torch_name for e in table] == [f"features.{i}" for i in TORCHVISION_CONVS] + [
        f"classifier.{i}" for i in TORCHVISION_LINEARS
    ]
    assert table[0] == weights.Entry("features.0", ("features", "0"), "conv")
    assert table[-1] == weights.Entry("classifier.6", ("classifier", "6"), "linear")
    assert [e.flax_path for e in table[-3:]] == [("classifier", str(i)) for i in (0, 3, 6)]


def assert_trees_equal(ours, expected):
    """Same structure and bit-identical leaves (``np.array_equal``: 553 MB in a fraction of the
    time ``assert_array_equal`` takes)."""
    differ = jax.tree_util.tree_map_with_path(
        lambda path, a, b: None if np.array_equal(np.asarray(a), b) else jax.tree_util.keystr(path),
        ours,
        expected,
    )
    assert not jax.tree_util.tree_leaves(differ), jax.tree_util.tree_leaves(differ)


@pytest.fixture(scope="module")
def state(model):
    """The model's weights as a torchvision-layout state dict, exported through the table."""
    return weights.state_dict_from_params(model.params["params"], vgg.torchvision_table())


def test_state_dict_has_torchvision_layouts(state):
    assert len(state) == 32
    assert state["features.0.weight"].shape == (64, 3, 3, 3)  # OIHW
    assert state["features.28.weight"].shape == (512, 512, 3, 3)
    assert state["classifier.0.weight"].shape == (4096, 25088)  # (out, in)
    assert state["classifier.6.bias"].shape == (1000,)


def test_zoo_builds_vgg16_from_this_module(model):
    architecture = fvjax.zoo.architecture("vgg16")
    assert architecture.table() == vgg.torchvision_table()
    built = architecture.build(model.params["params"])
    assert built.name == "vgg16"
    assert built.layer_shapes(64)["conv4_3"] == (8, 8, 512)


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_state_dict_round_trip(tmp_path, model, state, suffix):
    path = tmp_path / f"vgg16{suffix}"
    if suffix == ".npz":
        np.savez(path, **state)
    else:
        weights.write_safetensors(path, state)
    # ARCHITECTURE.load(weights) checks the file against param_shapes(), which holds no
    # values: every number of the loaded model comes from the file.
    loaded = vgg.ARCHITECTURE.load(path)
    assert loaded.name == "vgg16"
    assert_trees_equal(loaded.params["params"], model.params["params"])  # the import is exact


def test_misfit_state_dict_lists_every_problem(tmp_path, state):
    """E.g. a vgg16_bn state dict, or a head fine-tuned to 10 classes, does not fit."""
    misfit = {k: v for k, v in state.items() if not k.startswith("classifier.0.")}  # 411 MB less
    del misfit["features.0.bias"]
    misfit["features.1.running_mean"] = np.zeros(64, np.float32)  # vgg16_bn's first batch norm
    misfit["classifier.6.weight"] = np.zeros((10, 4096), np.float32)
    misfit["classifier.6.bias"] = np.zeros(10, np.float32)
    path = tmp_path / "bad.safetensors"
    weights.write_safetensors(path, misfit)
    with pytest.raises(weights.WeightsError) as info:
        vgg.ARCHITECTURE.load(path)
    message = str(info.value)
    assert "missing keys (3): classifier.0.bias, classifier.0.weight, features.0.bias" in message
    assert "unexpected keys (1): features.1.running_mean" in message
    assert "shape mismatches (2)" in message
    assert "classifier.6.weight: got (10, 4096), expected (1000, 4096)" in message
    assert "classifier.6.bias: got (10,), expected (1000,)" in message
    assert isinstance(info.value, fvjax.errors.FvjaxError)


# --- parity with PyTorch -------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference(state):
    """The PyTorch VGG-16 holding the model's weights, exported through the import table."""
    torch = pytest.importorskip("torch", reason="parity with PyTorch needs torch")
    from torch_vgg import TorchVGG16

    with torch.device("meta"):  # no default init of 138M parameters: the state dict replaces them
        reference = TorchVGG16()
    # strict: the state dict must have exactly the reference's (torchvision's) keys and shapes.
    # torch.tensor copies: some arrays are read-only views of the JAX params.
    reference.load_state_dict({k: torch.tensor(v) for k, v in state.items()}, assign=True)
    return reference.eval()


def test_adaptive_pool_matches_torch():
    torch = pytest.importorskip("torch", reason="parity with PyTorch needs torch")
    rng = np.random.default_rng(0)
    pool = jax.jit(vgg.adaptive_avg_pool, static_argnums=1)
    for height, width in [(1, 1), (3, 5), (9, 16)]:  # one, uneven and overlapping bins
        x = rng.normal(size=(2, height, width, 4)).astype(np.float32)
        theirs = torch.nn.functional.adaptive_avg_pool2d(
            torch.from_numpy(x.transpose(0, 3, 1, 2)), (7, 7)
        )
        ours = pool(x, (7, 7))
        np.testing.assert_allclose(
            np.asarray(ours), theirs.numpy().transpose(0, 2, 3, 1), rtol=1e-6, atol=1e-6
        )


@pytest.mark.parametrize("size", [SIZE, SMALL], ids=["224", "96x160"])
def test_parity_with_a_pytorch_reference(model, forward, reference, size, full_float32):
    """224 px: avgpool is the identity. 96x160 px: pool5 is 3x5, so torch's 7x7 bins overlap and
    differ in size (1 or 2 rows, 1 or 2 columns), and height and width pool differently."""
    pytest.importorskip("torch", reason="parity with PyTorch needs torch")
    from torch_reference import assert_layers_match, imagenet_outputs

    ours, theirs = imagenet_outputs(reference, forward, model.params, size)
    assert set(theirs) == set(ours)
    assert_layers_match(ours, theirs, f"{size}")


# --- rendering -----------------------------------------------------------------------------


def test_renders_conv4_3_on_cpu(model):
    result = fvjax.render_layer(
        model, "conv4_3", units=[0, 511], size=64, steps=4, seeds=1, steps_per_call=4
    )
    assert result.images.shape == (2, 1, 64, 64, 3)
    assert np.isfinite(result.images).all() and np.isfinite(result.activations).all()
