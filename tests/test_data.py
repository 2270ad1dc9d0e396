"""Image-folder loading and world batches."""

import numpy as np
import pytest
from PIL import Image

from fvjax import data, world


def write_mixed_folder(folder):
    """One file of each kind the loader must handle, plus a corrupt one and a non-image."""
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(folder / "a_rgb.png")
    Image.new("L", (30, 30), 128).save(folder / "b_grey.png")
    Image.new("RGBA", (20, 20), (255, 0, 0, 0)).save(folder / "c_rgba.png")  # transparent
    Image.fromarray(np.full((16, 16), 65535, np.uint16)).save(folder / "d_16bit.png")
    Image.new("RGB", (50, 40), (0, 0, 255)).save(folder / "e_photo.jpg", quality=95)
    Image.new("P", (10, 10), 3).save(folder / "f_palette.gif")
    (folder / "g_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    (folder / "notes.txt").write_text("not an image, not a candidate")


def read_all(folder, **kwargs):
    return list(data.load_image_folder(folder, **kwargs))


def test_loads_every_kind_and_reports_the_corrupt_file(tmp_path):
    write_mixed_folder(tmp_path)
    loader = data.load_image_folder(tmp_path, size=(24, 32), batch_size=4)
    assert [p.name for p in loader.files][-1] == "g_corrupt.png"  # .txt is not a candidate
    with pytest.warns(data.UnreadableImageWarning, match="g_corrupt.png"):
        batches = list(loader)
    assert [len(b.images) for b in batches] == [4, 2]
    assert [p.name for p in loader.skipped[0][:1]] == ["g_corrupt.png"]
    assert len(loader.skipped) == 1 and loader.skipped[0][1]  # a reason is given

    images = np.concatenate([b.images for b in batches])
    names = [p.name for b in batches for p in b.paths]
    assert images.shape == (6, 24, 32, 3) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    by_name = dict(zip(names, images, strict=True))
    np.testing.assert_allclose(by_name["b_grey.png"], 128 / 255, atol=1e-3)
    np.testing.assert_allclose(by_name["c_rgba.png"], 1.0, atol=1e-3)  # over white
    np.testing.assert_allclose(by_name["d_16bit.png"], 1.0, atol=1e-3)  # not clipped at 255
    assert np.abs(by_name["e_photo.jpg"] - [0, 0, 1]).max() < 0.03


def test_sixteen_bit_keeps_its_precision(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (64, 1))
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    image = data.load_image(tmp_path / "ramp.png", 64)
    np.testing.assert_allclose(image[0, :, 0], ramp[0] / 65535, atol=1e-3)


def test_resize_covers_then_crops_the_centre(tmp_path):
    wide = np.zeros((20, 60, 3), np.uint8)
    wide[:, 20:40] = 255  # a white centre third
    Image.fromarray(wide).save(tmp_path / "wide.png")
    image = data.load_image(tmp_path / "wide.png", 10)
    assert image.shape == (10, 10, 3)
    assert image[:, 2:8].min() > 0.95  # the centre square is all white


def test_all_corrupt_is_a_clear_error(tmp_path):
    for name in ("x.png", "y.jpg"):
        (tmp_path / name).write_bytes(b"garbage")
    with pytest.raises(data.ImageFolderError, match=r"none of the 2") as info:
        read_all(tmp_path, size=8, batch_size=2)
    message = str(info.value)
    assert str(tmp_path) in message and "x.png" in message and "y.jpg" in message


def test_missing_and_empty_folders_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load_image_folder(tmp_path / "nowhere", size=8, batch_size=2)
    with pytest.raises(data.ImageFolderError, match="no image files"):
        data.load_image_folder(tmp_path, size=8, batch_size=2)
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(data.ImageFolderError, match="readme.txt"):
        data.load_image_folder(tmp_path, size=8, batch_size=2)
    with pytest.raises(NotADirectoryError):
        data.load_image_folder(tmp_path / "readme.txt", size=8, batch_size=2)


def test_streams_again_and_recursively(tmp_path):
    (tmp_path / "sub").mkdir()
    Image.new("RGB", (8, 8), "red").save(tmp_path / "top.png")
    Image.new("RGB", (8, 8), "green").save(tmp_path / "sub" / "inner.png")
    loader = data.load_image_folder(tmp_path, size=8, batch_size=8)
    assert [len(b.images) for b in loader] == [1]
    assert [len(b.images) for b in loader] == [1]  # iterable more than once
    recursive = data.load_image_folder(tmp_path, size=8, batch_size=8, recursive=True)
    assert [len(b.images) for b in recursive] == [2]


def test_world_batches_join_up_into_generate():
    batches = list(data.world_batches(seed=3, size=32, batch_size=4, n=10))
    assert [len(b.images) for b in batches] == [4, 4, 2]
    whole = world.generate(seed=3, n=10, size=32)
    np.testing.assert_array_equal(np.concatenate([b.images for b in batches]), whole.images)
    np.testing.assert_array_equal(np.concatenate([b.labels for b in batches]), whole.labels)
    masks = np.concatenate([b.masks() for b in batches])
    np.testing.assert_array_equal(masks, whole.masks())


def test_stream_activations_runs_the_model_batch_by_batch(tmp_path):
    import fvjax
    from fvjax.checks import stream_activations
    from fvjax.data import world_batches
    from fvjax.errors import UnknownLayerError

    model = fvjax.from_fn(lambda x: {"mean": x.mean(axis=(1, 2)), "max": x.max(axis=(1, 2))})
    world = list(world_batches(seed=3, size=24, batch_size=5, n=12))
    out = list(stream_activations(model, world, ["mean"]))
    assert [o["mean"].shape for o in out] == [(5, 3), (5, 3), (2, 3)]
    np.testing.assert_allclose(out[0]["mean"], world[0].images.mean(axis=(1, 2)), rtol=1e-5)
    # Folders stream the same way, through their `images` attribute.
    Image.new("RGB", (30, 30), (255, 0, 0)).save(tmp_path / "red.png")
    (batch,) = stream_activations(model, data.load_image_folder(tmp_path, 16, 4), ["max"])
    np.testing.assert_allclose(batch["max"], [[1.0, 0.0, 0.0]], atol=1e-6)
    with pytest.raises(UnknownLayerError, match="'men'"):
        next(stream_activations(model, world, ["men"]))
    with pytest.raises(ValueError, match=r"\(B, H, W, 3\)"):
        next(stream_activations(model, [np.zeros((2, 8, 8))], ["mean"]))
