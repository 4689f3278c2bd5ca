#!/usr/bin/env bash
# Builds the Worker into build/ (index.js and the wasm module, without its name section).
set -euo pipefail
source "$(dirname "$0")/setup.sh"
cd "$ROOT"
worker-build --release >&2
node scripts/strip-names.mjs build/index_bg.wasm
