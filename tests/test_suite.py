"""The test suite itself: a failing test is reported, never a crash of pytest."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

TESTS = Path(__file__).resolve().parent

# A failing test whose garbage, collected while pytest parses the file to show the failure,
# formats a traceback in a finalizer, as pytest's unraisable-exception hook does.
FAILING = textwrap.dedent(
    """
    import gc
    import traceback

    import pytest


    class Noisy:
        left = 2000

        def __del__(self):
            try:
                raise ValueError("from a finalizer")
            except ValueError as exc:
                "".join(traceback.format_exception(exc))
            if Noisy.left > 0:
                Noisy.left -= 1
                again = Noisy()
                again.me = again


    @pytest.fixture(autouse=True)
    def calm_afterwards():  # once the failure is reported: no more noise, the usual collector
        thresholds = gc.get_threshold()
        yield
        Noisy.left = 0
        gc.set_threshold(*thresholds)
        gc.collect()


    def test_fails():
        first = Noisy()
        first.me = first
        del first
        gc.set_threshold(20)
        assert 1 == 2
    """
)


def _pytest(tmp_path, *plugins):
    (tmp_path / "test_failing.py").write_text(FAILING)
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_failing.py"]
    for plugin in plugins:
        args[3:3] = ["-p", plugin]
    done = subprocess.run(
        args,
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(TESTS)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, done.stdout + done.stderr


def test_a_failure_is_reported_even_where_python_parses_badly(tmp_path):
    status, output = _pytest(tmp_path, "conftest")
    assert "INTERNALERROR" not in output, output[-2000:]
    assert status == 1 and "1 failed" in output and "assert 1 == 2" in output
    # Without the guard, on the Pythons with the bug (3.11.0-3.11.7, 3.12.0-3.12.1), the
    # same failure crashes pytest:
    if (3, 11) <= sys.version_info[:3] < (3, 11, 8) or (3, 12) <= sys.version_info[:3] < (3, 12, 2):
        status, output = _pytest(tmp_path)
        assert status == 3 and "SystemError: AST constructor recursion depth mismatch" in output
