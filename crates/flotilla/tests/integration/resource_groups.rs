//! Resource groups across coordinators: a burst spread over three coordinators never runs
//! more than the group's limit (also while the admission leader dies), and the cluster's
//! queue limit holds across coordinators. A resource manager that is not the admission
//! leader refuses leases with a typed refusal that names the leader.

use std::time::{Duration, Instant};

use flotilla_proto::admission::{LeaseGrant, LeaseRefusal, LeaseRequest, LEASE_PATH};
use serde_json::Value;

use crate::harness::{ProcessCluster, TempDir};
use crate::Http;

/// An `etc/` with the file-based resource group manager and `groups` as its configuration.
fn etc_with_groups(groups: &str) -> TempDir {
    let etc = TempDir::new("flotilla-etc");
    let file = etc.path.join("resource-groups.json");
    std::fs::write(&file, groups).unwrap();
    std::fs::write(
        etc.path.join("resource-groups.properties"),
        format!("resource-groups.configuration-manager=file\nresource-groups.config-file={}\n", file.display()),
    )
    .unwrap();
    etc
}

/// Runs a query of the `global` group through each coordinator in turn: once each has
/// finished, every coordinator holds a lease from the admission leader (which grants
/// nothing in its first lease period).
async fn leases_granted(coordinators: &[Http]) {
    for http in coordinators {
        let responses = http.run_with(http.post_as("bench-warm-up", "SELECT 1")).await;
        assert!(responses.last().unwrap().get("error").is_none(), "{}", responses.last().unwrap());
    }
}

fn global(hard: u32, queued: u32) -> String {
    format!(
        r#"{{"rootGroups": [{{"name": "global", "softMemoryLimit": "100%", "hardConcurrencyLimit": {hard}, "maxQueued": {queued}}}],
            "selectors": [{{"user": "bench.*", "group": "global"}}]}}"#
    )
}

fn time(value: &Value) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    value.as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
}

/// Runs `count` queries at once, round-robin over `coordinators`; returns each one's
/// (running from, to) by the owner's clock, and how long the whole burst took.
async fn burst(
    coordinators: &[Http],
    count: usize,
    sql: &str,
    during: impl std::future::Future<Output = ()>,
) -> (Vec<(i64, i64)>, Duration) {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..count {
        let http = Http::new(&coordinators[i % coordinators.len()].base);
        let request = http.post_as(&format!("bench{i}"), sql);
        tasks.push(tokio::spawn(async move {
            let responses = http.run_with(request).await;
            let last = responses.last().unwrap().clone();
            assert!(last.get("error").is_none(), "query {i} failed: {}", last["error"]);
            let id = last["id"].as_str().unwrap().to_string();
            let info: Value = http.get_json(&format!("{}/v1/query/{id}", http.base)).await;
            let stats = &info["queryStats"];
            let from = time(&stats["executionStartTime"]).expect("a start time").timestamp_micros();
            let to = time(&stats["endTime"]).expect("an end time").timestamp_micros();
            assert_eq!(info["resourceGroupId"], serde_json::json!(["global"]), "{info}");
            (from, to)
        }));
    }
    during.await;
    let mut spans = Vec::new();
    for task in tasks {
        spans.push(task.await.unwrap());
    }
    (spans, started.elapsed())
}

/// The most intervals open at one instant.
fn most_at_once(spans: &[(i64, i64)]) -> usize {
    let mut events: Vec<(i64, i32)> = spans.iter().flat_map(|(from, to)| [(*from, 1), (*to, -1)]).collect();
    // An end before a start at the same instant: touching intervals do not overlap.
    events.sort();
    let (mut open, mut most) = (0i32, 0i32);
    for (_, change) in events {
        open += change;
        most = most.max(open);
    }
    most as usize
}

const BURST_QUERY: &str = "SELECT count(*) FROM tpch.sf1.orders";

async fn burst_test(kill_leader_after: Option<Duration>) {
    let etc = etc_with_groups(&global(2, 100));
    let mut cluster = ProcessCluster::builder().resource_managers(2).coordinators(3).etc_dir(&etc.path).start();
    let coordinators: Vec<Http> = cluster.cluster.coordinators.iter().map(|c| Http::new(&c.url)).collect();
    // The admission leader grants nothing in its first lease period (3 s): wait until every
    // coordinator has run a query of the group, so the figures are about the burst.
    leases_granted(&coordinators).await;
    if kill_leader_after.is_none() {
        // The other resource manager refuses a lease with a refusal that names the leader
        // (what coordinators follow), whatever the refusal's words.
        let request = LeaseRequest { coordinator: "probe".into(), instance: "i".into(), seq: 1, demands: vec![] };
        let follower = &cluster.cluster.resource_managers[1].url;
        let refused =
            cluster.internal_client().post::<_, LeaseGrant>(follower, LEASE_PATH, &request).await.unwrap_err();
        match refused.refusal::<LeaseRefusal>(409) {
            Some(LeaseRefusal::NotLeader { uri, .. }) => {
                assert_eq!(uri.trim_end_matches('/'), cluster.cluster.resource_managers[0].url.trim_end_matches('/'))
            }
            other => panic!("expected a refusal naming the leader, got {other:?} from {refused}"),
        }
    }
    let leader = &mut cluster.cluster.resource_managers[0];
    let during = async {
        if let Some(after) = kill_leader_after {
            tokio::time::sleep(after).await;
            leader.kill();
        }
    };
    let (spans, took) = burst(&coordinators, 30, BURST_QUERY, during).await;
    let most = most_at_once(&spans);
    let average: f64 = spans.iter().map(|(f, t)| (t - f) as f64 / 1e6).sum::<f64>() / spans.len() as f64;
    let ideal = 30.0 / 2.0 * average;
    println!(
        "30 queries, limit 2, 3 coordinators{}: at most {most} running at once; drained in {:.1} s, ideal {ideal:.1} s ({:.2}x), average query {average:.2} s",
        if kill_leader_after.is_some() { ", admission leader killed" } else { "" },
        took.as_secs_f64(),
        took.as_secs_f64() / ideal
    );
    assert_eq!(spans.len(), 30, "every query finished");
    assert!(most <= 2, "over-admission: {most} queries of a group limited to 2 ran at once: {spans:?}");
    assert_eq!(most, 2, "the limit is used, not just respected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_three_coordinators_never_runs_more_than_the_limit() {
    burst_test(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limit_holds_while_the_admission_leader_dies() {
    burst_test(Some(Duration::from_secs(3))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clusters_queue_limit_holds_across_coordinators_and_unmatched_queries_are_rejected() {
    let etc = etc_with_groups(&global(1, 5));
    std::fs::create_dir_all(etc.path.join("catalog")).unwrap();
    std::fs::write(etc.path.join("catalog/tpch.properties"), "connector.name=tpch\n").unwrap();
    std::fs::write(etc.path.join("catalog/blackhole.properties"), "connector.name=blackhole\n").unwrap();
    let cluster = ProcessCluster::builder().resource_managers(1).coordinators(3).etc_dir(&etc.path).start();
    let coordinators: Vec<Http> = cluster.cluster.coordinators.iter().map(|c| Http::new(&c.url)).collect();
    leases_granted(&coordinators).await;
    let submit = |i: usize, sql: &str| {
        let http = &coordinators[i % 3];
        let request = http.post_as(&format!("bench{i}"), sql);
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    // One runs (for an hour, a page a second) ...
    let create = "CREATE TABLE blackhole.default.slow (x bigint) \
                  WITH (split_count = 1, pages_per_split = 3600, rows_per_page = 1, page_processing_delay = '1s')";
    let created = coordinators[0].run_with(coordinators[0].post_as("bench-setup", create)).await;
    assert!(created.last().unwrap().get("error").is_none(), "{}", created.last().unwrap());
    let running = submit(0, "SELECT count(*) FROM blackhole.default.slow").await;
    let running_id = running["id"].as_str().unwrap().to_string();
    coordinators[0].wait_for_state(&running_id, &["PLANNING", "RUNNING"], Duration::from_secs(20)).await;
    // ... five wait, spread over the three coordinators ...
    let mut queued = Vec::new();
    for i in 1..=5 {
        queued.push(submit(i, "SELECT 1").await["id"].as_str().unwrap().to_string());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    // ... every coordinator lists them QUEUED in global (from the view: within a few
    // heartbeats), and the group's state says so ...
    for (i, id) in queued.iter().enumerate() {
        let owner = &coordinators[(i + 1) % 3];
        let info: Value = owner.get_json(&format!("{}/v1/query/{id}", owner.base)).await;
        assert_eq!(info["state"], "QUEUED", "{info}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listed: Vec<Value> =
            coordinators[2].get_json(&format!("{}/v1/query?state=QUEUED", coordinators[2].base)).await;
        let found: Vec<&Value> =
            queued.iter().filter_map(|id| listed.iter().find(|q| q["queryId"] == id.as_str())).collect();
        if found.len() == queued.len() {
            for entry in found {
                assert_eq!(entry["resourceGroupId"], serde_json::json!(["global"]), "{entry}");
            }
            break;
        }
        assert!(Instant::now() < deadline, "not every queued query is listed QUEUED: {listed:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let state: Value =
        coordinators[1].get_json(&format!("{}/v1/resourceGroupState/global", coordinators[1].base)).await;
    assert_eq!(state["numRunningQueries"], 1, "{state}");
    assert_eq!(state["numQueuedQueries"], 5, "{state}");
    assert_eq!(state["state"], "FULL", "{state}");
    // ... so the sixth queued query of the cluster fails, wherever it is sent.
    let sixth = Http::new(&coordinators[1].base);
    let error = sixth.error_with(sixth.post_as("bench6", "SELECT 1")).await;
    assert_eq!(error["errorName"], "QUERY_QUEUE_FULL", "{error}");
    // A query no selector matches is rejected.
    let error = sixth.error_with(sixth.post_as("stranger", "SELECT 1")).await;
    assert_eq!(error["errorName"], "QUERY_REJECTED", "{error}");
    // A queued query that is cancelled leaves the queue (its slot is not held by anyone).
    let cancelled = queued.pop().unwrap();
    let owner = &coordinators[5 % 3];
    let answer = owner
        .client
        .delete(format!("{}/v1/query/{cancelled}", owner.base))
        .header("X-Trino-User", "bench5")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 204);
    let info = owner.wait_for_state(&cancelled, &["FAILED"], Duration::from_secs(10)).await;
    assert_eq!(info["errorCode"]["name"], "USER_CANCELED", "{info}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state: Value =
            coordinators[1].get_json(&format!("{}/v1/resourceGroupState/global", coordinators[1].base)).await;
        if state["numQueuedQueries"] == 4 {
            break;
        }
        assert!(Instant::now() < deadline, "the cancelled query still counts as queued: {state}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Killing the running query lets the queue drain: every queued query finishes.
    let killed = coordinators[0]
        .client
        .delete(format!("{}/v1/query/{running_id}", coordinators[0].base))
        .header("X-Trino-User", "bench0");
    let killed = killed.send().await.unwrap();
    assert_eq!(killed.status(), 204);
    for (i, id) in queued.iter().enumerate() {
        let http = &coordinators[(i + 1) % 3];
        http.wait_for_state(id, &["FINISHED"], Duration::from_secs(30)).await;
    }
}
