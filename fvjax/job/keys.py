"""The machinery of config keys: value checks, key roles, and checked frozen sections.

A key is a dataclass field made by :func:`key` with a *check* ``(dotted key, raw value) ->
normalized value`` (raising :class:`ConfigError` naming the key and what is allowed), a default,
a one-line doc and a *role* (:data:`ROLES`). :class:`Checked` runs every check when a section is
built, so a config made in Python is checked like one read from a file. The schema itself is
:mod:`fvjax.job.config`.

>>> integer(1)("steps", 3), boolean("progress", True)
(3, True)
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable
from typing import Any

from fvjax.errors import ConfigError, did_you_mean
from fvjax.models import zoo

# -- value checks: (dotted key, raw value) -> normalized value, or ConfigError --------------------


def bad(key: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"config key {key!r} must be {expected}, got {value!r}")


def integer(minimum: int) -> Callable[[str, Any], int]:
    def check(key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise bad(key, f"an integer >= {minimum}", value)
        return value

    return check


def number(
    minimum: float, inclusive: bool = True, below: float | None = None
) -> Callable[[str, Any], float]:
    """A number ``>= minimum`` (``> minimum`` unless ``inclusive``), and ``< below`` if given."""

    def check(key: str, value: Any) -> float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        ok = ok and (value >= minimum if inclusive else value > minimum)
        ok = ok and (below is None or value < below)
        if not ok:
            upper = f" and < {below}" if below is not None else ""
            raise bad(key, f"a number {'>=' if inclusive else '>'} {minimum}{upper}", value)
        return float(value)

    return check


def boolean(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise bad(key, "true or false", value)
    return value


def text(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise bad(key, "a non-empty string", value)
    return value


def optional_text(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise bad(key, "a string (empty for none)", value)
    return value


def one_of(options: Iterable[str]) -> Callable[[str, Any], str]:
    options = tuple(options)

    def check(key: str, value: Any) -> str:
        if value not in options:
            hint = did_you_mean(value, options) if isinstance(value, str) else ""
            raise ConfigError(
                f"config key {key!r} must be one of {', '.join(options)}, got {value!r}.{hint}"
            )
        return value

    return check


def model(key: str, value: Any) -> str:
    value = text(key, value)
    if ":" not in value:
        zoo.architecture(value)  # the unknown-model error, with suggestions
    return value


def layers(key: str, value: Any) -> tuple[str, ...]:
    layers = (value,) if isinstance(value, str) else value
    if not isinstance(layers, list | tuple) or not layers:
        raise bad(key, "a non-empty list of layer names", value)
    for layer in layers:
        text(key, layer)
    repeated = sorted({layer for layer in layers if layers.count(layer) > 1})
    if repeated:
        raise ConfigError(f"config key {key!r} names layer {repeated[0]!r} more than once")
    return tuple(layers)


def optional_layers(key: str, value: Any) -> tuple[str, ...]:
    """A list of layer names, possibly empty."""
    if isinstance(value, list | tuple) and not value:
        return ()
    return layers(key, value)


def units(key: str, value: Any) -> str | tuple[int, ...]:
    if value == "all":
        return "all"
    units = [value] if isinstance(value, int) and not isinstance(value, bool) else value
    ok = isinstance(units, list | tuple | range) and len(units) > 0
    ok = ok and all(isinstance(u, int) and not isinstance(u, bool) and u >= 0 for u in units)
    if not ok:
        raise bad(key, '"all" or a non-empty list of unit indices >= 0', value)
    repeated = sorted({u for u in units if units.count(u) > 1})
    if repeated:
        raise ConfigError(f"config key {key!r} names unit {repeated[0]} more than once")
    return tuple(units)


def size(key: str, value: Any) -> int | tuple[int, int]:
    if isinstance(value, list | tuple) and len(value) == 2:
        return (integer(1)(key, value[0]), integer(1)(key, value[1]))
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise bad(key, "an integer >= 1 or a pair [height, width]", value)


SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> ``(K, N)`` with ``0 <= K < N``; raises ``ValueError`` otherwise.

    >>> parse_shard("3/8")
    (3, 8)
    """
    match = SHARD.match(str(text))
    if not match:
        raise ValueError(f"a shard is 'K/N' (process K of N, from 0) or 'auto', got {text!r}")
    index, count = int(match[1]), int(match[2])
    if not 0 <= index < count:
        raise ValueError(f"shard {text!r}: K must be in 0..N-1 (0..{count - 1})")
    return index, count


def shard(key: str, value: Any) -> str:
    value = text(key, value)
    if value != "auto":
        try:
            parse_shard(value)
        except ValueError as exc:
            raise ConfigError(f"config key {key!r}: {exc}") from exc
    return value


#: What a key is about: ``"pictures"`` (it decides them), ``"placement"`` (which process of a
#: job renders which share), ``"run"`` (where outputs go, how the run shows and saves itself).
ROLES = ("pictures", "placement", "run", "checks")


def key(check: Callable[[str, Any], Any], default: Any, doc: str, role: str = "pictures") -> Any:
    assert role in ROLES, role
    return dataclasses.field(default=default, metadata={"check": check, "doc": doc, "role": role})


def section(cls: type, role: str = "pictures") -> Any:
    assert role in ROLES, role
    return dataclasses.field(default_factory=cls, metadata={"section": cls, "role": role})


class Checked:
    """Runs each field's check on construction, so a config built in Python is checked too."""

    _prefix = ""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if "check" in f.metadata:
                object.__setattr__(self, f.name, f.metadata["check"](self._prefix + f.name, value))
            elif "section" in f.metadata and not isinstance(value, f.metadata["section"]):
                raise bad(f.name, f"a {f.metadata['section'].__name__}", value)
