#!/usr/bin/env bash
# Screenshot an fvjax gallery in headless Chromium, to check how the pages look.
#
#   scripts/screenshot_gallery.sh OUT [SHOTS] [WIDTHxHEIGHT]
#
# OUT is a render's output directory (it holds index.html). Writes SHOTS/index.png (the
# gallery's front page) and SHOTS/layer.png (the first layer's page); SHOTS defaults to
# OUT/screenshots, the window to 1280x1000. The pages are opened as file:// URLs: the gallery
# needs no server. Needs `chromium` (Debian: apt-get install -y chromium) or set CHROMIUM.
set -euo pipefail

out=${1:?usage: $0 OUT [SHOTS] [WIDTHxHEIGHT]}
shots=${2:-$out/screenshots}
size=${3:-1280x1000}
browser=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)}
if [[ -z "$browser" ]]; then
  echo "screenshot_gallery: no chromium found; apt-get install -y chromium, or set CHROMIUM" >&2
  exit 1
fi
[[ -f "$out/index.html" ]] || { echo "screenshot_gallery: $out/index.html not found" >&2; exit 1; }
out=$(cd "$out" && pwd)
mkdir -p "$shots"
shots=$(cd "$shots" && pwd)
# The first layer page, in manifest order (the order of the gallery's cards).
layer=$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(m["layers"][0]["page"] if m["layers"] else "")' "$out/manifest.json")

shoot() {  # shoot PAGE PNG
  local profile
  profile=$(mktemp -d)
  "$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --hide-scrollbars --user-data-dir="$profile" --window-size="${size/x/,}" \
    --screenshot="$2" "file://$1" >/dev/null 2>&1 || true
  rm -rf "$profile"
  [[ -s "$2" ]] || { echo "screenshot_gallery: no screenshot of $1" >&2; return 1; }
  echo "$2"
}

shoot "$out/index.html" "$shots/index.png"
if [[ -n "$layer" ]]; then
  shoot "$out/$layer" "$shots/layer.png"
fi
