import dataclasses
import json
import os
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fvjax.files import atomic_write
from fvjax.job import outputs
from fvjax.rendering.engine import RenderResult


def fake_result(units, seeds, size=8, label="channel:x"):
    """A RenderResult whose picture of (unit u, seed s) is flat grey level (u * 10 + s) / 255."""
    units, seeds = np.asarray(units), tuple(seeds)
    levels = units[:, None] * 10 + np.asarray(seeds)[None, :]
    images = np.broadcast_to(
        (levels / 255.0)[:, :, None, None, None], (len(units), len(seeds), size, size, 3)
    ).astype(np.float32)
    return RenderResult(
        images=images,
        activations=(levels / 7.0).astype(np.float32),
        history=np.zeros((2, len(units), len(seeds)), np.float32),
        units=units,
        seeds=seeds,
        label=label,
        layer=label.split(":")[-1],
        seconds=0.5,
        first_call_seconds=0.25,
    )


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        if tag == "img":
            self.links.append(attrs["src"])
        if tag == "a":
            self.links.append(attrs["href"])


def page_links(page: Path) -> Links:
    parser = Links()
    parser.feed(page.read_text())
    return parser


def test_atomic_write_replaces_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "sub" / "a.txt"
    atomic_write(path, "one")
    atomic_write(path, b"two")
    assert path.read_text() == "two"
    assert os.listdir(path.parent) == ["a.txt"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_failed_atomic_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "a.txt"
    atomic_write(path, "old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, "new")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["a.txt"]


def test_png_round_trip(tmp_path):
    image = np.random.default_rng(0).uniform(size=(5, 7, 3)).astype(np.float32)
    outputs.save_png(tmp_path / "a.png", image)
    with Image.open(tmp_path / "a.png") as png:
        assert png.mode == "RGB" and png.size == (7, 5)
        np.testing.assert_array_equal(np.asarray(png), outputs.to_uint8(image))


def test_grid_rows_are_units_columns_are_seeds():
    result = fake_result(units=[0, 1, 2], seeds=[0, 1], size=4)
    grid = outputs.grid_image(result.images, gutter=2)
    assert grid.shape == (3 * 4 + 2 * 2, 2 * 4 + 2, 3) and grid.dtype == np.uint8
    for u in range(3):
        for s in range(2):
            assert grid[u * 6 + 1, s * 6 + 1, 0] == u * 10 + s
    assert grid[4, 0, 0] == 255  # a white gutter


def test_grid_wraps_many_units_into_blocks_of_columns():
    result = fake_result(units=range(20), seeds=[0, 1], size=4)
    rows, blocks = outputs.grid_layout(20, 2)
    assert blocks > 1 and rows * blocks >= 20
    grid = outputs.grid_image(result.images, gutter=1)
    assert grid.shape[0] == rows * 4 + (rows - 1)
    assert grid.shape[1] == blocks * 2 * 4 + (blocks * 2 - 1) + (blocks - 1) * 2
    # Unit `rows` starts the second block: top-left, right of the first block's two seeds.
    x = 2 * 5 + 2
    assert grid[1, x + 1, 0] == rows * 10


def test_grid_shrinks_tiles_to_fit():
    grid = outputs.grid_image(fake_result(range(4), [0], size=64).images, max_side=100)
    assert max(grid.shape[:2]) <= 100


def test_slugs_are_path_safe_and_unique(tmp_path):
    assert outputs.slugify("block3/conv") == "block3-conv"
    assert outputs.slugify("../x") == "x"
    out = outputs.RenderOutput(tmp_path, config={"model": "m"}, config_sha256="0" * 64)
    slugs = [out.add_layer(name, fake_result([0], [0]))["slug"] for name in ("a/b", "a-b", "/")]
    assert slugs == ["a-b", "a-b-2", "layer"]


def test_output_directory_has_pictures_manifest_and_linked_gallery(tmp_path):
    config = {"model": "fake", "steps": 4, "size": 8, "seeds": 2}
    out = outputs.RenderOutput(tmp_path, config=config, config_sha256="ab" * 32)
    results = {
        "block3/conv": fake_result([0, 3, 5], [0, 1]),
        "<b>&x": fake_result([1], [0, 1]),
    }
    for layer, result in results.items():
        out.add_layer(layer, result, shape=(2, 2, 6))
    running = outputs.read_manifest(tmp_path)
    assert running["complete"] is False and len(running["layers"]) == 2
    manifest = out.finish(setup_seconds=1.5)

    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert on_disk["complete"] is True and on_disk["config"] == config
    assert on_disk["config_sha256"] == "ab" * 32
    assert set(on_disk["versions"]) >= {"fvjax", "jax", "jaxlib", "flax", "optax", "numpy"}
    assert on_disk["backend"]["device_count"] >= 1 and on_disk["backend"]["platform"]
    assert on_disk["timings"]["setup_seconds"] == 1.5
    assert on_disk["timings"]["render_seconds"] == pytest.approx(1.0)
    assert on_disk["layers"] == manifest["layers"]

    images = on_disk["images"]
    assert len(images) == 3 * 2 + 1 * 2
    first = images[0]
    assert first == {
        "layer": "block3/conv",
        "unit": 0,
        "seed": 0,
        "file": "block3-conv/unit0000_seed0.png",
        "activation": 0.0,
    }
    for entry in images:
        result = results[entry["layer"]]
        i = list(result.units).index(entry["unit"])
        j = result.seeds.index(entry["seed"])
        assert entry["activation"] == float(result.activations[i, j])
        with Image.open(tmp_path / entry["file"]) as png:
            assert np.asarray(png)[0, 0, 0] == entry["unit"] * 10 + entry["seed"]
    for layer in on_disk["layers"]:
        assert (tmp_path / layer["grid"]).is_file() and (tmp_path / layer["page"]).is_file()

    pages = sorted(tmp_path.rglob("*.html"))
    assert len(pages) == 3
    for page in pages:
        parsed = page_links(page)
        assert "script" not in parsed.tags
        for link in parsed.links:
            assert "://" not in link and not link.startswith("/"), link
            assert (page.parent / link).resolve().is_file(), (page, link)
    index = (tmp_path / "index.html").read_text()
    assert "&lt;b&gt;&amp;x" in index and "<b>&x" not in index
    layer_page = (tmp_path / "block3-conv" / "index.html").read_text()
    assert layer_page.count("<img") == 6 and "unit 5" in layer_page
    assert not list(tmp_path.rglob("*.tmp"))


def test_named_units_are_shown_in_the_manifest_and_gallery(tmp_path):
    import fvjax
    from fvjax.job import outputs

    model = fvjax.from_fn(lambda x: {"rgb": x}, name="rgb")
    model = dataclasses.replace(model, unit_names={"rgb": ("red", "green", "blue")})
    assert model.unit_name("rgb", 2) == "blue" and model.unit_name("rgb", 3) is None
    result = fvjax.render(
        model,
        fvjax.objectives.channel("rgb", [2, 0]),
        steps=2,
        size=8,
        transforms=fvjax.transforms.identity(),
    )
    out = outputs.RenderOutput(tmp_path, {"model": "rgb"}, "0" * 64, model="rgb")
    out.add_layer("rgb", result, (8, 8, 3), [model.unit_name("rgb", u) for u in result.units])
    assert [i["unit_name"] for i in out.images] == ["blue", "red"]
    page = (tmp_path / "rgb" / "index.html").read_text()
    assert "unit 2 &middot; blue" in page and "unit 0 &middot; red" in page
