"""mTLS for the local stack with Dapr Sentry: every sidecar, placement and scheduler get their identity
(an X.509 SVID, ``spiffe://<trust domain>/ns/default/<app id>``) from Sentry and talk mTLS only.

Sentry's default validator signs a certificate for any app id it is asked for, so a process that can
reach it could pose as ``workflow`` (measured). Sentry here accepts a request only with a JWT naming the
requester, signed by the stack's own key: the launcher holds the key and gives each process the token
of its own identity (``DAPR_SENTRY_TOKEN_FILE``). Everything lives in ``<run dir>/security`` (0700):
Sentry's CA (it generates ``ca.crt``, ``issuer.crt``, ``issuer.key`` on first start), the signing key,
its JWKS and the tokens (0600). ``make down`` keeps them; ``make clean`` removes them.
"""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

CONTROL_PLANE_TRUST_DOMAIN = "localhost"
APP_TRUST_DOMAIN = "public"  # what daprd asks for when no trust domain is configured
NAMESPACE = "default"
SENTRY_ID = f"spiffe://{CONTROL_PLANE_TRUST_DOMAIN}/ns/{NAMESPACE}/dapr-sentry"
KEY_ID = "taskfan"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _private_file(path: Path, data: bytes) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(data)


class Mtls:
    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir / "security"
        self.ca_dir = self.dir / "ca"
        self.signing_key = self.dir / "signing.key"
        self.jwks = self.dir / "jwks.json"
        self.sentry_config = self.dir / "sentry.yaml"
        self.tokens = self.dir / "tokens"

    @property
    def trust_anchors_file(self) -> Path:
        return self.ca_dir / "ca.crt"

    def has_ca(self) -> bool:
        return self.trust_anchors_file.exists()

    def prepare(self) -> None:
        """The folders, the token-signing key, its JWKS and Sentry's configuration (each made once)."""
        for folder in (self.dir, self.ca_dir, self.tokens):
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o700)
        if not self.signing_key.exists():
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            _private_file(self.signing_key, key.private_bytes(serialization.Encoding.PEM,
                                                              serialization.PrivateFormat.PKCS8,
                                                              serialization.NoEncryption()))
        if not self.jwks.exists():
            numbers = self._key().public_key().public_numbers()
            key = {"kty": "RSA", "kid": KEY_ID, "alg": "RS256", "use": "sig",
                   "n": _b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
                   "e": _b64url(numbers.e.to_bytes(3, "big"))}
            self.jwks.write_text(json.dumps({"keys": [key]}))
        # Sentry standalone needs a Configuration named daprsystem; the JWKS validator replaces the
        # default "insecure" one, which would sign any app id for anyone.
        self.sentry_config.write_text(json.dumps({
            "apiVersion": "dapr.io/v1alpha1", "kind": "Configuration", "metadata": {"name": "daprsystem"},
            "spec": {"mtls": {"enabled": True, "workloadCertTTL": "24h", "allowedClockSkew": "15m",
                              "tokenValidators": [{"name": "jwks", "options": {"source": str(self.jwks)}}]}},
        }))

    def _key(self) -> rsa.RSAPrivateKey:
        key = serialization.load_pem_private_key(self.signing_key.read_bytes(), password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        return key

    def token_file(self, name: str, trust_domain: str = APP_TRUST_DOMAIN) -> Path:
        """The Sentry token of identity ``name`` (an app id, or ``dapr-placement``/``dapr-scheduler``)."""
        path = self.tokens / f"{trust_domain}-{name}"
        if not path.exists():
            header = _b64url(json.dumps({"alg": "RS256", "typ": "JWT", "kid": KEY_ID}).encode())
            claims = _b64url(json.dumps({"sub": f"spiffe://{trust_domain}/ns/{NAMESPACE}/{name}", "aud": SENTRY_ID,
                                         "iat": int(time.time())}).encode())
            signature = self._key().sign(f"{header}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256())
            _private_file(path, f"{header}.{claims}.{_b64url(signature)}".encode())
        return path

    def sentry_command(self, bin_dir: Path, port: int, health_port: int) -> list[str]:
        return [str(bin_dir / "sentry"), "--config", str(self.sentry_config),
                "--issuer-credentials", str(self.ca_dir), "--trust-domain", CONTROL_PLANE_TRUST_DOMAIN,
                "--port", str(port), "--listen-address", "127.0.0.1",
                "--healthz-port", str(health_port), "--healthz-listen-address", "127.0.0.1",
                "--enable-metrics=false", "--log-as-json"]

    def control_plane_args(self, sentry_address: str) -> list[str]:
        return ["--tls-enabled", "--trust-anchors-file", str(self.trust_anchors_file),
                "--sentry-address", sentry_address, "--trust-domain", CONTROL_PLANE_TRUST_DOMAIN]

    def control_plane_env(self, name: str) -> dict[str, str]:
        return {"DAPR_SENTRY_TOKEN_FILE": str(self.token_file(name, CONTROL_PLANE_TRUST_DOMAIN))}

    def sidecar_env(self, app_id: str) -> dict[str, str]:
        # daprd 1.18.1 reads the trust anchors from this variable only (no file flag); they are public.
        return {"DAPR_TRUST_ANCHORS": self.trust_anchors_file.read_text(),
                "DAPR_SENTRY_TOKEN_FILE": str(self.token_file(app_id))}
