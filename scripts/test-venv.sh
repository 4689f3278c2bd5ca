#!/usr/bin/env bash
# Prints the path of the virtualenv with the test drivers (py-rattler, pytest, requests),
# creating it outside the clone the first time, one per version of tests/requirements.txt.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
REQS_HASH=$(sha256sum "$ROOT/tests/requirements.txt" | cut -c1-12)
VENV="${CONDAFLARE_CACHE:-$HOME/.cache/condaflare}/venv-$REQS_HASH"
# Built in place (a venv's scripts name its path) and marked complete only at the end.
if [ ! -f "$VENV/.complete" ]; then
    echo "setup: installing test drivers into $VENV" >&2
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$ROOT/tests/requirements.txt" >&2
    touch "$VENV/.complete"
fi
echo "$VENV"
