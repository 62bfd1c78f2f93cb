"""Authentication and access control as a Trino operator configures them, through a gateway
in front of two coordinators, over HTTPS with a certificate authority this test makes:

- PASSWORD (Trino's password file, PBKDF2 hashes) and JWT (ES256, signed by the test, its
  public key in the key file) with the real `trino` client; a wrong password, a foreign
  token and no credentials get 401; credentials over plain HTTP get 403;
- impersonation refused, then allowed by an `impersonation` rule;
- Trino's file-based rules: a table the user may not read fails with PERMISSION_DENIED
  ("Access Denied: Cannot select from table ...") and is missing from SHOW TABLES and
  information_schema; a query of another user cannot be killed through REST, SQL or the
  web UI, except by the user the `queries` rules allow; the nodes' state only by
  `system_information` writers;
- follow-ups relayed to the query's owner keep the principal (the gateway sends a kill to
  whichever coordinator, which relays it to the owner);
- the web UI's login checks the password (and the browser logs in), and logout ends it;
- dbt-trino with `method: ldap` (user and password over HTTPS) builds the dbt project.
"""
import base64
import hashlib
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests
import trino
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from conftest import BIN, SLOW_QUERY, SLOW_TABLE, _start, _stop, wait_for
from test_tls import _certificates, https_rows

PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw", "admin": "admin-pw", "svc": "svc-pw", "dbt": "dbt-pw"}
ISSUER = "flotilla-test-issuer"
RULES = {
    "catalogs": [{"allow": "all"}],
    "tables": [
        {"user": "bob", "catalog": "tpch", "table": "orders", "privileges": []},
        {"privileges": ["SELECT", "INSERT", "DELETE", "UPDATE", "OWNERSHIP"]},
    ],
    "queries": [
        {"user": "admin", "allow": ["execute", "view", "kill"]},
        {"allow": ["execute"]},
    ],
    "impersonation": [{"original_user": "svc", "new_user": "alice"}],
    "system_information": [{"user": "admin", "allow": ["read", "write"]}],
}


def _pbkdf2(password):
    """Trino's PBKDF2 password file entry: iterations:salt:hash, hex."""
    salt = os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 1000, 32)
    return f"1000:{salt.hex()}:{digest.hex()}"


def _b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(key, claims):
    """An ES256 JWT, signed here (no JWT library needed)."""
    header = _b64(json.dumps({"alg": "ES256", "typ": "JWT"}).encode())
    payload = _b64(json.dumps(claims).encode())
    signature = key.sign(f"{header}.{payload}".encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(signature)
    return f"{header}.{payload}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


@pytest.fixture(autouse=True)
def only_the_test_ca(monkeypatch):
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def secure_cluster(etc_dir, tmp_path_factory):
    """`flotilla up` (one resource manager, two coordinators, one worker, a gateway) with
    HTTPS, PASSWORD and JWT authentication and file-based access control. Yields
    (gateway https URL, {node id: http url}, CA file, JWT signing key)."""
    etc = tmp_path_factory.mktemp("secure-etc")
    shutil.copytree(etc_dir / "catalog", etc / "catalog")
    ca_file, keystore = _certificates(etc)
    key = ec.generate_private_key(ec.SECP256R1())
    (etc / "jwt.pem").write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    (etc / "password.db").write_text("".join(f"{user}:{_pbkdf2(pw)}\n" for user, pw in PASSWORDS.items()))
    (etc / "rules.json").write_text(json.dumps(RULES))
    (etc / "config.properties").write_text(
        "http-server.https.enabled=true\nhttp-server.https.port=0\n"
        f"http-server.https.keystore.path={keystore}\n"
        "http-server.authentication.type=PASSWORD,JWT\n"
        f"http-server.authentication.jwt.key-file={etc / 'jwt.pem'}\n"
        f"http-server.authentication.jwt.required-issuer={ISSUER}\n"
    )
    (etc / "password-authenticator.properties").write_text(
        f"password-authenticator.name=file\nfile.password-file={etc / 'password.db'}\n"
    )
    (etc / "access-control.properties").write_text(
        f"access-control.name=file\nsecurity.config-file={etc / 'rules.json'}\nsecurity.refresh-period=1s\n"
    )
    data = tmp_path_factory.mktemp("secure-cluster")
    command = [BIN, "up", "--etc-dir", str(etc), "--port", "0", "--data-dir", str(data),
               "--resource-managers", "1", "--coordinators", "2", "--workers", "1"]
    process, _, lines = _start(command)
    try:
        nodes = {"pids": {}}
        for line in lines:
            match = re.match(r"\s+[a-z ]+?\s+(\S+)\s+(http://\S+)\s+pid (\d+)", line)
            if match:
                nodes[match.group(1)] = match.group(2)
                nodes["pids"][match.group(1)] = int(match.group(3))
        def https_url(name):
            log = data / "logs" / f"{name}.log"
            deadline = time.time() + 30
            while time.time() < deadline and not (log.exists() and "over HTTPS at" in log.read_text()):
                time.sleep(0.1)
            return re.search(r"over HTTPS at (https://\S+)", log.read_text()).group(1)

        nodes["https"] = [https_url("coordinator-1"), https_url("coordinator-2")]
        yield https_url("gateway-1"), nodes, ca_file, key
    finally:
        _stop(process)


def _connect(url, ca_file, user, auth, **kwargs):
    host, port = url.removeprefix("https://").rsplit(":", 1)
    return trino.dbapi.connect(
        host=host, port=int(port), user=user, auth=auth, http_scheme="https", verify=str(ca_file), **kwargs
    )


def _query(url, ca_file, user, auth, sql, **kwargs):
    return https_rows(url, ca_file, sql, user=user, auth=auth, **kwargs)


def _basic(user):
    return trino.auth.BasicAuthentication(user, PASSWORDS[user])


def test_passwords_tokens_and_impersonation(secure_cluster):
    gateway, nodes, ca, key = secure_cluster
    assert _query(gateway, ca, "alice", _basic("alice"), "SELECT count(*) FROM tpch.tiny.nation") == [[25]]
    # Many pages: every follow-up is authenticated too.
    assert len(_query(gateway, ca, "alice", _basic("alice"), "SELECT o_orderkey FROM tpch.tiny.orders")) == 15000

    with pytest.raises(trino.exceptions.HttpError, match="401"):
        _query(gateway, ca, "alice", trino.auth.BasicAuthentication("alice", "wrong"), "SELECT 1")
    response = requests.post(f"{gateway}/v1/statement", data="SELECT 1", headers={"X-Trino-User": "alice"}, verify=str(ca))
    assert response.status_code == 401
    assert any(h.startswith("Basic") for h in response.headers.get("WWW-Authenticate", "").split(", "))
    # Credentials over plain HTTP (a coordinator's internal port) are refused.
    coordinator = nodes["coordinator-1"]
    plain = requests.post(f"{coordinator}/v1/statement", data="SELECT 1", auth=("alice", PASSWORDS["alice"]))
    assert plain.status_code == 403, plain.text
    # /v1/info stays public, as in Trino; the nodes are system information (admin's rule).
    assert requests.get(f"{gateway}/v1/info", verify=str(ca)).status_code == 200
    assert requests.get(f"{gateway}/v1/node", auth=("bob", PASSWORDS["bob"]), verify=str(ca)).status_code == 403
    assert requests.get(f"{gateway}/v1/node", auth=("admin", PASSWORDS["admin"]), verify=str(ca)).status_code == 200

    now = int(time.time())
    token = _jwt(key, {"sub": "carol", "iss": ISSUER, "exp": now + 300})
    assert _query(gateway, ca, "carol", trino.auth.JWTAuthentication(token), "SELECT 1") == [[1]]
    for claims in ({"sub": "carol", "iss": "someone-else", "exp": now + 300}, {"sub": "carol", "iss": ISSUER, "exp": now - 600}):
        with pytest.raises(trino.exceptions.HttpError, match="401"):
            _query(gateway, ca, "carol", trino.auth.JWTAuthentication(_jwt(key, claims)), "SELECT 1")
    stranger = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(trino.exceptions.HttpError, match="401"):
        _query(gateway, ca, "carol", trino.auth.JWTAuthentication(_jwt(stranger, {"sub": "carol", "iss": ISSUER})), "SELECT 1")

    # Impersonation: alice may not act as bob; svc may act as alice (the rule).
    with pytest.raises(trino.exceptions.HttpError, match="cannot impersonate user bob"):
        _query(gateway, ca, "bob", _basic("alice"), "SELECT 1")
    connection = _connect(gateway, ca, "alice", _basic("svc"))
    cursor = connection.cursor()
    cursor.execute("SELECT 1")
    assert cursor.fetchall() == [[1]]
    details = requests.get(f"{gateway}/v1/query/{cursor.query_id}", auth=("alice", PASSWORDS["alice"]), verify=str(ca))
    assert details.json()["session"]["user"] == "alice", "the query runs as the impersonated user"
    connection.close()


def test_table_rules_decide_reads_and_listings(secure_cluster):
    gateway, _, ca, _ = secure_cluster
    with pytest.raises(trino.exceptions.TrinoUserError) as denied:
        _query(gateway, ca, "bob", _basic("bob"), "SELECT count(*) FROM tpch.tiny.orders")
    assert denied.value.error_name == "PERMISSION_DENIED"
    assert "Access Denied: Cannot select from table tpch.tiny.orders" in denied.value.message
    # Through a join, a subquery and a CTE alike.
    for sql in (
        "SELECT count(*) FROM tpch.tiny.customer c JOIN tpch.tiny.orders o ON c.c_custkey = o.o_custkey",
        "WITH x AS (SELECT * FROM tpch.tiny.orders) SELECT count(*) FROM x",
        "SELECT (SELECT max(o_totalprice) FROM tpch.tiny.orders)",
    ):
        with pytest.raises(trino.exceptions.TrinoUserError, match="Cannot select from table tpch.tiny.orders"):
            _query(gateway, ca, "bob", _basic("bob"), sql)
    assert _query(gateway, ca, "bob", _basic("bob"), "SELECT count(*) FROM tpch.tiny.customer") == [[1500]]

    def tables(user):
        shown = {row[0] for row in _query(gateway, ca, user, _basic(user), "SHOW TABLES FROM tpch.tiny")}
        listed = {row[0] for row in _query(
            gateway, ca, user, _basic(user),
            "SELECT table_name FROM tpch.information_schema.tables WHERE table_schema = 'tiny'",
        )}
        jdbc = {row[0] for row in _query(
            gateway, ca, user, _basic(user),
            "SELECT table_name FROM system.jdbc.tables WHERE table_cat = 'tpch' AND table_schem = 'tiny'",
        )}
        assert shown == listed == jdbc, (shown, listed, jdbc)
        return shown

    assert "orders" in tables("alice")
    bob_sees = tables("bob")
    assert "orders" not in bob_sees and "customer" in bob_sees


def _start_slow_query(gateway, coordinators, ca, user):
    """Starts a query that runs until it is killed; returns (query id, thread, outcome)."""
    # Blackhole tables live in each coordinator's memory: the gateway may pick either.
    for coordinator in coordinators:
        _query(coordinator, ca, user, _basic(user), SLOW_TABLE)
    outcome = {}
    connection = _connect(gateway, ca, user, _basic(user))
    cursor = connection.cursor()

    def run():
        try:
            cursor.execute(SLOW_QUERY)
            cursor.fetchall()
        except Exception as error:  # noqa: BLE001 - the outcome is what is checked
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while time.time() < deadline and cursor.query_id is None:
        time.sleep(0.1)
    assert cursor.query_id, "the slow query did not start"
    return cursor.query_id, thread, outcome


def test_killing_another_users_query_needs_a_rule(secure_cluster):
    gateway, nodes, ca, _ = secure_cluster
    coordinators = nodes["https"]
    assert len(coordinators) == 2
    query_id, thread, outcome = _start_slow_query(gateway, coordinators, ca, "alice")
    # REST, through the gateway (relayed to the owner, which sees bob as bob).
    killed = requests.put(
        f"{gateway}/v1/query/{query_id}/killed", data="by bob", auth=("bob", PASSWORDS["bob"]), verify=str(ca)
    )
    assert killed.status_code == 403, killed.text
    # Each coordinator's HTTPS port: one owns the query, the other relays to it with the
    # principal it authenticated, and the owner decides as it would itself.
    for coordinator in coordinators:
        as_alice = requests.get(f"{coordinator}/v1/query/{query_id}", auth=("alice", PASSWORDS["alice"]), verify=str(ca))
        assert as_alice.status_code == 200 and as_alice.json()["session"]["user"] == "alice", as_alice.text
        as_bob = requests.put(
            f"{coordinator}/v1/query/{query_id}/killed", data="by bob", auth=("bob", PASSWORDS["bob"]), verify=str(ca)
        )
        assert as_bob.status_code == 403, as_bob.text
    # bob may not even view it; admin may.
    assert requests.get(f"{gateway}/v1/query/{query_id}", auth=("bob", PASSWORDS["bob"]), verify=str(ca)).status_code == 403
    listed = requests.get(f"{gateway}/v1/query", auth=("bob", PASSWORDS["bob"]), verify=str(ca)).json()
    assert query_id not in {q["queryId"] for q in listed}
    def admin_lists_it():
        listed = requests.get(f"{gateway}/v1/query", auth=("admin", PASSWORDS["admin"]), verify=str(ca)).json()
        return query_id in {q["queryId"] for q in listed}

    assert wait_for(admin_lists_it), "admin may view every query (the queries rule)"
    # SQL.
    with pytest.raises(trino.exceptions.TrinoUserError, match="cannot kill query"):
        _query(gateway, ca, "bob", _basic("bob"), f"CALL system.runtime.kill_query(query_id => '{query_id}')")
    # The web UI.
    ui = requests.Session()
    ui.verify = str(ca)
    login = ui.post(f"{gateway}/ui/login", data={"username": "bob", "password": PASSWORDS["bob"]}, allow_redirects=False)
    assert login.status_code in (302, 303, 307) and "Trino-UI-Token" in login.headers.get("set-cookie", "")
    refused = ui.put(f"{gateway}/ui/api/query/{query_id}/killed", data="from the UI")
    assert refused.status_code == 403, refused.text
    assert thread.is_alive(), f"the query still runs: {outcome}"
    # The nodes' state: bob may not drain a coordinator.
    drained = requests.put(
        f"{gateway}/v1/info/state", json="SHUTTING_DOWN", auth=("bob", PASSWORDS["bob"]), verify=str(ca)
    )
    assert drained.status_code in (403, 404), drained.text
    # The protocol's own cancel (DELETE on a nextUri): the URI alone is not enough for bob.
    started = requests.post(
        f"{gateway}/v1/statement", data=SLOW_QUERY, auth=("alice", PASSWORDS["alice"]), verify=str(ca)
    ).json()
    next_uri = started["nextUri"]
    assert requests.delete(next_uri, auth=("bob", PASSWORDS["bob"]), verify=str(ca)).status_code == 403
    assert requests.delete(next_uri, auth=("alice", PASSWORDS["alice"]), verify=str(ca)).status_code == 204
    # admin may kill it (the queries rule), from SQL.
    _query(gateway, ca, "admin", _basic("admin"), f"CALL system.runtime.kill_query(query_id => '{query_id}', message => 'bye')")
    thread.join(30)
    assert not thread.is_alive()
    assert "bye" in str(outcome.get("error")), outcome


def test_the_ui_login_checks_the_password(secure_cluster):
    gateway, _, ca, _ = secure_cluster
    ui = requests.Session()
    ui.verify = str(ca)
    assert ui.get(f"{gateway}/ui/api/query").status_code == 401
    wrong = ui.post(f"{gateway}/ui/login", data={"username": "alice", "password": "nope"}, allow_redirects=False)
    assert "failed=1" in wrong.headers.get("location", ""), wrong.headers
    assert "Trino-UI-Token" not in wrong.headers.get("set-cookie", "")
    empty = ui.post(f"{gateway}/ui/login", data={"username": "alice", "password": ""}, allow_redirects=False)
    assert "Trino-UI-Token" not in empty.headers.get("set-cookie", "")
    good = ui.post(f"{gateway}/ui/login", data={"username": "alice", "password": PASSWORDS["alice"]}, allow_redirects=False)
    cookie = good.headers.get("set-cookie", "")
    assert "Trino-UI-Token" in cookie and "Secure" in cookie, cookie
    assert ui.get(f"{gateway}/ui/api/query").status_code == 200
    ui.get(f"{gateway}/ui/logout", allow_redirects=False)
    assert ui.get(f"{gateway}/ui/api/query").status_code == 401, "logout ends the session in this browser"


def test_a_browser_logs_in_with_a_password(secure_cluster):
    chromium = os.environ.get("FLOTILLA_CHROMIUM", "/usr/bin/chromium")
    if not pathlib.Path(chromium).exists():
        pytest.skip(f"no Chromium at {chromium} (scripts/test installs it)")
    from playwright.sync_api import sync_playwright

    gateway, _, _, _ = secure_cluster
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        try:
            # The test CA is not in Chromium's store: certificate errors are the browser's
            # own business here; the HTTPS itself is checked by the other tests.
            page = browser.new_context(ignore_https_errors=True).new_page()
            page.goto(f"{gateway}/ui/")
            page.wait_for_url(re.compile(r".*/ui/login\.html.*"))
            page.fill("#username", "alice")
            page.fill("#password", "wrong")
            page.click("button[type=submit]")
            page.wait_for_selector("#failed:not([hidden])")
            page.fill("#username", "alice")
            page.fill("#password", PASSWORDS["alice"])
            page.click("button[type=submit]")
            page.wait_for_url(re.compile(r".*/ui/$"))
            assert "alice" in page.content()
        finally:
            browser.close()


def test_dbt_with_a_password_over_https(secure_cluster, tmp_path):
    gateway, _, ca, _ = secure_cluster
    host, port = gateway.removeprefix("https://").rsplit(":", 1)
    work = tmp_path / "project"
    shutil.copytree(pathlib.Path(__file__).resolve().parent.parent / "dbt" / "project", work)
    (work / "profiles.yml").write_text(
        "flotilla:\n  target: secure\n  outputs:\n    secure:\n"
        "      type: trino\n      method: ldap\n      user: dbt\n"
        f"      password: {PASSWORDS['dbt']}\n      host: {host}\n      port: {port}\n"
        f"      http_scheme: https\n      cert: {ca}\n"
        "      database: lake\n      schema: dbt_secure\n      threads: 2\n"
    )
    for arguments, expected in ((["seed"], "PASS=2"), (["run"], "PASS=3")):
        command = [str(pathlib.Path(sys.executable).parent / "dbt"), *arguments, "--profiles-dir", str(work),
                   "--project-dir", str(work), "--target-path", str(work / "target"), "--log-path", str(work / "logs")]
        environment = dict(os.environ, DBT_SEND_ANONYMOUS_USAGE_STATS="false")
        result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0 and expected in result.stdout, f"{result.stdout}\n{result.stderr}"
    rows = _query(gateway, ca, "dbt", _basic("dbt"), "SELECT count(*) FROM lake.dbt_secure.customer_totals")
    assert rows == [[4]]


# Six rows at a row a second: long enough to lose its coordinator in the middle.
PACED_TABLE = (
    "CREATE TABLE IF NOT EXISTS blackhole.default.paced (x bigint) WITH (split_count = 1, "
    "pages_per_split = 6, rows_per_page = 1, page_processing_delay = '1s')"
)


def test_an_authenticated_query_survives_its_coordinator_dying(secure_cluster):
    """Runs last: it kills a coordinator. The client keeps its credentials; the gateway
    sends its next poll to the other coordinator, which authenticates it and adopts the
    query."""
    gateway, nodes, ca, _ = secure_cluster
    for coordinator in nodes["https"]:
        _query(coordinator, ca, "alice", _basic("alice"), PACED_TABLE)
    connection = _connect(gateway, ca, "alice", _basic("alice"))
    cursor = connection.cursor()
    outcome = {}

    def run():
        try:
            cursor.execute("SELECT count(*) FROM blackhole.default.paced")
            outcome["rows"] = cursor.fetchall()
        except Exception as error:  # noqa: BLE001 - the outcome is what is checked
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert wait_for(lambda: cursor.query_id is not None, timeout=30), "the query did not start"
    query_id = cursor.query_id
    as_alice = {"auth": ("alice", PASSWORDS["alice"]), "verify": str(ca), "timeout": 5}
    assert wait_for(lambda: requests.get(f"{gateway}/v1/query/{query_id}", **as_alice).json()["state"] == "RUNNING")
    listed = requests.get(f"{gateway}/v1/node", auth=("admin", PASSWORDS["admin"]), verify=str(ca)).json()
    owner = next(n["nodeId"] for n in listed if n.get("coordinatorId") == query_id.rsplit("_", 1)[1])
    os.kill(nodes["pids"][owner], signal.SIGKILL)
    thread.join(90)
    assert not thread.is_alive(), "the client never got its answer"
    assert outcome == {"rows": [[6]]}, outcome
    details = requests.get(f"{gateway}/v1/query/{query_id}", **as_alice).json()
    assert details["adoptedFrom"] is not None and details["session"]["user"] == "alice", details
