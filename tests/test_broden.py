"""The Broden layout: the world exported and read back, a hand-made folder, and every error."""

import csv

import numpy as np
import pytest
from PIL import Image

from fvjax.data import broden, world
from fvjax.data.datasets import WORLD_CONCEPTS, Dataset
from fvjax.errors import ConceptDatasetError

SEED, N, SIZE = 3, 12, 32
GROUPS = tuple(world.CONCEPT_GROUPS)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The world's first ``N`` images as a Broden folder, full-size masks."""
    return broden.write_broden(tmp_path_factory.mktemp("w") / "broden", SEED, N, SIZE)


@pytest.fixture(scope="module")
def truth():
    return world.generate(SEED, N, SIZE)


def nearest(masks, size):
    """Pillow's nearest-neighbour resize of ``(..., h, w)`` bool masks: an independent check."""
    flat = masks.reshape(-1, *masks.shape[-2:]).astype(np.uint8)
    out = [
        np.asarray(Image.fromarray(m).resize(size[::-1], Image.Resampling.NEAREST)) for m in flat
    ]
    return np.stack(out).reshape(*masks.shape[:-2], *size).astype(bool)


def read_all(data, batch_size=5):
    batches = list(data.batches(batch_size))
    return tuple(np.concatenate(field) for field in zip(*batches, strict=True))


def expected_slots(masks):
    """``(labels, masks)`` per image: the concepts with pixels, ascending, as the loader puts
    them."""
    return [(np.flatnonzero(m.any(axis=(1, 2))), m[m.any(axis=(1, 2))]) for m in masks]


def check_slots(labels, masks, truth_masks):
    for i, (want_labels, want_masks) in enumerate(expected_slots(truth_masks)):
        k = len(want_labels)
        np.testing.assert_array_equal(labels[i, :k], want_labels)
        assert (labels[i, k:] == -1).all()
        np.testing.assert_array_equal(masks[i, :k], want_masks)
        assert not masks[i, k:].any()


def test_round_trip_is_exact(exported, truth):
    data = broden.load_broden(exported, size=SIZE)
    assert isinstance(data, Dataset) and len(data) == N
    assert data.size == data.mask_size == (SIZE, SIZE)
    assert data.concepts.names == world.CONCEPTS and data.concepts.categories == GROUPS
    np.testing.assert_array_equal(data.concepts.category, WORLD_CONCEPTS.category)
    assert data.numbers == tuple(range(1, 26))

    images, index, labels, masks = read_all(data)
    quantized = np.round(truth.images * 255).astype(np.uint8)
    np.testing.assert_array_equal(images, quantized.astype(np.float32) / 255)  # bit for bit
    np.testing.assert_array_equal(index, np.arange(N))
    assert labels.dtype == np.int32 and masks.dtype == bool
    world_masks = truth.masks()
    assert data.slots == max(len(labels) for labels, _ in expected_slots(world_masks))
    check_slots(labels, masks, world_masks)

    later = next(data.batches(4, start=9))
    np.testing.assert_array_equal(later.index, [9, 10, 11])
    np.testing.assert_array_equal(later.masks, masks[9:])
    np.testing.assert_array_equal(data.images([7, 2]), images[[7, 2]])
    assert data.images([]).shape == (0, SIZE, SIZE, 3)
    assert data.describe(3).endswith("images/world/03.png")
    assert str(exported) in data.name


def test_statistics_are_honest(exported, truth):
    present = truth.masks().any(axis=(2, 3))  # (N, 25)
    fraction = truth.masks().mean(axis=(2, 3))
    with open(exported / "label.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [int(r["number"]) for r in rows] == list(range(1, 26))
    for c, row in enumerate(rows):
        group = next(g for g, members in world.CONCEPT_GROUPS.items() if row["name"] in members)
        assert row["name"] == world.CONCEPTS[c]
        assert int(row["frequency"]) == present[:, c].sum()
        assert row["category"] == f"{group}({present[:, c].sum()})"
        assert float(row["coverage"]) == pytest.approx(fraction[:, c].sum(), abs=1e-6)
    with open(exported / "category.csv", newline="") as file:
        categories = list(csv.DictReader(file))
    assert [r["name"] for r in categories] == list(GROUPS)
    assert [(int(r["first"]), int(r["last"]), int(r["count"])) for r in categories][:2] == [
        (1, 6, 6),
        (7, 15, 9),
    ]


def test_csv_headers_are_exact(exported):
    headers = {
        "index.csv": list(broden.INDEX_COLUMNS) + list(GROUPS),
        "category.csv": ["name", "first", "last", "count", "frequency"],
        "label.csv": ["number", "name", "category", "frequency", "coverage", "syns"],
    } | {f"c_{g}.csv": ["code", "number", "name", "frequency", "coverage"] for g in GROUPS}
    assert broden.INDEX_COLUMNS == ("image", "split", "ih", "iw", "sh", "sw")
    for name, header in headers.items():
        with open(exported / name, newline="") as file:
            reader = csv.DictReader(file)
            rows = list(reader)
        assert reader.fieldnames == header, name
        assert rows and all(None not in row and None not in row.values() for row in rows), name
    with open(exported / "c_colour.csv", newline="") as file:
        codes = list(csv.DictReader(file))
    assert [int(r["code"]) for r in codes] == list(range(1, 10))
    assert [r["name"] for r in codes] == list(world.COLOURS)
    with open(exported / "index.csv", newline="") as file:
        first = next(csv.DictReader(file))
    assert first["image"] == "world/00.png" and first["shape"] == "world/00_shape.png"
    label = np.asarray(Image.open(exported / "images" / first["shape"]))
    assert label.shape == (SIZE, SIZE, 3) and set(np.unique(label[..., 0])) <= set(range(7))


def test_smaller_masks_by_nearest_neighbour(tmp_path, truth):
    folder = broden.write_broden(tmp_path / "b", SEED, N, SIZE, mask_size=16)
    with open(folder / "index.csv", newline="") as file:
        assert {(r["sh"], r["sw"], r["ih"]) for r in csv.DictReader(file)} == {("16", "16", "32")}
    data = broden.load_broden(folder, size=SIZE)
    assert data.mask_size == (16, 16)
    _, _, labels, masks = read_all(data)
    check_slots(labels, masks, nearest(truth.masks(), (16, 16)))

    # The loader resizes too: full-size masks read at 8x8.
    full = broden.load_broden(broden.write_broden(tmp_path / "c", SEED, N, SIZE), SIZE, mask_size=8)
    assert full.mask_size == (8, 8)
    _, _, labels, masks = read_all(full)
    check_slots(labels, masks, nearest(truth.masks(), (8, 8)))


def test_masks_follow_the_centre_crop(exported, truth):
    data = broden.load_broden(exported, size=(32, 16), mask_size=(32, 16))
    images, _, labels, masks = read_all(data)
    np.testing.assert_allclose(images, truth.images[:, :, 8:24], atol=3 / 255)
    check_slots(labels, masks, truth.masks()[..., 8:24])


def test_categories_restrict_the_vocabulary(exported, truth):
    data = broden.load_broden(exported, size=SIZE, categories=["orientation", "colour"])
    assert data.concepts.categories == ("colour", "orientation")
    assert data.concepts.names == world.COLOURS + world.ORIENTATIONS
    np.testing.assert_array_equal(data.concepts.category, [0] * 9 + [1] * 4)
    _, _, labels, masks = read_all(data)
    columns = [world.CONCEPTS.index(name) for name in data.concepts.names]
    check_slots(labels, masks, truth.masks()[:, columns])


def write_hand_made(folder):
    """Two images with an object PNG and a scalar scene label, and one unlabelled image."""
    images = folder / "images"
    images.mkdir(parents=True)
    for name, colour in (("a.png", (255, 0, 0)), ("b.png", (0, 0, 255)), ("c.png", (0, 0, 0))):
        Image.new("RGB", (8, 8), colour).save(images / name)
    objects = np.zeros((4, 4, 3), np.uint8)
    objects[:2, :, 0], objects[2:, :, 0] = 1, 2  # sky above grass
    Image.fromarray(objects).save(images / "a_object.png")
    files = {
        "index.csv": "image,split,ih,iw,sh,sw,object,scene\n"
        "a.png,train,8,8,4,4,a_object.png,3\nb.png,val,8,8,4,4,,4\nc.png,train,8,8,4,4,,\n",
        "category.csv": "name,first,last,count,frequency\nobject,1,4,3,3\nscene,3,4,2,2\n",
        "label.csv": "number,name,category,frequency,coverage,syns\n0,-,,0,0,\n"
        "1,sky,object(1),1,0.5,\n2,grass,object(1),1,0.5,lawn\n3,beach,scene(1),1,1.0,\n"
        "4,water,object(1);scene(1),2,1.1,\n",
        "c_object.csv": "code,number,name,frequency,coverage\n"
        "1,1,sky,1,0.5\n2,2,grass,1,0.5\n3,4,water,1,0.8\n",
        "c_scene.csv": "code,number,name,frequency,coverage\n1,3,beach,1,1.0\n2,4,water,1,0.3\n",
    }
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def test_scalar_labels_give_full_masks(tmp_path):
    data = broden.load_broden(write_hand_made(tmp_path / "h"), size=8)
    assert len(data) == 2  # c.png has no label: left out, as NetDissect does
    assert data.concepts.names == ("sky", "grass", "beach", "water")
    assert data.numbers == (1, 2, 3, 4)
    np.testing.assert_array_equal(data.concepts.category, [0, 0, 1, 0])  # water: most in object
    assert data.slots == 3 and data.mask_size == (4, 4)
    images, _, labels, masks = read_all(data)
    np.testing.assert_array_equal(images[0, 0, 0], [1, 0, 0])
    np.testing.assert_array_equal(labels, [[0, 1, 2], [3, -1, -1]])
    sky = np.zeros((4, 4), bool)
    sky[:2] = True
    np.testing.assert_array_equal(masks[0], [sky, ~sky, np.ones((4, 4), bool)])
    np.testing.assert_array_equal(masks[1], [np.ones((4, 4), bool)] + [np.zeros((4, 4), bool)] * 2)

    scene = broden.load_broden(tmp_path / "h", size=8, categories=["scene"])
    assert scene.concepts.names == ("beach", "water") and scene.concepts.categories == ("scene",)
    np.testing.assert_array_equal(read_all(scene)[2], [[0], [1]])


def test_write_replaces_whole_and_leaves_nothing_on_failure(tmp_path, monkeypatch):
    folder = broden.write_broden(tmp_path / "b", 0, 3, 16)
    broden.write_broden(folder, 0, 2, 16)
    assert len(broden.load_broden(folder, 16)) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["b"]

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(broden, "_save_label_png", fail)
    with pytest.raises(OSError, match="disk full"):
        broden.write_broden(tmp_path / "d", 0, 2, 16)
    assert [p.name for p in tmp_path.iterdir()] == ["b"]


# -- errors ---------------------------------------------------------------------------------


@pytest.fixture
def copy(exported, tmp_path):
    import shutil

    return shutil.copytree(exported, tmp_path / "copy")


def test_missing_folder(tmp_path):
    with pytest.raises(ConceptDatasetError, match="nowhere.*does not exist"):
        broden.load_broden(tmp_path / "nowhere", size=SIZE)


@pytest.mark.parametrize("name", ["index.csv", "label.csv", "category.csv", "c_texture.csv"])
def test_missing_csv(copy, name):
    (copy / name).unlink()
    with pytest.raises(ConceptDatasetError, match=f"{name} is missing") as error:
        broden.load_broden(copy, size=SIZE)
    assert "c_<category>.csv" in str(error.value)


def test_unknown_category_lists_the_available(exported):
    with pytest.raises(ConceptDatasetError, match="'shapes'") as error:
        broden.load_broden(exported, size=SIZE, categories=["colour", "shapes"])
    assert "Did you mean 'shape'" in str(error.value)
    assert "shape, colour, texture, orientation, scale" in str(error.value)


@pytest.mark.parametrize("file", ["world/04.png", "world/04_shape.png"])
def test_row_naming_a_missing_file(copy, file):
    (copy / "images" / file).unlink()
    with pytest.raises(ConceptDatasetError, match=f"index.csv line 6: file .*{file} does not"):
        broden.load_broden(copy, size=SIZE)


def test_mask_of_the_wrong_size(copy):
    Image.new("RGB", (7, 5)).save(copy / "images" / "world" / "02_colour.png")
    pattern = "02_colour.png is 5x7 .* sh x sw = 32x32"
    with pytest.raises(ConceptDatasetError, match=pattern):
        broden.load_broden(copy, size=SIZE)  # found while counting the slots
    data = broden.load_broden(copy, size=SIZE, slots=25)  # or when the batch is read
    with pytest.raises(ConceptDatasetError, match=pattern):
        read_all(data)


def test_no_rows(copy):
    (copy / "index.csv").write_text(",".join(broden.INDEX_COLUMNS + GROUPS) + "\n")
    with pytest.raises(ConceptDatasetError, match="index.csv has no rows"):
        broden.load_broden(copy, size=SIZE)


def test_no_row_with_the_categories(tmp_path):
    folder = write_hand_made(tmp_path / "h")
    (folder / "index.csv").write_text("image,split,ih,iw,sh,sw,object,scene\nc.png,t,8,8,4,4,,\n")
    with pytest.raises(ConceptDatasetError, match="none of the 1 rows .* object, scene"):
        broden.load_broden(folder, size=8)


def test_more_labels_than_slots(exported, truth):
    counts = [len(labels) for labels, _ in expected_slots(truth.masks())]
    first = next(i for i, count in enumerate(counts) if count > 2)  # in order: the first fails
    data = broden.load_broden(exported, size=SIZE, slots=2)
    message = f"image world/{first:02d}.png has {counts[first]} distinct labels, more than the 2"
    with pytest.raises(ConceptDatasetError, match=message):
        read_all(data, batch_size=N)


def test_unknown_label_numbers(tmp_path):
    folder = write_hand_made(tmp_path / "h")
    Image.fromarray(np.full((4, 4, 3), 9, np.uint8)).save(folder / "images" / "a_object.png")
    with pytest.raises(ConceptDatasetError, match="a_object.png holds label number 2313"):
        broden.load_broden(folder, size=8)  # 9 + 256 * 9
    (folder / "index.csv").write_text("image,split,ih,iw,sh,sw,object,scene\nb.png,t,8,8,4,4,,7\n")
    with pytest.raises(ConceptDatasetError, match="column scene: label number 7 is not listed"):
        broden.load_broden(folder, size=8)
