"""The web UI in a real browser: Debian's headless Chromium (/usr/bin/chromium, installed by
scripts/test) driven by Playwright, against a cluster of two coordinators.

Queries run through coordinator A; the UI is opened on coordinator B: they are in B's list,
a query's detail page (Superset's /ui/query.html?ID link) comes from A through B, a running
query killed from B fails on A's client, the login cookie B issued is accepted by A, and the
pages work at 1280x800 and at 390px wide. Screenshots of each page go to
$FLOTILLA_REPORT_DIR/ui/ (not committed; docs/ holds one of each for the README)."""
import os
import pathlib
import threading
import time

import requests
import trino
from playwright.sync_api import sync_playwright

from conftest import SLOW_QUERY, SLOW_TABLE

CHROMIUM = os.environ.get("FLOTILLA_CHROMIUM", "/usr/bin/chromium")
SHOTS = pathlib.Path(os.environ.get("FLOTILLA_REPORT_DIR", "target/reports")) / "ui"
# Runs for an hour on the worker, costing nothing: long enough to be killed from the UI.
LONG_QUERY = SLOW_QUERY
SHORT_QUERIES = [
    "SELECT count(*) FROM tpch.tiny.nation",
    "SELECT n_name, count(*) FROM tpch.tiny.nation GROUP BY n_name ORDER BY 1 LIMIT 3",
]
COOKIE = "Trino-UI-Token"


def connect(url, user):
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return trino.dbapi.connect(host=host, port=int(port), user=user, catalog="tpch", source="ui-test")


def wait_until(predicate, timeout=30.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def shot(page, name):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def info_a_owner(nodes, url):
    """The node id of the coordinator serving at `url`."""
    return next(name for name, (node_url, _) in nodes.items() if node_url == url)


def fits_width(page):
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


def test_the_ui_shows_the_whole_cluster_from_any_coordinator(start_cluster):
    gateway, nodes = start_cluster("--resource-managers", "1", "--coordinators", "2", "--workers", "1")
    a, b = sorted(url for name, (url, _) in nodes.items() if name.startswith("coordinator"))
    for coordinator in (a, b):
        wait_until(
            lambda: sum(1 for n in requests.get(f"{coordinator}/v1/node", timeout=5).json() if n.get("coordinatorId")) == 2
            and requests.get(f"{coordinator}/v1/cluster", timeout=5).json().get("activeWorkers", 0) >= 1,
            what="both coordinators and the worker in the view",
        )

    # Queries through A.
    finished = []
    for sql in SHORT_QUERIES:
        cursor = connect(a, "alice").cursor()
        cursor.execute(sql)
        cursor.fetchall()
        finished.append(cursor.query_id)
    long_run = {}
    started = threading.Event()
    setup = connect(a, "alice").cursor()
    setup.execute(SLOW_TABLE)
    setup.fetchall()

    def run_long():
        cursor = connect(a, "alice").cursor()
        try:
            cursor.execute(LONG_QUERY)
            cursor.fetchall()
            long_run["result"] = "finished"
        except Exception as error:  # the kill's failure is what the test wants to see
            long_run["result"] = f"{type(error).__name__}: {error}"

    thread = threading.Thread(target=run_long, daemon=True)
    thread.start()

    def long_query_running():
        listed = requests.get(f"{a}/v1/query", params={"state": "RUNNING"}, timeout=5).json()
        long_run["id"] = next((q["queryId"] for q in listed if q["query"] == LONG_QUERY), None)
        return long_run["id"] is not None

    wait_until(long_query_running, what="the long query running on A")
    long_id = long_run["id"]

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            # Not logged in: the login form, then back to the page asked for.
            page.goto(f"{b}/ui/queries.html")
            page.wait_for_selector("#username")
            assert "/ui/login.html" in page.url
            shot(page, "login")
            page.fill("#username", "alice")
            page.click("button[type=submit]")
            page.wait_for_url("**/ui/queries.html")

            # B lists A's queries (finished and running), with a kill button for the running one.
            for query_id in finished + [long_id]:
                page.wait_for_selector(f'tr[data-query-id="{query_id}"]', timeout=30000)
            assert thread.is_alive(), f"the long query is still running: {long_run}"
            row = page.locator(f'tr[data-query-id="{long_id}"]')
            assert row.locator("button.kill").count() == 1, row.inner_text()
            page.fill("#f-text", "nation")
            wait_until(lambda: page.locator(f'tr[data-query-id="{long_id}"]').count() == 0, what="text filter")
            assert page.locator(f'tr[data-query-id="{finished[0]}"]').count() == 1
            page.fill("#f-text", "")
            page.select_option("#f-state", "RUNNING")
            page.wait_for_selector(f'tr[data-query-id="{long_id}"]')
            wait_until(lambda: page.locator(f'tr[data-query-id="{finished[0]}"]').count() == 0, what="state filter")
            page.select_option("#f-state", "")
            page.wait_for_selector(f'tr[data-query-id="{finished[0]}"]')
            shot(page, "queries")

            # The login cookie B issued is accepted by A (the same signing secret).
            token = next(c["value"] for c in page.context.cookies() if c["name"] == COOKIE)
            assert requests.get(f"{a}/ui/api/stats", cookies={COOKIE: token}, timeout=5).status_code == 200
            assert requests.get(f"{a}/ui/api/stats", timeout=5).status_code == 401
            assert requests.get(f"{a}/ui/api/stats", cookies={COOKIE: token + "x"}, timeout=5).status_code == 401

            # A finished query's detail, opened from B's list (its owner is A).
            page.click(f'a[href="/ui/query.html?{finished[1]}"]')
            page.wait_for_selector("#query-sql")
            assert "GROUP BY" in page.inner_text("#query-sql")
            detail = page.inner_text("#detail")
            assert "alice" in detail and "FINISHED" in detail
            shot(page, "query")

            # Someone else may not kill alice's query.
            other = browser.new_page()
            other.goto(f"{b}/ui/login.html")
            other.fill("#username", "mallory")
            other.click("button[type=submit]")
            other.wait_for_url("**/ui/")
            mallory = next(c["value"] for c in other.context.cookies() if c["name"] == COOKIE)
            refused = requests.put(f"{b}/ui/api/query/{long_id}/killed", cookies={COOKIE: mallory}, timeout=10)
            assert refused.status_code == 403, refused.text
            other.close()

            # Kill the running query from B, on its detail page (Superset's link form).
            page.goto(f"{b}/ui/query.html?{long_id}")
            page.wait_for_selector("#kill", timeout=30000)
            page.wait_for_selector("#placements", timeout=30000)
            assert "worker-1" in page.inner_text("#placements"), "the tasks' worker is shown"
            shot(page, "query-running")
            page.click("#kill")
            thread.join(60)
            assert "ADMINISTRATIVELY_KILLED" in long_run.get("result", "") or "Killed from the web UI" in long_run.get(
                "result", ""
            ), long_run
            assert "alice" in long_run["result"], long_run
            page.wait_for_selector("#query-error", timeout=30000)
            assert "Killed from the web UI by alice" in page.inner_text("#query-error")

            # The other pages.
            page.goto(f"{b}/ui/")
            page.wait_for_selector("#cards .card")
            page.wait_for_timeout(3000)  # a few samples for the live chart
            wait_until(lambda: "coordinator" in page.inner_text("#nodes"), what="nodes table")
            overview = page.text_content("main")
            assert "Workers" in overview and "Queries / minute" in overview
            shot(page, "overview")
            page.goto(f"{b}/ui/workers.html")
            page.wait_for_selector("#workers tbody tr")
            assert "worker-1" in page.inner_text("#workers")
            shot(page, "workers")
            page.goto(f"{b}/ui/groups.html")
            page.wait_for_selector("#resource-groups p, #resource-groups table")
            shot(page, "groups")

            # Usable on a phone: nothing wider than the screen, the list still there.
            page.set_viewport_size({"width": 390, "height": 844})
            for name in ["", "queries.html", f"query.html?{finished[0]}", "workers.html"]:
                page.goto(f"{b}/ui/{name}")
                page.wait_for_timeout(1500)
                assert fits_width(page), f"/ui/{name} is wider than 390px"
            page.goto(f"{b}/ui/queries.html")
            page.wait_for_selector(f'tr[data-query-id="{finished[0]}"]')
            shot(page, "queries-narrow")

            # Trino-compatible JSON behind it.
            stats = requests.get(f"{b}/ui/api/stats", cookies={COOKIE: token}, timeout=5).json()
            for key in ["runningQueries", "blockedQueries", "queuedQueries", "activeWorkers", "activeCoordinators"]:
                assert key in stats, stats
            listed = requests.get(f"{b}/ui/api/query", cookies={COOKIE: token}, timeout=5).json()
            assert {q["queryId"] for q in listed} >= set(finished + [long_id])
            info = requests.get(f"{b}/ui/api/query/{finished[0]}", cookies={COOKIE: token}, timeout=5).json()
            assert info["state"] == "FINISHED" and info["session"]["user"] == "alice"
            # Through the gateway too: the page from any coordinator, the detail from the owner.
            assert requests.get(f"{gateway}/ui/queries.html", cookies={COOKIE: token}, timeout=5).status_code == 200
            info = requests.get(f"{gateway}/ui/api/query/{finished[0]}", cookies={COOKIE: token}, timeout=5).json()
            assert info["coordinator"] == info_a_owner(nodes, a), info
        finally:
            browser.close()
