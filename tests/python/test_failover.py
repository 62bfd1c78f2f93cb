"""Failover with the real Python client: 8 threads run queries through the gateway for 20 s
while one coordinator is SIGKILLed (at 5 s) and another drained (at 10 s).

New queries must never fail. Queries that were running on the killed coordinator are
reported as they ended (they fail with a clear error naming the coordinator). The figures
go to $FLOTILLA_REPORT_DIR/failover.json (and the test output)."""
import json
import os
import pathlib
import signal
import threading
import time

import requests
import trino

THREADS = 8
DURATION = 20.0
KILL_AT = 5.0
DRAIN_AT = 10.0
# Quick queries and ones that run long enough to be caught in flight by the kill.
QUERIES = [
    "SELECT 1",
    "SELECT count(*) FROM tpch.tiny.lineitem",
    "SELECT count(*), sum(o_totalprice) FROM tpch.sf1.orders WHERE o_orderpriority = '1-URGENT'",
]


def run_client(url, index, start, records):
    host, port = url.removeprefix("http://").rsplit(":", 1)
    turn = index
    while time.monotonic() - start < DURATION:
        sql = QUERIES[turn % len(QUERIES)]
        turn += 1
        connection = trino.dbapi.connect(host=host, port=int(port), user=f"client{index}", catalog="tpch")
        began = time.monotonic() - start
        record = {"thread": index, "sql": sql, "start": began}
        try:
            cursor = connection.cursor()
            cursor.execute(sql)
            cursor.fetchall()
            record.update(ok=True, query_id=cursor.query_id)
        except Exception as error:  # every failure is recorded and judged below
            record.update(ok=False, error=f"{type(error).__name__}: {error}", query_id=getattr(error, "query_id", None))
        finally:
            connection.close()
        record["end"] = time.monotonic() - start
        records.append(record)


def test_new_queries_never_fail_while_coordinators_die_and_drain(start_cluster):
    url, nodes = start_cluster("--resource-managers", "1", "--coordinators", "3", "--workers", "1")
    coordinator_ids = {}
    deadline = time.time() + 10
    while len(coordinator_ids) < 3 and time.time() < deadline:
        listed = requests.get(f"{url}/v1/node", timeout=5).json()
        coordinator_ids = {n["nodeId"]: n["coordinatorId"] for n in listed if n.get("coordinatorId")}
        time.sleep(0.1)
    while len(requests.get(f"{url}/v1/gateway", timeout=5).json()["coordinators"]) < 3 and time.time() < deadline:
        time.sleep(0.1)
    killed_url, killed_pid = nodes["coordinator-1"]
    _, drained_pid = nodes["coordinator-2"]
    killed, drained = coordinator_ids["coordinator-1"], coordinator_ids["coordinator-2"]

    records = []
    start = time.monotonic()
    threads = [threading.Thread(target=run_client, args=(url, i, start, records)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    time.sleep(KILL_AT)
    os.kill(killed_pid, signal.SIGKILL)
    killed_at = time.monotonic() - start
    time.sleep(DRAIN_AT - killed_at)
    # SIGTERM drains, as PUT /v1/info/state does (which needs the cluster's secret or an
    # admin user; the Rust suite covers it).
    os.kill(drained_pid, signal.SIGTERM)
    drained_at = time.monotonic() - start
    for thread in threads:
        thread.join(DURATION + 120)

    def owner(record):
        return (record.get("query_id") or "").rsplit("_", 1)[-1]

    # In flight on the killed coordinator: owned by it, or sent to it (the gateway says
    # which coordinator failed when a query was lost before it had an id).
    on_killed = [
        r
        for r in records
        if r["start"] < killed_at and (owner(r) == killed or "coordinator-1" in r.get("error", ""))
    ]
    lost = [r for r in on_killed if not r["ok"]]
    new_failures = [r for r in records if not r["ok"] and r not in on_killed]
    ends = sorted(r["end"] for r in records if r["ok"])
    gaps = [b - a for a, b in zip(ends, ends[1:])]
    report = {
        "threads": THREADS,
        "seconds": DURATION,
        "killed": {"node": "coordinator-1", "coordinatorId": killed, "at": round(killed_at, 2)},
        "drained": {"node": "coordinator-2", "coordinatorId": drained, "at": round(drained_at, 2)},
        "queries": len(records),
        "succeeded": sum(r["ok"] for r in records),
        "newQueriesFailed": len(new_failures),
        "runningOnKilledCoordinator": len(on_killed),
        "runningOnKilledCoordinatorFailed": len(lost),
        "runningOnKilledCoordinatorErrors": sorted({r["error"][:200] for r in lost}),
        "drainedCoordinatorQueries": sum(owner(r) == drained for r in records),
        "drainedCoordinatorFailures": sum(owner(r) == drained and not r["ok"] for r in records),
        "longestGapBetweenCompletionsSeconds": round(max(gaps, default=DURATION), 3),
        "newQueryFailures": [f"{r['sql']}: {r['error'][:300]}" for r in new_failures],
    }
    out = pathlib.Path(os.environ.get("FLOTILLA_REPORT_DIR", "target/reports"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "failover.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))

    assert report["newQueriesFailed"] == 0, report
    assert report["drainedCoordinatorFailures"] == 0, report
    assert all(f"coordinator {killed} is gone" in error for error in report["runningOnKilledCoordinatorErrors"]), report
    assert report["succeeded"] > 3 * THREADS, report
    # The survivors serve the rest of the run.
    assert any(r["ok"] and r["start"] > drained_at + 1 for r in records), report
