"""``fvjax convert``: state dict -> converted weights, and loading them wherever weights go."""

import contextlib
import dataclasses
import hashlib
import io
import json

import jax
import numpy as np
import pytest

from fvjax import cli, zoo
from fvjax.job import config as config_lib
from fvjax.job import plan as plan_lib
from fvjax.models import converted as converted_lib
from fvjax.models import weights
from fvjax.models.zoo import inception, resnet


def _assert_same_params(got, want):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert np.asarray(a).dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), b)


def _convert(capsys, *args):
    """``(status, stdout, stderr)`` of ``fvjax convert ARGS``."""
    status = cli.main(["convert", *map(str, args)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture(scope="module")
def source():
    return inception.random_params(seed=1)


@pytest.fixture(scope="module")
def state_files(source, tmp_path_factory):
    """The random InceptionV1 state dict as ``.npz`` and ``.safetensors``."""
    state = weights.state_dict_from_params(source, inception.lucent_table())
    folder = tmp_path_factory.mktemp("state")
    np.savez(folder / "w.npz", **state)
    weights.write_safetensors(folder / "w.safetensors", state)
    return {"npz": folder / "w.npz", "safetensors": folder / "w.safetensors"}


@pytest.fixture(scope="module")
def converted(state_files, tmp_path_factory):
    """``fvjax convert`` of the ``.npz``: ``(OUT, stdout)``."""
    out = tmp_path_factory.mktemp("converted") / "inception.fvjax"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = cli.main(["convert", "--model", "inceptionv1", str(state_files["npz"]), str(out)])
    assert status == 0
    return out, stdout.getvalue().strip()


def test_convert_writes_the_params_and_a_record(converted, state_files):
    out, printed = converted
    assert sorted(p.name for p in out.iterdir()) == ["params", "record.json"]
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no staging left beside it
    record = json.loads((out / "record.json").read_text())
    sha = hashlib.sha256(state_files["npz"].read_bytes()).hexdigest()
    assert record["model"] == "inceptionv1" and record["source"] == "w.npz"
    assert record["source_sha256"] == sha and record["format"] == converted_lib.PARAMS_FORMAT
    assert record["parameters"] == 7_066_380 and record["bytes"] == 4 * 7_066_380
    assert {"fvjax", "jax", "orbax-checkpoint"} <= set(record["versions"])
    assert record["versions"]["jax"] == jax.__version__
    assert printed.startswith(f"converted {state_files['npz']} to {out}: inceptionv1, ")
    assert "7,066,380 parameters, 28.3 MB in " in printed and printed.endswith(" s")


def test_converted_params_load_bit_for_bit(converted, source):
    out, _ = converted
    _assert_same_params(zoo.load("inceptionv1", weights=str(out)).params["params"], source)
    _assert_same_params(inception.ARCHITECTURE.load(out).params["params"], source)


def test_a_pth_state_dict_converts_too(capsys, state_files, source, tmp_path):
    torch = pytest.importorskip("torch")
    state = weights.load_state_dict(state_files["npz"])
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, tmp_path / "w.pth")
    status, _, stderr = _convert(
        capsys, "--model", "inceptionv1", tmp_path / "w.pth", tmp_path / "o"
    )
    assert status == 0, stderr
    _assert_same_params(zoo.architecture("inceptionv1").params(tmp_path / "o"), source)


def test_config_weights_key_takes_converted_weights(converted, source):
    out, _ = converted
    config = config_lib.from_dict({"model": "inceptionv1", "weights": str(out)})
    _assert_same_params(plan_lib.build_model(config).params["params"], source)


def test_existing_out_is_refused_without_force(capsys, state_files, source, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    status, stdout, stderr = _convert(
        capsys, "--model", "inceptionv1", state_files["safetensors"], out
    )
    assert status == 2 and stdout == ""
    assert f"fvjax: error: {out} exists; pass --force to replace it" in stderr
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    assert (out / "mine.txt").read_text() == "keep me"

    args = ("--model", "inceptionv1", state_files["safetensors"], out, "--force")
    status, _, stderr = _convert(capsys, *args)
    assert status == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == ["params", "record.json"]
    assert json.loads((out / "record.json").read_text())["source"] == "w.safetensors"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # the old one is gone, no staging
    _assert_same_params(zoo.architecture("inceptionv1").params(out), source)


def test_misfit_state_dict_lists_the_keys_and_writes_nothing(capsys, source, tmp_path):
    state = weights.state_dict_from_params(source, inception.lucent_table())
    del state["mixed4a_1x1_pre_relu_conv.bias"]
    state["extra.weight"] = np.zeros(3, np.float32)
    state["conv2d0_pre_relu_conv.weight"] = np.zeros((64, 3, 5, 5), np.float32)
    path = tmp_path / "misfit.safetensors"
    weights.write_safetensors(path, state)
    out = tmp_path / "out"
    status, stdout, stderr = _convert(capsys, "--model", "inceptionv1", path, out)
    assert status == 2 and stdout == ""
    assert stderr.startswith("fvjax: error: the state dict does not fit the model")
    assert "missing keys (1): mixed4a_1x1_pre_relu_conv.bias" in stderr
    assert "unexpected keys (1): extra.weight" in stderr
    assert "conv2d0_pre_relu_conv.weight: got (64, 3, 5, 5), expected (64, 3, 7, 7)" in stderr
    assert [p.name for p in tmp_path.iterdir()] == ["misfit.safetensors"]


def test_a_failed_forced_convert_keeps_the_old_weights(capsys, converted, source, tmp_path):
    out = tmp_path / "out"
    (tmp_path / "bad.npz").write_bytes(b"not a zip file")
    old, _ = converted
    status, _, stderr = _convert(capsys, "--model", "inceptionv1", old, out)
    assert status == 2 and "unknown weights format" in stderr  # converted weights are no state dict
    converted_lib.save_params(out, source, {"model": "inceptionv1"})
    status, _, stderr = _convert(
        capsys, "--model", "inceptionv1", tmp_path / "bad.npz", out, "--force"
    )
    assert status == 2 and "fvjax: error:" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npz", "out"]
    _assert_same_params(weights.load_params(out, inception.lucent_table(), source), source)


def test_a_kill_mid_write_leaves_nothing_that_loads(monkeypatch, source, tmp_path):
    out, seen = tmp_path / "out", []

    def killed(*args, **kwargs):
        # After orbax wrote params/, before record.json: what a SIGKILL now would leave.
        seen.extend(p.name for p in tmp_path.iterdir())
        raise KeyboardInterrupt

    monkeypatch.setattr(converted_lib, "atomic_write", killed)
    with pytest.raises(KeyboardInterrupt):
        converted_lib.save_params(out, source, {"model": "inceptionv1"})
    assert len(seen) == 1 and seen[0].startswith(".out.") and seen[0].endswith(".tmp")
    assert list(tmp_path.iterdir()) == []  # and the staging directory is cleaned up


def test_converted_weights_of_another_structure_are_refused(converted, source):
    out, _ = converted
    table = inception.lucent_table()
    other = {"stem": {"kernel": np.zeros((3, 3, 3, 8), np.float32)}, **source}
    del other["mixed5b"]
    with pytest.raises(weights.WeightsError) as info:
        weights.load_params(out, table, other)
    message = str(info.value)
    assert (
        f"the converted weights {out} (converted for model 'inceptionv1' from 'w.npz')" in message
    )
    assert "missing (1): stem/kernel" in message
    assert "unexpected (12): mixed5b/1x1_pre_relu/bias, mixed5b/1x1_pre_relu/kernel" in message
    assert "fvjax convert --model NAME WEIGHTS OUT" in message

    reshaped = jax.tree.map(lambda x: x, source)
    reshaped["softmax2_pre_activation"]["bias"] = np.zeros(1000, np.float32)
    with pytest.raises(weights.WeightsError, match="mismatches") as info:
        weights.load_params(out, table, reshaped)
    assert "softmax2_pre_activation/bias: saved (1008,), expected (1000,)" in str(info.value)


def test_a_directory_of_no_converted_weights_says_how_to_make_them(tmp_path):
    like = {"dense": {"kernel": np.zeros((2, 3), np.float32)}}
    with pytest.raises(weights.WeightsError, match="not converted weights") as info:
        weights.load_params(tmp_path, [], like)
    assert "fvjax convert --model NAME WEIGHTS OUT" in str(info.value)


@pytest.mark.parametrize("name", ["inceptionv2", "tiny"])
def test_unknown_model_names_the_models_that_take_weights(capsys, state_files, tmp_path, name):
    status, _, stderr = _convert(capsys, "--model", name, state_files["npz"], tmp_path / "o")
    assert status == 2
    if name == "inceptionv2":  # a typo: the unknown-model error, with the nearest name
        assert "fvjax: error: unknown model 'inceptionv2'. Did you mean 'inceptionv1'?" in stderr
    else:
        assert "fvjax: error: model 'tiny' ships its own weights and takes no weights" in stderr
        assert "models that take one: inceptionv1, resnet50, vgg16" in stderr
    assert list(tmp_path.iterdir()) == []


def test_weights_are_checked_against_a_template_not_drawn(monkeypatch, state_files, tmp_path):
    """Loading or converting real weights draws no random ones (VGG-16's are 553 MB)."""
    template = inception.param_shapes()
    like = jax.tree.map(lambda x: (x.shape, x.dtype), inception.random_params())
    assert jax.tree.map(lambda s: (s.shape, s.dtype), template) == like

    def drew(*args, **kwargs):
        pytest.fail("drew weights")

    monkeypatch.setattr(inception, "random_params", drew)
    patched = dataclasses.replace(inception.ARCHITECTURE, default_params=drew)
    monkeypatch.setitem(zoo.ARCHITECTURES, "inceptionv1", patched)
    monkeypatch.setattr(inception, "ARCHITECTURE", patched)
    for path in (state_files["npz"], state_files["safetensors"]):
        assert zoo.load("inceptionv1", weights=str(path)).name == "inceptionv1"
    with contextlib.redirect_stdout(io.StringIO()):
        status = cli.main(
            ["convert", "--model", "inceptionv1", str(state_files["npz"]), str(tmp_path / "c")]
        )
    assert status == 0
    assert inception.ARCHITECTURE.load(tmp_path / "c").name == "inceptionv1"


def test_resnet_template_matches_its_random_weights():
    shapes = jax.tree.map(lambda s: (s.shape, s.dtype), resnet.param_shapes())
    assert shapes == jax.tree.map(lambda x: (x.shape, x.dtype), resnet.random_params())


def _cut(path, tmp_path, keep):
    """A copy of ``path`` cut after ``keep`` bytes (negative: that many bytes short)."""
    data = path.read_bytes()
    cut = tmp_path / f"cut{path.suffix}"
    cut.write_bytes(data[:keep])
    return cut, len(data)


def test_a_truncated_safetensors_file_is_called_truncated(capsys, state_files, tmp_path):
    # Cut inside the last tensors, as an interrupted download leaves it.
    cut, size = _cut(state_files["safetensors"], tmp_path, -(1 << 20))
    status, stdout, stderr = _convert(capsys, "--model", "inceptionv1", cut, tmp_path / "o")
    assert status == 2 and stdout == ""
    assert stderr == (
        f"fvjax: error: {cut} is truncated: expected {size} bytes, found {size - (1 << 20)}; "
        "the file was cut short (an interrupted download or copy?): download or copy it again\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.safetensors"]
    cut, _ = _cut(state_files["safetensors"], tmp_path, 100)  # inside the JSON header
    with pytest.raises(weights.WeightsError, match=r"is truncated: expected at least \d+ bytes, "):
        weights.load_state_dict(cut)


@pytest.mark.parametrize("keep", [20, 300, 1000, -10])
def test_a_truncated_npz_file_is_called_truncated(tmp_path, keep):
    whole = tmp_path / "w.npz"
    np.savez(whole, a=np.zeros(100), b=np.ones((3, 4), np.float32))
    cut, size = _cut(whole, tmp_path, keep)
    found = cut.stat().st_size
    with pytest.raises(weights.WeightsError) as info:
        weights.load_state_dict(cut)
    message = str(info.value)
    assert message.startswith(f"{cut} is truncated: expected at least "), message
    assert f" bytes, found {found}; " in message and message.endswith("download or copy it again")
    expected = int(message.split("at least ")[1].split(" ")[0])
    assert found < expected <= size  # a true lower bound: never more than the whole file
    if keep == 300:  # cut inside member a: the file needs all of a and its directory entry
        assert expected > 1000


def test_a_truncated_pth_file_is_called_truncated(tmp_path):
    torch = pytest.importorskip("torch")
    whole = tmp_path / "w.pth"
    torch.save({"fc.weight": torch.ones(64, 32)}, whole)
    cut, _ = _cut(whole, tmp_path, -100)
    with pytest.raises(
        weights.WeightsError, match=r"cut\.pth is truncated: found \d+ bytes and no"
    ):
        weights.load_state_dict(cut)
    cut.write_bytes(b"not a torch file")
    with pytest.raises(weights.WeightsError, match=r"torch cannot read it \(.+\); save the state"):
        weights.load_state_dict(cut)
