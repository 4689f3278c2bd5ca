"""Packages that clients would choke on are refused at the door: a `depends` or `constrains`
entry that is not a match spec, a name with capitals, a timestamp in the future, and a .conda
whose components are named for another file. Each
is refused with 422 naming the offending value, by the upload and by the bulk import alike, and
leaves no object and no record behind."""

import random
import time

import pytest
import requests

from artifacts import repodata
from conftest import import_tar, post_import, sha256_of, upload_multipart, upload_raw
from pkgbuild import build_conda, build_tar_bz2


# An hour from now, in milliseconds, as conda-build writes timestamps.
FUTURE_MS = int((time.time() + 3600) * 1000)


def malformed_packages() -> list[tuple[str, str, bytes, str]]:
    """(description, filename, bytes, the value the error must name)."""
    return [
        ("depends", *build_tar_bz2("strict-depends", depends=["python >=3.8", "foo >=>=1"]), "foo >=>=1"),
        (
            "constrains",
            *build_conda("strict-constrains", index_overrides={"constrains": ["bar ==<<2"]}),
            "bar ==<<2",
        ),
        (
            "depends of a .conda",
            *build_conda("strict-conda-depends", depends=["baz <=>1"]),
            "baz <=>1",
        ),
        (
            # Over 1 MiB: streamed into a staging object before it is judged.
            "depends of a large .conda",
            *build_conda("strict-large", depends=["qux >=>=3"], files={"share/blob": random.Random(0).randbytes(1_300_000)}),
            "qux >=>=3",
        ),
        (
            "a name with upper-case letters, which clients look up lower-cased",
            *build_tar_bz2("Strict-Upper"),
            "Strict-Upper",
        ),
        (
            # CEP 47: cooldowns and exclude-newer trust the timestamp; an hour ahead is no clock skew.
            "a timestamp in the future",
            *build_conda("strict-future", index_overrides={"timestamp": FUTURE_MS}),
            str(FUTURE_MS),
        ),
        (
            "components named for another file",
            *build_conda("strict-stem", component_stem="other-1.0-0"),
            "info-other-1.0-0.tar.zst",
        ),
        (
            "components named for another version",
            *build_conda("strict-info", version="2.0", component_stem="strict-info-1.0-0"),
            "info-strict-info-1.0-0.tar.zst",
        ),
    ]


def assert_refusal(response: requests.Response, value: str) -> None:
    assert response.status_code == 422, response.text
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["code"] == "invalid_package"
    assert f"'{value}'" in body["error"], body["error"]


def test_a_wellformed_package_of_each_kind_is_accepted(server, owner, channel):
    # The builders make valid packages: what the other tests refuse is the one flaw they add.
    for filename, data in (
        build_tar_bz2("strict-good", depends=["python >=3.8", "foo 1.0 0"]),
        build_conda("strict-good", depends=["ncurses 5.9"], index_overrides={"constrains": ["bar <2"]}),
    ):
        assert upload_raw(server, channel, filename, data, headers=owner.auth).status_code == 201, filename
    served = repodata(server, channel, "noarch")
    assert set(served["packages"]) == {"strict-good-1.0-0.tar.bz2"}
    assert served["packages.conda"]["strict-good-1.0-0.conda"]["constrains"] == ["bar <2"]


@pytest.mark.parametrize("form", ["raw", "multipart"])
@pytest.mark.parametrize("case", range(len(malformed_packages())))
def test_malformed_package_is_refused_and_leaves_nothing(server, owner, channel, form, case):
    description, filename, data, value = malformed_packages()[case]
    upload = upload_raw if form == "raw" else upload_multipart
    assert_refusal(upload(server, channel, filename, data, headers=owner.auth), value)
    assert not [k for k in server.r2_keys() if channel in k], description
    served = repodata(server, channel, "noarch")
    assert served["packages"] == {} and served["packages.conda"] == {}, description


def test_import_refuses_each_malformed_package_and_keeps_the_rest(server, owner, channel):
    good_name, good = build_tar_bz2("strict-import-good")
    members = {good_name: good} | {filename: data for _, filename, data, _ in malformed_packages()}
    body = import_tar({f"noarch/{name}": data for name, data in members.items()})
    response = post_import(server, channel, body, owner.auth)
    assert response.status_code == 200, response.text
    summary = response.json()
    assert (summary["created"], summary["failed"]) == (1, len(malformed_packages()))
    results = {r["filename"]: r for r in summary["results"]}
    assert results[good_name]["status"] == 201
    for description, filename, _, value in malformed_packages():
        assert results[filename]["status"] == 422, description
        assert f"'{value}'" in results[filename]["error"], description
        assert not [k for k in server.r2_keys() if filename in k], description
    served = repodata(server, channel, "noarch")
    assert set(served["packages"]) | set(served["packages.conda"]) == {good_name}
    assert served["packages"][good_name]["sha256"] == sha256_of(good)
