"""What a read costs: repodata.json (public; private with the key checked on every request, from
the isolate cache after the first; with the key in the path), a 304 revalidation, a shard and a
package file — against the baselines of bench/baselines.py, measured in the same run: the floor
Worker reading the same bytes with one R2 get (alone, and under condaflare's [assets] block, which
puts the local runtime's asset router in front of it), the runtime's ceiling (a Worker answering as many
bytes from memory), nginx serving the same bytes from disk and quetz serving the same packages.

Runs wrk against each, medians of BENCH_ROUNDS interleaved rounds; prints requests/s, p50, p99,
CPU ms per request and the ratios to each baseline."""

import hashlib
import sys
import tempfile
from pathlib import Path

import msgpack
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from artifacts import unzstd  # noqa: E402
from baselines import (  # noqa: E402
    CEILING,
    FLOOR,
    FLOOR_WITH_ASSETS,
    NGINX,
    QUETZ,
    Load,
    ceiling_own_url,
    ceiling_url,
    floor_worker,
    floor_worker_with_assets,
    measure,
    nginx,
    print_serve_table,
    trivial_worker,
)
from harness import ROOT, running_server  # noqa: E402
from quetz_server import running_quetz  # noqa: E402

PACKAGES = ROOT / "tests" / "fixtures" / "packages"
SUBDIR = "linux-64"
REPEATS = 1000


def fixture(name: str) -> Path:
    return next(PACKAGES.glob(name))


def main():
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tmp.chmod(0o755)  # nginx's workers run as another user
        with (
            running_server(tmp / "state") as server,
            floor_worker(tmp / "floor") as floor,
            floor_worker_with_assets(tmp / "floor-with-assets") as floor_with_assets,
            trivial_worker(tmp / "trivial") as ceiling,
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
                floor.put_object(f"open/{SUBDIR}/{name}", files[name])
                floor_with_assets.put_object(f"open/{SUBDIR}/{name}", files[name])
            quetz_repodata = requests.get(quetz.file_url("open", SUBDIR, "repodata.json"), timeout=10)
            assert package in quetz_repodata.json()["packages"]
            assert requests.get(quetz.file_url("open", SUBDIR, package), timeout=10).content == files[package]

            with nginx(tmp) as nginx_url:
                ours = f"{server.url}/open/{SUBDIR}"
                theirs = f"{nginx_url}/open/{SUBDIR}"
                bare = f"{floor.url}/open/{SUBDIR}"
                routed = f"{floor_with_assets.url}/open/{SUBDIR}"
                etag = repodata.headers["ETag"]
                nginx_etag = requests.get(f"{theirs}/repodata.json", timeout=5).headers["ETag"]
                quetz_etag = quetz_repodata.headers["ETag"]
                ceiling_load = dict(who=CEILING, headers=plain, pgid=ceiling.pgid)
                # The same Worker reached on its own socket, behind wrangler dev's proxy: what a
                # thinner local runtime than `wrangler dev` could give at most.
                host, port = server.worker_address()
                direct = f"http://{host}:{port}/open/{SUBDIR}"
                package_row = f"a package ({len(files[package]) // 1000} KB)"
                # quetz serves no shards and answers no 304; the floor and the ceiling answer no 304 either.
                plan = [
                    Load("repodata.json", FLOOR, f"{bare}/repodata.json", plain, floor.pgid),
                    Load("repodata.json", FLOOR_WITH_ASSETS, f"{routed}/repodata.json", plain, floor_with_assets.pgid),
                    Load("repodata.json", url=ceiling_url(ceiling, len(files["repodata.json"])), **ceiling_load),
                    Load("repodata.json", NGINX, f"{theirs}/repodata.json", plain),
                    Load("repodata.json", QUETZ, quetz.file_url("open", SUBDIR, "repodata.json"), plain),
                    Load("repodata.json", "condaflare", f"{ours}/repodata.json", plain, server.pgid),
                    Load("repodata.json", "condaflare, no wrangler proxy", f"{direct}/repodata.json", plain, server.pgid),
                    Load("repodata.json", "ceiling, no wrangler proxy", f"{ceiling_own_url(ceiling)}/?bytes={len(files['repodata.json'])}", plain, ceiling.pgid),
                    Load("repodata.json", "condaflare, private, Bearer", f"{server.url}/closed/{SUBDIR}/repodata.json", {**plain, "Authorization": f"Bearer {key}"}, server.pgid),
                    Load("repodata.json", "condaflare, private, /t/<key>/", f"{server.url}/t/{key}/closed/{SUBDIR}/repodata.json", plain, server.pgid),
                    Load("repodata.json 304", NGINX, f"{theirs}/repodata.json", {"If-None-Match": nginx_etag}),
                    Load("repodata.json 304", f"{QUETZ} (answers 200)", quetz.file_url("open", SUBDIR, "repodata.json"), {**plain, "If-None-Match": quetz_etag}),
                    Load("repodata.json 304", "condaflare", f"{ours}/repodata.json", {"If-None-Match": etag}, server.pgid),
                    Load("a shard", FLOOR, f"{bare}/{shard}", plain, floor.pgid),
                    Load("a shard", FLOOR_WITH_ASSETS, f"{routed}/{shard}", plain, floor_with_assets.pgid),
                    Load("a shard", url=ceiling_url(ceiling, len(files[shard])), **ceiling_load),
                    Load("a shard", NGINX, f"{theirs}/{shard}", plain),
                    Load("a shard", "condaflare", f"{ours}/{shard}", plain, server.pgid),
                    Load(package_row, FLOOR, f"{bare}/{package}", plain, floor.pgid),
                    Load(package_row, FLOOR_WITH_ASSETS, f"{routed}/{package}", plain, floor_with_assets.pgid),
                    Load(package_row, url=ceiling_url(ceiling, len(files[package])), **ceiling_load),
                    Load(package_row, NGINX, f"{theirs}/{package}", plain),
                    Load(package_row, QUETZ, quetz.file_url("open", SUBDIR, package), plain),
                    Load(package_row, "condaflare", f"{ours}/{package}", plain, server.pgid),
                    Load(package_row, "condaflare, no wrangler proxy", f"{direct}/{package}", plain, server.pgid),
                ]
                rows = measure(plan)
                r2 = {name: r2_operations_of_repeats(server, key, f"{ours}/{name}") for name in ("repodata.json", shard, package)}

        print(
            f"one workerd per Worker (wrangler dev), one nginx worker, one quetz (uvicorn) worker on this machine; "
            f"repodata.json {len(files['repodata.json'])} bytes (quetz's own: {len(quetz_repodata.content)})"
        )
        print_serve_table(rows)

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
