"""Checking pictures: the evidence beside each one.

The second half of fvjax. One streaming pass over a dataset (:func:`dataset_pass`) feeds every
check: dataset examples cropped to each unit's receptive field, Network Dissection
(:func:`label_units`), synthetic vs natural (:func:`unit_evidence`: reach, rank, flags), the
path check (:func:`check_paths`), and the unit card (:func:`unit_card_html`, also a notebook's
``_repr_html_``). :func:`stream_activations` runs a model over a dataset for your own checks.
:func:`activation_atlas` lays a layer's activations over a dataset out in 2-D (exact t-SNE,
:func:`tsne`) and renders a picture per region (:func:`atlas_html`: its page).
"""

from fvjax.checks.activations import stream_activations
from fvjax.checks.atlas import Atlas, activation_atlas
from fvjax.checks.atlas_page import atlas_html
from fvjax.checks.card import unit_card_html
from fvjax.checks.dissection import DETECTOR_IOU, detectors_by_category, label_units
from fvjax.checks.evidence import FAR_ABOVE, FLAGS, UnitEvidence, unit_evidence
from fvjax.checks.layout2d import tsne
from fvjax.checks.paths import PathCheck, check_paths, path_layers
from fvjax.checks.receptive import ReceptiveField, crop, heat_overlay, receptive_field
from fvjax.checks.scan import DEFAULT_QUANTILE, SCORES, dataset_pass
from fvjax.checks.statistics import LayerStatistics

__all__ = [
    "DEFAULT_QUANTILE",
    "DETECTOR_IOU",
    "FAR_ABOVE",
    "FLAGS",
    "SCORES",
    "Atlas",
    "LayerStatistics",
    "PathCheck",
    "ReceptiveField",
    "UnitEvidence",
    "activation_atlas",
    "atlas_html",
    "check_paths",
    "crop",
    "dataset_pass",
    "detectors_by_category",
    "heat_overlay",
    "label_units",
    "path_layers",
    "receptive_field",
    "stream_activations",
    "tsne",
    "unit_card_html",
    "unit_evidence",
]
