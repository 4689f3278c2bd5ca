"""A subdir of 100,000 records: how it is built, how one more upload fares, what the index
costs to rebuild and to fetch, in memory and in time, against py-rattler's indexer on the same
files and nginx serving that indexer's output.

1. Generates SCALE_PACKAGES (100,000) small linux-64 packages: SCALE_NAMES (10,000) names with
   ten builds each; `scale-<i>` depends on `scale-<i // 2>`, so an environment is a short chain.
2. Imports them with `npm run admin -- import` (bulk import, tar batches).
3. Uploads 20 more, one at a time: time until the answer (the package is then in the shards)
   and until repodata.json lists it.
4. Rebuilds every artifact from the stored records (`POST /api/v1/channels/<c>/rebuild`).
5. Reads the Durable Object's wasm memory, times `rattler.index.index_fs` on the same files,
   and times a first GET of each artifact next to nginx serving index_fs's output.
6. Solves and installs a small environment with py-rattler's Gateway from both.

Prints every figure; SCALE_PACKAGES / SCALE_NAMES make a smaller run for a quick look."""

import hashlib
import json
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
from baselines import nginx  # noqa: E402
from serve import shard_path  # noqa: E402

PACKAGES = int(os.environ.get("SCALE_PACKAGES", 100_000))
NAMES = int(os.environ.get("SCALE_NAMES", 10_000))
EXTRA_UPLOADS = 20
SOLVE_RUNS = 3
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

            with nginx(tmp) as nginx_url:
                first_gets(server.url, nginx_url)
                solves(server.url, nginx_url, tmp)


def first_gets(ours: str, nginx_url: str) -> None:
    print(f"{'first GET of':34} {'bytes':>11} {'condaflare s':>13} {'nginx bytes':>12} {'nginx s':>8}")
    package = synthetic(NAMES - 1)[0]
    for label, name, theirs_name in (
        ("repodata.json", "repodata.json", "repodata.json"),
        ("repodata.json.zst", "repodata.json.zst", "repodata.json.zst"),
        ("run_exports.json", "run_exports.json", None),
        ("repodata_shards.msgpack.zst", "repodata_shards.msgpack.zst", "repodata_shards.msgpack.zst"),
        ("a shard", shard_path(f"{ours}/{CHANNEL}/{SUBDIR}", "scale-00000"), shard_path(f"{nginx_url}/{CHANNEL}/{SUBDIR}", "scale-00000")),
        ("a package", package, package),
    ):
        size, seconds = first_get(f"{ours}/{CHANNEL}/{SUBDIR}/{name}")
        if theirs_name:
            their_size, their_seconds = first_get(f"{nginx_url}/{CHANNEL}/{SUBDIR}/{theirs_name}")
            print(f"{label:34} {size:11} {seconds:13.3f} {their_size:12} {their_seconds:8.3f}")
        else:
            print(f"{label:34} {size:11} {seconds:13.3f} {'(not written by index_fs)':>21}")


def solves(ours: str, nginx_url: str, tmp: Path) -> None:
    """py-rattler's Gateway (pixi's engine: shards first) solving and installing the deepest
    chain, `scale-<NAMES-1>` and its ancestors, from a fresh cache each time."""
    spec = f"scale-{NAMES - 1:05d}"
    chain = (NAMES - 1).bit_length() + 1  # scale-i depends on scale-(i // 2), down to scale-0
    client = ROOT / "tests" / "e2e" / "rattler_client.py"
    times = {}
    for label, base in (("condaflare", ours), ("nginx", nginx_url)):
        runs = []
        for run in range(SOLVE_RUNS):
            work = tmp / f"solve-{label}-{run}"
            started = time.perf_counter()
            out = subprocess.run(
                [sys.executable, str(client), "gateway", f"{base}/{CHANNEL}", str(work / "env"), str(work / "cache"), SUBDIR, spec],
                capture_output=True, text=True, timeout=600,
            )
            runs.append(time.perf_counter() - started)
            answer = json.loads(out.stdout.strip().splitlines()[-1])
            assert "records" in answer and len(answer["records"]) == chain, answer
        times[label] = statistics.median(runs)
    print(
        f"solve+install {spec} ({chain} packages) with the Gateway, fresh cache, median of {SOLVE_RUNS}: "
        f"condaflare {times['condaflare']:.2f} s, nginx (index_fs output) {times['nginx']:.2f} s, "
        f"ratio {times['condaflare'] / times['nginx']:.2f}x"
    )


if __name__ == "__main__":
    main()
