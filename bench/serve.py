"""What a read costs: repodata.json (public; private with the key checked on every request, from
the isolate cache after the first; with the key in the path), a 304 revalidation, a shard and a
package file — against nginx serving the same bytes from disk (the practical limit) and quetz
serving the same packages, measured in the same run.

Runs wrk against each; prints requests/s, p50, p99, and the ratios to nginx and to quetz."""

import hashlib
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgpack
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from artifacts import unzstd  # noqa: E402
from harness import ROOT, free_port, running_server  # noqa: E402
from quetz_server import running_quetz  # noqa: E402

DURATION = "8s"
CONNECTIONS = 16
PACKAGES = ROOT / "tests" / "fixtures" / "packages"
SUBDIR = "linux-64"
FLOOR_WORKER = Path(__file__).resolve().parent / "floor"
REPEATS = 1000


def wrk(url: str, headers: dict[str, str] | None = None) -> dict[str, float]:
    args = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{DURATION}", "--latency", url]
    for name, value in (headers or {}).items():
        args += ["-H", f"{name}: {value}"]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non_2xx:
        raise RuntimeError(f"{url}: {non_2xx.group(1)} failed responses")

    def latency_ms(percentile: str) -> float:
        value, unit = re.search(rf"^\s+{percentile}%\s+([\d.]+)(us|ms|s)", out, re.M).groups()
        return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]

    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50": latency_ms("50"),
        "p99": latency_ms("99"),
    }


def nginx(root: Path):
    port = free_port()
    conf = root / "nginx.conf"
    conf.write_text(
        f"""
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log;
daemon off;
events {{}}
http {{
    access_log off;
    server {{ listen 127.0.0.1:{port}; root {root}/www; etag on; }}
}}
"""
    )
    proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(root)], stderr=subprocess.DEVNULL)
    for _ in range(50):
        try:
            requests.get(f"http://127.0.0.1:{port}/", timeout=1)
            break
        except requests.ConnectionError:
            time.sleep(0.1)
    return proc, f"http://127.0.0.1:{port}"


def fixture(name: str) -> Path:
    return next(PACKAGES.glob(name))


def main():
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tmp.chmod(0o755)  # nginx's workers run as another user
        with (
            running_server(tmp / "state") as server,
            running_server(tmp / "floor", worker_dir=FLOOR_WORKER) as floor,
            running_quetz(tmp / "quetz") as quetz,
        ):
            server.admin("user", "create", "bench", "--admin")
            key = server.admin("key", "create", "bench")["key"]
            server.admin("channel", "create", "open", "--owner", "bench")
            server.admin("channel", "create", "closed", "--owner", "bench", "--private")
            quetz.create_channel("open")
            for path in sorted(PACKAGES.glob("*")):
                data = path.read_bytes()
                for channel in ("open", "closed"):
                    requests.post(
                        f"{server.url}/api/v1/upload/{channel}",
                        data=data,
                        headers={
                            "Authorization": f"Bearer {key}",
                            "X-File-Name": path.name,
                            "X-File-SHA256": hashlib.sha256(data).hexdigest(),
                        },
                        timeout=60,
                    ).raise_for_status()
                assert quetz.upload("open", path).status_code == 201

            # nginx serves the very bytes condaflare serves, from disk.
            plain = {"Accept-Encoding": "identity"}
            package = fixture("zlib-1.2.11-h7b6447c_3.tar.bz2").name
            repodata = requests.get(f"{server.url}/open/{SUBDIR}/repodata.json", headers=plain, timeout=10)
            shard = shard_path(f"{server.url}/open/{SUBDIR}", "zlib")
            files = {"repodata.json": repodata.content, package: None, shard: None}
            for name in files:
                files[name] = requests.get(f"{server.url}/open/{SUBDIR}/{name}", headers=plain, timeout=10).content
                (tmp / "www" / "open" / SUBDIR / name).parent.mkdir(parents=True, exist_ok=True)
                (tmp / "www" / "open" / SUBDIR / name).write_bytes(files[name])
                requests.put(f"{floor.url}/open/{SUBDIR}/{name}", data=files[name], timeout=10).raise_for_status()
            quetz_repodata = requests.get(quetz.file_url("open", SUBDIR, "repodata.json"), timeout=10)
            assert package in quetz_repodata.json()["packages"]
            assert requests.get(quetz.file_url("open", SUBDIR, package), timeout=10).content == files[package]

            proc, nginx_url = nginx(tmp)
            try:
                ours = f"{server.url}/open/{SUBDIR}"
                theirs = f"{nginx_url}/open/{SUBDIR}"
                etag = repodata.headers["ETag"]
                nginx_etag = requests.get(f"{theirs}/repodata.json", timeout=5).headers["ETag"]
                quetz_etag = quetz_repodata.headers["ETag"]
                # (what, server, url, headers); quetz serves no shards and answers no 304.
                plan = [
                    ("repodata.json", "nginx", f"{theirs}/repodata.json", plain),
                    ("repodata.json", "quetz", quetz.file_url("open", SUBDIR, "repodata.json"), plain),
                    ("repodata.json", "floor (one R2 get)", f"{floor.url}/open/{SUBDIR}/repodata.json", plain),
                    ("repodata.json", "condaflare", f"{ours}/repodata.json", plain),
                    ("repodata.json", "condaflare, private, Bearer", f"{server.url}/closed/{SUBDIR}/repodata.json", {**plain, "Authorization": f"Bearer {key}"}),
                    ("repodata.json", "condaflare, private, /t/<key>/", f"{server.url}/t/{key}/closed/{SUBDIR}/repodata.json", plain),
                    ("repodata.json 304", "nginx", f"{theirs}/repodata.json", {"If-None-Match": nginx_etag}),
                    ("repodata.json 304", "quetz (answers 200)", quetz.file_url("open", SUBDIR, "repodata.json"), {**plain, "If-None-Match": quetz_etag}),
                    ("repodata.json 304", "condaflare", f"{ours}/repodata.json", {"If-None-Match": etag}),
                    ("a shard", "nginx", f"{theirs}/{shard}", plain),
                    ("a shard", "floor (one R2 get)", f"{floor.url}/open/{SUBDIR}/{shard}", plain),
                    ("a shard", "condaflare", f"{ours}/{shard}", plain),
                    (f"a package ({len(files[package]) // 1000} KB)", "nginx", f"{theirs}/{package}", plain),
                    (f"a package ({len(files[package]) // 1000} KB)", "quetz", quetz.file_url("open", SUBDIR, package), plain),
                    (f"a package ({len(files[package]) // 1000} KB)", "floor (one R2 get)", f"{floor.url}/open/{SUBDIR}/{package}", plain),
                    (f"a package ({len(files[package]) // 1000} KB)", "condaflare", f"{ours}/{package}", plain),
                ]
                rows = [(what, who, wrk(url, headers)) for what, who, url, headers in plan]
                r2 = {name: r2_operations_of_repeats(server, key, f"{ours}/{name}") for name in ("repodata.json", shard, package)}
            finally:
                proc.terminate()
                proc.wait()

        print(
            f"wrk -t2 -c{CONNECTIONS} -d{DURATION}; one workerd (wrangler dev), one nginx worker, one quetz "
            f"(uvicorn) worker on this machine; repodata.json {len(files['repodata.json'])} bytes "
            f"(quetz's own: {len(quetz_repodata.content)})"
        )
        print(f"{'':20} {'server':31} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'vs nginx':>9} {'vs quetz':>9}")
        for what, who, r in rows:
            baseline = next(x for w, s, x in rows if w == what and s == "nginx")
            quetz_row = next((x for w, s, x in rows if w == what and s.startswith("quetz")), None)
            versus_quetz = f"{r['rps'] / quetz_row['rps']:8.3g}x" if quetz_row else f"{'-':>9}"
            print(
                f"{what:20} {who:31} {r['rps']:9.0f} {r['p50']:8.2f} {r['p99']:8.2f} "
                f"{r['rps'] / baseline['rps']:8.3g}x {versus_quetz}"
            )

        print(f"R2 operations of {REPEATS} repeated GETs (one after another), from the Worker isolate's counter:")
        for name, counts in r2.items():
            print(f"  {name:60} {counts}")


def r2_operations(server, key: str) -> dict[str, int]:
    stats = requests.get(f"{server.url}/api/v1/channels/open/stats", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    stats.raise_for_status()
    return stats.json()["r2_operations"]


def r2_operations_of_repeats(server, key: str, url: str) -> dict[str, int]:
    """The R2 operations the Worker's isolate counted over REPEATS GETs of `url`."""
    before = r2_operations(server, key)
    with requests.Session() as session:
        for _ in range(REPEATS):
            session.get(url, headers={"Accept-Encoding": "identity"}, timeout=10).raise_for_status()
    after = r2_operations(server, key)
    return {kind: after.get(kind, 0) - before.get(kind, 0) for kind in after if after.get(kind, 0) != before.get(kind, 0)}


def shard_path(subdir_url: str, name: str) -> str:
    """The path, under the subdir, of a package name's shard, as the subdir's shard index
    names it."""
    index = msgpack.unpackb(unzstd(requests.get(f"{subdir_url}/repodata_shards.msgpack.zst", timeout=60).content))
    return f"shards/{index['shards'][name].hex()}.msgpack.zst"


if __name__ == "__main__":
    main()
