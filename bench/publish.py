"""Upload-to-visible time for packages of about 1, 5, 20, 60 and 95 MB through the full upload path
(stream, hash, read, validate, commit, rebuild the index), against the same bytes posted to
quetz (until its repodata.json lists them), against the same bytes streamed straight into R2 by
a Worker that does nothing else (the floor; and the same put with R2 checking the SHA-256, the
checked floor) and read to their end by a Worker that stores nothing (the runtime's ceiling),
all on the same local runtime (bench/baselines.py), in the same run.

The `.tar.bz2` rows have info/ first, as conda-build writes them; the `.conda` rows have the
info component last, as conda-package-handling writes it, so the subdir is known only at the
end: uploaded to a channel holding a file of the same name (`conda`), the bytes go to the key
its records suggest; to a channel without files (`conda/new`), through a staging object.
Prints the median of BENCH_ROUNDS interleaved uploads per size, the ratios to quetz, the
floors and the ceiling, and the CPU seconds the server's processes spent per upload."""

import hashlib
import os
import statistics
import sys
import tempfile
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from baselines import ROUNDS, floor_worker, load, timed, trivial_worker  # noqa: E402
from harness import running_server  # noqa: E402
from pkgbuild import build_conda, build_tar_bz2  # noqa: E402
from quetz_server import running_quetz  # noqa: E402

# (format, size in MB)
SIZES = (
    ("tar.bz2", 1), ("tar.bz2", 5), ("tar.bz2", 20), ("tar.bz2", 60), ("tar.bz2", 95),
    ("conda", 5), ("conda", 60), ("conda/new", 60),
)
BUILDERS = {"tar.bz2": build_tar_bz2, "conda": build_conda, "conda/new": build_conda}
# The channel each format is uploaded to: "bench" holds an earlier release of the package.
CHANNELS = {"tar.bz2": "bench", "conda": "bench", "conda/new": "empty"}


def main():
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with (
            running_server(tmp / "state") as server,
            floor_worker(tmp / "floor") as floor,
            trivial_worker(tmp / "trivial") as ceiling,
            running_quetz(tmp / "quetz") as quetz,
        ):
            server.admin("user", "create", "bench", "--admin")
            key = server.admin("key", "create", "bench")["key"]
            server.admin("channel", "create", "bench", "--owner", "bench")
            server.admin("channel", "create", "empty", "--owner", "bench")
            quetz.create_channel("bench")
            auth = {"Authorization": f"Bearer {key}"}
            earlier, earlier_data = build_conda("payload", version="0.1")
            requests.post(
                f"{server.url}/api/v1/upload/bench",
                data=earlier_data,
                headers={**auth, "X-File-Name": earlier, "X-File-SHA256": hashlib.sha256(earlier_data).hexdigest()},
                timeout=60,
            ).raise_for_status()
            print(f"medians of {ROUNDS} interleaved uploads per size; {load()}")
            print("ratios: condaflare's time over the baseline's (1.0 = as fast); CPU s: the server's processes per upload")
            print(
                f"{'format':>9} {'size':>8} {'condaflare s':>13} {'quetz s':>8} {'floor s':>8} {'checked s':>10} "
                f"{'ceiling s':>10} {'vs quetz':>9} {'vs floor':>9} {'vs checked':>11} {'vs ceil.':>9} {'MB/s':>6} "
                f"{'CPU s':>6} {'floor CPU':>10}"
            )
            for kind, megabytes in SIZES:
                # Random payload: no compressor can shrink it, so the file is about the stated size.
                filename, data = BUILDERS[kind]("payload", files={"share/blob": os.urandom(megabytes * 1_000_000 - 60_000)})
                path = tmp / filename
                path.write_bytes(data)
                headers = {**auth, "X-File-Name": filename, "X-File-SHA256": hashlib.sha256(data).hexdigest()}
                channel = CHANNELS[kind]
                uploads, peers, floors, checked, ceilings = [], [], [], [], []
                for _ in range(ROUNDS):
                    uploads.append(timed(lambda: requests.post(f"{server.url}/api/v1/upload/{channel}", data=data, headers=headers, timeout=600), server.pgid))
                    visible = requests.get(f"{server.url}/{channel}/noarch/repodata.json", timeout=30).json()
                    assert visible["packages" if kind == "tar.bz2" else "packages.conda"][filename]["sha256"] == headers["X-File-SHA256"]
                    requests.delete(f"{server.url}/api/v1/delete/{channel}/noarch/{filename}", headers=auth, timeout=60).raise_for_status()
                    # quetz.upload returns once quetz's repodata.json lists the file.
                    peers.append(timed(lambda: quetz.upload("bench", path, timeout=600)))
                    quetz.delete("bench", "noarch", filename)
                    floors.append(timed(lambda: requests.put(f"{floor.url}/", data=data, timeout=600), floor.pgid))
                    checked.append(timed(lambda: requests.put(f"{floor.url}/", params={"sha256": headers["X-File-SHA256"]}, data=data, timeout=600), floor.pgid))
                    ceilings.append(timed(lambda: requests.put(f"{ceiling.url}/", data=data, timeout=600), ceiling.pgid))
                upload, peer, bare, check, read = (statistics.median(s for s, _ in x) for x in (uploads, peers, floors, checked, ceilings))
                cpu, floor_cpu = (statistics.median(c for _, c in x) for x in (uploads, floors))
                print(
                    f"{kind:>9} {len(data) / 1e6:7.1f}M {upload:13.2f} {peer:8.2f} {bare:8.2f} {check:10.2f} {read:10.2f} "
                    f"{upload / peer:8.2f}x {upload / bare:8.2f}x {upload / check:10.2f}x {upload / read:8.2f}x "
                    f"{len(data) / 1e6 / upload:6.1f} {cpu:6.2f} {floor_cpu:10.2f}"
                )


if __name__ == "__main__":
    main()
