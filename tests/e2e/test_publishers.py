"""Publishing with the real client: py-rattler-build's uploads to prefix.dev, quetz, Artifactory
and anaconda.org (rattler_upload, as `rattler-build upload` and pixi run it) against the Worker,
and what each answers to a bad upload. Also prefix.dev's attestations and reindex, over HTTP."""

import base64
import bz2
import io
import json
import random
import tarfile
import time
from xml.etree import ElementTree

import pytest
import requests
import rattler_build

from artifacts import assert_channel_consistent, repodata
from conftest import FIXTURES, PACKAGES, sha256_of, unique
from pkgbuild import build_tar_bz2

CLIENTS = ["prefix", "quetz", "artifactory", "anaconda"]


def package(name: str, content: bytes) -> tuple[str, bytes]:
    """A noarch .tar.bz2 with an info/about.json, which the anaconda upload reads."""
    filename, data = build_tar_bz2(name, files={f"share/{name}.txt": content})
    raw = io.BytesIO(bz2.decompress(data))
    with tarfile.open(fileobj=raw, mode="a") as tar:
        about = json.dumps({"summary": f"{name} for tests", "license": "BSD-3-Clause"}).encode()
        info = tarfile.TarInfo("info/about.json")
        info.size = len(about)
        info.mtime = 1700000000
        tar.addfile(info, io.BytesIO(about))
    return filename, bz2.compress(raw.getvalue())


def write(tmp_path, folder: str, filename: str, data: bytes) -> str:
    path = tmp_path / folder / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def upload(client: str, server, channel: str, path: str, key: str, force: bool = False, skip_existing: bool = False):
    """One upload with py-rattler-build's function for `client`."""
    if client == "prefix":
        rattler_build.upload_package_to_prefix(
            [path], server.url, channel, api_key=key, force=force, skip_existing=skip_existing
        )
    elif client == "quetz":
        rattler_build.upload_package_to_quetz([path], server.url, channel, api_key=key)
    elif client == "artifactory":
        rattler_build.upload_package_to_artifactory([path], server.url, channel, token=key)
    else:
        rattler_build.upload_package_to_anaconda(
            [path], channel, channel=["main"], api_key=key, url=f"{server.url}/api/anaconda", force=force
        )


def served(server, channel: str, subdir: str, filename: str) -> bytes:
    response = requests.get(f"{server.url}/{channel}/{subdir}/{filename}", timeout=30)
    assert response.status_code == 200, response.text
    return response.content


def stored_keys(server, channel: str) -> list[str]:
    return sorted(k for k in server.r2_keys() if k.startswith((f"{channel}/", f".staging/{channel}/")))


def assert_nothing_stored(server, channel: str) -> None:
    """No object of the channel, staged or placed, and no record in its noarch index."""
    assert stored_keys(server, channel) == []
    index = repodata(server, channel, "noarch")
    assert index["packages"] == {} and index["packages.conda"] == {}


@pytest.mark.parametrize("client", CLIENTS)
def test_the_client_uploads_and_the_file_is_served(server, owner, channel, client, tmp_path):
    path = PACKAGES / "flask-0.11.1-py_0.tar.bz2"
    data = path.read_bytes()
    key_name = f"{client} release key"
    key = server.admin("key", "create", owner.name, "--name", key_name)["key"]
    upload(client, server, channel, str(path), key)
    record = repodata(server, channel, "noarch")["packages"][path.name]
    assert (record["name"], record["version"], record["sha256"], record["size"]) == (
        "flask", "0.11.1", sha256_of(data), len(data)
    )
    assert served(server, channel, "noarch", path.name) == data
    # Who published it is recorded, for the channel's readers: the key's user and name.
    published = {"user": owner.name, "key": key_name}
    assert publishers(server, channel, "flask") == {path.name: published}
    # The same bytes again, as a retry sends them: accepted, nothing changes, the publisher
    # included.
    upload(client, server, channel, str(path), owner.key)
    assert repodata(server, channel, "noarch")["packages"][path.name] == record
    assert publishers(server, channel, "flask") == {path.name: published}
    assert_channel_consistent(server, channel)


def publishers(server, channel: str, name: str) -> dict[str, dict | None]:
    """filename -> provenance of every file of `name`, from the browse API."""
    answer = server.api("GET", f"channels/{channel}/packages/{name}")
    assert answer.status_code == 200, answer.text
    return {record["filename"]: record["provenance"] for record in answer.json()["records"]}


@pytest.mark.parametrize("client", CLIENTS)
def test_other_bytes_under_the_same_name(server, owner, channel, client, tmp_path):
    filename, first = package("twin", b"first")
    _, second = package("twin", b"second")
    first_path = write(tmp_path, "first", filename, first)
    second_path = write(tmp_path, "second", filename, second)
    upload(client, server, channel, first_path, owner.key)
    with pytest.raises(Exception):
        upload(client, server, channel, second_path, owner.key)
    assert repodata(server, channel, "noarch")["packages"][filename]["sha256"] == sha256_of(first)
    assert served(server, channel, "noarch", filename) == first
    if client in ("prefix", "anaconda"):
        # The clients that send a force flag replace the file with it.
        upload(client, server, channel, second_path, owner.key, force=True)
        assert repodata(server, channel, "noarch")["packages"][filename]["sha256"] == sha256_of(second)
        assert served(server, channel, "noarch", filename) == second
    assert_channel_consistent(server, channel)


def test_prefix_skip_existing_skips_other_bytes(server, owner, channel, tmp_path):
    filename, first = package("skipped", b"first")
    _, second = package("skipped", b"second")
    upload("prefix", server, channel, write(tmp_path, "first", filename, first), owner.key)
    upload("prefix", server, channel, write(tmp_path, "second", filename, second), owner.key, skip_existing=True)
    assert repodata(server, channel, "noarch")["packages"][filename]["sha256"] == sha256_of(first)
    assert served(server, channel, "noarch", filename) == first


@pytest.mark.parametrize("client", CLIENTS)
def test_hostile_uploads_are_refused_and_leave_nothing(server, owner, outsider, channel, client, tmp_path):
    path = str(PACKAGES / "flask-0.11.1-py_0.tar.bz2")
    corrupt = write(tmp_path, "corrupt", "flask-0.11.1-py_0.tar.bz2", (FIXTURES / "corrupt" / "bad_package.tar.bz2").read_bytes())
    for case, target, key, file in [
        ("unknown key", channel, "cfk_not-a-key", path),
        ("not an owner", channel, outsider.key, path),
        ("no such channel", unique("missing"), owner.key, path),
        ("corrupt file", channel, owner.key, corrupt),
    ]:
        with pytest.raises(Exception):
            upload(client, server, target, file, key)
        assert_nothing_stored(server, channel)


def test_anaconda_labels_other_than_main_are_refused(server, owner, channel):
    path = str(PACKAGES / "flask-0.11.1-py_0.tar.bz2")
    with pytest.raises(Exception, match="stage"):
        rattler_build.upload_package_to_anaconda(
            [path], channel, channel=["dev"], api_key=owner.key, url=f"{server.url}/api/anaconda"
        )
    stage = requests.post(
        f"{server.url}/api/anaconda/stage/{channel}/flask/0.11.1/noarch/flask-0.11.1-py_0.tar.bz2",
        json={"sha256": sha256_of(PACKAGES.joinpath("flask-0.11.1-py_0.tar.bz2").read_bytes()), "channels": ["main", "dev"]},
        headers={"Authorization": f"token {owner.key}"},
        timeout=30,
    )
    assert stage.status_code == 400
    assert "'dev'" in stage.json()["error"]
    assert_nothing_stored(server, channel)


# Wrong checksums: the clients compute the checksum themselves, so each route's answer to a
# wrong one is checked with the requests the client sends, the checksum altered.


def test_prefix_wrong_checksum(server, owner, channel):
    path = PACKAGES / "flask-0.11.1-py_0.tar.bz2"
    response = requests.post(
        f"{server.url}/api/v1/upload/{channel}",
        data=path.read_bytes(),
        headers={**owner.auth, "X-File-Name": path.name, "X-File-SHA256": "0" * 64},
        timeout=30,
    )
    assert response.status_code == 400 and response.json()["code"] == "checksum_mismatch"
    assert_nothing_stored(server, channel)


def chunked(data: bytes):
    """A body without Content-Length, as rattler streams quetz and Artifactory uploads."""
    for at in range(0, len(data), 65536):
        yield data[at:at + 65536]


def test_quetz_wrong_checksum_is_406_and_force_replaces(server, owner, channel):
    filename, first = package("quetzal", b"first")
    _, second = package("quetzal", b"second")
    url = f"{server.url}/api/channels/{channel}/upload/{filename}"
    key = {"X-API-Key": owner.key}
    wrong = requests.post(url, params={"force": "false", "sha256": "0" * 64}, data=chunked(first), headers=key, timeout=30)
    assert wrong.status_code == 406 and wrong.json()["code"] == "checksum_mismatch"
    missing = requests.post(url, data=first, headers=key, timeout=30)
    assert missing.status_code == 400 and "sha256" in missing.json()["error"]
    assert_nothing_stored(server, channel)

    created = requests.post(url, params={"force": "false", "sha256": sha256_of(first)}, data=chunked(first), headers=key, timeout=30)
    assert created.status_code == 201, created.text
    conflict = requests.post(url, params={"force": "false", "sha256": sha256_of(second)}, data=second, headers=key, timeout=30)
    assert conflict.status_code == 409
    forced = requests.post(url, params={"force": "true", "sha256": sha256_of(second)}, data=second, headers=key, timeout=30)
    assert forced.status_code == 201
    assert served(server, channel, "noarch", filename) == second


def test_artifactory_checksum_header_basic_auth_and_subdir(server, owner, channel, tmp_path):
    filename, data = package("deployed", b"content")
    url = f"{server.url}/{channel}/noarch/{filename}"
    basic = {"Authorization": "Basic " + base64.b64encode(f"anyone:{owner.key}".encode()).decode()}
    wrong = requests.put(url, data=chunked(data), headers={**basic, "X-Checksum-Sha256": "0" * 64}, timeout=30)
    assert wrong.status_code == 400 and wrong.json()["code"] == "checksum_mismatch"
    elsewhere = requests.put(f"{server.url}/{channel}/linux-64/{filename}", data=data, headers=basic, timeout=30)
    assert elsewhere.status_code == 400 and "belongs in noarch" in elsewhere.json()["error"]
    assert_nothing_stored(server, channel)

    # The client with Basic credentials from an auth file, as `rattler-build upload artifactory` reads them.
    auth_file = tmp_path / "credentials.json"
    auth_file.write_text(json.dumps({"127.0.0.1": {"BasicHTTP": {"username": "ci", "password": owner.key}}}))
    rattler_build.upload_package_to_artifactory(
        [write(tmp_path, "pkg", filename, data)], server.url, channel, auth_file=str(auth_file)
    )
    assert served(server, channel, "noarch", filename) == data


def anaconda_stage(server, channel: str, filename: str, sha256: str, key: str) -> requests.Response:
    name, version, _ = filename.removesuffix(".tar.bz2").rsplit("-", 2)
    return requests.post(
        f"{server.url}/api/anaconda/stage/{channel}/{name}/{version}/noarch/{filename}",
        json={"distribution_type": "conda", "channels": ["main"], "sha256": sha256, "attrs": {}},
        headers={"Authorization": f"token {key}"},
        timeout=30,
    )


def storage_error(response: requests.Response) -> tuple[str, str]:
    """The code and message of the transfer URL's XML error document."""
    assert response.headers["Content-Type"] == "application/xml"
    root = ElementTree.fromstring(response.text)
    assert root.tag == "Error"
    return root.findtext("Code"), root.findtext("Message")


def test_anaconda_transfer_checks_the_staged_bytes_once(server, owner, channel):
    filename, data = package("staged", b"content")
    _, other = package("staged", b"other")
    # The bytes sent are not those staged: refused, and the URL is spent.
    stage = anaconda_stage(server, channel, filename, sha256_of(other), owner.key)
    assert stage.status_code == 200, stage.text
    post_url = stage.json()["post_url"]
    assert post_url.startswith(f"{server.url}/api/anaconda/transfer/{channel}/")
    # It answers as the storage service it stands in for: S3's XML error, which anaconda-client reads.
    wrong = requests.post(post_url, files={"file": data}, timeout=30)
    assert (wrong.status_code, storage_error(wrong)[0]) == (400, "checksum_mismatch")
    again = requests.post(post_url, files={"file": other}, timeout=30)
    assert (again.status_code, storage_error(again)[0]) == (404, "not_found")
    assert_nothing_stored(server, channel)

    stage = anaconda_stage(server, channel, filename, sha256_of(data), owner.key).json()
    early = requests.post(
        f"{server.url}/api/anaconda/commit/{channel}/staged/1.0/noarch/{filename}",
        json={"dist_id": stage["dist_id"]},
        headers={"Authorization": f"token {owner.key}"},
        timeout=30,
    )
    assert early.status_code == 404
    assert requests.post(stage["post_url"], files={"file": data}, timeout=30).status_code == 201
    assert served(server, channel, "noarch", filename) == data
    # Another channel's transfer URL does not reach this channel's tickets.
    assert requests.post(stage["post_url"].replace(channel, channel + "x"), files={"file": data}, timeout=30).status_code == 404


def test_an_anaconda_transfer_is_refused_once_its_key_may_no_longer_write(server, owner, make_user, channel):
    """The transfer URL acts for the key that staged it, checked again when the file arrives:
    revoked, or its user no longer an owner, it stores nothing."""
    filename, data = package("ticketed", b"content")
    uploader = make_user()
    server.admin("member", "add", channel, uploader.name, "--role", "owner")
    ci_key = server.api("POST", "keys", uploader.key, json={"name": "ci"}).json()

    # Revoked between the stage and the transfer.
    stage = anaconda_stage(server, channel, filename, sha256_of(data), ci_key["key"])
    assert stage.status_code == 200, stage.text
    assert server.api("DELETE", f"keys/{ci_key['info']['id']}", uploader.key).status_code == 200
    revoked = requests.post(stage.json()["post_url"], files={"file": data}, timeout=30)
    assert (revoked.status_code, storage_error(revoked)[0]) == (401, "invalid_key")
    assert_nothing_stored(server, channel)

    # Demoted to member between the stage and the transfer.
    stage = anaconda_stage(server, channel, filename, sha256_of(data), uploader.key)
    assert stage.status_code == 200, stage.text
    assert server.api("PUT", f"channels/{channel}/members/{uploader.name}", owner.key, json={"role": "member"}).status_code == 200
    demoted = requests.post(stage.json()["post_url"], files={"file": data}, timeout=30)
    assert (demoted.status_code, storage_error(demoted)[0]) == (403, "forbidden")
    assert_nothing_stored(server, channel)


# Attestations: rattler-build 0.73 refuses to send one with an API key (it wants trusted
# publishing), so they are sent as its multipart form does, file part first.


def dsse_bundle(sha256: str) -> dict:
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "attested-1.0-0.tar.bz2", "digest": {"sha256": sha256}}],
        "predicateType": "https://schemas.conda.org/attestations-publish-1.schema.json",
        "predicate": {"targetChannel": "https://example.org/channel"},
    }
    return {
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {"certificate": {"rawBytes": "MIIB"}, "tlogEntries": []},
        "dsseEnvelope": {
            "payload": base64.b64encode(json.dumps(statement).encode()).decode(),
            "payloadType": "application/vnd.in-toto+json",
            "signatures": [{"sig": "MEUC"}],
        },
    }


def upload_with_attestation(server, channel, filename, data, key, attestation: str, file_first: bool = True, force=False):
    file_part = ("file", (filename, data, "application/octet-stream", {"X-File-Name": filename, "X-File-SHA256": sha256_of(data)}))
    attestation_part = ("attestation", (None, attestation))
    parts = [file_part, attestation_part] if file_first else [attestation_part, file_part]
    return requests.post(
        f"{server.url}/api/v1/upload/{channel}",
        files=parts,
        params={"force": "true"} if force else None,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


@pytest.mark.parametrize("file_first", [True, False])
def test_an_attestation_is_stored_served_and_deleted_with_its_package(server, owner, make_user, channel, file_first):
    filename, data = package("attested", b"content")
    bundle = dsse_bundle(sha256_of(data))
    response = upload_with_attestation(server, channel, filename, data, owner.key, json.dumps(bundle), file_first)
    assert response.status_code == 201, response.text
    sigs_url = f"{server.url}/{channel}/noarch/{filename}.v0.sigs"
    sigs = requests.get(sigs_url, timeout=30)
    assert sigs.status_code == 200
    assert sigs.headers["Content-Type"] == "application/json"
    assert sigs.json() == [bundle]
    check = server.api("POST", f"channels/{channel}/check", make_user(admin=True).key)
    assert check.status_code == 200 and check.json()["consistent"], check.text
    assert_channel_consistent(server, channel)

    deleted = server.api("DELETE", f"delete/{channel}/noarch/{filename}", owner.key)
    assert deleted.status_code == 200
    assert requests.get(sigs_url, timeout=30).status_code == 404
    assert stored_keys(server, channel) and not [k for k in stored_keys(server, channel) if filename in k]


def test_an_attestation_after_a_staged_file_part(server, owner, channel):
    # Over 1 MiB the file streams into a staging object; the attestation part after it is
    # still read, and judged, before the package is committed.
    filename, data = package("bulky", random.Random(7).randbytes(1_500_000))
    assert len(data) > 1024 * 1024
    garbage = upload_with_attestation(server, channel, filename, data, owner.key, '{"bundle": 1}')
    assert garbage.status_code == 400
    assert_nothing_stored(server, channel)
    bundle = dsse_bundle(sha256_of(data))
    response = upload_with_attestation(server, channel, filename, data, owner.key, json.dumps(bundle))
    assert response.status_code == 201, response.text
    assert requests.get(f"{server.url}/{channel}/noarch/{filename}.v0.sigs", timeout=30).json() == [bundle]
    assert served(server, channel, "noarch", filename) == data
    assert_channel_consistent(server, channel)


def test_a_forced_replacement_drops_the_old_attestation(server, owner, channel):
    filename, first = package("replaced", b"first")
    _, second = package("replaced", b"second")
    assert upload_with_attestation(server, channel, filename, first, owner.key, json.dumps(dsse_bundle(sha256_of(first)))).status_code == 201
    forced = requests.post(
        f"{server.url}/api/v1/upload/{channel}",
        params={"force": "true"},
        data=second,
        headers={**owner.auth, "X-File-Name": filename, "X-File-SHA256": sha256_of(second)},
        timeout=30,
    )
    assert forced.status_code == 201
    assert requests.get(f"{server.url}/{channel}/noarch/{filename}.v0.sigs", timeout=30).status_code == 404


def test_attestations_of_a_private_channel_are_private(server, owner, outsider):
    private = unique("private")
    server.admin("channel", "create", private, "--owner", owner.name, "--private")
    filename, data = package("secret", b"content")
    bundle = json.dumps(dsse_bundle(sha256_of(data)))
    assert upload_with_attestation(server, private, filename, data, owner.key, bundle).status_code == 201
    url = f"{server.url}/{private}/noarch/{filename}.v0.sigs"
    assert requests.get(url, timeout=30).status_code == 401
    assert requests.get(url, headers=outsider.auth, timeout=30).status_code == 404
    assert requests.get(url, headers=owner.auth, timeout=30).json() == [json.loads(bundle)]


@pytest.mark.parametrize(
    "attestation, expected",
    [
        ('{"bundle": 1}', "not a Sigstore bundle"),
        ("not json at all", "not JSON"),
        (json.dumps(dsse_bundle("0" * 64)), "other bytes"),
    ],
)
def test_a_bad_attestation_is_refused_with_its_package(server, owner, channel, attestation, expected):
    filename, data = package("misattested", b"content")
    response = upload_with_attestation(server, channel, filename, data, owner.key, attestation)
    assert response.status_code == 400, response.text
    assert expected in response.json()["error"]
    assert_nothing_stored(server, channel)


def test_reindex_rewrites_the_index_for_writers_only(server, owner, outsider, channel):
    path = PACKAGES / "flask-0.11.1-py_0.tar.bz2"
    upload("prefix", server, channel, str(path), owner.key)
    before = requests.get(f"{server.url}/{channel}/noarch/repodata.json", timeout=30)
    # HTTP dates count whole seconds: a rewrite is told apart from the upload's write by one.
    time.sleep(1.1)
    assert server.api("POST", f"reindex/{channel}/noarch").status_code == 401
    assert server.api("POST", f"reindex/{channel}/noarch", outsider.key).status_code == 403
    assert server.api("POST", f"reindex/{channel}/noarch64", owner.key).status_code == 400
    reindexed = server.api("POST", f"reindex/{channel}/noarch", owner.key)
    assert reindexed.status_code == 200, reindexed.text
    assert reindexed.json() == {"channel": channel, "subdir": "noarch", "rebuilt": ["noarch"]}
    after = requests.get(f"{server.url}/{channel}/noarch/repodata.json", timeout=30)
    assert after.headers["Last-Modified"] != before.headers["Last-Modified"]
    assert after.json() == before.json()
    assert_channel_consistent(server, channel)
