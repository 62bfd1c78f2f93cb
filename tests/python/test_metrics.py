"""`GET /metrics` on every role of a process cluster (resource managers, coordinators,
workers, gateway) parses as OpenMetrics text, and its counters move with the queries run."""
import time

import requests
import trino
from prometheus_client.openmetrics.parser import text_string_to_metric_families


def scrape(url):
    response = requests.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    return {family.name: family for family in text_string_to_metric_families(response.text)}


def total(families, name, suffixes=("", "_total"), **labels):
    """The sum of family `name`'s samples (named `name` + one of `suffixes`) with `labels`."""
    family = families.get(name)
    if family is None:
        return 0.0
    return sum(
        sample.value
        for sample in family.samples
        if sample.name in [name + s for s in suffixes] and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def test_every_role_serves_metrics_that_move_with_the_queries(start_cluster):
    url, nodes = start_cluster("--resource-managers", "2", "--coordinators", "2", "--workers", "2")
    roles = {name: node_url for name, (node_url, _) in nodes.items()}
    assert {n.split("-")[0] for n in roles} >= {"resource", "coordinator", "worker", "gateway"}, roles
    coordinators = [u for n, u in roles.items() if n.startswith("coordinator")]
    workers = [u for n, u in roles.items() if n.startswith("worker")]
    managers = [u for n, u in roles.items() if n.startswith("resource")]
    gateways = [u for n, u in roles.items() if n.startswith("gateway")]

    def finished():
        return sum(total(scrape(u), "flotilla_queries_completed", state="FINISHED") for u in coordinators)

    def failed():
        return sum(total(scrape(u), "flotilla_queries_completed", state="FAILED") for u in coordinators)

    before, failed_before = finished(), failed()
    heartbeats_before = sum(total(scrape(u), "flotilla_resource_manager_heartbeats") for u in managers)
    routed_before = sum(total(scrape(u), "flotilla_gateway_queries_routed") for u in gateways)
    host, port = url.removeprefix("http://").rsplit(":", 1)
    connection = trino.dbapi.connect(host=host, port=int(port), user="metrics", catalog="tpch", schema="tiny")
    cursor = connection.cursor()
    for _ in range(4):
        cursor.execute("SELECT count(*) FROM lineitem")
        assert cursor.fetchall() == [[60175]]
    try:
        cursor.execute("SELECT * FROM no_such_table")
        cursor.fetchall()
        raise AssertionError("the query should fail")
    except trino.exceptions.TrinoUserError as error:
        assert error.error_name == "TABLE_NOT_FOUND"
    time.sleep(1.5)

    assert finished() >= before + 4
    assert failed() >= failed_before + 1
    failures = sum(
        total(scrape(u), "flotilla_queries_completed", state="FAILED", error="TABLE_NOT_FOUND") for u in coordinators
    )
    assert failures >= 1
    latencies = sum(total(scrape(u), "flotilla_query_seconds", ("_count",), state="FINISHED") for u in coordinators)
    assert latencies >= 4
    assert sum(total(scrape(u), "flotilla_resource_manager_heartbeats") for u in managers) > heartbeats_before
    assert sum(total(scrape(u), "flotilla_gateway_queries_routed") for u in gateways) >= routed_before + 5
    for worker in workers:
        families = scrape(worker)
        assert total(families, "flotilla_worker_memory_pool_bytes") > 0
        assert "flotilla_worker_running_tasks" in families
    # HTTP requests are counted by route template, never by raw path.
    statements = sum(
        total(scrape(u), "flotilla_http_requests", route="/v1/statement", method="POST") for u in coordinators
    )
    assert statements >= 5
    for coordinator in coordinators:
        routes = {s.labels["route"] for s in scrape(coordinator)["flotilla_http_requests"].samples}
        assert all("/v1/statement/queued/" not in r or "{" in r for r in routes), routes
    # Every role's view of the cluster is in its metrics.
    for coordinator in coordinators:
        families = scrape(coordinator)
        assert total(families, "flotilla_cluster_view_age_seconds") < 30
        assert "flotilla_queries_blocked_on_memory" in families
        assert total(families, "flotilla_queries_blocked_on_memory") == 0, "nothing waits on memory here"
    for manager in managers:
        assert total(scrape(manager), "flotilla_resource_manager_nodes", state="active") >= 6
