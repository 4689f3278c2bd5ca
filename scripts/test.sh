#!/usr/bin/env bash
# npm test: native Rust tests, then end-to-end tests against the real Worker in workerd.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
cd "$ROOT"

echo "== native tests (cargo test)"
cargo test --quiet

echo "== building the Worker"
bash scripts/build.sh

# The test drivers (py-rattler, pytest) live in a virtualenv outside the clone, one per
# version of tests/requirements.txt.
REQS_HASH=$(sha256sum tests/requirements.txt | cut -c1-12)
VENV="${CONDAFLARE_CACHE:-$HOME/.cache/condaflare}/venv-$REQS_HASH"
if [ ! -x "$VENV/bin/pytest" ]; then
    echo "== installing test drivers into $VENV"
    python3 -m venv "$VENV.tmp"
    "$VENV.tmp/bin/pip" install --quiet --disable-pip-version-check -r tests/requirements.txt
    rm -rf "$VENV" && mv "$VENV.tmp" "$VENV"
fi

echo "== end-to-end tests (pytest, wrangler dev)"
"$VENV/bin/python" -m pytest tests/e2e -p no:cacheprovider "$@"
