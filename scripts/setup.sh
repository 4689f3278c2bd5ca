#!/usr/bin/env bash
# Makes sure everything condaflare builds and runs with is installed: node packages (with
# node 22), the wasm32 Rust target, clang (the zstd C library is compiled for wasm32),
# the shell linter (shellcheck, for npm test), worker-build and wasm-bindgen-cli.
# Installs only what is missing, so a second run is fast.
# Tools live outside the clone, in $CONDAFLARE_TOOLS (default ~/.cache/condaflare/tools).
# Source it: it exports PATH and the variables worker-build reads.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS=${CONDAFLARE_TOOLS:-$HOME/.cache/condaflare/tools}
WORKER_BUILD_VERSION=0.8.7
# The CLI must be exactly the wasm-bindgen version Cargo.toml pins.
WASM_BINDGEN_VERSION=$(sed -n 's/^wasm-bindgen = "=\(.*\)"$/\1/p' "$ROOT/Cargo.toml")

say() { echo "setup: $*" >&2; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

if [ ! -x "$ROOT/node_modules/.bin/wrangler" ] ||
    ! cmp -s "$ROOT/package-lock.json" "$ROOT/node_modules/.condaflare-lock"; then
    say "installing node packages"
    (cd "$ROOT" && npm ci --no-audit --no-fund >&2) || return 1 2>/dev/null || exit 1
    cp "$ROOT/package-lock.json" "$ROOT/node_modules/.condaflare-lock"
fi

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    say "adding the wasm32 Rust target"
    rustup target add wasm32-unknown-unknown >&2
fi

# clang builds; shellcheck lints the shell scripts in npm test.
missing=()
for tool in clang shellcheck; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    as_root apt-get update -qq >&2 && as_root apt-get install -y -qq "${missing[@]}" >&2
fi

if [ "$("$TOOLS/bin/worker-build" --version 2>/dev/null)" != "$WORKER_BUILD_VERSION" ]; then
    say "installing worker-build $WORKER_BUILD_VERSION (a few minutes, once)"
    cargo install --quiet --root "$TOOLS" worker-build --version "=$WORKER_BUILD_VERSION" --locked >&2
fi

if [ "$("$TOOLS/bin/wasm-bindgen" --version 2>/dev/null)" != "wasm-bindgen $WASM_BINDGEN_VERSION" ]; then
    say "installing wasm-bindgen-cli $WASM_BINDGEN_VERSION (a few minutes, once)"
    cargo install --quiet --force --root "$TOOLS" wasm-bindgen-cli --version "=$WASM_BINDGEN_VERSION" >&2
fi

export PATH="$ROOT/node_modules/.bin:$TOOLS/bin:$PATH"
# worker-build would download these from GitHub; point it at the local ones instead.
export WASM_BINDGEN_BIN="$TOOLS/bin/wasm-bindgen"
export ESBUILD_BIN="$ROOT/node_modules/.bin/esbuild"
export WASM_OPT_BIN="$ROOT/node_modules/.bin/wasm-opt"
export WRANGLER_SEND_METRICS=false
export CLOUDFLARE_CF_FETCH_ENABLED=false
