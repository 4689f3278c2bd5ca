"""The baselines the benches measure condaflare against, in the same run, and how they measure.

- the floor (`bench/floor/`): a Worker of its own on the same local runtime that does one R2 get
  (serve) or one streamed R2 put (publish) of the same bytes and nothing else: the least any
  Worker storing packages in R2 can do;
- the floor under condaflare's own `[assets]` block (the web app's Static Assets and their
  routing rules, from wrangler.toml): what the local runtime's asset router, which then runs in
  front of every Worker request, costs the floor;
- the runtime's ceiling (`bench/trivial/`): a Worker that touches no storage, answering a GET
  with as many bytes from memory and a PUT by reading the body to its end: what the local
  runtime itself costs per request;
- nginx serving the same bytes from disk (the machine's limit) and quetz serving the same
  packages (a peer), started by the benches that use them.

Every figure is the median of ROUNDS (env BENCH_ROUNDS, default 3) rounds, and the rounds are
interleaved (round 1 of every target, then round 2 …), so that a change in the machine's load
touches every target alike. CPU per request is read from /proc: the user and system time of
every process of a server's process group (wrangler's node and its workerd processes) before
and after a run, divided by the requests it answered; neither workerd nor wrangler dev reports
CPU time per request locally."""

import json
import os
import re
import statistics
import subprocess
import sys
import time
import tomllib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
from harness import WORKER_DIR, Server, free_port, running_server  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
WRK_DURATION = os.environ.get("BENCH_WRK_DURATION", "8s")
WRK_CONNECTIONS = 16
FLOOR_WORKER = Path(__file__).resolve().parent / "floor"
TRIVIAL_WORKER = Path(__file__).resolve().parent / "trivial"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def load() -> str:
    """The machine's load averages (1, 5, 15 min), to print next to every table."""
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def cpu_seconds(pgid: int) -> float:
    """User plus system CPU time of every live process in a process group, and of the
    children they waited for."""
    total = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the command's name: state, ppid, pgrp (2), …, utime, stime, cutime, cstime (11-14).
        if int(fields[2]) == pgid:
            total += sum(int(x) for x in fields[11:15])
    return total / CLOCK_TICKS


def wrk(url: str, headers: dict[str, str] | None = None, pgid: int | None = None) -> dict[str, float]:
    """One wrk run (2 threads, WRK_CONNECTIONS connections, WRK_DURATION): requests/s, p50 and
    p99 in ms, and, given the server's process group, its CPU ms per request."""
    args = ["wrk", "-t2", f"-c{WRK_CONNECTIONS}", f"-d{WRK_DURATION}", "--latency", url]
    for name, value in (headers or {}).items():
        args += ["-H", f"{name}: {value}"]
    cpu_before = cpu_seconds(pgid) if pgid else 0.0
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    cpu = cpu_seconds(pgid) - cpu_before if pgid else None
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non_2xx:
        raise RuntimeError(f"{url}: {non_2xx.group(1)} failed responses")

    def latency_ms(percentile: str) -> float:
        value, unit = re.search(rf"^\s+{percentile}%\s+([\d.]+)(us|ms|s)", out, re.M).groups()
        return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]

    answered = int(re.search(r"(\d+) requests in", out).group(1))
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50": latency_ms("50"),
        "p99": latency_ms("99"),
        "cpu_ms": cpu * 1000 / answered if cpu is not None and answered else None,
    }


@dataclass
class Load:
    """One row of a serve table: what is read, from which server, how."""

    what: str
    who: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    pgid: int | None = None


def measure(plan: list[Load], rounds: int = ROUNDS) -> list[tuple[Load, dict[str, float]]]:
    """Runs wrk on every row of the plan, `rounds` times interleaved; the median of each
    figure per row."""
    runs: list[list[dict[str, float]]] = [[] for _ in plan]
    for _ in range(rounds):
        for row, target in zip(runs, plan):
            row.append(wrk(target.url, target.headers, target.pgid))
    return [
        (target, {name: median([r[name] for r in row]) for name in row[0]})
        for target, row in zip(plan, runs)
    ]


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


# The baselines' names in the tables, each row's ratio taken to the row of the same `what`.
FLOOR = "floor (one R2 get)"
FLOOR_WITH_ASSETS = "floor + condaflare's [assets]"
CEILING = "runtime ceiling (no storage)"
NGINX = "nginx"
QUETZ = "quetz"


def print_serve_table(rows: list[tuple[Load, dict[str, float]]], rounds: int = ROUNDS) -> None:
    """Requests/s, p50, p99, CPU ms per request, and each row's requests/s as a ratio to the
    floor, the runtime's ceiling, nginx and quetz of the same `what` (above 1: faster)."""
    print(f"wrk -t2 -c{WRK_CONNECTIONS} -d{WRK_DURATION}, medians of {rounds} interleaved rounds; {load()}")
    print("ratios: this row's req/s over the baseline's (1.0 = as fast; the floor and ceiling are Workers on the same runtime)")
    baselines = {FLOOR: "/floor", FLOOR_WITH_ASSETS: "/f+assets", CEILING: "/ceiling", NGINX: "/nginx", QUETZ: "/quetz"}
    header = f"{'':22} {'server':31} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'CPU ms':>7}"
    print(header + "".join(f" {label:>9}" for label in baselines.values()))
    for target, r in rows:
        cpu = f"{r['cpu_ms']:7.2f}" if r["cpu_ms"] is not None else f"{'-':>7}"
        ratios = ""
        for name in baselines:
            base = next((x for t, x in rows if t.what == target.what and t.who.startswith(name)), None)
            ratios += f" {r['rps'] / base['rps']:8.3g}x" if base else f" {'-':>9}"
        print(f"{target.what:22} {target.who:31} {r['rps']:8.0f} {r['p50']:7.2f} {r['p99']:7.2f} {cpu}{ratios}")
    print("CPU ms: CPU time of the server's processes (wrangler's node and workerd) per request; - for nginx and quetz")


@contextmanager
def nginx(root: Path):
    """nginx (one worker) serving root/www on a free port; yields its URL."""
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
    try:
        for _ in range(50):
            try:
                requests.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait()


class FloorWorker:
    """The floor Worker: `put_object` stores bytes it then serves at /<key> with one R2 get;
    PUT / streams a body into R2 and deletes it (the publish floor)."""

    def __init__(self, server: Server):
        self.server = server
        self.url = server.url
        self.pgid = server.pgid

    def put_object(self, key: str, data: bytes) -> None:
        requests.put(f"{self.url}/{key}", data=data, timeout=60).raise_for_status()


@contextmanager
def floor_worker(state: Path):
    with running_server(state, worker_dir=FLOOR_WORKER) as server:
        yield FloorWorker(server)


@contextmanager
def floor_worker_with_assets(state: Path):
    """The floor Worker under the [assets] block of condaflare's wrangler.toml (its directory
    made absolute), so the local runtime puts the same asset router in front of it."""
    assets = tomllib.loads((WORKER_DIR / "wrangler.toml").read_text())["assets"]
    assets["directory"] = str(WORKER_DIR / assets["directory"])
    worker_dir = state.parent / f"{state.name}-worker"
    worker_dir.mkdir(parents=True, exist_ok=True)
    floor_config = (FLOOR_WORKER / "wrangler.toml").read_text()
    relative_main = 'main = "worker.js"'
    if relative_main not in floor_config:
        raise RuntimeError(f"bench/floor/wrangler.toml no longer says {relative_main}")
    floor_config = floor_config.replace(relative_main, f"main = {json.dumps(str(FLOOR_WORKER / 'worker.js'))}")
    block = "\n".join(f"{name} = {json.dumps(value)}" for name, value in assets.items())
    (worker_dir / "wrangler.toml").write_text(f"{floor_config}\n[assets]\n{block}\n")
    with running_server(state, worker_dir=worker_dir) as server:
        yield FloorWorker(server)


@contextmanager
def trivial_worker(state: Path):
    """The runtime's ceiling: GET /?bytes=N answers N bytes from memory; PUT reads the body."""
    with running_server(state, worker_dir=TRIVIAL_WORKER) as server:
        yield server


def ceiling_url(server: Server, size: int) -> str:
    return f"{server.url}/?bytes={size}"


def ceiling_own_url(server: Server) -> str:
    """The runtime ceiling's own socket behind wrangler dev's proxy (as Server.worker_address
    finds condaflare's): the one listening socket of its workerd processes, other than the
    public port, that answers `?bytes=3` with 3 bytes."""
    inodes = set()
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and os.getpgid(int(proc.name)) == server.pgid and (proc / "comm").read_text().strip() == "workerd":
                inodes.update(os.readlink(fd)[8:-1] for fd in (proc / "fd").iterdir() if os.readlink(fd).startswith("socket:["))
        except OSError:
            continue
    public = int(server.url.rsplit(":", 1)[1])
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        port = int(fields[1].split(":")[1], 16)
        if fields[3] != "0A" or fields[9] not in inodes or port == public:  # 0A: LISTEN
            continue
        try:
            if requests.get(f"http://127.0.0.1:{port}/?bytes=3", timeout=5).content == bytes(3):
                return f"http://127.0.0.1:{port}"
        except requests.RequestException:
            continue
    raise RuntimeError("the runtime ceiling's own socket was not found")


def timed(call, pgid: int | None = None) -> tuple[float, float | None]:
    """Seconds a request takes (raising on an error status), and the CPU seconds the server's
    process group spent meanwhile."""
    cpu_before = cpu_seconds(pgid) if pgid else 0.0
    started = time.perf_counter()
    response = call()
    elapsed = time.perf_counter() - started
    if response.status_code >= 300:
        raise RuntimeError(f"{response.status_code}: {response.text[:200]}")
    return elapsed, (cpu_seconds(pgid) - cpu_before if pgid else None)
