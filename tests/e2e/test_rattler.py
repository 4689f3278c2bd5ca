"""A real conda client against the running Worker: py-rattler fetches the channel, solves and
installs into a prefix, and the installed files are checked byte for byte."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PACKAGES, sha256_of, unique, upload_raw
from pkgbuild import build_tar_bz2

CLIENT = Path(__file__).with_name("rattler_client.py")


def rattler(mode: str, url: str, prefix: Path, cache: Path, specs: list[str], platform: str = "linux-64", auth_file: Path | None = None) -> dict:
    env = dict(os.environ)
    if auth_file is not None:
        env["RATTLER_AUTH_FILE"] = str(auth_file)
    out = subprocess.run(
        [sys.executable, str(CLIENT), mode, url, str(prefix), str(cache), platform, *specs],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    assert lines, f"py-rattler printed nothing (exit {out.returncode}):\n{out.stderr[-3000:]}"
    return json.loads(lines[-1])


@pytest.fixture
def greeter_channel(server, owner, channel):
    """greeter (noarch) depends on greeting-data >=2; two greeting-data versions exist."""
    packages = [
        build_tar_bz2("greeting-data", version="1.0", files={"share/greeting-data/data.txt": b"old\n"}),
        build_tar_bz2("greeting-data", version="2.0", files={"share/greeting-data/data.txt": b"hello, world\n"}),
        build_tar_bz2(
            "greeter",
            version="1.0",
            depends=["greeting-data >=2"],
            files={"share/greeter/greet.txt": b"greetings from condaflare\n", "bin/greeter": b"#!/bin/sh\necho hi\n"},
        ),
    ]
    for filename, data in packages:
        assert upload_raw(server, channel, filename, data, headers=owner.auth).status_code == 201
    for name in ("other-package-0.2-0.conda", "other-package-0.1-0.tar.bz2"):
        assert upload_raw(server, channel, name, (PACKAGES / name).read_bytes(), headers=owner.auth).status_code == 201
    return channel, {filename: data for filename, data in packages}


@pytest.mark.parametrize("mode", ["gateway", "fetch"])
def test_solve_and_install(server, greeter_channel, tmp_path, mode):
    channel, built = greeter_channel
    prefix = tmp_path / "env"
    result = rattler(mode, f"{server.url}/{channel}", prefix, tmp_path / "cache", ["greeter", "other-package"])
    assert "error" not in result, result["error"]
    chosen = {r["name"]: r for r in result["records"]}
    assert set(chosen) == {"greeter", "greeting-data", "other-package"}
    assert chosen["greeting-data"]["version"] == "2.0"
    assert chosen["other-package"]["version"] == "0.2"
    # rattler prefers .conda when both formats exist.
    assert chosen["other-package"]["url"].endswith(f"/{channel}/linux-64/other-package-0.2-0.conda")
    assert chosen["greeter"]["sha256"] == sha256_of(built["greeter-1.0-0.tar.bz2"])

    assert (prefix / "share/greeter/greet.txt").read_bytes() == b"greetings from condaflare\n"
    assert (prefix / "share/greeting-data/data.txt").read_bytes() == b"hello, world\n"
    assert (prefix / "bin/greeter").read_bytes() == b"#!/bin/sh\necho hi\n"
    installed = {p.name for p in (prefix / "conda-meta").glob("*.json")}
    assert {"greeter-1.0-0.json", "greeting-data-2.0-0.json", "other-package-0.2-0.json"} <= installed

    # The request log shows which index each client read.
    fetched = [
        (entry["method"], entry["path"].split("/", 3)[-1], entry["status"])
        for entry in map(json.loads, (line for line in server.log().splitlines() if line.startswith('{"method"')))
        if entry["path"].startswith(f"/{channel}/")
    ]
    paths = {path for method, path, status in fetched if method == "GET" and status == 200}
    if mode == "gateway":
        assert "repodata_shards.msgpack.zst" in paths and any(p.startswith("shards/") for p in paths), fetched
        assert "repodata.json" not in paths and "repodata.json.zst" not in paths, fetched
    else:
        assert "repodata.json.zst" in paths, fetched


def test_unsatisfiable_spec_fails_cleanly(server, greeter_channel, tmp_path):
    channel, _ = greeter_channel
    result = rattler("gateway", f"{server.url}/{channel}", tmp_path / "env", tmp_path / "cache", ["greeting-data >=3"])
    assert "error" in result
    assert not (tmp_path / "env" / "share").exists()


@pytest.mark.parametrize("entry", ["BearerToken", "CondaToken", "BasicHTTP", None])
def test_install_from_a_private_channel(server, owner, tmp_path, entry):
    """py-rattler reads RATTLER_AUTH_FILE (keyed by host, without the port)."""
    channel = unique("private-install")
    server.admin("channel", "create", channel, "--owner", owner.name, "--private")
    filename, data = build_tar_bz2("secret-tool", files={"share/secret-tool/README": b"for members only\n"})
    assert upload_raw(server, channel, filename, data, headers=owner.auth).status_code == 201

    credentials = {
        "BearerToken": {"BearerToken": owner.key},
        "CondaToken": {"CondaToken": owner.key},
        "BasicHTTP": {"BasicHTTP": {"username": "anyone", "password": owner.key}},
        None: None,
    }[entry]
    auth_file = tmp_path / "auth.json"
    auth_file.write_text(json.dumps({"127.0.0.1": credentials} if credentials else {}))
    prefix = tmp_path / "env"
    result = rattler("gateway", f"{server.url}/{channel}", prefix, tmp_path / "cache", ["secret-tool"], auth_file=auth_file)
    if entry is None:
        assert "error" in result
        assert not (prefix / "share").exists()
    else:
        assert "error" not in result, result["error"]
        assert (prefix / "share/secret-tool/README").read_bytes() == b"for members only\n"
