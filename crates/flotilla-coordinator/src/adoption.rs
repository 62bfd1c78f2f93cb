//! Queries that outlive their coordinator (the protocol: `flotilla_proto::adoption`).
//!
//! - Every query is registered with the resource managers by its execution task before its
//!   client gets the first response ([`Registrar::register`]); a write registers again,
//!   marked started, before it leaves its queue; the registration is forgotten once the
//!   client has the final response.
//! - A follow-up of a query whose owner is gone ([`serve_orphan`]) is adopted here when the
//!   admission leader grants it: the query is run again under its id, and the follow-up and
//!   every later one are answered here. The `rows` the client already has (carried in every
//!   `nextUri`) are skipped when the query's order is deterministic; otherwise the adopted
//!   query fails with an error that says why it cannot resume.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use flotilla_node::relay::{failed_poll, owner_gone, ForwardError, OwnerGone};
use flotilla_node::{ClusterViewClient, InternalClient, LocalNode, Relayed};
use flotilla_proto::adoption::{
    registration_path, AdoptAnswer, AdoptRequest, ForgetQueries, QueryRegistration, ADOPT_PATH, FORGET_PATH,
    REGISTRATION_PATH,
};
use flotilla_proto::{CallError, ErrorCode, FlotillaError, QueryId};
use parking_lot::Mutex;

use crate::Coordinator;

/// Marks a request relayed to the coordinator that adopted its query: it is not relayed
/// again, so two coordinators that disagree cannot pass it back and forth.
pub const ADOPTION_RELAY: &str = "x-flotilla-adoption-relay";

/// A registration call: resource managers answer in well under a millisecond; one that
/// takes this long is not waited for (the call still completes in the background).
const REGISTER_WAIT: Duration = Duration::from_millis(500);
/// After the first resource manager kept a registration, how long the others are waited
/// for (so the admission leader has it too, in the common case).
const REGISTER_STRAGGLERS: Duration = Duration::from_millis(20);
/// How long a claim waits, in all, for a new admission leader to be ready.
const CLAIM_PATIENCE: Duration = Duration::from_secs(6);
/// Registrations forgotten per call.
const FORGET_BATCH: usize = 2_000;
/// Times a forget is sent before it is given up.
const FORGET_ATTEMPTS: u8 = 5;
/// Forgets waiting to be sent, at most (beyond, they are dropped: the resource managers
/// drop the registration when this coordinator is gone anyway).
const FORGET_BACKLOG: usize = 100_000;
/// How long a learnt owner of an adopted query is used before asking again.
const OWNER_CACHE_TTL: Duration = Duration::from_secs(30);
const OWNER_CACHE_SIZE: usize = 10_000;

/// Registers, forgets and claims queries with the resource managers.
#[derive(Debug)]
pub struct Registrar {
    local: Arc<LocalNode>,
    view: Arc<ClusterViewClient>,
    client: InternalClient,
    /// Registrations to forget, with how many times sending them failed.
    forgets: Mutex<Vec<(String, u8)>>,
    /// Coordinators known to own adopted queries (query id → (URI, learnt at)).
    owners: Mutex<HashMap<String, (String, Instant)>>,
}

impl Registrar {
    pub fn new(local: Arc<LocalNode>, view: Arc<ClusterViewClient>, client: InternalClient) -> Self {
        Self { local, view, client, forgets: Mutex::new(Vec::new()), owners: Mutex::new(HashMap::new()) }
    }

    /// A new registration of a query this coordinator runs.
    pub fn registration(
        &self,
        id: &QueryId,
        slug: &str,
        sql: &str,
        session_headers: Vec<(String, String)>,
        create_time_ms: i64,
    ) -> QueryRegistration {
        QueryRegistration {
            query_id: id.to_string(),
            slug: slug.to_string(),
            sql: sql.to_string(),
            session_headers,
            create_time_ms,
            owner: self.local.node_id.clone(),
            owner_instance: self.local.instance.clone(),
            owner_uri: self.local.http_uri.clone(),
            epoch: 0,
            write: !flotilla_protocol::is_read_only(sql),
            started: false,
        }
    }

    /// Sends `registration` to every live resource manager at once; true when at least one
    /// kept it. Waits for the others a moment after the first (they are still sent when
    /// not waited for).
    pub async fn register(&self, registration: &QueryRegistration) -> bool {
        let managers = self.view.resource_managers();
        if managers.is_empty() {
            tracing::warn!(query_id = %registration.query_id, "no resource manager to register the query with; it cannot be adopted");
            return false;
        }
        let (sender, mut answers) = tokio::sync::mpsc::channel(managers.len());
        let body = Arc::new(registration.clone());
        for (node_id, uri) in managers {
            let (client, body, sender) = (self.client.clone(), body.clone(), sender.clone());
            tokio::spawn(async move {
                let kept = client.post::<_, serde_json::Value>(&uri, REGISTRATION_PATH, body.as_ref()).await;
                if let Err(error) = &kept {
                    tracing::debug!(resource_manager = %node_id, %error, "registration not kept");
                }
                let _ = sender.send(kept.is_ok()).await;
            });
        }
        drop(sender);
        let deadline = tokio::time::Instant::now() + REGISTER_WAIT;
        let mut kept = false;
        let mut deadline_after_first = deadline;
        loop {
            match tokio::time::timeout_at(deadline_after_first, answers.recv()).await {
                Ok(Some(true)) if !kept => {
                    kept = true;
                    deadline_after_first = (tokio::time::Instant::now() + REGISTER_STRAGGLERS).min(deadline);
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        if !kept {
            tracing::warn!(query_id = %registration.query_id, "no resource manager kept the query's registration; it cannot be adopted");
        }
        kept
    }

    /// Queues the registration of `query_id` to be forgotten (its client has the end).
    pub fn forget_later(&self, query_id: &QueryId) {
        let mut forgets = self.forgets.lock();
        if forgets.len() < FORGET_BACKLOG {
            forgets.push((query_id.to_string(), 0));
        }
    }

    /// Sends the queued forgets to every live resource manager; a batch some resource
    /// manager did not take is sent again next time (at most [`FORGET_ATTEMPTS`] times:
    /// forgetting twice is harmless, and a registration never forgotten is dropped when
    /// this coordinator is gone).
    pub async fn flush_forgets(&self) {
        let mut failed = Vec::new();
        loop {
            let batch: Vec<(String, u8)> = {
                let mut forgets = self.forgets.lock();
                let take = forgets.len().min(FORGET_BATCH);
                forgets.drain(..take).collect()
            };
            if batch.is_empty() {
                break;
            }
            let forget = ForgetQueries {
                owner: self.local.node_id.clone(),
                query_ids: batch.iter().map(|(id, _)| id.clone()).collect(),
            };
            let calls = self.view.resource_managers().into_iter().map(|(_, uri)| {
                let (client, forget) = (&self.client, &forget);
                async move { client.post::<_, serde_json::Value>(&uri, FORGET_PATH, forget).await }
            });
            let errors: Vec<CallError> =
                futures::future::join_all(calls).await.into_iter().filter_map(Result::err).collect();
            if let Some(error) = errors.first() {
                tracing::debug!(%error, "forgetting registrations failed; sent again next time");
                failed.extend(batch.into_iter().filter(|(_, n)| n + 1 < FORGET_ATTEMPTS).map(|(id, n)| (id, n + 1)));
            }
        }
        let mut forgets = self.forgets.lock();
        let room = FORGET_BACKLOG.saturating_sub(forgets.len());
        forgets.extend(failed.into_iter().take(room));
    }

    /// The registration of `id` from the first resource manager that has one.
    pub async fn lookup(&self, id: &QueryId) -> Result<Option<QueryRegistration>, CallError> {
        let mut errors = Vec::new();
        for (_, uri) in self.view.resource_managers() {
            match self.client.get::<QueryRegistration>(&uri, &registration_path(id)).await {
                Ok(registration) => return Ok(Some(registration)),
                Err(CallError::Refused { status: 404, .. }) => {}
                Err(error) => errors.push(error),
            }
        }
        match errors.is_empty() {
            true => Ok(None),
            false => Err(CallError::all_failed(errors, "no resource manager")),
        }
    }

    /// Claims `registration` at the admission leader: the leader's answer. A new leader's
    /// "not ready" is waited out (within [`CLAIM_PATIENCE`]).
    pub async fn claim(&self, registration: &QueryRegistration) -> Result<AdoptAnswer, CallError> {
        let request = AdoptRequest {
            registration: registration.clone(),
            adopter: self.local.node_id.clone(),
            adopter_instance: self.local.instance.clone(),
            adopter_uri: self.local.http_uri.clone(),
        };
        let give_up = Instant::now() + CLAIM_PATIENCE;
        loop {
            let mut errors = Vec::new();
            let mut order: Vec<String> = self.view.resource_managers().into_iter().map(|(_, uri)| uri).collect();
            let mut index = 0;
            let mut wait = None;
            while index < order.len() && index < 8 {
                let uri = order[index].clone();
                index += 1;
                let answer = match self.client.post::<_, AdoptAnswer>(&uri, ADOPT_PATH, &request).await {
                    Ok(answer) => answer,
                    Err(error) => match error.refusal::<AdoptAnswer>(409) {
                        Some(answer) => answer,
                        None => {
                            errors.push(error);
                            continue;
                        }
                    },
                };
                match answer {
                    AdoptAnswer::NotLeader { uri: leader, .. } => {
                        if !order[index..].contains(&leader) {
                            order.insert(index, leader);
                        }
                    }
                    AdoptAnswer::NotReady { retry_after_ms } => {
                        wait = Some(Duration::from_millis(retry_after_ms.clamp(50, 2_000)));
                        break;
                    }
                    answer => return Ok(answer),
                }
            }
            match wait {
                Some(wait) if Instant::now() + wait < give_up => tokio::time::sleep(wait).await,
                Some(_) => {
                    return Err(CallError::NotSent("the admission leader is not ready to decide adoptions".into()))
                }
                None => return Err(CallError::all_failed(errors, "no resource manager in the cluster view")),
            }
        }
    }

    /// The coordinator known to own adopted query `id`, if learnt recently.
    fn known_owner(&self, id: &QueryId) -> Option<String> {
        let owners = self.owners.lock();
        owners.get(id.as_str()).filter(|(_, at)| at.elapsed() < OWNER_CACHE_TTL).map(|(uri, _)| uri.clone())
    }

    fn learn_owner(&self, id: &QueryId, uri: &str) {
        let mut owners = self.owners.lock();
        if owners.len() >= OWNER_CACHE_SIZE {
            owners.retain(|_, (_, at)| at.elapsed() < OWNER_CACHE_TTL);
            if owners.len() >= OWNER_CACHE_SIZE {
                owners.clear();
            }
        }
        owners.insert(id.to_string(), (uri.to_string(), Instant::now()));
    }

    /// Forgets queued registrations about once a second until `shutdown`.
    pub async fn forget_loop(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let mut interval = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = interval.tick() => self.flush_forgets().await,
            }
        }
    }
}

/// The `X-Trino-*` headers of a request: its session, as the client sent it.
pub fn session_headers(headers: &axum::http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("x-trino-"))
        .filter_map(|(name, value)| Some((name.as_str().to_string(), value.to_str().ok()?.to_string())))
        .collect()
}

/// What a statement poll names: `GET /v1/statement/{phase}/{id}/{slug}/{token}[?rows=N]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poll {
    pub slug: String,
    pub token: u64,
    /// Rows the client had received when this URI was handed to it.
    pub rows: u64,
}

impl Poll {
    pub fn parse(method: &Method, path_and_query: &str) -> Option<Poll> {
        if method != Method::GET {
            return None;
        }
        let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let ["v1", "statement", "queued" | "executing", _id, slug, token] = segments.as_slice() else { return None };
        let rows =
            query.split('&').find_map(|pair| pair.strip_prefix("rows=")).map_or(Some(0), |n| n.parse::<u64>().ok())?;
        Some(Poll { slug: slug.to_string(), token: token.parse().ok()?, rows })
    }
}

/// A follow-up of query `id`, which this coordinator does not have, whose owner (by the id,
/// or as registered) is gone: relayed to the coordinator that adopted it, or adopted here
/// (statement polls only: a poll is what carries the client's position), or answered as
/// lost.
pub async fn serve_orphan<Serve, Served>(
    coordinator: &Arc<Coordinator>,
    request: Relayed,
    id: &QueryId,
    gone: OwnerGone,
    serve_here: Serve,
) -> Response
where
    Serve: FnOnce(Relayed) -> Served,
    Served: std::future::Future<Output = Response>,
{
    // Believed only from another node of the cluster (a client's own is ignored).
    let relayed_once = request.headers.contains_key(ADOPTION_RELAY) && coordinator.access.is_internal(&request.headers);
    if !relayed_once {
        // Learnt from an earlier claim, or the view (which lists the query under its
        // adopter once the adopter reported it, also after its registration is forgotten).
        let known = coordinator.registrar.known_owner(id).or_else(|| owner_in_view(coordinator, id));
        if let Some(uri) = known {
            if let Some(response) = relay_to_adopter(coordinator, &request, id, &uri).await {
                return response;
            }
        }
    }
    let registration = match coordinator.registrar.lookup(id).await {
        Ok(Some(registration)) => registration,
        Ok(None) => return owner_gone(&request, id, &gone),
        Err(error) => return unavailable(id, &format!("its registration could not be read: {error}")),
    };
    // The registered owner (an adopter), when it is alive, answers everything about it.
    let elsewhere = registration.owner != coordinator.local.node_id && !relayed_once;
    if elsewhere && registered_owner_live(coordinator, &registration) {
        if let Some(response) = relay_to_adopter(coordinator, &request, id, &registration.owner_uri).await {
            return response;
        }
    }
    let poll = Poll::parse(&request.method, &request.path_and_query);
    let Some(poll) = poll.filter(|p| p.slug == registration.slug && p.token > 0) else {
        // Not a poll, and no live owner: nobody can answer it.
        return owner_gone(&request, id, &gone);
    };
    if registration.write && registration.started {
        let error = FlotillaError::new(
            ErrorCode::RemoteHostGone,
            format!(
                "Query {id} is lost: {gone}, after this write started; whether it committed is unknown, so it is not run again"
            ),
        );
        return failed_poll(&request, id, &error);
    }
    let answer = match coordinator.registrar.claim(&registration).await {
        Ok(answer) => answer,
        Err(error) => return unavailable(id, &format!("no admission leader decided its adoption: {error}")),
    };
    match answer {
        AdoptAnswer::Granted { epoch } => {
            let adopted = QueryRegistration {
                owner: coordinator.local.node_id.clone(),
                owner_instance: coordinator.local.instance.clone(),
                owner_uri: coordinator.local.http_uri.clone(),
                epoch,
                ..registration
            };
            let from = gone.to_string();
            if let Err(error) = coordinator.manager.adopt(adopted, &from, poll.token, poll.rows) {
                return (StatusCode::BAD_REQUEST, format!("Query {id} cannot be adopted: {error}")).into_response();
            }
            serve_here(request).await
        }
        AdoptAnswer::OwnedBy { uri, owner, .. } if !relayed_once && owner != coordinator.local.node_id => {
            coordinator.registrar.learn_owner(id, &uri);
            match relay_to_adopter(coordinator, &request, id, &uri).await {
                Some(response) => response,
                None => unavailable(id, &format!("its owner {owner} at {uri} did not answer")),
            }
        }
        other => unavailable(id, &format!("its adoption is undecided ({other})")),
    }
}

/// Whether the view has the registered owner alive, in the incarnation that registered it.
fn registered_owner_live(coordinator: &Coordinator, registration: &QueryRegistration) -> bool {
    coordinator.view.snapshot().is_some_and(|snapshot| {
        snapshot.view.nodes.iter().any(|n| {
            n.node.node_id == registration.owner && n.node.instance == registration.owner_instance && n.state.is_live()
        })
    })
}

/// The live coordinator other than this one that the view lists as the owner of adopted
/// query `id`.
fn owner_in_view(coordinator: &Coordinator, id: &QueryId) -> Option<String> {
    let snapshot = coordinator.view.snapshot()?;
    let view = &snapshot.view;
    let query = view.queries.iter().find(|q| q.identity.query_id == id.as_str() && q.epoch > 0)?;
    let owner = view.nodes.iter().find(|n| n.node.node_id == query.coordinator && n.state.is_live())?;
    (owner.node.node_id != coordinator.local.node_id).then(|| owner.node.http_uri.clone())
}

/// Relays to the coordinator that adopted the query; `None` when it refused the connection
/// (it is gone too: the caller adopts or reports).
async fn relay_to_adopter(coordinator: &Coordinator, request: &Relayed, id: &QueryId, uri: &str) -> Option<Response> {
    let mut request = request.clone();
    request.headers.insert(ADOPTION_RELAY, HeaderValue::from_static("1"));
    match coordinator.forwarder.send(uri, &request).await {
        Ok(response) => Some(response),
        Err(ForwardError::Refused(_)) => None,
        Err(ForwardError::Failed(error)) => Some(
            (StatusCode::BAD_GATEWAY, format!("coordinator at {uri} did not answer for query {id}: {error}"))
                .into_response(),
        ),
    }
}

/// A transient answer: Trino clients retry a 503.
fn unavailable(id: &QueryId, why: &str) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, format!("Query {id} is being adopted by another coordinator, but {why}"))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_carry_their_position() {
        let id = "20261201_101010_00001_abcde";
        let parse = |path: &str| Poll::parse(&Method::GET, path);
        assert_eq!(
            parse(&format!("/v1/statement/executing/{id}/yslug/3?rows=120")),
            Some(Poll { slug: "yslug".into(), token: 3, rows: 120 })
        );
        assert_eq!(parse(&format!("/v1/statement/queued/{id}/yslug/1")).map(|p| p.rows), Some(0));
        assert_eq!(parse(&format!("/v1/statement/executing/{id}/s/2?maxWait=1s&rows=5")).map(|p| p.rows), Some(5));
        for bad in [
            format!("/v1/statement/executing/{id}/s/2?rows=-1"),
            format!("/v1/statement/executing/{id}/s/2?rows=99999999999999999999999"),
            format!("/v1/statement/executing/{id}/s/x"),
            format!("/v1/statement/other/{id}/s/1"),
            format!("/v1/query/{id}"),
        ] {
            assert_eq!(parse(&bad), None, "{bad}");
        }
        assert_eq!(Poll::parse(&Method::DELETE, &format!("/v1/statement/executing/{id}/s/1")), None);
    }
}
