"""InceptionV1 (``inception5h``): layers, weight import, and parity with a PyTorch reference."""

import json
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fvjax
from fvjax.models import weights
from fvjax.models.zoo import inception

SIZE = 224


@pytest.fixture(scope="module")
def model():
    return inception.ARCHITECTURE.load()


@pytest.fixture(scope="module")
def forward():
    """One jitted forward for every InceptionV1 param set (default LRN): compiles once."""
    return jax.jit(inception.ARCHITECTURE.load().apply)


def test_layers_and_shapes_at_224(model):
    shapes = model.layer_shapes(SIZE)
    assert shapes["conv2d0"] == shapes["conv2d0/pre_relu"] == (112, 112, 64)
    assert shapes["conv2d1"] == (56, 56, 64)
    assert shapes["conv2d2"] == (56, 56, 192)
    widths = {"mixed3a": 256, "mixed3b": 480, "mixed4a": 508, "mixed4b": 512, "mixed4c": 512}
    widths |= {"mixed4d": 528, "mixed4e": 832, "mixed5a": 832, "mixed5b": 1024}
    sides = {"3": 28, "4": 14, "5": 7}
    for name, width in widths.items():
        side = sides[name[5]]
        assert shapes[name] == shapes[f"{name}/pre_relu"] == (side, side, width), name
        c1, c3r, c3, c5r, c5, cp = inception.MIXED[name]
        assert c1 + c3 + c5 + cp == width
        assert shapes[f"{name}/3x3_bottleneck_pre_relu"] == (side, side, c3r)
        assert shapes[f"{name}/5x5_pre_relu"] == (side, side, c5)
    assert shapes["softmax2_pre_activation"] == shapes["softmax2"] == (1008,)
    n_params = sum(x.size for x in jax.tree_util.tree_leaves(model.params))
    assert n_params == 7_066_380  # Lucent's layer list, the 1024 -> 1008 head included


def test_units_follow_the_concatenation_order(model, forward):
    images = jax.random.uniform(jax.random.key(0), (1, 64, 64, 3))
    acts = forward(model.params, images)
    c1, _, c3, _, c5, cp = inception.MIXED["mixed4a"]
    mixed = np.asarray(acts["mixed4a"])
    bounds = np.cumsum([0, c1, c3, c5, cp])
    branches = ["1x1", "3x3", "5x5", "pool_reduce"]
    for lo, hi, branch in zip(bounds[:-1], bounds[1:], branches, strict=True):
        branch_out = np.maximum(np.asarray(acts[f"mixed4a/{branch}_pre_relu"]), 0)
        np.testing.assert_array_equal(mixed[..., lo:hi], branch_out)
    np.testing.assert_allclose(np.asarray(acts["softmax2"]).sum(), 1.0, rtol=1e-5)
    assert all(np.isfinite(np.asarray(a)).all() for a in acts.values())


def test_pictures_are_scaled_to_the_graph_range_and_padded_like_tf(model, forward):
    """conv2d0 sees ``255 * x - 117``, padded (2, 3) as TF "SAME" pads a 7x7 stride-2 conv."""
    images = jax.random.uniform(jax.random.key(2), (1, 64, 64, 3))
    conv = model.params["params"]["conv2d0"]["pre_relu"]
    expected = jax.lax.conv_general_dilated(
        255.0 * images - 117.0,
        conv["kernel"],
        window_strides=(2, 2),
        padding=((2, 3), (2, 3)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    got = forward(model.params, images)["conv2d0/pre_relu"]
    np.testing.assert_allclose(
        np.asarray(got), np.asarray(expected + conv["bias"]), rtol=1e-4, atol=1e-3
    )
    assert inception.InceptionV1().lrn == inception.INCEPTION5H_LRN


def test_lrn_follows_tf_semantics():
    x = np.random.default_rng(0).normal(size=(1, 2, 2, 16)).astype(np.float32) * 30
    r, bias, alpha, beta = inception.INCEPTION5H_LRN
    sq = np.pad(x**2, ((0, 0), (0, 0), (0, 0), (r, r)))
    window = sum(sq[..., i : i + 16] for i in range(2 * r + 1))
    expected = x / (bias + alpha * window) ** beta
    got = inception.local_response_norm(jnp.asarray(x), inception.INCEPTION5H_LRN)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5)


# --- weights -------------------------------------------------------------------------------


def test_safetensors_reader_handles_f16_bf16_and_metadata(tmp_path):
    path = tmp_path / "t.safetensors"
    values = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(4, np.float16)}
    weights.write_safetensors(path, values, metadata={"format": "pt"})
    read = weights.read_safetensors(path)
    assert read.keys() == values.keys()
    for name, array in values.items():
        assert read[name].dtype == array.dtype
        np.testing.assert_array_equal(read[name], array)
    # BF16: the top 16 bits of float32, written by hand as another writer would.
    f32 = np.array([1.5, -2.0, 3.0], np.float32)
    raw = (f32.view(np.uint32) >> 16).astype("<u2").tobytes()
    header = json.dumps({"w": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 6]}}).encode()
    (tmp_path / "bf16.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + raw)
    np.testing.assert_array_equal(weights.read_safetensors(tmp_path / "bf16.safetensors")["w"], f32)


def test_unreadable_files_raise_weights_error(tmp_path):
    (tmp_path / "bad.safetensors").write_bytes(b"\x00")
    with pytest.raises(weights.WeightsError, match="not a safetensors file"):
        weights.load_state_dict(tmp_path / "bad.safetensors")
    np.savez(tmp_path / "obj.npz", a=np.array([{"x": 1}], dtype=object))
    with pytest.raises(weights.WeightsError, match="unpickling"):
        weights.load_state_dict(tmp_path / "obj.npz")
    with pytest.raises(weights.WeightsError, match="unknown weights format"):
        (tmp_path / "w.bin").write_bytes(b"")
        weights.load_state_dict(tmp_path / "w.bin")
    with pytest.raises(weights.WeightsError, match="does not exist"):
        weights.load_state_dict(tmp_path / "missing.safetensors")


def test_lucent_table_names_every_parameter():
    table = inception.lucent_table()
    assert table[0] == weights.Entry("conv2d0_pre_relu_conv", ("conv2d0", "pre_relu"), "conv")
    entries = {e.torch_name: e for e in table}
    assert entries["mixed4a_5x5_bottleneck_pre_relu_conv"].flax_path == (
        "mixed4a",
        "5x5_bottleneck_pre_relu",
    )
    assert table[-1].torch_name == "softmax2_pre_activation_matmul"
    assert len(table) == 3 + 6 * len(inception.MIXED) + 1


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_state_dict_round_trip(tmp_path, model, forward, suffix):
    source = inception.random_params(seed=1)
    state = weights.state_dict_from_params(source, inception.lucent_table())
    assert state["conv2d0_pre_relu_conv.weight"].shape == (64, 3, 7, 7)  # OIHW
    assert state["softmax2_pre_activation_matmul.weight"].shape == (1008, 1024)  # (out, in)
    path = tmp_path / f"inception5h{suffix}"
    if suffix == ".npz":
        np.savez(path, **state)
    else:
        weights.write_safetensors(path, state)
    loaded = inception.ARCHITECTURE.load(path)
    # Same tree, same values: the import is exact.
    jax.tree_util.tree_map(np.testing.assert_array_equal, loaded.params["params"], source)
    images = jax.random.uniform(jax.random.key(1), (1, 64, 64, 3))
    out_loaded = forward(loaded.params, images)["mixed4a"]
    out_source = forward({"params": source}, images)["mixed4a"]
    np.testing.assert_array_equal(np.asarray(out_loaded), np.asarray(out_source))


def test_misfit_state_dict_lists_every_problem(tmp_path):
    state = weights.state_dict_from_params(inception.random_params(), inception.lucent_table())
    del state["mixed4a_3x3_pre_relu_conv.weight"]
    del state["conv2d1_pre_relu_conv.bias"]
    state["mixed4a_aux.weight"] = np.zeros(3, np.float32)
    state["mixed5b_1x1_pre_relu_conv.weight"] = np.zeros((384, 832, 3, 3), np.float32)
    path = tmp_path / "bad.safetensors"
    weights.write_safetensors(path, state)
    with pytest.raises(weights.WeightsError) as info:
        inception.ARCHITECTURE.load(path)
    message = str(info.value)
    assert "missing keys (2): conv2d1_pre_relu_conv.bias, mixed4a_3x3_pre_relu_conv.weight" in (
        message
    )
    assert "unexpected keys (1): mixed4a_aux.weight" in message
    assert (
        "mixed5b_1x1_pre_relu_conv.weight: got (384, 832, 3, 3), expected (384, 832, 1, 1)"
    ) in message
    assert isinstance(info.value, fvjax.errors.FvjaxError)


def test_pth_needs_torch_or_is_read_without_unpickling(tmp_path):
    path = tmp_path / "w.pth"
    try:
        import torch
    except ImportError:
        path.write_bytes(b"")
        with pytest.raises(weights.WeightsError, match="needs torch"):
            weights.load_state_dict(path)
        return
    torch.save({"fc.weight": torch.ones(2, 3)}, path)
    np.testing.assert_array_equal(weights.load_state_dict(path)["fc.weight"], np.ones((2, 3)))


# --- parity with PyTorch -------------------------------------------------------------------


@pytest.mark.parametrize("lrn", ["lucent", "tf"])
def test_parity_with_a_pytorch_reference(tmp_path, lrn, full_float32):
    torch = pytest.importorskip("torch", reason="parity with PyTorch needs torch")
    from torch_reference import TorchInceptionV1, relative_errors

    torch.manual_seed(0)
    reference = TorchInceptionV1(lrn=lrn).eval()
    with torch.no_grad():  # He-normal weights keep activations of every depth in range
        for param_name, param in reference.named_parameters():
            if param_name.endswith("weight"):
                torch.nn.init.kaiming_normal_(param, nonlinearity="relu")
            else:
                torch.nn.init.normal_(param, std=0.1)
    path = tmp_path / "reference.safetensors"
    weights.write_safetensors(path, {k: v.numpy() for k, v in reference.state_dict().items()})
    settings = inception.LUCENT_LRN if lrn == "lucent" else inception.INCEPTION5H_LRN
    model = inception.build(inception.ARCHITECTURE.params(path), lrn=settings)

    images = np.random.default_rng(0).uniform(size=(2, SIZE, SIZE, 3)).astype(np.float32)
    with torch.no_grad():
        theirs = reference(torch.from_numpy(images.transpose(0, 3, 1, 2) * 255.0 - 117.0))
    ours = jax.jit(model.apply)(model.params, images)
    assert set(theirs) <= set(ours)
    errors = relative_errors(ours, theirs)
    print(f"\nmax relative error per layer (lrn={lrn}):")
    print("\n".join(f"  {name:34s} {err:.2e}" for name, err in errors.items()))
    bad = {name: err for name, err in errors.items() if not err < 1e-4}
    assert not bad, bad


# --- rendering -----------------------------------------------------------------------------


def test_renders_mixed4a_on_cpu(model):
    result = fvjax.render_layer(
        model, "mixed4a", units=[0, 444], size=64, steps=4, seeds=1, steps_per_call=4
    )
    assert result.images.shape == (2, 1, 64, 64, 3)
    assert np.isfinite(result.images).all() and np.isfinite(result.activations).all()
