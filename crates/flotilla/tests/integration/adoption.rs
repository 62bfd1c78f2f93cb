//! Queries outlive their coordinator: a follow-up of a query whose owner was SIGKILLed is
//! adopted by a live coordinator, which runs it again under its id, while it was queued,
//! running before its first row, and after rows were delivered (every row exactly once when
//! the order is deterministic, a clear error otherwise). A write that had started is not run
//! again. Followers racing to adopt one query (through two gateways and two coordinators at
//! once) adopt it once.

use std::time::Duration;

use flotilla_gateway::RoutingPolicy;
use serde_json::Value;

use crate::coordinators::{coordinator_ids, wait_gateway_sees};
use crate::harness::{ProcessCluster, TempDir};
use crate::{collect, Http};

/// Every row ordered by every column: the order is deterministic.
const ORDERED: &str = "SELECT orderkey, linenumber FROM tpch.tiny.lineitem ORDER BY orderkey, linenumber";
/// The same rows in no promised order.
const UNORDERED: &str = "SELECT orderkey, linenumber FROM tpch.tiny.lineitem";
/// Runs for a few seconds before its one row.
const SLOW_AGGREGATE: &str = "SELECT count(*), sum(quantity) FROM tpch.sf1.lineitem";
/// What a coordinator logs when it adopts a query.
const ADOPTED_LINE: &str = "adopted a query whose coordinator is gone";

/// `tpch`, `blackhole` and a `lake` of files; resource groups where `bench*` users share
/// one running slot and everyone else is unlimited.
fn etc() -> (TempDir, TempDir) {
    let etc = TempDir::new("flotilla-etc");
    let lake = TempDir::new("flotilla-lake");
    std::fs::create_dir_all(etc.path.join("catalog")).unwrap();
    std::fs::write(etc.path.join("catalog/tpch.properties"), "connector.name=tpch\n").unwrap();
    std::fs::write(etc.path.join("catalog/blackhole.properties"), "connector.name=blackhole\n").unwrap();
    std::fs::write(
        etc.path.join("catalog/lake.properties"),
        format!("connector.name=files\nfiles.root={}\n", lake.path.display()),
    )
    .unwrap();
    let groups = etc.path.join("resource-groups.json");
    std::fs::write(
        &groups,
        r#"{"rootGroups": [{"name": "bench", "softMemoryLimit": "100%", "hardConcurrencyLimit": 1, "maxQueued": 10},
                           {"name": "other", "softMemoryLimit": "100%", "hardConcurrencyLimit": 1000, "maxQueued": 1000}],
            "selectors": [{"user": "bench.*", "group": "bench"}, {"group": "other"}]}"#,
    )
    .unwrap();
    std::fs::write(
        etc.path.join("resource-groups.properties"),
        format!("resource-groups.configuration-manager=file\nresource-groups.config-file={}\n", groups.display()),
    )
    .unwrap();
    (etc, lake)
}

/// Polls `next` (its host replaced by `via`'s) to the end; returns every response.
async fn follow(via: &Http, mut next: Option<String>, owner_base: &str) -> Vec<Value> {
    let mut responses = Vec::new();
    while let Some(uri) = next {
        let uri = uri.replacen(owner_base, &via.base, 1);
        let response = via.client.get(&uri).send().await.unwrap();
        assert_eq!(response.status(), 200, "GET {uri}");
        let body: Value = response.json().await.unwrap();
        next = body["nextUri"].as_str().map(str::to_string);
        responses.push(body);
        assert!(responses.len() < 10_000, "query never ended");
    }
    responses
}

/// Polls on the owner until at least one page of rows arrived; returns the responses.
async fn first_rows(owner: &Http, first: Value) -> Vec<Value> {
    let mut responses = vec![first];
    while collect(&responses).1.is_empty() {
        let next = responses.last().unwrap()["nextUri"].as_str().expect("more pages than one").to_string();
        responses.push(owner.get_json(&next).await);
    }
    assert!(responses.last().unwrap()["nextUri"].is_string(), "rows remain after the first page");
    responses
}

fn adoptions(cluster: &ProcessCluster) -> usize {
    cluster
        .cluster
        .coordinators
        .iter()
        .map(|c| std::fs::read_to_string(&c.log_path).unwrap_or_default().matches(ADOPTED_LINE).count())
        .sum()
}

fn no_error(responses: &[Value]) {
    let last = responses.last().unwrap();
    assert!(last.get("error").is_none(), "{}", last["error"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_coordinators_queries_are_adopted_queued_running_and_after_rows() {
    let (etc, _lake) = etc();
    let mut cluster = ProcessCluster::builder().coordinators(6).workers(1).etc_dir(&etc.path).start();
    let http: Vec<Http> = cluster.cluster.coordinators.iter().map(|c| Http::new(&c.url)).collect();
    let survivor = &http[5];
    coordinator_ids(survivor, 6).await;
    crate::distributed::wait_for_nodes(survivor, 8).await;
    let (_, expected_ordered) = survivor.rows(ORDERED).await;
    let (_, expected_aggregate) = survivor.rows(SLOW_AGGREGATE).await;

    // Running, before its first row: the survivor runs it again and answers.
    let first = http[0].first(http[0].post(SLOW_AGGREGATE)).await;
    let id = first["id"].as_str().unwrap().to_string();
    http[0].wait_for_state(&id, &["RUNNING"], Duration::from_secs(20)).await;
    cluster.cluster.coordinators[0].kill();
    let responses = follow(survivor, first["nextUri"].as_str().map(str::to_string), &http[0].base).await;
    no_error(&responses);
    assert_eq!(collect(&responses).1, expected_aggregate);
    assert!(responses.iter().all(|r| r["id"] == id.as_str()), "the same query id throughout");
    let info: Value = survivor.get_json(&format!("{}/v1/query/{id}", survivor.base)).await;
    assert_eq!(info["state"], "FINISHED", "{info}");
    assert!(info["adoptedFrom"]["from"].as_str().unwrap().contains("is gone"), "{info}");

    // After rows were delivered, in a deterministic order: every row exactly once.
    let first = http[1].first(http[1].post(ORDERED)).await;
    let before = first_rows(&http[1], first).await;
    let delivered = collect(&before).1.len();
    cluster.cluster.coordinators[1].kill();
    let after = follow(survivor, before.last().unwrap()["nextUri"].as_str().map(str::to_string), &http[1].base).await;
    no_error(&after);
    let mut rows = collect(&before).1;
    rows.extend(collect(&after).1);
    assert!(delivered > 0 && delivered < rows.len(), "{delivered} of {} rows before the kill", rows.len());
    assert_eq!(rows.len(), expected_ordered.len(), "every row exactly once");
    assert!(rows == expected_ordered, "the rows in order");

    // After rows were delivered, in no promised order: a clear error, no duplicate row.
    let first = http[2].first(http[2].post(UNORDERED)).await;
    let before = first_rows(&http[2], first).await;
    let delivered = collect(&before).1.len();
    cluster.cluster.coordinators[2].kill();
    let after = follow(survivor, before.last().unwrap()["nextUri"].as_str().map(str::to_string), &http[2].base).await;
    let error = &after.last().unwrap()["error"];
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains(&format!("died after {delivered} rows were returned")), "{error}");
    assert!(message.contains("cannot be resumed safely"), "{error}");
    assert!(collect(&after).1.is_empty(), "no row is sent twice");

    // Queued: the adopter queues it in its resource group (one slot, held by a slow query
    // on the survivor), where it waits its turn and then runs.
    let slow = crate::blackhole::slow_table(survivor, "hold", 6).await;
    let holder = survivor.first(survivor.post_as("bench-holder", &slow)).await;
    let holder_id = holder["id"].as_str().unwrap().to_string();
    survivor.wait_for_state(&holder_id, &["RUNNING"], Duration::from_secs(30)).await;
    let first = http[3].first(http[3].post_as("bench-queued", "SELECT count(*) FROM tpch.tiny.nation")).await;
    let queued_id = first["id"].as_str().unwrap().to_string();
    http[3].wait_for_state(&queued_id, &["QUEUED"], Duration::from_secs(10)).await;
    cluster.cluster.coordinators[3].kill();
    let responses = follow(survivor, first["nextUri"].as_str().map(str::to_string), &http[3].base).await;
    no_error(&responses);
    assert_eq!(collect(&responses).1, vec![vec![Value::from(25)]]);
    assert!(responses.iter().any(|r| r["stats"]["state"] == "QUEUED"), "it waited in its queue after adoption");
    let holder_info: Value = survivor.get_json(&format!("{}/v1/query/{holder_id}", survivor.base)).await;
    let queued_info: Value = survivor.get_json(&format!("{}/v1/query/{queued_id}", survivor.base)).await;
    let time = |info: &Value, field: &str| {
        chrono::DateTime::parse_from_rfc3339(info["queryStats"][field].as_str().unwrap()).unwrap()
    };
    assert!(
        time(&holder_info, "endTime") <= time(&queued_info, "executionStartTime"),
        "the slot was shared, not doubled: {holder_info} / {queued_info}"
    );

    // A write that had started is not run again: whether it committed is unknown.
    let slow = crate::blackhole::slow_table(&http[4], "feed", 30).await;
    let ctas = format!("CREATE TABLE lake.default.adopted AS {}", slow.replace("count(*)", "*"));
    http[4].rows("CREATE SCHEMA IF NOT EXISTS lake.default").await;
    let first = http[4].first(http[4].post(&ctas)).await;
    let write_id = first["id"].as_str().unwrap().to_string();
    http[4].wait_for_state(&write_id, &["PLANNING", "RUNNING"], Duration::from_secs(20)).await;
    cluster.cluster.coordinators[4].kill();
    let responses = follow(survivor, first["nextUri"].as_str().map(str::to_string), &http[4].base).await;
    let error = &responses.last().unwrap()["error"];
    assert_eq!(error["errorName"], "REMOTE_HOST_GONE", "{error}");
    assert!(error["message"].as_str().unwrap().contains("whether it committed is unknown"), "{error}");
    assert_eq!(adoptions(&cluster), 4, "one adoption per adopted query");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_racing_to_adopt_one_query_adopt_it_once() {
    let (etc, _lake) = etc();
    let mut cluster =
        ProcessCluster::builder().coordinators(3).gateways(2, RoutingPolicy::RoundRobin).etc_dir(&etc.path).start();
    let coordinators: Vec<Http> = cluster.cluster.coordinators.iter().map(|c| Http::new(&c.url)).collect();
    let gateways: Vec<Http> = cluster.cluster.gateways.iter().map(|g| Http::new(&g.url)).collect();
    let ids = coordinator_ids(&coordinators[0], 3).await;
    for gateway in &gateways {
        wait_gateway_sees(gateway, 3).await;
    }
    let (_, expected) = coordinators[0].rows(ORDERED).await;

    let first = gateways[0].first(gateways[0].post(ORDERED)).await;
    let id = first["id"].as_str().unwrap().to_string();
    let owner = ids.iter().position(|(_, coordinator)| id.ends_with(coordinator.as_str())).unwrap();
    let before = first_rows(&gateways[0], first).await;
    cluster.cluster.coordinators[owner].kill();

    // The same poll at once through both gateways and both other coordinators.
    let next = before.last().unwrap()["nextUri"].as_str().unwrap().to_string();
    let mut via: Vec<&Http> = gateways.iter().collect();
    via.extend(coordinators.iter().enumerate().filter(|(i, _)| *i != owner).map(|(_, c)| c));
    let polls = via.iter().map(|http| {
        let uri = next.replacen(&gateways[0].base, &http.base, 1);
        let client = http.client.clone();
        async move {
            let response = client.get(&uri).send().await.unwrap();
            assert_eq!(response.status(), 200, "GET {uri}");
            response.json::<Value>().await.unwrap()
        }
    });
    let answers = futures::future::join_all(polls).await;
    for answer in &answers {
        assert!(answer.get("error").is_none(), "{answer}");
        assert_eq!(answer["data"], answers[0]["data"], "every racing poll got the same page");
    }
    let after = follow(&gateways[1], answers[0]["nextUri"].as_str().map(str::to_string), &gateways[0].base).await;
    no_error(&after);
    let mut rows = collect(&before).1;
    rows.extend(collect(&answers[..1]).1);
    rows.extend(collect(&after).1);
    assert_eq!(rows.len(), expected.len(), "every row exactly once");
    assert!(rows == expected, "the rows in order");
    assert_eq!(adoptions(&cluster), 1, "adopted once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_and_claims_are_for_signed_nodes_and_bounded() {
    use flotilla_proto::adoption::{AdoptAnswer, AdoptRequest, QueryRegistration, ADOPT_PATH, REGISTRATION_PATH};
    let cluster = ProcessCluster::builder().coordinators(2).start();
    let rm = cluster.cluster.resource_managers[0].url.clone();
    let http = Http::new(&cluster.cluster.coordinators[0].url);
    coordinator_ids(&http, 2).await;
    let signed = cluster.internal_client();
    let view: flotilla_proto::cluster::ClusterView =
        signed.get(&rm, flotilla_proto::cluster::CLUSTER_VIEW_PATH).await.unwrap();
    let owner = view.nodes.iter().find(|n| n.node.node_id == "coordinator-1").map(|n| n.node.clone()).unwrap();
    let registration = QueryRegistration {
        query_id: "20261201_101010_00001_abcde".into(),
        slug: "yslug".into(),
        sql: "SELECT 1".into(),
        session_headers: vec![("x-trino-user".into(), "alice".into())],
        create_time_ms: 1,
        owner: "coordinator-1".into(),
        owner_instance: owner.instance.clone(),
        owner_uri: owner.http_uri.clone(),
        epoch: 0,
        write: false,
        started: false,
    };
    let raw = reqwest::Client::new();
    // Unsigned: refused, whatever the body.
    for path in [REGISTRATION_PATH, ADOPT_PATH] {
        let answer = raw.post(format!("{rm}{path}")).json(&registration).send().await.unwrap();
        assert_eq!(answer.status(), 401, "{path}");
    }
    let unsigned = raw.get(format!("{rm}{REGISTRATION_PATH}/{}", registration.query_id)).send().await.unwrap();
    assert_eq!(unsigned.status(), 401);
    // Signed but malformed, not a query id, or too large.
    let token = cluster.internal_token();
    let post = |path: &str, body: Vec<u8>| {
        raw.post(format!("{rm}{path}"))
            .header(flotilla_proto::INTERNAL_BEARER_HEADER, token.clone())
            .header("content-type", "application/json")
            .body(body)
    };
    for body in [b"{".to_vec(), b"[]".to_vec(), b"{\"queryId\": 7}".to_vec()] {
        let status = post(REGISTRATION_PATH, body).send().await.unwrap().status().as_u16();
        assert!((400..500).contains(&status), "{status}");
    }
    let mut not_an_id = registration.clone();
    not_an_id.query_id = "../../view".into();
    let refused = signed.post::<_, Value>(&rm, REGISTRATION_PATH, &not_an_id).await.unwrap_err();
    assert!(refused.to_string().contains("not a query id"), "{refused}");
    let mut huge = registration.clone();
    huge.sql = "x".repeat(17 << 20);
    let status = post(REGISTRATION_PATH, serde_json::to_vec(&huge).unwrap()).send().await.unwrap().status();
    assert_eq!(status, 413);
    // Reading a registration by anything but a registered id finds nothing.
    for id in ["%2e%2e", "x%00y", "20261201_101010_00009_abcde", &"9".repeat(10_000)] {
        let error = signed.get::<QueryRegistration>(&rm, &format!("{REGISTRATION_PATH}/{id}")).await.unwrap_err();
        assert!(matches!(error, flotilla_proto::CallError::Refused { status: 404, .. }), "{id}: {error}");
    }
    // Kept, read back; a claim on a live owner's query is refused with the owner's address.
    signed.post::<_, Value>(&rm, REGISTRATION_PATH, &registration).await.unwrap();
    let path = format!("{REGISTRATION_PATH}/{}", registration.query_id);
    let kept: QueryRegistration = signed.get(&rm, &path).await.unwrap();
    assert_eq!(kept, registration);
    let claim = AdoptRequest {
        registration: registration.clone(),
        adopter: "coordinator-2".into(),
        adopter_instance: "whatever".into(),
        adopter_uri: "http://127.0.0.1:1".into(),
    };
    // The leader decides nothing in its first lease period; then it refuses.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let answer = loop {
        let error = signed.post::<_, AdoptAnswer>(&rm, ADOPT_PATH, &claim).await.unwrap_err();
        let answer: AdoptAnswer = error.refusal(409).unwrap();
        if !matches!(answer, AdoptAnswer::NotReady { .. }) || std::time::Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        answer,
        AdoptAnswer::OwnedBy { owner: "coordinator-1".into(), uri: registration.owner_uri.clone(), epoch: 0 }
    );
    // Registered before its first response; forgotten once the client has the last one.
    let first = http.first(http.post("SELECT 1")).await;
    let id = first["id"].as_str().unwrap().to_string();
    let path = format!("{REGISTRATION_PATH}/{id}");
    let kept: QueryRegistration = signed.get(&rm, &path).await.unwrap();
    assert_eq!((kept.sql.as_str(), kept.owner.as_str(), kept.write), ("SELECT 1", "coordinator-1", false));
    follow(&http, first["nextUri"].as_str().map(str::to_string), &http.base).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while signed.get::<QueryRegistration>(&rm, &path).await.is_ok() {
        assert!(std::time::Instant::now() < deadline, "the registration of {id} is never forgotten");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A follow-up of a query no resource manager registered is lost.
    let stranger = format!("{}/v1/statement/executing/20261201_101010_00001_zzzzz/yslug/1", http.base);
    let answer: Value = http.get_json(&stranger).await;
    assert_eq!(answer["error"]["errorName"], "REMOTE_HOST_GONE", "{answer}");
    // A query registered to coordinator-2 (alive), named after a coordinator that never was:
    // a poll at coordinator-1 is relayed to coordinator-2, which runs it. A client's own
    // relay marker is not believed: believed, it would stop that relay, and coordinator-1's
    // claim would be refused (the owner is alive), a 503.
    let b = cluster.cluster.coordinators[1].url.clone();
    let c2 = view.nodes.iter().find(|n| n.node.node_id == "coordinator-2").map(|n| n.node.clone()).unwrap();
    let moved = QueryRegistration {
        query_id: "20261201_101010_00002_zzzzz".into(),
        owner: "coordinator-2".into(),
        owner_instance: c2.instance.clone(),
        owner_uri: b,
        epoch: 1,
        ..registration.clone()
    };
    signed.post::<_, Value>(&rm, REGISTRATION_PATH, &moved).await.unwrap();
    let poll = format!("{}/v1/statement/executing/{}/yslug/1", http.base, moved.query_id);
    let answer =
        http.client.get(&poll).header(flotilla_coordinator::adoption::ADOPTION_RELAY, "1").send().await.unwrap();
    assert_eq!(answer.status(), 200, "the forged marker was believed");
    let first: Value = answer.json().await.unwrap();
    let mut responses = vec![first.clone()];
    responses.extend(follow(&http, first["nextUri"].as_str().map(str::to_string), &http.base).await);
    no_error(&responses);
    assert_eq!(collect(&responses).1, vec![vec![Value::from(1)]]);
    assert!(
        responses.iter().filter_map(|r| r["nextUri"].as_str()).all(|uri| uri.starts_with(&http.base)),
        "the client stays on the address it used"
    );
    let logs = std::fs::read_to_string(&cluster.cluster.coordinators[1].log_path).unwrap_or_default();
    assert!(logs.contains(ADOPTED_LINE) && logs.contains(&moved.query_id), "coordinator-2 ran it");
}
