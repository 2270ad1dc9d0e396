"""Render-job configs: typed, frozen, loaded from TOML, Python or YAML, with overrides.

A job is a :class:`Config`; its sections are :class:`ParamConfig`, :class:`TransformsConfig`,
:class:`OptimizerConfig`, :class:`DiversityConfig`, :class:`NaturalConfig`,
:class:`ChecksConfig`, :class:`FacetsConfig` and :class:`AtlasConfig` (defined in
:mod:`fvjax.job.sections`, importable from here). Every key has a default, so a file names
only what it changes::

    model = "tiny"                 # a built-in model, or "package.module:factory"
    layers = ["block2", "block3"]
    units = "all"                  # or a list such as [0, 5, 7]
    seeds = 2

    [param]
    kind = "pixel"

Unknown keys anywhere are errors that suggest the nearest known key; values are checked when
the config is built. :func:`to_dict` gives the plain dict (what the manifest records),
:func:`sha256` its hash, and :func:`identity` the keys that decide the pictures;
:mod:`fvjax.job.plan` turns a config into the engine's objects.

>>> config = from_dict({"layers": ["block3"], "param": {"kind": "pixel"}}, ["steps=8"])
>>> config.steps, config.param.kind
(8, 'pixel')
>>> try:
...     from_dict({"param": {"knd": "pixel"}})
... except ConfigError as error:
...     print(str(error).split(" Allowed")[0])
unknown config key 'param.knd'. Did you mean 'kind'?
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import runpy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from fvjax.errors import ConfigError, did_you_mean
from fvjax.files import data_sha256
from fvjax.job import keys
from fvjax.job.sections import (
    AtlasConfig,
    ChecksConfig,
    DiversityConfig,
    FacetsConfig,
    NaturalConfig,
    OptimizerConfig,
    ParamConfig,
    TransformsConfig,
)
from fvjax.rendering.inversion import IMAGE_OBJECTIVES
from fvjax.rendering.objectives import LAYER_OBJECTIVES
from fvjax.rendering.step import MODEL_DTYPES, REMAT

#: A layer's objective: one of the engine's per-unit objectives, or one held to the ``[natural]``
#: images (:mod:`fvjax.rendering.inversion`): ``"accentuate"`` (each unit raised in each image),
#: ``"invert"`` or ``"caricature"`` (a row per image: its inversions or caricatures).
OBJECTIVES = (*LAYER_OBJECTIVES, "accentuate", *IMAGE_OBJECTIVES)
SUFFIXES = (".toml", ".py", ".yaml", ".yml")


# -- the schema ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Config(keys.Checked):
    """A render job: which pictures to make, how, and where to write them.

    ``batch_size = 0`` renders every picture of a layer at once; ``steps_per_call = 0`` uses the
    engine's default. A relative ``output`` is relative to the working directory.

    >>> Config(layers=["block2"], seeds=2).layers
    ('block2',)
    """

    model: str = keys.key(keys.model, "tiny", "built-in model name or 'package.module:factory'")
    weights: str = keys.key(
        keys.optional_text, "", "model weights: .safetensors, .npz, .pth, or an `fvjax convert` dir"
    )
    layers: tuple[str, ...] = keys.key(keys.layers, ("block3",), "layers to render")
    units: str | tuple[int, ...] = keys.key(keys.units, "all", '"all" or a list of unit indices')
    objective: str = keys.key(
        keys.one_of(OBJECTIVES),
        "channel",
        "channel | neuron | accentuate | invert | caricature (see [natural])",
    )
    seeds: int = keys.key(keys.integer(1), 1, "pictures per unit (seeds 0..seeds-1)")
    steps: int = keys.key(keys.integer(1), 256, "optimization steps")
    size: int | tuple[int, int] = keys.key(keys.size, 128, "picture size, N or [H, W]")
    batch_size: int = keys.key(keys.integer(0), 0, "pictures per compiled chunk (0: all)")
    steps_per_call: int = keys.key(
        keys.integer(0), 0, "steps per compiled call (0: engine default)"
    )
    devices: int = keys.key(keys.integer(0), 0, "local devices sharing each chunk (0: all)")
    model_dtype: str = keys.key(
        keys.one_of(MODEL_DTYPES), "float32", "the model's compute dtype (pictures: float32)"
    )
    remat: str = keys.key(
        keys.one_of(REMAT), "none", "what the backward pass recomputes: none | convs | blocks"
    )
    redirect_relu: int = keys.key(
        keys.integer(-1), 0, "first steps whose ReLUs pass a dead unit's gradient (-1: all)"
    )
    shard: str = keys.key(
        keys.shard,
        "auto",
        "this process's slice of the units, 'K/N', or 'auto' (JAX's process)",
        role="placement",
    )
    distributed: bool = keys.key(
        keys.boolean,
        False,
        "join a multi-host job with jax.distributed.initialize() first",
        role="placement",
    )
    deterministic: bool = keys.key(
        keys.boolean,
        True,
        "the same pictures bit for bit on every run, GPUs too (XLA's deterministic ops)",
        role="placement",
    )
    param: ParamConfig = keys.section(ParamConfig)
    transforms: TransformsConfig = keys.section(TransformsConfig)
    optimizer: OptimizerConfig = keys.section(OptimizerConfig)
    diversity: DiversityConfig = keys.section(DiversityConfig)
    natural: NaturalConfig = keys.section(NaturalConfig)
    checks: ChecksConfig = keys.section(ChecksConfig, role="checks")
    facets: FacetsConfig = keys.section(FacetsConfig, role="checks")
    atlas: AtlasConfig = keys.section(AtlasConfig, role="checks")
    output: str = keys.key(keys.text, "fvjax-out", "output directory", role="run")
    progress: bool = keys.key(keys.boolean, True, "progress bar on stderr", role="run")
    checkpoint: bool = keys.key(
        keys.boolean,
        True,
        "checkpoint chunks under OUTPUT/.checkpoints so a killed job resumes",
        role="run",
    )
    checkpoint_every: int = keys.key(
        keys.integer(0),
        0,
        "steps between saves of the chunk in flight (0: finished chunks only)",
        role="run",
    )


# -- building a config from data ------------------------------------------------------------------


def _unknown_key(key: str, prefix: str, allowed: Iterable[str]) -> ConfigError:
    allowed = list(allowed)
    where = f"in [{prefix[:-1]}]" if prefix else "at the top level"
    return ConfigError(
        f"unknown config key {prefix + key!r}.{did_you_mean(key, allowed)} "
        f"Allowed keys {where}: {', '.join(allowed)}"
    )


def _build(cls: type, data: Any, prefix: str = "") -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"config {'section [' + prefix[:-1] + ']' if prefix else 'file'} must be a table "
            f"of keys, got {data!r}"
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise _unknown_key(str(key), prefix, fields)
        section = fields[key].metadata.get("section")
        kwargs[key] = _build(section, value, f"{prefix}{key}.") if section else value
    return cls(**kwargs)


def parse_value(text: str) -> Any:
    """A command-line value as TOML (``8``, ``true``, ``[1, 2]``, ``"a b"``), else the string.

    >>> parse_value("8"), parse_value("[0, 3]"), parse_value("pixel")
    (8, [0, 3], 'pixel')
    """
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(data: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """A copy of ``data`` with each ``key=value`` (``param.kind=pixel``) applied.

    Keys are checked against the schema, so a typo fails here with a suggestion.

    >>> apply_overrides({"steps": 4}, ["steps=8", "param.kind=pixel"])
    {'steps': 8, 'param': {'kind': 'pixel'}}
    """
    data = copy.deepcopy(dict(data))
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {override!r} must look like key=value, e.g. steps=64")
        parts = key.strip().split(".")
        cls, node, prefix = Config, data, ""
        for i, part in enumerate(parts):
            fields = {f.name: f for f in dataclasses.fields(cls)}
            if part not in fields:
                raise _unknown_key(part, prefix, fields)
            section = fields[part].metadata.get("section")
            last = i == len(parts) - 1
            if section and last:
                raise ConfigError(
                    f"{prefix + part!r} is a section; set one of its keys, e.g. "
                    f"{prefix + part}.{dataclasses.fields(section)[0].name}=..."
                )
            if not section and not last:
                raise ConfigError(f"{prefix + part!r} is not a section, so {key!r} is not a key")
            if last:
                node[part] = parse_value(text.strip())
            else:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise ConfigError(f"config section [{prefix + part}] must be a table")
                cls, prefix = section, f"{prefix}{part}."
    return data


def from_dict(data: Mapping[str, Any], overrides: Iterable[str] = ()) -> Config:
    """A checked :class:`Config` from plain data (as a file holds it) and ``key=value`` overrides.

    >>> from_dict({"seeds": 4}).seeds
    4
    """
    return _build(Config, apply_overrides(data, overrides))


def read(path: str | os.PathLike) -> dict[str, Any]:
    """The raw data of a ``.toml``, ``.py`` (a module-level ``CONFIG`` dict) or ``.yaml`` file."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise ConfigError(f"config file {str(path)!r} must end in one of {', '.join(SUFFIXES)}")
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} not found")
    if path.suffix == ".toml":
        try:
            with path.open("rb") as file:
                return tomllib.load(file)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from exc
    if path.suffix == ".py":
        try:
            namespace = runpy.run_path(str(path))
        except Exception as exc:
            raise ConfigError(
                f"config file {str(path)!r} failed to run: {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(namespace.get("CONFIG"), Mapping):
            raise ConfigError(f"config file {str(path)!r} must define a dict named CONFIG")
        return dict(namespace["CONFIG"])
    try:
        import yaml
    except ImportError as exc:
        raise ConfigError(
            f"reading {str(path)!r} needs PyYAML: pip install pyyaml, or use a .toml config"
        ) from exc
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from exc
    return {} if data is None else data


def load(path: str | os.PathLike, overrides: Iterable[str] = ()) -> Config:
    """A checked :class:`Config` from a file and ``key=value`` overrides.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "job.toml"
    >>> _ = path.write_text('layers = ["block2"]')
    >>> load(path, ["steps=4"]).steps
    4
    """
    return from_dict(read(path), overrides)


# -- what a config is: every key, and the keys that decide the pictures ----------------------


def to_dict(config: Config) -> dict[str, Any]:
    """Every key of ``config``, defaults included, as plain JSON-able data (tuples as lists):
    what the manifest records, and hashes as ``config_sha256``.

    >>> to_dict(Config())["param"]["kind"]
    'fourier'
    """
    return json.loads(json.dumps(dataclasses.asdict(config)))


def sha256(config: Config) -> str:
    """SHA-256 hex of every key of ``config`` (:func:`to_dict`): the manifest's ``config_sha256``.

    >>> len(sha256(Config()))
    64
    """
    return data_sha256(to_dict(config))


def identity(config: Config | Mapping[str, Any]) -> dict[str, Any]:
    """The keys that decide the pictures (every key whose role is ``"pictures"``): two jobs
    with equal identities make the same pictures, wherever they write them, whichever shard
    of the job this process is, and whether a progress bar shows. A job's checkpoints are kept
    under its identity's hash, shards of one job must share it, and an output directory that
    holds another identity's pictures is noted. Takes a config or its :func:`to_dict`.

    >>> sorted(set(to_dict(Config())) - set(identity(Config())))  # doctest: +NORMALIZE_WHITESPACE
    ['atlas', 'checkpoint', 'checkpoint_every', 'checks', 'deterministic', 'distributed',
     'facets', 'output', 'progress', 'shard']
    """
    return with_roles(config, ("pictures",))


def differences(before: Mapping[str, Any], after: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Every dotted key whose value differs between two resolved configs, ``key: old -> new``.

    >>> differences({"steps": 4, "param": {"kind": "fourier"}}, {"steps": 8, "param": {}})
    ['steps: 4 -> 8', 'param.kind: "fourier" -> (none)']
    """

    def show(value: Any) -> str:
        return json.dumps(value, separators=(", ", ": "))

    found = []
    for key in [*before, *(k for k in after if k not in before)]:
        name = f"{prefix}{key}"
        if key not in after or key not in before:
            old = show(before[key]) if key in before else "(none)"
            found.append(f"{name}: {old} -> {show(after[key]) if key in after else '(none)'}")
        elif isinstance(before[key], Mapping) and isinstance(after[key], Mapping):
            found += differences(before[key], after[key], f"{name}.")
        elif before[key] != after[key]:
            found.append(f"{name}: {show(before[key])} -> {show(after[key])}")
    return found


def with_roles(config: Config | Mapping[str, Any], roles: Iterable[str]) -> dict[str, Any]:
    """The keys of ``config`` (or of its :func:`to_dict`) whose role is one of ``roles``
    (:data:`fvjax.job.keys.ROLES`): ``("pictures",)`` is :func:`identity`; ``("pictures",
    "checks")`` is a procedure, what a registration freezes (:mod:`fvjax.job.procedure`).

    >>> sorted(with_roles(Config(), ["checks"]))
    ['atlas', 'checks', 'facets']
    """
    data = to_dict(config) if isinstance(config, Config) else config
    roles = tuple(roles)
    kept = {f.name for f in dataclasses.fields(Config) if f.metadata["role"] in roles}
    return {key: value for key, value in data.items() if key in kept}


def describe() -> str:
    """The schema as text, one ``key = default  # meaning`` line per key.

    >>> print(describe().splitlines()[4])
    objective = "channel"  # channel | neuron | accentuate | invert | caricature (see [natural])
    """
    lines: list[str] = []

    def walk(cls: type, defaults: dict[str, Any], prefix: str) -> None:
        for f in dataclasses.fields(cls):
            if "section" in f.metadata:
                walk(f.metadata["section"], defaults[f.name], f"{prefix}{f.name}.")
            else:
                default = json.dumps(defaults[f.name])
                lines.append(f"{prefix}{f.name} = {default}  # {f.metadata['doc']}")

    walk(Config, to_dict(Config()), "")
    return "\n".join(lines)
