#!/usr/bin/env bash
# Prints the path of a virtualenv with quetz-server, the baseline peer of the benches
# (bench/quetz_server.py runs it as a subprocess). It is kept apart from the test venv so that
# quetz's dependencies never meet the test drivers. Built once per pin list: a marker file holds
# a hash of the pins and the Python version, so a second run only compares it and returns.
set -euo pipefail
VENV="${XDG_CACHE_HOME:-$HOME/.cache}/condaflare/venv-quetz"
PINS=(
    quetz-server==0.10.4
    # The version the benches were planned with (brings starlette 0.37.2); see SQLAlchemy below.
    fastapi==0.110.3
    # FastAPI >= 0.106 closes quetz's request DB session before its post-upload indexing task,
    # which then reopens it and never gives the connection back: under SQLAlchemy 2's pool for
    # SQLite (5 + 10) uploads fail with a pool timeout after a few dozen; 1.4 has no such pool.
    SQLAlchemy==1.4.54
)
HASH=$( (printf '%s\n' "${PINS[@]}"; python3 --version) | sha256sum | cut -c1-16)

if [ "$(cat "$VENV/.condaflare-pins" 2>/dev/null)" != "$HASH" ]; then
    echo "quetz-venv: installing ${PINS[*]} into $VENV" >&2
    # Built in place, not renamed into place: console scripts (bin/quetz, bin/uvicorn) carry the
    # venv's absolute path in their shebang. The marker, written last, says the build finished.
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PINS[@]}" >&2
    echo "$HASH" >"$VENV/.condaflare-pins"
fi
echo "$VENV"
