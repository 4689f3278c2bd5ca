#!/usr/bin/env bash
# npm run bench [-- <name>...]: builds the Worker, installs wrk, nginx and quetz if missing, and
# runs the named benches (size, serve, publish, scale, check, mirror by default; web when
# named). Each prints its figures next to baselines measured in the same run
# (bench/baselines.py), medians of BENCH_ROUNDS (3) rounds. The solve comparison needs the 100k-record
# channel that scale builds, so it is scale's last part (`solve` is another name for it). check
# times the consistency check on a 100k-record channel against a full rebuild of it
# (CHECK_PACKAGES / CHECK_NAMES for a smaller one). mirror-scale (when named) mirrors an upstream
# subdir of 100,000 records, from its repodata.json and from its shards
# (MIRROR_SCALE_RECORDS / MIRROR_SCALE_NAMES for a smaller one).
set -euo pipefail
source "$(dirname "$0")/../scripts/setup.sh"
cd "$ROOT"

for tool in wrk nginx; do
    if ! command -v "$tool" >/dev/null; then
        say "installing $tool"
        as_root apt-get update -qq >&2 && as_root apt-get install -y -qq "$tool" >&2
    fi
done
VENV=$(bash scripts/e2e-ready.sh)
bash bench/quetz-venv.sh >/dev/null

benches=("$@")
[ ${#benches[@]} -gt 0 ] || benches=(size serve publish scale check mirror)
for bench in "${benches[@]}"; do
    [ "$bench" = solve ] && bench=scale
    bench=${bench//-/_}
    echo "== bench: $bench"
    "$VENV/bin/python" "bench/$bench.py"
done
