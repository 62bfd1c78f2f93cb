#!/usr/bin/env python3
"""The cost of TLS and authentication per request: sequential `SELECT 1` (POST, then every
`nextUri` to the end, on one keep-alive connection as real clients do) against one
coordinator, over plain HTTP, over HTTPS, and over HTTPS with a password (HTTP Basic,
Trino's password file) or a JWT (ES256). Prints the table and writes it to BENCHMARKS.md
(section `auth`) with --output.

    .venv/bin/python scripts/bench_auth.py --binary target/release/flotilla --output BENCHMARKS.md

It needs the test environment's Python packages (tests/python/requirements.txt: requests,
cryptography), which scripts/test installs into .venv.
"""
import argparse
import base64
import hashlib
import json
import os
import pathlib
import re
import statistics
import sys
import tempfile
import time

import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests" / "python"))
from conftest import _start, _stop  # noqa: E402
from test_tls import _certificates  # noqa: E402

PASSWORD = "bench-password"
PBKDF2_ITERATIONS = 100_000


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(key, claims):
    header = b64(json.dumps({"alg": "ES256", "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims).encode())
    r, s = decode_dss_signature(key.sign(f"{header}.{payload}".encode(), ec.ECDSA(hashes.SHA256())))
    return f"{header}.{payload}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def start(binary, etc):
    process, http_url, lines = _start([binary, "coordinator", "--etc-dir", str(etc), "--port", "0", "--bind", "127.0.0.1"])
    deadline = time.time() + 30
    while time.time() < deadline:
        found = next((m.group(1) for line in list(lines) if (m := re.search(r"over HTTPS at (https://\S+)", line))), None)
        if found:
            return process, http_url, found
        time.sleep(0.05)
    _stop(process)
    raise RuntimeError("no HTTPS address printed")


def select_one(session, url, headers):
    """One `SELECT 1` to the end; returns its wall time in seconds."""
    began = time.perf_counter()
    response = session.post(f"{url}/v1/statement", data="SELECT 1", headers=headers)
    response.raise_for_status()
    document = response.json()
    while "nextUri" in document:
        response = session.get(document["nextUri"], headers=headers)
        response.raise_for_status()
        document = response.json()
    if "error" in document:
        raise RuntimeError(document["error"])
    return time.perf_counter() - began


def measure(url, ca, headers, count, warmup=20):
    with requests.Session() as session:
        session.verify = str(ca)
        for _ in range(warmup):
            select_one(session, url, headers)
        times = sorted(select_one(session, url, headers) for _ in range(count))
    return times[len(times) // 2], times[int(len(times) * 0.99) - 1]


def refused_check(url, ca, count):
    """A wrong password each time (nothing cached): the password check's own cost."""
    with requests.Session() as session:
        session.verify = str(ca)
        times = []
        for _ in range(count):
            began = time.perf_counter()
            response = session.post(f"{url}/v1/statement", data="SELECT 1", auth=("bench", "wrong"))
            assert response.status_code == 401, response.status_code
            times.append(time.perf_counter() - began)
    times.sort()
    return times[len(times) // 2], times[int(len(times) * 0.99) - 1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", default="target/release/flotilla")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--output", help="write the section into this Markdown file")
    arguments = parser.parse_args()
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        os.environ.pop(name, None)

    with tempfile.TemporaryDirectory() as work:
        work = pathlib.Path(work)
        plain_etc, secure_etc = work / "plain", work / "secure"
        for etc in (plain_etc, secure_etc):
            (etc / "catalog").mkdir(parents=True)
            (etc / "catalog" / "tpch.properties").write_text("connector.name=tpch\n")
        ca, keystore = _certificates(work)
        https = f"http-server.https.enabled=true\nhttp-server.https.port=0\nhttp-server.https.keystore.path={keystore}\n"
        (plain_etc / "config.properties").write_text(https)
        key = ec.generate_private_key(ec.SECP256R1())
        (work / "jwt.pem").write_bytes(
            key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
        salt = os.urandom(16)
        digest = hashlib.pbkdf2_hmac("sha256", PASSWORD.encode(), salt, PBKDF2_ITERATIONS, 32)
        (work / "password.db").write_text(f"bench:{PBKDF2_ITERATIONS}:{salt.hex()}:{digest.hex()}\n")
        (secure_etc / "config.properties").write_text(
            https + "http-server.authentication.type=PASSWORD,JWT\n"
            f"http-server.authentication.jwt.key-file={work / 'jwt.pem'}\n"
        )
        (secure_etc / "password-authenticator.properties").write_text(
            f"password-authenticator.name=file\nfile.password-file={work / 'password.db'}\n"
        )
        user = {"X-Trino-User": "bench"}
        basic = {"Authorization": "Basic " + base64.b64encode(f"bench:{PASSWORD}".encode()).decode()}
        bearer = {"Authorization": f"Bearer {jwt(key, {'sub': 'bench', 'exp': int(time.time()) + 3600})}"}
        rows = []
        process, http_url, https_url = start(arguments.binary, plain_etc)
        try:
            rows.append(("plain HTTP, no authentication", measure(http_url, ca, user, arguments.count)))
            rows.append(("HTTPS, no authentication", measure(https_url, ca, user, arguments.count)))
        finally:
            _stop(process)
        process, _, https_url = start(arguments.binary, secure_etc)
        try:
            rows.append(("HTTPS + password (HTTP Basic, checked once, then cached)", measure(https_url, ca, basic, arguments.count)))
            rows.append(("HTTPS + JWT (ES256, verified once, then remembered until its exp, at most 60 s)", measure(https_url, ca, bearer, arguments.count)))
            check = refused_check(https_url, ca, 50)
        finally:
            _stop(process)

    base = rows[0][1][0]
    binary = pathlib.Path(arguments.binary)
    build = "release" if "release" in binary.parts else "debug"
    shown = f"target/{build}/flotilla" if binary.name == "flotilla" else arguments.binary
    lines = [
        "## Authentication and TLS per request",
        "",
        f"Produced by `.venv/bin/python scripts/bench_auth.py --binary {shown} --output BENCHMARKS.md` "
        f"({build} build). One coordinator (embedded resource manager, no workers) on loopback, one client "
        f"(Python `requests`, one keep-alive connection, as the Trino clients keep theirs), {arguments.count} "
        "sequential `SELECT 1`, each POSTed and followed to its last `nextUri`; every request of a query "
        "carries the credentials and is authenticated. 2 CPUs shared by client and server.",
        "",
        "| mode | p50 | p99 | p50 vs plain HTTP |",
        "|---|---|---|---|",
    ]
    for name, (p50, p99) in rows:
        lines.append(f"| {name} | {p50 * 1000:.2f} ms | {p99 * 1000:.2f} ms | {p50 / base:.2f}x |")
    lines += [
        "",
        f"A password check that misses the cache (a wrong password, answered 401) costs {check[0] * 1000:.1f} ms "
        f"p50 ({check[1] * 1000:.1f} ms p99) with PBKDF2 at {PBKDF2_ITERATIONS:,} iterations (bcrypt's cost "
        "grows with its cost factor): that is why successful checks are cached "
        "(`file.auth-token-cache.max-size`), and why about one check per CPU runs at once.",
        "",
        "Read with care: the client's own time (Python) is most of each figure, and differences of a few "
        "hundredths of a millisecond are noise on shared cores; what the table shows is that neither TLS on a "
        "kept-alive connection nor a checked (then remembered) credential adds measurably to a query's round trips.",
        "",
    ]
    section = "\n".join(lines)
    print(section)
    if arguments.output:
        path = pathlib.Path(arguments.output)
        text = path.read_text()
        block = f"<!-- begin auth -->\n{section}\n<!-- end auth -->"
        if "<!-- begin auth -->" in text:
            text = re.sub(r"<!-- begin auth -->.*?<!-- end auth -->", lambda _: block, text, flags=re.S)
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
        path.write_text(text)


if __name__ == "__main__":
    main()
