#!/usr/bin/env bash
# npm test: the checks, cheapest first (formatting, the scripts' lints, clippy on the native and
# the wasm32 build), then the native Rust tests, then end-to-end tests against the real Worker
# in workerd, run by as many pytest workers as CONDAFLARE_TEST_WORKERS says (default 3: the
# tests wait on servers and clients more than they compute). Arguments go to pytest.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
cd "$ROOT"

started=$SECONDS
step() { echo "== $* [at $((SECONDS - started)) s]"; }

step "formatting (cargo fmt --check)"
cargo fmt --check

step "lints (eslint over scripts and the web app, shellcheck)"
eslint scripts/*.mjs web/public bench/floor bench/trivial
shellcheck scripts/*.sh bench/*.sh web/*.sh .ci/run

# The Worker's release build ends in one long single-threaded link (LTO), in a build directory
# of its own: it runs beside clippy and the native tests, which fill the other core, as does the
# test drivers' install, which mostly downloads.
step "building the Worker and installing the test drivers (in the background)"
build_log=$(mktemp) venv_log=$(mktemp) venv_path=$(mktemp)
trap 'rm -f "$build_log" "$venv_log" "$venv_path"' EXIT
bash scripts/build.sh >"$build_log" 2>&1 &
build=$!
bash scripts/test-venv.sh >"$venv_path" 2>"$venv_log" &
venv=$!

step "clippy (native, then wasm32)"
cargo clippy --quiet --all-targets -- -D warnings
# The Worker is the library; the admin command is native only.
cargo clippy --quiet --target wasm32-unknown-unknown --lib -- -D warnings

step "native tests (cargo test), the admin command"
cargo test --quiet
cargo build --quiet --bin admin

step "waiting for the Worker's build and the test drivers"
if ! wait "$build"; then
    cat "$build_log" >&2
    echo "error: building the Worker failed" >&2
    exit 1
fi
if ! wait "$venv"; then
    cat "$venv_log" >&2
    echo "error: installing the test drivers failed" >&2
    exit 1
fi
cat "$venv_log" >&2
VENV=$(cat "$venv_path")

step "end-to-end tests (pytest, wrangler dev)"
"$VENV/bin/python" -m pytest tests/e2e -p no:cacheprovider \
    -n "${CONDAFLARE_TEST_WORKERS:-3}" --dist loadfile "$@"
step "done"
