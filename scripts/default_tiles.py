"""The README's strip of tiles from the default job: seed 0 of ``block3/conv`` units 1, 5, 8
and 9, then the logits for orange, blue, star and orient_45, side by side.

    fvjax render --config configs/default.toml
    python scripts/default_tiles.py [fvjax-out/default] [docs/default-tiles.png]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
CONCEPTS = json.loads((ROOT / "fvjax/models/zoo/worldnet.json").read_text())["concepts"]
TILES = [("block3/conv", u) for u in (1, 5, 8, 9)] + [
    ("logits", CONCEPTS.index(name)) for name in ("orange", "blue", "star", "orient_45")
]
GAP = 4  # white pixels between tiles
ZOOM = 2  # each picture pixel as ZOOM x ZOOM (nearest): 64 px tiles shown at 128


def main() -> None:
    output = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "fvjax-out" / "default"
    target = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "docs" / "default-tiles.png"
    manifest = json.loads((output / "manifest.json").read_text())
    files = {(e["layer"], e["unit"], e["seed"]): e["file"] for e in manifest["images"]}
    tiles = [np.asarray(Image.open(output / files[layer, unit, 0]).convert("RGB"))
             .repeat(ZOOM, 0).repeat(ZOOM, 1) for layer, unit in TILES]  # fmt: skip
    size = tiles[0].shape[0]
    strip = np.full((size, len(tiles) * (size + GAP) - GAP, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        strip[:, i * (size + GAP) : i * (size + GAP) + size] = tile
    Image.fromarray(strip).save(target)
    print(f"wrote {target} ({len(tiles)} tiles of {size} px)")


if __name__ == "__main__":
    main()
