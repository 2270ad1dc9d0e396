"""Shared test fixtures."""

import contextlib

import jax
import pytest


@pytest.fixture
def strict_promotion():
    """Strict dtype promotion, as equinox's tests use: our pure modules must not rely on
    implicit promotion. (optax itself does not pass under it, so the engine tests run without.)"""
    with jax.numpy_dtype_promotion("strict"):
        yield


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
