"""The checks against known answers: planted concept detectors on the world, and the same
dissection from the world and from its Broden-layout export."""

import numpy as np
import pytest

from fvjax.checks.dissection import DETECTOR_IOU, label_units
from fvjax.checks.scan import dataset_pass
from fvjax.data import world
from fvjax.data.broden import load_broden, write_broden
from fvjax.data.datasets import world_dataset
from fvjax.models.zoo.planted import COLOUR_UNITS, colour_opponent, stripe_detectors

SEED, N, SIZE = 5, 300, 64


@pytest.fixture(scope="module")
def scene():
    return world_dataset(SEED, N, SIZE), world.generate(SEED, N, SIZE)


def _contains(scene_world, stats, unit, concept):
    """How many of the unit's top images hold ``concept``."""
    return int(scene_world.labels[stats.top_index[unit], world.CONCEPTS.index(concept)].sum())


def test_planted_colour_units_are_labelled_with_their_colour(scene):
    data, truth = scene
    # Ranked by each image's strongest pixel, as NetDissect ranks its top images.
    stats = dataset_pass(colour_opponent(), data, ["colour"], top_k=8, score="max")["colour"]
    expected = {"blue_vs_yellow": "blue", "yellow_vs_blue": "yellow", "bright": "white",
                "dark": "black"}  # fmt: skip
    labels = label_units(stats.iou, data.concepts)
    for name, colour in expected.items():
        label = labels[COLOUR_UNITS.index(name)]
        assert label.best.concept == colour and label.detector
        assert label.best.iou > 5 * DETECTOR_IOU, label
        assert label.runners_up[0].iou < label.best.iou / 2
        assert _contains(truth, stats, label.unit, colour) == 8


def test_planted_stripe_detectors_are_labelled_with_their_orientation(scene):
    data, truth = scene
    stats = dataset_pass(stripe_detectors(), data, ["stripes"], top_k=8)["stripes"]
    for label, concept in zip(
        label_units(stats.iou, data.concepts), world.ORIENTATIONS, strict=True
    ):
        assert label.best.concept == concept, label
        assert label.best.iou > 2 * DETECTOR_IOU
        # A detector of stripes also answers a long straight edge now and then: 31 of the
        # 32 top images hold their orientation (the odd one, a solid square's edges).
        assert _contains(truth, stats, label.unit, concept) >= 7


class _EightBit:
    """The world with its pictures stored as 8-bit PNGs store them."""

    def __init__(self, data):
        self.data = data
        for name in ("name", "size", "mask_size", "slots", "concepts"):
            setattr(self, name, getattr(data, name))

    def __len__(self):
        return len(self.data)

    def batches(self, batch_size, start=0):
        for batch in self.data.batches(batch_size, start):
            yield batch._replace(images=np.round(batch.images * 255) / 255)


def test_a_broden_export_of_the_world_dissects_exactly_like_the_world(tmp_path):
    small = _EightBit(world_dataset(SEED, 60, SIZE))
    folder = write_broden(tmp_path / "broden", seed=SEED, n=60, size=SIZE)
    broden = load_broden(folder, SIZE)
    assert broden.concepts.names == small.concepts.names
    model = stripe_detectors()
    direct = dataset_pass(model, small, ["stripes"], top_k=4)["stripes"]
    exported = dataset_pass(model, broden, ["stripes"], top_k=4)["stripes"]
    np.testing.assert_allclose(exported.threshold, direct.threshold, rtol=1e-5)
    np.testing.assert_array_equal(exported.intersection, direct.intersection)
    np.testing.assert_array_equal(exported.union, direct.union)
    np.testing.assert_array_equal(exported.top_index, direct.top_index)
