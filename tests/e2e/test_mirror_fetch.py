"""Mirror channels' package files, fetched from the upstream on first request (checked against
its record, once for concurrent requests, with bounded memory), and the upstream's failures:
timeouts, records over the bound, a slow upstream, redirects, credentials."""

import concurrent.futures
import hashlib
import json
import os
import shutil
import socket
import threading
import time

import pytest
import requests

from conftest import PACKAGES, unique
from harness import AdminError, running_server
from pkgbuild import build_conda
from synthetic_channel import workerd_memory
from upstream_channel import GatedHandler, Upstream, create_mirror, files_of, index
from upstream_channel import upstream  # noqa: F401 (a fixture)


def first_get(url: str) -> tuple[int, bytes | None]:
    """A GET read to its end: its status and body, or no body when it was cut short."""
    try:
        answer = requests.get(url, timeout=60)
    except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError):
        return 200, None
    return answer.status_code, answer.content


def test_an_upstream_file_replaced_under_the_same_name_is_refused_and_not_kept(server, owner, upstream):
    name = create_mirror(server, owner, {"url": upstream.url})
    assert requests.get(f"{server.url}/{name}/linux-64/repodata.json", timeout=30).status_code == 200
    filename = "other-package-0.2-0.conda"
    url = f"{server.url}/{name}/linux-64/{filename}"
    original = (PACKAGES / filename).read_bytes()
    # Another length is refused before any byte is sent, by the upstream's Content-Length.
    (upstream.root / "channel" / "linux-64" / filename).write_bytes(original + b"extra")
    refused = requests.get(url, timeout=30)
    assert refused.status_code == 502, refused.text
    assert upstream.url in refused.json()["error"]
    assert "size" in refused.json()["error"]
    assert f"{name}/linux-64/{filename}" not in server.r2_keys()
    # Other bytes of the same length: the first request, streamed the bytes as they came, ends
    # in an error instead of a clean end; every later one is a 502 and gets none of them.
    replaced = bytes(b ^ 0xFF for b in original)
    (upstream.root / "channel" / "linux-64" / filename).write_bytes(replaced)
    assert first_get(url)[1] is None
    for _ in range(2):
        refused = requests.get(url, timeout=30)
        assert refused.status_code == 502, refused.text
        assert upstream.url in refused.json()["error"]
        assert "SHA-256" in refused.json()["error"]
        assert f"{name}/linux-64/{filename}" not in server.r2_keys()
    # The upstream puts the right bytes back: they are served and kept.
    (upstream.root / "channel" / "linux-64" / filename).write_bytes(original)
    served = requests.get(url, timeout=30)
    assert (served.status_code, served.content) == (200, original)
    assert f"{name}/linux-64/{filename}" in server.r2_keys()


def test_concurrent_first_requests_make_one_upstream_fetch(server, owner, upstream, make_user):
    name = create_mirror(server, owner, {"url": upstream.url})
    filename = "zlib-1.2.11-h7b6447c_3.tar.bz2"
    path = f"/channel/linux-64/{filename}"
    # The upstream answers slowly, so that every request arrives while the first one fetches.
    upstream.httpd.delays[path] = 2
    expected = hashlib.sha256((PACKAGES / filename).read_bytes()).hexdigest()
    start = threading.Barrier(20)

    def get(_):
        start.wait()
        answer = requests.get(f"{server.url}/{name}/linux-64/{filename}", timeout=120)
        return answer.status_code, hashlib.sha256(answer.content).hexdigest()

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(get, range(20)))
    assert answers == [(200, expected)] * 20
    assert upstream.httpd.gets[path] == 1
    assert f"{name}/linux-64/{filename}" in server.r2_keys()
    # The counters: one fetch kept the file, the other 19 requests were hits, and one more is.
    admin = make_user(admin=True)
    before = server.api("GET", f"channels/{name}/stats", admin.key).json()
    assert before["index"]["mirror"]["bytes_cached"] == (PACKAGES / filename).stat().st_size
    assert before["mirror"]["hits"] == 19
    assert requests.get(f"{server.url}/{name}/linux-64/{filename}", timeout=30).status_code == 200
    after = server.api("GET", f"channels/{name}/stats", admin.key).json()
    assert after["mirror"]["hits"] == 20
    assert after["mirror"]["upstream_fetches"] == before["mirror"]["upstream_fetches"]
    assert upstream.httpd.gets[path] == 1
    # Admins only, as the R2 counters.
    assert server.api("GET", f"channels/{name}/stats", owner.key).status_code == 403


def workerd_rss_kb(server) -> int:
    """The resident memory of the workerd process running the Worker (and its objects)."""
    rss = workerd_memory(server.pgid)["VmRSS"]
    assert rss, "no workerd process in the server's process group"
    return rss // 1024


def test_a_100_mb_package_passes_through_the_mirror_with_bounded_memory(server, owner, upstream, make_user, figure):
    """The same file through two mirrors. The first passage of 100 MB through a fresh workerd
    grows its resident memory by some 200 MB whatever the Worker does (a plain upload of the
    same size does the same: the runtime's and local R2's buffers, collected lazily); the second
    shows what a fetch adds once those are in place (40 to 130 MB: the bytes cross the runtime's
    streams twice, to R2 and to the caller, and garbage collection runs when it will), so its
    bound is loose: it fails when the file is held whole on top of that. The bound the Worker's
    design sets is on its own (wasm) memory, read from the channel's stats before and after."""
    filename, data = build_conda("bigpkg", files={"share/bigpkg/blob.bin": os.urandom(100 * 1024 * 1024)})
    (upstream.root / "channel" / "noarch" / filename).write_bytes(data)
    index(upstream.root / "channel")
    expected, size = hashlib.sha256(data).hexdigest(), len(data)
    del data
    admin = make_user(admin=True)
    growths = []
    for _ in range(2):
        name = create_mirror(server, owner, {"url": upstream.url})
        url = f"{server.url}/{name}/noarch/{filename}"
        assert requests.get(f"{server.url}/{name}/noarch/repodata.json", timeout=30).status_code == 200
        # The isolate's wasm memory only grows; other tests of this server may have grown it.
        wasm_before_mb = server.api("GET", f"channels/{name}/stats", admin.key).json()["index"]["wasm_memory_bytes"] / 2**20
        before = workerd_rss_kb(server)
        peak = before
        done = threading.Event()

        def sample():
            nonlocal peak
            while not done.is_set():
                peak = max(peak, workerd_rss_kb(server))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            digest, length = hashlib.sha256(), 0
            with requests.get(url, stream=True, timeout=300) as answer:
                assert answer.status_code == 200
                for chunk in answer.iter_content(1 << 20):
                    digest.update(chunk)
                    length += len(chunk)
        finally:
            done.set()
            sampler.join()
        assert (digest.hexdigest(), length) == (expected, size)
        assert server.r2_keys()[f"{name}/noarch/{filename}"] == size
        again = requests.get(url, timeout=300)
        assert hashlib.sha256(again.content).hexdigest() == expected
        stats = server.api("GET", f"channels/{name}/stats", admin.key).json()
        wasm_mb = stats["index"]["wasm_memory_bytes"] / 2**20
        assert stats["index"]["mirror"]["bytes_cached"] >= size
        growths.append((peak - before) / 1024)
        figure(
            f"pass {len(growths)} of a {size / 2**20:.0f} MB package: workerd RSS {before / 1024:.0f} MB before, {peak / 1024:.0f} MB "
            f"at the peak (+{growths[-1]:.0f} MB); the channel object's wasm memory {wasm_mb:.1f} MB"
        )
        # Too little room for the file to have been held unseen, and next to no growth.
        assert wasm_before_mb < 64
        assert wasm_mb - wasm_before_mb < 16
    assert growths[1] < 2 * size / 2**20


def test_a_file_the_upstream_rebuilds_under_the_same_name_is_fetched_again_with_its_new_record(server, owner, upstream):
    name = create_mirror(server, owner, {"url": upstream.url})
    filename = "other-package-0.2-0.conda"
    url = f"{server.url}/{name}/linux-64/{filename}"
    assert requests.get(url, timeout=30).content == (PACKAGES / filename).read_bytes()
    # Other bytes under the same name, indexed: the record's sha256 changes with them.
    rebuilt_name, rebuilt = build_conda("other-package", version="0.2", build="0", subdir="linux-64", files={"share/other": b"rebuilt\n"})
    assert rebuilt_name == filename
    (upstream.root / "channel" / "linux-64" / filename).write_bytes(rebuilt)
    index(upstream.root / "channel")
    record = requests.get(f"{server.url}/{name}/linux-64/repodata.json", timeout=30).json()["packages.conda"][filename]
    assert record["sha256"] == hashlib.sha256(rebuilt).hexdigest()
    served = requests.get(url, timeout=30)
    assert (served.status_code, served.content) == (200, rebuilt)


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory):
    """A Worker with the deployment's defaults where the shared one differs: no
    MIRROR_ALLOW_HTTP (its mirrors of http upstreams are made with the admin command, told to
    take them: the Worker fetches them, but follows no redirect to http) and refreshes after the
    answer; and with short bounds: records of at most 4 KiB, an upstream timeout of 3 s."""
    variables = {"MIRROR_REVALIDATE_SECONDS": "0", "MIRROR_MAX_RECORD_BYTES": "4096", "MIRROR_UPSTREAM_TIMEOUT_SECONDS": "3"}
    with running_server(tmp_path_factory.mktemp("strict"), variables) as strict:
        strict.admin("user", "create", "mirrorer")
        yield strict


def strict_mirror(strict_server, url: str) -> str:
    name = unique("mirror")
    strict_server.admin("channel", "create", name, "--owner", "mirrorer", "--mirror", url, env={"MIRROR_ALLOW_HTTP": "true"})
    return name


def test_an_upstream_that_does_not_answer_is_a_timeout_naming_it(strict_server):
    """A real listener that accepts connections and never answers."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/channel"
        name = strict_mirror(strict_server, url)
        answer = requests.get(f"{strict_server.url}/{name}/noarch/repodata.json", timeout=60)
    assert answer.status_code == 504, answer.text
    assert (answer.json()["code"], url in answer.json()["error"]) == ("upstream_timeout", True)
    assert answer.json()["error"].endswith("within 3 s")


def test_an_upstream_record_over_the_size_bound_is_refused(strict_server, upstream):
    """The document is read a record at a time: one record over MIRROR_MAX_RECORD_BYTES is
    refused (nothing is stored), the other subdir is served."""
    path = upstream.root / "channel" / "linux-64" / "repodata.json"
    document = json.loads(path.read_text())
    record = document["packages.conda"]["other-package-0.2-0.conda"]
    record["description"] = "x" * 5000
    path.write_text(json.dumps(document))
    name = strict_mirror(strict_server, upstream.url)
    refused = requests.get(f"{strict_server.url}/{name}/linux-64/repodata.json", timeout=30)
    assert refused.status_code == 502, refused.text
    assert "MIRROR_MAX_RECORD_BYTES" in refused.json()["error"]
    assert "other-package-0.2-0.conda" in refused.json()["error"]
    assert upstream.url in refused.json()["error"]
    assert not [key for key in strict_server.r2_keys() if key.startswith(f"{name}/linux-64/")]
    served = requests.get(f"{strict_server.url}/{name}/noarch/repodata.json", timeout=30)
    assert served.status_code == 200
    assert files_of(served.json()) == files_of(upstream.repodata("noarch"))


def test_a_due_index_is_answered_at_once_while_the_refresh_runs_after(strict_server, upstream):
    """With MIRROR_REFRESH_IN_BACKGROUND (the default), only the first read of a subdir waits
    for the upstream: an upstream that does not answer yet holds no later read."""
    upstream.stop()
    served = Upstream(upstream.root, handler_class=GatedHandler)
    gated = served.httpd
    gated.gate = threading.Event()
    gated.gate.set()
    try:
        name = strict_mirror(strict_server, served.url)
        repodata = f"{strict_server.url}/{name}/linux-64/repodata.json"
        first = requests.get(repodata, timeout=30)
        assert first.status_code == 200
        assert "test-package-0.1-0.tar.bz2" in files_of(first.json())

        (upstream.root / "channel" / "linux-64" / "test-package-0.1-0.tar.bz2").unlink()
        index(upstream.root / "channel")
        gated.gate.clear()
        # The upstream holds its answer: the stored index answers.
        held = requests.get(repodata, timeout=30)
        assert (held.status_code, held.content) == (200, first.content)
        gated.gate.set()
        for _ in range(120):
            later = requests.get(repodata, timeout=30)
            if "test-package-0.1-0.tar.bz2" not in files_of(later.json()):
                break
            time.sleep(0.5)
        assert files_of(later.json()) == files_of(upstream.repodata("linux-64"))
    finally:
        gated.gate.set()
        served.stop()


def test_upstream_redirects_are_followed(server, owner, upstream):
    """MIRROR_ALLOW_HTTP is set in the tests: a redirect to http is followed, as to https."""
    moved = upstream.root / "moved"
    shutil.copytree(upstream.root / "channel", moved)
    filename = "flask-0.11.1-py_0.tar.bz2"
    for file in ("repodata.json", filename):
        upstream.httpd.redirects[f"/channel/noarch/{file}"] = f"/moved/noarch/{file}"
    name = create_mirror(server, owner, {"url": upstream.url})
    listed = requests.get(f"{server.url}/{name}/noarch/repodata.json", timeout=30)
    assert listed.status_code == 200, listed.text
    assert files_of(listed.json()) == files_of(upstream.repodata("noarch"))
    served = requests.get(f"{server.url}/{name}/noarch/{filename}", timeout=30)
    assert (served.status_code, served.content) == (200, (PACKAGES / filename).read_bytes())
    assert upstream.httpd.gets[f"/moved/noarch/{filename}"] == 1

    # A loop of redirects ends after a bounded number of hops.
    upstream.httpd.redirects["/channel/linux-64/repodata.json"] = "/channel/linux-64/repodata.json"
    looped = requests.get(f"{server.url}/{name}/linux-64/repodata.json", timeout=30)
    assert looped.status_code == 502, looped.text
    assert upstream.url in looped.json()["error"]
    assert "redirected more than" in looped.json()["error"]
    assert 2 <= upstream.httpd.gets["/channel/linux-64/repodata.json"] <= 10


# Set as Worker secrets of the test server (conftest.py).
SECRET_VALUE = "Bearer upstream-s3cret-value"
WRONG_VALUE = "Bearer not-the-right-one"


def test_a_redirect_to_http_is_refused_without_mirror_allow_http(strict_server, upstream):
    upstream.httpd.redirects["/channel/noarch/repodata.json"] = f"{upstream.origin}/moved/noarch/repodata.json"
    name = strict_mirror(strict_server, upstream.url)
    refused = requests.get(f"{strict_server.url}/{name}/noarch/repodata.json", timeout=30)
    assert refused.status_code == 502, refused.text
    error = refused.json()["error"]
    assert upstream.url in error and "not https" in error, error
    assert upstream.httpd.gets["/moved/noarch/repodata.json"] == 0
    assert f"{name}/noarch/repodata.json" not in strict_server.r2_keys()


def test_a_private_upstream_gets_the_secret_and_nobody_sees_it(server, owner, upstream):
    upstream.httpd.authorization = SECRET_VALUE
    # One package is moved to another origin, which must not get the credentials.
    other = Upstream(upstream.root)
    try:
        moved = "flask-0.11.1-py_0.tar.bz2"
        upstream.httpd.redirects[f"/channel/noarch/{moved}"] = f"{other.url}/noarch/{moved}"
        name = create_mirror(server, owner, {"url": upstream.url, "credentials": "MIRROR_UPSTREAM_TOKEN"})
        listed = requests.get(f"{server.url}/{name}/noarch/repodata.json", timeout=30)
        assert listed.status_code == 200, listed.text
        assert files_of(listed.json()) == files_of(upstream.repodata("noarch"))
        kept = "run_exports_versions-1.0-he35c369_0.tar.bz2"
        served = requests.get(f"{server.url}/{name}/noarch/{kept}", timeout=30)
        assert (served.status_code, served.content) == (200, (PACKAGES / kept).read_bytes())
        assert set(upstream.httpd.authorizations) == {SECRET_VALUE}
        served = requests.get(f"{server.url}/{name}/noarch/{moved}", timeout=30)
        assert (served.status_code, served.content) == (200, (PACKAGES / moved).read_bytes())
        assert other.httpd.gets[f"/channel/noarch/{moved}"] == 1
        assert other.httpd.authorizations == [None]
        # Shown by name, never by value.
        details = server.api("GET", f"channels/{name}", owner.key)
        assert details.json()["mirror"]["credentials"] == "MIRROR_UPSTREAM_TOKEN"
        assert "s3cret" not in details.text
        # The admin command takes the secret's name too, checked as the API checks it.
        by_admin = unique("mirror")
        allow_http = {"MIRROR_ALLOW_HTTP": "true"}
        created = server.admin("channel", "create", by_admin, "--owner", owner.name, "--mirror", upstream.url, "--credentials", "MIRROR_UPSTREAM_TOKEN", env=allow_http)
        assert created["mirror"]["credentials"] == "MIRROR_UPSTREAM_TOKEN"
        assert requests.get(f"{server.url}/{by_admin}/noarch/repodata.json", timeout=30).status_code == 200
        with pytest.raises(AdminError) as refused:
            server.admin("channel", "create", unique("mirror"), "--owner", owner.name, "--mirror", upstream.url, "--credentials", "Bearer x", env=allow_http)
        assert refused.value.code == 2 and "Worker secret" in refused.value.message
        bad = server.api("POST", "channels", owner.key, json={"name": unique("mirror"), "mirror": {"url": upstream.url, "credentials": "lower"}})
        assert (bad.status_code, bad.json()["code"]) == (400, "bad_request")

        # A wrong secret and an absent one: 502 naming the upstream, never a value.
        for secret in ("MIRROR_WRONG_TOKEN", "MIRROR_ABSENT_TOKEN"):
            wrong = create_mirror(server, owner, {"url": upstream.url, "credentials": secret})
            refused = requests.get(f"{server.url}/{wrong}/noarch/repodata.json", timeout=30)
            assert refused.status_code == 502, refused.text
            assert upstream.url in refused.json()["error"]
            assert "s3cret" not in refused.text and "not-the-right-one" not in refused.text
            assert not [key for key in server.r2_keys() if key.startswith(f"{wrong}/")]
        assert WRONG_VALUE in upstream.httpd.authorizations
        assert "s3cret" not in server.log() and "not-the-right-one" not in server.log()
    finally:
        other.stop()
