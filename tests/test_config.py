import sys

import pytest

from fvjax.errors import ConfigError
from fvjax.job import config as config_lib
from fvjax.job.config import Config, from_dict, load


def test_defaults_are_valid_and_resolve_to_every_key():
    data, sha = config_lib.to_dict(Config()), config_lib.sha256(Config())
    assert set(data) == {
        "model", "layers", "units", "objective", "seeds", "steps", "size", "batch_size",
        "steps_per_call", "param", "transforms", "optimizer", "output", "progress",
        "checkpoint", "checkpoint_every", "devices", "weights", "shard", "distributed",
        "deterministic", "model_dtype", "remat", "redirect_relu", "diversity", "checks", "facets",
        "natural", "atlas",
    }  # fmt: skip
    assert data["param"] == {"kind": "fourier", "decorrelate": True, "decay": 1.0,
                             "output": "sigmoid", "levels": 4, "spectrum": "",
                             "alpha": False, "opacity": 0.5, "cppn_width": 24,
                             "cppn_depth": 8}  # fmt: skip
    assert data["layers"] == ["block3"] and data["units"] == "all"
    assert len(sha) == 64 and int(sha, 16) >= 0


def test_unknown_top_level_key_suggests_and_lists():
    with pytest.raises(ConfigError) as info:
        from_dict({"step": 10})
    message = str(info.value)
    assert "'step'" in message
    assert "Did you mean 'steps'" in message
    assert "Allowed keys at the top level:" in message and "seeds" in message


def test_unknown_nested_key_names_the_dotted_key():
    with pytest.raises(ConfigError) as info:
        from_dict({"param": {"knd": "pixel"}})
    message = str(info.value)
    assert "'param.knd'" in message and "Did you mean 'kind'" in message
    assert "Allowed keys in [param]: kind, decorrelate, decay, output" in message


def test_unknown_override_key_suggests():
    with pytest.raises(ConfigError, match=r"'optimizer.learning_rat'.*'learning_rate'"):
        from_dict({}, ["optimizer.learning_rat=0.1"])
    with pytest.raises(ConfigError, match=r"'parm'.*Did you mean 'param'"):
        from_dict({}, ["parm.kind=pixel"])


def test_overrides_apply_and_parse_as_toml():
    config = from_dict(
        {"steps": 100, "param": {"kind": "fourier", "decay": 2.0}},
        [
            "steps=8",
            "param.kind=pixel",
            "units=[0, 3]",
            "layers=block2",  # not TOML: a plain string, made a one-layer list
            "size=[16, 24]",
            'model="tiny"',
            "optimizer.learning_rate=1",
            "progress=false",
        ],
    )
    assert config.steps == 8
    assert config.param.kind == "pixel" and config.param.decay == 2.0  # untouched key kept
    assert config.units == (0, 3)
    assert config.layers == ("block2",)
    assert config.size == (16, 24)
    assert config.optimizer.learning_rate == 1.0
    assert config.progress is False


@pytest.mark.parametrize(
    "override",
    ["param=pixel", "steps", "steps.x=1", "=3"],
)
def test_malformed_overrides_are_config_errors(override):
    with pytest.raises(ConfigError):
        from_dict({}, [override])


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"steps": -1}, r"'steps' must be an integer >= 1, got -1"),
        ({"steps": True}, r"'steps' must be an integer"),
        ({"seeds": 0}, r"'seeds'"),
        ({"size": 0}, r"'size'"),
        ({"units": [-1]}, r"'units'"),
        ({"units": [1, 1]}, r"unit 1 more than once"),
        ({"units": "some"}, r"'units'"),
        ({"layers": []}, r"'layers'"),
        ({"layers": ["a", "a"]}, r"layer 'a' more than once"),
        ({"objective": "chanel"}, r"channel, neuron.*Did you mean 'channel'"),
        ({"param": {"kind": "jpeg"}}, r"'param.kind' must be one of fourier, pixel"),
        ({"param": {"output": "tanh"}}, r"'param.output'"),
        ({"param": {"decay": -1}}, r"'param.decay'"),
        ({"param": "pixel"}, r"section \[param\] must be a table"),
        ({"transforms": {"preset": "strong"}}, r"'transforms.preset'"),
        ({"transforms": {"scale": 0}}, r"'transforms.scale' must be a number > 0"),
        ({"optimizer": {"name": "adamm"}}, r"Did you mean 'adam'"),
        ({"optimizer": {"learning_rate": 0}}, r"'optimizer.learning_rate'"),
        ({"model": "tinny"}, r"unknown model 'tinny'.*Did you mean 'tiny'"),
        ({"output": ""}, r"'output'"),
        ({"remat": True}, r"'remat' must be one of none, convs, blocks, got True"),
        ({"model_dtype": "float16"}, r"'model_dtype' must be one of float32, bfloat16"),
    ],
)
def test_bad_values_are_config_errors(data, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(data)


def test_configs_built_in_python_are_checked_too():
    with pytest.raises(ConfigError, match="'steps'"):
        Config(steps=0)
    with pytest.raises(ConfigError, match="'param.kind'"):
        config_lib.ParamConfig(kind="png")


def test_sha_is_stable_across_key_order_and_changes_with_values():
    a = {"steps": 8, "seeds": 2, "param": {"kind": "pixel", "output": "clip"}}
    b = {"param": {"output": "clip", "kind": "pixel"}, "seeds": 2, "steps": 8}
    assert config_lib.sha256(from_dict(a)) == config_lib.sha256(from_dict(b))
    # Spelling a default out does not change the job, nor its hash.
    assert config_lib.sha256(from_dict({**a, "size": 128})) == config_lib.sha256(from_dict(a))
    assert config_lib.sha256(from_dict({**a, "steps": 9})) != config_lib.sha256(from_dict(a))


def test_resolved_dict_round_trips():
    config = from_dict({"units": [1, 2], "size": [16, 24], "layers": ["a/b"]})
    data = config_lib.to_dict(config)
    assert from_dict(data) == config


TOML = """
model = "tiny"
layers = ["block2", "block3"]
units = [0, 1]
seeds = 3

[param]
kind = "pixel"
"""

PY = """
CONFIG = {
    "param": {"kind": "pixel"},
    "seeds": 3,
    "units": list(range(2)),
    "layers": ["block2", "block3"],
    "model": "tiny",
}
"""

YAML = """
model: tiny
layers: [block2, block3]
units: [0, 1]
seeds: 3
param:
  kind: pixel
"""


def test_toml_py_and_yaml_files_load_to_the_same_config(tmp_path):
    (tmp_path / "job.toml").write_text(TOML)
    (tmp_path / "job.py").write_text(PY)
    (tmp_path / "job.yaml").write_text(YAML)
    configs = [load(tmp_path / name) for name in ("job.toml", "job.py", "job.yaml")]
    assert configs[0] == configs[1] == configs[2]
    assert configs[0].param.kind == "pixel" and configs[0].units == (0, 1)
    assert len({config_lib.sha256(c) for c in configs}) == 1
    assert load(tmp_path / "job.toml", ["seeds=5"]).seeds == 5


def test_yaml_without_pyyaml_says_what_to_do(tmp_path, monkeypatch):
    (tmp_path / "job.yml").write_text(YAML)
    monkeypatch.setitem(sys.modules, "yaml", None)  # import yaml now fails
    with pytest.raises(ConfigError, match="pip install pyyaml, or use a .toml config"):
        load(tmp_path / "job.yml")


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("job.toml", "steps = ", "not valid TOML"),
        ("job.py", "SETTINGS = {}", "must define a dict named CONFIG"),
        ("job.py", "CONFIG = {", "failed to run: SyntaxError"),
        ("job.json", "{}", r"must end in one of \.toml"),
        ("job.toml", "[param]\nknd = 1", "'param.knd'"),
    ],
)
def test_bad_files_are_config_errors(tmp_path, name, text, match):
    (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=match):
        load(tmp_path / name)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load(tmp_path / "nope.toml")


def test_shipped_configs_load():
    tiny = load("configs/tiny.toml")
    assert tiny.model == "tiny" and tiny.layers == ("block2", "block3") and tiny.seeds == 2
    default = load("configs/default.toml")  # the worldnet model is only imported when built
    assert default.model == "worldnet" and default.units == "all" and default.seeds == 4
    assert default.checks.enabled and default.facets.enabled and default.atlas.enabled


def test_describe_lists_every_key():
    text = config_lib.describe()
    for key in ("model", "param.kind", "transforms.scale", "optimizer.learning_rate", "output"):
        assert f"\n{key} = " in "\n" + text


def test_identity_keeps_the_keys_that_decide_the_pictures():
    base = from_dict({"layers": ["block2"], "steps": 8})
    same = from_dict(
        {"layers": ["block2"], "steps": 8, "output": "elsewhere", "progress": False},
        ["shard='1/2'", "checkpoint=false", "checkpoint_every=4", "distributed=true"],
    )
    assert config_lib.identity(same) == config_lib.identity(base)
    assert config_lib.sha256(same) != config_lib.sha256(base)  # the manifest hash sees all
    for change in ("steps=9", "seeds=2", "batch_size=4", "remat='convs'", "param.kind='pixel'"):
        other = from_dict({"layers": ["block2"], "steps": 8}, [change])
        assert config_lib.identity(other) != config_lib.identity(base), change
    assert config_lib.identity(config_lib.to_dict(base)) == config_lib.identity(base)
