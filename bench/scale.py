"""A subdir of 100,000 records: how it is built, how one more upload fares, what the index
costs to rebuild and to fetch, in memory and in time, against py-rattler's indexer on the same
files and nginx serving that indexer's output.

1. Generates SCALE_PACKAGES (100,000) small linux-64 packages: SCALE_NAMES (10,000) names with
   ten builds each; `scale-<i>` depends on `scale-<i // 2>`, so an environment is a short chain.
2. Imports them with `npm run admin -- import` (bulk import, tar batches).
3. Uploads 20 more, one at a time: time until the answer (the package is then in the shards)
   and until repodata.json lists it.
4. Rebuilds every artifact from the stored records (`POST /api/v1/channels/<c>/rebuild`).
5. Reads the Durable Object's wasm memory, the artifacts' sizes, and times a first GET of each,
   next to nginx serving `rattler.index.index_fs`'s output for the same files, whose run is
   timed too.

Prints every figure; SCALE_PACKAGES / SCALE_NAMES make a smaller run for a quick look."""

import hashlib
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import ROOT, running_server  # noqa: E402
from pkgbuild import build_tar_bz2  # noqa: E402
from reads import nginx  # noqa: E402

PACKAGES = int(os.environ.get("SCALE_PACKAGES", 100_000))
NAMES = int(os.environ.get("SCALE_NAMES", 10_000))
EXTRA_UPLOADS = 20
SUBDIR = "linux-64"
CHANNEL = "scale"


def synthetic(index: int) -> tuple[str, bytes]:
    """Package number `index`: name index % NAMES, build index // NAMES."""
    name, build = index % NAMES, index // NAMES
    return build_tar_bz2(
        f"scale-{name:05d}",
        version=f"1.{build}",
        build=f"h{build:04x}_0",
        subdir=SUBDIR,
        depends=[f"scale-{name // 2:05d} >=1.0"] if name else [],
        files={f"share/scale/scale-{name:05d}": f"{name}.{build}\n".encode()},
        index_overrides={"arch": "x86_64", "platform": "linux"},
    )


def write_channel(directory: Path) -> None:
    (directory / "noarch").mkdir(parents=True)
    (directory / SUBDIR).mkdir()
    with multiprocessing.Pool() as pool:
        for filename, data in pool.imap_unordered(synthetic, range(PACKAGES), chunksize=500):
            (directory / SUBDIR / filename).write_bytes(data)


def timed(call):
    started = time.perf_counter()
    result = call()
    return result, time.perf_counter() - started


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def index_with_rattler(directory: Path) -> float:
    """Seconds of `rattler.index.index_fs` over the directory, in a child process (py-rattler
    sometimes aborts at interpreter exit, after its work is done)."""
    script = (
        "import asyncio, sys, time, rattler.index as ri\n"
        "t = time.perf_counter()\n"
        "asyncio.run(ri.index_fs(sys.argv[1], force=True))\n"
        "print(time.perf_counter() - t, flush=True)\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(directory)], capture_output=True, text=True)
    try:
        return float(out.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise RuntimeError(f"index_fs failed: {out.stderr[-2000:]}")


def first_get(url: str) -> tuple[int, float]:
    """Bytes and seconds of a GET on a new connection, the body read whole."""
    response, seconds = timed(lambda: requests.get(url, headers={"Accept-Encoding": "identity"}, timeout=300))
    response.raise_for_status()
    return len(response.content), seconds


def main():
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tmp.chmod(0o755)  # nginx's workers run as another user
        channel_dir = tmp / "www" / CHANNEL
        _, generated = timed(lambda: write_channel(channel_dir))
        print(f"generated {PACKAGES} packages ({NAMES} names) in {generated:.0f} s")

        variables = {"MAX_UPLOAD_BYTES": str(100 * 1024 * 1024)}
        with running_server(tmp / "state", variables) as server:
            server.admin("user", "create", "bench", "--admin")
            key = server.admin("key", "create", "bench")["key"]
            server.admin("channel", "create", CHANNEL, "--owner", "bench")
            auth = {"Authorization": f"Bearer {key}"}

            imported, import_seconds = timed(
                lambda: server.admin("import", CHANNEL, str(channel_dir), "--url", server.url, env={"CONDAFLARE_API_KEY": key})
            )
            assert imported["created"] == PACKAGES, {k: imported[k] for k in ("created", "unchanged", "failed")}
            print(f"bulk import: {import_seconds:.0f} s, {PACKAGES / import_seconds:.0f} packages/s")

            answers, visible, freshness = [], [], []
            for extra in range(EXTRA_UPLOADS):
                filename, data = build_tar_bz2(f"scale-extra-{extra}", subdir=SUBDIR, index_overrides={"arch": "x86_64", "platform": "linux"})
                headers = {**auth, "X-File-Name": filename, "X-File-SHA256": hashlib.sha256(data).hexdigest()}
                started = time.perf_counter()
                response = requests.post(f"{server.url}/api/v1/upload/{CHANNEL}", data=data, headers=headers, timeout=600)
                answered = time.perf_counter() - started
                assert response.status_code == 201, response.text
                freshness.append(response.headers["X-Repodata-Json"])
                while filename not in requests.get(f"{server.url}/{CHANNEL}/{SUBDIR}/repodata.json", timeout=300).json()["packages"]:
                    time.sleep(0.1)
                visible.append(time.perf_counter() - started if freshness[-1] == "pending" else answered)
                answers.append(answered)
            print(
                f"one more upload ({EXTRA_UPLOADS} runs), in the shards when it answers: p50 {percentile(answers, 50):.2f} s, "
                f"p95 {percentile(answers, 95):.2f} s; in repodata.json: p50 {percentile(visible, 50):.2f} s, "
                f"p95 {percentile(visible, 95):.2f} s ({freshness.count('current')} answered 'current')"
            )

            rebuilt, rebuild_seconds = timed(lambda: server.api("POST", f"channels/{CHANNEL}/rebuild", key))
            assert rebuilt.status_code == 200, rebuilt.text
            stats = server.api("GET", f"channels/{CHANNEL}/stats", key).json()["index"]
            records = stats["subdirs"]
            print(f"full rebuild from stored records: {rebuild_seconds:.1f} s ({records})")
            print(
                f"peak wasm memory of the isolate (Worker and Durable Object together): "
                f"{stats['wasm_memory_bytes'] / 2**20:.0f} MiB; index SQLite {stats['sqlite_bytes'] / 2**20:.0f} MiB"
            )

            rattler_seconds = index_with_rattler(channel_dir)
            print(
                f"rattler.index.index_fs on the same {PACKAGES} files: {rattler_seconds:.1f} s "
                f"(condaflare: import {import_seconds:.0f} s incl. upload, rebuild {rebuild_seconds:.1f} s)"
            )

            shard_index = "repodata_shards.msgpack.zst"
            proc, nginx_url = nginx(tmp)
            try:
                print(f"{'artifact (first GET)':34} {'bytes':>11} {'condaflare s':>13} {'nginx bytes':>12} {'nginx s':>8}")
                for name in ("repodata.json", "repodata.json.zst", "run_exports.json", shard_index):
                    ours = first_get(f"{server.url}/{CHANNEL}/{SUBDIR}/{name}")
                    theirs = first_get(f"{nginx_url}/{CHANNEL}/{SUBDIR}/{name}") if (channel_dir / SUBDIR / name).exists() else (0, float("nan"))
                    print(f"{name:34} {ours[0]:11} {ours[1]:13.3f} {theirs[0]:12} {theirs[1]:8.3f}")
            finally:
                proc.terminate()
                proc.wait()


if __name__ == "__main__":
    main()
