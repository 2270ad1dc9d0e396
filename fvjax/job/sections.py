"""The sections of a render job's config (:mod:`fvjax.job.config`), one frozen dataclass each:
``[param]``, ``[transforms]``, ``[optimizer]``, ``[diversity]``, ``[natural]``, ``[checks]``,
``[facets]`` and ``[atlas]``. Each field is a key: its check, default, meaning and role
(:func:`fvjax.job.keys.key`); the classes check their values when built.

>>> ParamConfig(kind="pixel").decorrelate, NaturalConfig().count
(True, 4)
"""

from __future__ import annotations

import dataclasses

from fvjax.errors import ConfigError
from fvjax.job import keys
from fvjax.rendering.inversion import DEFAULT_POWER
from fvjax.rendering.param import OUTPUTS

PARAMS = ("fourier", "pixel", "maco", "laplacian", "cppn")
PRESETS = ("standard", "none", "maco")
#: ``optax`` optimizers that take the learning rate as their first argument and keep
#: per-parameter state (the engine vmaps the update, one state per picture).
OPTIMIZERS = (
    "adabelief",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "lion",
    "nadam",
    "radam",
    "rmsprop",
    "sgd",
    "yogi",
)


@dataclasses.dataclass(frozen=True)
class ParamConfig(keys.Checked):
    """How a picture is parameterized (:mod:`fvjax.rendering.param`)."""

    _prefix = "param."
    kind: str = keys.key(
        keys.one_of(PARAMS), "fourier", "fourier | pixel | maco | laplacian | cppn"
    )
    decorrelate: bool = keys.key(keys.boolean, True, "optimize in decorrelated colour space")
    decay: float = keys.key(keys.number(0.0), 1.0, "1/f**decay spectrum scaling (fourier only)")
    output: str = keys.key(
        keys.one_of(OUTPUTS), "sigmoid", "sigmoid | clip: map to [0, 1] (maco: clip)"
    )
    levels: int = keys.key(keys.integer(1), 4, "pyramid levels (laplacian only)")
    cppn_width: int = keys.key(keys.integer(1), 24, "channels of each CPPN layer (cppn only)")
    cppn_depth: int = keys.key(keys.integer(1), 8, "CPPN hidden layers (cppn only)")
    spectrum: str = keys.key(
        keys.optional_text, "", "maco's magnitude: '' the world's, a .npy file, an image folder"
    )
    alpha: bool = keys.key(keys.boolean, False, "RGBA pictures over random backgrounds (alpha)")
    opacity: float = keys.key(
        keys.number(0.0), 0.5, "alpha: what an opaque picture costs, a fraction of the unit's value"
    )


@dataclasses.dataclass(frozen=True)
class TransformsConfig(keys.Checked):
    """Robustness transforms (:mod:`fvjax.rendering.transforms`)."""

    _prefix = "transforms."
    preset: str = keys.key(
        keys.one_of(PRESETS), "standard", "standard | none | maco (random crops and noise)"
    )
    scale: float = keys.key(keys.number(0.0, inclusive=False), 1.0, "pixel amounts x scale")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig(keys.Checked):
    """The ``optax`` optimizer; each picture keeps its own state."""

    _prefix = "optimizer."
    name: str = keys.key(keys.one_of(OPTIMIZERS), "adam", "an optax optimizer")
    learning_rate: float = keys.key(keys.number(0.0, inclusive=False), 0.05, "learning rate")


@dataclasses.dataclass(frozen=True)
class DiversityConfig(keys.Checked):
    """Each unit's seeds pushed apart (:class:`fvjax.rendering.seeds.Diversity`)."""

    _prefix = "diversity."
    weight: float = keys.key(
        keys.number(0.0), 0.0, "0: off; else the weight of the seeds' Gram similarity"
    )
    layer: str = keys.key(
        keys.optional_text, "", "the layer whose Gram matrices differ ('': the rendered one)"
    )


@dataclasses.dataclass(frozen=True)
class NaturalConfig(keys.Checked):
    """The natural images of ``objective = "accentuate"`` (each unit raised in each image, held
    near it at ``layer``, :func:`~fvjax.rendering.inversion.accentuate`; the images take the
    seeds axis, ``seeds`` stays 1), ``"invert"`` or ``"caricature"`` (a row per image, at each
    rendered layer: :func:`~fvjax.rendering.inversion.invert`, ``caricature`` with ``power``)."""

    _prefix = "natural."
    images: str = keys.key(keys.text, "world", "world | a folder of images (sorted by name)")
    count: int = keys.key(keys.integer(1), 4, "images: the first COUNT")
    seed: int = keys.key(keys.integer(0), 1, "the world's seed (worldnet trained on 0)")
    layer: str = keys.key(
        keys.optional_text,
        "input",
        "accentuate: held at input (pixels), a layer, '' (the rendered)",
    )
    weight: float = keys.key(
        keys.number(0.0), 100.0, "accentuate: how near (weight of the relative squared distance)"
    )
    power: float = keys.key(keys.number(0.0), DEFAULT_POWER, "caricature: the cosine's power")


@dataclasses.dataclass(frozen=True)
class FacetsConfig(keys.Checked):
    """The facets of each unit (:mod:`fvjax.checks.facets`), part of ``fvjax check``: its top
    natural images clustered, the seeds' coverage of them, and a picture of each (started from
    its mean image, steered along what sets it apart)."""

    _prefix = "facets."
    enabled: bool = keys.key(keys.boolean, False, "find each unit's facets", "checks")
    k: int = keys.key(keys.integer(0), 0, "facets per unit (0: chosen by silhouette)", "checks")
    k_max: int = keys.key(keys.integer(1), 3, "the most facets a unit is given", "checks")
    layer: str = keys.key(
        keys.optional_text, "", "where images are compared ('': the rendered layer)", "checks"
    )
    render: bool = keys.key(
        keys.boolean, True, "render a picture started at and steered to each facet", "checks"
    )
    weight: float = keys.key(
        keys.number(0.0), 2.0, "the steering's pull, in what the seeds reach", "checks"
    )
    seed: int = keys.key(keys.integer(0), 0, "k-means's seed", "checks")


@dataclasses.dataclass(frozen=True)
class AtlasConfig(keys.Checked):
    """Each checked layer's activation atlas (:mod:`fvjax.checks.atlas`), by ``fvjax check``."""

    _prefix = "atlas."
    enabled: bool = keys.key(keys.boolean, False, "an activation atlas per layer", "checks")
    points: int = keys.key(keys.integer(3), 2000, "activation vectors laid out (t-SNE)", "checks")
    grid: int = keys.key(keys.integer(1), 8, "cells per side", "checks")
    min_points: int = keys.key(keys.integer(1), 4, "points a cell needs for a picture", "checks")
    perplexity: float = keys.key(keys.number(1.0), 30.0, "t-SNE's perplexity", "checks")
    steps: int = keys.key(keys.integer(0), 0, "render steps of a cell (0: the job's)", "checks")
    seed: int = keys.key(keys.integer(0), 0, "the points' and the pictures' seed", "checks")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.perplexity > self.points - 1:  # each point needs that many neighbours
            raise ConfigError(f"atlas.perplexity must be at most atlas.points - 1 = "
                              f"{self.points - 1}, got {self.perplexity:g}")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class ChecksConfig(keys.Checked):
    """The evidence beside the pictures (:mod:`fvjax.checks`): what ``fvjax check`` runs, and
    ``fvjax render`` too when ``enabled``. None of it changes a picture."""

    _prefix = "checks."
    enabled: bool = keys.key(keys.boolean, False, "fvjax render runs the checks too", "checks")
    dataset: str = keys.key(
        keys.text, "world", "world | a folder of images | a Broden-layout folder", "checks"
    )
    images: int = keys.key(keys.integer(1), 2000, "world images (the world only)", "checks")
    layers: tuple[str, ...] = keys.key(
        keys.optional_layers, (), "rendered layers to check (empty: all of them)", "checks"
    )
    dissect: bool = keys.key(
        keys.boolean, True, "Network Dissection (needs a dataset with concept masks)", "checks"
    )
    seed: int = keys.key(keys.integer(0), 1, "the world's seed (worldnet trained on 0)", "checks")
    batch_size: int = keys.key(keys.integer(1), 64, "images per step of the pass", "checks")
    top_k: int = keys.key(keys.integer(1), 8, "natural examples per unit, each end", "checks")
    quantile: float = keys.key(
        keys.number(0.0, inclusive=False, below=1.0), 0.005, "dissection's top quantile", "checks"
    )
    detector_iou: float = keys.key(
        keys.number(0.0, below=1.0), 0.04, "IoU above which a unit detects its concept", "checks"
    )
    plain: bool = keys.key(
        keys.boolean, True, "render a plain procedure beside (the price of the priors)", "checks"
    )
    path: bool = keys.key(keys.boolean, True, "run the path check", "checks")
    path_layers: tuple[str, ...] = keys.key(
        keys.optional_layers, (), "layers below for the path check (empty: automatic)", "checks"
    )
    far_above: float = keys.key(
        keys.number(0.0, inclusive=False), 30.0, "reach above which a unit is flagged", "checks"
    )
    reach_min: float = keys.key(
        keys.number(0.0), 1.0, "a verdict needs a picture reaching this (1: top natural)", "checks"
    )
