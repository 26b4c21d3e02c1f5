#!/usr/bin/env python3
"""Independent JOSE checker (joserfc) for fapigate's integration tests.

Subcommands (see README.md):
  verify-detached  UK Open Banking detached JWS (x-jws-signature) over a body
  verify-jwt       compact JWS/JWT signed PS256 / ES256 / EdDSA (Ed25519)
  self-test        round trips with generated keys

Exit 0 on success; exit 1 with a one-line reason on stderr on failure.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
import warnings

from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, OKPKey, RSAKey
from joserfc.jws import JWSRegistry
from joserfc.jwt import JWTClaimsRegistry
from joserfc.registry import HeaderParameter

# EdDSA is "deprecated" by RFC 9864 and joserfc warns; "Ed25519" is its new name.
ALGORITHMS = ["PS256", "ES256", "EdDSA", "Ed25519"]
OB = "http://openbanking.org.uk/"
OB_CRIT = [OB + "iat", OB + "iss", OB + "tan"]


class ToolError(Exception):
    pass


def _registry(extra_headers=None):
    reg = JWSRegistry(header_registry=extra_headers, algorithms=ALGORITHMS, strict_check_header=False)
    # joserfc defaults (512-byte header, 128 kB payload) are too small for
    # real OB headers / bodies.
    reg.max_header_length = 8192
    reg.max_payload_length = 16 * 1024 * 1024
    return reg


def _ob_registry():
    return _registry(
        {
            OB + "iat": HeaderParameter("OB signing time", "int", True),
            OB + "iss": HeaderParameter("OB issuer", "str", True),
            OB + "tan": HeaderParameter("OB trust anchor", "str", True),
        }
    )


def _load_jwks(path):
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise ToolError(f"cannot read JWKS {path}: {e}") from e
    if "keys" not in data:
        data = {"keys": [data]}
    try:
        return KeySet.import_key_set(data)
    except Exception as e:
        raise ToolError(f"cannot import JWKS: {e}") from e


def _header_of(token):
    try:
        return jws.extract_compact(token.encode(), b"x", _ob_registry()).headers()
    except Exception as e:
        raise ToolError(f"malformed compact JWS: {e}") from e


def _key_for(keyset, header):
    kid = header.get("kid")
    if kid is None:
        if len(keyset.keys) == 1:
            return keyset.keys[0]
        raise ToolError('JWS header has no "kid" and the JWKS has several keys')
    for k in keyset.keys:
        if k.kid == kid:
            return k
    raise ToolError(f'no key with kid "{kid}" in JWKS')


def verify_detached(keyset, body, token):
    parts = token.split(".")
    if len(parts) != 3 or parts[1] != "":
        raise ToolError('expected a detached compact JWS "header..signature"')
    header = _header_of(token)
    if "b64" in header:
        raise ToolError('"b64" header present (OB detached JWS must not use RFC 7797)')
    crit = header.get("crit")
    if not isinstance(crit, list) or not set(OB_CRIT) <= set(crit):
        raise ToolError(f'"crit" must list {OB_CRIT}, got {crit!r}')
    missing = [c for c in OB_CRIT if c not in header]
    if missing:
        raise ToolError(f"header lacks critical members {missing}")
    if header.get("alg") not in ALGORITHMS:
        raise ToolError(f'alg {header.get("alg")!r} not allowed')
    key = _key_for(keyset, header)
    try:
        # No b64 header: joserfc base64url-encodes the supplied payload into
        # the signing input (RFC 7515 appendix F detached content).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = jws.deserialize_compact(token, key, registry=_ob_registry(), payload=body)
    except JoseError as e:
        raise ToolError(f"detached JWS verification failed: {type(e).__name__}: {e}") from e
    if obj.payload != body:
        raise ToolError("verified payload differs from the body")
    return obj.headers()


REQUIRED_CLAIMS = ("iss", "aud", "jti", "iat", "data")


def verify_jwt(keyset, token, aud=None, leeway=60):
    header = _header_of(token)
    if header.get("alg") not in ALGORITHMS:
        raise ToolError(f'alg {header.get("alg")!r} not allowed')
    key = _key_for(keyset, header)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tok = jwt.decode(token, key, registry=_registry())
    except JoseError as e:
        raise ToolError(f"JWT signature verification failed: {type(e).__name__}: {e}") from e
    opts = {c: {"essential": True} for c in REQUIRED_CLAIMS}
    if aud is not None:
        opts["aud"] = {"essential": True, "value": aud}
    try:
        JWTClaimsRegistry(leeway=leeway, **opts).validate(tok.claims)
    except JoseError as e:
        raise ToolError(f"JWT claims invalid: {type(e).__name__}: {e}") from e
    return tok.claims


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


def cmd_verify_detached(a):
    try:
        with open(a.body, "rb") as f:
            body = f.read()
    except OSError as e:
        raise ToolError(f"cannot read body: {e}") from e
    print(json.dumps(verify_detached(_load_jwks(a.jwks), body, a.jws.strip())))


def cmd_verify_jwt(a):
    print(json.dumps(verify_jwt(_load_jwks(a.jwks), a.jwt.strip(), a.aud)))


# --------------------------------------------------------------------------
# self-test
# --------------------------------------------------------------------------


def _keys():
    return {
        "PS256": RSAKey.generate_key(2048, parameters={"kid": "rsa-1"}),
        "ES256": ECKey.generate_key("P-256", parameters={"kid": "ec-1"}),
        "EdDSA": OKPKey.generate_key("Ed25519", parameters={"kid": "ed-1"}),
    }


def _sign_detached(key, alg, body, **overrides):
    header = {
        "alg": alg,
        "kid": key.kid,
        "typ": "JOSE",
        "cty": "application/json",
        OB + "iat": int(time.time()),
        OB + "iss": "0015800001041REAAY/abc",
        OB + "tan": "openbanking.org.uk",
        "crit": list(OB_CRIT),
    }
    header.update(overrides)
    header = {k: v for k, v in header.items() if v is not None}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = jws.serialize_compact(header, body, key, registry=_ob_registry())
    h, _, s = full.split(".")
    return f"{h}..{s}"


def self_test():
    results = []

    def check(name, fn):
        try:
            fn()
            results.append((name, None))
        except Exception as e:  # noqa: BLE001
            results.append((name, f"{type(e).__name__}: {e}"))

    def expect_fail(fn):
        try:
            fn()
        except ToolError:
            return
        raise AssertionError("expected a failure, got success")

    keys = _keys()
    pub_set = KeySet([KeySet.import_key_set({"keys": [k.as_dict(private=False)]}).keys[0] for k in keys.values()])
    body = b'{"Data":{"Initiation":{"InstructedAmount":{"Amount":"10.00","Currency":"GBP"}}},"Risk":{}}'

    for alg, key in keys.items():

        def det(alg=alg, key=key):
            # long iss: header well over joserfc's default 512-byte limit
            tok = _sign_detached(key, alg, body, **{OB + "iss": "C=GB, O=OpenBanking, OU=0015800001041REAAY, CN=" + "x" * 400})
            hdr = verify_detached(pub_set, body, tok)
            assert hdr["kid"] == key.kid and hdr["alg"] == alg
            expect_fail(lambda: verify_detached(pub_set, body + b" ", tok))

        check(f"detached JWS round trip + tamper ({alg})", det)

        def jwt_rt(alg=alg, key=key):
            now = int(time.time())
            claims = {"iss": "https://as.example", "aud": "client-1", "jti": str(uuid.uuid4()), "iat": now,
                      "exp": now + 300, "data": {"x": 1}}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tok = jwt.encode({"alg": alg, "kid": key.kid}, claims, key, registry=_registry())
            assert verify_jwt(pub_set, tok, aud="client-1") == claims
            expect_fail(lambda: verify_jwt(pub_set, tok, aud="someone-else"))
            h, p, s = tok.split(".")
            expect_fail(lambda: verify_jwt(pub_set, f"{h}.{p}.{s[:-4]}AAAA"))

        check(f"JWT round trip + wrong aud + bad sig ({alg})", jwt_rt)

    def det_neg():
        key = keys["PS256"]
        # crit lacking tan
        tok = _sign_detached(key, "PS256", body, crit=[OB + "iat", OB + "iss"])
        expect_fail(lambda: verify_detached(pub_set, body, tok))
        # b64=false (RFC 7797) is rejected
        tok = _sign_detached(key, "PS256", body, b64=False, crit=OB_CRIT + ["b64"])
        expect_fail(lambda: verify_detached(pub_set, body, tok))
        # unknown kid
        tok = _sign_detached(key, "PS256", body, kid="nope")
        expect_fail(lambda: verify_detached(pub_set, body, tok))

    check("detached JWS negatives (crit, b64, kid)", det_neg)

    def jwt_missing_claim():
        key = keys["ES256"]
        claims = {"iss": "x", "aud": "y", "jti": "z", "iat": int(time.time())}
        tok = jwt.encode({"alg": "ES256", "kid": key.kid}, claims, key, registry=_registry())
        expect_fail(lambda: verify_jwt(pub_set, tok))

    check("JWT without data claim rejected", jwt_missing_claim)

    def cli():
        key = keys["ES256"]
        with tempfile.TemporaryDirectory() as d:
            jp, bp = os.path.join(d, "jwks.json"), os.path.join(d, "body")
            with open(jp, "w") as f:
                json.dump(pub_set.as_dict(private=False), f)
            with open(bp, "wb") as f:
                f.write(body)
            tok = _sign_detached(key, "ES256", body)
            me = [sys.executable, os.path.abspath(__file__)]
            p = subprocess.run(me + ["verify-detached", "--jwks", jp, "--body", bp, "--jws", tok], capture_output=True, text=True)
            assert p.returncode == 0, p.stderr
            assert json.loads(p.stdout)[OB + "tan"] == "openbanking.org.uk"
            with open(bp, "ab") as f:
                f.write(b"x")
            p = subprocess.run(me + ["verify-detached", "--jwks", jp, "--body", bp, "--jws", tok], capture_output=True, text=True)
            assert p.returncode == 1 and p.stderr.count("\n") == 1, (p.returncode, p.stderr)

    check("verify-detached CLI + failure exit code", cli)

    failed = 0
    for name, err in results:
        if err is None:
            print(f"ok   {name}")
        else:
            failed += 1
            print(f"FAIL {name}: {err}")
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("verify-detached", help="verify an OB detached JWS over a body")
    d.add_argument("--jwks", required=True)
    d.add_argument("--body", required=True, help="file with the exact body bytes")
    d.add_argument("--jws", required=True, help='"header..signature"')
    d.set_defaults(fn=cmd_verify_detached)
    j = sub.add_parser("verify-jwt", help="verify a compact JWS/JWT; print claims")
    j.add_argument("--jwks", required=True)
    j.add_argument("--jwt", required=True)
    j.add_argument("--aud", default=None)
    j.set_defaults(fn=cmd_verify_jwt)
    sub.add_parser("self-test")
    a = p.parse_args(argv)
    if a.cmd == "self-test":
        return self_test()
    try:
        a.fn(a)
    except ToolError as e:
        print(f"{a.cmd}: {e}".replace("\n", " "), file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001
        print(f"{a.cmd}: {type(e).__name__}: {e}".replace("\n", " "), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
