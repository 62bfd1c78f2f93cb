//! Relaying one client request to one coordinator, and finding the coordinator that owns a
//! query from its id.
//!
//! What is relayed is the request's method, path and query, headers and body; never its
//! authority: the target is always a coordinator taken from the resource managers' view
//! (no open proxy). The relayed request carries `X-Forwarded-Proto/Host/Port` naming the
//! address the client used, so the `nextUri` the owner builds keeps the client on that
//! address, and `X-Flotilla-Forwarded-By`, so a request is relayed to an owner at most once
//! (a coordinator adopting a dead owner's query may relay it once more, to the adopter); it is
//! signed with the cluster's secret, which is what makes the receiving coordinator believe
//! those `X-Forwarded-*` headers (a client's own are dropped unless
//! `http-server.process-forwarded` is set).
//!
//! Which coordinator a request goes to is decided on its path, so a path that a URL parser
//! on the way could rewrite (dot segments, also percent-encoded, encoded slashes and
//! backslashes, empty segments) is refused before any decision ([`check_path`]).

use std::sync::Arc;
use std::time::Duration;

use crate::{ClusterViewClient, ViewSnapshot};
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use flotilla_proto::cluster::NodeState;
use flotilla_proto::{CoordinatorId, ErrorCode, FlotillaError, InternalAuth, QueryId, INTERNAL_BEARER_HEADER};
use flotilla_protocol::{QueryError, QueryResults, StatementStats};
use futures::TryStreamExt;
use percent_encoding::percent_decode;

use flotilla_protocol::uris::QueryUris;

/// Marks a relayed request (its value names the relaying node); a marked request is never
/// relayed to the owner its id names again (only to the coordinator that adopted it).
pub const FORWARDED_BY: &str = "x-flotilla-forwarded-by";

/// Connecting to a coordinator: a live one on a healthy network answers well within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A whole relayed exchange: a statement poll waits at most 10 s for data (`maxWait`), and
/// a page is a few megabytes at most.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// A view younger than this is not fetched again to look for an unknown coordinator.
const FRESH_VIEW: Duration = Duration::from_millis(250);

/// Headers that belong to one connection, not to the request.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// Refuses a path whose meaning depends on who normalises it: a `.` or `..` segment (also
/// written `%2e`), an encoded `/` or a `\\` (which URL parsers read as `/`), or an empty
/// segment (a trailing `/` is fine). Relay decisions are made on the path as received, and the HTTP client that
/// relays it would resolve such segments to another endpoint.
pub fn check_path(path: &str) -> Result<(), AmbiguousPath> {
    let ambiguous = || Err(AmbiguousPath(path.escape_default().to_string()));
    let Some(rest) = path.strip_prefix('/') else { return ambiguous() };
    if rest.is_empty() {
        return Ok(());
    }
    // A trailing `/` (`/ui/`) is no empty segment in between.
    for segment in rest.strip_suffix('/').unwrap_or(rest).split('/') {
        let decoded: Vec<u8> = percent_decode(segment.as_bytes()).collect();
        let dots = decoded == b"." || decoded == b"..";
        if segment.is_empty() || dots || decoded.iter().any(|b| matches!(b, b'/' | b'\\' | 0)) {
            return ambiguous();
        }
    }
    Ok(())
}

/// A request path [`check_path`] refuses (escaped for messages and logs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ambiguous request path '{0}'")]
pub struct AmbiguousPath(pub String);

/// [`check_path`] as a response: `None` when the path may be relayed.
pub fn refuse_ambiguous_path(path: &str) -> Option<Response> {
    check_path(path).err().map(|refused| (StatusCode::BAD_REQUEST, refused.to_string()).into_response())
}

/// A request read off the wire, ready to be sent to a coordinator (again, for a POST
/// retried elsewhere).
#[derive(Debug, Clone)]
pub struct Relayed {
    pub method: Method,
    /// Path and query string; never scheme or authority.
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The base URI the client used (for documents built here, such as an error).
    pub client_base: String,
}

impl Relayed {
    /// Reads `request` (its body up to `body_limit` bytes). `fallback_host` is this server's
    /// own address, for a request without a `Host`; `by` names this node;
    /// `trust_forwarded`: the request's own `X-Forwarded-*` headers are believed (else they
    /// are replaced by what this node saw).
    pub async fn read(
        request: Request,
        body_limit: usize,
        fallback_host: &str,
        by: &str,
        trust_forwarded: bool,
    ) -> Result<Self, Response> {
        let (parts, body) = request.into_parts();
        if let Some(refused) = refuse_ambiguous_path(parts.uri.path()) {
            return Err(refused);
        }
        let uris = QueryUris::from_headers(&parts.headers, fallback_host, trust_forwarded)
            .map_err(|error| (StatusCode::BAD_REQUEST, error.to_string()).into_response())?;
        let body = axum::body::to_bytes(body, body_limit).await.map_err(|_| {
            (StatusCode::PAYLOAD_TOO_LARGE, format!("request body larger than {body_limit} bytes")).into_response()
        })?;
        let path_and_query = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_string();
        let mut headers = parts.headers;
        for name in HOP_BY_HOP {
            headers.remove(*name);
        }
        if !trust_forwarded {
            for name in ["x-forwarded-host", "x-forwarded-proto", "x-forwarded-port"] {
                headers.remove(name);
            }
        }
        // The client's address, unless a trusted proxy in front of us already said what it was.
        if !headers.contains_key("x-forwarded-host") {
            let (scheme, host) = uris.base().split_once("://").unwrap_or(("http", uris.base()));
            insert(&mut headers, "x-forwarded-host", host);
            insert(&mut headers, "x-forwarded-proto", scheme);
        }
        insert(&mut headers, FORWARDED_BY, by);
        Ok(Self { method: parts.method, path_and_query, headers, body, client_base: uris.base().to_string() })
    }

    /// The request again, to be served by this node's own routes.
    pub fn into_request(self) -> Request {
        let mut request = Request::new(Body::from(self.body));
        *request.method_mut() = self.method;
        if let Ok(uri) = self.path_and_query.parse() {
            *request.uri_mut() = uri;
        }
        *request.headers_mut() = self.headers;
        // The client's own address (reading the request dropped its `Host`).
        let host = self.client_base.split_once("://").map_or(self.client_base.as_str(), |(_, host)| host);
        if let Ok(host) = HeaderValue::from_str(host) {
            request.headers_mut().insert(axum::http::header::HOST, host);
        }
        request
    }

    /// A request built here (not read off the wire), such as a kill sent to the owner.
    pub fn internal(method: Method, path_and_query: String, body: Bytes, by: &str) -> Self {
        let mut headers = HeaderMap::new();
        insert(&mut headers, FORWARDED_BY, by);
        Self { method, path_and_query, headers, body, client_base: String::new() }
    }
}

fn insert(headers: &mut HeaderMap, name: &'static str, value: &str) {
    // Values come from validated hosts and node ids; one that is still not a valid header
    // value is left out.
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), value);
    }
}

/// Why a relayed request got no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardError {
    /// The coordinator is not there: the connection was refused, or it broke and a fresh
    /// connection is refused too (the process is dead, so whatever it had read of the
    /// request died with it). Trying another coordinator is safe even for a new query.
    Refused(String),
    /// The request may have reached a coordinator that is still alive.
    Failed(String),
}

/// How long the liveness probe after a broken exchange waits for a connection.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Whether nothing accepts connections at `base` any more (the connection is refused).
/// A probe that times out or succeeds says the coordinator may be alive.
pub async fn refuses_connections(base: &str) -> bool {
    let address = base.split_once("://").map_or(base, |(_, rest)| rest).trim_end_matches('/');
    match tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(address)).await {
        Ok(Err(error)) => error.kind() == std::io::ErrorKind::ConnectionRefused,
        Ok(Ok(_)) | Err(_) => false,
    }
}

/// The HTTP client that relays requests (one per process: it pools connections); every
/// request it sends is signed with the cluster's secret.
#[derive(Debug, Clone)]
pub struct Forwarder {
    client: reqwest::Client,
    auth: Arc<InternalAuth>,
}

/// The error and its causes, which is where reqwest says what actually went wrong.
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl Forwarder {
    pub fn new(auth: Arc<InternalAuth>) -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .tcp_nodelay(true)
            .build()
            .expect("a client with these settings builds");
        Self { client, auth }
    }

    /// Sends `request` to the coordinator at `base` (`http://host:port`) and streams its
    /// response back.
    pub async fn send(&self, base: &str, request: &Relayed) -> Result<Response, ForwardError> {
        let url = format!("{}{}", base.trim_end_matches('/'), request.path_and_query);
        let mut headers = request.headers.clone();
        // Replaces whatever a client put there.
        if let Ok(token) = HeaderValue::from_str(&self.auth.token()) {
            headers.insert(HeaderName::from_static(INTERNAL_BEARER_HEADER), token);
        }
        let sent =
            self.client.request(request.method.clone(), url).headers(headers).body(request.body.clone()).send().await;
        let response = match sent {
            Ok(response) => response,
            Err(error) if error.is_connect() => return Err(ForwardError::Refused(describe(&error))),
            // A pooled connection to a process that just died breaks mid-request; a fresh
            // connection tells a dead process from a live one.
            Err(error) if refuses_connections(base).await => {
                return Err(ForwardError::Refused(format!("{}; connections are now refused", describe(&error))))
            }
            Err(error) => return Err(ForwardError::Failed(describe(&error))),
        };
        let mut relayed = Response::builder().status(response.status());
        if let Some(headers) = relayed.headers_mut() {
            for (name, value) in response.headers() {
                if !HOP_BY_HOP.contains(&name.as_str()) {
                    headers.append(name.clone(), value.clone());
                }
            }
        }
        let body = Body::from_stream(response.bytes_stream().map_err(|e| std::io::Error::other(describe(&e))));
        relayed.body(body).map_err(|e| ForwardError::Failed(e.to_string()))
    }
}

/// The query a follow-up request is about: `/v1/statement/{queued|executing}/{id}/...`,
/// `/v1/query/{id}[/...]` and the web UI's `/ui/api/query/{id}[/...]`. `None` for anything
/// else (or an id that is not one).
pub fn follow_up_query(path: &str) -> Option<QueryId> {
    let mut segments = path.trim_start_matches('/').split('/');
    let id = match (segments.next(), segments.next(), segments.next()) {
        (Some("v1"), Some("statement"), Some("queued" | "executing")) => segments.next()?,
        (Some("v1"), Some("query"), Some(id)) => id,
        (Some("ui"), Some("api"), Some("query")) => segments.next()?,
        _ => return None,
    };
    id.parse().ok()
}

/// Why a query's owning coordinator cannot be relayed to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OwnerGone {
    /// No coordinator in the cluster view has that id.
    #[error("coordinator {owner} is gone (the cluster has no coordinator with that id)")]
    Unknown { owner: CoordinatorId },
    /// The view has it dead.
    #[error("coordinator {owner} is gone (node {node} sent no heartbeat for {age_ms} ms)")]
    Dead { owner: CoordinatorId, node: String, age_ms: u64 },
    /// It is in the view, but its connection was refused.
    #[error("coordinator {owner} is gone (connection refused at {base}: {cause})")]
    Refused { owner: CoordinatorId, base: String, cause: String },
}

/// Where the coordinator `owner` serves, from the view; [`OwnerGone`] when the view has it
/// dead or does not have it at all (looked up again in a fresh view first, for a
/// coordinator younger than ours).
pub async fn locate_owner(view: &ClusterViewClient, owner: &CoordinatorId) -> Result<String, OwnerGone> {
    if let Some(found) = view.snapshot().as_ref().and_then(|s| find_coordinator(s, owner)) {
        return found;
    }
    if view.snapshot().is_none_or(|s| s.age() > FRESH_VIEW) {
        let _ = view.refresh().await;
        if let Some(found) = view.snapshot().as_ref().and_then(|s| find_coordinator(s, owner)) {
            return found;
        }
    }
    Err(OwnerGone::Unknown { owner: owner.clone() })
}

fn find_coordinator(snapshot: &ViewSnapshot, owner: &CoordinatorId) -> Option<Result<String, OwnerGone>> {
    let node = snapshot.view.nodes.iter().find(|n| n.node.coordinator_id.as_deref() == Some(owner.as_str()))?;
    Some(match node.state {
        NodeState::Dead => Err(OwnerGone::Dead {
            owner: owner.clone(),
            node: node.node.node_id.clone(),
            age_ms: node.last_heartbeat_age_ms,
        }),
        NodeState::Active | NodeState::ShuttingDown => Ok(node.node.http_uri.clone()),
    })
}

/// Relays a follow-up of query `id` to its owner, found by the id's suffix in the view;
/// `Err` when the owner is gone (dead or unknown in the view, or refusing connections).
pub async fn relay_to_id_owner(
    forwarder: &Forwarder,
    view: &ClusterViewClient,
    request: &Relayed,
    id: &QueryId,
) -> Result<Response, OwnerGone> {
    let owner = id.coordinator();
    let base = locate_owner(view, &owner).await?;
    match forwarder.send(&base, request).await {
        Ok(response) => Ok(response),
        Err(ForwardError::Refused(error)) => Err(OwnerGone::Refused { owner, base, cause: error.to_string() }),
        // Polls are idempotent: a status the client retries.
        Err(ForwardError::Failed(error)) => Ok((
            StatusCode::BAD_GATEWAY,
            format!("coordinator {owner} at {base} did not answer for query {id}: {error}"),
        )
            .into_response()),
    }
}

/// Relays a follow-up of query `id` to its owner. When the owner is gone, the follow-up
/// goes to a live coordinator, which adopts the query or knows who did (every relay for
/// one query picks the same coordinator first, so racing follow-ups meet there); with no
/// live coordinator, the answer says the query is lost (for a statement poll, a failed
/// query, which every Trino client reports as such; otherwise a 404).
pub async fn relay_to_owner(
    forwarder: &Forwarder,
    view: &ClusterViewClient,
    request: &Relayed,
    id: &QueryId,
) -> Response {
    let gone = match relay_to_id_owner(forwarder, view, request, id).await {
        Ok(response) => return response,
        Err(gone) => gone,
    };
    for (node_id, base) in adopters(view, id) {
        match forwarder.send(&base, request).await {
            Ok(response) => return response,
            Err(ForwardError::Refused(error)) => {
                tracing::debug!(coordinator = %node_id, %error, query = %id, "refused a follow-up of an orphaned query")
            }
            Err(ForwardError::Failed(error)) => {
                return (
                    StatusCode::BAD_GATEWAY,
                    format!("coordinator {node_id} at {base} did not answer for query {id}: {error}"),
                )
                    .into_response()
            }
        }
    }
    owner_gone(request, id, &gone)
}

/// The active coordinators other than `id`'s owner (node id, URI), in the order a follow-up
/// of `id` tries them: highest random weight first (rendezvous hashing), so every gateway
/// sends one query's follow-ups to the same coordinator while it lives.
pub fn adopters(view: &ClusterViewClient, id: &QueryId) -> Vec<(String, String)> {
    let Some(snapshot) = view.snapshot() else { return Vec::new() };
    let owner = id.coordinator();
    let mut coordinators: Vec<(u64, String, String)> = snapshot
        .view
        .nodes
        .iter()
        .filter(|n| n.state == NodeState::Active && n.node.coordinator_id.is_some())
        .filter(|n| n.node.coordinator_id.as_deref() != Some(owner.as_str()))
        .map(|n| (weight(id.as_str(), &n.node.node_id), n.node.node_id.clone(), n.node.http_uri.clone()))
        .collect();
    coordinators.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    coordinators.into_iter().map(|(_, node_id, uri)| (node_id, uri)).collect()
}

/// A stable 64-bit FNV-1a hash of a query id and a node id (the same in every process).
fn weight(query: &str, node: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in query.bytes().chain([0]).chain(node.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The answer for a follow-up whose owner is gone.
pub fn owner_gone(request: &Relayed, id: &QueryId, gone: &OwnerGone) -> Response {
    let message = format!("Query {id} is lost: {gone}");
    let is_poll = request.method == Method::GET && request.path_and_query.starts_with("/v1/statement/");
    if !is_poll {
        return (StatusCode::NOT_FOUND, format!("Query not found: {message}")).into_response();
    }
    failed_poll(request, id, &FlotillaError::new(ErrorCode::RemoteHostGone, message))
}

/// The answer to a statement poll of a query that failed without a coordinator to run it:
/// a failed query's document, which every Trino client reports as such.
pub fn failed_poll(request: &Relayed, id: &QueryId, error: &FlotillaError) -> Response {
    let results = QueryResults {
        id: id.to_string(),
        info_uri: format!("{}/v1/query/{id}", request.client_base),
        stats: StatementStats { state: "FAILED".into(), ..Default::default() },
        error: Some(QueryError::from(error)),
        ..Default::default()
    };
    // Plain strings and numbers: serialising cannot fail.
    let body = serde_json::to_vec(&results).expect("query results serialize");
    (StatusCode::OK, [("content-type", "application/json")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follow_ups_name_their_query() {
        let id = "20261122_101010_00001_abcde";
        for path in [
            format!("/v1/statement/queued/{id}/slug/1"),
            format!("/v1/statement/executing/{id}/slug/7"),
            format!("/v1/query/{id}"),
            format!("/v1/query/{id}/killed"),
            format!("/ui/api/query/{id}"),
            format!("/ui/api/query/{id}/killed"),
        ] {
            assert_eq!(follow_up_query(&path).map(|q| q.to_string()).as_deref(), Some(id), "{path}");
        }
        for path in [
            "/v1/statement",
            "/v1/query",
            "/v1/info",
            "/v1/statement/other/x/y/1",
            "/v1/query/not-an-id",
            "/ui/api/query",
        ] {
            assert!(follow_up_query(path).is_none(), "{path}");
        }
    }

    #[test]
    fn only_unambiguous_paths_are_relayed() {
        let id = "20261122_101010_00001_abcde";
        for good in
            ["/", "/v1/statement", &format!("/v1/query/{id}"), "/ui/api/query", "/v1/resourceGroupState/global/a.b"]
        {
            assert!(check_path(good).is_ok(), "{good}");
        }
        for bad in [
            format!("/v1/query/{id}/../../status"),
            format!("/v1/query/{id}/%2e%2e/%2E%2E/status"),
            format!("/v1/query/{id}/.%2e/info/state"),
            format!("/v1/query/{id}/./killed"),
            "/v1/resourceGroupState/..%5C..%5Cview".to_string(),
            "/v1/resourceGroupState/a%2Fb".to_string(),
            "/v1/resourceGroupState/a\\b".to_string(),
            "/v1//query".to_string(),
            "/ui//".to_string(),
            "/v1/query/%00".to_string(),
            "v1/query".to_string(),
        ] {
            assert!(check_path(&bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_refused_connection_is_told_apart_from_a_request_that_may_have_arrived() {
        let forwarder = Forwarder::new(Arc::new(InternalAuth::new("a-test-secret-long-enough", "test").unwrap()));
        let post = Relayed::internal(Method::POST, "/v1/statement".into(), Bytes::from("SELECT 1"), "test");
        // Nothing listens: refused, so another coordinator may take the query.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = closed.local_addr().unwrap();
        drop(closed);
        let refused = forwarder.send(&format!("http://{address}"), &post).await.unwrap_err();
        assert!(matches!(refused, ForwardError::Refused(_)), "{refused:?}");
        // Accepted, read, then the connection dropped by a server that still listens: the
        // query may exist there.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut buffer = [0u8; 4096];
                let _ = tokio::io::AsyncReadExt::read(&mut socket, &mut buffer).await;
            }
        });
        let failed = forwarder.send(&format!("http://{address}"), &post).await.unwrap_err();
        assert!(matches!(failed, ForwardError::Failed(_)), "{failed:?}");
        server.abort();
        // The same, but the process is gone afterwards (nothing listens): whatever it read
        // died with it.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            drop(listener);
            let mut buffer = [0u8; 4096];
            let _ = tokio::io::AsyncReadExt::read(&mut socket, &mut buffer).await;
        });
        let dead = forwarder.send(&format!("http://{address}"), &post).await.unwrap_err();
        assert!(matches!(dead, ForwardError::Refused(_)), "{dead:?}");
    }

    fn request(method: Method, path: &str) -> Relayed {
        Relayed {
            method,
            path_and_query: path.to_string(),
            headers: HeaderMap::new(),
            body: Bytes::new(),
            client_base: "http://lb:8080".into(),
        }
    }

    #[tokio::test]
    async fn a_lost_query_fails_polls_with_a_trino_error_and_404s_the_rest() {
        let id: QueryId = "20261122_101010_00001_abcde".parse().unwrap();
        let gone = OwnerGone::Unknown { owner: id.coordinator() };
        let poll = owner_gone(&request(Method::GET, "/v1/statement/executing/x/y/1"), &id, &gone);
        assert_eq!(poll.status(), StatusCode::OK);
        let body = axum::body::to_bytes(poll.into_body(), 1 << 20).await.unwrap();
        let results: QueryResults = serde_json::from_slice(&body).unwrap();
        assert_eq!(results.stats.state, "FAILED");
        assert_eq!(results.info_uri, format!("http://lb:8080/v1/query/{id}"));
        let error = results.error.unwrap();
        assert_eq!(error.error_name, "REMOTE_HOST_GONE");
        assert!(error.message.contains("coordinator abcde is gone"), "{}", error.message);
        let info = owner_gone(&request(Method::GET, &format!("/v1/query/{id}")), &id, &gone);
        assert_eq!(info.status(), StatusCode::NOT_FOUND);
        let cancel = owner_gone(&request(Method::DELETE, "/v1/statement/executing/x/y/1"), &id, &gone);
        assert_eq!(cancel.status(), StatusCode::NOT_FOUND);
    }
}
