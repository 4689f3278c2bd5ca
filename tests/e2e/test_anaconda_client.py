"""anaconda-client 1.16.0 (PyPI), the `anaconda upload` that anaconda.org's users and many CI
scripts run, publishes to condaflare with its site's `url` set to `<server>/api/anaconda` and
the channel as the owner (`-u`): a .conda and a .tar.bz2 in one call, a re-upload (refused as
anaconda.org refuses it, or skipped with `--skip-existing`), `--force` with other bytes, and the
refusals (a wrong key, a channel the key may not see)."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from artifacts import repodata
from conftest import unique
from pkgbuild import build_conda, build_tar_bz2

ANACONDA = Path(sys.executable).parent / "anaconda"


def anaconda(server, tmp_path: Path, key: str, *args: str) -> subprocess.CompletedProcess:
    """`anaconda -t <key> <args>` with a configuration of its own naming this server."""
    config = tmp_path / "binstar" / "data"
    config.mkdir(parents=True, exist_ok=True)
    (config / "config.yaml").write_text(f"url: {server.url}/api/anaconda\n")
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path / "home"),
        "BINSTAR_CONFIG_DIR": str(tmp_path / "binstar"),
    }
    return subprocess.run([str(ANACONDA), "-t", key, *args], env=env, capture_output=True, text=True, timeout=300)


def write(tmp_path: Path, filename: str, data: bytes) -> str:
    folder = tmp_path / hashlib.sha256(data).hexdigest()[:12]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / filename).write_bytes(data)
    return str(folder / filename)


def served(server, owner, channel: str, subdir: str, filename: str) -> bytes:
    answer = requests.get(f"{server.url}/{channel}/{subdir}/{filename}", headers=owner.auth, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.content


def record(server, channel: str, filename: str) -> dict:
    section = "packages.conda" if filename.endswith(".conda") else "packages"
    return repodata(server, channel, "linux-64")[section][filename]


@pytest.fixture
def packages() -> dict[str, bytes]:
    """A .conda and a .tar.bz2 for linux-64, as anaconda-client reads them (with about.json)."""
    about = {"info/about.json": b'{"summary": "uploaded by anaconda-client", "license": "MIT"}'}
    built = [
        build_conda("ac-lib", subdir="linux-64", files={"lib/ac.txt": b"lib\n"}, info_files=about),
        build_tar_bz2("ac-tool", subdir="linux-64", files={"bin/ac": b"tool\n"}, info_files=about),
    ]
    return dict(built)


def test_upload_both_formats_then_again(server, owner, channel, packages, tmp_path):
    paths = [write(tmp_path, filename, data) for filename, data in packages.items()]
    done = anaconda(server, tmp_path, owner.key, "upload", "-u", channel, *paths)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{server.url}/{channel}/packages/ac-lib" in done.stdout + done.stderr
    for filename, data in packages.items():
        assert served(server, owner, channel, "linux-64", filename) == data
        assert record(server, channel, filename)["sha256"] == hashlib.sha256(data).hexdigest()

    # Again: refused as anaconda.org refuses it, and nothing changes; skipped when asked.
    again = anaconda(server, tmp_path, owner.key, "upload", "-u", channel, paths[0])
    assert again.returncode != 0
    assert "already exists" in again.stdout + again.stderr
    skipped = anaconda(server, tmp_path, owner.key, "upload", "-u", channel, "--skip-existing", *paths)
    assert skipped.returncode == 0, skipped.stdout + skipped.stderr
    assert "Skipping" in skipped.stdout + skipped.stderr
    for filename, data in packages.items():
        assert served(server, owner, channel, "linux-64", filename) == data


def test_force_replaces_other_bytes(server, owner, channel, packages, tmp_path):
    filename = "ac-tool-1.0-0.tar.bz2"
    first = write(tmp_path, filename, packages[filename])
    assert anaconda(server, tmp_path, owner.key, "upload", "-u", channel, first).returncode == 0
    _, rebuilt = build_tar_bz2("ac-tool", subdir="linux-64", files={"bin/ac": b"tool, rebuilt\n"})
    second = write(tmp_path, filename, rebuilt)
    refused = anaconda(server, tmp_path, owner.key, "upload", "-u", channel, second)
    assert refused.returncode != 0
    assert served(server, owner, channel, "linux-64", filename) == packages[filename]
    forced = anaconda(server, tmp_path, owner.key, "upload", "-u", channel, "--force", second)
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert served(server, owner, channel, "linux-64", filename) == rebuilt
    assert record(server, channel, filename)["sha256"] == hashlib.sha256(rebuilt).hexdigest()


def test_without_an_owner_the_callers_name_is_the_channel(server, make_user, packages, tmp_path):
    user = make_user()
    server.admin("channel", "create", user.name, "--owner", user.name)
    filename = "ac-lib-1.0-0.conda"
    done = anaconda(server, tmp_path, user.key, "upload", write(tmp_path, filename, packages[filename]))
    assert done.returncode == 0, done.stdout + done.stderr
    assert served(server, user, user.name, "linux-64", filename) == packages[filename]


def test_refusals_store_nothing(server, owner, outsider, make_user, packages, tmp_path):
    private = unique("ac-private")
    server.admin("channel", "create", private, "--owner", owner.name, "--private")
    path = write(tmp_path, "ac-lib-1.0-0.conda", packages["ac-lib-1.0-0.conda"])
    wrong = anaconda(server, tmp_path, "cfk-" + "0" * 43, "upload", "-u", private, path)
    assert wrong.returncode != 0
    assert "invalid, expired or revoked API key" in wrong.stdout + wrong.stderr
    # To an outsider the private channel does not exist, as anaconda-client says.
    hidden = anaconda(server, tmp_path, outsider.key, "upload", "-u", private, path)
    assert hidden.returncode != 0
    assert f'User "{private}" does not exist' in hidden.stdout + hidden.stderr
    # A member may read but not write: refused at the package call.
    member = make_user()
    server.admin("member", "add", private, member.name, "--role", "member")
    refused = anaconda(server, tmp_path, member.key, "upload", "-u", private, path)
    assert refused.returncode != 0
    assert "only an owner of this channel" in refused.stdout + refused.stderr
    assert [k for k in server.r2_keys() if k.startswith(f"{private}/linux-64/ac-")] == []
