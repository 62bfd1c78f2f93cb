"""Starts real Flotilla servers (the `flotilla` binary) on loopback for the tests: a
single coordinator (`server`), and clusters started by `flotilla up`: one resource manager,
two coordinators behind a gateway and three workers (`cluster_server`), and the chaos
test's own (`start_cluster`).

The binary comes from $FLOTILLA_BIN (set by scripts/test). Servers listen on free ports
picked by the OS and are stopped when the session ends, whatever the outcome.
"""
import os
import re
import subprocess
import threading
import time

import pytest

BIN = os.environ.get("FLOTILLA_BIN", "target/debug/flotilla")


def _start(command):
    process = subprocess.Popen(
        command,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    found = {"lines": []}
    ready = threading.Event()

    def read():
        for line in process.stderr:
            if not ready.is_set():
                found["lines"].append(line)
            match = re.search(r"serving Trino clients at (http://\S+)", line)
            if match and not ready.is_set():
                found["url"] = match.group(1)
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(60) or "url" not in found:
        process.kill()
        raise RuntimeError(f"{command[1]} did not start")
    return process, found["url"], found["lines"]


def _stop(process):
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def etc_dir(tmp_path_factory):
    etc = tmp_path_factory.mktemp("etc")
    (etc / "catalog").mkdir()
    (etc / "catalog" / "tpch.properties").write_text("connector.name=tpch\ntpch.column-naming=STANDARD\n")
    (etc / "catalog" / "tpch_simplified.properties").write_text("connector.name=tpch\n")
    lake = tmp_path_factory.mktemp("lake")
    (etc / "catalog" / "lake.properties").write_text(f"connector.name=files\nfiles.root={lake}\n")
    (etc / "catalog" / "blackhole.properties").write_text("connector.name=blackhole\n")
    return etc


# A blackhole table read at a page a second for an hour: a query that runs until it is
# cancelled or killed, on the workers, without using the CPU.
SLOW_TABLE = (
    "CREATE TABLE IF NOT EXISTS blackhole.default.slow (x bigint) WITH (split_count = 2, "
    "pages_per_split = 3600, rows_per_page = 1, page_processing_delay = '1s')"
)
SLOW_QUERY = "SELECT count(*) FROM blackhole.default.slow"


@pytest.fixture(scope="session")
def server(etc_dir):
    process, url, _ = _start([BIN, "coordinator", "--etc-dir", str(etc_dir), "--port", "0", "--bind", "127.0.0.1"])
    try:
        yield url
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def cluster_server(etc_dir, tmp_path_factory):
    data = tmp_path_factory.mktemp("cluster")
    command = [BIN, "up", "--etc-dir", str(etc_dir), "--port", "0", "--resource-managers", "1", "--workers", "3"]
    process, url, _ = _start(command + ["--data-dir", str(data)])
    try:
        yield url
    finally:
        _stop(process)


@pytest.fixture()
def start_cluster(etc_dir, tmp_path_factory):
    """Starts `flotilla up` with extra arguments (and `etc=` another etc directory); returns
    (client URL, {node id: (url, pid)}) from its listing. Everything it started is stopped
    when the test ends."""
    started = []

    def start(*arguments, etc=None):
        data = tmp_path_factory.mktemp("cluster")
        etc = etc or etc_dir
        command = [BIN, "up", "--etc-dir", str(etc), "--port", "0", "--data-dir", str(data), *arguments]
        process, url, lines = _start(command)
        started.append(process)
        nodes = {}
        for line in lines:
            match = re.match(r"\s+[a-z ]+?\s+(\S+)\s+(http://\S+)\s+pid (\d+)", line)
            if match:
                nodes[match.group(1)] = (match.group(2), int(match.group(3)))
        return url, nodes

    yield start
    for process in started:
        _stop(process)


@pytest.fixture(scope="session")
def host_port(server):
    host, port = server.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


@pytest.fixture(scope="session")
def tpch_parquet(tmp_path_factory):
    out = tmp_path_factory.mktemp("tpch-tiny")
    subprocess.run([BIN, "tpch-gen", "--scale", "0.01", "--output", str(out)], check=True, capture_output=True)
    return out


def _connector(url):
    import trino

    host, port = url.removeprefix("http://").rsplit(":", 1)
    opened = []

    def make(**kwargs):
        kwargs.setdefault("user", "test")
        connection = trino.dbapi.connect(host=host, port=int(port), **kwargs)
        opened.append(connection)
        return connection

    return make, opened


@pytest.fixture()
def connect(server):
    make, opened = _connector(server)
    yield make
    for connection in opened:
        connection.close()


@pytest.fixture(params=["single coordinator", "3 workers"])
def connect_any(request):
    """Connections to the single coordinator, then to the cluster with three workers."""
    url = request.getfixturevalue("server" if request.param == "single coordinator" else "cluster_server")
    make, opened = _connector(url)
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
