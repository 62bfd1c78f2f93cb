//! Many coordinators, one cluster: follow-ups reach the owner through any coordinator,
//! kills work from anywhere, an owner that never existed gives a clear error (a dead one's
//! queries are adopted: `adoption.rs`), the gateway routes by user,
//! and a draining coordinator finishes its queries while the others take the new ones.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use flotilla_gateway::RoutingPolicy;
use serde_json::Value;

use crate::harness::ProcessCluster;
use crate::{collect, Http};

/// A query that runs for many seconds (60M generated rows), for cancel and kill tests.
const LONG_QUERY: &str = "SELECT count(*) FROM tpch.sf10.lineitem";

/// node id -> coordinator id, from the cluster view.
pub(crate) async fn coordinator_ids(http: &Http, expected: usize) -> BTreeMap<String, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let nodes: Vec<Value> = http.get_json(&format!("{}/v1/node", http.base)).await;
        let ids: BTreeMap<String, String> = nodes
            .iter()
            .filter_map(|n| Some((n["nodeId"].as_str()?.to_string(), n["coordinatorId"].as_str()?.to_string())))
            .collect();
        if ids.len() == expected {
            return ids;
        }
        assert!(Instant::now() < deadline, "expected {expected} coordinators in the view, saw {ids:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the gateway itself routes to `expected` coordinators (its own view).
pub(crate) async fn wait_gateway_sees(gateway: &Http, expected: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status: Value = gateway.get_json(&format!("{}/v1/gateway", gateway.base)).await;
        let seen = status["coordinators"].as_array().map_or(0, Vec::len);
        if seen == expected {
            return;
        }
        assert!(Instant::now() < deadline, "the gateway routes to {seen} coordinators, expected {expected}: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Submits on `http` and returns the first response.
async fn submit(http: &Http, sql: &str) -> Value {
    http.post(sql).send().await.unwrap().json().await.unwrap()
}

/// Polls `next` through `via` (its host replaced by `via`'s) to the end; every nextUri must
/// keep naming `via`.
async fn poll_through(via: &Http, first: &Value, owner_base: &str) -> Vec<Value> {
    let mut responses = vec![first.clone()];
    while let Some(next) = responses.last().unwrap()["nextUri"].as_str().map(str::to_string) {
        let next = next.replacen(owner_base, &via.base, 1);
        assert!(next.starts_with(&via.base), "nextUri {next} names the address the client used ({})", via.base);
        let response = via.client.get(&next).send().await.unwrap();
        assert_eq!(response.status(), 200, "GET {next}");
        responses.push(response.json().await.unwrap());
        assert!(responses.len() < 10_000, "query never ended");
    }
    responses
}

/// Waits until a query is running (so a cancel or kill hits a running query).
async fn wait_running(http: &Http, id: &str) {
    http.wait_for_state(id, &["RUNNING"], Duration::from_secs(20)).await;
}

/// Waits until a drained coordinator's process has exited.
async fn wait_exited(process: &mut flotilla::local_cluster::NodeProcess) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while process.is_running() {
        assert!(Instant::now() < deadline, "{} did not exit after draining", process.spec.node_id);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Where nothing may ever connect: the address a forged request names.
struct Outside(std::net::TcpListener);

impl Outside {
    fn new() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        Self(listener)
    }

    fn address(&self) -> String {
        self.0.local_addr().unwrap().to_string()
    }

    fn assert_untouched(&self) {
        match self.0.accept() {
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("a forged request made a coordinator connect to the outside address: {other:?}"),
        }
    }
}

/// One raw HTTP/1.1 request (for request lines reqwest will not send), with its response.
pub(crate) fn raw_request(address: &str, request: &str) -> String {
    let mut stream = std::net::TcpStream::connect(address.trim_start_matches("http://")).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_coordinator_serves_follow_ups_lists_cancels_and_kills_every_query() {
    let cluster = ProcessCluster::builder().resource_managers(1).coordinators(3).start();
    let [a, b, c] = [0, 1, 2].map(|i| Http::new(&cluster.cluster.coordinators[i].url));
    let ids = coordinator_ids(&a, 3).await;
    let a_id = ids["coordinator-1"].clone();

    // Submitted on A, polled entirely through B: the rows arrive, and every nextUri names B.
    let first = submit(&a, "SELECT count(*) FROM tpch.tiny.lineitem").await;
    let id = first["id"].as_str().unwrap().to_string();
    assert!(id.ends_with(&a_id), "{id} is owned by A ({a_id})");
    let responses = poll_through(&b, &first, &a.base).await;
    assert!(responses.last().unwrap().get("error").is_none(), "{}", responses.last().unwrap());
    assert_eq!(collect(&responses).1, vec![vec![Value::from(60175)]]);

    // C lists it (from the view) and shows its details (from A, relayed).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listed: Vec<Value> = c.get_json(&format!("{}/v1/query", c.base)).await;
        if listed.iter().any(|q| q["queryId"] == id.as_str() && q["state"] == "FINISHED") {
            break;
        }
        assert!(Instant::now() < deadline, "C never listed {id}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let info: Value = c.get_json(&format!("{}/v1/query/{id}", c.base)).await;
    assert_eq!(info["state"], "FINISHED");
    assert_eq!(info["self"], format!("{}/v1/query/{id}", c.base), "{info}");

    // Cancel through C (DELETE /v1/query/{id}) of a query running on A.
    let first = submit(&a, LONG_QUERY).await;
    let long_id = first["id"].as_str().unwrap().to_string();
    wait_running(&b, &long_id).await;
    // Only the query's user (or an admin) may: no user, or another one, is refused.
    let delete = |user: Option<&str>| {
        let request = c.client.delete(format!("{}/v1/query/{long_id}", c.base));
        match user {
            Some(user) => request.header("X-Trino-User", user),
            None => request,
        }
    };
    assert_eq!(delete(None).send().await.unwrap().status(), 403);
    assert_eq!(delete(Some("mallory")).send().await.unwrap().status(), 403);
    let killed = c.client.put(format!("{}/v1/query/{long_id}/killed", c.base)).header("X-Trino-User", "mallory");
    assert_eq!(killed.body("no").send().await.unwrap().status(), 403);
    let kill_as_mallory = format!("CALL system.runtime.kill_query('{long_id}')");
    let refused = c.error_with(c.post_as("mallory", &kill_as_mallory)).await;
    assert_eq!(refused["errorName"], "PERMISSION_DENIED", "{refused}");
    assert_eq!(delete(Some("test")).send().await.unwrap().status(), 204);
    let responses = poll_through(&b, &first, &a.base).await;
    assert_eq!(responses.last().unwrap()["error"]["errorName"], "USER_CANCELED");

    // Kill through C with the procedure.
    let first = submit(&a, LONG_QUERY).await;
    let long_id = first["id"].as_str().unwrap().to_string();
    wait_running(&c, &long_id).await;
    let kill = format!("CALL system.runtime.kill_query(query_id => '{long_id}', message => 'make room')");
    let (_, rows) = c.rows(&kill).await;
    assert_eq!(rows, vec![vec![Value::Bool(true)]]);
    let responses = poll_through(&a, &first, &a.base).await;
    let error = &responses.last().unwrap()["error"];
    assert_eq!(error["errorName"], "ADMINISTRATIVELY_KILLED", "{error}");
    assert_eq!(error["message"], "Query killed. Message: make room");
    assert_eq!(c.error(&kill).await["errorName"], "NOT_SUPPORTED", "a finished query cannot be killed");
    let unknown = format!("20260101_000000_00000_{a_id}");
    let error = b.error(&format!("CALL system.runtime.kill_query('{unknown}')")).await;
    assert_eq!(error["errorName"], "NOT_FOUND", "{error}");

    // Forged follow-ups never make a coordinator connect anywhere but a coordinator.
    let outside = Outside::new();
    let response = raw_request(
        &b.base,
        &format!(
            "GET http://{o}/v1/query/{id} HTTP/1.1\r\nHost: {o}\r\nConnection: close\r\n\r\n",
            o = outside.address()
        ),
    );
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(&format!("\"queryId\":\"{id}\"")), "served by the owner: {response}");
    let stranger = "20260101_000000_00000_zzzzz";
    let forged = b
        .client
        .get(format!("{}/v1/statement/executing/{stranger}/slug/1", b.base))
        .header("X-Forwarded-Host", outside.address())
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 200);
    let forged: Value = forged.json().await.unwrap();
    assert_eq!(forged["error"]["errorName"], "REMOTE_HOST_GONE", "{forged}");
    assert!(forged["error"]["message"].as_str().unwrap().contains("coordinator zzzzz is gone"), "{forged}");
    outside.assert_untouched();
}

/// The coordinator (by id suffix) each user's query lands on through the gateway.
async fn landing(gateway: &Http, users: &[String]) -> Vec<String> {
    let mut landed = Vec::new();
    for user in users {
        let request = gateway.post_as(user, "SELECT 1");
        let responses = gateway.run_with(request).await;
        let last = responses.last().unwrap();
        assert!(last.get("error").is_none(), "{user}: {last}");
        landed.push(last["id"].as_str().unwrap().rsplit('_').next().unwrap().to_string());
    }
    landed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_hash_keeps_each_user_on_one_coordinator_and_moves_only_a_removed_coordinators_users() {
    let mut cluster =
        ProcessCluster::builder().resource_managers(1).coordinators(3).gateways(1, RoutingPolicy::UserHash).start();
    let gateway = Http::new(&cluster.gateway_url());
    let ids = coordinator_ids(&gateway, 3).await;
    wait_gateway_sees(&gateway, 3).await;
    let users: Vec<String> = (0..30).map(|i| format!("user{i}")).collect();
    let before = landing(&gateway, &users).await;
    assert_eq!(landing(&gateway, &users).await, before, "every user's queries stay on one coordinator");
    let used: std::collections::BTreeSet<&String> = before.iter().collect();
    assert_eq!(used.len(), 3, "30 users spread over the 3 coordinators: {before:?}");

    // Drain coordinator-2 and wait for it to exit and leave the gateway's view.
    let removed = ids["coordinator-2"].clone();
    let drained_url = cluster.cluster.coordinators[1].url.clone();
    assert_eq!(cluster.drain(&drained_url).await, 200);
    wait_exited(&mut cluster.cluster.coordinators[1]).await;
    let after = landing(&gateway, &users).await;
    for ((user, was), now) in users.iter().zip(&before).zip(&after) {
        assert_ne!(now, &removed, "{user} is not sent to the removed coordinator");
        if was != &removed {
            assert_eq!(now, was, "{user} was not on the removed coordinator and stays where it was");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_coordinator_finishes_its_queries_while_the_gateway_sends_new_ones_elsewhere() {
    let mut cluster =
        ProcessCluster::builder().resource_managers(1).coordinators(2).gateways(1, RoutingPolicy::RoundRobin).start();
    let gateway = Http::new(&cluster.gateway_url());
    let ids = coordinator_ids(&gateway, 2).await;
    wait_gateway_sees(&gateway, 2).await;
    let draining = Http::new(&cluster.cluster.coordinators[0].url);
    let first = submit(&draining, "SELECT count(*) FROM tpch.sf1.lineitem").await;
    let id = first["id"].as_str().unwrap().to_string();
    wait_running(&draining, &id).await;

    // Only a node of the cluster (or an admin user) may drain it.
    let anonymous = draining.client.put(format!("{}/v1/info/state", draining.base)).json(&"SHUTTING_DOWN");
    assert_eq!(anonymous.send().await.unwrap().status(), 403);
    let state: Value = draining.get_json(&format!("{}/v1/info/state", draining.base)).await;
    assert_eq!(state, "ACTIVE", "a refused request changed nothing");
    assert_eq!(cluster.drain(&draining.base).await, 200);
    let state: Value = draining.get_json(&format!("{}/v1/info/state", draining.base)).await;
    assert_eq!(state, "SHUTTING_DOWN");
    let refused = draining.post("SELECT 1").send().await.unwrap();
    assert_eq!(refused.status(), 503, "a draining coordinator takes no new query");
    // Through the gateway every new query lands on the other coordinator at once.
    for _ in 0..6 {
        let responses = gateway.run("SELECT 1").await;
        let last = responses.last().unwrap();
        assert!(last.get("error").is_none(), "{last}");
        assert!(last["id"].as_str().unwrap().ends_with(&ids["coordinator-2"]), "{}", last["id"]);
    }
    // The running query finishes, with every row, and then the process exits.
    let responses = poll_through(&draining, &first, &draining.base).await;
    assert!(responses.last().unwrap().get("error").is_none(), "{}", responses.last().unwrap());
    assert_eq!(collect(&responses).1, vec![vec![Value::from(6001215)]]);
    wait_exited(&mut cluster.cluster.coordinators[0]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_coordinator_like_put_shutting_down() {
    let mut cluster = ProcessCluster::builder().resource_managers(1).coordinators(1).start();
    let coordinator = Http::new(&cluster.coordinator_url());
    let first = submit(&coordinator, "SELECT count(*) FROM tpch.sf1.lineitem").await;
    let id = first["id"].as_str().unwrap().to_string();
    wait_running(&coordinator, &id).await;
    let pid = cluster.cluster.coordinators[0].pid().to_string();
    let status = std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    // It takes no new query, finishes the running one with every row, then exits.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state: Value = coordinator.get_json(&format!("{}/v1/info/state", coordinator.base)).await;
        if state == "SHUTTING_DOWN" {
            break;
        }
        assert!(Instant::now() < deadline, "SIGTERM did not start draining: {state}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(coordinator.post("SELECT 1").send().await.unwrap().status(), 503);
    let responses = poll_through(&coordinator, &first, &coordinator.base).await;
    assert!(responses.last().unwrap().get("error").is_none(), "{}", responses.last().unwrap());
    assert_eq!(collect(&responses).1, vec![vec![Value::from(6001215)]]);
    wait_exited(&mut cluster.cluster.coordinators[0]).await;
}

/// A minimal HTTP endpoint taking POSTs (keep-alive), keeping their bodies.
async fn ingest_endpoint() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = received.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let sink = sink.clone();
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some((name, value)) = line.split_once(':') {
                            if name.eq_ignore_ascii_case("content-length") {
                                length = value.trim().parse().unwrap_or(0);
                            }
                        }
                    }
                    let mut body = vec![0u8; length];
                    if stream.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    sink.lock().unwrap().push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                    let _ = stream.get_mut().write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
                }
            });
        }
    });
    (url, received)
}

/// `event-listener.name=file,http`: every query either coordinator ends is one event, with
/// Trino's field names, in the JSON-lines file and at the HTTP endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_query_is_one_completion_event_in_the_file_and_at_the_endpoint() {
    let (endpoint, received) = ingest_endpoint().await;
    let etc = crate::harness::TempDir::new("flotilla-etc");
    std::fs::create_dir_all(etc.path.join("catalog")).unwrap();
    std::fs::write(etc.path.join("catalog/tpch.properties"), "connector.name=tpch\n").unwrap();
    let events_file = etc.path.join("events.jsonl");
    std::fs::write(
        etc.path.join("event-listener.properties"),
        format!(
            "event-listener.name=file,http\nevent-listener.file.path={}\n\
             http-event-listener.connect-ingest-uri={endpoint}\nhttp-event-listener.connect-http-headers=X-Source:flotilla-test\n",
            events_file.display()
        ),
    )
    .unwrap();
    let cluster = crate::harness::ProcessCluster::builder().coordinators(2).workers(1).etc_dir(&etc.path).start();
    let mut ran = Vec::new();
    for (index, coordinator) in cluster.cluster.coordinators.iter().enumerate() {
        let http = crate::Http::new(&coordinator.url);
        crate::distributed::wait_for_nodes(&http, 4).await;
        for sql in ["SELECT count(*) FROM tpch.tiny.nation", "SELECT * FROM tpch.tiny.nothing"] {
            let responses = http.run(sql).await;
            ran.push((responses[0]["id"].as_str().unwrap().to_string(), format!("coordinator-{}", index + 1), sql));
        }
    }
    let lines = || -> Vec<Value> {
        std::fs::read_to_string(&events_file)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).expect("one JSON object a line"))
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while lines().len() < ran.len() || received.lock().unwrap().len() < ran.len() {
        assert!(std::time::Instant::now() < deadline, "events missing: {:?} {:?}", lines(), received.lock().unwrap());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    for events in [lines(), received.lock().unwrap().clone()] {
        assert_eq!(events.len(), ran.len(), "one event per query: {events:?}");
        for (id, coordinator, sql) in &ran {
            let event = events.iter().find(|e| e["metadata"]["queryId"] == id.as_str()).expect("its event");
            assert_eq!(event["metadata"]["query"], *sql);
            assert_eq!(event["context"]["coordinator"], coordinator.as_str());
            assert_eq!(event["context"]["user"], "test");
            assert_eq!(event["context"]["warehouse"], "default");
            assert!(event["statistics"]["cpuTime"].as_str().unwrap().starts_with("PT"), "{event}");
            assert!(event["createTime"].is_string() && event["endTime"].is_string(), "{event}");
            match sql.contains("nothing") {
                true => {
                    assert_eq!(event["metadata"]["queryState"], "FAILED");
                    assert_eq!(event["failureInfo"]["errorCode"]["name"], "TABLE_NOT_FOUND", "{event}");
                }
                false => {
                    assert_eq!(event["metadata"]["queryState"], "FINISHED");
                    assert_eq!(event["statistics"]["outputRows"], 1);
                    assert!(event["failureInfo"].is_null());
                }
            }
        }
    }
    drop(cluster);
}
