"""The identity providers the sign-in tests run on 127.0.0.1: a real OpenID Connect provider
(oidc-provider-mock, on authlib), a fake of GitHub's OAuth endpoints and REST API, and a
Cloudflare Access team: its signing key and certs (a JWKS), and assertions signed with it."""

import base64
import hashlib
import io
import json
import os
import secrets
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlparse

import jwt
import requests
import werkzeug.serving
from cryptography.hazmat.primitives.asymmetric import rsa

from harness import free_port


@dataclass
class OidcProvider:
    """oidc-provider-mock at `url`: any client id and secret are accepted; the authorization
    page asks for a subject and signs that person in. Its tokens carry the subject's claims,
    which a test sets (and which override the registered ones: `iss`, `nonce`...)."""

    url: str

    def set_user(self, sub: str, claims: dict) -> None:
        response = requests.put(f"{self.url}/users/{sub}", json=claims, timeout=10)
        assert response.status_code == 204, response.text


class Pkce:
    """PKCE (RFC 7636, S256) in front of a provider that does not check it itself: the
    authorization request's `code_challenge` is kept for the code the provider issues, and a
    token request whose `code_verifier` does not hash to it is refused as the RFC says
    (`400 invalid_grant`), as is one for a code issued without a challenge."""

    def __init__(self, app):
        self.app = app
        self.challenges: dict[str, str] = {}
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/oauth2/authorize" and environ["REQUEST_METHOD"] == "POST":
            query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}

            def recording(status, headers, *rest):
                for name, value in headers:
                    if name.lower() == "location":
                        code = parse_qs(urlparse(value).query).get("code")
                        if code and query.get("code_challenge_method") == "S256" and query.get("code_challenge"):
                            with self.lock:
                                self.challenges[code[0]] = query["code_challenge"]
                return start_response(status, headers, *rest)

            return self.app(environ, recording)
        if path == "/oauth2/token" and environ["REQUEST_METHOD"] == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length)
            form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
            with self.lock:
                challenge = self.challenges.get(form.get("code", ""))
            verifier = form.get("code_verifier", "")
            digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if challenge is None or digest != challenge:
                data = json.dumps({"error": "invalid_grant", "error_description": "PKCE verification failed"}).encode()
                start_response("400 BAD REQUEST", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
                return [data]
            environ["wsgi.input"] = io.BytesIO(body)
        return self.app(environ, start_response)


@contextmanager
def oidc_provider():
    # The provider insists on https unless told this is a test.
    os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"
    import oidc_provider_mock

    app = Pkce(oidc_provider_mock.app(require_nonce=True))
    port = free_port()
    server = werkzeug.serving.make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield OidcProvider(url=f"http://127.0.0.1:{port}")
    finally:
        server.shutdown()
        thread.join(5)


def _serve(handler_class) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_class)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@dataclass
class FakeGithub:
    """GitHub's OAuth web flow and `GET /user` as the Worker uses them: the authorize page signs
    in `user` at once (as GitHub does for an app already authorized), each code is good for one
    access token, for the client and redirect URI it was issued to."""

    url: str
    client_id: str
    client_secret: str
    user: dict = field(default_factory=lambda: {"id": 1, "login": "nobody"})
    codes: dict = field(default_factory=dict)
    tokens: dict = field(default_factory=dict)
    # What the Worker sent, for the tests to look at.
    token_requests: list = field(default_factory=list)
    user_agents: list = field(default_factory=list)

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"


@contextmanager
def fake_github(client_id: str, client_secret: str):
    state: dict = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def answer(self, status: int, body: dict | None = None, headers: dict | None = None):
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if body is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            github: FakeGithub = state["github"]
            url = urlparse(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            if url.path == "/login/oauth/authorize":
                if query.get("client_id") != github.client_id:
                    return self.answer(404, {"error": "unknown client"})
                code = secrets.token_hex(10)
                github.codes[code] = (dict(github.user), query["redirect_uri"])
                location = query["redirect_uri"] + "?" + urlencode({"code": code, "state": query.get("state", "")})
                return self.answer(302, None, {"Location": location})
            if url.path == "/api/user":
                github.user_agents.append(self.headers.get("User-Agent"))
                authorization = self.headers.get("Authorization", "")
                user = github.tokens.get(authorization.removeprefix("Bearer "))
                if not authorization.startswith("Bearer ") or user is None:
                    return self.answer(401, {"message": "Requires authentication"})
                return self.answer(200, {**user, "email": None, "type": "User"})
            self.answer(404, {"message": "Not Found"})

        def do_POST(self):
            github: FakeGithub = state["github"]
            length = int(self.headers.get("Content-Length", 0))
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            if self.path != "/login/oauth/access_token":
                return self.answer(404, {"message": "Not Found"})
            github.token_requests.append(form)
            if form.get("client_id") != github.client_id or form.get("client_secret") != github.client_secret:
                return self.answer(200, {"error": "incorrect_client_credentials"})
            issued = github.codes.pop(form.get("code", ""), None)
            if issued is None or issued[1] != form.get("redirect_uri"):
                # GitHub answers a used, unknown or misdirected code with 200 and an error.
                return self.answer(200, {"error": "bad_verification_code"})
            token = "gho_" + secrets.token_hex(16)
            github.tokens[token] = issued[0]
            self.answer(200, {"access_token": token, "token_type": "bearer", "scope": ""})

    server, url = _serve(Handler)
    state["github"] = FakeGithub(url=url, client_id=client_id, client_secret=client_secret)
    try:
        yield state["github"]
    finally:
        server.shutdown()


def _b64(number: int) -> str:
    data = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class AccessTeam:
    """A Cloudflare Access team: `issuer` (`https://<team>.cloudflareaccess.com`), the
    application's AUD tag, and its certs at `certs_url` (served here, as Access serves them at
    `<issuer>/cdn-cgi/access/certs`)."""

    team_domain: str
    audience: str
    certs_url: str
    key: rsa.RSAPrivateKey
    kid: str

    @property
    def issuer(self) -> str:
        return f"https://{self.team_domain}"

    def assertion(self, email: str, **overrides) -> str:
        """A `Cf-Access-Jwt-Assertion` for `email`, as Access signs it; `overrides` replace
        claims (`exp`, `iss`, `aud`...), `key` another signing key, `kid` another key id."""
        now = int(time.time())
        key = overrides.pop("key", self.key)
        kid = overrides.pop("kid", self.kid)
        claims = {
            "aud": [self.audience],
            "email": email,
            "exp": now + 600,
            "iat": now,
            "nbf": now,
            "iss": self.issuer,
            "type": "app",
            "identity_nonce": secrets.token_hex(8),
            "sub": secrets.token_hex(16),
            "country": "CH",
        }
        claims.update(overrides)
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


@contextmanager
def access_team(team_domain: str, audience: str):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    kid = secrets.token_hex(16)
    numbers = key.public_key().public_numbers()
    certs = {
        "keys": [{"kid": kid, "kty": "RSA", "alg": "RS256", "use": "sig", "e": _b64(numbers.e), "n": _b64(numbers.n)}],
        "public_cert": {"kid": kid, "cert": ""},
        "public_certs": [{"kid": kid, "cert": ""}],
    }

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.path != "/cdn-cgi/access/certs":
                self.send_response(404)
                self.end_headers()
                return
            data = json.dumps(certs).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server, url = _serve(Handler)
    try:
        yield AccessTeam(team_domain=team_domain, audience=audience, certs_url=f"{url}/cdn-cgi/access/certs", key=key, kid=kid)
    finally:
        server.shutdown()
