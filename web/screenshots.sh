#!/usr/bin/env bash
# npm run screenshots: runs the browser tests that show the channel, package and upload pages
# against a freshly built Worker and saves those pages as PNG files in docs/screenshots/.
set -euo pipefail
source "$(dirname "$0")/../scripts/setup.sh"
cd "$ROOT"

VENV=$(bash scripts/e2e-ready.sh)
CONDAFLARE_SCREENSHOTS="$ROOT/docs/screenshots" "$VENV/bin/python" -m pytest tests/e2e/test_web.py \
    -p no:cacheprovider -q -k "drop_packages or package_page"
echo "screenshots: $(ls "$ROOT"/docs/screenshots/*.png)"
