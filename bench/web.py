"""The web app on a channel of 100,000 records: how long the channel page's first screen and a
search take, next to GET repodata.json of the same channel (the floor the issue names) and the
bench's usual baselines (the Worker's cheapest answer, nginx serving the same shell page).

1. Generates and imports scale's channel (SCALE_PACKAGES records over SCALE_NAMES names, one
   subdir; see scale.py), unless WEB_STATE names a state directory that holds it already.
2. Times, each on a new connection, median and worst of WEB_RUNS:
   - the shell page (GET /<channel>, Accept: text/html) and every static file of the web app
     (6 at a time, as a browser loads them; a browser that visited before has them cached);
   - the API calls the channel page makes: the session, the channel, the first page of names;
   - a prefix search and a substring search (the slow kind: it scans every name);
   - the first screen: all of the above in a row, as a browser with nothing cached would.

Prints every figure; the target is 300 ms for the first screen and for each search."""

import os
import statistics
from concurrent.futures import ThreadPoolExecutor
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import ROOT, running_server  # noqa: E402
from scale import CHANNEL, NAMES, PACKAGES, SUBDIR, write_channel  # noqa: E402
from baselines import nginx  # noqa: E402

RUNS = int(os.environ.get("WEB_RUNS", 7))
# How many connections a browser opens to one host at once.
BROWSER_CONNECTIONS = 6
TARGET_S = 0.300
STATIC = sorted(
    "/" + str(path.relative_to(ROOT / "web" / "public"))
    for path in (ROOT / "web" / "public" / "-").rglob("*")
    if path.suffix in (".js", ".css", ".svg")
)


def timed_get(url: str, headers: dict | None = None, cookies: dict | None = None) -> float:
    started = time.perf_counter()
    response = requests.get(url, headers=headers, cookies=cookies, timeout=300)
    response.content  # read whole
    seconds = time.perf_counter() - started
    assert response.status_code == 200, (url, response.status_code, response.text[:200])
    return seconds


def all_of(urls: list[str]) -> float:
    """Seconds until every one of `urls` is fetched, BROWSER_CONNECTIONS at a time."""
    started = time.perf_counter()
    with ThreadPoolExecutor(BROWSER_CONNECTIONS) as pool:
        list(pool.map(timed_get, urls))
    return time.perf_counter() - started


def measure(label: str, call) -> list[float]:
    runs = [call() for _ in range(RUNS)]
    print(f"{label:52} {statistics.median(runs) * 1000:9.1f} {max(runs) * 1000:9.1f}")
    return runs


def main():
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tmp.chmod(0o755)  # nginx's workers run as another user
        state = Path(os.environ["WEB_STATE"]) if os.environ.get("WEB_STATE") else tmp / "state"
        fresh = not (state / "v3").exists()
        with running_server(state, {"MAX_UPLOAD_BYTES": str(100 * 1024 * 1024)}) as server:
            if fresh:
                channel_dir = tmp / "channel"
                write_channel(channel_dir)
                server.admin("user", "create", "bench", "--admin")
            key = server.admin("key", "create", "bench")["key"]
            if fresh:
                server.admin("channel", "create", CHANNEL, "--owner", "bench")
                started = time.perf_counter()
                imported = server.admin("import", CHANNEL, str(channel_dir), "--url", server.url, env={"CONDAFLARE_API_KEY": key})
                assert imported["created"] == PACKAGES, {k: imported[k] for k in ("created", "unchanged", "failed")}
                print(f"imported {PACKAGES} packages ({NAMES} names) in {time.perf_counter() - started:.0f} s")
            session = requests.post(f"{server.url}/api/v1/session", json={"key": key}, timeout=30)
            cookies = {"condaflare_session": session.cookies["condaflare_session"]}
            api = f"{server.url}/api/v1"
            html = {"Accept": "text/html"}
            first_page = requests.get(f"{api}/channels/{CHANNEL}/packages", timeout=300).json()
            assert first_page["total"] == NAMES and len(first_page["packages"]) == 50, first_page["total"]
            prefix_q, substring_q = f"scale-{NAMES // 10 - 1:04d}", "999"
            prefix = requests.get(f"{api}/channels/{CHANNEL}/packages", params={"q": prefix_q}, timeout=300).json()
            substring = requests.get(f"{api}/channels/{CHANNEL}/packages", params={"q": substring_q}, timeout=300).json()
            print(
                f"channel: {first_page['total']} names; search '{prefix_q}': {prefix['total']} names, "
                f"'{substring_q}': {substring['total']} names (prefixes first: {[p['name'] for p in substring['packages'][:3]]}...)"
            )

            print(f"{'on a new connection each (ms)':52} {'median':>9} {'worst':>9}")
            shell = measure("shell page GET /<channel> (text/html)", lambda: timed_get(f"{server.url}/{CHANNEL}", html, cookies))
            static = measure(
                f"static files ({len(STATIC)}, {BROWSER_CONNECTIONS} at a time, as a browser)",
                lambda: all_of([f"{server.url}{path}" for path in STATIC]),
            )
            session_call = measure("GET /api/v1/session", lambda: timed_get(f"{api}/session", cookies=cookies))
            channel_call = measure("GET /api/v1/channels/<c>", lambda: timed_get(f"{api}/channels/{CHANNEL}", cookies=cookies))
            page = measure(
                "GET .../packages (first page, 50 names)",
                lambda: timed_get(f"{api}/channels/{CHANNEL}/packages?limit=50", cookies=cookies),
            )
            cursor = first_page["next_cursor"]
            measure(
                "GET .../packages (a later page, by cursor)",
                lambda: timed_get(f"{api}/channels/{CHANNEL}/packages?limit=50&cursor={cursor}", cookies=cookies),
            )
            first_screen = [sum(parts) for parts in zip(shell, static, session_call, channel_call, page)]
            print(f"{'first screen (the five above, in a row)':52} {statistics.median(first_screen) * 1000:9.1f} {max(first_screen) * 1000:9.1f}")
            searches = {}
            for label, q in (("prefix", prefix_q), ("substring", substring_q)):
                searches[label] = measure(
                    f"search, {label} (q={q})",
                    lambda q=q: timed_get(f"{api}/channels/{CHANNEL}/packages?q={q}", cookies=cookies),
                )
            measure("baseline: GET /api/v1/server (the Worker's least work)", lambda: timed_get(f"{api}/server"))
            measure(f"floor: GET /{CHANNEL}/{SUBDIR}/repodata.json", lambda: timed_get(f"{server.url}/{CHANNEL}/{SUBDIR}/repodata.json"))

            (tmp / "www" / "-").mkdir(parents=True)
            (tmp / "www" / "-" / "shell.html").write_bytes((ROOT / "web" / "public" / "-" / "shell.html").read_bytes())
            with nginx(tmp) as nginx_url:
                measure("baseline: nginx serving shell.html", lambda: timed_get(f"{nginx_url}/-/shell.html"))

            verdicts = {
                "first screen": statistics.median(first_screen),
                **{f"search, {label}": statistics.median(runs) for label, runs in searches.items()},
            }
            for label, seconds in verdicts.items():
                print(f"{label}: {seconds * 1000:.0f} ms, {'within' if seconds <= TARGET_S else 'OVER'} the {TARGET_S * 1000:.0f} ms target")


if __name__ == "__main__":
    main()
