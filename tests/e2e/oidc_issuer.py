"""A small OIDC issuer on 127.0.0.1 standing in for GitHub Actions' in the trusted-publishing
tests: its discovery document, its JWKS (an RSA and an EC P-256 key), and the token-request
endpoint a job calls (`ACTIONS_ID_TOKEN_REQUEST_URL`), which signs a token with the audience
asked for and the claims the test prepared for that request token."""

import base64
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Prepared:
    """What the token for one request token is to be: claims over the defaults, and how it is
    signed ("rsa", "ec", "none": unsigned, "forged": by a key the issuer never published, or
    "unknown-kid"); with `reuse`, every request gets the first token again (a replay)."""

    claims: dict
    signing: str = "rsa"
    reuse: bool = False
    tokens: list = field(default_factory=list)


class Issuer:
    def __init__(self):
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.prepared: dict[str, Prepared] = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def jwks(self) -> dict:
        rsa_key = json.loads(RSAAlgorithm.to_jwk(self.rsa.public_key()))
        ec_key = json.loads(ECAlgorithm.to_jwk(self.ec.public_key()))
        return {
            "keys": [
                {**rsa_key, "kid": "rsa-1", "alg": "RS256", "use": "sig"},
                {**ec_key, "kid": "ec-1", "alg": "ES256", "use": "sig"},
            ]
        }

    def github_claims(self, repository: str, workflow: str = "release.yml", ref: str = "refs/heads/main") -> dict:
        now = int(time.time())
        workflow_ref = f"{repository}/.github/workflows/{workflow}@{ref}"
        return {
            "iss": self.url,
            "sub": f"repo:{repository}:ref:{ref}",
            "iat": now,
            "nbf": now,
            "exp": now + 300,
            "jti": secrets.token_hex(16),
            "repository": repository,
            "repository_owner": repository.split("/")[0],
            "job_workflow_ref": workflow_ref,
            "workflow_ref": workflow_ref,
            "ref": ref,
            "run_id": "4242",
            "sha": "0123456789abcdef0123456789abcdef01234567",
        }

    def gitlab_claims(self, project: str, config: str = ".gitlab-ci.yml", ref: str = "main") -> dict:
        now = int(time.time())
        return {
            "iss": self.url,
            "sub": f"project_path:{project}:ref_type:branch:ref:{ref}",
            "iat": now,
            "nbf": now,
            "exp": now + 300,
            "jti": secrets.token_hex(16),
            "project_path": project,
            "namespace_path": project.rsplit("/", 1)[0],
            "ci_config_ref_uri": f"gitlab.example.com/{project}//{config}@refs/heads/{ref}",
            "ref": ref,
            "ref_type": "branch",
            "ref_path": f"refs/heads/{ref}",
            "pipeline_id": "777",
            "sha": "89abcdef0123456789abcdef0123456789abcdef",
        }

    def prepare(self, claims: dict, signing: str = "rsa", reuse: bool = False) -> str:
        """A request token whose token request is answered with `claims` (None values are
        dropped) signed as `signing` says."""
        request_token = secrets.token_hex(16)
        self.prepared[request_token] = Prepared(claims, signing, reuse)
        return request_token

    def sign(self, claims: dict, signing: str = "rsa") -> str:
        claims = {k: v for k, v in claims.items() if v is not None}
        if signing == "none":
            header = b64url(json.dumps({"alg": "none", "typ": "JWT", "kid": "rsa-1"}).encode())
            return f"{header}.{b64url(json.dumps(claims).encode())}."
        key, alg, kid = {
            "rsa": (self.rsa, "RS256", "rsa-1"),
            "ec": (self.ec, "ES256", "ec-1"),
            "forged": (self.forger, "RS256", "rsa-1"),
            "unknown-kid": (self.rsa, "RS256", "rsa-unknown"),
        }[signing]
        return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})

    def _handler(self):
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def answer(self, status: int, body: dict):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                url = urlparse(self.path)
                if url.path == "/.well-known/openid-configuration":
                    return self.answer(200, {"issuer": issuer.url, "jwks_uri": f"{issuer.url}/jwks"})
                if url.path == "/jwks":
                    return self.answer(200, issuer.jwks())
                if url.path == "/token":
                    presented = self.headers.get("Authorization", "").removeprefix("Bearer ")
                    prepared = issuer.prepared.get(presented)
                    if prepared is None:
                        return self.answer(401, {"message": "bad request token"})
                    audience = parse_qs(url.query).get("audience", [None])[0]
                    if prepared.reuse and prepared.tokens:
                        token = prepared.tokens[0]
                    else:
                        token = issuer.sign({"aud": audience, **prepared.claims}, prepared.signing)
                    prepared.tokens.append(token)
                    return self.answer(200, {"count": 1, "value": token})
                self.answer(404, {"message": "not found"})

        return Handler
