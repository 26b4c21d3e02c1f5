#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into fuzz/corpus/<target>/.

Seeds come from the tests' own inputs and the RFC examples; libFuzzer grows them, and
`cargo fuzz cmin` minimises what is committed. Inputs with several parts separate them with
0xFF (src/fuzzing.rs `parts`). Run from anywhere: python3 fuzz/seed.py
"""
import base64
import hashlib
import json
import pathlib

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives import serialization

ROOT = pathlib.Path(__file__).resolve().parent
SEP = b"\xff"
NOW = 1_700_000_000  # src/fuzzing.rs NOW
PUBLIC_URL = "https://api.bank.example"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def write(target: str, seeds: list[bytes]) -> None:
    folder = ROOT / "corpus" / target
    folder.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        name = hashlib.sha1(seed).hexdigest()
        (folder / name).write_bytes(seed)


def fixture_jwk() -> dict:
    key = Ed25519PrivateKey.from_private_bytes(bytes([0x42] * 32))
    raw = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}


def path_routes() -> list[bytes]:
    paths = [
        "/accounts", "/accounts/acc-1/balances", "/accounts/a%2Fb/balances",
        "/accounts/../payments", "//accounts", "/accounts/%2e%2e/balances",
        "/accounts/./acc-1/balances", "/payments", "/status", "/status/",
        "/accounts/x/transactions/y", "/accounts/acc;v=1/balances", "/a%3Bb", "/%", "/%zz",
        "/accounts/{account_id}/balances", "/accounts/%C3%A9/balances", "/accounts/\u00e9",
        "/.well-known/oauth-protected-resource", "", "*", "/accounts?x=1",
        "/accounts/%00/balances", "/ACCOUNTS", "/accounts//balances",
    ]
    return [bytes([m]) + p.encode() for m in range(3) for p in paths]


def credential() -> list[bytes]:
    return [
        b"DPoP eyJhbGciOiJFUzI1NiJ9.e30.c2ln",
        b"Bearer tok",
        b"DPoP tok" + SEP + b"Bearer tok",
        b"DPoP  tok",
        b"dpop tok",
        b"DPoP tok extra",
        b"DPoP",
        b"Basic dXNlcjpwYXNz",
        SEP * 3 + b"access_token=x",
        SEP * 3 + b"a=1" + SEP + b"access_token=x&y=z" + SEP + b"application/x-www-form-urlencoded",
        SEP * 3 + SEP + b"access%5Ftoken=x" + SEP + b"Application/X-WWW-Form-Urlencoded; charset=utf-8",
        b"DPoP tok" + SEP + SEP + SEP + b"x=access_token",
    ]


def jws(header: dict, claims: dict | None = None, signature: str = "c2ln") -> bytes:
    body = b64url(json.dumps(claims or {"iss": "https://as.bank.example"}).encode())
    return f"{b64url(json.dumps(header).encode())}.{body}.{signature}".encode()


def jws_header() -> list[bytes]:
    return [
        jws({"alg": "ES256", "typ": "at+jwt", "kid": "k1"}),
        jws({"alg": "PS256", "typ": "application/at+jwt"}),
        jws({"alg": "EdDSA", "typ": "token-introspection+jwt"}),
        jws({"alg": "none", "typ": "at+jwt"}, signature=""),
        jws({"alg": "HS256", "typ": "at+jwt"}),
        jws({"alg": "ES256", "typ": "JWT", "crit": ["exp"]}),
        jws({"alg": "ES256"}),
        jws({"alg": ["ES256"], "typ": 1}),
        b"a.b.c",
        b"....",
        b"eyJ9.e30.",
        b"opaque-token-value",
    ]


def dpop_claims(**changes) -> dict:
    claims = {
        "jti": "e1j3V_bKic8-LAEB",
        "htm": "GET",
        "htu": PUBLIC_URL + "/accounts",
        "iat": NOW,
        "ath": b64url(hashlib.sha256(b"token").digest()),
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def dpop_proof() -> list[bytes]:
    jwk = fixture_jwk()
    header = {"typ": "dpop+jwt", "alg": "EdDSA", "jwk": jwk}
    cases = [
        (header, dpop_claims()),
        (header, dpop_claims(nonce="n-0S6_WzA2Mj")),
        (header, dpop_claims(iat=NOW + 0.5)),
        (header, dpop_claims(iat=NOW - 61)),
        (header, dpop_claims(iat=NOW + 11)),
        (header, dpop_claims(iat="1700000000")),
        (header, dpop_claims(htu="HTTPS://API.bank.example:443/accounts?q=1#f")),
        (header, dpop_claims(htu="https://api.bank.example/accounts/")),
        (header, dpop_claims(htm="get")),
        (header, dpop_claims(jti="")),
        (header, dpop_claims(jti="x" * 300)),
        (header, dpop_claims(ath=None)),
        ({**header, "jwk": {**jwk, "d": "secret"}}, dpop_claims()),
        ({**header, "typ": "jwt"}, dpop_claims()),
        ({**header, "alg": "ES256", "jwk": {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}}, dpop_claims()),
        ({**header, "alg": "PS256", "jwk": {"kty": "RSA", "n": "AQAB", "e": "AQAB"}}, dpop_claims()),
    ]
    seeds = [json.dumps(h).encode() + SEP + json.dumps(c).encode() for h, c in cases]
    seeds.append(SEP + SEP + b"eyJ0eXAiOiJkcG9wK2p3dCJ9.e30.c2ln")
    return seeds


def http_signature() -> list[bytes]:
    body = b'{"instructedAmount":{"currency":"EUR","amount":"123.50"}}'
    digest = "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"
    inputs = [
        f'sig=("@method" "@target-uri" "authorization" "content-digest");created={NOW};keyid="fuzz";alg="ed25519";tag="fapi-2-request"',
        f'sig=("@method" "@target-uri" "authorization" "content-digest" "dpop");created={NOW - 400};keyid="fuzz";tag="fapi-2-request"',
        f'sig=("@method" "@target-uri" "authorization");created={NOW};expires={NOW - 1};keyid="fuzz";tag="fapi-2-request"',
        f'sig=("@query-param";name="a" "@authority" "@path" "@query" "@scheme" "@request-target");created={NOW};keyid="fuzz";tag="fapi-2-request"',
        f'sig=("content-digest";sf "authorization";bs "x";key="a");created={NOW};keyid="fuzz";tag="fapi-2-request"',
        f'sig=("@method" "@method");created={NOW};keyid="fuzz";tag="fapi-2-request"',
        f'sig=("@status";req);created={NOW};keyid="fuzz"',
        # RFC 9421 Appendix B.2.1-B.2.6 inputs.
        'sig-b21=();created=1618884473;keyid="test-key-rsa-pss";nonce="b3k2pp5k7z-50gnwp.yemd"',
        'sig-b22=("@authority" "content-digest" "@query-param";name="Pet");created=1618884473;keyid="test-key-rsa-pss";tag="header-example"',
        'sig-b23=("date" "@method" "@path" "@query" "@authority" "content-type" "content-digest" "content-length");created=1618884473;keyid="test-key-rsa-pss"',
        'sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519"',
    ]
    seeds = []
    for flags in (0, 1):
        for signature_input in inputs:
            parts = [
                signature_input.encode(),
                b"sig=:c2ln:",
                digest.encode(),
                body,
                b"DPoP tok",
                b"a=1&Pet=dog",
            ]
            seeds.append(bytes([flags]) + SEP.join(parts))
    # RFC 9530 §B examples and broken digests.
    for value in [
        "sha-256=:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:",
        "sha-512=:YMAam51Jz/jOATT6/zvHrLVgOYTGFy1d6GJiOHTohq4yP+pgk4vf2aCsyRZOtw8MjkM7iw7yZ/WkppmM44T3qg==:",
        "sha-256=:x:, md5=:x:",
        "unixsum=:x:",
        "sha-256=abc",
        "",
    ]:
        seeds.append(b"\x00" + SEP + SEP + value.encode() + SEP + b'{"hello": "world"}')
    return seeds


def client_cert() -> list[bytes]:
    pem = (ROOT / "seeds" / "client.crt").read_text() if (ROOT / "seeds" / "client.crt").exists() else None
    der = base64.b64decode("".join(
        line for line in (pem or "").splitlines() if line and not line.startswith("-----")
    )) if pem else b""
    seeds = [b":" + base64.b64encode(der) + b":", der, b":bm90IGEgY2VydA==:", b":!!:", b"::", b"not-a-cert"]
    return [s for s in seeds if s]


def json_body() -> list[bytes]:
    bodies = [
        {"instructedAmount": {"currency": "EUR", "amount": "123.50"},
         "creditorAccount": {"iban": "DE02100100109307118603"}},
        {"instructedAmount": {"currency": "EUR", "amount": 123.5},
         "creditorAccount": {"iban": "DE02100100109307118603"}},
        {"instructedAmount": {"currency": "EUR", "amount": "123.500"}},
        {"authorization_details": {"type": "payment_initiation", "actions": ["initiate"],
                                   "instructedAmount": {"currency": "EUR", "amount": "1e2"},
                                   "maximumAmount": "-0.00"}},
        [1, 2, {"a": None}],
    ]
    seeds = [json.dumps(b).encode() for b in bodies]
    seeds += [
        b'{"instructedAmount":{"currency":"EUR","amount":"9999.00"},"instructedAmount":{"currency":"EUR","amount":"123.50"}}',
        b'{"instructedAmount":{"currency":"EUR","amount":123.500000000000000001}}',
        b'{"InstructedAmount":{"amount":"9999.00"}}',
        b'\xef\xbb\xbf{"a":1}',
        b"/instructedAmount/amount",
        b"/a~1b/~0c/0",
        b"~2",
        b"123.50",
        b"-0.0",
        b"00012.3400",
        b"1e5",
        b"." * 40,
    ]
    return seeds


def config() -> list[bytes]:
    repo = ROOT.parent
    seeds = [(repo / "conf" / name).read_bytes() for name in ("fapigate.example.toml", "quickstart.toml")]
    seeds.append(
        b'[listener]\naddr = "127.0.0.1:0"\npublic_url = "https://api.bank.example"\n'
        b'[listener.tls]\ncert = "tls/server.crt"\nkey = "tls/server.key"\n'
        b'[admin]\naddr = "127.0.0.1:0"\n[profile]\nname = "fapi2"\n'
        b'[[issuer]]\nid = "a"\nissuer = "https://as.bank.example"\naudience = "https://api.bank.example"\njwks_file = "keys/jwks.json"\n'
        b'[[upstream]]\nid = "core"\naddrs = ["127.0.0.1:9"]\n'
        b'[[route]]\nid = "r"\nmethods = ["GET"]\npath = "/accounts/{id}"\nupstream = "core"\n'
        b'[[route.authorization_details]]\ntype = "t"\n[route.authorization_details.match]\n"/a" = { contains = "{path.id}" }\n'
    )
    seeds.append(b'[state]\nbackend = "redis"\nredis_url_file = "/dev/zero"\n')
    seeds.append(b'[listener]\naddr = "x"\n[listener.tls]\ncert = "/dev/stdin"\nkey = "/proc/self/mem"\n')
    seeds.append(b'[server]\nthreads = 99999999999\nshutdown_grace = "99999999999999h"\n')
    seeds.append(b'[response_signing]\nmax_body = "18446744073709551615GiB"\n')
    seeds.append(
        b'[response_signing]\nformat = "jwt"\nkey = "pkcs11:token=a%20b;object=rs;id=%01?module-path=/dev/null&pin-value=1"\n'
        b'key_id = "k"\nalg = "PS256"\npin_file = "keys/signing.key"\n'
        b'[audit]\npath = "audit.jsonl"\nkey_file = "keys/signing.key"\non_full = "refuse"\nwait_max = "1s"\n'
        b'queue = 0\ncheckpoint_every = 0\nrotate_size = "1KiB"\nrotate_daily = true\n'
    )
    seeds.append(
        b'[state]\nbackend = "redis"\nredis_sentinel_nodes = ["rediss://:p@127.0.0.1:1", "redis://x"]\n'
        b'redis_sentinel_master = ""\nredis_password_file = "/dev/null"\nredis_username = ""\n'
    )
    return seeds


AUDIT_KEY = b"the fuzz target's audit MAC key, 32+ bytes"  # src/fuzzing.rs audit_chain
GENESIS = "0" * 64


def audit_chain() -> list[bytes]:
    import hmac

    def seal(fields: dict, seq: int, prev: str) -> str:
        body = dict(fields, seq=seq, prev=prev)
        text = json.dumps(body, sort_keys=True, separators=(",", ":"))
        tag = hmac.new(AUDIT_KEY, text.encode(), hashlib.sha256).hexdigest()
        return text[:-1] + ',"mac":"' + tag + '"}'

    def chain(records: list[dict]) -> list[str]:
        lines, prev = [], GENESIS
        for seq, fields in enumerate(records, 1):
            line = seal(fields, seq, prev)
            prev = hashlib.sha256(line.encode()).hexdigest()
            lines.append(line)
        return lines

    record = {"time": NOW, "interaction_id": "i", "route": "payments", "client_id": "tpp",
              "response_status": 200, "response_digest": "sha-256=:x:"}
    good = chain([record, dict(record, time=NOW + 1)])
    head = hashlib.sha256(good[-1].encode()).hexdigest()
    checkpoint = seal({"time": NOW + 2, "checkpoint": {"count": 2, "head": head},
                       "jws": "eyJhbGciOiJFZERTQSIsImtpZCI6InJzLTEifQ.e30.c2ln"}, 3, head)
    rotated = chain([dict(record, rotated_from={"file": "a", "seq": 9, "head": GENESIS})])
    seeds = ["\n".join(good) + "\n", "\n".join(good + [checkpoint]) + "\n", rotated[0] + "\n"]
    seeds.append(good[0].replace('"mac":"', '"mac":"0') + "\n")
    seeds.append('{"prev":"' + GENESIS + '","seq":1,"a":",\\"mac\\":\\"x"}\n')
    seeds.append("not json\n\n{}\n")
    return [s.encode() for s in seeds]


for name, make in [
    ("path_routes", path_routes), ("credential", credential), ("jws_header", jws_header),
    ("dpop_proof", dpop_proof), ("http_signature", http_signature), ("client_cert", client_cert),
    ("json_body", json_body), ("config", config), ("audit_chain", audit_chain),
]:
    write(name, make())
