"""ResNet-50 (torchvision's): layers, weight import, and parity with a PyTorch reference."""

import jax
import numpy as np
import pytest

import fvjax
from fvjax.models import weights
from fvjax.models.zoo import resnet

SIZE = 224
#: torchvision's ``resnet50``: 25,557,032 parameters (``sum(p.numel() for p in
#: model.parameters())``), plus 53,120 batch norm statistics and 53 counters in its state dict.
N_PARAMETERS = 25_557_032
N_STATISTICS = 53_120
N_STATE_DICT_KEYS = 320


@pytest.fixture(scope="module")
def model():
    return resnet.ARCHITECTURE.load()


@pytest.fixture(scope="module")
def forward(model):
    """One jitted forward for every ResNet-50 params tree: compiles once per picture size."""
    return jax.jit(model.apply)


def _with_counters(state: dict) -> dict:
    """``state`` plus the ``num_batches_tracked`` counter torch keeps per batch norm."""
    counters = {
        f"{e.torch_name}.num_batches_tracked": np.array(1000, np.int64)
        for e in resnet.torchvision_table()
        if e.kind == "batchnorm"
    }
    return {**state, **counters}


def test_layers_and_shapes_at_224(model):
    shapes = model.layer_shapes(SIZE)
    assert shapes["conv1"] == shapes["bn1"] == shapes["relu"] == (112, 112, 64)
    assert shapes["maxpool"] == (56, 56, 64)
    stages = {"layer1": (56, 256), "layer2": (28, 512), "layer3": (14, 1024), "layer4": (7, 2048)}
    for s, (name, (side, width)) in enumerate(stages.items()):
        blocks, bottleneck = resnet.STAGES[s]
        assert shapes[name] == (side, side, width), name
        for b in range(blocks):
            block = f"{name}/{b}"
            assert shapes[block] == shapes[f"{block}/bn3"] == (side, side, width), block
            assert shapes[f"{block}/conv2"] == shapes[f"{block}/bn2"] == (side, side, bottleneck)
            # v1.5: the first block of layer2..4 strides in conv2, so conv1 sees the input size
            before = 2 * side if s > 0 and b == 0 else side
            assert shapes[f"{block}/bn1"] == (before, before, bottleneck), block
            assert (f"{block}/downsample" in shapes) == (b == 0), block
        assert shapes[f"{name}/0/downsample/0"] == shapes[f"{name}/0/downsample/1"]
    assert f"layer{len(stages) + 1}" not in shapes and "layer3/6" not in shapes
    assert shapes["layer3"] == (14, 14, 1024) and shapes["layer4"] == (7, 7, 2048)
    assert shapes["avgpool"] == (2048,)
    assert shapes["fc"] == shapes["output"] == (1000,)
    # 2 stem layers + 16 blocks of (block, 3 convs, 3 batch norms) + 4 x 3 downsample layers
    # + relu, maxpool, 4 stages, avgpool, fc, output
    assert len(shapes) == 2 + 16 * 7 + 4 * 3 + 9
    assert model.layer_shapes(32)["layer4"] == (1, 1, 2048)


def test_parameter_count_is_torchvisions(model):
    """Counted: conv kernels, batch norm ``scale`` and ``bias``, the ``fc`` kernel and bias;
    batch norm ``mean`` and ``var`` are statistics (torch buffers), counted apart."""
    leaves = jax.tree_util.tree_leaves_with_path(model.params["params"])
    assert {path[-1].key for path, _ in leaves} == {"kernel", "scale", "bias", "mean", "var"}
    statistics = sum(x.size for path, x in leaves if path[-1].key in ("mean", "var"))
    parameters = sum(x.size for path, x in leaves if path[-1].key not in ("mean", "var"))
    assert parameters == N_PARAMETERS
    assert statistics == N_STATISTICS
    convs = [path for path, _ in leaves if "conv" in str(path) and path[-1].key == "bias"]
    assert not convs, "torchvision's convolutions have no bias"


def test_torchvision_table_names_every_parameter():
    table = resnet.torchvision_table()
    assert table[0] == weights.Entry("conv1", ("conv1",), "conv")
    assert table[1] == weights.Entry("bn1", ("bn1",), "batchnorm")
    entries = {e.torch_name: e for e in table}
    assert entries["layer3.5.bn3"].flax_path == ("layer3", "5", "bn3")
    assert entries["layer1.0.downsample.0"] == weights.Entry(
        "layer1.0.downsample.0", ("layer1", "0", "downsample", "0"), "conv"
    )
    assert entries["layer4.0.downsample.1"].kind == "batchnorm"
    assert "layer1.1.downsample.0" not in entries
    assert table[-1] == weights.Entry("fc", ("fc",), "linear")
    assert len(table) == 2 + 16 * 6 + 4 * 2 + 1
    state = _with_counters(weights.state_dict_from_params(resnet.random_params(), table))
    assert len(state) == N_STATE_DICT_KEYS
    assert sum(v.size for k, v in state.items() if k.endswith(("_mean", "_var"))) == N_STATISTICS


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_state_dict_round_trip(tmp_path, suffix):
    source = resnet.random_params(seed=1)
    table = resnet.torchvision_table()
    state = weights.state_dict_from_params(source, table)
    assert state["conv1.weight"].shape == (64, 3, 7, 7)  # OIHW
    assert state["layer2.0.conv2.weight"].shape == (128, 128, 3, 3)
    assert state["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
    assert state["layer1.0.downsample.1.running_var"].shape == (256,)
    assert state["fc.weight"].shape == (1000, 2048)  # (out, in)
    path = tmp_path / f"resnet50{suffix}"
    counted = _with_counters(state)
    if suffix == ".npz":
        np.savez(path, **counted)
        loaded = resnet.ARCHITECTURE.load(path)
    else:
        weights.write_safetensors(path, counted)
        loaded = fvjax.zoo.load("resnet50", weights=str(path))
    # Same tree, same values: the import is exact, both ways.
    jax.tree_util.tree_map(np.testing.assert_array_equal, loaded.params["params"], source)
    again = weights.state_dict_from_params(loaded.params["params"], table)
    assert again.keys() == state.keys()
    for key, value in state.items():
        np.testing.assert_array_equal(again[key], value, err_msg=key)


def test_misfit_state_dict_lists_every_problem(tmp_path):
    state = weights.state_dict_from_params(resnet.random_params(), resnet.torchvision_table())
    del state["layer2.0.downsample.1.running_var"]
    del state["bn1.weight"]
    state["layer5.0.conv1.weight"] = np.zeros((1, 1, 1, 1), np.float32)
    state["layer1.0.conv2.weight"] = np.zeros((64, 64, 1, 1), np.float32)
    state["fc.weight"] = np.zeros((10, 2048), np.float32)
    path = tmp_path / "bad.safetensors"
    weights.write_safetensors(path, state)
    with pytest.raises(weights.WeightsError) as info:
        resnet.ARCHITECTURE.load(path)
    message = str(info.value)
    assert "missing keys (2): bn1.weight, layer2.0.downsample.1.running_var" in message
    assert "unexpected keys (1): layer5.0.conv1.weight" in message
    assert "shape mismatches (2)" in message
    assert "layer1.0.conv2.weight: got (64, 64, 1, 1), expected (64, 64, 3, 3)" in message
    assert "fc.weight: got (10, 2048), expected (1000, 2048)" in message
    assert isinstance(info.value, fvjax.errors.FvjaxError)


# --- parity with PyTorch -------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A torch ResNet-50 in eval mode with random weights and batch norm statistics, and ours
    loaded from its state dict (``num_batches_tracked`` included) saved as ``.safetensors``."""
    torch = pytest.importorskip("torch", reason="parity with PyTorch needs torch")
    from torch_resnet import TorchResNet50

    torch.manual_seed(0)
    net = TorchResNet50().eval()
    with torch.no_grad():  # He-normal convolutions; statistics that are not the identity
        for module in net.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            elif isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(std=0.2)
                module.running_mean.normal_(std=0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.num_batches_tracked.fill_(1000)
            elif isinstance(module, torch.nn.Linear):
                module.bias.normal_(std=0.1)
    path = tmp_path_factory.mktemp("resnet50") / "reference.safetensors"
    weights.write_safetensors(path, {k: v.numpy() for k, v in net.state_dict().items()})
    return net, resnet.ARCHITECTURE.load(path)


def test_reference_state_dict_has_torchvisions_keys(reference):
    net, _ = reference
    keys = list(net.state_dict())
    assert len(keys) == N_STATE_DICT_KEYS
    assert keys[:6] == [
        "conv1.weight",
        "bn1.weight",
        "bn1.bias",
        "bn1.running_mean",
        "bn1.running_var",
        "bn1.num_batches_tracked",
    ]
    assert "layer1.0.downsample.1.num_batches_tracked" in keys
    assert "layer4.2.conv3.weight" in keys and "layer3.5.bn3.running_var" in keys
    assert keys[-2:] == ["fc.weight", "fc.bias"]
    expected = weights.state_dict_from_params(resnet.random_params(), resnet.torchvision_table())
    assert set(keys) == set(_with_counters(expected))
    parameters = sum(p.numel() for p in net.parameters())
    assert parameters == N_PARAMETERS


@pytest.mark.parametrize("size", [SIZE, (97, 120)], ids=["224", "97x120"])
def test_parity_with_a_pytorch_reference(reference, forward, size, full_float32):
    """Every layer, at 224 px and at a size whose feature maps are odd (49x60 after ``conv1``,
    25x30 after ``maxpool``, then 13x15, 7x8, 4x4): paddings and strides must be torch's."""
    pytest.importorskip("torch", reason="parity with PyTorch needs torch")
    from torch_reference import assert_layers_match, imagenet_outputs

    net, model = reference
    ours, theirs = imagenet_outputs(net, forward, model.params, size)
    assert set(theirs) == set(ours), set(theirs) ^ set(ours)
    assert np.abs(np.asarray(ours["layer4"])).max() > 0  # a dead network would match trivially
    assert_layers_match(ours, theirs, f"{size}")


# --- rendering -----------------------------------------------------------------------------


def test_renders_layer3_on_cpu(model):
    result = fvjax.render_layer(
        model, "layer3", units=[0, 1023], size=64, steps=4, seeds=1, steps_per_call=4
    )
    assert result.images.shape == (2, 1, 64, 64, 3)
    assert np.isfinite(result.images).all() and np.isfinite(result.activations).all()
