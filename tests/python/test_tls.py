"""TLS on the client-facing ports (`http-server.https.*`): the real Python client talks
HTTPS to a coordinator and to a gateway, trusting a certificate authority this test makes;
`nextUri` keeps it on HTTPS; plain HTTP still serves; a client that does not trust the
certificate is refused."""
import datetime
import ipaddress
import re
import time

import pytest
import requests
import trino
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import BIN, _start, _stop


def _certificates(directory):
    """A CA, and a server certificate for localhost/127.0.0.1 it signed: (CA file, keystore)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flotilla test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    keystore = directory / "server.pem"
    keystore.write_bytes(
        server.public_bytes(serialization.Encoding.PEM)
        + ca.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ca_file, keystore


@pytest.fixture(scope="module")
def tls_etc(tmp_path_factory):
    etc = tmp_path_factory.mktemp("tls-etc")
    (etc / "catalog").mkdir()
    (etc / "catalog" / "tpch.properties").write_text("connector.name=tpch\n")
    ca_file, keystore = _certificates(etc)
    (etc / "config.properties").write_text(
        "http-server.https.enabled=true\nhttp-server.https.port=0\n"
        f"http-server.https.keystore.path={keystore}\n"
    )
    return etc, ca_file


def _https_url(lines, timeout=30):
    """The HTTPS address a node printed (its stderr lines, read so far)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for line in list(lines):
            match = re.search(r"over HTTPS at (https://\S+)", line)
            if match:
                return match.group(1)
        time.sleep(0.05)
    raise AssertionError("no HTTPS address printed")


def https_rows(url, ca_file, sql, user="tls", **kwargs):
    """The rows of `sql`, run by the real client over HTTPS trusting `ca_file` alone."""
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    connection = trino.dbapi.connect(
        host=host, port=int(port), user=user, http_scheme="https", verify=str(ca_file), **kwargs
    )
    try:
        cursor = connection.cursor()
        cursor.execute(sql)
        return cursor.fetchall()
    finally:
        connection.close()


def _rows(url, ca_file, sql):
    return https_rows(url, ca_file, sql, catalog="tpch", schema="tiny")


@pytest.fixture(autouse=True)
def only_the_test_ca(monkeypatch):
    """requests lets these variables override a session's own `verify`: the test trusts its
    CA alone."""
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)


def test_a_coordinator_serves_clients_over_https(tls_etc):
    etc, ca_file = tls_etc
    process, http_url, lines = _start([BIN, "coordinator", "--etc-dir", str(etc), "--port", "0", "--bind", "127.0.0.1"])
    try:
        https_url = _https_url(lines)
        # Many pages (every nextUri must stay on HTTPS), then a plain aggregate.
        assert len(_rows(https_url, ca_file, "SELECT orderkey FROM orders")) == 15000
        assert _rows(https_url, ca_file, "SELECT count(*) FROM nation") == [[25]]
        first = requests.post(
            f"{https_url}/v1/statement", data="SELECT 1", headers={"X-Trino-User": "tls"}, verify=str(ca_file)
        ).json()
        assert first["nextUri"].startswith(https_url + "/v1/statement/"), first
        # Plain HTTP still serves (internal calls use it), with http URIs.
        plain = requests.post(f"{http_url}/v1/statement", data="SELECT 1", headers={"X-Trino-User": "tls"}).json()
        assert plain["nextUri"].startswith(http_url), plain
        # A client that does not trust the certificate gets no answer.
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{https_url}/v1/info", timeout=5)
        # Forging the TLS marker over plain HTTP changes nothing.
        forged = requests.post(
            f"{http_url}/v1/statement",
            data="SELECT 1",
            headers={"X-Trino-User": "tls", "X-Flotilla-Client-Tls": "1"},
        ).json()
        assert forged["nextUri"].startswith("http://"), forged
    finally:
        _stop(process)


def test_a_gateway_serves_clients_over_https(tls_etc, tmp_path):
    etc, ca_file = tls_etc
    data = tmp_path / "cluster"
    command = [BIN, "up", "--etc-dir", str(etc), "--port", "0", "--data-dir", str(data), "--resource-managers", "1"]
    process, _, _ = _start(command)
    try:
        log = data / "logs" / "gateway-1.log"
        deadline = time.time() + 30
        while time.time() < deadline and not (log.exists() and "over HTTPS at" in log.read_text()):
            time.sleep(0.1)
        https_url = _https_url(log.read_text().splitlines())
        assert len(_rows(https_url, ca_file, "SELECT orderkey FROM orders")) == 15000
    finally:
        _stop(process)
