"""Starts a real Flotilla coordinator (the `flotilla` binary) on loopback for the tests.

The binary comes from $FLOTILLA_BIN (set by scripts/test). The server listens on a free
port picked by the OS and is stopped when the session ends, whatever the outcome.
"""
import os
import re
import subprocess
import threading
import time

import pytest

BIN = os.environ.get("FLOTILLA_BIN", "target/debug/flotilla")


def _start(etc_dir):
    process = subprocess.Popen(
        [BIN, "coordinator", "--etc-dir", str(etc_dir), "--port", "0", "--bind", "127.0.0.1"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    found = {}
    ready = threading.Event()

    def read():
        for line in process.stderr:
            match = re.search(r"serving Trino clients at (http://\S+)", line)
            if match and not ready.is_set():
                found["url"] = match.group(1)
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(60) or "url" not in found:
        process.kill()
        raise RuntimeError("flotilla coordinator did not start")
    return process, found["url"]


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    etc = tmp_path_factory.mktemp("etc")
    (etc / "catalog").mkdir()
    (etc / "catalog" / "tpch.properties").write_text("connector.name=tpch\ntpch.column-naming=STANDARD\n")
    (etc / "catalog" / "tpch_simplified.properties").write_text("connector.name=tpch\n")
    process, url = _start(etc)
    try:
        yield url
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def host_port(server):
    host, port = server.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


@pytest.fixture(scope="session")
def tpch_parquet(tmp_path_factory):
    out = tmp_path_factory.mktemp("tpch-tiny")
    subprocess.run([BIN, "tpch-gen", "--scale", "0.01", "--output", str(out)], check=True, capture_output=True)
    return out


@pytest.fixture()
def connect(host_port):
    import trino

    host, port = host_port
    opened = []

    def make(**kwargs):
        kwargs.setdefault("user", "test")
        connection = trino.dbapi.connect(host=host, port=port, **kwargs)
        opened.append(connection)
        return connection

    yield make
    for connection in opened:
        connection.close()


def wait_for(predicate, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False
