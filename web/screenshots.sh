#!/usr/bin/env bash
# npm run screenshots: runs the browser tests that show the channel, package, upload and mirror pages
# against a freshly built Worker and saves those pages as PNG files in docs/screenshots/.
set -euo pipefail
source "$(dirname "$0")/../scripts/setup.sh"
cd "$ROOT"

VENV=$(bash scripts/e2e-ready.sh)
CONDAFLARE_SCREENSHOTS="$ROOT/docs/screenshots" "$VENV/bin/python" -m pytest tests/e2e/test_web.py \
    tests/e2e/test_web_mirror.py -p no:cacheprovider -q -k "drop_packages or package_page or mirrors_channel_page or created_in_the_web_app"
echo "screenshots: $(ls "$ROOT"/docs/screenshots/*.png)"
