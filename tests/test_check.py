"""The check stage of a job: cards, manifest, gallery views, and the errors a user can hit."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from fvjax import cli
from fvjax.errors import ConceptDatasetError, ConfigError, ImageFolderError
from fvjax.job.check import check
from fvjax.job.config import from_dict
from fvjax.job.gallery import VIEWS
from fvjax.job.run import run

SETTINGS = {
    "model": "tiny",
    "layers": ["block2", "block3"],
    "units": [0, 1, 2],
    "seeds": 2,
    "steps": 4,
    "size": 32,
    "progress": False,
    "checks": {"images": 48, "top_k": 4},
}


def _config(out, **changes):
    data = json.loads(json.dumps(SETTINGS))
    data["output"] = str(out)
    for key, value in changes.items():
        if key == "checks":
            data["checks"].update(value)
        else:
            data[key] = value
    return from_dict(data)


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    out = tmp_path_factory.mktemp("checked")
    config = _config(out, checks={"enabled": True}, facets={"enabled": True})
    return out, run(config)


def test_render_with_checks_enabled_writes_a_card_per_unit(checked):
    out, manifest = checked
    section = manifest["checks"]
    assert section["dataset"].startswith("world seed 1, 48 images")
    for entry in manifest["layers"]:
        units = section["layers"][entry["layer"]]["units"]
        assert sorted(units) == ["0", "1", "2"]
        for unit, summary in units.items():
            assert (out / entry["slug"] / "units" / f"unit{int(unit):04d}.html").is_file()
            assert len(summary["picture_activation"]) == 2 and len(summary["top"]) == 4
            assert {"concept", "iou", "detector", "plain_activation", "path"} <= set(summary)
        assert all((out / entry["slug"] / view).is_file() for view, *_ in VIEWS)
    assert json.loads((out / "manifest.json").read_text())["checks"] == section


def test_every_unit_has_its_facets_and_the_seeds_coverage_of_them(checked):
    out, manifest = checked
    for entry in manifest["layers"]:
        for unit, summary in manifest["checks"]["layers"][entry["layer"]]["units"].items():
            facets, top = summary["facets"], [index for index, _ in summary["top"]]
            assert 1 <= facets["n"] <= 3 and sum(facets["sizes"]) == len(top) == 4
            assert sorted(i for m in facets["members"] for i in m) == sorted(top)
            assert facets["covered"] == len(set(facets["seed_facet"]))
            assert all(0 <= f < facets["n"] for f in facets["seed_facet"] + facets["guided_facet"])
            assert facets["guided_covered"] == len(set(facets["guided_facet"]))
            card = (out / entry["slug"] / "units" / f"unit{int(unit):04d}.html").read_text()
            assert f"Facets: {facets['n']} among the top natural images" in card
            for j in range(facets["n"]):
                assert f'src="unit{int(unit):04d}_facet{j}.png"' in card
        view = (out / entry["slug"] / "facets.html").read_text()
        for unit, summary in manifest["checks"]["layers"][entry["layer"]]["units"].items():
            for j in range(summary["facets"]["n"]):
                assert f'src="units/unit{int(unit):04d}_facet{j}.png"' in view
                assert (
                    out / entry["slug"] / "units" / f"unit{int(unit):04d}_facet{j}.png"
                ).is_file()


def test_every_image_a_card_names_exists(checked):
    out, manifest = checked
    cards = list(out.glob("*/units/*.html"))
    assert len(cards) == 6
    for card in cards:
        sources = re.findall(r'src="([^"]+)"', card.read_text())
        assert len(sources) >= 2 + 2 * 4  # the pictures, then crop + map per example
        for source in sources:
            assert (card.parent / source).is_file(), (card, source)


def test_layer_pages_link_every_tile_to_its_card(checked):
    out, manifest = checked
    page = (out / manifest["layers"][0]["slug"] / "index.html").read_text()
    assert page.count('href="units/unit') == 3
    assert (
        '<img src="concepts.svg"' in page
        and (out / manifest["layers"][0]["slug"] / "concepts.svg").is_file()
    )
    assert "checked:" in (out / "index.html").read_text()


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs chromium (apt: chromium)")
def test_a_unit_card_loads_in_headless_chromium_with_every_image(checked, tmp_path):
    out, manifest = checked
    card = out / manifest["layers"][1]["slug"] / "units" / "unit0001.html"
    harness = tmp_path / "harness.html"
    harness.write_text(
        f'<!DOCTYPE html><html><body><iframe id="f" src="{card.as_uri()}"></iframe><script>'
        'document.getElementById("f").addEventListener("load", () => {'
        ' const doc = document.getElementById("f").contentDocument;'
        " const images = Array.from(doc.images);"
        " const broken = images.filter(i => !(i.complete && i.naturalWidth > 0))"
        '   .map(i => i.getAttribute("src"));'
        ' const out = document.createElement("pre"); out.id = "result";'
        " out.textContent = JSON.stringify({images: images.length, broken: broken,"
        '   svgs: doc.querySelectorAll("svg").length});'
        " document.body.appendChild(out); });</script></body></html>"
    )
    done = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--allow-file-access-from-files", "--virtual-time-budget=5000",
         f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", harness.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    found = re.search(r'<pre id="result">(.*?)</pre>', done.stdout)
    assert found, done.stderr[-2000:]
    result = json.loads(found.group(1))
    assert result["broken"] == [] and result["images"] >= 10
    assert result["svgs"] >= 3  # histogram, curve, priors, path


def test_check_alone_runs_over_a_finished_render(tmp_path):
    config = _config(tmp_path, layers=["block3"], checks={"plain": False, "path": False})
    run(config)
    assert "checks" not in json.loads((tmp_path / "manifest.json").read_text())
    assert cli.main(["check", "--config", _toml(tmp_path, config)]) == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert sorted(manifest["checks"]["layers"]["block3"]["units"]) == ["0", "1", "2"]


def _toml(folder: Path, config) -> str:
    """A config file for the CLI with ``config``'s keys (only those the tests change)."""
    lines = [f"{k} = {json.dumps(v)}" for k, v in SETTINGS.items() if k != "checks"]
    lines[1] = f"layers = {json.dumps(list(config.layers))}"
    lines.append(f"output = {json.dumps(config.output)}")
    lines.append("[checks]")
    lines += [f"{k} = {json.dumps(getattr(config.checks, k))}" for k in ("images", "top_k")]
    lines += [f"{k} = {json.dumps(getattr(config.checks, k))}" for k in ("plain", "path")]
    path = folder / "job.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_checking_where_nothing_was_rendered_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no render to check in"):
        check(_config(tmp_path / "empty"))


def test_checking_with_another_jobs_config_is_an_error(tmp_path):
    config = _config(tmp_path, layers=["block3"], checks={"plain": False, "path": False})
    run(config)
    with pytest.raises(ConfigError, match="another job"):
        check(_config(tmp_path, layers=["block3"], steps=5))
    with pytest.raises(ConfigError, match="did not cover; its layers are: block3"):
        check(_config(tmp_path, layers=["block3"], checks={"layers": ["block2"]}))
    with pytest.raises(ConfigError, match="is not a folder"):
        check(_config(tmp_path, layers=["block3"], checks={"dataset": str(tmp_path / "nope")}))
    folder = tmp_path / "photos"
    folder.mkdir()
    with pytest.raises(ImageFolderError, match="no image files"):
        check(_config(tmp_path, layers=["block3"], checks={"dataset": str(folder)}))
    Image.new("RGB", (40, 40), (200, 10, 10)).save(folder / "a.png")
    with pytest.raises(ConceptDatasetError, match="has no concept masks"):
        check(_config(tmp_path, layers=["block3"], checks={"dataset": str(folder)}))
    unmasked = {"dataset": str(folder), "dissect": False, "plain": False, "path": False}
    manifest = check(_config(tmp_path, layers=["block3"], checks=unmasked))
    assert "concept" not in manifest["checks"]["layers"]["block3"]["units"]["0"]
    assert cli.main(["check", "--config", _toml(tmp_path, _config(tmp_path, steps=9))]) == 2


def test_a_units_evidence_shows_itself_in_a_notebook():
    from fvjax.checks import dataset_pass, unit_evidence
    from fvjax.data import world_dataset
    from fvjax.models import zoo
    from fvjax.rendering.engine import render
    from fvjax.rendering.objectives import channel

    model, data = zoo.load("tiny"), world_dataset(seed=0, n=24, size=32)
    stats = dataset_pass(model, data, ["block2"], top_k=3)["block2"]
    result = render(model, channel("block2", [0, 1]), seeds=2, steps=3, size=32)
    cards = unit_evidence(model, data, stats, [0, 1], result.activations, result.seeds,
                          pictures=result.images, history=result.history)  # fmt: skip
    page = cards[1]._repr_html_()
    # Two pictures and 3 examples (crop and map each) embedded, no file needed.
    assert page.count('src="data:image/png;base64,') == 2 + 2 * 3
    assert page.count("<svg") >= 2 and "block2 unit 1" in page
