import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import fvjax
from fvjax import objectives as O
from fvjax import param as P
from fvjax import transforms as T
from fvjax.errors import CheckpointMismatchError
from fvjax.progress import Progress
from fvjax.rendering.resume import ResumeStore

KWARGS = dict(
    seeds=2,
    steps=8,
    size=16,
    batch_size=4,
    param=P.pixel(),
    transforms=T.compose(T.pad(2), T.jitter(4)),
)


class Killed(Exception):
    pass


class KillAt(Progress):
    """A silent progress bar that records its notes and 'kills' the render at step ``at``."""

    def __init__(self, at: int = 10**9) -> None:
        super().__init__(total=1, enabled=False)
        self.at = at
        self.notes: list[str] = []

    def update(self, n: int = 1, note: str | None = None) -> None:
        super().update(n, note)
        self.notes.append(note or "")
        if self.done >= self.at:
            raise Killed

    def skip(self, n: int, note: str | None = None) -> None:
        super().skip(n, note)  # restored work: counted, not timed
        self.notes.append(note or "")


def _assert_same(a, b):
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.activations, b.activations)
    np.testing.assert_array_equal(a.history, b.history)


def test_a_render_interrupted_anywhere_resumes_to_the_same_pictures(rgb_model, tmp_path):
    objective = O.channel("rgb", [0, 1, 2])  # 6 pictures: chunks of 4 and 2 (padded)
    whole = fvjax.render(rgb_model, objective, **KWARGS)
    ckpt = tmp_path / "ckpt"
    # Killed mid chunk 0 (after an in-flight save at step 3), then mid chunk 1 before any save.
    bars = [KillAt(5), KillAt(10), KillAt()]
    for bar in bars[:2]:
        with pytest.raises(Killed):
            fvjax.render(
                rgb_model,
                objective,
                checkpoint_dir=ckpt,
                checkpoint_every=3,
                progress=bar,
                **KWARGS,
            )
    assert (ckpt / "chunk_00000").is_dir() and not (ckpt / "chunk_00001").exists()
    resumed = fvjax.render(
        rgb_model, objective, checkpoint_dir=ckpt, checkpoint_every=3, progress=bars[2], **KWARGS
    )
    _assert_same(resumed, whole)
    assert bars[1].notes[0] == "chunk 1/2 (resumed at step 3)"
    assert bars[2].notes[0] == "chunk 1/2 (from checkpoint)"
    assert bars[2].done == 16
    # Everything finished: a third call only reads the checkpoint.
    _assert_same(fvjax.render(rgb_model, objective, checkpoint_dir=ckpt, **KWARGS), whole)


def test_a_checkpoint_of_another_job_is_refused(rgb_model, tmp_path):
    fvjax.render(rgb_model, O.channel("rgb", [0]), checkpoint_dir=tmp_path, **KWARGS)
    with pytest.raises(CheckpointMismatchError, match=r"another job \(differs in: units\)"):
        fvjax.render(rgb_model, O.channel("rgb", [1]), checkpoint_dir=tmp_path, **KWARGS)


# The child renders 3 chunks of 2 pictures, 12 steps each, saving the chunk in flight every 4
# steps. Once chunk 0 is saved and chunk 1 has saved its step 8, it says so in a file and
# waits to be killed: the test waits on that event, not on a time.
STOP_AT_CALL = 12 + 8 + 1  # the first step call after chunk 1's in-flight save at step 8
KILL_ME = dict(seeds=2, steps=12, size=16, batch_size=2, checkpoint_every=4, steps_per_call=1)
SCRIPT = textwrap.dedent(
    f"""
    import os, sys, time
    import fvjax
    from fvjax import objectives as O, param as P, transforms as T
    from fvjax.rendering import engine
    run_steps, calls = engine.run_steps, [0]
    def run_steps_then_wait(*args, **kwargs):
        calls[0] += 1
        if calls[0] == {STOP_AT_CALL}:
            with open(sys.argv[2] + ".tmp", "w") as f:
                f.write(str(calls[0]))
            os.replace(sys.argv[2] + ".tmp", sys.argv[2])  # whole, or not there
            time.sleep(600)  # killed long before
            sys.exit(3)
        return run_steps(*args, **kwargs)
    engine.run_steps = run_steps_then_wait
    model = fvjax.from_fn(lambda x: {{"rgb": x}}, name="rgb")
    fvjax.render(model, O.channel("rgb", [0, 1, 2]), param=P.pixel(),
                 transforms=T.compose(T.pad(2), T.jitter(4)), checkpoint_dir=sys.argv[1],
                 **{KILL_ME!r})
    """
)


@pytest.mark.slow
def test_a_killed_process_resumes_where_it_stopped(tmp_path):
    ckpt, ready = tmp_path / "ckpt", tmp_path / "ready"
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(Path(fvjax.__file__).parents[1]))
    proc = subprocess.Popen([sys.executable, str(script), str(ckpt), str(ready)], env=env)
    try:
        deadline = time.monotonic() + 540  # only against a hang: the event ends the wait
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert ready.exists(), f"the job exited with {proc.returncode} before chunk 1's step 8"
    assert proc.returncode == -signal.SIGKILL
    assert sorted(p.name for p in ckpt.iterdir()) == ["chunk_00000", "inflight", "job.json"]
    model = fvjax.from_fn(lambda x: {"rgb": x}, name="rgb")
    objective = O.channel("rgb", [0, 1, 2])
    kwargs = dict(param=P.pixel(), transforms=T.compose(T.pad(2), T.jitter(4)), **KILL_ME)
    bar = KillAt()
    resumed = fvjax.render(model, objective, checkpoint_dir=ckpt, progress=bar, **kwargs)
    assert bar.notes[:2] == ["chunk 1/3 (from checkpoint)", "chunk 2/3 (resumed at step 8)"]
    _assert_same(resumed, fvjax.render(model, objective, **kwargs))


def test_the_cli_resumes_a_killed_job_from_its_checkpoints(tmp_path, monkeypatch):
    from fvjax import cli
    from fvjax.rendering import engine

    out = tmp_path / "out"
    args = [
        "render",
        "--config",
        "configs/tiny.toml",
        f"output={out}",
        "steps=6",
        "size=16",
        "seeds=1",
        "batch_size=8",
        'layers=["block2"]',
        "checkpoint_every=2",
        "progress=false",
    ]
    real_run_steps = engine.run_steps
    calls = {"n": 0}

    def dying_run_steps(*a, **k):  # the process "dies" at the 9th optimization call
        calls["n"] += 1
        if calls["n"] == 9:
            raise Killed
        return real_run_steps(*a, **k)

    monkeypatch.setattr(engine, "run_steps", dying_run_steps)
    with pytest.raises(Killed):
        cli.main(args)
    (digest,) = (out / ".checkpoints").iterdir()
    saved = sorted(p.name for p in (digest / "block2").iterdir())
    assert saved == ["chunk_00000", "inflight", "job.json"]  # chunk 1 saved at step 2
    calls["n"] = -(10**9)  # no more deaths
    assert cli.main(args) == 0
    assert calls["n"] == -(10**9) + 6 * 1 - 2  # chunk 1 resumed at step 2: 4 more steps
    assert not (out / ".checkpoints").exists()  # cleaned once every output is written
    resumed = (out / "block2" / "unit0009_seed0.png").read_bytes()
    assert cli.main([*args[:3], f"output={tmp_path / 'whole'}", *args[4:]]) == 0
    assert (tmp_path / "whole" / "block2" / "unit0009_seed0.png").read_bytes() == resumed


def test_an_unreadable_inflight_checkpoint_restarts_its_chunk(tmp_path):
    """At most the chunk in flight is lost: damaged in-flight state is dropped with a warning."""
    ckpt = ResumeStore(tmp_path, {"label": "channel:rgb"})
    state, history = {"x": np.ones(3, np.float32)}, np.zeros((4, 2), np.float32)
    ckpt.save_inflight(0, 2, state, history)
    assert ckpt.load_inflight(0, state, history)[0] == 2
    for f in (tmp_path / "inflight").rglob("*"):
        if f.is_file():
            f.write_bytes(b"")  # every file truncated, as a torn write would leave them
    with pytest.warns(UserWarning, match="unreadable in-flight checkpoint"):
        assert ckpt.load_inflight(0, state, history) is None
    assert not (tmp_path / "inflight").exists()
    (tmp_path / ".inflight.0123abcd.tmp").mkdir()  # what a save killed mid-way leaves
    ResumeStore(tmp_path, {"label": "channel:rgb"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.json"]
