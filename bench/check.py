"""What the consistency check costs on a large channel, against a full rebuild of the same
channel measured in the same run (the check rebuilds every shard and document in memory to
compare them, so a rebuild is its natural yardstick).

1. Generates CHECK_PACKAGES (100,000) small linux-64 packages in CHECK_NAMES (10,000) names,
   as the scale bench does, and imports them with `npm run admin -- import`.
2. Times `POST /api/v1/channels/<c>/check` (RUNS times; it must find nothing), then
   `?repair=true` on the consistent channel, then a full rebuild (`POST .../rebuild`).
3. Damages the channel while the server is stopped (an orphan package object written into its
   local R2 store, one shard deleted from it) and times the check that finds both and the
   repair that fixes them.
4. Prints the peak wasm memory of the isolate before and after the checks.

CHECK_PACKAGES / CHECK_NAMES make a smaller run (e.g. 10,000 / 1,000)."""

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import scale  # noqa: E402
from harness import running_server  # noqa: E402
from test_check import r2_delete, r2_put  # noqa: E402

PACKAGES = int(os.environ.get("CHECK_PACKAGES", 100_000))
NAMES = int(os.environ.get("CHECK_NAMES", 10_000))
RUNS = 3
CHANNEL = scale.CHANNEL
SUBDIR = scale.SUBDIR


def timed(call):
    started = time.perf_counter()
    result = call()
    return result, time.perf_counter() - started


def main():
    # The scale bench's generator, at this bench's size.
    scale.PACKAGES, scale.NAMES = PACKAGES, NAMES
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        channel_dir = tmp / "www" / CHANNEL
        _, generated = timed(lambda: scale.write_channel(channel_dir))
        print(f"generated {PACKAGES} packages ({NAMES} names) in {generated:.0f} s")

        state = tmp / "state"
        variables = {"MAX_UPLOAD_BYTES": str(100 * 1024 * 1024)}
        with running_server(state, variables) as server:
            server.admin("user", "create", "bench", "--admin")
            key = server.admin("key", "create", "bench")["key"]
            server.admin("channel", "create", CHANNEL, "--owner", "bench")
            env = {"CONDAFLARE_API_KEY": key}
            imported, import_seconds = timed(
                lambda: server.admin("import", CHANNEL, str(channel_dir), "--url", server.url, env=env)
            )
            assert imported["created"] == PACKAGES, {k: imported[k] for k in ("created", "unchanged", "failed")}
            print(f"bulk import: {import_seconds:.0f} s")

            def check(**params):
                response, seconds = timed(lambda: server.api(
                    "POST", f"channels/{CHANNEL}/check", key, params=params, timeout=3600))
                assert response.status_code == 200, response.text
                return response.json(), seconds

            def memory() -> float:
                stats = server.api("GET", f"channels/{CHANNEL}/stats", key).json()["index"]
                return stats["wasm_memory_bytes"] / 2**20

            memory_before = memory()
            runs = []
            for _ in range(RUNS):
                report, seconds = check()
                assert report["consistent"], report
                runs.append(seconds)
            _, repair_seconds = check(repair="true")
            memory_after = memory()
            rebuilt, rebuild_seconds = timed(lambda: server.api(
                "POST", f"channels/{CHANNEL}/rebuild", key, timeout=3600))
            assert rebuilt.status_code == 200, rebuilt.text
            shard = sorted(k for k in server.r2_keys() if k.startswith(f"{CHANNEL}/{SUBDIR}/shards/"))[0]

        r2_put(state, f"{CHANNEL}/{SUBDIR}/orphan-1.0-0.tar.bz2", b"no record names me")
        r2_delete(state, shard)
        with running_server(state, variables) as server:
            found, found_seconds = check()
            kinds = {kind: finding["count"] for kind, finding in found["findings"].items()}
            assert kinds == {"object_without_record": 1, "shard_missing": 1}, found
            repaired, repaired_seconds = check(repair="true")
            clean, _ = check()
            assert clean["consistent"], clean

    print(f"check of {PACKAGES} records in {NAMES} names, consistent: median {statistics.median(runs):.1f} s "
          f"(runs {', '.join(f'{s:.1f}' for s in runs)}); with ?repair=true, nothing to repair: {repair_seconds:.1f} s")
    print(f"baseline, full rebuild of the same channel (POST .../rebuild): {rebuild_seconds:.1f} s "
          f"(check / rebuild: {statistics.median(runs) / rebuild_seconds:.2f})")
    print(f"after damage (an orphan object, a missing shard): check {found_seconds:.1f} s found {kinds}; "
          f"repair {repaired_seconds:.1f} s: {repaired['repaired']}")
    print(f"peak wasm memory of the isolate: {memory_before:.0f} MiB after the import, {memory_after:.0f} MiB after the checks")


if __name__ == "__main__":
    main()
