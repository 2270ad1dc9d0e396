"""Network Dissection: which labelled concept a unit's strongest activations overlap.

Bau et al. 2017 (and NetDissect-Lite): a unit's map is thresholded at its top ``quantile`` of
activations over the whole dataset (0.005 by default), upsampled bilinearly to the masks, and
compared with every concept's masks: IoU = sum over images of |active AND concept| over the sum
of |active OR concept|. The unit's label is its best concept; above ``detector_iou`` (0.04) the
unit is called a *detector* of it. The counts come from :func:`~fvjax.checks.scan.
dataset_pass`; this module only reads them.

>>> import numpy as np
>>> from fvjax.data.datasets import Concepts
>>> concepts = Concepts(("red", "disk"), ("colour", "shape"), np.array([0, 1]))
>>> found = label_units(np.array([[0.10, 0.02], [0.01, 0.03]]), concepts)
>>> [(d.best.concept, d.detector) for d in found]
[('red', True), ('disk', False)]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from fvjax.data.datasets import Concepts
from fvjax.errors import ArgumentError

#: Bau et al.'s IoU above which a unit is called a detector of its concept.
DETECTOR_IOU = 0.04


class ConceptMatch(NamedTuple):
    """One concept's overlap with a unit."""

    concept: str
    category: str
    iou: float


class UnitLabel(NamedTuple):
    """A unit's dissection: its best concept, the runners-up, and whether it is a detector."""

    unit: int
    best: ConceptMatch
    runners_up: tuple[ConceptMatch, ...]
    detector: bool


def label_units(
    iou: np.ndarray,
    concepts: Concepts,
    detector_iou: float = DETECTOR_IOU,
    runners_up: int = 3,
    units: Sequence[int] | None = None,
) -> list[UnitLabel]:
    """Label each unit from its ``(U, C)`` IoU table; ties go to the earlier concept.

    ``units`` names the rows (default ``0 .. U-1``).
    """
    iou = np.asarray(iou, np.float64)
    if iou.ndim != 2 or iou.shape[1] != len(concepts.names):
        raise ArgumentError(
            f"iou must be (units, {len(concepts.names)} concepts), got shape {iou.shape}"
        )
    if not 0.0 <= detector_iou <= 1.0:
        raise ArgumentError(f"detector_iou must lie in [0, 1], got {detector_iou!r}")
    units = range(len(iou)) if units is None else units
    labels = []
    for unit, row in zip(units, iou, strict=True):
        order = np.argsort(-row, kind="stable")
        matches = [
            ConceptMatch(
                concepts.names[c], concepts.categories[concepts.category[c]], float(row[c])
            )
            for c in order[: 1 + runners_up]
        ]
        labels.append(
            UnitLabel(int(unit), matches[0], tuple(matches[1:]), matches[0].iou > detector_iou)
        )
    return labels


def detectors_by_category(labels: Sequence[UnitLabel], concepts: Concepts) -> dict[str, int]:
    """How many units detect a concept of each category (every category listed, 0 included).

    >>> concepts = Concepts(("red",), ("colour",), np.array([0]))
    >>> detectors_by_category(label_units(np.array([[0.5], [0.0]]), concepts), concepts)
    {'colour': 1}
    """
    counts = dict.fromkeys(concepts.categories, 0)
    for label in labels:
        if label.detector:
            counts[label.best.category] += 1
    return counts
