#!/usr/bin/env bash
# npm test: the cheap checks first (formatting, the scripts' lints), then the end-to-end tests
# against the real Worker in workerd, run by as many pytest workers as CONDAFLARE_TEST_WORKERS
# says (default 6: the tests wait on servers and clients more than they compute), and beside
# them, at a lower priority, clippy on the native and the wasm32 build and the native Rust
# tests, which fill the time the end-to-end tests leave the cores. Arguments go to pytest.
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

# The Worker's release build ends in one long single-threaded link (LTO): it runs beside the
# admin command's build, as does the test drivers' install, which mostly downloads.
step "building the Worker and installing the test drivers (in the background), the admin command"
build_log=$(mktemp) venv_log=$(mktemp) venv_path=$(mktemp) native_log=$(mktemp)
migrated=$(mktemp -d)
trap 'rm -rf "$build_log" "$venv_log" "$venv_path" "$native_log" "$migrated"' EXIT
bash scripts/build.sh >"$build_log" 2>&1 &
build=$!
bash scripts/test-venv.sh >"$venv_path" 2>"$venv_log" &
venv=$!
cargo build --quiet --bin admin
# The migrated D1 state each test server starts from a copy of (tests/e2e/harness.py): made
# once, while the Worker's link leaves a core free, not by every pytest worker as they start.
wrangler d1 migrations apply DB --local --persist-to "$migrated" >/dev/null
export CONDAFLARE_MIGRATED_STATE=$migrated

# Clippy and the native tests start as soon as the admin command is built: the Worker's link
# leaves a core free until the end-to-end tests start. Their builds lock other parts of target/
# (debug, check) than the Worker's release build, so neither waits for the other.
step "clippy (native, then wasm32) and the native tests (in the background, reported when done)"
(
    # The Worker is the library; the admin command is native only.
    nice -n 10 cargo clippy --quiet --all-targets -- -D warnings &&
        nice -n 10 cargo clippy --quiet --target wasm32-unknown-unknown --lib -- -D warnings &&
        nice -n 10 cargo test --quiet
) >"$native_log" 2>&1 &
native=$!

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
e2e=0
"$VENV/bin/python" -m pytest tests/e2e -p no:cacheprovider \
    -n "${CONDAFLARE_TEST_WORKERS:-6}" --dist loadfile "$@" || e2e=$?

step "waiting for clippy and the native tests"
checks=0
wait "$native" || checks=$?
cat "$native_log"
if [ "$checks" -ne 0 ]; then
    echo "error: clippy or the native tests failed (above)" >&2
fi
if [ "$e2e" -ne 0 ]; then
    echo "error: the end-to-end tests failed" >&2
fi
[ "$checks" -eq 0 ] && [ "$e2e" -eq 0 ]
step "done"
