"""The launcher's Sentry material: a signing key, its JWKS, and per-identity tokens Sentry can verify."""

import base64
import json
import stat

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from taskfan.stack.mtls import SENTRY_ID, Mtls


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_a_token_names_its_identity_and_verifies_against_the_published_jwks(tmp_path):
    mtls = Mtls(tmp_path)
    mtls.prepare()
    token = mtls.token_file("workflow").read_text()
    header, claims, signature = token.split(".")
    assert json.loads(unb64(claims)) | {"iat": 0} == {"sub": "spiffe://public/ns/default/workflow", "aud": SENTRY_ID,
                                                       "iat": 0}
    key = json.loads(mtls.jwks.read_text())["keys"][0]
    assert json.loads(unb64(header))["kid"] == key["kid"]
    public = rsa.RSAPublicNumbers(int.from_bytes(unb64(key["e"]), "big"),
                                  int.from_bytes(unb64(key["n"]), "big")).public_key()
    public.verify(unb64(signature), f"{header}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256())
    placement = json.loads(unb64(mtls.token_file("dapr-placement", "localhost").read_text().split(".")[1]))
    assert placement["sub"] == "spiffe://localhost/ns/default/dapr-placement"


def test_the_key_and_tokens_are_private_and_made_once(tmp_path):
    mtls = Mtls(tmp_path)
    mtls.prepare()
    key, token = mtls.signing_key.read_bytes(), mtls.token_file("scorer").read_text()
    mtls.prepare()
    assert (mtls.signing_key.read_bytes(), mtls.token_file("scorer").read_text()) == (key, token)
    for path in (mtls.signing_key, mtls.token_file("scorer")):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(mtls.dir.stat().st_mode) == 0o700
    config = json.loads(mtls.sentry_config.read_text())
    assert config["spec"]["mtls"]["tokenValidators"] == [{"name": "jwks", "options": {"source": str(mtls.jwks)}}]
