"""micromamba and conda, the real clients, install through mirror channels of a real upstream
(packages built here, indexed by py-rattler, served by http.server), public and private, and
install again from what the mirror kept once the upstream is stopped. A mirror serves every
index file of its own index (repodata.json.zst too), built from the upstream's records.

The clients live in `../shared/clients` (see test_micromamba.py); without them these tests are
skipped."""

import os
import shutil
import subprocess

import pytest

from conftest import PACKAGES
from test_micromamba import CLIENTS, assert_installed, host_of, micromamba_create
from pkgbuild import build_conda, build_tar_bz2
from upstream_channel import Upstream, create_mirror, index


@pytest.fixture
def upstream(tmp_path):
    """An upstream holding an app (.conda) that depends on a library (.tar.bz2), each with one
    file whose content is unique to this test; answers (upstream, what each installs)."""
    marker = os.path.basename(tmp_path)
    contents = {
        "cf-lib-1.2-0.tar.bz2": (f"share/{marker}/lib.txt", f"library of {marker}\n".encode()),
        "cf-app-3.4-0.conda": (f"share/{marker}/app.txt", f"app of {marker}\n".encode()),
    }
    lib = build_tar_bz2("cf-lib", version="1.2", files=dict([contents["cf-lib-1.2-0.tar.bz2"]]))
    app = build_conda("cf-app", version="3.4", depends=["cf-lib >=1.2"], files=dict([contents["cf-app-3.4-0.conda"]]))
    channel = tmp_path / "upstream" / "channel"
    (channel / "noarch").mkdir(parents=True)
    for filename, data in (lib, app):
        (channel / "noarch" / filename).write_bytes(data)
    # The platform's subdir too, as real channels have it: with the upstream stopped, the
    # mirror can stand in only for a subdir it has a copy of.
    (channel / "linux-64").mkdir()
    shutil.copy(PACKAGES / "zlib-1.2.11-h7b6447c_3.conda", channel / "linux-64")
    index(channel)
    served = Upstream(tmp_path / "upstream")
    yield served, contents
    served.stop()


def mirrors(server, owner, make_user, upstream) -> tuple[str, str, str]:
    """A public and a private mirror of `upstream`, and a key of a member of the private one."""
    public = create_mirror(server, owner, {"url": upstream.url})
    private = create_mirror(server, owner, {"url": upstream.url}, private=True)
    reader = make_user()
    server.admin("member", "add", private, reader.name, "--role", "member")
    return public, private, reader.key


def test_micromamba_installs_through_a_mirror_and_from_what_it_kept(server, owner, make_user, upstream, tmp_path):
    upstream, contents = upstream
    public, private, key = mirrors(server, owner, make_user, upstream)
    auth = {host_of(server): {"type": "BearerToken", "token": key}}
    for phase in ("upstream-up", "upstream-stopped"):
        if phase == "upstream-stopped":
            upstream.stop()
        done, prefix = micromamba_create(tmp_path / phase / "public", f"{server.url}/{public}")
        assert_installed(server, owner, public, done, prefix, contents)
        done, prefix = micromamba_create(tmp_path / phase / "private", f"{server.url}/{private}", auth)
        assert_installed(server, owner, private, done, prefix, contents)
    # Without the key, the private mirror installs nothing.
    done, prefix = micromamba_create(tmp_path / "no-key", f"{server.url}/{private}")
    assert done.returncode != 0, done.stdout
    assert not (prefix / "conda-meta").exists()


def test_conda_installs_through_a_mirror_and_from_what_it_kept(server, owner, make_user, upstream, tmp_path):
    if not (CLIENTS / "conda" / "run").is_file():
        pytest.skip(f"conda not found at {CLIENTS / 'conda' / 'run'}; set CONDAFLARE_CLIENTS to run this test")
    from test_conda import CONDA, VENV, conda_create

    # conda's virtualenv is made by its first call, in this environment (where pip is set up).
    version = subprocess.run([str(CONDA), "--version"], env={**os.environ, "CONDA_CLIENT_VENV": VENV}, capture_output=True, text=True, timeout=600)
    assert version.stdout.strip() == "conda 26.7.1", version.stdout + version.stderr
    upstream, contents = upstream
    public, private, key = mirrors(server, owner, make_user, upstream)
    for phase in ("upstream-up", "upstream-stopped"):
        if phase == "upstream-stopped":
            upstream.stop()
        for name, url in ((public, f"{server.url}/{public}"), (private, f"{server.url}/t/{key}/{private}")):
            where = tmp_path / phase / name
            where.mkdir(parents=True)
            done, prefix = conda_create(where, url)
            assert_installed(server, owner, name, done, prefix, contents)
