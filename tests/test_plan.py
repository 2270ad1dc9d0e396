"""The job plan: model, objectives and every layer's render plan, checked before rendering."""

import textwrap

import jax
import numpy as np
import pytest

import fvjax
from fvjax import cli
from fvjax.errors import (
    ConfigError,
    FvjaxError,
    OutputPathError,
    UnitRangeError,
    UnknownLayerError,
)
from fvjax.job import plan as plan_lib
from fvjax.job.config import from_dict, to_dict
from fvjax.models import weights as weights_lib
from fvjax.models.zoo import inception
from fvjax.rendering import maco


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
    model = plan_lib.build_model(from_dict({"model": "my_models:rgb"}))
    assert isinstance(model, fvjax.Model) and model.name == "rgb"
    with pytest.raises(ConfigError, match="returned int, not an fvjax.models.Model"):
        plan_lib.build_model(from_dict({"model": "my_models:not_a_model"}))
    with pytest.raises(ConfigError, match="cannot import model factory"):
        plan_lib.build_model(from_dict({"model": "my_models:missing"}))
    with pytest.raises(ConfigError, match="cannot import model factory"):
        plan_lib.build_model(from_dict({"model": "no_such_module_here:f"}))


def test_objectives_are_checked_against_the_model_before_rendering():
    shapes = fvjax.zoo.load("tiny").layer_shapes(16)
    objectives = plan_lib.build_objectives(
        from_dict({"layers": ["block2", "block3"], "size": 16}), shapes
    )
    assert objectives["block2"].batch_size == 16 and objectives["block3"].batch_size == 32
    neuron = plan_lib.build_objectives(
        from_dict({"layers": ["block3"], "units": [2], "objective": "neuron", "size": 16}), shapes
    )
    assert neuron["block3"].label == "neuron:block3"
    with pytest.raises(UnknownLayerError, match=r"'blok3'.*Did you mean 'block3'"):
        plan_lib.build_plan(from_dict({"layers": ["block2", "blok3"], "size": 16}))
    with pytest.raises(UnitRangeError, match="unit 40 is out of range"):
        plan_lib.build_plan(from_dict({"layers": ["block3"], "units": [0, 40], "size": 16}))
    small = from_dict({"model": "worldnet", "layers": ["block3/conv"], "size": 4})
    with pytest.raises(fvjax.ImageSizeError, match="4x4 images are too small for model"):
        plan_lib.build_plan(from_dict(to_dict(small), ["transforms.preset='none'"]))


def test_the_plan_holds_one_optimizer_param_and_transform_for_every_layer():
    config = from_dict(
        {"layers": ["block2", "block3"], "size": 16, "transforms": {"scale": 0.25},
         "batch_size": 4, "seeds": 2, "steps": 3}
    )  # fmt: skip
    plan = plan_lib.build_plan(config)
    first, second = plan.layers["block2"], plan.layers["block3"]
    assert first.setup.optimizer is second.setup.optimizer is plan_lib.build_optimizer(config)
    assert first.setup.param == fvjax.param.fourier()
    assert first.setup.transform == fvjax.transforms.standard(0.25)
    assert (first.chunk, first.n_chunks, first.n_images) == (4, 8, 32)
    assert (second.chunk, second.n_chunks) == (4, 16)
    assert plan.total_steps == (8 + 16) * 3  # what the job's one progress bar counts
    assert plan.shapes == {"block2": (8, 8, 16), "block3": (4, 4, 32)}
    assert plan.checkpoints.parent.name == ".checkpoints"
    assert plan.checkpoint_dir("a/b").name == "a-b"
    lean = plan_lib.build_plan(from_dict({"layers": ["block2"], "size": 16}, ["remat='convs'"]))
    assert lean.layers["block2"].setup.remat == "convs"
    assert plan_lib.build_plan(from_dict({"checkpoint": False})).checkpoints is None
    pixel = from_dict({}, ["param.kind=pixel", "param.decorrelate=false", "transforms.preset=none"])
    assert plan_lib.build_param(pixel) == fvjax.param.pixel(decorrelate=False)
    assert plan_lib.build_transforms(pixel) == fvjax.transforms.identity()
    pyramid = from_dict({}, ["param.kind=laplacian", "param.levels=3"])
    assert plan_lib.build_param(pyramid) == fvjax.param.laplacian(levels=3)
    with pytest.raises(ConfigError, match="param.levels"):
        from_dict({}, ["param.levels=0"])


def test_maco_and_redirected_relus_are_config_keys(tmp_path):
    keys = {"param": {"kind": "maco"}, "transforms": {"preset": "maco"}, "redirect_relu": 16}
    plan = plan_lib.build_plan(from_dict({"layers": ["block2"], "size": 16, **keys}))
    setup = plan.layers["block2"].setup
    assert setup.param == maco.param() and setup.transform == maco.transforms()
    assert setup.redirect_relu == 16 and plan.layers["block2"].identity()["redirect_relu"] == 16
    np.save(tmp_path / "m.npy", maco.world_spectrum(16).magnitude)
    saved = from_dict({"size": 32}, ["param.kind=maco", f"param.spectrum='{tmp_path}/m.npy'"])
    assert plan_lib.build_param(saved) == maco.param(maco.world_spectrum(16))
    missing = from_dict({}, ["param.kind=maco", f"param.spectrum='{tmp_path}/nope'"])
    with pytest.raises(ConfigError, match="param.spectrum"):
        plan_lib.build_param(missing)
    with pytest.raises(ConfigError, match="redirect_relu"):
        from_dict({"redirect_relu": -2})


def test_checkpoints_are_kept_under_the_identity_of_the_pictures():
    plan = plan_lib.build_plan(from_dict({"layers": ["block2"], "size": 16}))
    moved = plan_lib.build_plan(
        from_dict({"layers": ["block2"], "size": 16, "progress": False, "checkpoint_every": 2})
    )
    other = plan_lib.build_plan(from_dict({"layers": ["block2"], "size": 16, "steps": 9}))
    assert moved.checkpoints == plan.checkpoints != other.checkpoints


def test_a_shard_plans_its_share_of_every_layer():
    config = from_dict({"layers": ["block2", "block3"], "size": 16, "output": "out"})
    share = plan_lib.build_plan(from_dict(to_dict(config), ["shard='1/3'"]))
    assert share.shard == (1, 3) and str(share.output) == "out/shard-1-of-3"
    assert share.layers["block2"].objective.unit_ids().tolist() == [1, 4, 7, 10, 13]
    whole = plan_lib.build_plan(config)
    assert whole.shard == (0, 1) and str(whole.output) == "out"
    assert whole.layers["block2"].objective.unit_ids().tolist() == list(range(16))


def test_remat_blocks_on_a_model_without_blocks_is_refused_once_with_one_message():
    config = from_dict({"layers": ["block2"], "size": 16, "remat": "blocks"})
    with pytest.raises(FvjaxError, match="model 'tiny' has no per-block remat for remat='blocks'"):
        plan_lib.build_plan(config)


def test_a_weights_file_reaches_the_model(tmp_path):
    params = inception.random_params(seed=3)
    path = tmp_path / "inception.npz"
    np.savez(path, **weights_lib.state_dict_from_params(params, inception.lucent_table()))
    model = plan_lib.build_model(from_dict({"model": "inceptionv1", "weights": str(path)}))
    first = jax.tree.leaves(params)[0]
    assert any(np.array_equal(np.asarray(leaf), first) for leaf in jax.tree.leaves(model.params))
    with pytest.raises(ConfigError, match="'tiny' ships its own weights"):
        plan_lib.build_model(from_dict({"model": "tiny", "weights": str(path)}))


def test_diversity_keys_reach_every_layers_render_and_its_identity():
    base = {"model": "tiny", "layers": ["block2", "block3"], "seeds": 2, "size": 32}
    plan = plan_lib.build_plan(from_dict({**base, "diversity": {"weight": 2.0}}))
    for layer, render_plan in plan.layers.items():
        assert render_plan.setup.diversity == fvjax.Diversity(layer, 2.0)
        assert render_plan.identity()["diversity"] == [layer, 2.0]
    chosen = from_dict({**base, "diversity": {"weight": 2.0, "layer": "block2"}})
    assert {p.setup.diversity.layer for p in plan_lib.build_plan(chosen).layers.values()} == {
        "block2"
    }
    assert "diversity" not in plan_lib.build_plan(from_dict(base)).layers["block2"].identity()
    with pytest.raises(FvjaxError, match="at least 2 seeds"):
        plan_lib.build_plan(from_dict({**base, "seeds": 1, "diversity": {"weight": 1.0}}))
    with pytest.raises(ConfigError, match="diversity.weight"):
        from_dict({**base, "diversity": {"weight": -1.0}})


@pytest.mark.parametrize("where", ["file", "under a file"])
def test_an_output_that_cannot_be_made_fails_before_any_work(capsys, monkeypatch, tmp_path, where):
    (tmp_path / "notes.txt").write_text("mine")
    output = tmp_path / "notes.txt" / ("out" if where == "under a file" else "")

    def no_model(config):
        pytest.fail("the model was built before the output was checked")

    monkeypatch.setattr(plan_lib, "build_model", no_model)
    config = from_dict({"model": "tiny", "layers": ["block2"], "size": 16, "output": str(output)})
    with pytest.raises(OutputPathError, match=r"choose another output path"):
        plan_lib.build_plan(config)
    args = ["render", "--config", "configs/tiny.toml", f"output='{output}'", "progress=false"]
    assert cli.main(args) == 2
    problem = (
        f"{output} is an existing file, not a folder"
        if where == "file"
        else f"{output} cannot be created: {tmp_path / 'notes.txt'} is a file, not a folder"
    )
    assert capsys.readouterr().err.startswith(f"fvjax: error: output folder {problem}; choose")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    assert (tmp_path / "notes.txt").read_text() == "mine"
