"""The plan of a render job, built once from its config and handed down: the model, this
process's share of each layer as a checked :class:`~fvjax.rendering.engine.RenderPlan`,
where the outputs and checkpoints go, and how much work there is.

Everything is checked here (model, layers, units, sizes, options), before the first picture
is rendered; :mod:`fvjax.job.run` carries the plan out.

>>> from fvjax.job.config import Config
>>> plan = build_plan(Config(model="tiny", layers=["block2", "block3"], steps=4, size=16))
>>> {layer: p.n_images for layer, p in plan.layers.items()}, plan.total_steps
({'block2': 16, 'block3': 32}, 8)
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import optax

from fvjax.checks.receptive import receptive_field
from fvjax.data.datasets import folder_dataset, world_dataset
from fvjax.data.images import as_size
from fvjax.errors import ConfigError, FvjaxError, OutputPathError
from fvjax.files import data_sha256, directory_problem
from fvjax.job import shards
from fvjax.job.config import Config, NaturalConfig, identity
from fvjax.job.outputs import slugify
from fvjax.models import zoo
from fvjax.models.adapters import INPUT, Model, layer_shape
from fvjax.rendering import alpha as alpha_lib
from fvjax.rendering import cppn as cppn_lib
from fvjax.rendering import inversion as inversion_lib
from fvjax.rendering import maco as maco_lib
from fvjax.rendering import param as param_lib
from fvjax.rendering import transforms as transforms_lib
from fvjax.rendering.engine import RenderPlan, plan_render
from fvjax.rendering.objectives import LAYER_OBJECTIVES, Objective
from fvjax.rendering.seeds import Diversity

#: Under the output directory: the checkpoints of unfinished jobs, one folder per identity.
CHECKPOINTS = ".checkpoints"


def build_model(config: Config) -> Model:
    """The model: a built-in (:mod:`fvjax.models.zoo`), or ``factory()`` for
    ``"pkg.module:factory"`` (``factory(weights=path)`` when ``weights`` is set)."""
    if ":" not in config.model:
        return zoo.load(config.model, weights=config.weights or None)
    module_name, _, attr = config.model.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot import model factory {config.model!r}: {exc}") from exc
    model = target(weights=config.weights) if config.weights else target()
    if not isinstance(model, Model):
        raise ConfigError(
            f"model factory {config.model!r} returned {type(model).__name__}, not an "
            "fvjax.models.Model (wrap it with fvjax.from_linen, from_nnx or from_fn)"
        )
    return model


def build_param(config: Config) -> Any:
    """The parameterization named by ``config.param`` (MACO's spectrum estimated or read
    here, at the config's size), with an alpha channel when ``param.alpha`` is on."""
    base = _rgb_param(config)
    return alpha_lib.param(base) if config.param.alpha else base


def _rgb_param(config: Config) -> Any:
    p = config.param
    if p.kind == "maco":
        try:
            spectrum = maco_lib.load_spectrum(p.spectrum, config.size) if p.spectrum else None
        except FvjaxError as exc:
            raise ConfigError(f"config key 'param.spectrum': {exc}") from exc
        return maco_lib.param(spectrum)
    if p.kind == "pixel":
        return param_lib.pixel(decorrelate=p.decorrelate, output=p.output)
    if p.kind == "laplacian":
        return param_lib.laplacian(levels=p.levels, decorrelate=p.decorrelate, output=p.output)
    if p.kind == "cppn":
        return cppn_lib.cppn(width=p.cppn_width, depth=p.cppn_depth)
    return param_lib.fourier(decorrelate=p.decorrelate, decay=p.decay, output=p.output)


def build_transforms(config: Config) -> Any:
    """The transform named by ``config.transforms``; with ``param.alpha``, each picture is
    first composited over its own random background."""
    t = config.transforms
    if t.preset == "maco":
        chosen = maco_lib.transforms()
    elif t.preset == "standard":
        chosen = transforms_lib.standard(t.scale)
    else:
        chosen = transforms_lib.identity()
    return transforms_lib.compose(alpha_lib.background(), chosen) if config.param.alpha else chosen


@functools.cache
def _optimizer(name: str, learning_rate: float) -> optax.GradientTransformation:
    return getattr(optax, name)(learning_rate)


def build_optimizer(config: Config) -> optax.GradientTransformation:
    """The optimizer; equal settings give the same instance, hence the same compiled program."""
    return _optimizer(config.optimizer.name, config.optimizer.learning_rate)


def build_objectives(config: Config, shapes: dict[str, tuple[int, ...]]) -> dict[str, Objective]:
    """``{layer: objective over the config's units}`` for a model whose layers at the
    config's size have ``shapes``; an unknown layer raises ``UnknownLayerError``."""
    built = {}
    for layer in config.layers:
        units = range(layer_shape(shapes, layer)[-1]) if config.units == "all" else config.units
        built[layer] = layer_objective(config, layer, units)
    return built


def layer_objective(config: Config, layer: str, units: Any) -> Objective:
    """The config's objective over ``units`` of ``layer``; with ``param.alpha``, opacity
    priced at ``param.opacity`` of each unit's own value (:func:`fvjax.rendering.alpha.priced`)."""
    unit_objective = "channel" if config.objective == "accentuate" else config.objective
    objective = LAYER_OBJECTIVES[unit_objective](layer, units)
    if config.param.alpha and config.param.opacity:
        return alpha_lib.priced(objective, config.param.opacity)
    return objective


def render_settings(config: Config) -> dict[str, Any]:
    """:func:`~fvjax.rendering.engine.plan_render`'s keyword arguments the config decides
    (all but the diversity, which depends on the layer)."""
    return {
        "seeds": config.seeds,
        "steps": config.steps,
        "size": config.size,
        "param": build_param(config),  # one of each for all layers: layers of equal
        "transforms": build_transforms(config),  # size share compiled programs
        "optimizer": build_optimizer(config),
        "batch_size": config.batch_size or None,
        "steps_per_call": config.steps_per_call or None,
        "devices": config.devices or None,
        "model_dtype": config.model_dtype,
        "remat": config.remat,
        "redirect_relu": config.redirect_relu,
    }


def build_diversity(config: Config, layer: str) -> Diversity | None:
    """The diversity a layer's render gets (``None``: off)."""
    weight = config.diversity.weight
    return Diversity(config.diversity.layer or layer, weight) if weight else None


@dataclasses.dataclass(frozen=True, eq=False)
class NaturalImages:
    """The ``[natural]`` images of a job, at its size.

    Attributes:
        images: ``(count, H, W, 3)`` in [0, 1].
        names: one per image: ``"world image 3"``, or its file's name.
        source: where they come from, as the manifest's ``natural`` records it:
            ``{"source": "world", "seed": 1}``, or ``{"source": FOLDER}``.
        maps: ``{layer: (count, ...)}``, the images' maps an ``invert`` or ``caricature``
            job holds its pictures to (:func:`natural_maps`; ``None`` for ``accentuate``).
    """

    images: np.ndarray
    names: tuple[str, ...]
    source: dict[str, Any]
    maps: dict[str, np.ndarray] | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class JobPlan:
    """A render job, checked and laid out: what :func:`fvjax.job.run.run` carries out.

    Attributes:
        config: the job's config.
        model: its model.
        shard: ``(K, N)``: this process renders the units at positions ``K, K + N, ...``
            of every layer (``(0, 1)``: all of them).
        output: where this process writes (``OUTPUT``, or ``OUTPUT/shard-K-of-N``).
        shapes: each layer's activation shape for one picture (recorded in the manifest).
        layers: ``{layer: RenderPlan}`` of this process's share; a layer of which it has no
            unit (more shards than units) is left out.
        checkpoints: where the layers' checkpoints go (``None``: the config turns them off).
        warnings: what the job should say before it starts (pictures smaller than a layer's
            receptive field).
        natural: the ``[natural]`` images of a job held to them (``None`` for the others).
    """

    config: Config
    model: Model
    shard: tuple[int, int]
    output: Path
    shapes: dict[str, tuple[int, ...]]
    layers: dict[str, RenderPlan]
    checkpoints: Path | None
    warnings: tuple[str, ...] = ()
    natural: NaturalImages | None = None

    @property
    def total_steps(self) -> int:
        """Chunk-steps over every layer: what the job's progress bar counts."""
        return sum(plan.total_steps for plan in self.layers.values())

    def checkpoint_dir(self, layer: str) -> Path | None:
        """Where ``layer``'s render keeps its checkpoints."""
        return None if self.checkpoints is None else self.checkpoints / slugify(layer)


def check_facet_pictures(config: Config) -> None:
    """Refuse, before any work, ``[facets]`` pictures (``facets.render``) that cannot be made:
    each starts from its facet's mean image, so the parameterization needs ``from_image``."""
    if not (config.facets.enabled and config.facets.render):
        return
    if not callable(getattr(build_param(config), "from_image", None)):
        raise ConfigError(
            f"facets.render starts each facet's picture from the facet's mean image, but "
            f"param.kind = {config.param.kind!r} cannot start from a picture; set "
            "facets.render = false, or use param.kind fourier, pixel or laplacian"
        )


def build_plan(config: Config) -> JobPlan:
    """Build the model and every layer's render plan of ``config``, checking all of it.

    Raises :class:`~fvjax.errors.FvjaxError` (unknown model, layer or unit, a size the model
    or transforms cannot take, an option the model lacks, an output folder that cannot be
    made) before anything is rendered.
    """
    shard, n_shards = shards.this_process(config.shard)
    output = Path(config.output)
    if n_shards > 1:
        output = output / shards.shard_dir(shard, n_shards)
    problem = directory_problem(output)  # an output that cannot be written fails first
    if problem:
        raise OutputPathError(problem)
    if config.checks.enabled:
        check_facet_pictures(config)
    model = build_model(config)
    shapes = model.layer_shapes(config.size)
    render_kwargs = render_settings(config)
    natural = natural_images(config, n_shards)
    if config.objective in inversion_lib.IMAGE_OBJECTIVES:  # a member per natural image
        natural = dataclasses.replace(natural, maps=natural_maps(config, model, natural.images))
        objectives = image_objectives(config, natural.maps)
    else:
        objectives = build_objectives(config, shapes)
    layers = {}
    for layer, objective in objectives.items():
        members = shards.positions(shard, n_shards, objective.batch_size)
        if len(members):  # none when this shard has fewer units than there are shards
            share = objective.take(members) if n_shards > 1 else objective
            kwargs = dict(render_kwargs, diversity=build_diversity(config, layer))
            if config.objective == "accentuate":  # each (unit, image) pair, begun at its image
                reg_layer = config.natural.layer or layer
                share, kwargs["starts"] = inversion_lib.accentuation(
                    model, share, natural.images, reg_layer, config.natural.weight
                )
            layers[layer] = plan_render(model, share, **kwargs)
    checkpoints = None
    if config.checkpoint:
        checkpoints = output / CHECKPOINTS / data_sha256(identity(config))[:16]
    return JobPlan(
        config=config,
        model=model,
        shard=(shard, n_shards),
        output=output,
        shapes={layer: shapes[layer] for layer in config.layers},
        layers=layers,
        checkpoints=checkpoints,
        warnings=tuple(small_picture_warnings(model, config.layers, config.size)),
        natural=natural,
    )


def natural_images(config: Config, n_shards: int = 1) -> NaturalImages | None:
    """The ``[natural]`` images of an ``accentuate``, ``invert`` or ``caricature`` job at its
    size, the keys that cannot go with them refused (this process being one of ``n_shards``);
    ``None`` for the other objectives.

    >>> from fvjax.job.config import from_dict
    >>> config = from_dict({"objective": "invert", "size": 16, "transforms": {"preset": "none"}})
    >>> found = natural_images(config)
    >>> found.images.shape, found.names[:2]
    ((4, 16, 16, 3), ('world image 0', 'world image 1'))
    """
    if config.objective in LAYER_OBJECTIVES:
        return None
    check_natural_keys(config, n_shards)
    n, size = config.natural, as_size(config.size)
    if n.images == "world":
        images = world_dataset(n.seed, n.count, size).images(range(n.count))
        names = tuple(f"world image {i}" for i in range(n.count))
        return NaturalImages(images, names, {"source": "world", "seed": n.seed})
    if not Path(n.images).is_dir():
        raise ConfigError(f"natural.images {n.images!r} is neither 'world' nor a folder")
    found = folder_dataset(n.images, size)
    if len(found) < n.count:
        raise ConfigError(f"natural.count = {n.count}, but {n.images} holds {len(found)} images")
    names = tuple(path.name for path in found.folder.files[: n.count])
    return NaturalImages(found.images(range(n.count)), names, {"source": n.images})


def check_natural_keys(config: Config, n_shards: int = 1) -> None:
    """Refuse, naming the key, what a job held to natural images cannot take: ``accentuate``
    has a row per unit and a column per image, ``invert`` and ``caricature`` a row per image
    (the unit index is the image's) and a column per seed; each picture is held to a map, so
    transforms must keep its size."""
    name, n, default = config.objective, config.natural, NaturalConfig()
    per_image = name in inversion_lib.IMAGE_OBJECTIVES
    refused = {
        "seeds": (
            not per_image and config.seeds != 1,
            "the images take the seeds axis: set natural.count",
        ),
        "units": (per_image and config.units != "all", "a row per image: set natural.count"),
        "diversity.weight": (
            config.diversity.weight,
            "an image's seeds are independent starts" if per_image else "a pair has one picture",
        ),
        "checks.enabled": (
            config.checks.enabled,
            "the checks read a unit's seeds as pictures of the unit: check a plain render",
        ),
        "natural.layer": (
            per_image and n.layer != default.layer,
            "accentuate's: each picture is held to its image at the rendered layer",
        ),
        "natural.weight": (per_image and n.weight != default.weight, "accentuate's"),
        "natural.power": (name != "caricature" and n.power != default.power, "caricature's"),
        "param.alpha": (per_image and config.param.alpha, "the images it is held to are RGB"),
        "shard": (per_image and n_shards > 1, "one process renders all its images"),
    }
    for key, (bad, why) in refused.items():
        if bad:
            raise ConfigError(f"objective {name!r} takes no {key} ({why})")
    size = as_size(config.size)
    seen = transforms_lib.output_size(build_transforms(config), size)
    if seen != size and (per_image or n.layer != INPUT):
        at = "each rendered layer" if per_image else "natural.layer"
        fix = (
            "'none', as fvjax.inversion does ('maco' keeps the size, but its crops move the "
            "picture against the map)"
            if per_image
            else "'maco' (crops and noise, as Hamblin et al.) or 'none', or natural.layer = 'input'"
        )
        raise ConfigError(
            f"objective {name!r} holds each picture to its image's map at {at}, but "
            f"transforms.preset = {config.transforms.preset!r} makes {size[0]}x{size[1]} "
            f"pictures {seen[0]}x{seen[1]}: use transforms.preset = {fix}"
        )


def natural_maps(config: Config, model: Model, images: Any) -> dict[str, np.ndarray]:
    """``{layer: (I, ...)}``: the maps of ``images (I, H, W, 3)`` at the job's layers, what an
    ``invert`` or ``caricature`` job holds its pictures to (the images checked first).

    >>> config = Config(model="tiny", layers=["block2"], objective="invert", size=16)
    >>> natural_maps(config, build_model(config), np.zeros((3, 16, 16, 3)))["block2"].shape
    (3, 8, 8, 16)
    """
    images = inversion_lib.checked_images(model, images, config.layers)
    return inversion_lib.layer_activations(model, images, config.layers)


def image_objectives(config: Config, maps: Mapping[str, Any]) -> dict[str, Objective]:
    """``{layer: objective}`` of an ``invert`` or ``caricature`` job: a member per natural
    image, held to its map at the layer (``maps``: :func:`natural_maps`;
    :data:`~fvjax.rendering.inversion.IMAGE_OBJECTIVES`, ``natural.power``).

    >>> config = Config(model="tiny", layers=["block2"], objective="invert", size=16)
    >>> image_objectives(config, {"block2": np.zeros((3, 8, 8, 16))})["block2"].batch_size
    3
    """
    make = inversion_lib.IMAGE_OBJECTIVES[config.objective]
    return {layer: make(layer, maps[layer], config.natural.power) for layer in config.layers}


def small_picture_warnings(model: Model, layers: Any, size: Any) -> list[str]:
    """A sentence for each spatial layer whose map is under 3 positions a side at ``size``
    and whose receptive field (measured where the map has 3 or more) is larger than the
    picture: its units see mostly padding, and the picture is no picture of them.

    >>> from fvjax.models import zoo
    >>> model = zoo.load("tiny")
    >>> small_picture_warnings(model, ["block3"], 64)
    []
    >>> print(small_picture_warnings(model, ["block3"], 4)[0])  # doctest: +ELLIPSIS
    pictures of 4x4 px are smaller than the receptive field of layer 'block3' (...
    """
    height, width = as_size(size)
    out = []
    for layer in layers:
        shape = model.check_layer(layer, (height, width))
        if len(shape) != 3 or min(shape[:2]) >= 3:
            continue
        scale = 2
        while min(model.check_layer(layer, (height * scale, width * scale))[:2]) < 3:
            scale *= 2
            if max(height, width) * scale > 1024:
                break
        probe = (height * scale, width * scale)
        if min(model.check_layer(layer, probe)[:2]) < 3:
            continue
        field = receptive_field(model, layer, probe)
        # A field that covers even the larger picture from every position is at least as big.
        extent, least = (probe, "at least ") if field.whole_image else (field.size, "")
        if extent[0] > height or extent[1] > width:
            out.append(
                f"pictures of {height}x{width} px are smaller than the receptive field of "
                f"layer {layer!r} ({least}{extent[0]}x{extent[1]} px, measured at "
                f"{probe[0]}x{probe[1]}): its {shape[0]}x{shape[1]} map sees mostly padding; "
                f"use size={max(extent)} or more"
            )
    return out
