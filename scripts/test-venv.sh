#!/usr/bin/env bash
# Prints the path of the virtualenv with the test drivers (py-rattler, pytest, requests),
# creating it outside the clone the first time, one per version of tests/requirements.txt.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
REQS_HASH=$(sha256sum "$ROOT/tests/requirements.txt" | cut -c1-12)
VENV="${CONDAFLARE_CACHE:-$HOME/.cache/condaflare}/venv-$REQS_HASH"
if [ ! -x "$VENV/bin/pytest" ]; then
    echo "setup: installing test drivers into $VENV" >&2
    rm -rf "$VENV.tmp"
    python3 -m venv "$VENV.tmp"
    "$VENV.tmp/bin/pip" install --quiet --disable-pip-version-check -r "$ROOT/tests/requirements.txt" >&2
    rm -rf "$VENV" && mv "$VENV.tmp" "$VENV"
fi
echo "$VENV"
