#!/usr/bin/env bash
# npm run crash: the crash test's rounds (tests/e2e/test_crash.py), more of them than `npm test`
# runs: CRASH_ROUNDS (20 by default here), CRASH_SEED to replay a printed seed. Arguments go to
# pytest.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
cd "$ROOT"

VENV=$(bash scripts/e2e-ready.sh)
CRASH_ROUNDS=${CRASH_ROUNDS:-20} "$VENV/bin/python" -m pytest -p no:cacheprovider -s \
    "tests/e2e/test_crash.py::test_rounds_of_uploads_deletes_and_rebuilds_killed_at_random_moments" "$@"
