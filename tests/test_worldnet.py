"""The shipped WorldNet: it loads, has the layers the engine expects, and is as good as its
json says."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fvjax import models, world
from fvjax.models.zoo import worldnet


@pytest.fixture(scope="module")
def shipped():
    return worldnet.load_worldnet()


def test_info_describes_the_shipped_model(shipped):
    module, variables, info = shipped
    assert info["concepts"] == list(world.CONCEPTS)  # the logit order
    n_params = sum(x.size for x in jax.tree_util.tree_leaves(variables))
    assert info["model"]["n_params"] == n_params
    assert tuple(info["model"]["features"]) == tuple(module.features)
    assert info["input"]["normalisation"] == {
        "mean": list(worldnet.WORLDNET_MEAN),
        "std": list(worldnet.WORLDNET_STD),
    }
    for key in ("config", "date", "versions", "seconds", "heldout", "heldout_check"):
        assert key in info, key
    assert {"jax", "flax", "optax"} <= set(info["versions"])


def test_weights_file_is_small_and_float(shipped):
    assert worldnet.WEIGHTS_PATH.stat().st_size < 5_000_000
    with np.load(worldnet.WEIGHTS_PATH) as npz:
        assert all(npz[name].dtype in (np.float32, np.float16) for name in npz.files)
        assert sorted(npz.files) == sorted(worldnet.flatten_variables(shipped[1]))


def test_layers_are_named_for_the_engine(shipped):
    module, variables, info = shipped
    shapes = models.from_linen(module, variables).layer_shapes(worldnet.WORLDNET_SIZE)
    assert shapes == {name: tuple(shape) for name, shape in info["model"]["layer_shapes"].items()}
    assert shapes["block1/conv"] == shapes["block1"] == (32, 32, 16)
    assert shapes["block2"] == (16, 16, 32)
    assert shapes["block3"] == (8, 8, 64)
    assert shapes["block4/conv"] == (8, 8, 128)
    assert shapes["logits"] == (len(world.CONCEPTS),)


def test_plain_apply_needs_no_mutable_state(shipped):
    module, variables, _ = shipped
    logits = module.apply(variables, jnp.full((2, 64, 64, 3), 0.5))
    assert logits.shape == (2, len(world.CONCEPTS))
    assert np.isfinite(np.asarray(logits)).all()


def test_reaches_the_recorded_heldout_accuracy(shipped):
    module, variables, info = shipped
    config, recorded = info["config"], info["heldout_check"]
    # The first images of the held-out stream: the same ones the training script scored.
    heldout = world.generate(config["heldout_seed"], info["check_images"], config["size"])
    report = worldnet.accuracy_report(
        worldnet.predict(module, variables, heldout.images), heldout.labels
    )
    assert report["n_images"] == recorded["n_images"]
    assert report["mean_accuracy"] == pytest.approx(recorded["mean_accuracy"], abs=0.003)
    assert report["exact_match"] == pytest.approx(recorded["exact_match"], abs=0.02)
    for group, accuracy in recorded["per_group"].items():
        assert report["per_group"][group] == pytest.approx(accuracy, abs=0.01), group
    # And the claims themselves: a model that clearly works.
    assert info["heldout"]["mean_accuracy"] > 0.9
    assert min(info["heldout"]["per_group"].values()) > 0.85


def test_recorded_summaries_agree_with_the_per_concept_numbers(shipped):
    _, _, info = shipped
    for report in (info["heldout"], info["heldout_check"]):
        per_concept = report["per_concept"]
        assert report["mean_accuracy"] == pytest.approx(np.mean(list(per_concept.values())))
        for group, concepts in world.CONCEPT_GROUPS.items():
            mean = np.mean([per_concept[c] for c in concepts])
            assert report["per_group"][group] == pytest.approx(mean), group


def test_accuracy_report_counts():
    labels = np.zeros((4, len(world.CONCEPTS)), bool)
    labels[:, 0] = [True, True, False, False]
    probabilities = np.zeros(labels.shape)
    probabilities[:, 0] = [0.9, 0.1, 0.2, 0.8]  # one miss, one false alarm
    report = worldnet.accuracy_report(probabilities, labels)
    assert report["per_concept"]["disk"] == 0.5
    assert report["exact_match"] == 0.5
    # disk: half its positives and half its negatives; the others are never on and never said.
    n = len(world.CONCEPTS)
    assert report["mean_balanced_accuracy"] == pytest.approx((0.5 + (n - 1)) / n)
