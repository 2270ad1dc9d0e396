"""Shared test fixtures, and a guard that keeps a failing test's report from crashing pytest."""

import contextlib
import gc

import jax
import pytest

from fvjax.checks import manipulated


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Build each report (a failure's traceback included) with the garbage collector paused.

    pytest parses the failing test's file (``ast.parse``) to show its source. On CPython
    3.11.0-3.11.7 and 3.12.0-3.12.1 (python/cpython#106905, fixed by #113035) a second
    ``ast.parse`` that starts while the first builds its tree resets a counter both share, and
    the first then raises ``SystemError: AST constructor recursion depth mismatch``: pytest
    dies with INTERNALERROR instead of printing the failure. A collection that runs in the
    middle of the tree's allocations can start that second parse: a finalizer that raises is
    handed to pytest's unraisable-exception hook, which formats its traceback, and Python 3.11's
    traceback formatting parses source to place its ``^^^`` marks. With the collector paused
    no finalizer runs inside the parse (tests/test_layout.py rebuilds the crash).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        return (yield)
    finally:
        if enabled:
            gc.enable()


@pytest.fixture
def strict_promotion():
    """Strict dtype promotion, as equinox's tests use: our pure modules must not rely on
    implicit promotion. (optax itself does not pass under it, so the engine tests run without.)"""
    with jax.numpy_dtype_promotion("strict"):
        yield


@pytest.fixture(scope="session")
def silent_unit():
    """WorldNet with a silent branch on ``block3/conv`` unit 63: calibrated once a session
    (5 s), for the checks' tests and the manipulation's own."""
    return manipulated.silent_unit()


@pytest.fixture
def rgb_model():
    """A model whose only layer is the picture itself: channel k rewards colour k."""
    import fvjax

    return fvjax.models.from_fn(lambda x: {"rgb": x}, name="rgb")


@pytest.fixture
def full_float32():
    """Every matmul and convolution in full float32, in JAX and (when installed) torch.

    Parity tests compare two frameworks at 1e-4: a CPU whose libraries take a reduced-precision
    path for float32 products (bf16 or TF32-like passes, as oneDNN can on some x86 chips) would
    fail them for reasons that say nothing about the model. CI once measured 1.3e-4 from the
    first 1x1 convolution on while our own machine gave 3e-7."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(jax.default_matmul_precision("highest"))
        try:
            import torch
        except ImportError:
            torch = None
        if torch is not None:
            saved = torch.backends.fp32_precision, torch.get_float32_matmul_precision()
            torch.backends.fp32_precision = "ieee"
            torch.set_float32_matmul_precision("highest")
            stack.callback(torch.set_float32_matmul_precision, saved[1])
            stack.callback(setattr, torch.backends, "fp32_precision", saved[0])
        yield
