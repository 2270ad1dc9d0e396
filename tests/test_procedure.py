"""A procedure fixed before its results: registrations, the ledger of runs, labels, verdicts."""

import io
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import fvjax
from fvjax import cli
from fvjax.errors import ProcedureError
from fvjax.job import procedure
from fvjax.job.check import check
from fvjax.job.config import from_dict, read, sha256, to_dict
from fvjax.job.run import run

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = {
    "model": "tiny",
    "layers": ["block2"],
    "units": [0, 1],
    "steps": 3,
    "size": 32,
    "progress": False,
    "checkpoint": False,
    "checks": {"images": 32, "top_k": 2, "plain": False, "path": False},
}


def _data(out, **changes) -> dict:
    data = json.loads(json.dumps(SETTINGS)) | {"output": str(out)}
    for key, value in changes.items():
        data[key] = data[key] | value if isinstance(value, dict) else value
    return data


def _toml(path: Path, data: dict) -> str:
    """``data`` (JSON values, one level of sections) as a TOML config file."""
    lines = [f"{k} = {json.dumps(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for section, keys in ((k, v) for k, v in data.items() if isinstance(v, dict)):
        lines += [f"[{section}]", *(f"{k} = {json.dumps(v)}" for k, v in keys.items())]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def weighted(weights: str) -> fvjax.Model:
    """A model read from a weights file: ``proj`` has one channel per column of ``w (3, C)``."""
    w = jnp.asarray(np.load(weights)["w"])
    return fvjax.from_fn(lambda p, x: {"proj": x @ p}, params=w, name="weighted")


@pytest.fixture(scope="module")
def explored(tmp_path_factory):
    """Two exploratory renders into one output: steps 3, then steps 4."""
    out = tmp_path_factory.mktemp("explored")
    manifests = [run(from_dict(_data(out))), run(from_dict(_data(out, steps=4)))]
    return out, manifests


@pytest.fixture(scope="module")
def confirmed(tmp_path_factory):
    """A procedure registered, then rendered and checked under its registration."""
    folder = tmp_path_factory.mktemp("confirmed")
    config = from_dict(_data(folder / "out", checks={"enabled": True}))
    registration = procedure.preregister(config, folder / "reg.json")
    return folder, registration, run(config, registration=registration)


def test_a_registration_freezes_the_whole_procedure(confirmed):
    folder, registration, _ = confirmed
    config = from_dict(_data(folder / "out", checks={"enabled": True}))
    saved = json.loads((folder / "reg.json").read_text())
    body = saved["body"]
    assert saved["sha256"] == registration.sha256 == fvjax.files.data_sha256(body)
    assert body["config"] == to_dict(config) and body["config_sha256"] == sha256(config)
    assert body["weights_sha256"] == procedure.weights_sha256(fvjax.zoo.load("tiny").params)
    assert body["units"] == {"block2": [0, 1]} and body["seeds"] == [0]
    assert body["checks"] == ["examples", "reach", "dissection"]
    assert body["thresholds"] == {
        "detector_iou": 0.04, "reach_min": 1.0, "far_above": 30.0,
        "off_path_rival": None, "min_rivals": None,
    }  # fmt: skip
    assert body["versions"]["jax"] == __import__("jax").__version__ and body["registered"]


def test_a_confirmatory_run_is_labelled_with_verdicts_from_the_registered_thresholds(confirmed):
    folder, registration, manifest = confirmed
    out = folder / "out"
    label = manifest["procedure"]
    assert (
        label["kind"] == "confirmatory" and label["registered"] == registration.body["registered"]
    )
    assert label["registration_sha256"] == registration.sha256
    copy = out / label["registration"]  # a reader checks the copy against its own hash
    assert copy.read_bytes() == (folder / "reg.json").read_bytes()
    assert procedure.read_registration(copy).sha256 == registration.sha256
    units = manifest["checks"]["layers"]["block2"]["units"]
    verdicts = label["verdicts"]["block2"]
    assert sorted(verdicts) == ["0", "1"]
    for unit, summary in units.items():
        assert verdicts[unit] == procedure.unit_verdict(summary, registration.body["thresholds"])
        assert verdicts[unit]["verdict"] in ("supported", "not supported")
    assert json.loads((out / "manifest.json").read_text())["procedure"] == label
    index = (out / "index.html").read_text()
    assert "<b>confirmatory</b>: the procedure registered" in index
    assert registration.sha256[:16] in index and 'href="registration.json"' in index
    page = (out / "block2" / "index.html").read_text()
    assert "<b>confirmatory</b>" in page and page.count('<div class="verdict') == 2
    for unit in ("0", "1"):
        assert f"verdict <b>{verdicts[unit]['verdict']}</b>" in page
        card = (out / "block2" / "units" / f"unit{int(unit):04d}.html").read_text()
        assert "<b>confirmatory</b>" in card and 'href="../../registration.json"' in card
        assert card.count('<div class="verdict') == 1
        assert f"verdict <b>{verdicts[unit]['verdict']}</b>" in card


def test_a_verdict_reads_only_the_registered_thresholds(confirmed):
    _, registration, manifest = confirmed
    summary = {"reach": [2.5, 3.0], "concept": "red", "iou": 0.05, "detector": True}
    assert procedure.unit_verdict(summary, registration.body["thresholds"])["verdict"] == (
        "supported"
    )
    stricter = registration.body["thresholds"] | {"reach_min": 4.0, "far_above": 2.0}
    assert procedure.unit_verdict(summary, stricter)["reasons"] == [
        "below-natural: the best reach is 3, below 4",
        "far-above-natural: every picture's reach above 2",
    ]
    checks = json.loads(json.dumps(manifest["checks"]))
    checks["settings"]["detector_iou"] = 0.001  # checks run with other settings: no verdicts
    with pytest.raises(ProcedureError, match=r"checks\.detector_iou: 0\.04 -> 0\.001"):
        procedure.verdicts(checks, registration)


def test_a_registered_run_refuses_another_key_or_override(confirmed, tmp_path, capsys):
    folder, registration, _ = confirmed
    reg = str(folder / "reg.json")
    same = _toml(tmp_path / "same.toml", registration.body["config"])
    assert procedure.registered_config(registration, read(same)) is not None
    steps = _toml(tmp_path / "steps.toml", registration.body["config"] | {"steps": 5})
    cases = [
        (["--config", steps], "differs from .* in steps: 3 -> 5"),  # a key of the config
        (["param.kind=pixel"], 'param.kind: "fourier" -> "pixel"'),  # an override
        (["units=[0, 2]"], r"units: \[0, 1\] -> \[0, 2\]"),  # other units
        (["--config", same, "checks.far_above=100"], "checks.far_above: 30.0 -> 100"),
    ]
    before = (folder / "out" / "ledger.jsonl").read_text()
    for command in ("render", "check"):
        for args, message in cases:
            assert cli.main([command, "--registered", reg, *args]) == 2
            err = capsys.readouterr().err
            assert err.startswith("fvjax: error: a registered run takes its procedure unchanged")
            assert re.search(message, err), err
    assert (folder / "out" / "ledger.jsonl").read_text() == before  # refused before it ran


def test_a_registered_run_refuses_other_weights_and_the_units_they_bring(tmp_path):
    weights = tmp_path / "w.npz"
    np.savez(weights, w=np.eye(3, 2, dtype=np.float32))
    data = {
        "model": "test_procedure:weighted", "weights": str(weights), "layers": ["proj"],
        "steps": 2, "size": 8, "progress": False, "transforms": {"preset": "none"},
        "output": str(tmp_path / "out"),
    }  # fmt: skip
    config = from_dict(data)
    registration = procedure.preregister(config, tmp_path / "reg.json")
    assert registration.body["units"] == {"proj": [0, 1]}
    np.savez(weights, w=np.ones((3, 2), np.float32))  # the same file name, other weights
    with pytest.raises(ProcedureError, match=r"not the procedure registered .*weights: registered"):
        run(config, registration=registration)
    np.savez(weights, w=np.ones((3, 3), np.float32))  # wider: units "all" are three now
    with pytest.raises(ProcedureError, match=r"units.proj: \[0, 1\] -> \[0, 1, 2\]"):
        run(config, registration=registration)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_a_registration_edited_after_the_fact_is_refused(confirmed, tmp_path, capsys):
    folder, _, _ = confirmed
    saved = json.loads((folder / "reg.json").read_text())
    saved["body"]["thresholds"]["far_above"] = 1000.0  # a criterion loosened after the results
    tampered = tmp_path / "reg.json"
    tampered.write_text(json.dumps(saved, indent=1))
    with pytest.raises(ProcedureError, match="was edited after it was registered"):
        procedure.read_registration(tampered)
    assert cli.main(["render", "--registered", str(tampered)]) == 2
    assert "was edited after it was registered" in capsys.readouterr().err
    tampered.write_text("{not json")
    with pytest.raises(ProcedureError, match="cannot read registration"):
        procedure.read_registration(tampered)


def test_registering_is_refused_where_results_of_the_procedure_exist(explored, tmp_path):
    out, _ = explored
    before = (out / "ledger.jsonl").read_text()
    with pytest.raises(ProcedureError, match=r"already holds results .*\(run 1 of"):
        procedure.preregister(from_dict(_data(out, progress=True)), tmp_path / "a.json")
    copy = tmp_path / "copy"  # a manifest without a ledger beside it
    copy.mkdir()
    shutil.copy(out / "manifest.json", copy / "manifest.json")
    steps = json.loads((copy / "manifest.json").read_text())["config"]["steps"]
    with pytest.raises(ProcedureError, match=r"already holds results .*manifest.json"):
        procedure.preregister(from_dict(_data(copy, steps=steps)), tmp_path / "b.json")
    assert not (tmp_path / "a.json").exists() and not (tmp_path / "b.json").exists()
    assert (out / "ledger.jsonl").read_text() == before
    fresh = from_dict(_data(tmp_path / "fresh", units=[2]))
    registered = procedure.preregister(fresh, tmp_path / "c.json")
    with pytest.raises(ProcedureError, match="exists; a registration is written once"):
        procedure.preregister(fresh, tmp_path / "c.json")
    assert procedure.read_registration(tmp_path / "c.json") == registered


def test_the_ledger_counts_and_diffs_exploratory_runs(explored):
    out, (first, second) = explored
    entries = procedure.read_ledger(out)[:2]
    assert [(e["run"], e["kind"], e["status"]) for e in entries] == [
        (1, "exploratory", "finished"), (2, "exploratory", "finished"),
    ]  # fmt: skip
    assert entries[0]["differences"] is None and entries[1]["differences"] == ["steps: 3 -> 4"]
    assert entries[0]["units"] == {"block2": [0, 1]} and entries[0]["replaces"] is None
    assert entries[1]["replaces"] == {
        "run": 1,
        "config_sha256": first["config_sha256"],
        "complete": True,
    }  # the second run rewrote the first one's files, and says so
    label = second["procedure"]
    assert (label["kind"], label["run"], label["procedure"], label["procedures"]) == (
        "exploratory", 2, 2, 2,
    )  # fmt: skip
    assert label["differences"] == ["steps: 3 -> 4"]
    for page in ("index.html", "block2/index.html"):
        text = (out / page).read_text()
        assert "<b>exploratory</b>: procedure 2 of 2 tried on this model" in text
        assert "<li><code>steps: 3 -&gt; 4</code></li>" in text
    again = run(from_dict(_data(out, progress=True)), stream=io.StringIO())
    label = again["procedure"]  # the first procedure again (progress is not part of it)
    assert (label["run"], label["procedure"], label["procedures"]) == (3, 1, 2)
    assert label["differences"] == ["progress: false -> true", "steps: 4 -> 3"]


def test_check_runs_are_recorded_and_check_registered_needs_the_registered_render(
    confirmed, tmp_path, capsys
):
    folder, registration, _ = confirmed
    reg = str(folder / "reg.json")
    assert cli.main(["check", "--registered", reg]) == 0
    said = capsys.readouterr().out
    assert "confirmatory: registered" in said and "of 2 unit(s) supported" in said
    last = procedure.read_ledger(folder / "out")[-1]
    assert (last["command"], last["kind"], last["status"]) == ("check", "confirmatory", "finished")
    assert last["registration_sha256"] == registration.sha256
    config = from_dict(_data(tmp_path / "out"))
    other = procedure.preregister(config, tmp_path / "reg.json")
    run(config)  # exploratory, though a registration of its procedure exists
    with pytest.raises(ProcedureError, match="were not rendered under"):
        check(config, registration=other)
    assert cli.main(["check", "--config", _toml(tmp_path / "job.toml", to_dict(config))]) == 0
    commands = [(e["command"], e["kind"]) for e in procedure.read_ledger(tmp_path / "out")]
    assert commands == [
        ("preregister", "registration"), ("render", "exploratory"), ("check", "exploratory"),
    ]  # fmt: skip


def test_render_and_check_need_a_config_or_a_registration(capsys):
    for command in ("render", "check"):
        with pytest.raises(SystemExit) as info:
            cli.main([command])
        assert info.value.code == 2
        assert "needs --config C (to explore) or --registered REG" in capsys.readouterr().err


def test_a_killed_run_stays_counted_and_the_ledger_stays_whole(tmp_path):
    out = tmp_path / "out"
    job = _toml(tmp_path / "job.toml", _data(out, steps=100_000))
    command = [sys.executable, "-m", "fvjax.cli", "render", "--config", job]
    with subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE) as child:
        try:
            deadline = time.monotonic() + 120
            while not (out / "ledger.jsonl").exists():  # the run is recorded before it renders
                assert child.poll() is None, child.stderr.read().decode()
                assert time.monotonic() < deadline, "the render never started"
                time.sleep(0.05)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
    (killed,) = procedure.read_ledger(out)
    assert (killed["run"], killed["status"], killed["finished"]) == (1, "started", None)
    manifest = run(from_dict(_data(out)))
    entries = procedure.read_ledger(out)
    assert [(e["run"], e["status"]) for e in entries] == [(1, "started"), (2, "finished")]
    assert entries[1]["differences"] == ["steps: 100000 -> 3"]
    label = manifest["procedure"]
    assert (label["run"], label["procedure"], label["procedures"]) == (2, 2, 2)
    assert [row["status"] for row in label["ledger"]] == ["started", "this run"]
    assert not list(out.glob(".*.tmp"))
