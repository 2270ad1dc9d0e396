"""One job over several processes: slices by ``shard``, joined by ``fvjax merge``."""

import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fvjax import cli
from fvjax.errors import ConfigError
from fvjax.job import config as config_lib
from fvjax.job import shards

# 6 of block2's 16 units split 3 ways: slices of 2 units, one compiled program for all three.
JOB = ["steps=3", "size=16", "layers=['block2']", "units=[0, 3, 4, 9, 12, 15]", "progress=false"]
ROOT = Path(__file__).resolve().parent.parent


def _render(out, *extra) -> int:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return cli.main(["render", "--config", "configs/tiny.toml", *JOB, f"output={out}", *extra])


def assert_same_pictures(out: Path, reference: Path) -> None:
    """The same images with the same activations, within float rounding: XLA may round a
    batch of 2 and a batch of 6 differently (bit for bit holds for a fixed batch), so an
    8-bit pixel may land one level apart."""
    ours, theirs = _pictures(out), _pictures(reference)
    assert ours.keys() == theirs.keys()
    for key, (activation, pixels) in theirs.items():
        np.testing.assert_allclose(ours[key][0], activation, rtol=1e-4, err_msg=str(key))
        diff = np.abs(ours[key][1].astype(int) - pixels.astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01, key


def _pictures(out: Path) -> dict:
    """``{(layer, unit, seed): (activation, pixels)}`` of an output directory."""
    manifest = json.loads((out / "manifest.json").read_text())
    found = {}
    for entry in manifest["images"]:
        with Image.open(out / entry["file"]) as png:
            pixels = np.asarray(png)
        found[entry["layer"], entry["unit"], entry["seed"]] = (entry["activation"], pixels)
    return found


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "out"
    assert _render(out) == 0
    return out


@pytest.fixture(scope="module")
def sliced(tmp_path_factory):
    out = tmp_path_factory.mktemp("sliced") / "out"
    for k in range(3):
        assert _render(out, f"shard={k}/3") == 0
    return out


def test_each_slice_renders_its_share_of_every_layer(sliced):
    units = {}
    for k in range(3):
        manifest = json.loads((sliced / f"shard-{k}-of-3" / "manifest.json").read_text())
        assert manifest["complete"] and manifest["config"]["shard"] == f"{k}/3"
        units[k] = [entry["units"] for entry in manifest["layers"]]
    # Strided positions 0, 3 | 1, 4 | 2, 5 of [0, 3, 4, 9, 12, 15].
    assert units == {0: [[0, 9]], 1: [[3, 12]], 2: [[4, 15]]}
    assert not (sliced / "manifest.json").exists()  # nothing merged yet


def test_merged_slices_are_the_one_process_render(whole, sliced):
    status = cli.main(["merge", str(sliced)])
    assert status == 0
    merged = json.loads((sliced / "manifest.json").read_text())
    one = json.loads((whole / "manifest.json").read_text())
    assert merged["complete"] and len(merged["shards"]) == 3
    assert [e["units"] for e in merged["layers"]] == [e["units"] for e in one["layers"]]
    assert [(e["layer"], e["unit"], e["seed"]) for e in merged["images"]] == [
        (e["layer"], e["unit"], e["seed"]) for e in one["images"]
    ]
    assert_same_pictures(sliced, whole)
    with (
        Image.open(sliced / "block2" / "grid.png") as a,
        Image.open(whole / "block2" / "grid.png") as b,
    ):
        assert a.size == b.size
        assert np.abs(np.asarray(a).astype(int) - np.asarray(b).astype(int)).max() <= 1
    assert (sliced / "index.html").is_file()
    # The run's label goes with it: process 0's, numbered in the one ledger at the root.
    assert merged["procedure"]["kind"] == "exploratory" and merged["procedure"]["run"] == 1
    assert "<b>exploratory</b>: procedure 1 of 1" in (sliced / "index.html").read_text()
    # The merged config is the job's own: rendering it in one process gives the same hash.
    config = config_lib.from_dict({k: v for k, v in merged["config"].items()})
    assert config_lib.sha256(config) == merged["config_sha256"]


def test_merge_names_what_is_missing_unfinished_or_foreign(tmp_path, sliced):
    copy = tmp_path / "copy"
    shutil.copytree(sliced, copy)
    shutil.rmtree(copy / "shard-1-of-3")
    with pytest.raises(shards.ShardError, match="missing shard-1-of-3"):
        shards.merge(copy)
    shutil.copytree(sliced / "shard-0-of-3", copy / "shard-1-of-3")
    manifest_path = copy / "shard-1-of-3" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["config"]["steps"] = 4
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(shards.ShardError, match="another job .*config keys differ: steps: 3 -> 4"):
        shards.merge(copy)
    manifest["config"]["steps"], manifest["complete"] = 3, False
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(shards.ShardError, match="shard-1-of-3: its render has not finished"):
        shards.merge(copy)
    with pytest.raises(shards.ShardError, match="no shard-K-of-N directories"):
        shards.merge(tmp_path / "nothing")
    with contextlib.redirect_stderr(io.StringIO()) as err:
        assert cli.main(["merge", str(tmp_path / "nothing")]) == 2
    assert "fvjax: error:" in err.getvalue()


@pytest.mark.parametrize("value", ["3/3", "-1/2", "1/0", "half", "1/2/3"])
def test_bad_shards_are_config_errors(value):
    with pytest.raises(ConfigError, match="shard"):
        config_lib.from_dict({"shard": value})


def test_more_slices_than_units_leave_a_slice_without_that_layer(tmp_path):
    out = tmp_path / "out"
    assert _render(out, "units=[0, 1]", "shard=2/3") == 0
    manifest = json.loads((out / "shard-2-of-3" / "manifest.json").read_text())
    assert manifest["complete"] and manifest["layers"] == [] and manifest["images"] == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_distributed_processes_render_and_merge_the_job(tmp_path, whole):
    """Two processes joined by jax.distributed on loopback: each renders its slice, process 0
    merges them, and the result is the one-process render."""
    out = tmp_path / "out"
    argv = ["render", "--config", "configs/tiny.toml", *JOB, f"output={out}", "distributed=true"]
    env = dict(os.environ, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{_free_port()}")
    env["JAX_NUM_PROCESSES"] = "2"
    env.pop("XLA_FLAGS", None)
    code = "import sys; from fvjax import cli; sys.exit(cli.main(sys.argv[1:]))"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, *argv],
            env=dict(env, JAX_PROCESS_ID=str(k)),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for k in range(2)
    ]
    logs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    for k in range(2):
        assert (out / f"shard-{k}-of-2" / "manifest.json").is_file()
    merged = json.loads((out / "manifest.json").read_text())
    assert merged["complete"] and len(merged["shards"]) == 2
    assert_same_pictures(out, whole)


def test_merge_keeps_each_pictures_degenerate_mark(tmp_path, sliced):
    copy = tmp_path / "copy"
    shutil.copytree(sliced, copy)
    manifest_path = copy / "shard-2-of-3" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    marked = manifest["images"][1]
    marked["degenerate"] = "flat (planted by the test)"
    manifest_path.write_text(json.dumps(manifest))
    merged = shards.merge(copy)
    found = [e for e in merged["images"] if "degenerate" in e]
    assert [(e["unit"], e["seed"], e["degenerate"]) for e in found] == [
        (marked["unit"], marked["seed"], "flat (planted by the test)")
    ]
    page = (copy / "block2" / "index.html").read_text()
    assert f"1 of {len(merged['images'])} picture(s) are degenerate" in page
