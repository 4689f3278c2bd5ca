#!/usr/bin/env bash
# npm test: the checks, cheapest first (formatting, the scripts' lints, clippy on the native and
# the wasm32 build), then the native Rust tests, then end-to-end tests against the real Worker
# in workerd. Arguments go to pytest.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
cd "$ROOT"

echo "== formatting (cargo fmt --check)"
cargo fmt --check

echo "== lints (eslint over scripts and the web app, shellcheck)"
eslint scripts/*.mjs web/public bench/floor
shellcheck scripts/*.sh bench/*.sh web/*.sh .ci/run

echo "== clippy (native, then wasm32)"
cargo clippy --quiet --all-targets -- -D warnings
# The Worker is the library; the admin command is native only.
cargo clippy --quiet --target wasm32-unknown-unknown --lib -- -D warnings

echo "== native tests (cargo test)"
cargo test --quiet

echo "== building the Worker and the admin command"
bash scripts/build.sh
cargo build --quiet --bin admin

VENV=$(bash scripts/test-venv.sh)

echo "== end-to-end tests (pytest, wrangler dev)"
"$VENV/bin/python" -m pytest tests/e2e -p no:cacheprovider "$@"
