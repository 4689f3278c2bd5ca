#!/usr/bin/env bash
# What a run of end-to-end tests needs: builds the Worker and the admin command, then prints the
# path of the test drivers' virtualenv (scripts/test-venv.sh).
set -euo pipefail
source "$(dirname "$0")/setup.sh"
cd "$ROOT"
bash scripts/build.sh >&2
cargo build --quiet --bin admin >&2
bash scripts/test-venv.sh
