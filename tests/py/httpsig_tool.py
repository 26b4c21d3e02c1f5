#!/usr/bin/env python3
"""Independent RFC 9421 / RFC 9530 checker for fapigate's integration tests.

Everything cryptographic and every signature base here is produced by the
PyPI package ``http-message-signatures`` (pyauth) and ``cryptography``; JWK
parsing uses ``joserfc``. None of it shares code with fapigate.

``;req`` and ``;key`` (RFC 9421 sections 2.4 and 2.1.2) are handled natively by
http-message-signatures >= 3.0, so the tool does NOT build any part of the
signature base itself. The only hand-built signature base is in ``self-test``
(``_expected_reqres_base``): a literal written from the RFC text, used to
cross-check the library's ``;req`` / ``;key`` output.

Subcommands (see README.md):
  verify-response  verify a signed response (+ the request it answers)
  sign-request     sign a request, print the headers to add
  self-test        RFC 9421 Appendix B vectors + round trips

Exit 0 on success; exit 1 with a one-line reason on stderr on failure.
"""

import argparse
import base64
import datetime
import json
import os
import subprocess
import sys
import tempfile
import warnings

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from http_message_signatures import (
    ContentDigest,
    HTTPMessageSigner,
    HTTPMessageVerifier,
    HTTPSignatureKeyResolver,
    algorithms,
)
from joserfc.jwk import import_key

ALGS = {
    "ed25519": algorithms.ED25519,
    "ecdsa-p256-sha256": algorithms.ECDSA_P256_SHA256,
    "rsa-pss-sha512": algorithms.RSA_PSS_SHA512,
}


class ToolError(Exception):
    pass


# --------------------------------------------------------------------------
# Message model: the JSON files described in README.md
# --------------------------------------------------------------------------


class Headers:
    """Ordered field lines; the mapping interface http-message-signatures needs."""

    def __init__(self, pairs=()):
        self.pairs = [(str(n), str(v)) for n, v in pairs]

    def items(self):
        return list(self.pairs)

    def __iter__(self):
        return iter(dict.fromkeys(n for n, _ in self.pairs))

    def __contains__(self, name):
        return any(n.lower() == name.lower() for n, _ in self.pairs)

    def __getitem__(self, name):
        vals = [v for n, v in self.pairs if n.lower() == name.lower()]
        if not vals:
            raise KeyError(name)
        return ", ".join(vals)

    def __setitem__(self, name, value):
        self.__delitem__(name)
        self.pairs.append((name, value))

    def __delitem__(self, name):
        self.pairs = [(n, v) for n, v in self.pairs if n.lower() != name.lower()]


class Request:
    def __init__(self, method, url, headers, body):
        self.method, self.url, self.headers, self.body = method, url, headers, body


class Response:
    def __init__(self, status_code, headers, body, request):
        self.status_code, self.headers, self.body, self.request = status_code, headers, body, request


def _b64(data):
    return base64.b64encode(data).decode()


def _load_json(path):
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise ToolError(f"cannot read JSON file {path}: {e}") from e


def _body(obj):
    try:
        return base64.b64decode(obj.get("body_b64") or "", validate=True)
    except ValueError as e:
        raise ToolError(f"body_b64 is not valid base64: {e}") from e


def request_from_json(obj):
    for k in ("method", "url"):
        if k not in obj:
            raise ToolError(f'request JSON lacks "{k}"')
    return Request(obj["method"], obj["url"], Headers(obj.get("headers", [])), _body(obj))


def response_from_json(obj, request):
    if "status" not in obj:
        raise ToolError('response JSON lacks "status"')
    return Response(int(obj["status"]), Headers(obj.get("headers", [])), _body(obj), request)


# --------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------

_KEY_TYPES = {
    "ed25519": (ed25519.Ed25519PublicKey, ed25519.Ed25519PrivateKey),
    "ecdsa-p256-sha256": (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey),
    "rsa-pss-sha512": (rsa.RSAPublicKey, rsa.RSAPrivateKey),
}


def key_from_jwk(jwk, alg, private):
    """cryptography key object from a JWK dict (parsed by joserfc)."""
    if isinstance(jwk, dict) and "keys" in jwk:  # tolerate a one-key JWKS
        if len(jwk["keys"]) != 1:
            raise ToolError("JWK file is a JWKS with more than one key")
        jwk = jwk["keys"][0]
    try:
        k = import_key(jwk)
    except Exception as e:
        raise ToolError(f"cannot import JWK: {e}") from e
    if private:
        if not k.is_private:
            raise ToolError("JWK is not a private key")
        key = k.private_key
    else:
        key = k.public_key
    want = _KEY_TYPES[alg][1 if private else 0]
    if not isinstance(key, want):
        raise ToolError(f"JWK key type does not match alg {alg}")
    return key


class SingleKeyResolver(HTTPSignatureKeyResolver):
    def __init__(self, public=None, private=None, expect_keyid=None):
        self.public, self.private, self.expect_keyid = public, private, expect_keyid
        self.seen_keyid = None

    def _check(self, key_id):
        self.seen_keyid = key_id
        if self.expect_keyid is not None and key_id != self.expect_keyid:
            raise ToolError(f'signature keyid "{key_id}" != expected "{self.expect_keyid}"')

    def resolve_public_key(self, key_id):
        self._check(key_id)
        return self.public

    def resolve_private_key(self, key_id):
        self._check(key_id)
        return self.private


# --------------------------------------------------------------------------
# Core operations (used by the CLI and by self-test)
# --------------------------------------------------------------------------


def verify_response(
    response,
    public_key,
    alg,
    *,
    label=None,
    require_tag=None,
    require_any_tag=True,
    require_components=("@status",),
    max_age=300,
    expect_keyid=None,
):
    """Verify a response signature (with ;req components from response.request)
    and its Content-Digest. Returns a JSON-able summary; raises on failure."""
    resolver = SingleKeyResolver(public=public_key, expect_keyid=expect_keyid)
    verifier = HTTPMessageVerifier(signature_algorithm=ALGS[alg], key_resolver=resolver)
    if label is not None and require_tag is None:
        verifier.allow_label_only_selection = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            results = verifier.verify(
                response,
                max_age=None if max_age is None else datetime.timedelta(seconds=max_age),
                expect_tag=require_tag,
                expect_label=label,
                require_components=list(require_components),
                # The library checks the signed Content-Digest against these
                # bytes and insists that a non-empty body has a covered digest.
                body=response.body,
            )
    except ToolError:
        raise
    except Exception as e:
        cause = e.__cause__ if isinstance(e.__cause__, ToolError) else e
        raise ToolError(f"signature verification failed: {type(cause).__name__}: {cause}") from e
    if len(results) != 1:
        raise ToolError(f"expected exactly one selected signature, got {len(results)}")
    r = results[0]
    if "created" not in r.parameters:
        raise ToolError('signature lacks "created"')
    if require_any_tag and "tag" not in r.parameters:
        raise ToolError('signature lacks "tag"')
    # Belt and braces: the Content-Digest field itself must match the body
    # whenever it is present (library helper; sha-256 / sha-512).
    if "content-digest" in response.headers:
        try:
            ContentDigest.verify(response.headers["content-digest"], response.body)
        except Exception as e:
            raise ToolError(f"response Content-Digest mismatch: {e}") from e
    elif response.body:
        raise ToolError("response has a body but no Content-Digest")
    return {
        "label": r.label,
        "parameters": r.parameters,
        "covered_components": list(r.covered_components.keys()),
        "signature_base": "\n".join(f"{k}: {v}" for k, v in r.covered_components.items()),
        "digest_verified": r.body is not None,
    }


DEFAULT_REQUEST_COMPONENTS = ["@method", "@target-uri", "authorization", "dpop", "content-digest"]


def sign_request(
    request,
    private_key,
    alg,
    keyid,
    *,
    label="sig1",
    tag="fapi-2-request",
    components=None,
    created=None,
    expires=None,
    nonce=None,
    include_alg=True,
):
    """Sign ``request`` in place with the library; return the header pairs added."""
    explicit = components is not None
    comps = list(DEFAULT_REQUEST_COMPONENTS if components is None else components)
    have_digest = "content-digest" in request.headers
    if not request.body and not have_digest:
        # Nothing to digest: an empty body gets no Content-Digest.
        comps = [c for c in comps if c.strip('"') != "content-digest"]
    if not explicit:
        # Default list: drop optional fields the request does not carry.
        comps = [c for c in comps if c.startswith("@") or c == "content-digest" or c in request.headers]
    before = set(request.headers.items())
    signer = HTTPMessageSigner(
        signature_algorithm=ALGS[alg], key_resolver=SingleKeyResolver(private=private_key)
    )
    when = datetime.datetime.now(datetime.timezone.utc) if created is None else created
    try:
        signer.sign(
            request,
            key_id=keyid,
            created=datetime.datetime.fromtimestamp(when, datetime.timezone.utc) if isinstance(when, int) else when,
            expires=None if expires is None else datetime.datetime.fromtimestamp(expires, datetime.timezone.utc),
            nonce=nonce,
            label=label,
            tag=tag,
            include_alg=include_alg,
            covered_component_ids=comps,
            # Non-empty body: the library adds Content-Digest (sha-256) and
            # covers it; an existing Content-Digest is checked against the body.
            body=request.body if request.body else None,
            use_existing_digest=have_digest,
        )
    except Exception as e:
        raise ToolError(f"signing failed: {type(e).__name__}: {e}") from e
    return [[n, v] for n, v in request.headers.items() if (n, v) not in before]


def verify_request(request, public_key, alg, *, tag=None, label=None, max_age=300, check_body=True):
    """Library verification of a signed request (self-test round trips)."""
    verifier = HTTPMessageVerifier(signature_algorithm=ALGS[alg], key_resolver=SingleKeyResolver(public=public_key))
    if label is not None and tag is None:
        verifier.allow_label_only_selection = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return verifier.verify(
            request,
            expect_tag=tag,
            expect_label=label,
            max_age=None if max_age is None else datetime.timedelta(seconds=max_age),
            body=request.body if check_body else None,
        )


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


def cmd_verify_response(a):
    req = request_from_json(_load_json(a.request))
    resp = response_from_json(_load_json(a.response), req)
    key = key_from_jwk(_load_json(a.jwk), a.alg, private=False)
    out = verify_response(
        resp,
        key,
        a.alg,
        label=a.label,
        require_tag=a.require_tag,
        require_components=["@status"] + list(a.require or []),
        max_age=None if a.max_age < 0 else a.max_age,
        expect_keyid=a.expect_keyid,
    )
    print(json.dumps(out, indent=2))


def cmd_sign_request(a):
    req = request_from_json(_load_json(a.request))
    key = key_from_jwk(_load_json(a.jwk), a.alg, private=True)
    added = sign_request(
        req,
        key,
        a.alg,
        a.keyid,
        label=a.label,
        tag=a.tag,
        components=a.components,
        created=a.created,
        expires=a.expires,
        nonce=a.nonce,
        include_alg=not a.no_alg,
    )
    print(json.dumps({"headers": added}))


# --------------------------------------------------------------------------
# self-test
# --------------------------------------------------------------------------

RFC_ED25519_JWK = {
    "kty": "OKP",
    "crv": "Ed25519",
    "kid": "test-key-ed25519",
    "x": "JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs",
    "d": "n4Ni-HpISpVObnQMW0wOhCKROaIKqKtW_2ZYb2p9KcU",
}
RFC_P256_PUB_JWK = {
    "kty": "EC",
    "crv": "P-256",
    "kid": "test-key-ecc-p256",
    "x": "qIVYZVLCrPZHGHjP17CTW0_-D9Lfw0EkjqF7xB4FivA",
    "y": "Mc4nN9LTDOBhfoUeg8Ye9WedFRhnZXZJA12Qp0zZ6F0",
}
RFC_REQ_BODY = b'{"hello": "world"}'
RFC_REQ_DIGEST = "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:"


def _rfc_request():
    # RFC 9421 Appendix B.2 test request
    return Request(
        "POST",
        "http://example.com/foo?param=Value&Pet=dog",
        Headers(
            [
                ("Host", "example.com"),
                ("Date", "Tue, 20 Apr 2021 02:07:55 GMT"),
                ("Content-Type", "application/json"),
                ("Content-Digest", RFC_REQ_DIGEST),
                ("Content-Length", "18"),
            ]
        ),
        RFC_REQ_BODY,
    )


def _gen_key(alg):
    if alg == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if alg == "ecdsa-p256-sha256":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _jwk_of(priv, private):
    from joserfc.jwk import ECKey, OKPKey, RSAKey

    cls = {ed25519.Ed25519PrivateKey: OKPKey, ec.EllipticCurvePrivateKey: ECKey, rsa.RSAPrivateKey: RSAKey}
    for t, c in cls.items():
        if isinstance(priv, t):
            return c.import_key(priv).as_dict(private=private)
    raise AssertionError("unknown key")


def _sign_response(resp, priv, alg, comps, *, label="sig1", tag="fapi-2-response", created=None):
    signer = HTTPMessageSigner(signature_algorithm=ALGS[alg], key_resolver=SingleKeyResolver(private=priv))
    signer.sign(
        resp,
        key_id="srv",
        label=label,
        tag=tag,
        created=created,
        covered_component_ids=comps,
        body=resp.body if resp.body else None,
    )


def _expected_reqres_base(resp, req, label):
    """Hand-built RFC 9421 §2.4/§2.1.2 signature base for REQRES_COMPONENTS.

    INDEPENDENT of the library: written straight from the RFC text (field
    values, and for ;key the serialized Dictionary member: a Byte Sequence is
    ``:base64:``, the Signature-Input member is the Inner List as sent).
    Only the simple single-label case is handled.
    """
    sig_hdr = req.headers["signature"]
    sig_in_hdr = req.headers["signature-input"]
    assert sig_hdr.startswith(label + "=") and sig_in_hdr.startswith(label + "=")
    lines = [
        f'"@status": {resp.status_code}',
        f'"content-digest": {resp.headers["content-digest"]}',
        f'"@method";req: {req.method}',
        f'"@target-uri";req: {req.url}',
        f'"@authority";req: {req.url.split("://", 1)[1].split("/", 1)[0].lower()}',
        f'"content-digest";req: {req.headers["content-digest"]}',
        f'"signature";req;key="{label}": {sig_hdr[len(label) + 1:]}',
        f'"signature-input";req;key="{label}": {sig_in_hdr[len(label) + 1:]}',
    ]
    return lines


REQRES_COMPONENTS = [
    "@status",
    "content-digest",
    '"@method";req',
    '"@target-uri";req',
    '"@authority";req',
    '"content-digest";req',
    '"signature";req;key="sig1"',
    '"signature-input";req;key="sig1"',
]


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
        raise AssertionError("expected a verification failure, got success")

    ed_priv = key_from_jwk(RFC_ED25519_JWK, "ed25519", private=True)
    ed_pub = key_from_jwk(RFC_ED25519_JWK, "ed25519", private=False)
    p256_pub = key_from_jwk(RFC_P256_PUB_JWK, "ecdsa-p256-sha256", private=False)

    # B.2.6: deterministic ed25519 request signature
    def b26():
        req = _rfc_request()
        signer = HTTPMessageSigner(signature_algorithm=algorithms.ED25519, key_resolver=SingleKeyResolver(private=ed_priv))
        signer.sign(
            req,
            key_id="test-key-ed25519",
            label="sig-b26",
            created=datetime.datetime.fromtimestamp(1618884473, datetime.timezone.utc),
            include_alg=False,
            covered_component_ids=["date", "@method", "@path", "@authority", "content-type", "content-length"],
            use_existing_digest=True,  # B.2.6 does not cover the digest
        )
        want_in = 'sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519"'
        want_sig = "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:"
        assert req.headers["signature-input"] == want_in, req.headers["signature-input"]
        assert req.headers["signature"] == want_sig, req.headers["signature"]
        verify_request(req, ed_pub, "ed25519", max_age=None, check_body=False)

    check("RFC9421 B.2.6 ed25519 deterministic signature", b26)

    # B.2.4: ecdsa-p256 response signature (verify only), incl. Content-Digest
    def b24():
        resp = Response(
            200,
            Headers(
                [
                    ("Date", "Tue, 20 Apr 2021 02:07:56 GMT"),
                    ("Content-Type", "application/json"),
                    ("Content-Digest", "sha-512=:mEWXIS7MaLRuGgxOBdODa3xqM1XdEvxoYhvlCFJ41QJgJc4GTsPp29l5oGX69wWdXymyU0rjJuahq4l5aGgfLQ==:"),
                    ("Content-Length", "23"),
                    ("Signature-Input", 'sig-b24=("@status" "content-type" "content-digest" "content-length");created=1618884473;keyid="test-key-ecc-p256"'),
                    ("Signature", "sig-b24=:wNmSUAhwb5LxtOtOpNa6W5xj067m5hFrj0XQ4fvpaCLx0NKocgPquLgyahnzDnDAUy5eCdlYUEkLIj+32oiasw==:"),
                ]
            ),
            b'{"message": "good dog"}',
            _rfc_request(),
        )
        out = verify_response(resp, p256_pub, "ecdsa-p256-sha256", require_any_tag=False, max_age=None)
        assert out["digest_verified"]
        # tamper with the body -> must fail
        resp.body = b'{"message": "bad dog!"}'
        expect_fail(lambda: verify_response(resp, p256_pub, "ecdsa-p256-sha256", require_any_tag=False, max_age=None))

    check("RFC9421 B.2.4 ecdsa-p256 response verification", b24)

    # §2.4: response signature covering request components with ;req
    def sec24():
        body = b'{"busy": true, "message": "Your call is very important to us"}'
        resp = Response(
            503,
            Headers(
                [
                    ("Date", "Tue, 20 Apr 2021 02:07:56 GMT"),
                    ("Content-Type", "application/json"),
                    ("Content-Length", "62"),
                    ("Content-Digest", "sha-512=:0Y6iCBzGg5rZtoXS95Ijz03mslf6KAMCloESHObfwnHJDbkkWWQz6PhhU9kxsTbARtY2PTBOzq24uJFpHsMuAg==:"),
                    ("Signature-Input", 'reqres=("@status" "content-digest" "content-type" "@authority";req "@method";req "@path";req "content-digest";req);created=1618884479;keyid="test-key-ecc-p256"'),
                    ("Signature", "reqres=:dMT/A/76ehrdBTD/2Xx8QuKV6FoyzEP/I9hdzKN8LQJLNgzU4W767HK05rx1i8meNQQgQPgQp8wq2ive3tV5Ag==:"),
                ]
            ),
            body,
            _rfc_request(),
        )
        out = verify_response(resp, p256_pub, "ecdsa-p256-sha256", require_any_tag=False, max_age=None)
        want_base = "\n".join(
            [
                '"@status": 503',
                '"content-digest": sha-512=:0Y6iCBzGg5rZtoXS95Ijz03mslf6KAMCloESHObfwnHJDbkkWWQz6PhhU9kxsTbARtY2PTBOzq24uJFpHsMuAg==:',
                '"content-type": application/json',
                '"@authority";req: example.com',
                '"@method";req: POST',
                '"@path";req: /foo',
                '"content-digest";req: ' + RFC_REQ_DIGEST,
                '"@signature-params": ("@status" "content-digest" "content-type" "@authority";req "@method";req "@path";req "content-digest";req);created=1618884479;keyid="test-key-ecc-p256"',
            ]
        )
        assert out["signature_base"] == want_base, out["signature_base"]
        # the same response against a different request must fail
        resp.request = Request("PUT", "http://example.com/foo", _rfc_request().headers, RFC_REQ_BODY)
        expect_fail(lambda: verify_response(resp, p256_pub, "ecdsa-p256-sha256", require_any_tag=False, max_age=None))

    check("RFC9421 §2.4 ;req response signature (ecdsa-p256)", sec24)

    # ;req;key: library base vs. a hand-built base, and crypto check over the
    # hand-built base with cryptography directly.
    def reqkey():
        req = Request("POST", "https://rs.example.com:8443/accounts?x=1", Headers([("Content-Type", "application/json")]), b'{"a":1}')
        for n, v in sign_request(req, ed_priv, "ed25519", "client-key", created=1700000000):
            pass
        resp = Response(201, Headers([("Content-Type", "application/json")]), b'{"id":"42"}', req)
        _sign_response(resp, ed_priv, "ed25519", REQRES_COMPONENTS, created=datetime.datetime.now(datetime.timezone.utc))
        out = verify_response(resp, ed_pub, "ed25519", require_tag="fapi-2-response", label="sig1",
                              require_components=REQRES_COMPONENTS)
        lines = _expected_reqres_base(resp, req, "sig1")
        sig_in = resp.headers["signature-input"]
        assert sig_in.startswith("sig1=")
        lines.append(f'"@signature-params": {sig_in[5:]}')
        hand = "\n".join(lines)
        assert out["signature_base"] == hand, f"library base differs from hand-built base:\n{out['signature_base']}\n---\n{hand}"
        sig = base64.b64decode(resp.headers["signature"][len("sig1=:"):-1])
        ed_pub.verify(sig, hand.encode())  # raises on mismatch
        # tamper with the request's signature -> must fail
        req.headers["signature"] = "sig1=:" + _b64(b"\0" * 64) + ":"
        expect_fail(lambda: verify_response(resp, ed_pub, "ed25519", require_tag="fapi-2-response", label="sig1"))

    check('";req;key" signature/signature-input coverage vs hand-built base', reqkey)

    def neg_tag():
        req = Request("GET", "https://as.example/x", Headers([]), b"")
        resp = Response(200, Headers([]), b"{}", req)
        _sign_response(resp, ed_priv, "ed25519", ["@status", '"@method";req'], tag="other")
        expect_fail(lambda: verify_response(resp, ed_pub, "ed25519", require_tag="fapi-2-response"))
        resp2 = Response(200, Headers([]), b"{}", req)
        _sign_response(resp2, ed_priv, "ed25519", ["@status", '"@method";req'], tag=None)
        expect_fail(lambda: verify_response(resp2, ed_pub, "ed25519"))
        resp3 = Response(200, Headers([]), b"{}", req)
        _sign_response(resp3, ed_priv, "ed25519", ['"@method";req'])
        expect_fail(lambda: verify_response(resp3, ed_pub, "ed25519"))  # no @status

    check("negative: wrong tag / missing tag / missing @status rejected", neg_tag)

    # sign-request -> self-verify round trip, every algorithm, via the CLI
    for alg in ALGS:

        def rt(alg=alg):
            priv = _gen_key(alg)
            with tempfile.TemporaryDirectory() as d:
                kp, reqp = os.path.join(d, "k.json"), os.path.join(d, "req.json")
                with open(kp, "w") as f:
                    json.dump(_jwk_of(priv, True), f)
                reqj = {
                    "method": "POST",
                    "url": "https://127.0.0.1:8443/open-banking/v3.1/pisp/domestic-payments?a=b",
                    "headers": [["Authorization", "DPoP abc"], ["DPoP", "eyJ.x.y"], ["Content-Type", "application/json"]],
                    "body_b64": _b64(b'{"Data":{"x":1}}'),
                }
                with open(reqp, "w") as f:
                    json.dump(reqj, f)
                p = subprocess.run(
                    [sys.executable, os.path.abspath(__file__), "sign-request", "--jwk", kp, "--alg", alg,
                     "--keyid", "client-1", "--request", reqp],
                    capture_output=True, text=True,
                )
                assert p.returncode == 0, p.stderr
                added = json.loads(p.stdout)["headers"]
                names = sorted(n.lower() for n, _ in added)
                assert names == ["content-digest", "signature", "signature-input"], names
                req = request_from_json({**reqj, "headers": reqj["headers"] + added})
                si = req.headers["signature-input"]
                for c in ('"@method"', '"@target-uri"', '"authorization"', '"dpop"', '"content-digest"', 'tag="fapi-2-request"', 'keyid="client-1"', "created="):
                    assert c in si, f"{c} missing from {si}"
                res = verify_request(req, priv.public_key(), alg, tag="fapi-2-request")
                assert res[0].body is not None  # digest checked
                req.body = b'{"Data":{"x":2}}'
                try:
                    verify_request(req, priv.public_key(), alg, tag="fapi-2-request")
                except Exception:
                    pass
                else:
                    raise AssertionError("tampered body verified")

        check(f"sign-request round trip ({alg})", rt)

    # verify-response via the CLI (files), ;req + ;key components
    def cli_verify():
        priv = _gen_key("ecdsa-p256-sha256")
        req = Request("POST", "https://localhost:8443/token", Headers([("Content-Type", "application/x-www-form-urlencoded")]), b"grant_type=x")
        sign_request(req, priv, "ecdsa-p256-sha256", "c1")
        resp = Response(200, Headers([("Content-Type", "application/json")]), b'{"ok":true}', req)
        _sign_response(resp, priv, "ecdsa-p256-sha256", REQRES_COMPONENTS)
        with tempfile.TemporaryDirectory() as d:
            paths = {n: os.path.join(d, n + ".json") for n in ("k", "req", "resp")}
            for n, obj in (
                ("k", _jwk_of(priv, False)),
                ("req", {"method": req.method, "url": req.url, "headers": req.headers.items(), "body_b64": _b64(req.body)}),
                ("resp", {"status": resp.status_code, "headers": resp.headers.items(), "body_b64": _b64(resp.body)}),
            ):
                with open(paths[n], "w") as f:
                    json.dump(obj, f)
            base = [sys.executable, os.path.abspath(__file__), "verify-response", "--jwk", paths["k"],
                    "--alg", "ecdsa-p256-sha256", "--response", paths["resp"], "--request", paths["req"],
                    "--label", "sig1", "--require-tag", "fapi-2-response"]
            p = subprocess.run(base, capture_output=True, text=True)
            assert p.returncode == 0, p.stderr
            assert '"signature";req;key="sig1"' in json.loads(p.stdout)["covered_components"]
            p = subprocess.run(base[:-1] + ["fapi-2-request"], capture_output=True, text=True)
            assert p.returncode == 1 and p.stderr.count("\n") == 1, (p.returncode, p.stderr)

    check("verify-response CLI (;req/;key) + failure exit code", cli_verify)

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

    v = sub.add_parser("verify-response", help="verify a signed response against its request")
    v.add_argument("--jwk", required=True, help="public JWK file")
    v.add_argument("--alg", required=True, choices=sorted(ALGS))
    v.add_argument("--response", required=True)
    v.add_argument("--request", required=True)
    v.add_argument("--label", default=None, help="signature label to select (e.g. sig1)")
    v.add_argument("--require-tag", default=None, help="tag the signature must carry (e.g. fapi-2-response)")
    v.add_argument("--require", nargs="*", default=[], metavar="COMPONENT",
                   help='extra components that must be covered, e.g. \'"@method";req\' content-digest')
    v.add_argument("--expect-keyid", default=None)
    v.add_argument("--max-age", type=int, default=300, help="max signature age in seconds; -1 disables")
    v.set_defaults(fn=cmd_verify_response)

    s = sub.add_parser("sign-request", help="sign a request; print the headers to add")
    s.add_argument("--jwk", required=True, help="private JWK file")
    s.add_argument("--alg", required=True, choices=sorted(ALGS))
    s.add_argument("--keyid", required=True)
    s.add_argument("--request", required=True)
    s.add_argument("--label", default="sig1")
    s.add_argument("--tag", default="fapi-2-request", help='use --tag "" for no tag')
    s.add_argument("--components", nargs="+", default=None)
    s.add_argument("--created", type=int, default=None, help="UNIX time (default: now)")
    s.add_argument("--expires", type=int, default=None)
    s.add_argument("--nonce", default=None)
    s.add_argument("--no-alg", action="store_true", help='omit the "alg" signature parameter')
    s.set_defaults(fn=cmd_sign_request)

    t = sub.add_parser("self-test")
    t.set_defaults(fn=None)

    a = p.parse_args(argv)
    if a.cmd == "self-test":
        return self_test()
    if a.cmd == "sign-request" and a.tag == "":
        a.tag = None
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
