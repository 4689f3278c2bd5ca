"""`npm run admin -- mirror sync`: a mirror of a real upstream (packages built here, indexed by
py-rattler, served by http.server on 127.0.0.1) keeps exactly the files a solve of the specs
needs, each checked, and py-rattler installs them through the mirror once the upstream has
stopped. Bad input (an unknown or plain channel, an unsolvable or malformed spec, no key or a
wrong one) keeps nothing; a file the upstream serves wrong is reported and the others are kept."""

import hashlib
import json
import os
import subprocess

import pytest
import requests

from conftest import PACKAGES, unique
from harness import ROOT
from pkgbuild import build_conda, build_tar_bz2
from test_mirror import Upstream, create_mirror, index, rattler_install

# What a solve of `sync-app` for linux-64 needs: the newest app, the lib it needs (noarch) and
# the lib's base; the older app and lib, and zlib, are upstream too but not needed.
NEEDED = {"linux-64/sync-app-2.0-0.conda", "noarch/sync-lib-1.1-0.tar.bz2", "linux-64/sync-base-0.5-0.tar.bz2"}


@pytest.fixture
def upstream(tmp_path):
    packages = {
        "linux-64": [
            build_conda("sync-app", version="2.0", subdir="linux-64", depends=["sync-lib >=1.1"], files={"share/sync-app/2": b"app 2\n"}),
            # Needs a virtual package (py-rattler's solve in rattler_client.py assumes none).
            build_conda("sync-app", version="1.0", subdir="linux-64", depends=["sync-lib", "__glibc >=2.17"], files={"share/sync-app/1": b"app 1\n"}),
            build_tar_bz2("sync-base", version="0.5", subdir="linux-64", files={"share/sync-base/0.5": b"base\n"}),
        ],
        "noarch": [
            build_tar_bz2("sync-lib", version="1.1", depends=["sync-base"], files={"share/sync-lib/1.1": b"lib 1.1\n"}),
            build_tar_bz2("sync-lib", version="1.0", depends=["sync-base"], files={"share/sync-lib/1.0": b"lib 1.0\n"}),
        ],
    }
    channel = tmp_path / "upstream" / "channel"
    for subdir, built in packages.items():
        (channel / subdir).mkdir(parents=True)
        for filename, data in built:
            (channel / subdir / filename).write_bytes(data)
    (channel / "linux-64" / "zlib-1.2.11-h7b6447c_3.conda").write_bytes((PACKAGES / "zlib-1.2.11-h7b6447c_3.conda").read_bytes())
    index(channel)
    served = Upstream(tmp_path / "upstream")
    yield served
    served.stop()


def mirror_sync(server, key: str | None, *args: str) -> tuple[int, dict | None, str]:
    """Runs `mirror sync` through the admin command against the server, with `key` in
    CONDAFLARE_API_KEY; answers the exit code, the JSON printed (None if none) and stderr."""
    env = {**os.environ, "CONDAFLARE_API_KEY": key or ""}
    out = subprocess.run(
        ["node", str(ROOT / "scripts" / "admin.mjs"), "--json", "mirror", "sync", *args, "--url", server.url],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=300,
    )
    return out.returncode, json.loads(out.stdout) if out.stdout.strip() else None, out.stderr.strip()


def mirror_sync_text(server, key: str, *args: str) -> str:
    """What `mirror sync` prints without --json."""
    env = {**os.environ, "CONDAFLARE_API_KEY": key}
    command = ["node", str(ROOT / "scripts" / "admin.mjs"), "mirror", "sync", *args, "--url", server.url]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300).stdout


def kept_packages(server, channel: str) -> dict[str, int]:
    """The package files R2 holds for the channel (its index files aside), with their sizes."""
    prefix = f"{channel}/"
    return {
        key[len(prefix):]: size
        for key, size in server.r2_keys().items()
        if key.startswith(prefix) and key.endswith((".conda", ".tar.bz2"))
    }


def upstream_bytes(upstream: Upstream, path: str) -> bytes:
    return (upstream.root / "channel" / path).read_bytes()


def test_sync_keeps_exactly_what_the_solve_needs_and_it_installs_with_the_upstream_stopped(server, owner, upstream, tmp_path):
    name = create_mirror(server, owner, {"url": upstream.url})
    code, synced, stderr = mirror_sync(server, owner.key, name, "sync-app", "--subdir", "linux-64")
    assert code == 0, stderr
    assert {f"{f['subdir']}/{f['filename']}" for f in synced["files"]} == NEEDED
    assert {f["status"] for f in synced["files"]} == {"fetched"}
    assert (synced["fetched"], synced["kept"], synced["failed"]) == (3, 0, 0)
    assert synced["targets"] == [{"subdir": "linux-64", "virtual_packages": ["__unix=0=0", "__linux=4.18=0", "__glibc=2.28=0"]}]
    sizes = {path: len(upstream_bytes(upstream, path)) for path in NEEDED}
    assert synced["bytes"] == sum(sizes.values())
    for file in synced["files"]:
        assert file["sha256"] == hashlib.sha256(upstream_bytes(upstream, f"{file['subdir']}/{file['filename']}")).hexdigest()
    assert kept_packages(server, name) == sizes

    # Again: everything is already kept, and nothing more is.
    code, again, stderr = mirror_sync(server, owner.key, name, "sync-app", "--subdir", "linux-64")
    assert code == 0, stderr
    assert (again["fetched"], again["kept"], again["failed"]) == (0, 3, 0)
    assert kept_packages(server, name) == sizes

    upstream.stop()
    installed = rattler_install(f"{server.url}/{name}", tmp_path / "env", tmp_path / "cache", ["sync-app"])
    assert "error" not in installed, installed
    by_name = {record["name"]: record for record in installed["records"]}
    assert {name: record["version"] for name, record in by_name.items()} == {"sync-app": "2.0", "sync-lib": "1.1", "sync-base": "0.5"}
    for record in by_name.values():
        path = "/".join(record["url"].rsplit("/", 2)[1:])
        assert record["url"] == f"{server.url}/{name}/{path}"
        served = requests.get(record["url"], timeout=30).content
        assert served == upstream_bytes(upstream, path)
        assert hashlib.sha256(served).hexdigest() == record["sha256"]
    assert (tmp_path / "env" / "share" / "sync-app" / "2").read_bytes() == b"app 2\n"


def test_bad_input_keeps_nothing_and_a_wrong_file_is_reported_while_the_others_are_kept(server, owner, upstream):
    name = create_mirror(server, owner, {"url": upstream.url})
    plain = unique("plain")
    assert server.api("POST", "channels", owner.key, json={"name": plain}).status_code == 201
    cases = [
        (owner.key, [unique("nowhere"), "sync-app", "--subdir", "linux-64"], 2, "no channel named"),
        (owner.key, [plain, "sync-app", "--subdir", "linux-64"], 2, "no mirror channel"),
        (owner.key, [name, "sync-app >=3", "--subdir", "linux-64"], 1, "cannot solve for linux-64"),
        # The virtual packages assumed decide too: glibc 2.12 is older than app 1.0 needs.
        (owner.key, [name, "sync-app <2", "--subdir", "linux-64", "--virtual-package", "__glibc=2.12"], 1, "__glibc"),
        (owner.key, [name, "sync-app >=>1", "--subdir", "linux-64"], 2, "'sync-app >=>1' is not a match spec"),
        (owner.key, [name, "sync-app"], 2, "--subdir"),
        (owner.key, [name, "sync-app", "--subdir", "linux64"], 2, "'linux64' is no platform subdir"),
        (None, [name, "sync-app", "--subdir", "linux-64"], 2, "CONDAFLARE_API_KEY"),
        ("cf_not-a-key", [name, "sync-app", "--subdir", "linux-64"], 1, "error: "),
    ]
    for key, args, code, fault in cases:
        got, printed, stderr = mirror_sync(server, key, *args)
        assert (got, printed) == (code, None), (args, stderr)
        assert fault in stderr, (args, stderr)
    assert kept_packages(server, name) == {}
    assert kept_packages(server, plain) == {}

    # The upstream now serves other bytes, of the same size, for the lib: that file fails,
    # the others are still fetched and kept.
    lib = upstream.root / "channel" / "noarch" / "sync-lib-1.1-0.tar.bz2"
    good = lib.read_bytes()
    lib.write_bytes(bytes(len(good)))
    code, synced, stderr = mirror_sync(server, owner.key, name, "sync-app", "--subdir", "linux-64")
    assert code == 1, stderr
    status = {f"{f['subdir']}/{f['filename']}": f["status"] for f in synced["files"]}
    assert status == {path: "failed" if path.startswith("noarch/") else "fetched" for path in NEEDED}
    failed = [f for f in synced["files"] if f["status"] == "failed"]
    assert "502" in failed[0]["error"], failed
    assert "failed: noarch/sync-lib-1.1-0.tar.bz2" in mirror_sync_text(server, owner.key, name, "sync-app", "--subdir", "linux-64")
    assert set(kept_packages(server, name)) == NEEDED - {"noarch/sync-lib-1.1-0.tar.bz2"}
