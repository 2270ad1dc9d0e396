"""Redirected ReLU gradients (Lucid's ``redirected_relu_grad``) for any JAX model.

A ReLU whose input starts below zero passes no gradient, so an objective that reads it never
moves: on a planted network of oriented filters 7 of 16 neuron objectives start dead.
:func:`redirect_relu` traces a model's function to a jaxpr and evaluates it again with every
``max(x, 0)`` (``jax.nn.relu``, ``flax.linen.relu``, ``jnp.maximum(x, 0)``, inside ``jit``,
``checkpoint``, ``scan`` and ``cond`` too) replaced by :func:`redirected_relu`: the same
forward value, and while ``on`` a backward pass that also lets the gradient through where the
input is negative *and the objective wants it higher* (the gradient is that of a loss being
minimized, as fvjax's step minimizes minus the objective). As Lucid does, an image's ReLU is
redirected only when its real gradient is zero at every position (its leading axis is the
image), so a living unit keeps its true gradient. ``on`` is a traced boolean, so one compiled
program serves the redirected first steps and the real later ones (``render(...,
redirect_relu=16)``).

Left alone: ReLUs inside a ``custom_vjp`` (the author wrote its gradient) and inside
``while_loop`` (not reverse-differentiable anyway); at exactly ``x == 0`` the gradient is 0,
as ``jax.nn.relu``'s is.

>>> f = lambda x: {"out": jax.nn.relu(x - 1.0)}
>>> grad = lambda on: jax.grad(lambda x: -redirect_relu(f, on)(x)["out"].sum())(jnp.zeros(2))
>>> grad(False).tolist(), grad(True).tolist()
([0.0, 0.0], [-1.0, -1.0])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import ClosedJaxpr, Jaxpr, Literal

Array = jax.Array

# Primitives whose sub-program is evaluated in line (a jit boundary or a custom JVP rule around a
# ReLU is dropped: the redirected ReLU brings its own gradient).
_INLINE = ("jit", "pjit", "closed_call", "core_call", "custom_jvp_call")
_REMAT = ("remat2", "checkpoint", "remat")
# Their ReLUs keep their gradient: a custom VJP is its author's; a while loop has no reverse pass.
_LEFT_ALONE = ("custom_vjp_call", "custom_vjp_call_jaxpr", "while")
# Values that stay zero when the input is zero: how `jnp.zeros_like(x)` reaches a `max`.
_KEEPS_ZERO = ("broadcast_in_dim", "convert_element_type", "reshape", "squeeze", "expand_dims")


@jax.custom_vjp
def redirected_relu(x: Array, on: Array) -> Array:
    """``max(x, 0)``; while ``on``, an image that gets no gradient through it gets the
    gradient everywhere except where ``x < 0`` and the gradient would push ``x`` lower.

    ``x`` is ``(N, ...)``, one row per image; ``on`` a boolean scalar (traced or not).

    >>> loss = lambda x, on: -redirected_relu(x, on).sum()  # minimized: wants x higher
    >>> x = jnp.array([[-1.0, 2.0], [-1.0, -3.0]])
    >>> jax.grad(loss)(x, True).tolist()  # row 0 lives (true gradient); row 1 is dead
    [[0.0, -1.0], [-1.0, -1.0]]
    >>> jax.grad(loss)(x, False).tolist()
    [[0.0, -1.0], [0.0, 0.0]]
    """
    return jnp.maximum(x, jnp.zeros((), x.dtype))


def _forward(x: Array, on: Array) -> tuple[Array, tuple[Array, Array]]:
    return redirected_relu(x, on), (x, on)


def _backward(residuals: tuple[Array, Array], g: Array) -> tuple[Array, Any]:
    x, on = residuals
    zero = jnp.zeros((), g.dtype)
    real = jnp.where(x > 0, g, zero)
    # Lucid's rule: redirect only the images to which the ReLU passes no gradient at all.
    rows = tuple(range(1, real.ndim))
    living = jnp.any(real != 0, axis=rows, keepdims=True) if rows else real != 0
    redirected = jnp.where((x < 0) & (g > 0), zero, g)  # never push a dead input lower
    chosen = jnp.where(jnp.asarray(on) & ~living, redirected, real)
    return chosen, np.zeros(np.shape(on), jax.dtypes.float0)


redirected_relu.defvjp(_forward, _backward)


def redirect_relu(fn: Callable[..., Any], on: Any) -> Callable[..., Any]:
    """``fn`` with each ReLU replaced by :func:`redirected_relu` (redirecting while ``on``):
    the same outputs, other gradients. Works on any function of arrays (a model's
    ``apply(params, images)``), traced again on each call, so use it inside ``jit``.

    >>> relu = redirect_relu(lambda x: jnp.maximum(0.0, x), on=True)
    >>> float(jax.grad(lambda x: -relu(x))(-2.0))
    -1.0
    """

    def redirected(*args: Any) -> Any:
        closed, shapes = jax.make_jaxpr(fn, return_shape=True)(*args)
        out = _evaluate(closed.jaxpr, closed.consts, jax.tree.leaves(args), on)
        return jax.tree.unflatten(jax.tree.structure(shapes), out)

    return redirected


def relu_count(fn: Callable[..., Any], *args: Any) -> int:
    """How many ReLUs :func:`redirect_relu` finds in ``fn(*args)`` (each traced ``max(x, 0)``
    once, a loop body's once): say whether a model has any to redirect.

    >>> relu_count(lambda x: {"a": jax.nn.relu(x), "b": jnp.tanh(x)}, jnp.ones(3))
    1
    """
    closed = jax.make_jaxpr(fn)(*args)
    return _count(closed.jaxpr, closed.consts)


# -- the interpreter ------------------------------------------------------------------------------


def _sub_programs(params: dict[str, Any]) -> list[tuple[Jaxpr, Sequence[Any]]]:
    """The ``(jaxpr, consts)`` an equation's parameters hold (a ``cond`` holds several)."""
    found = []
    for value in params.values():
        for item in value if isinstance(value, tuple | list) else (value,):
            if isinstance(item, ClosedJaxpr):
                found.append((item.jaxpr, item.consts))
            elif isinstance(item, Jaxpr):
                found.append((item, [None] * len(item.constvars)))
    return found


def _is_zero_constant(value: Any) -> bool:
    if isinstance(value, jax.core.Tracer) or np.size(value) > 4096:
        return False
    try:
        return bool(np.all(np.asarray(value) == 0))
    except (TypeError, ValueError):
        return False


class _Zeros:
    """Which variables of one jaxpr hold known zeros."""

    def __init__(self, jaxpr: Jaxpr, consts: Sequence[Any]) -> None:
        self.vars = {
            v for v, c in zip(jaxpr.constvars, consts, strict=True) if _is_zero_constant(c)
        }

    def __contains__(self, atom: Any) -> bool:
        if isinstance(atom, Literal):
            return _is_zero_constant(atom.val)
        return atom in self.vars

    def note(self, eqn: Any) -> None:
        if eqn.primitive.name in _KEEPS_ZERO and eqn.invars[0] in self:
            self.vars.add(eqn.outvars[0])


def _relu_input(eqn: Any, zeros: _Zeros) -> Any:
    """The variable a ``max(x, 0)`` equation rectifies, else ``None``."""
    if eqn.primitive.name != "max":
        return None
    a, b = eqn.invars
    if not jnp.issubdtype(eqn.outvars[0].aval.dtype, jnp.floating):
        return None
    if b in zeros and a not in zeros:
        return a
    if a in zeros and b not in zeros:
        return b
    return None


def _count(jaxpr: Jaxpr, consts: Sequence[Any]) -> int:
    zeros = _Zeros(jaxpr, consts)
    total = 0
    for eqn in jaxpr.eqns:
        total += _relu_input(eqn, zeros) is not None
        if eqn.primitive.name not in _LEFT_ALONE:
            total += sum(_count(*sub) for sub in _sub_programs(eqn.params))
        zeros.note(eqn)
    return total


def _evaluate(jaxpr: Jaxpr, consts: Sequence[Any], args: Sequence[Any], on: Any) -> list[Any]:
    """``jaxpr`` evaluated on ``args`` with its ReLUs (and its sub-programs') redirected."""
    env: dict[Any, Any] = {}

    def read(atom: Any) -> Any:
        return atom.val if isinstance(atom, Literal) else env[atom]

    env.update(zip(jaxpr.constvars, consts, strict=True))
    env.update(zip(jaxpr.invars, args, strict=True))
    zeros = _Zeros(jaxpr, consts)
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        x = _relu_input(eqn, zeros)
        if x is not None:
            shape = eqn.outvars[0].aval.shape
            outs = [redirected_relu(jnp.broadcast_to(read(x), shape), on)]
        else:
            outs = _bind(eqn, invals, on)
        env.update(zip(eqn.outvars, outs, strict=True))
        zeros.note(eqn)
    return [read(v) for v in jaxpr.outvars]


def _bind(eqn: Any, invals: list[Any], on: Any) -> list[Any]:
    """One equation evaluated: as it is when no ReLU hides inside it, else its program
    evaluated with :func:`_evaluate` (in line, or wrapped as it was: checkpoint, scan, cond)."""
    name, params = eqn.primitive.name, eqn.params
    if name in _LEFT_ALONE or not any(_count(*sub) for sub in _sub_programs(params)):
        bind_params = eqn.primitive.get_bind_params(params)
        subfuns = ()
        if isinstance(bind_params, tuple):  # jax < 0.7 returns (subfuns, params)
            subfuns, bind_params = bind_params
        with eqn.ctx.manager:
            outs = eqn.primitive.bind(*subfuns, *invals, **bind_params)
        return list(outs) if eqn.primitive.multiple_results else [outs]
    if name in _INLINE:
        closed = params["jaxpr"] if "jaxpr" in params else params["call_jaxpr"]
        return _evaluate(closed.jaxpr, closed.consts, invals, on)
    if name in _REMAT:
        body = params["jaxpr"]

        def remat_body(*args: Any) -> list[Any]:
            return _evaluate(body, [], args, on)

        checkpointed = jax.checkpoint(
            remat_body, prevent_cse=params["prevent_cse"], policy=params["policy"]
        )
        return list(checkpointed(*invals))
    if name == "scan":
        return _scan(params, invals, on)
    if name == "cond":
        branches = [
            lambda *ops, b=b: _evaluate(b.jaxpr, b.consts, ops, on) for b in params["branches"]
        ]
        return list(jax.lax.switch(invals[0], branches, *invals[1:]))
    raise NotImplementedError(
        f"redirect_relu cannot see into a {name!r} that holds a ReLU; render without "
        "redirect_relu, or write the model without it"
    )


def _scan(params: dict[str, Any], invals: list[Any], on: Any) -> list[Any]:
    closed, n_consts, n_carry = params["jaxpr"], params["num_consts"], params["num_carry"]
    consts, carry, xs = (
        invals[:n_consts],
        invals[n_consts : n_consts + n_carry],
        invals[n_consts + n_carry :],
    )

    def body(carry: list[Any], x: list[Any]) -> tuple[list[Any], list[Any]]:
        outs = _evaluate(closed.jaxpr, closed.consts, [*consts, *carry, *x], on)
        return outs[:n_carry], outs[n_carry:]

    carry, ys = jax.lax.scan(
        body, carry, xs, length=params["length"], reverse=params["reverse"], unroll=params["unroll"]
    )
    return [*carry, *ys]
