"""fvjax: batched feature visualization in JAX."""

__version__ = "0.1.0"
