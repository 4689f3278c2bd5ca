"""Upload-to-visible time for packages of about 1, 5, 20, 60 and 95 MB through the full upload path
(stream, hash, read, validate, commit, rebuild the index), against the same bytes posted to
quetz (until its repodata.json lists them), and against the same bytes streamed straight into
R2 by a Worker that does nothing else (`bench/floor/`, on the same local runtime: the floor), in
the same run.

Prints the median of RUNS uploads per size and the ratios to quetz and to the floor."""

import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import running_server  # noqa: E402
from pkgbuild import build_tar_bz2  # noqa: E402
from quetz_server import running_quetz  # noqa: E402

SIZES_MB = (1, 5, 20, 60, 95)
FLOOR_WORKER = Path(__file__).resolve().parent / "floor"
RUNS = 3


def timed(call) -> float:
    started = time.perf_counter()
    response = call()
    elapsed = time.perf_counter() - started
    if response.status_code >= 300:
        raise RuntimeError(f"{response.status_code}: {response.text[:200]}")
    return elapsed


def main():
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with (
            running_server(tmp / "state") as server,
            running_server(tmp / "floor", worker_dir=FLOOR_WORKER) as floor_worker,
            running_quetz(tmp / "quetz") as quetz,
        ):
            server.admin("user", "create", "bench", "--admin")
            key = server.admin("key", "create", "bench")["key"]
            server.admin("channel", "create", "bench", "--owner", "bench")
            quetz.create_channel("bench")
            auth = {"Authorization": f"Bearer {key}"}
            print(f"{'size':>8} {'condaflare s':>13} {'quetz s':>8} {'floor s':>8} {'vs quetz':>9} {'vs floor':>9} {'MB/s':>6}")
            for megabytes in SIZES_MB:
                # Random payload: bzip2 cannot shrink it, so the file is about the stated size.
                filename, data = build_tar_bz2("payload", files={"share/blob": os.urandom(megabytes * 1_000_000 - 60_000)})
                path = tmp / filename
                path.write_bytes(data)
                headers = {**auth, "X-File-Name": filename, "X-File-SHA256": hashlib.sha256(data).hexdigest()}
                uploads, peers, floors = [], [], []
                for _ in range(RUNS):
                    uploads.append(timed(lambda: requests.post(f"{server.url}/api/v1/upload/bench", data=data, headers=headers, timeout=600)))
                    visible = requests.get(f"{server.url}/bench/noarch/repodata.json", timeout=30).json()
                    assert visible["packages"][filename]["sha256"] == headers["X-File-SHA256"]
                    requests.delete(f"{server.url}/api/v1/delete/bench/noarch/{filename}", headers=auth, timeout=60).raise_for_status()
                    # quetz.upload returns once quetz's repodata.json lists the file.
                    peers.append(timed(lambda: quetz.upload("bench", path, timeout=600)))
                    quetz.delete("bench", "noarch", filename)
                    floors.append(timed(lambda: requests.put(f"{floor_worker.url}/", data=data, timeout=600)))
                upload, peer, floor = (statistics.median(x) for x in (uploads, peers, floors))
                print(
                    f"{len(data) / 1e6:7.1f}M {upload:13.2f} {peer:8.2f} {floor:8.2f} "
                    f"{upload / peer:8.2f}x {upload / floor:8.2f}x {len(data) / 1e6 / upload:6.1f}"
                )


if __name__ == "__main__":
    main()
