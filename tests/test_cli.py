import contextlib
import io
import json
from html.parser import HTMLParser

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from fvjax import cli, zoo
from fvjax.job import config as config_lib
from fvjax.job import run as job_run

# A tiny job every test shares (one compilation per layer): 2 units x 2 seeds of two layers.
JOB = ["steps=3", "size=16", "units=[0, 1]", "progress=false"]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """Run ``fvjax render`` once; keep what it printed and every RenderResult it made."""
    out = tmp_path_factory.mktemp("render") / "out"
    results = []
    real_run_plan = job_run.run_plan

    def recording_run_plan(*args, **kwargs):
        results.append(real_run_plan(*args, **kwargs))
        return results[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(job_run, "run_plan", recording_run_plan)
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            status = cli.main(["render", "--config", "configs/tiny.toml", *JOB, f"output={out}"])
    return {
        "status": status,
        "out": out,
        "stdout": stdout.getvalue(),
        "stderr": stderr.getvalue(),
        "results": results,
        "manifest": json.loads((out / "manifest.json").read_text()),
    }


def test_render_succeeds_and_says_where_the_gallery_is(rendered):
    assert rendered["status"] == 0, rendered["stderr"]
    assert f"gallery: {rendered['out'].resolve() / 'index.html'}" in rendered["stdout"]
    assert "wrote 8 pictures of 2 layer(s)" in rendered["stdout"]


def test_render_writes_one_png_per_unit_and_seed_and_a_grid(rendered):
    out = rendered["out"]
    for layer in ("block2", "block3"):
        names = sorted(p.name for p in (out / layer).glob("unit*.png"))
        assert names == [f"unit000{u}_seed{s}.png" for u in (0, 1) for s in (0, 1)]
        with Image.open(out / layer / "unit0001_seed1.png") as png:
            assert png.size == (16, 16) and png.mode == "RGB"
        with Image.open(out / layer / "grid.png") as grid:
            assert grid.size == (2 * 16 + 2, 2 * 16 + 2)


def test_manifest_records_config_hash_versions_and_activations(rendered):
    manifest = rendered["manifest"]
    config = config_lib.load("configs/tiny.toml", [*JOB, f"output={rendered['out']}"])
    data, sha = config_lib.to_dict(config), config_lib.sha256(config)
    assert manifest["config"] == data and manifest["config_sha256"] == sha
    assert manifest["complete"] is True and manifest["model"] == "tiny"
    assert manifest["versions"]["jax"] == __import__("jax").__version__
    assert manifest["backend"]["platform"] == "cpu" and manifest["backend"]["device_count"] >= 1
    assert {"setup_seconds", "render_seconds", "write_seconds", "total_seconds"} <= set(
        manifest["timings"]
    )
    assert [layer["layer"] for layer in manifest["layers"]] == ["block2", "block3"]

    results = {result.layer: result for result in rendered["results"]}
    assert len(manifest["images"]) == 8
    for entry in manifest["images"]:
        result = results[entry["layer"]]
        i, j = list(result.units).index(entry["unit"]), result.seeds.index(entry["seed"])
        assert entry["activation"] == float(result.activations[i, j])
        assert entry["file"] == f"{entry['layer']}/unit{entry['unit']:04d}_seed{entry['seed']}.png"
        assert (rendered["out"] / entry["file"]).is_file()


def test_saved_png_is_the_picture_of_its_unit(rendered):
    """Re-scoring each PNG with the model gives back (up to 8-bit rounding) its activation."""
    model = zoo.load("tiny")
    for entry in rendered["manifest"]["images"]:
        with Image.open(rendered["out"] / entry["file"]) as png:
            image = jnp.asarray(np.asarray(png, np.float32) / 255.0)[None]
        value = float(model.activations(image)[entry["layer"]][0].mean((0, 1))[entry["unit"]])
        assert value == pytest.approx(entry["activation"], rel=0.02, abs=1e-3)


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.links += [attrs[k] for k in ("src", "href") if k in attrs]


def test_gallery_pages_link_only_to_files_that_exist(rendered):
    out = rendered["out"]
    pages = sorted(out.rglob("*.html"))
    assert [p.relative_to(out).as_posix() for p in pages] == [
        "block2/index.html",
        "block3/index.html",
        "index.html",
    ]
    for page in pages:
        parser = Links()
        parser.feed(page.read_text())
        assert parser.links
        for link in parser.links:
            assert (page.parent / link).is_file(), f"{page}: broken link {link}"
    assert (out / "block3" / "index.html").read_text().count("<img") == 4


def test_writes_are_atomic_no_temp_files_left(rendered):
    leftovers = [p for p in rendered["out"].rglob("*") if p.name.startswith(".")]
    assert leftovers == []


def test_layers_lists_names_and_shapes(capsys):
    assert cli.main(["layers", "--model", "tiny", "--size", "16"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in lines]
    assert {"block1", "block2", "block3", "logits"} <= set(names)
    assert "block3       (4, 4, 32)" in lines
    assert cli.main(["layers", "--config", "configs/tiny.toml"]) == 0
    assert "block3       (8, 8, 32)" in capsys.readouterr().out  # the config's size, 32


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["model=tinny"], "unknown model 'tinny'. Did you mean 'tiny'?"),
        (['layers=["blok3"]'], "unknown layer 'blok3'. Did you mean 'block3'"),
        (["units=[0, 99]"], "unit 99 is out of range for layer 'block2'"),
        (["stepz=3"], "unknown config key 'stepz'. Did you mean 'steps'?"),
        (["param.kind=jpeg"], "'param.kind' must be one of fourier, pixel"),
        (["steps=-2"], "'steps' must be an integer >= 1, got -2"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    argv = ["render", "--config", "configs/tiny.toml", *JOB, f"output={out}", *args]
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("fvjax: error: ") and message in captured.err
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert not out.exists()


def test_missing_config_and_unknown_model_for_layers_exit_2(tmp_path, capsys):
    assert cli.main(["render", "--config", str(tmp_path / "nope.toml")]) == 2
    assert "fvjax: error: config file" in capsys.readouterr().err
    assert cli.main(["layers", "--model", "resnet"]) == 2
    assert "unknown model 'resnet'" in capsys.readouterr().err
    assert cli.main(["layers"]) == 2
    assert "give --model NAME or --config PATH" in capsys.readouterr().err


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["render"])  # --config is required
    assert info.value.code == 2
    assert "--config" in capsys.readouterr().err


def test_help_lists_the_config_keys(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["render", "--help"])
    assert info.value.code == 0
    assert 'param.kind = "fourier"' in capsys.readouterr().out


def test_python_config_of_the_same_job_has_the_same_hash(tmp_path, rendered):
    job = tmp_path / "job.py"
    out = rendered["out"]
    job.write_text(
        "CONFIG = dict(model='tiny', layers=['block2', 'block3'], units=[0, 1], seeds=2,\n"
        f"    steps=3, size=16, output={str(out)!r}, progress=False,\n"
        "    transforms={'scale': 0.25})\n"
    )
    config = config_lib.load(job)
    assert config_lib.sha256(config) == rendered["manifest"]["config_sha256"]


def test_one_progress_bar_spans_the_whole_job(tmp_path):
    config = config_lib.load(
        "configs/tiny.toml", [f"output={tmp_path}", "steps=3", "size=16", "seeds=1"]
    )
    stream = io.StringIO()
    job_run.run(config, stream=stream)
    lines = [line for line in stream.getvalue().splitlines() if "%" in line]
    assert lines[-1].startswith("[2/2] block3") and "100.0% 6/6 steps" in lines[-1]
    assert all("/6 steps" in line for line in lines)  # 2 layers x 3 steps, one total


def test_an_output_holding_another_jobs_pictures_is_noted(tmp_path):
    job = [f"output={tmp_path}", "steps=2", "size=16", "seeds=1", 'layers=["block2"]']
    first = io.StringIO()
    job_run.run(config_lib.load("configs/tiny.toml", job), stream=first)
    assert "holds another job's outputs" not in first.getvalue()  # nothing there yet
    same = io.StringIO()  # the same pictures, shown without a progress bar
    job_run.run(config_lib.load("configs/tiny.toml", [*job, "progress=false"]), stream=same)
    assert same.getvalue() == ""
    other = io.StringIO()
    job_run.run(config_lib.load("configs/tiny.toml", [*job, "steps=3"]), stream=other)
    assert f"fvjax: note: {tmp_path} holds another job's outputs" in other.getvalue()
