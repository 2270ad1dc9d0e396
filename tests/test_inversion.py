"""Feature inversion, caricatures and accentuation: held to natural images whose activations
are known, every image and unit in one program."""

import io

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import fvjax
from fvjax import objectives as O
from fvjax.data.datasets import world_dataset
from fvjax.data.images import read_picture
from fvjax.errors import ArgumentError, ConfigError, ProcedureError, UnknownLayerError
from fvjax.job import procedure, run
from fvjax.job.check import check
from fvjax.job.config import from_dict
from fvjax.job.plan import build_plan
from fvjax.models.zoo import planted
from fvjax.rendering import inversion, step

SIZE = 32


@pytest.fixture(scope="module")
def world():
    return fvjax.world.generate(seed=1, n=2, size=SIZE).images


@pytest.fixture(scope="module")
def planted_net():
    return planted.planted_model()


@pytest.fixture(scope="module")
def worldnet():
    return fvjax.zoo.load("worldnet")


def test_inverting_an_invertible_layer_gives_back_the_image(planted_net, world):
    # colour_pre is an affine map of each pixel of rank 3: one picture has its activations.
    clip = fvjax.param.pixel(output="clip")
    found = inversion.invert(planted_net, world, "colour_pre", seeds=2, steps=128, param=clip)
    assert found.images.shape == (2, 2, SIZE, SIZE, 3)
    assert found.error.max() < 0.002, found.error  # measured 0.0005-0.0008
    assert np.abs(found.images - world[:, None]).max() < 0.005  # measured 0.001


def test_an_inversion_matches_a_layer_that_keeps_less_than_the_image(planted_net, world):
    # Gabor filters behind a ReLU: many pictures share the maps; the render finds one.
    layer = planted.ORIENTATION_LAYER
    found = inversion.invert(planted_net, world, layer, seeds=2, steps=128)
    noise = np.random.default_rng(0).uniform(size=world.shape).astype(np.float32)
    seen = inversion.layer_activations(planted_net, np.concatenate([noise, world]), [layer])
    random_error = inversion.compare(seen[layer][:2], seen[layer][2:])[0]
    assert found.error.max() < 0.05, found.error  # measured 0.023-0.033 (Fourier, adam 0.05)
    assert random_error.min() > 20 * found.error.max(), random_error  # measured 1.08, 2.89
    assert found.cosine.min() > 0.99
    assert found.render.activations.shape == (2, 2)  # -match: the objective it climbed


def test_a_caricature_points_the_images_way_and_goes_further(planted_net, world):
    layer = planted.ORIENTATION_LAYER
    found = inversion.caricature(planted_net, world, layer, steps=64)
    noise = np.random.default_rng(0).uniform(size=world.shape).astype(np.float32)
    seen = inversion.layer_activations(planted_net, np.concatenate([noise, world]), [layer])
    random_cosine = inversion.compare(seen[layer][:2], seen[layer][2:])[1]
    assert random_cosine.max() < 0.3, random_cosine  # measured 0.16, 0.18
    assert found.cosine.min() > 0.95, found.cosine  # measured 0.965-0.985
    assert found.scale.min() > 1.5, found.scale  # measured 2.0 and 12.7: past the image


@pytest.fixture(scope="module")
def accentuated(planted_net, world):
    """The planted 0 and 90 degree filters accentuated in 2 world images, held near them at
    the colour units; and plain renders of the two (the same steps, from a grey start)."""
    layer, still = planted.ORIENTATION_LAYER, fvjax.transforms.identity()
    found = inversion.accentuate(
        planted_net, world, layer, [0, 2], reg_layer="colour", weight=1.0, steps=64,
        transforms=still,
    )  # fmt: skip
    plain = fvjax.render(planted_net, O.channel(layer, [0, 2]), steps=64, size=SIZE,
                         transforms=still, progress=False)  # fmt: skip
    return found, plain


def test_accentuation_raises_each_unit_and_stays_near_its_image(planted_net, world, accentuated):
    found, plain = accentuated
    assert found.images.shape == (2, 2, SIZE, SIZE, 3) and found.units.tolist() == [0, 2]
    # Measured (2-core CPU): from 0.02-0.07 in the images to 0.26-0.47; plain 0.65-0.67.
    assert (found.activations > found.natural + 0.15).all(), (found.activations, found.natural)
    seen = inversion.layer_activations(planted_net, plain.images[:, 0], ["colour"])["colour"]
    targets = inversion.layer_activations(planted_net, world, ["colour"])["colour"]
    plain_distance = np.stack([inversion.compare(np.stack([s, s]), targets)[0] for s in seen])
    # Measured 0.34-0.43 against the plain pictures' 1.45-2.01.
    assert (found.distance < 0.5 * plain_distance).all(), (found.distance, plain_distance)
    pixels = np.abs(found.images - world[None]).mean((2, 3, 4))  # measured 0.045-0.069
    plain_pixels = np.abs(plain.images[:, :1] - world[None]).mean((2, 3, 4))  # 0.31-0.35
    assert (pixels < 0.5 * plain_pixels).all(), (pixels, plain_pixels)
    # What was added is the unit's stripes: measured within 2.5 degrees.
    added = planted.dominant_orientation(found.images - world[None] + 0.5).degrees
    error = planted.angle_difference(added, np.array([[0.0], [90.0]]))
    assert error.max() < 10, added


def test_new_units_and_images_reuse_the_program_and_every_pair_draws_its_own(planted_net, world):
    again = np.stack([world[1], world[1]])  # one image twice: only the pairs' keys differ
    before = step.trace_count()
    found = inversion.accentuate(
        planted_net, again, planted.ORIENTATION_LAYER, [1, 3], reg_layer="colour", weight=3.0,
        steps=2, transforms=fvjax.transforms.identity(),
    )  # fmt: skip
    assert step.trace_count() == before
    assert np.abs(found.images[:, 0] - found.images[:, 1]).max() > 1e-3
    assert found.render.units.tolist() == [1, 3] and found.render.seeds == (0, 1)


def test_objectives_compose_and_check_their_targets():
    ones = np.ones((2, 4, 4, 3), np.float32)
    obj = O.channel("rgb", [0, 1]) - 2.0 * inversion.match("rgb", ones)
    assert obj.batch_size == 2 and obj.weights.tolist() == [1.0, -2.0]
    image = jnp.full((4, 4, 3), 0.5).at[..., 1].set(2.0)
    assert float(obj.take(1)({"rgb": image})) == 2.0 - 2.0 * 0.5  # channel 1, -2 x distance
    with pytest.raises(ValueError, match="different numbers of units"):
        O.channel("rgb", [0, 1, 2]) - inversion.match("rgb", ones)
    with pytest.raises(ArgumentError, match=r"maps of shape \(4, 4, 3\).*gives \(8, 8, 3\)"):
        inversion.match("rgb", ones).validate({"rgb": (8, 8, 3)})
    with pytest.raises(ArgumentError, match="power must be"):
        inversion.likeness("rgb", ones, power=-1.0)


def test_bad_natural_images_layers_and_weights_are_named(rgb_model, planted_net, world):
    with pytest.raises(ArgumentError, match=r"\(I, H, W, 3\).*\(32, 32, 3\)"):
        inversion.invert(planted_net, world[0], "colour")
    with pytest.raises(ArgumentError, match=r"in \[0, 1\]"):
        inversion.caricature(planted_net, world * 2, "colour")
    with pytest.raises(UnknownLayerError, match="colur"):
        inversion.invert(planted_net, world, "colur")
    with pytest.raises(ArgumentError, match="weight must be a number >= 0, got -1"):
        inversion.accentuate(planted_net, world, "colour", [0], weight=-1.0)
    with pytest.raises(ArgumentError, match="size=16"):
        inversion.invert(planted_net, world, "colour", size=16)
    with pytest.raises(ArgumentError, match="sets seeds itself"):
        inversion.accentuate(planted_net, world, "colour", [0], seeds=2)
    with pytest.raises(ArgumentError, match="cannot be held to a map"):
        inversion.invert(planted_net, world, "colour", transforms=fvjax.transforms.standard())


def test_an_accentuation_job_writes_a_row_per_unit_and_a_column_per_image(tmp_path):
    data = {
        "model": "fvjax.models.zoo.planted:planted_model", "layers": ["orientation"],
        "units": [0, 2], "objective": "accentuate", "steps": 8, "size": SIZE,
        "output": str(tmp_path), "progress": False, "transforms": {"preset": "none"},
        "natural": {"count": 2, "layer": "colour", "weight": 1.0},
    }  # fmt: skip
    manifest = run.run(from_dict(data), stream=io.StringIO())
    (layer,) = manifest["layers"]
    assert layer["units"] == [0, 2] and layer["seeds"] == [0, 1]  # the seeds are the images
    assert len(manifest["images"]) == 4 and (tmp_path / layer["slug"] / "grid.png").exists()
    assert manifest["natural"]["images"][1]["file"] == "natural/image0001.png"  # written once
    assert (tmp_path / "natural" / "image0001.png").is_file()
    for override, message in [
        ("seeds=2", "takes no seeds"),
        ("transforms.preset='standard'", "32x32 pictures 44x44"),
        ("natural.images='no/such/folder'", "neither 'world' nor a folder"),
        ("checks.enabled=true", "takes no checks.enabled"),
    ]:
        with pytest.raises(ConfigError, match=message):
            build_plan(from_dict(data, [override]))


def _job(tmp_path, objective, **keys):
    """An ``invert`` or ``caricature`` job on worldnet's ``block3/conv``: 2 world images x 2
    seeds, 16 steps at 32 px."""
    natural = {"count": 2, **keys.pop("natural", {})}
    data = {
        "model": "worldnet", "layers": ["block3/conv"], "objective": objective, "seeds": 2,
        "steps": 16, "size": SIZE, "output": str(tmp_path), "progress": False,
        "transforms": {"preset": "none"}, "natural": natural, **keys,
    }  # fmt: skip
    return data


def _rows(manifest, key):
    """``(images, seeds)`` of a manifest figure of the pictures."""
    return np.array([image[key] for image in manifest["images"]]).reshape(2, 2)


@pytest.fixture(scope="module")
def inverted(tmp_path_factory):
    out = tmp_path_factory.mktemp("invert")
    config = from_dict(_job(out, "invert"))
    return out, config, run.run(config, stream=io.StringIO())


def test_an_inversion_job_writes_a_row_per_natural_image_named_after_it(inverted):
    out, _, manifest = inverted
    (layer,) = manifest["layers"]
    assert layer["units"] == [0, 1] and layer["seeds"] == [0, 1]  # rows: images; columns: seeds
    names = [image["unit_name"] for image in manifest["images"]]
    assert names == ["world image 0"] * 2 + ["world image 1"] * 2
    files = ["natural/image0000.png", "natural/image0001.png"]
    rows = [{"index": i, "name": f"world image {i}", "file": f} for i, f in enumerate(files)]
    assert manifest["natural"] == {"source": "world", "seed": 1, "images": rows}
    assert [image["natural"] for image in manifest["images"]] == [files[0]] * 2 + [files[1]] * 2
    saved = np.stack([read_picture(out / file) for file in files])
    assert np.abs(saved - world_dataset(1, 2, SIZE).images(range(2))).max() <= 0.5 / 255 + 1e-6
    page = (out / layer["slug"] / "index.html").read_text()
    assert '<img src="../natural/image0001.png"' in page and "world image 1" in page
    first = manifest["images"][0]  # each caption: how near its map came, not the objective
    assert f"err {first['error']:.3f}, cos {first['cosine']:.3f}</figcaption>" in page
    assert "relative error, cosine" in page
    assert procedure.read_ledger(out)[0]["units"] == {"block3/conv": [0, 1]}


def test_an_inversion_jobs_pictures_are_the_librarys_and_nearer_the_images_than_noise(inverted):
    out, _, manifest = inverted
    model, images = fvjax.zoo.load("worldnet"), world_dataset(1, 2, SIZE).images(range(2))
    error = _rows(manifest, "error")
    library = inversion.invert(model, images, "block3/conv", seeds=2, steps=16)
    np.testing.assert_allclose(error, library.error, rtol=1e-4)  # one recipe, the same keys
    noise = np.random.default_rng(0).uniform(size=(2, SIZE, SIZE, 3)).astype(np.float32)
    seen = inversion.layer_activations(model, np.concatenate([noise, images]), ["block3/conv"])
    random_error = inversion.compare(seen["block3/conv"][:2], seen["block3/conv"][2:])[0]
    # Measured (2-core CPU): 0.52-0.56 after 16 steps; uniform noise 1.08 and 1.39.
    assert error.max() < 0.75 * random_error.min(), (error, random_error)
    assert np.allclose(-_rows(manifest, "activation"), error**2, rtol=1e-3)  # it climbed -match


def test_a_caricature_job_of_a_folder_names_each_row_after_its_file(tmp_path):
    folder = tmp_path / "pictures"
    folder.mkdir()
    images = world_dataset(2, 2, SIZE).images(range(2))
    for name, image in zip(["b.png", "a.png"], images, strict=True):  # read back sorted by name
        Image.fromarray((image * 255).round().astype(np.uint8)).save(folder / name)
    data = _job(tmp_path / "out", "caricature", natural={"images": str(folder), "power": 1.0})
    manifest = run.run(from_dict(data), stream=io.StringIO())
    assert [image["unit_name"] for image in manifest["images"]] == ["a.png"] * 2 + ["b.png"] * 2
    assert manifest["natural"]["source"] == str(folder)
    assert [row["name"] for row in manifest["natural"]["images"]] == ["a.png", "b.png"]
    # Measured (2-core CPU): cosine 0.84-0.90 with the image's map after 16 steps (uniform
    # noise: 0.48 and 0.57), and 1.35-1.43 times as far along it as the image.
    assert _rows(manifest, "cosine").min() > 0.75 and _rows(manifest, "scale").min() > 1.1
    assert (tmp_path / "out" / "natural" / "image0001.png").is_file()


def test_an_inversion_job_is_not_checked_nor_registered_and_refuses_unit_keys(inverted, tmp_path):
    _, config, _ = inverted
    with pytest.raises(ConfigError, match="objective 'invert' makes pictures held to natural"):
        check(config, stream=io.StringIO())
    with pytest.raises(ProcedureError, match="objective 'invert' has none"):
        procedure.preregister(config, tmp_path / "reg.json")
    data = dict(_job(tmp_path, "invert"), model="tiny", layers=["block2"])
    for objective, override, message in [
        ("invert", "units=[0, 1]", "takes no units"),
        ("invert", "diversity.weight=1.0", "takes no diversity.weight"),
        ("invert", "checks.enabled=true", "takes no checks.enabled"),
        ("invert", "natural.layer='block2'", "takes no natural.layer"),
        ("invert", "natural.weight=3.0", "takes no natural.weight"),
        ("invert", "natural.power=1.0", "'invert' takes no natural.power"),
        ("accentuate", "natural.power=1.0", "'accentuate' takes no natural.power"),
        ("caricature", "param.alpha=true", "takes no param.alpha"),
        ("caricature", "shard='1/2'", "takes no shard"),
        ("caricature", "transforms.preset='standard'", "preset = 'standard' makes 32x32"),
    ]:
        with pytest.raises(ConfigError, match=message):
            build_plan(from_dict(data, [f"objective={objective!r}", "seeds=1", override]))
    plan = build_plan(from_dict(data))  # the keys as they were: a plan, two rows of images
    assert plan.layers["block2"].objective.batch_size == 2  # a member per image
