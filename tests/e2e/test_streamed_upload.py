"""Uploads over 1 MiB sent as the request's own body: the runtime splits the body, streams it
into R2 and hashes it, and the Worker reads only as much of it as the package's metadata needs.
When the uploader claims the SHA-256 and the subdir is known early (a .tar.bz2 with info/ first,
a .conda with its info component first, a URL that names it) the bytes go once, straight to the
file's key, which the channel index reserves for the upload; otherwise, and for a forced
replacement, through a staging object that the commit copies (one R2 read). Wherever that
metadata sits in the archive, such a file is accepted or refused exactly as a small one is, with
the checksums of every byte, and a refused one leaves nothing behind: no object, no reservation,
and the file it would have replaced intact. A .conda that names its subdir only at its end goes
to the key of the subdir the channel's records suggest, and is copied from there when that was
wrong."""

import bz2
import hashlib
import random

import pytest
import requests

from artifacts import repodata
from conftest import r2_operations, sha256_of, upload_raw
from pkgbuild import build_conda, build_tar_bz2, package_entries, tar_of

# Incompressible, so that every file here is over the 1 MiB a file may travel inline, and
# under the 2 MB the test server accepts.
PAYLOAD_BYTES = 1_300_000


def payload(seed: int) -> dict[str, bytes]:
    return {"share/blob": random.Random(seed).randbytes(PAYLOAD_BYTES)}


def tar_bz2_info_last(name: str, **spec) -> tuple[str, bytes]:
    """A .tar.bz2 whose info/ entries come after the payload (conda-build writes them first)."""
    return build_tar_bz2(name, info_last=True, **spec)


def conda_info_first(name: str, **spec) -> tuple[str, bytes]:
    """A .conda whose info component comes before the pkg component."""
    return build_conda(name, info_first=True, **spec)


LAYOUTS = {
    "tar.bz2, info/ first": build_tar_bz2,
    "tar.bz2, info/ after the payload": tar_bz2_info_last,
    "conda, info after pkg": build_conda,
    "conda, info before pkg": conda_info_first,
}
# The layouts whose subdir is known before the payload: written straight to the file's key.
WRITTEN_ONCE = {"tar.bz2, info/ first", "conda, info before pkg"}
# R2 reads of an upload: a staged file's copy reads its staging object once; the scan of a
# .conda stops at its pkg component and reads what follows (the info component when it comes
# last, the zip's central directory) from the stored object, in one ranged read.
STAGED_COPY_READS = 1
CONDA_RESUME_READS = 1


def upload_reads(filename: str, staged: bool) -> int:
    return (STAGED_COPY_READS if staged else 0) + (CONDA_RESUME_READS if filename.endswith(".conda") else 0)


def stored_keys(server, channel: str) -> list[str]:
    return [key for key in server.r2_keys() if channel in key]


def r2_reads_of(server, admin, upload) -> tuple[requests.Response, int]:
    """The answer to `upload()` and the R2 reads the Worker made meanwhile."""
    before = r2_operations(server, admin)["get"]
    response = upload()
    return response, r2_operations(server, admin)["get"] - before


def reservations(server, channel: str) -> list[str]:
    return [key for key in server.direct_uploads() if channel in key]


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_large_package_is_read_wherever_its_metadata_is(server, owner, admin, channel, layout):
    build = LAYOUTS[layout]
    filename, data = build("streamed", depends=["python >=3.8"], files=payload(1))
    assert len(data) > 1024 * 1024
    response, reads = r2_reads_of(server, admin, lambda: upload_raw(server, channel, filename, data, headers=owner.auth))
    assert response.status_code == 201, response.text
    # A channel without files: written straight to the key when the subdir is known early.
    assert reads == upload_reads(filename, staged=layout not in WRITTEN_ONCE)
    record = response.json()
    assert record["depends"] == ["python >=3.8"]
    assert (record["sha256"], record["md5"], record["size"]) == (sha256_of(data), hashlib.md5(data).hexdigest(), len(data))
    section = "packages.conda" if filename.endswith(".conda") else "packages"
    assert repodata(server, channel, "noarch")[section][filename]["md5"] == hashlib.md5(data).hexdigest()
    assert requests.get(f"{server.url}/{channel}/noarch/{filename}", timeout=30).content == data

    # The same bytes again change nothing; other bytes under the name are a conflict (both are
    # staged: a record names the file). Neither leaves anything.
    again = upload_raw(server, channel, filename, data, headers=owner.auth)
    assert again.status_code == 200, again.text
    _, other = build("streamed", depends=["python >=3.8"], files=payload(2))
    assert upload_raw(server, channel, filename, other, headers=owner.auth).status_code == 409
    assert repodata(server, channel, "noarch")[section][filename]["sha256"] == sha256_of(data)
    assert requests.get(f"{server.url}/{channel}/noarch/{filename}", timeout=30).content == data
    assert [k for k in stored_keys(server, channel) if ".staging" in k] == []
    assert reservations(server, channel) == []


def test_a_conda_with_its_info_last_goes_where_the_channels_records_suggest(server, owner, admin, channel):
    """A .conda naming its subdir only at its end is written to the key of the subdir of the
    channel's newest file of its name (else of its newest file): once when that is right; copied
    into place from there when the package belongs elsewhere, leaving nothing at the guessed key."""
    seed_name, seed = build_conda("guessed", version="0.1", subdir="linux-64")
    assert upload_raw(server, channel, seed_name, seed, headers=owner.auth).status_code == 201

    right_name, right = build_conda("guessed", version="1.0", subdir="linux-64", files=payload(3))
    response, reads = r2_reads_of(server, admin, lambda: upload_raw(server, channel, right_name, right, headers=owner.auth))
    assert response.status_code == 201, response.text
    assert reads == upload_reads(right_name, staged=False)
    assert repodata(server, channel, "linux-64")["packages.conda"][right_name]["sha256"] == sha256_of(right)
    assert requests.get(f"{server.url}/{channel}/linux-64/{right_name}", timeout=30).content == right

    # Named like the linux-64 files, but a noarch package: copied once into noarch.
    wrong_name, wrong = build_conda("guessed", version="2.0", subdir="noarch", files=payload(4))
    response, reads = r2_reads_of(server, admin, lambda: upload_raw(server, channel, wrong_name, wrong, headers=owner.auth))
    assert response.status_code == 201, response.text
    assert reads == upload_reads(wrong_name, staged=True)
    assert response.json()["subdir"] == "noarch"
    assert repodata(server, channel, "noarch")["packages.conda"][wrong_name]["md5"] == hashlib.md5(wrong).hexdigest()
    assert wrong_name not in repodata(server, channel, "linux-64")["packages.conda"]
    assert requests.get(f"{server.url}/{channel}/noarch/{wrong_name}", timeout=30).content == wrong
    assert requests.get(f"{server.url}/{channel}/linux-64/{wrong_name}", timeout=30).status_code == 404
    assert f"{channel}/linux-64/{wrong_name}" not in stored_keys(server, channel)

    # Refused where it was written (its index.json names another package): nothing anywhere.
    bad_name, bad = build_conda("guessed", version="3.0", subdir="noarch", files=payload(5), index_overrides={"name": "other"})
    refused = upload_raw(server, channel, bad_name, bad, headers=owner.auth)
    assert refused.status_code in (400, 422), refused.text
    assert [k for k in stored_keys(server, channel) if bad_name in k] == []
    assert reservations(server, channel) == []
    assert [k for k in stored_keys(server, channel) if ".staging" in k] == []


def without_end_of_central_directory(data: bytes) -> bytes:
    """The zip less its last record, as a client that stopped writing early would send it."""
    return data[: data.rindex(b"PK\x05\x06")]


def refused_large_uploads() -> list[tuple[str, str, bytes, dict, int, str]]:
    """(description, filename, bytes, extra headers, status, words in the error)."""
    good_name, good = build_tar_bz2("bigsum", files=payload(3))
    first_name, first = conda_info_first("bigsumfirst", files=payload(9))
    no_index_stem, no_index_entries = package_entries("noindex", files=payload(4))
    no_index = bz2.compress(tar_of([e for e in no_index_entries if e[0] != "info/index.json"]))
    conda_name, conda = build_conda("cutzip", files=payload(6))
    first_cut_name, first_cut = conda_info_first("cutzipfirst", files=payload(10))
    return [
        ("a wrong checksum header", good_name, good, {"X-File-SHA256": "0" * 64}, 400, f"whose SHA-256 is {sha256_of(good)}"),
        ("a wrong checksum header on a .conda with info first", first_name, first, {"X-File-SHA256": "0" * 64}, 400,
         f"whose SHA-256 is {sha256_of(first)}"),
        ("no info/index.json at all", f"{no_index_stem}.tar.bz2", no_index, {}, 422, "no info/index.json"),
        (
            "info/ after the payload describing another file",
            "latename-1.0-0.tar.bz2",
            tar_bz2_info_last("othername", files=payload(5))[1],
            {},
            422,
            "othername-1.0-0.tar.bz2",
        ),
        (
            "info/ first describing another file",
            "firstname-1.0-0.tar.bz2",
            build_tar_bz2("othername", files=payload(11))[1],
            {},
            422,
            "othername-1.0-0.tar.bz2",
        ),
        ("a .conda without its end of central directory", conda_name, without_end_of_central_directory(conda), {}, 422, "truncated"),
        # Written straight to its key: found broken only at its end.
        ("a .conda with info first without its end of central directory", first_cut_name,
         without_end_of_central_directory(first_cut), {}, 422, "truncated"),
        ("random bytes", "noise-1.0-0.conda", random.Random(7).randbytes(PAYLOAD_BYTES), {}, 422, "invalid package"),
    ]


@pytest.mark.parametrize("case", range(8))
def test_large_bad_upload_is_refused_and_leaves_nothing(server, owner, channel, case):
    description, filename, body, extra, status, words = refused_large_uploads()[case]
    assert len(body) > 1024 * 1024
    response = upload_raw(server, channel, filename, body, headers={**owner.auth, **extra})
    assert response.status_code == status, (description, response.text)
    assert response.headers["Content-Type"] == "application/json"
    assert words in response.json()["error"], (description, response.json())
    assert stored_keys(server, channel) == [], description
    assert reservations(server, channel) == [], description
    served = repodata(server, channel, "noarch")
    assert (served["packages"], served["packages.conda"]) == ({}, {})


@pytest.mark.parametrize("layout", sorted(WRITTEN_ONCE))
def test_a_forced_replacement_is_staged_replaces_whole_and_a_refused_one_leaves_the_file(server, owner, admin, channel, layout):
    build = LAYOUTS[layout]
    filename, first = build("replaced", files=payload(12))
    _, second = build("replaced", files=payload(13))
    _, third = build("replaced", files=payload(14))
    section = "packages.conda" if filename.endswith(".conda") else "packages"
    url = f"{server.url}/{channel}/noarch/{filename}"

    def served() -> tuple[bytes, str]:
        return requests.get(url, timeout=30).content, repodata(server, channel, "noarch")[section][filename]["sha256"]

    assert upload_raw(server, channel, filename, first, headers=owner.auth).status_code == 201
    # Refused with ?force: a wrong checksum, a body that is not this file's. The file stays.
    wrong = upload_raw(server, channel, filename, second, headers={**owner.auth, "X-File-SHA256": "0" * 64}, params={"force": "true"})
    assert wrong.status_code == 400, wrong.text
    _, other_name = build("othername", files=payload(15))
    misnamed = upload_raw(server, channel, filename, other_name, headers=owner.auth, params={"force": "true"})
    assert misnamed.status_code == 422, misnamed.text
    assert served() == (first, sha256_of(first))
    # Replaced: the new bytes, whole, under the same key, copied from a staging object (the old
    # bytes stay whole until then).
    forced, reads = r2_reads_of(
        server, admin, lambda: upload_raw(server, channel, filename, second, headers=owner.auth, params={"force": "true"}))
    assert forced.status_code == 201, forced.text
    assert reads == upload_reads(filename, staged=True)
    assert forced.json()["md5"] == hashlib.md5(second).hexdigest()
    assert served() == (second, sha256_of(second))
    # Without force, other bytes are a conflict; the replacement stays.
    assert upload_raw(server, channel, filename, third, headers=owner.auth).status_code == 409
    assert served() == (second, sha256_of(second))
    assert reservations(server, channel) == []


@pytest.mark.parametrize("checksum", ["claimed", "none"])
def test_large_artifactory_put_is_hashed_with_or_without_a_claimed_checksum(server, owner, admin, channel, checksum):
    # Without X-Checksum-Sha256 the runtime's digest stream hashes the body; with one, R2
    # checks it while storing.
    filename, data = build_conda("deployedlarge", files=payload(8))
    url = f"{server.url}/{channel}/noarch/{filename}"
    headers = {**owner.auth, **({"X-Checksum-Sha256": sha256_of(data)} if checksum == "claimed" else {})}
    response, reads = r2_reads_of(server, admin, lambda: requests.put(url, data=data, headers=headers, timeout=60))
    assert response.status_code == 201, response.text
    # The URL names the subdir: with a claimed checksum, written once, straight to the key.
    assert reads == upload_reads(filename, staged=checksum != "claimed")
    record = response.json()
    assert (record["sha256"], record["md5"], record["size"]) == (sha256_of(data), hashlib.md5(data).hexdigest(), len(data))
    assert requests.get(url, timeout=30).content == data
    assert [k for k in stored_keys(server, channel) if ".staging" in k] == []


def test_a_large_artifactory_put_to_another_subdir_is_refused_and_leaves_nothing(server, owner, channel):
    filename, data = build_conda("wrongplace", files=payload(16))
    headers = {**owner.auth, "X-Checksum-Sha256": sha256_of(data)}
    response = requests.put(f"{server.url}/{channel}/linux-64/{filename}", data=data, headers=headers, timeout=60)
    assert response.status_code == 400, response.text
    assert "belongs in noarch, not in linux-64" in response.json()["error"]
    assert stored_keys(server, channel) == []
    assert reservations(server, channel) == []


def test_concurrent_large_uploads_of_one_file_store_one_whole(server, owner, channel):
    """Four uploads of one filename at once, two of each of two contents, all written straight
    to the key if they can reserve it: one is stored; the others are refused (a conflict, or
    another upload holding the key) or, with the stored bytes, answered as already there. The
    object served is the record's, whole."""
    from concurrent.futures import ThreadPoolExecutor

    filename, first = build_tar_bz2("racing", files=payload(17))
    _, second = build_tar_bz2("racing", files=payload(18))
    bodies = [first, second, first, second]
    with ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(lambda body: upload_raw(server, channel, filename, body, headers=owner.auth), bodies))
    statuses = [answer.status_code for answer in answers]
    assert statuses.count(201) == 1 and set(statuses) <= {200, 201, 409}, [a.text for a in answers]
    stored = bodies[statuses.index(201)]
    for body, answer in zip(bodies, answers):
        if answer.status_code == 200:
            assert body == stored
    assert repodata(server, channel, "noarch")["packages"][filename]["sha256"] == sha256_of(stored)
    assert requests.get(f"{server.url}/{channel}/noarch/{filename}", timeout=30).content == stored
    assert [k for k in stored_keys(server, channel) if ".staging" in k] == []
    assert reservations(server, channel) == []
