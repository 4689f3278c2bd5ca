"""Uploads over 1 MiB sent as the request's own body: the runtime splits the body, streams it
into R2 and hashes it, and the Worker reads only as much of it as the package's metadata needs.
Wherever that metadata sits in the archive, such a file is accepted or refused exactly as a
small one is, with the checksums of every byte, and a refused one leaves nothing behind."""

import bz2
import hashlib
import io
import json
import random
import zipfile

import pytest
import requests
import zstandard

from artifacts import repodata
from conftest import sha256_of, upload_raw
from pkgbuild import build_conda, build_tar_bz2, package_entries, tar_of

# Incompressible, so that every file here is over the 1 MiB a file may travel inline, and
# under the 2 MB the test server accepts.
PAYLOAD_BYTES = 1_300_000


def payload(seed: int) -> dict[str, bytes]:
    return {"share/blob": random.Random(seed).randbytes(PAYLOAD_BYTES)}


def tar_bz2_info_last(name: str, **spec) -> tuple[str, bytes]:
    """A .tar.bz2 whose info/ entries come after the payload (conda-build writes them first)."""
    stem, entries = package_entries(name, **spec)
    info = [entry for entry in entries if entry[0].startswith("info/")]
    rest = [entry for entry in entries if not entry[0].startswith("info/")]
    return f"{stem}.tar.bz2", bz2.compress(tar_of(rest + info))


def conda_info_first(name: str, **spec) -> tuple[str, bytes]:
    """A .conda whose info component comes before the pkg component (`build_conda` writes it
    after, as conda-package-handling does)."""
    stem, entries = package_entries(name, **spec)
    compress = zstandard.ZstdCompressor().compress
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("metadata.json", json.dumps({"conda_pkg_format_version": 2}))
        archive.writestr(f"info-{stem}.tar.zst", compress(tar_of([e for e in entries if e[0].startswith("info/")])))
        archive.writestr(f"pkg-{stem}.tar.zst", compress(tar_of([e for e in entries if not e[0].startswith("info/")])))
    return f"{stem}.conda", raw.getvalue()


LAYOUTS = {
    "tar.bz2, info/ first": build_tar_bz2,
    "tar.bz2, info/ after the payload": tar_bz2_info_last,
    "conda, info after pkg": build_conda,
    "conda, info before pkg": conda_info_first,
}


def stored_keys(server, channel: str) -> list[str]:
    return [key for key in server.r2_keys() if channel in key]


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_large_package_is_read_wherever_its_metadata_is(server, owner, channel, layout):
    build = LAYOUTS[layout]
    filename, data = build("streamed", depends=["python >=3.8"], files=payload(1))
    assert len(data) > 1024 * 1024
    response = upload_raw(server, channel, filename, data, headers=owner.auth)
    assert response.status_code == 201, response.text
    record = response.json()
    assert record["depends"] == ["python >=3.8"]
    assert (record["sha256"], record["md5"], record["size"]) == (sha256_of(data), hashlib.md5(data).hexdigest(), len(data))
    section = "packages.conda" if filename.endswith(".conda") else "packages"
    assert repodata(server, channel, "noarch")[section][filename]["md5"] == hashlib.md5(data).hexdigest()
    assert requests.get(f"{server.url}/{channel}/noarch/{filename}", timeout=30).content == data

    # The same bytes again change nothing; other bytes under the name are a conflict.
    again = upload_raw(server, channel, filename, data, headers=owner.auth)
    assert again.status_code == 200, again.text
    _, other = build("streamed", depends=["python >=3.8"], files=payload(2))
    assert upload_raw(server, channel, filename, other, headers=owner.auth).status_code == 409
    assert repodata(server, channel, "noarch")[section][filename]["sha256"] == sha256_of(data)
    assert [k for k in stored_keys(server, channel) if ".staging" in k] == []


def without_end_of_central_directory(data: bytes) -> bytes:
    """The zip less its last record, as a client that stopped writing early would send it."""
    return data[: data.rindex(b"PK\x05\x06")]


def refused_large_uploads() -> list[tuple[str, str, bytes, dict, int, str]]:
    """(description, filename, bytes, extra headers, status, words in the error)."""
    good_name, good = build_tar_bz2("bigsum", files=payload(3))
    no_index_stem, no_index_entries = package_entries("noindex", files=payload(4))
    no_index = bz2.compress(tar_of([e for e in no_index_entries if e[0] != "info/index.json"]))
    conda_name, conda = build_conda("cutzip", files=payload(6))
    return [
        ("a wrong checksum header", good_name, good, {"X-File-SHA256": "0" * 64}, 400, f"whose SHA-256 is {sha256_of(good)}"),
        ("no info/index.json at all", f"{no_index_stem}.tar.bz2", no_index, {}, 422, "no info/index.json"),
        (
            "info/ after the payload describing another file",
            "latename-1.0-0.tar.bz2",
            tar_bz2_info_last("othername", files=payload(5))[1],
            {},
            422,
            "othername-1.0-0.tar.bz2",
        ),
        ("a .conda without its end of central directory", conda_name, without_end_of_central_directory(conda), {}, 422, "truncated"),
        ("random bytes", "noise-1.0-0.conda", random.Random(7).randbytes(PAYLOAD_BYTES), {}, 422, "invalid package"),
    ]


@pytest.mark.parametrize("case", range(5))
def test_large_bad_upload_is_refused_and_leaves_nothing(server, owner, channel, case):
    description, filename, body, extra, status, words = refused_large_uploads()[case]
    assert len(body) > 1024 * 1024
    response = upload_raw(server, channel, filename, body, headers={**owner.auth, **extra})
    assert response.status_code == status, (description, response.text)
    assert response.headers["Content-Type"] == "application/json"
    assert words in response.json()["error"], (description, response.json())
    assert stored_keys(server, channel) == [], description
    served = repodata(server, channel, "noarch")
    assert (served["packages"], served["packages.conda"]) == ({}, {})


@pytest.mark.parametrize("checksum", ["claimed", "none"])
def test_large_artifactory_put_is_hashed_with_or_without_a_claimed_checksum(server, owner, channel, checksum):
    # Without X-Checksum-Sha256 the runtime's digest stream hashes the body; with one, R2
    # checks it while storing.
    filename, data = build_conda("deployedlarge", files=payload(8))
    url = f"{server.url}/{channel}/noarch/{filename}"
    headers = {**owner.auth, **({"X-Checksum-Sha256": sha256_of(data)} if checksum == "claimed" else {})}
    response = requests.put(url, data=data, headers=headers, timeout=60)
    assert response.status_code == 201, response.text
    record = response.json()
    assert (record["sha256"], record["md5"], record["size"]) == (sha256_of(data), hashlib.md5(data).hexdigest(), len(data))
    assert requests.get(url, timeout=30).content == data
    assert [k for k in stored_keys(server, channel) if ".staging" in k] == []
