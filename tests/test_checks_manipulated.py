"""The checks catch planted manipulations (Geirhos et al. 2023) and flag few clean units.

Measured with these settings (500 world images, one seed, 128 steps; 2-core CPU, 2026-11-29):
clean worldnet logits 1 of 25 flagged off-path, the fooling circuit's 16 of 25 (with two seeds:
1 and 15, at 1.5x the time); the silent unit's picture reaches 46 natural spreads (its
neighbours 5-10), flagged far-above-natural. With the default job's procedure (4 seeds, 256
steps): clean logits 1 of 25, clean ``block3/conv`` 8 of 64, fooled logits 15 of 25.
"""

import numpy as np
import optax
import pytest

import fvjax
from fvjax.checks import manipulated
from fvjax.checks.evidence import unit_evidence
from fvjax.checks.paths import check_paths, path_layers
from fvjax.checks.scan import dataset_pass
from fvjax.data.datasets import world_dataset

RENDER = dict(
    seeds=1, steps=128, size=64, param=fvjax.param.fourier(decorrelate=True),
    transforms=fvjax.transforms.standard(scale=0.5), optimizer=optax.adam(0.05),
)  # fmt: skip


@pytest.fixture(scope="module")
def world():
    return world_dataset(seed=1, n=500, size=64)


def _flags(model, world, layer, units, steps=128):
    stats = dataset_pass(model, world, [layer], top_k=8)[layer]
    settings = {**RENDER, "steps": steps}
    result = fvjax.render(model, fvjax.objectives.channel(layer, units), **settings)
    paths = check_paths(model, world, stats, units, result.images, path_layers(model, layer, 64))
    evidence = unit_evidence(model, world, stats, units, result.activations, result.seeds,
                             paths=paths)  # fmt: skip
    return {e.unit: e for e in evidence}


@pytest.mark.slow
def test_a_fooling_circuit_is_flagged_off_path_and_clean_logits_are_not(world):
    units = list(range(25))
    clean = _flags(fvjax.zoo.load("worldnet"), world, "logits", units)
    fooled = _flags(manipulated.fooling_circuit(), world, "logits", units)
    clean_rate = sum("off-path" in e.flags for e in clean.values())
    fooled_rate = sum("off-path" in e.flags for e in fooled.values())
    assert clean_rate <= 4, clean_rate  # measured 1
    assert fooled_rate >= 12, fooled_rate  # measured 16
    # On natural images the circuit is invisible: the same top examples for every unit.
    assert all((clean[u].top[0].index == fooled[u].top[0].index) for u in units)


@pytest.mark.slow
def test_a_silent_unit_is_flagged_far_above_natural_and_its_neighbours_are_not(world, silent_unit):
    flagged = _flags(silent_unit, world, "block3/conv", [63, 8, 31, 5], steps=256)
    assert "far-above-natural" in flagged[63].flags
    assert np.all(flagged[63].reach > 30)
    for unit in (8, 31, 5):
        assert "far-above-natural" not in flagged[unit].flags
