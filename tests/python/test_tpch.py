"""The 22 TPC-H queries through the protocol against tpch.tiny (STANDARD column names), on
a single coordinator and on a cluster of three workers, compared with DuckDB over Parquet
files that tpchgen wrote for the same scale factor."""
import datetime
import math
import pathlib
from decimal import Decimal

import duckdb
import pytest

QUERIES = sorted((pathlib.Path(__file__).resolve().parents[2] / ".." / "shared" / "tpch" / "queries").glob("q*.sql"))
TABLES = ["customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier"]


def normalize(value):
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime.datetime):
        return value.replace(tzinfo=None)
    return value


def same(a, b):
    a, b = normalize(a), normalize(b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)
    return a == b


@pytest.fixture(scope="module")
def duck(tpch_parquet):
    connection = duckdb.connect()
    for table in TABLES:
        connection.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{tpch_parquet / (table + '.parquet')}')")
    yield connection
    connection.close()


def test_all_22_queries_are_present():
    assert len(QUERIES) == 22, QUERIES


@pytest.mark.parametrize("path", QUERIES, ids=lambda p: p.stem)
def test_query_matches_duckdb(path, connect_any, duck):
    sql = path.read_text()
    cursor = connect_any(catalog="tpch", schema="tiny").cursor()
    cursor.execute(sql)
    ours = cursor.fetchall()
    theirs = [list(row) for row in duck.execute(sql).fetchall()]
    assert len(ours) == len(theirs), f"{path.stem}: {len(ours)} rows, DuckDB {len(theirs)}"
    for index, (mine, reference) in enumerate(zip(ours, theirs)):
        assert len(mine) == len(reference)
        for column, (a, b) in enumerate(zip(mine, reference)):
            assert same(a, b), f"{path.stem} row {index} column {column}: {a!r} != {b!r}"
