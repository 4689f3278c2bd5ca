#!/usr/bin/env bash
# Prints the path of the virtualenv with the test drivers (py-rattler, pytest, requests,
# playwright), creating it outside the clone the first time, one per version of
# tests/requirements.txt. Installs Debian's chromium for the browser tests when it is missing.
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
# Playwright drives this browser (tests/e2e/test_web.py); its own browser download is not used.
if ! command -v chromium >/dev/null; then
    echo "setup: installing chromium" >&2
    if [ "$(id -u)" = 0 ]; then sudo=(); else sudo=(sudo); fi
    "${sudo[@]}" apt-get update -qq >&2
    "${sudo[@]}" apt-get install -y -qq chromium >&2
fi
echo "$VENV"
