"""ViT-B/16 (torchvision's): layers, weight import, and parity with a PyTorch reference.

The network is 86.6M parameters (346 MB of float32): the random weights are drawn once for the
module (``model``) and every forward shares one jitted program (``forward``).
"""

import jax
import numpy as np
import pytest

import fvjax
from fvjax.models import weights
from fvjax.models.zoo import vit

SIZE = 224
#: Not square, and a patch grid (6 x 11) the position embeddings are resized to, one axis
#: shrunk and one not a multiple of 16 px.
SMALL = (96, 180)


@pytest.fixture(scope="module")
def model():
    return vit.ARCHITECTURE.load()  # random weights (seed 0)


@pytest.fixture(scope="module")
def forward(model):
    return jax.jit(model.apply)


def test_layers_and_shapes_at_224(model):
    shapes = model.layer_shapes(SIZE)
    for i in range(12):
        block = f"encoder/layers/encoder_layer_{i}"
        assert shapes[block] == shapes[f"{block}/ln_1"] == shapes[f"{block}/mlp/3"] == (197, 768)
        assert shapes[f"{block}/mlp/0"] == shapes[f"{block}/mlp/hidden"] == (197, 3072)
        assert shapes[f"block{i}"] == (14, 14, 768)
        assert shapes[f"block{i}/mlp"] == (14, 14, 3072)
        assert shapes[f"block{i}/cls"] == (768,)
    assert shapes["conv_proj"] == (14, 14, 768)
    assert shapes["encoder/ln"] == (197, 768)
    assert shapes["heads/head"] == shapes["output"] == (1000,)
    n_params = sum(x.size for x in jax.tree_util.tree_leaves(model.params))
    assert n_params == 86_567_656  # torchvision's vit_b_16


def test_any_size_from_16_px(model):
    assert model.layer_shapes(16)["block11/mlp"] == (1, 1, 3072)
    assert model.layer_shapes(SMALL)["block0"] == (6, 11, 768)
    assert model.layer_shapes(SMALL)["encoder/layers/encoder_layer_0"] == (67, 768)
    with pytest.raises(fvjax.errors.ImageSizeError, match="too small"):
        model.layer_shapes(15)


def test_grids_are_the_patch_tokens_in_row_major_order(model, forward, full_float32):
    images = np.random.default_rng(1).uniform(size=(2, *SMALL, 3)).astype(np.float32)
    acts = {name: np.asarray(a) for name, a in forward(model.params, images).items()}
    tokens = acts["encoder/layers/encoder_layer_4"]
    np.testing.assert_array_equal(acts["block4"][:, 2, 3], tokens[:, 1 + 2 * 11 + 3])
    np.testing.assert_array_equal(acts["block4/cls"], tokens[:, 0])
    hidden = acts["encoder/layers/encoder_layer_4/mlp/hidden"]
    np.testing.assert_array_equal(acts["block4/mlp"][:, 5, 10], hidden[:, 1 + 5 * 11 + 10])
    assert all(np.isfinite(a).all() for a in acts.values())
    assert acts["block11"].std() > 0 and acts["output"].std() > 0


def test_position_embeddings_resize_like_torch():
    torch = pytest.importorskip("torch", reason="the comparison needs torch")
    positions = np.random.default_rng(0).normal(size=(1, 197, 8)).astype(np.float32)
    for grid in [(14, 14), (6, 11), (20, 15), (1, 1)]:
        ours = np.asarray(vit.resize_positions(positions, grid))
        patches = torch.from_numpy(positions[:, 1:].reshape(1, 14, 14, 8)).permute(0, 3, 1, 2)
        theirs = torch.nn.functional.interpolate(
            patches, size=grid, mode="bilinear", align_corners=False
        )
        theirs = theirs.permute(0, 2, 3, 1).reshape(1, -1, 8).numpy()
        np.testing.assert_array_equal(ours[:, 0], positions[:, 0])
        np.testing.assert_allclose(ours[:, 1:], theirs, rtol=1e-6, atol=1e-6, err_msg=str(grid))


# --- weights -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def state(model):
    """The model's weights as a torchvision-layout state dict, exported through the table."""
    return weights.state_dict_from_params(model.params["params"], vit.torchvision_table())


def test_state_dict_has_torchvision_names_and_layouts(state):
    assert len(state) == 152
    block = "encoder.layers.encoder_layer_3"
    assert state["conv_proj.weight"].shape == (768, 3, 16, 16)  # OIHW
    assert state["class_token"].shape == (1, 1, 768)
    assert state["encoder.pos_embedding"].shape == (1, 197, 768)
    assert state[f"{block}.self_attention.in_proj_weight"].shape == (2304, 768)  # (out, in)
    assert state[f"{block}.self_attention.in_proj_bias"].shape == (2304,)
    assert state[f"{block}.self_attention.out_proj.weight"].shape == (768, 768)
    assert state[f"{block}.mlp.0.weight"].shape == (3072, 768)
    assert state[f"{block}.mlp.3.weight"].shape == (768, 3072)
    assert state[f"{block}.ln_2.weight"].shape == state["encoder.ln.bias"].shape == (768,)
    assert state["heads.head.weight"].shape == (1000, 768)


def test_state_dict_round_trip_and_misfits(tmp_path, model, state):
    path = tmp_path / "vit_b_16.safetensors"
    weights.write_safetensors(path, state)
    loaded = vit.ARCHITECTURE.load(path)  # checked against param_shapes(): values from the file
    for ours, theirs in zip(
        jax.tree_util.tree_leaves(loaded.params), jax.tree_util.tree_leaves(model.params),
        strict=True,
    ):  # fmt: skip
        assert np.array_equal(np.asarray(ours), np.asarray(theirs))
    assert fvjax.zoo.architecture("vit_b_16").table() == vit.torchvision_table()
    # An older torchvision's MLP names and a 10-class head do not fit.
    misfit = dict(state)
    misfit["encoder.layers.encoder_layer_0.mlp.linear_1.weight"] = misfit.pop(
        "encoder.layers.encoder_layer_0.mlp.0.weight"
    )
    misfit["heads.head.bias"] = np.zeros(10, np.float32)
    del misfit["class_token"]
    bad = tmp_path / "bad.safetensors"
    weights.write_safetensors(bad, misfit)
    with pytest.raises(weights.WeightsError) as info:
        vit.ARCHITECTURE.load(bad)
    message = str(info.value)
    assert "missing keys (2): class_token, encoder.layers.encoder_layer_0.mlp.0.weight" in message
    assert "unexpected keys (1): encoder.layers.encoder_layer_0.mlp.linear_1.weight" in message
    assert "heads.head.bias: got (10,), expected (1000,)" in message


# --- parity with PyTorch -------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference(state):
    """The PyTorch ViT-B/16 holding the model's weights, exported through the import table."""
    torch = pytest.importorskip("torch", reason="parity with PyTorch needs torch")
    from torch_vit import TorchViTB16

    with torch.device("meta"):  # no default init: the state dict replaces every parameter
        reference = TorchViTB16()
    # strict: exactly the reference's (torchvision's) keys and shapes.
    reference.load_state_dict({k: torch.tensor(v) for k, v in state.items()}, assign=True)
    return reference.eval()


@pytest.mark.parametrize("size", [SIZE, SMALL], ids=["224", "96x180"])
def test_parity_with_a_pytorch_reference(model, forward, reference, size, full_float32):
    """224 px: torchvision's own setting. 96x180 px: a 6x11 grid, position embeddings resized."""
    pytest.importorskip("torch", reason="parity with PyTorch needs torch")
    from torch_reference import assert_layers_match, imagenet_outputs

    ours, theirs = imagenet_outputs(reference, forward, model.params, size)
    errors = assert_layers_match(ours, theirs, f"{size}")
    assert len(errors) == 2 + 3 * 12 + 2


# --- rendering -----------------------------------------------------------------------------


def test_renders_mlp_units_on_cpu(model):
    result = fvjax.render_layer(
        model, "block6/mlp", units=[0, 3071], size=64, steps=4, seeds=1, steps_per_call=4
    )
    assert result.images.shape == (2, 1, 64, 64, 3)
    assert np.isfinite(result.images).all() and np.isfinite(result.activations).all()
