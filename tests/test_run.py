"""A job that goes wrong says so: degenerate pictures, pictures smaller than a layer's field,
failed runs' checkpoints, and the folders of layers an earlier run left behind."""

import io
import json

import numpy as np
import pytest

from fvjax import cli
from fvjax.checks.degenerate import degenerate_pictures
from fvjax.errors import NonFiniteError
from fvjax.job import run as run_lib
from fvjax.job.config import from_dict

JOB = {"model": "tiny", "layers": ["block2"], "units": [0, 1], "seeds": 2, "steps": 3,
       "size": 16, "progress": False}  # fmt: skip


def _cli(out, capsys, *overrides):
    args = ["render", "--config", "configs/tiny.toml", "layers=['block2']", "units=[0, 1]",
            "steps=3", "size=16", "progress=false", f"output='{out}'", *overrides]  # fmt: skip
    status = cli.main(args)
    return status, capsys.readouterr().err


def test_degenerate_pictures_are_named():
    rng = np.random.default_rng(0)
    images = np.stack([
        rng.random((8, 8, 3)),  # fine
        (rng.random((8, 8, 3)) > 0.5).astype(np.float32),  # saturated noise
        np.full((8, 8, 3), 0.3),  # flat
        rng.random((8, 8, 3)),  # fine, but its objective fell
    ])  # fmt: skip
    history = np.array([[0.0, 0.0, 0.0, 0.5], [1.0, 1.0, 1.0, 0.2]])
    reasons = degenerate_pictures(images, history)
    assert reasons[0] is None
    assert reasons[1].startswith("saturated: 100%") and reasons[2].startswith("flat")
    assert reasons[3] == "the objective did not rise: 0.5 at the first step, 0.2 at the last"
    assert degenerate_pictures(images[:1], None) == [None]


def test_a_huge_learning_rate_fails_with_status_1_and_says_why(tmp_path, capsys):
    out = tmp_path / "out"
    status, err = _cli(out, capsys, "optimizer.learning_rate=1e30")
    assert status == 1
    assert "pictures of block2 are degenerate" in err and "saturated" in err
    assert "nothing useful was made. Lower optimizer.learning_rate" in err
    manifest = json.loads((out / "manifest.json").read_text())  # written, and marked
    assert all(image["degenerate"].startswith("saturated") for image in manifest["images"])
    page = (out / manifest["layers"][0]["slug"] / "index.html").read_text()
    n = len(manifest["images"])
    assert f"{n} of {n} picture(s) are degenerate" in page
    assert page.count('<figure class="degenerate" title="degenerate: saturated') == n
    status, err = _cli(tmp_path / "fine", capsys)  # the same job at the default rate
    assert status == 0 and "degenerate" not in err


def test_pictures_smaller_than_a_layers_field_warn(tmp_path, capsys):
    status, err = _cli(tmp_path / "out", capsys, "size=4", "layers=['block3']")
    assert status == 0
    assert "fvjax: warning: pictures of 4x4 px are smaller than the receptive field of layer " \
        "'block3' (9x9 px" in err  # fmt: skip
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["warnings"] == [line[len("fvjax: warning: "):] for line in err.splitlines()
                                    if "receptive field" in line]  # fmt: skip


@pytest.mark.parametrize("failure", [NonFiniteError, KeyboardInterrupt])
def test_a_failed_run_removes_its_checkpoints_and_an_interrupted_one_says_where(
    tmp_path, monkeypatch, failure
):
    def failing(plan, progress, checkpoint_dir, checkpoint_every):
        (checkpoint_dir / "chunk-0").mkdir(parents=True)  # what a render had saved so far
        raise failure("stopped")

    monkeypatch.setattr(run_lib, "run_plan", failing)
    stream = io.StringIO()
    config = from_dict({**JOB, "output": str(tmp_path / "out")})
    with pytest.raises(failure):
        run_lib.run(config, stream=stream)
    checkpoints = tmp_path / "out" / ".checkpoints"
    if failure is NonFiniteError:  # resuming would fail at the same step again
        assert not checkpoints.exists() and "resume" not in stream.getvalue()
    else:
        assert any(checkpoints.iterdir())
        assert "run the same command to resume it, or delete that folder" in stream.getvalue()


def test_layers_an_earlier_run_left_are_listed(tmp_path):
    out = tmp_path / "out"
    run_lib.run(from_dict({**JOB, "layers": ["block2", "block3"], "output": str(out)}),
                stream=io.StringIO())  # fmt: skip
    stream = io.StringIO()
    manifest = run_lib.run(from_dict({**JOB, "output": str(out)}), stream=stream)
    assert manifest["stale_layers"] == ["block3"] and (out / "block3").is_dir()
    assert "still holds the folders of layers an earlier run rendered" in stream.getvalue()
    assert [entry["layer"] for entry in manifest["layers"]] == ["block2"]
