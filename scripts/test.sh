#!/usr/bin/env bash
# npm test: native Rust tests, then end-to-end tests against the real Worker in workerd.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
cd "$ROOT"

echo "== native tests (cargo test)"
cargo test --quiet

echo "== building the Worker"
bash scripts/build.sh

VENV=$(bash scripts/test-venv.sh)

echo "== end-to-end tests (pytest, wrangler dev)"
"$VENV/bin/python" -m pytest tests/e2e -p no:cacheprovider "$@"
