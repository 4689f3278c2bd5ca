"""What a mirror channel costs: repodata.json and a package (10 MB, incompressible) fetched cold
through a mirror (its first request, which fetches from the upstream), warm from the mirror (a
later request), and straight from the upstream, which is nginx serving the same directory (a
real channel of fixtures and the package, indexed by py-rattler) — plus the floor Worker reading
the same package with one R2 get. Prints milliseconds per request, medians of BENCH_ROUNDS
rounds (each with a new mirror, so each cold request is a first one), and the R2 operations and
upstream requests each kind of request made, from the channel's counters."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from baselines import ROUNDS, floor_worker, median, nginx, timed  # noqa: E402
from harness import ROOT, running_server  # noqa: E402
from pkgbuild import build_conda  # noqa: E402

PACKAGES = ROOT / "tests" / "fixtures" / "packages"
FIXTURES = {
    "linux-64": ["zlib-1.2.11-h7b6447c_3.conda", "zlib-1.2.11-h7b6447c_3.tar.bz2", "other-package-0.2-0.conda"],
    "noarch": ["empty-0.1.0-h4616a5c_0.conda", "flask-0.11.1-py_0.tar.bz2"],
}
PACKAGE_BYTES = 10 * 1024 * 1024
INDEXER = """
import asyncio, sys
import rattler.index
asyncio.run(rattler.index.index_fs(sys.argv[1], write_zst=False, write_shards=False))
"""


def upstream_channel(www: Path) -> str:
    """The upstream channel under www/channel; answers the big package's file name."""
    channel = www / "channel"
    for subdir, files in FIXTURES.items():
        (channel / subdir).mkdir(parents=True)
        for filename in files:
            (channel / subdir / filename).write_bytes((PACKAGES / filename).read_bytes())
    filename, data = build_conda("bench-blob", files={"share/bench/blob.bin": os.urandom(PACKAGE_BYTES)})
    (channel / "noarch" / filename).write_bytes(data)
    subprocess.run([sys.executable, "-c", INDEXER, str(channel)], check=True, timeout=600)
    return filename


class Counters:
    """The channel's R2 operations and upstream requests, as its stats count them."""

    def __init__(self, server, key: str):
        self.server, self.key = server, key

    def read(self, channel: str) -> dict[str, int]:
        stats = requests.get(f"{self.server.url}/api/v1/channels/{channel}/stats", headers={"Authorization": f"Bearer {self.key}"}, timeout=30)
        stats.raise_for_status()
        stats = stats.json()
        counts = {f"R2 {kind}": n for kind, n in stats["r2_operations"].items()}
        # Locally the Worker and the channel's object may run in one isolate, whose counters
        # both then show: counted once.
        if stats["index"]["r2_operations"] != stats["r2_operations"]:
            for kind, n in stats["index"]["r2_operations"].items():
                counts[f"R2 {kind}"] = counts.get(f"R2 {kind}", 0) + n
        worker, index = stats["mirror"], stats["index"]["mirror"]
        counts["upstream"] = worker["upstream_fetches"] + (index["upstream_fetches"] if index != worker else 0)
        return counts

    def during(self, channel: str, call) -> tuple[float, dict[str, int]]:
        before = self.read(channel)
        seconds, _ = timed(call)
        after = self.read(channel)
        return seconds, {kind: after[kind] - before.get(kind, 0) for kind in after if after[kind] != before.get(kind, 0)}


def main():
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tmp.chmod(0o755)  # nginx's workers run as another user
        filename = upstream_channel(tmp / "www")
        package = (tmp / "www" / "channel" / "noarch" / filename).read_bytes()
        with (
            nginx(tmp) as upstream,
            running_server(tmp / "state", {"MIRROR_ALLOW_HTTP": "true"}) as server,
            floor_worker(tmp / "floor") as floor,
        ):
            server.admin("user", "create", "bench", "--admin")
            key = server.admin("key", "create", "bench")["key"]
            counters = Counters(server, key)
            floor.put_object("blob.conda", package)
            files = {"repodata.json": "noarch/repodata.json", "package (10 MB)": f"noarch/{filename}"}
            times: dict[tuple[str, str], list[float]] = {}
            operations: dict[tuple[str, str], dict[str, int]] = {}
            for round in range(ROUNDS):
                channel = f"mirror-{round}"
                server.admin("channel", "create", channel, "--owner", "bench", "--mirror", f"{upstream}/channel", env={"MIRROR_ALLOW_HTTP": "true"})
                for what, path in files.items():
                    for how in ("cold", "warm"):
                        seconds, counted = counters.during(channel, lambda: requests.get(f"{server.url}/{channel}/{path}", timeout=120))
                        times.setdefault((what, how), []).append(seconds)
                        operations[(what, how)] = counted
                    seconds, _ = timed(lambda: requests.get(f"{upstream}/channel/{path}", timeout=120))
                    times.setdefault((what, "nginx (the upstream)"), []).append(seconds)
                seconds, _ = timed(lambda: requests.get(f"{floor.url}/blob.conda", timeout=120))
                times.setdefault(("package (10 MB)", "floor Worker, one R2 get"), []).append(seconds)

    print(f"Mirror channel, ms per request, median of {ROUNDS} rounds (each round a new mirror):")
    print(f"{'file':18} {'request':28} {'ms':>8}  R2 operations and upstream requests it made")
    for (what, how), values in times.items():
        counted = operations.get((what, how))
        made = ", ".join(f"{kind} {n}" for kind, n in sorted(counted.items())) if counted is not None else "-"
        print(f"{what:18} {how:28} {median(values) * 1000:8.1f}  {made or 'none'}")
    print("cold: the mirror's first request (repodata.json: fetched, filtered and stored; the package: fetched and")
    print("stored through the channel's object, streamed to the caller); warm: the next request. Operations are of")
    print("the last round, read from the channel's stats before and after the request.")


if __name__ == "__main__":
    main()
