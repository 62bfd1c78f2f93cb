"""The `trino` package's DB-API, unmodified, against Flotilla."""
import datetime
import math
import threading
from zoneinfo import ZoneInfo
from decimal import Decimal

import pytest
import trino

from conftest import SLOW_QUERY, SLOW_TABLE


def test_fetchall_and_description(connect):
    cursor = connect(catalog="tpch", schema="tiny").cursor()
    cursor.execute("SELECT n_nationkey, n_name FROM nation ORDER BY n_nationkey")
    rows = cursor.fetchall()
    assert len(rows) == 25
    assert rows[0] == [0, "ALGERIA"]
    names = [d[0] for d in cursor.description]
    types = [d[1] for d in cursor.description]
    assert names == ["n_nationkey", "n_name"]
    assert types == ["bigint", "varchar"]


def test_parameters_are_bound(connect):
    cursor = connect(catalog="tpch", schema="tiny").cursor()
    cursor.execute("SELECT n_name FROM nation WHERE n_nationkey = ? AND n_name <> ?", [7, "x"])
    assert cursor.fetchall() == [["GERMANY"]]
    cursor.execute("SELECT ?, ?, ?, ?", [1.5, "it's", None, datetime.date(2001, 8, 22)])
    assert cursor.fetchall() == [[1.5, "it's", None, datetime.date(2001, 8, 22)]]


def test_legacy_prepared_statements_work_too(connect):
    cursor = connect(catalog="tpch", schema="tiny", legacy_prepared_statements=True).cursor()
    cursor.execute("SELECT count(*) FROM nation WHERE n_regionkey = ?", [1])
    assert cursor.fetchall() == [[5]]


def test_stats_are_reported(connect):
    cursor = connect().cursor()
    cursor.execute("SELECT count(*) FROM tpch.tiny.lineitem")
    assert cursor.fetchall() == [[60175]]
    stats = cursor.stats
    assert stats["state"] == "FINISHED"
    assert stats["processedRows"] >= 60175
    assert stats["totalSplits"] >= 1


def test_cancel_stops_a_running_query(connect, server):
    import requests

    setup = connect().cursor()
    setup.execute(SLOW_TABLE)
    setup.fetchall()
    cursor = connect().cursor()
    # execute() blocks until the first row arrives, so the cancel comes from another thread,
    # as it would from a UI's cancel button.
    timer = threading.Timer(1.0, cursor.cancel)
    timer.start()
    try:
        cursor.execute(SLOW_QUERY)
        cursor.fetchall()
    except trino.exceptions.TrinoUserError as error:
        assert error.error_name == "USER_CANCELED"
    finally:
        timer.cancel()
    assert cursor.query_id is not None
    info = requests.get(f"{server}/v1/query/{cursor.query_id}", timeout=10).json()
    assert info["state"] == "FAILED"
    assert info["errorCode"]["name"] == "USER_CANCELED"


def test_errors_surface_with_trino_names(connect):
    cursor = connect().cursor()
    with pytest.raises(trino.exceptions.TrinoUserError) as failure:
        cursor.execute("SELECT * FROM tpch.tiny.nope")
        cursor.fetchall()
    assert failure.value.error_name == "TABLE_NOT_FOUND"
    with pytest.raises(trino.exceptions.TrinoUserError) as failure:
        cursor.execute("SELEC 1")
        cursor.fetchall()
    assert failure.value.error_name == "SYNTAX_ERROR"
    assert failure.value.error_location[0] == 1


def test_use_and_session_properties_stick_to_the_connection(connect):
    connection = connect()
    cursor = connection.cursor()
    cursor.execute("USE tpch.tiny")
    cursor.fetchall()
    cursor.execute("SELECT count(*) FROM region")
    assert cursor.fetchall() == [[5]]
    cursor.execute("SET SESSION query_max_run_time = '1h'")
    cursor.fetchall()
    cursor.execute("SHOW SESSION LIKE 'query_max_run_time'")
    assert cursor.fetchall()[0][1] == "1h"


def test_every_supported_type_round_trips(connect):
    cursor = connect().cursor()
    cursor.execute(
        """
        SELECT
          true,
          CAST(1 AS tinyint), CAST(2 AS smallint), CAST(3 AS integer), CAST(4 AS bigint),
          CAST(1.5 AS real), CAST(2.25 AS double), nan(), infinity(),
          DECIMAL '12.30', 'text', X'CAFE',
          DATE '2001-08-22', TIMESTAMP '2001-08-22 03:04:05.321', CAST(TIMESTAMP '2001-08-22 03:04:05.321' AS timestamp(3)),
          ARRAY[1, 2], named_struct('a', 1, 'b', 'x'), CAST(NULL AS varchar),
          MAP(ARRAY['k'], ARRAY[7]), TIME '03:04:05.123',
          CAST(TIMESTAMP '2001-08-22 03:04:05.321' AS timestamp(3) with time zone)
        """
    )
    row = cursor.fetchall()[0]
    expected = [
        True,
        1, 2, 3, 4,
        1.5, 2.25, None, math.inf,
        Decimal("12.30"), "text", b"\xca\xfe",
        datetime.date(2001, 8, 22),
        datetime.datetime(2001, 8, 22, 3, 4, 5, 321000),
        datetime.datetime(2001, 8, 22, 3, 4, 5, 321000),
        [1, 2], (1, "x"), None,
        {"k": 7}, datetime.time(3, 4, 5, 123000),
        datetime.datetime(2001, 8, 22, 3, 4, 5, 321000, tzinfo=ZoneInfo("UTC")),
    ]
    assert len(row) == len(expected)
    for index, (got, want) in enumerate(zip(row, expected)):
        if index == 7:
            assert math.isnan(got)
        else:
            assert got == want, f"column {index}: {got!r} != {want!r}"
            assert type(got) is type(want) or want is None or isinstance(got, tuple), f"column {index}: {type(got)}"
    assert row[16].a == 1 and row[16].b == "x"
    types = [d[1] for d in cursor.description]
    assert types[:5] == ["boolean", "tinyint", "smallint", "integer", "bigint"]
    assert types[9] == "decimal(4,2)"
    assert types[14] == "timestamp(3)"
    assert types[16] == "row(a bigint, b varchar)"
    assert types[18] == "map(varchar, bigint)"
    assert types[20] == "timestamp(3) with time zone"
