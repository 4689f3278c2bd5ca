"""Refusals at the door: bodies cut short of their Content-Length and control characters in
header values, sent with a raw socket as a broken or hostile client would. Each request goes to
the Worker's own socket, where its answer is the one a client at the edge gets, and through
wrangler dev's proxy, which answers some of them itself (see docs/api.md, "Under wrangler dev")."""

import io
import json
import os
import socket
import tarfile
import time
from urllib.parse import urlparse

import pytest
import requests

from conftest import sha256_of
from pkgbuild import build_conda, build_tar_bz2

BOUNDARY = "door-boundary"
# Over the 1 MiB a file may have to skip the staging object.
LARGE = 1_500_000


def exchange(address: tuple[str, int], head: str, body: bytes, answered_early: bool = False) -> tuple[int, dict, bytes]:
    """Sends `head` and `body`, closes the sending side, and reads the whole answer. With
    `answered_early`, the server may answer and close before the body is all sent."""
    with socket.create_connection(address, timeout=30) as sock:
        try:
            sock.sendall(head.encode("latin-1") + body)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            if not answered_early:
                raise
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    header_block, _, content = rest.partition(b"\r\n\r\n")
    headers = dict(line.decode("latin-1").lower().split(": ", 1) for line in header_block.split(b"\r\n") if line)
    return int(status_line.split()[1]), headers, content


def request_head(path: str, key: str, length: int, headers: dict[str, str]) -> str:
    lines = [f"POST {path} HTTP/1.1", "Host: x", f"Authorization: Bearer {key}", *(f"{k}: {v}" for k, v in headers.items())]
    return "\r\n".join([*lines, f"Content-Length: {length}", "Connection: close", "", ""])


def package(size: str) -> tuple[str, bytes]:
    if size == "small":
        return build_tar_bz2("cut")
    if size == "package":
        # A real package, info/ first: cut halfway, after its metadata was read and while its
        # bytes go straight to the file's key.
        return build_tar_bz2("cutpackage", files={"share/blob": os.urandom(LARGE)})
    if size == "condafirst":
        # The same for a .conda with its info component first.
        return build_conda("cutcondafirst", info_first=True, files={"share/blob": os.urandom(LARGE)})
    # Never read whole: it is cut before the end, so its bytes need not be a package.
    return "cutlarge-1.0-0.tar.bz2", os.urandom(LARGE)


def cut_request(channel: str, case: str) -> tuple[str, dict[str, str], bytes, int]:
    """The path, headers and the whole body of the request `case` sends, and where it is cut."""
    form, size = case.split("-")
    filename, data = package(size)
    if form == "raw":
        headers = {"X-File-Name": filename, "X-File-SHA256": sha256_of(data)}
        return f"/api/v1/upload/{channel}", headers, data, len(data) // 2
    if form in ("multipart", "multiparthead"):
        part_head = (
            f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
            f"X-File-Name: {filename}\r\nX-File-SHA256: {sha256_of(data)}\r\n\r\n"
        ).encode()
        body = part_head + data + f"\r\n--{BOUNDARY}--\r\n".encode()
        # "multiparthead" ends before the file part has begun.
        cut = 20 if form == "multiparthead" else len(part_head) + len(data) // 2
        return f"/api/v1/upload/{channel}", {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}, body, cut
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo(f"noarch/{filename}")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return f"/api/v1/import/{channel}", {"Content-Type": "application/x-tar"}, raw.getvalue(), 512 + len(data) // 2


def left_in_r2(server, channel: str) -> list[str]:
    return [k for k in server.r2_keys() if channel in k]


CASES = ["raw-small", "raw-large", "raw-package", "raw-condafirst", "multipart-small", "multipart-large", "multiparthead-small", "import-small", "import-large"]


@pytest.mark.parametrize("case", CASES)
def test_a_body_cut_short_is_an_incomplete_body_and_leaves_nothing(server, owner, channel, case):
    path, headers, body, cut = cut_request(channel, case)
    head = request_head(path, owner.key, len(body), headers)

    status, answer_headers, content = exchange(server.worker_address(), head, body[:cut])
    assert status == 400, content
    assert answer_headers["content-type"] == "application/json"
    answer = json.loads(content)
    assert answer["code"] == "incomplete_body", answer
    assert "the body ended before" in answer["error"], answer

    # Through wrangler dev's proxy the client gets the proxy's own 500 instead, whatever the
    # Worker answered (docs/api.md, "Under wrangler dev"); either way nothing may stay behind.
    url = urlparse(server.url)
    status, _, content = exchange((url.hostname, url.port), head, body[:cut])
    assert (status, content) == (500, b"Error: Network connection lost.") or json.loads(content)["code"] == "incomplete_body"
    time.sleep(1)  # a Worker still running behind the proxy's answer finishes its cleanup
    assert left_in_r2(server, channel) == []
    # An upload written straight to the file's key was released.
    assert [key for key in server.direct_uploads() if channel in key] == []


@pytest.mark.parametrize("header", ["X-File-Name", "User-Agent"])
def test_a_control_character_in_a_header_is_a_bad_request(server, owner, channel, header):
    filename, data = build_tar_bz2("ctl")
    headers = {"X-File-Name": filename, "X-File-SHA256": sha256_of(data)}
    headers[header] = headers.get(header, "client") + "\x01\x7f"
    head = request_head(f"/api/v1/upload/{channel}", owner.key, len(data), headers)
    for address in (server.worker_address(), (urlparse(server.url).hostname, urlparse(server.url).port)):
        status, answer_headers, content = exchange(address, head, data)
        assert status == 400, content
        assert answer_headers["content-type"] == "application/json"
        answer = json.loads(content)
        assert answer["code"] == "bad_request", answer
        assert header.lower() in answer["error"]
    assert left_in_r2(server, channel) == []


def test_a_nul_in_a_header_is_refused_by_workerd_before_the_worker(server, owner, channel):
    filename, data = build_tar_bz2("nul")
    head = request_head(
        f"/api/v1/upload/{channel}", owner.key, len(data), {"X-File-Name": "a\x00b", "X-File-SHA256": sha256_of(data)}
    )
    url = urlparse(server.url)
    for address in (server.worker_address(), (url.hostname, url.port)):
        status, answer_headers, content = exchange(address, head, data)
        # workerd's HTTP parser answers in plain text, and the Worker never sees the request;
        # were workerd to pass the NUL on, the Worker would refuse it like any control character.
        if answer_headers.get("content-type") == "application/json":
            assert (status, json.loads(content)["code"]) == (400, "bad_request")
        else:
            assert (status, content) == (400, b"invalid HTTP header parsed")
            assert f'"path":"/api/v1/upload/{channel}"' not in server.log()
    assert left_in_r2(server, channel) == []


def test_a_json_body_past_the_limit_is_refused_chunked_too(server, owner, make_user):
    """64 KiB bounds every JSON body, announced or not: a chunked one is read only that far, so
    the Worker's memory does not grow with it (read from the stats of a channel's index, whose
    wasm instance is the Worker's under wrangler dev; wasm memory never shrinks)."""
    admin = make_user(admin=True)
    channel = f"memory-{admin.name}"
    server.admin("channel", "create", channel, "--owner", admin.name)

    def wasm_memory() -> int:
        return server.api("GET", f"channels/{channel}/stats", admin.key).json()["index"]["wasm_memory_bytes"]

    before = wasm_memory()
    # 40 MB in chunks of 64 KiB, to the Worker's own socket (wrangler's proxy drops the answer to
    # a body the Worker stops reading).
    chunk = b"x" * 65536
    body = b"".join(b"%x\r\n%b\r\n" % (len(part), part) for part in [b'{"name": "', *[chunk] * 600]) + b"0\r\n\r\n"
    head = "\r\n".join(["POST /api/v1/keys HTTP/1.1", "Host: x", f"Authorization: Bearer {owner.key}", "Transfer-Encoding: chunked", "Connection: close", "", ""])
    status, _, content = exchange(server.worker_address(), head, body, answered_early=True)
    assert (status, json.loads(content)["code"]) == (413, "too_large")
    assert wasm_memory() - before < 8 * 1024 * 1024, "the body was buffered whole"
    filler = {"name": "k", "padding": "x" * 70_000}
    announced = server.api("POST", "keys", owner.key, json=filler)
    assert (announced.status_code, announced.json()["code"]) == (413, "too_large")

    def chunks():
        text = json.dumps(filler).encode()
        for at in range(0, len(text), 4096):
            yield text[at : at + 4096]

    chunked = requests.post(f"{server.url}/api/v1/keys", data=chunks(), headers=owner.auth, timeout=30)
    assert (chunked.status_code, chunked.json()["code"]) == (413, "too_large")
    small = requests.post(f"{server.url}/api/v1/keys", data=iter([b'{"name": ', b'"chunked"}']), headers=owner.auth, timeout=30)
    assert small.status_code == 201, small.text
    names = [k["name"] for k in server.api("GET", "keys", owner.key).json()["keys"]]
    assert names.count("chunked") == 1 and "k" not in names


def test_a_form_of_too_many_parts_is_refused(server, owner, channel):
    """Part data is bounded, and so is the number of parts: 33 empty fields before the file."""
    filename, data = build_tar_bz2("manyparts")
    fields = [(f"f{n}", (None, "")) for n in range(33)]
    file_part = ("file", (filename, data, "application/octet-stream", {"X-File-Name": filename, "X-File-SHA256": sha256_of(data)}))
    refused = requests.post(f"{server.url}/api/v1/upload/{channel}", files=[*fields, file_part], headers=owner.auth, timeout=30)
    assert (refused.status_code, refused.json()["code"]) == (400, "bad_request")
    assert "more than 32 parts" in refused.json()["error"]
    assert not [k for k in server.r2_keys() if channel in k]
    accepted = requests.post(f"{server.url}/api/v1/upload/{channel}", files=[*fields[:31], file_part], headers=owner.auth, timeout=30)
    assert accepted.status_code == 201, accepted.text
