"""Shared test fixtures."""

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
