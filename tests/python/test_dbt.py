"""dbt-trino, unmodified, builds the small project in tests/dbt/project against a local
cluster (two coordinators behind a gateway, one worker) into the writable `lake` catalog:
`dbt seed`, `dbt run` (a view, a table, an incremental model), `dbt test`, then `dbt run`
and `dbt test` again (the table is rebuilt by rename, the incremental model appends)."""
import os
import pathlib
import shutil
import subprocess
import sys

import trino

PROJECT = pathlib.Path(__file__).resolve().parent.parent / "dbt" / "project"


def dbt(arguments, url, work):
    host, port = url.removeprefix("http://").rsplit(":", 1)
    environment = dict(os.environ, FLOTILLA_HOST=host, FLOTILLA_PORT=port, DBT_SEND_ANONYMOUS_USAGE_STATS="false")
    command = [
        str(pathlib.Path(sys.executable).parent / "dbt"),
        *arguments,
        "--profiles-dir",
        str(work),
        "--project-dir",
        str(work),
        "--target-path",
        str(work / "target"),
        "--log-path",
        str(work / "logs"),
    ]
    result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"dbt {' '.join(arguments)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_dbt_builds_and_tests_a_project(start_cluster, tmp_path):
    url, _ = start_cluster("--resource-managers", "1", "--coordinators", "2", "--workers", "1")
    work = tmp_path / "project"
    shutil.copytree(PROJECT, work)
    assert "PASS=2" in dbt(["seed"], url, work)
    assert "PASS=3" in dbt(["run"], url, work)
    assert "PASS=3" in dbt(["test"], url, work)
    assert "PASS=3" in dbt(["run"], url, work)
    assert "PASS=3" in dbt(["test"], url, work)

    host, port = url.removeprefix("http://").rsplit(":", 1)
    cursor = trino.dbapi.connect(host=host, port=int(port), user="check", catalog="lake", schema="dbt_demo").cursor()
    cursor.execute("SELECT customer_id, orders, round(total, 2) FROM customer_totals ORDER BY customer_id")
    assert cursor.fetchall() == [[1, 2, 32.75], [2, 2, 23.37], [3, 1, 99.99], [4, 1, 42.0]]
    cursor.execute("SELECT count(*), count(DISTINCT order_id) FROM orders_incremental")
    assert cursor.fetchall() == [[6, 6]], "the second run appended nothing new"
    cursor.execute("SELECT table_name, table_type FROM information_schema.tables WHERE table_schema = 'dbt_demo' ORDER BY 1")
    assert cursor.fetchall() == [
        ["customer_totals", "BASE TABLE"],
        ["customers", "BASE TABLE"],
        ["orders", "BASE TABLE"],
        ["orders_incremental", "BASE TABLE"],
        ["stg_orders", "VIEW"],
    ]
