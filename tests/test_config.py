import sys
import textwrap

import jax
import numpy as np
import pytest

import fvjax
from fvjax import config as config_lib
from fvjax import zoo
from fvjax.config import Config, ConfigError, from_dict, load, resolve
from fvjax.errors import UnitRangeError, UnknownLayerError


def test_defaults_are_valid_and_resolve_to_every_key():
    data, sha = resolve(Config())
    assert set(data) == {
        "model", "layers", "units", "objective", "seeds", "steps", "size", "batch_size",
        "steps_per_call", "param", "transforms", "optimizer", "output", "progress",
        "checkpoint", "checkpoint_every", "devices", "weights", "shard", "distributed",
        "model_dtype", "remat",
    }  # fmt: skip
    assert data["param"] == {"kind": "fourier", "decorrelate": True, "decay": 1.0,
                             "output": "sigmoid"}  # fmt: skip
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
    assert resolve(from_dict(a))[1] == resolve(from_dict(b))[1]
    # Spelling a default out does not change the job, nor its hash.
    assert resolve(from_dict({**a, "size": 128}))[1] == resolve(from_dict(a))[1]
    assert resolve(from_dict({**a, "steps": 9}))[1] != resolve(from_dict(a))[1]


def test_resolved_dict_round_trips():
    config = from_dict({"units": [1, 2], "size": [16, 24], "layers": ["a/b"]})
    data, _ = resolve(config)
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
    assert len({resolve(c)[1] for c in configs}) == 1
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


def test_model_from_an_import_path(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(
        textwrap.dedent(
            """
            import fvjax

            def rgb():
                return fvjax.from_fn(lambda x: {"rgb": x}, name="rgb")

            def not_a_model():
                return 3
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    model = config_lib.build_model(from_dict({"model": "my_models:rgb"}))
    assert isinstance(model, fvjax.Model) and model.name == "rgb"
    with pytest.raises(ConfigError, match="returned int, not an fvjax.models.Model"):
        config_lib.build_model(from_dict({"model": "my_models:not_a_model"}))
    with pytest.raises(ConfigError, match="cannot import model factory"):
        config_lib.build_model(from_dict({"model": "my_models:missing"}))
    with pytest.raises(ConfigError, match="cannot import model factory"):
        config_lib.build_model(from_dict({"model": "no_such_module_here:f"}))


def test_objectives_are_checked_against_the_model_before_rendering():
    model = zoo.load("tiny")
    objectives = config_lib.build_objectives(
        from_dict({"layers": ["block2", "block3"], "size": 16}), model
    )
    assert objectives["block2"].batch_size == 16 and objectives["block3"].batch_size == 32
    neuron = config_lib.build_objectives(
        from_dict({"layers": ["block3"], "units": [2], "objective": "neuron", "size": 16}), model
    )
    assert neuron["block3"].label == "neuron:block3"
    with pytest.raises(UnknownLayerError, match=r"'blok3'.*Did you mean 'block3'"):
        config_lib.build_job(from_dict({"layers": ["block2", "blok3"], "size": 16}))
    with pytest.raises(UnitRangeError, match="unit 40 is out of range"):
        config_lib.build_job(from_dict({"layers": ["block3"], "units": [0, 40], "size": 16}))


def test_job_builds_one_optimizer_and_the_engine_objects():
    config = from_dict(
        {"layers": ["block2"], "size": 16, "transforms": {"scale": 0.25}, "batch_size": 4}
    )
    job = config_lib.build_job(config)
    assert job.optimizer is config_lib.build_optimizer(config)  # same instance: no recompile
    assert job.param == fvjax.param.fourier()
    assert job.transform == fvjax.transforms.standard(0.25)
    kwargs = job.render_kwargs()
    assert kwargs["batch_size"] == 4 and kwargs["steps_per_call"] is None
    assert kwargs["remat"] == "none" and kwargs["model_dtype"] == "float32"
    lean = config_lib.build_job(from_dict({"layers": ["block2"], "size": 16}, ["remat='convs'"]))
    assert lean.render_kwargs()["remat"] == "convs"
    with pytest.raises(ConfigError, match="'remat' is 'blocks' but model 'tiny' has no per-block"):
        config_lib.build_job(from_dict({"layers": ["block2"], "size": 16, "remat": "blocks"}))
    pixel = from_dict({}, ["param.kind=pixel", "param.decorrelate=false", "transforms.preset=none"])
    assert config_lib.build_param(pixel) == fvjax.param.pixel(decorrelate=False)
    assert config_lib.build_transforms(pixel) == fvjax.transforms.identity()


def test_describe_lists_every_key():
    text = config_lib.describe()
    for key in ("model", "param.kind", "transforms.scale", "optimizer.learning_rate", "output"):
        assert f"\n{key} = " in "\n" + text


def test_a_weights_file_reaches_the_model(tmp_path):
    from fvjax import weights as weights_lib
    from fvjax.config import build_model
    from fvjax.zoo import inception

    params = inception.random_params(seed=3)
    path = tmp_path / "inception.npz"
    np.savez(path, **weights_lib.state_dict_from_params(params, inception.lucent_table()))
    model = build_model(from_dict({"model": "inceptionv1", "weights": str(path)}))
    first = jax.tree.leaves(params)[0]
    assert any(np.array_equal(np.asarray(leaf), first) for leaf in jax.tree.leaves(model.params))
    with pytest.raises(ConfigError, match="'tiny' ships its own weights"):
        build_model(from_dict({"model": "tiny", "weights": str(path)}))
