"""The files connector on an object store: a catalog over `s3://lake/warehouse` on a local S3
(moto's server, tests/python/s3_server.py, configured as one would configure MinIO: an
endpoint, path-style requests, keys), written and read by a cluster of two coordinators and
two workers, through the Trino client. The same statements as on a local directory; what is
checked here is that they hold on S3: tables created through one coordinator are read
through the other, workers upload the data files, concurrent INSERTs all land, of two racing
CREATE TABLE AS exactly one wins, and what is dropped leaves no object behind."""
import concurrent.futures
import pathlib
import socket
import subprocess
import sys
import time

import boto3
import pytest
import requests
import trino

from conftest import _stop, wait_for

HERE = pathlib.Path(__file__).resolve().parent
KEY, SECRET = "flotilla", "not-a-secret"


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture()
def s3():
    """(endpoint, boto3 client) of a local S3 with an empty bucket `lake`."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(HERE / "s3_server.py"), "127.0.0.1", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        client = boto3.client(
            "s3", endpoint_url=endpoint, aws_access_key_id=KEY, aws_secret_access_key=SECRET, region_name="us-east-1"
        )
        deadline = time.time() + 30
        while True:
            try:
                client.create_bucket(Bucket="lake")
                break
            except Exception:
                if time.time() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.2)
        yield endpoint, client
    finally:
        _stop(process)


def keys(client, prefix):
    listed = client.list_objects_v2(Bucket="lake", Prefix=prefix)
    return sorted(o["Key"] for o in listed.get("Contents", []))


def run(url, sql):
    """(rows, update count) of `sql` through the coordinator at `url`."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    connection = trino.dbapi.connect(host=host, port=int(port), user="test")
    try:
        cursor = connection.cursor()
        cursor.execute(sql)
        rows = cursor.fetchall()
        return rows, cursor.rowcount
    finally:
        connection.close()


def error_name(url, sql):
    with pytest.raises(trino.exceptions.TrinoQueryError) as raised:
        run(url, sql)
    return raised.value.error_name


def test_a_catalog_on_s3_written_and_read_by_a_cluster(start_cluster, s3, tmp_path):
    endpoint, client = s3
    etc = tmp_path / "etc"
    (etc / "catalog").mkdir(parents=True)
    (etc / "catalog" / "tpch.properties").write_text("connector.name=tpch\ntpch.column-naming=STANDARD\n")
    (etc / "catalog" / "s3lake.properties").write_text(
        "connector.name=files\n"
        "files.root=s3://lake/warehouse\n"
        f"s3.endpoint={endpoint}\n"
        "s3.region=us-east-1\n"
        f"s3.aws-access-key={KEY}\n"
        f"s3.aws-secret-key={SECRET}\n"
        "s3.path-style-access=true\n"
    )
    _, nodes = start_cluster("--resource-managers", "1", "--coordinators", "2", "--workers", "2", etc=etc)
    a, b = sorted(url for node, (url, _) in nodes.items() if node.startswith("coordinator"))
    for coordinator in (a, b):
        assert wait_for(
            lambda: requests.get(f"{coordinator}/v1/cluster", timeout=5).json().get("activeWorkers", 0) == 2, 30
        ), "both coordinators see both workers"

    # Files already in the bucket are tables as they are: a directory of JSON, a CSV file.
    client.put_object(Bucket="lake", Key="warehouse/raw/events/part-0.json", Body=b'{"id":1,"kind":"a"}\n{"id":2,"kind":"b"}\n')
    client.put_object(Bucket="lake", Key="warehouse/raw/events/part-1.json", Body=b'{"id":3,"kind":"a"}\n')
    client.put_object(Bucket="lake", Key="warehouse/raw/regions.csv", Body=b"id,name\n1,north\n2,south\n")
    assert run(b, "SHOW TABLES FROM s3lake.raw")[0] == [["events"], ["regions"]]
    assert run(b, "SELECT kind, count(*) FROM s3lake.raw.events GROUP BY kind ORDER BY kind")[0] == [["a", 2], ["b", 1]]
    assert run(a, "SELECT name FROM s3lake.raw.regions WHERE id = 2")[0] == [["south"]]

    # A schema and a CREATE TABLE AS through A, read through B.
    assert "sales" not in [r[0] for r in run(a, "SHOW SCHEMAS FROM s3lake")[0]]
    run(a, "CREATE SCHEMA s3lake.sales")
    assert error_name(b, "CREATE SCHEMA s3lake.sales") == "SCHEMA_ALREADY_EXISTS"
    assert run(a, "CREATE TABLE s3lake.sales.orders AS SELECT * FROM tpch.sf1.orders")[1] == 1500000
    check = "SELECT count(*), sum(o_totalprice), max(o_comment) FROM {}"
    assert run(b, check.format("s3lake.sales.orders"))[0] == run(b, check.format("tpch.sf1.orders"))[0]
    written = keys(client, "warehouse/sales/orders/")
    data = [k for k in written if k.startswith("warehouse/sales/orders/data/") and k.endswith(".parquet")]
    assert "warehouse/sales/orders/_flotilla/table" in written, written
    assert len(data) >= 2, f"written in parallel, one file per task partition: {written}"
    assert error_name(b, "CREATE TABLE s3lake.sales.orders AS SELECT 1 AS x") == "TABLE_ALREADY_EXISTS"

    # INSERTs through both coordinators at once all land.
    run(a, "CREATE TABLE s3lake.sales.t (id bigint, name varchar) WITH (format = 'CSV')")
    assert run(b, "INSERT INTO s3lake.sales.t VALUES (1, 'a'), (2, 'b')")[1] == 2
    insert = "INSERT INTO s3lake.sales.t SELECT n_nationkey, n_name FROM tpch.tiny.nation"
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        counts = list(pool.map(lambda url: run(url, insert)[1], [a, b, a, b]))
    assert counts == [25, 25, 25, 25]
    assert run(b, "SELECT count(*), count(DISTINCT name) FROM s3lake.sales.t")[0] == [[102, 27]]

    # Of two CREATE TABLE AS racing for one name, exactly one wins.
    race = "CREATE TABLE s3lake.sales.raced AS SELECT * FROM tpch.tiny.lineitem"
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(lambda url: _outcome(url, race), [a, b]))
    assert sorted(map(str, outcomes)) == ["60175", "TABLE_ALREADY_EXISTS"], outcomes
    assert run(a, "SELECT count(*) FROM s3lake.sales.raced")[0] == [[60175]]

    # Views, rename and comments.
    run(a, "CREATE VIEW s3lake.sales.big AS SELECT o_orderkey FROM s3lake.sales.orders WHERE o_totalprice > 500000")
    assert run(b, "SELECT count(*) FROM s3lake.sales.big")[0] == run(
        b, "SELECT count(*) FROM tpch.sf1.orders WHERE o_totalprice > 500000"
    )[0]
    run(b, "ALTER TABLE s3lake.sales.t RENAME TO people")
    assert run(a, "SELECT count(*) FROM s3lake.sales.people")[0] == [[102]]
    assert error_name(a, "SELECT * FROM s3lake.sales.t") == "TABLE_NOT_FOUND"
    run(a, "COMMENT ON TABLE s3lake.sales.people IS 'who'")
    create = run(b, "SHOW CREATE TABLE s3lake.sales.people")[0][0][0]
    assert "COMMENT 'who'" in create and "format = 'CSV'" in create, create

    # Dropping leaves nothing behind.
    assert error_name(a, "DROP SCHEMA s3lake.sales") == "SCHEMA_NOT_EMPTY"
    run(a, "DROP VIEW s3lake.sales.big")
    for table in ["orders", "people", "raced"]:
        run(b, f"DROP TABLE s3lake.sales.{table}")
    run(a, "DROP SCHEMA s3lake.sales")
    assert "sales" not in [r[0] for r in run(b, "SHOW SCHEMAS FROM s3lake")[0]]
    assert wait_for(lambda: keys(client, "warehouse/sales/") == [], 10), keys(client, "warehouse/sales/")


def _outcome(url, sql):
    try:
        return run(url, sql)[1]
    except trino.exceptions.TrinoQueryError as error:
        return error.error_name
