"""What a read costs: repodata.json of a public channel, of a private channel (key checked on
every request, from the isolate cache after the first), with the key in the path, and a 304
revalidation — against nginx serving the same file from disk, measured in the same run.

Runs wrk against the local Worker (wrangler dev) and a local nginx; prints requests/s, p50,
p99, and each figure's ratio to nginx."""

import hashlib
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
from harness import ROOT, free_port, running_server  # noqa: E402

DURATION = "8s"
CONNECTIONS = 16
PACKAGES = ROOT / "tests" / "fixtures" / "packages"


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


def main():
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tmp.chmod(0o755)  # nginx's workers run as another user
        with running_server(tmp / "state") as server:
            server.admin("user", "create", "bench")
            key = server.admin("key", "create", "bench")["key"]
            server.admin("channel", "create", "open", "--owner", "bench")
            server.admin("channel", "create", "closed", "--owner", "bench", "--private")
            for channel in ("open", "closed"):
                for path in sorted(PACKAGES.glob("*")):
                    data = path.read_bytes()
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

            repodata = requests.get(f"{server.url}/open/linux-64/repodata.json", headers={"Accept-Encoding": "identity"}, timeout=10)
            www = tmp / "www" / "open" / "linux-64"
            www.mkdir(parents=True)
            (www / "repodata.json").write_bytes(repodata.content)
            etag = repodata.headers["ETag"]
            plain = {"Accept-Encoding": "identity"}

            proc, nginx_url = nginx(tmp)
            try:
                nginx_etag = requests.get(f"{nginx_url}/open/linux-64/repodata.json", timeout=5).headers["ETag"]
                rows = [
                    ("nginx: repodata.json (baseline)", wrk(f"{nginx_url}/open/linux-64/repodata.json", plain)),
                    ("nginx: 304 revalidation", wrk(f"{nginx_url}/open/linux-64/repodata.json", {"If-None-Match": nginx_etag})),
                    ("public repodata.json", wrk(f"{server.url}/open/linux-64/repodata.json", plain)),
                    ("public 304 revalidation", wrk(f"{server.url}/open/linux-64/repodata.json", {"If-None-Match": etag})),
                    ("private repodata.json, Bearer", wrk(f"{server.url}/closed/linux-64/repodata.json", {**plain, "Authorization": f"Bearer {key}"})),
                    ("private repodata.json, /t/<key>/", wrk(f"{server.url}/t/{key}/closed/linux-64/repodata.json", plain)),
                ]
            finally:
                proc.terminate()
                proc.wait()

        baseline = rows[0][1]
        public = rows[2][1]
        print(f"{len(repodata.content)} bytes of repodata.json, wrk -t2 -c{CONNECTIONS} -d{DURATION}, one workerd and one nginx worker on this machine")
        print(f"{'':38} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'vs nginx':>9} {'vs public':>10}")
        for label, r in rows:
            print(
                f"{label:38} {r['rps']:9.0f} {r['p50']:8.2f} {r['p99']:8.2f} "
                f"{r['rps'] / baseline['rps']:8.2f}x {r['rps'] / public['rps']:9.2f}x"
            )


if __name__ == "__main__":
    main()
