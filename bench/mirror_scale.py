"""A mirror of an upstream subdir of 100,000 records (`npm run bench -- mirror-scale`): what a
refresh costs in time and memory, from the upstream's repodata.json and from its shards.

The upstream is an index only, as bench/scale.py generates its packages (MIRROR_SCALE_RECORDS
records of MIRROR_SCALE_NAMES names; real files only for the packages a solve of
`scale-00003` installs), served by nginx. For each of the two upstreams (without and with a
shard index), on a fresh server:

1. the first read of repodata.json through the mirror (the refresh: fetch, filter, store,
   build every index file), next to the same file straight from nginx;
2. a read once the interval has passed and the upstream is unchanged (a 304 from it);
3. a read after one record changed upstream (the document or one shard read again);
4. a solve and install of `scale-00003` by py-rattler through the mirror;
5. the peak wasm memory of the isolate (Worker and Durable Object together, as the index's
   stats report it), which must stay within 128 MiB, and the workerd process's peak resident
   memory (VmHWM) for reference.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import running_server  # noqa: E402
from baselines import nginx  # noqa: E402
from synthetic_channel import SUBDIR, chain, workerd_memory, write_shards, write_upstream  # noqa: E402

RECORDS = int(os.environ.get("MIRROR_SCALE_RECORDS", 100_000))
NAMES = int(os.environ.get("MIRROR_SCALE_NAMES", 10_000))
ISOLATE_BYTES = 128 * 1024 * 1024
CLIENT = Path(__file__).resolve().parents[1] / "tests" / "e2e" / "rattler_client.py"


def timed(call):
    started = time.perf_counter()
    result = call()
    return result, time.perf_counter() - started


def get(url: str) -> requests.Response:
    response = requests.get(url, headers={"Accept-Encoding": "identity"}, timeout=900)
    response.raise_for_status()
    return response


def change_one_record(channel: Path, shards: bool) -> None:
    """Another build of scale-00005 upstream, as a new upload there would make."""
    path = channel / SUBDIR / "repodata.json"
    document = json.loads(path.read_text())
    filename = "scale-00005-9.0-hffff_0.tar.bz2"
    document["packages"][filename] = {**document["packages"]["scale-00005-1.0-h0000_0.tar.bz2"], "version": "9.0", "build": "hffff_0"}
    path.write_text(json.dumps(document, separators=(",", ":")))
    if shards:
        by_name: dict[str, dict] = {}
        for name, record in document["packages"].items():
            by_name.setdefault(record["name"], {})[name] = record
        old = channel / SUBDIR / "shards"
        for shard in old.iterdir():
            shard.unlink()
        old.rmdir()
        write_shards(channel / SUBDIR, by_name)


def solve(url: str, tmp: Path, mode: str) -> float:
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, str(CLIENT), mode, url, str(tmp / f"env-{mode}"), str(tmp / f"cache-{mode}"), SUBDIR, "scale-00003"],
        capture_output=True, text=True, timeout=900,
    )
    seconds = time.perf_counter() - started
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    result = json.loads(lines[-1]) if lines else {"error": out.stderr[-2000:]}
    if "error" in result:
        raise RuntimeError(f"py-rattler failed: {result['error']}")
    names = {record["name"] for record in result["records"]}
    assert names == {f"scale-{n:05d}" for n in chain(3)}, names
    return seconds


def run(tmp: Path, shards: bool) -> None:
    label = "shards" if shards else "repodata.json"
    www = tmp / label / "www"
    size = write_upstream(www / "upstream", RECORDS, NAMES, top=3, shards=shards)
    variables = {"MIRROR_ALLOW_HTTP": "true", "MIRROR_REVALIDATE_SECONDS": "0", "MIRROR_REFRESH_IN_BACKGROUND": "false"}
    with nginx(tmp / label) as nginx_url, running_server(tmp / label / "state", variables) as server:
        server.admin("user", "create", "bench", "--admin")
        key = server.admin("key", "create", "bench")["key"]
        server.admin("channel", "create", "big", "--owner", "bench", "--mirror", f"{nginx_url}/upstream", env={"MIRROR_ALLOW_HTTP": "true"})
        ours = f"{server.url}/big/{SUBDIR}/repodata.json"
        first, first_seconds = timed(lambda: get(ours))
        listed = len(first.json()["packages"])
        assert listed == RECORDS, listed
        _, nginx_seconds = timed(lambda: get(f"{nginx_url}/upstream/{SUBDIR}/repodata.json"))
        _, again_seconds = timed(lambda: get(ours))
        change_one_record(www / "upstream", shards)
        changed, changed_seconds = timed(lambda: get(ours))
        assert len(changed.json()["packages"]) == RECORDS + 1
        solve_seconds = solve(f"{server.url}/big", tmp / label, "gateway" if shards else "fetch")
        stats = server.api("GET", "channels/big/stats", key).json()["index"]
        peak = stats["wasm_memory_bytes"]
        process = workerd_memory(server.pgid)
        print(f"-- upstream with {label}: {RECORDS} records, {NAMES} names; its repodata.json {size / 2**20:.0f} MiB")
        print(f"first read (refresh: fetch, filter, store, build every file): {first_seconds:.1f} s; "
              f"the same repodata.json from nginx: {nginx_seconds:.2f} s")
        print(f"read with the upstream unchanged (its 304): {again_seconds:.2f} s")
        print(f"read after one record changed upstream: {changed_seconds:.1f} s")
        print(f"py-rattler solve and install of scale-00003 through the mirror: {solve_seconds:.1f} s")
        print(f"peak wasm memory of the isolate (Worker and Durable Object together): {peak / 2**20:.0f} MiB "
              f"(bound {ISOLATE_BYTES / 2**20:.0f} MiB); index SQLite {stats['sqlite_bytes'] / 2**20:.0f} MiB")
        print(f"workerd process: peak resident {process['VmHWM'] / 2**20:.0f} MiB, now {process['VmRSS'] / 2**20:.0f} MiB")
        assert peak <= ISOLATE_BYTES, peak


def main():
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tmp.chmod(0o755)  # nginx's workers run as another user
        for shards in (False, True):
            (tmp / ("shards" if shards else "repodata.json")).mkdir()
            (tmp / ("shards" if shards else "repodata.json")).chmod(0o755)
            run(tmp, shards)


if __name__ == "__main__":
    main()
