//! The coordinator's REST API: Trino's client protocol (`/v1/statement`), the query API
//! (`/v1/query`), node information (`/v1/info`) and the cluster's nodes (`/v1/node`,
//! `/v1/cluster`).
//!
//! Every request about a query another coordinator owns (a poll, a cancel, `/v1/query/{id}`)
//! is relayed to that owner first ([`route_to_owner`]), so any coordinator is a valid entry
//! point for any request.

pub(crate) mod info;
pub(crate) mod query_api;
mod statement;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;
use flotilla_node::relay::{locate_owner, relay_to_id_owner, OwnerGone};
use flotilla_node::{follow_up_query, Relayed, FORWARDED_BY};

use crate::adoption;

use crate::Coordinator;

/// An HTTP-level failure: Trino answers these with a status and a plain-text reason.
#[derive(Debug)]
pub struct HttpError {
    pub status: StatusCode,
    pub message: String,
}

impl HttpError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (self.status, [("content-type", "text/plain; charset=utf-8")], self.message).into_response()
    }
}

/// All routes of a coordinator.
pub fn router(coordinator: Arc<Coordinator>) -> Router {
    // Large enough that an over-long SQL text reaches the query (and fails it with
    // QUERY_TEXT_TOO_LARGE) instead of being cut off by the transport.
    let body_limit = coordinator.manager.config().max_query_length.saturating_mul(4).max(1 << 20);
    let routes = Router::new()
        .route("/v1/statement", axum::routing::post(statement::submit))
        .route("/v1/statement/{phase}/{query_id}/{slug}/{token}", get(statement::fetch).delete(statement::cancel))
        .route("/v1/query", get(query_api::list))
        .route("/v1/query/{query_id}", get(query_api::info).delete(query_api::cancel).head(query_api::exists))
        .route("/v1/query/{query_id}/killed", put(query_api::kill))
        .route("/v1/resourceGroupState/{*path}", get(query_api::resource_group_state))
        .route("/v1/status", get(info::status))
        .route("/v1/node", get(info::node_list))
        .route("/v1/node/failed", get(info::failed_nodes))
        .route("/v1/cluster", get(info::cluster))
        .merge(crate::ui::routes())
        .layer(axum::Extension(coordinator.ui.clone()))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(coordinator.clone(), route_to_owner))
        .with_state(coordinator.clone())
        .merge(flotilla_node::info_routes(coordinator.local.clone(), coordinator.access.clone()));
    flotilla_node::counted(routes, &coordinator.local)
        .layer(middleware::from_fn_with_state(coordinator, authenticate))
        .layer(middleware::from_fn(presto_headers))
}

/// Presto clients speak the same protocol with `X-Presto-*` headers: a request that sends
/// them (and no `X-Trino-*` ones) is served as if it had sent the `X-Trino-*` equivalents,
/// and its response's `X-Trino-*` headers (session changes, prepared statements, ...) are
/// sent back under their `X-Presto-*` names.
async fn presto_headers(mut request: Request, next: Next) -> Response {
    const PRESTO: &str = "x-presto-";
    const TRINO: &str = "x-trino-";
    let headers = request.headers();
    let presto = headers.keys().any(|n| n.as_str().starts_with(PRESTO))
        && !headers.keys().any(|n| n.as_str().starts_with(TRINO));
    if !presto {
        return next.run(request).await;
    }
    let renamed = |headers: &mut axum::http::HeaderMap, from: &str, to: &str| {
        let names: Vec<axum::http::HeaderName> =
            headers.keys().filter(|n| n.as_str().starts_with(from)).cloned().collect();
        for name in names {
            let Ok(new_name) =
                axum::http::HeaderName::from_bytes(format!("{to}{}", &name.as_str()[from.len()..]).as_bytes())
            else {
                continue;
            };
            let values: Vec<_> = headers.get_all(&name).iter().cloned().collect();
            headers.remove(&name);
            for value in values {
                headers.append(new_name.clone(), value);
            }
        }
    };
    renamed(request.headers_mut(), PRESTO, TRINO);
    let mut response = next.run(request).await;
    renamed(response.headers_mut(), TRINO, PRESTO);
    response
}

/// Client authentication, before everything else (relays to a query's owner included):
/// [`flotilla_node::authentication::Security::admit`]. Without authentication configured,
/// requests pass as they are.
async fn authenticate(State(coordinator): State<Arc<Coordinator>>, mut request: Request, next: Next) -> Response {
    let Some(security) = coordinator.security.clone() else {
        return next.run(request).await;
    };
    let secure = coordinator.client_is_secure(request.headers());
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    match security.admit(&method, &path, request.headers_mut(), secure).await {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            tracing::debug!(%path, reason = refusal.message(), "refused a request's credentials");
            refusal.into_response()
        }
    }
}

/// Relays a request about another coordinator's query to that coordinator, found by the
/// query id's suffix in the cluster view; serves everything else here. A request already
/// relayed once is not sent to the id's owner again (no loops). A query whose owner is gone
/// is adopted here, or relayed once more, to the coordinator that adopted it, which never
/// relays it again ([`adoption::serve_orphan`], [`adoption::ADOPTION_RELAY`]).
async fn route_to_owner(State(coordinator): State<Arc<Coordinator>>, request: Request, next: Next) -> Response {
    if let Some(refused) = flotilla_node::relay::refuse_ambiguous_path(request.uri().path()) {
        return refused;
    }
    let Some(id) = follow_up_query(request.uri().path()) else {
        return next.run(request).await;
    };
    if coordinator.manager.get(&id).is_some() {
        return next.run(request).await;
    }
    let owner = id.coordinator();
    let forwarded = request.headers().contains_key(FORWARDED_BY);
    // Follow-ups carry no body (a kill's message is short).
    let trusted = coordinator.trusts_forwarded(request.headers());
    let by = &coordinator.local.node_id;
    // What routing put there (the path's parameters), for serving the request here after all.
    let extensions = request.extensions().clone();
    let request = match Relayed::read(request, 1 << 20, coordinator.own_host(), by, trusted).await {
        Ok(request) => request,
        Err(response) => return response,
    };
    let serve_here = move |request: Relayed| {
        let mut request = request.into_request();
        *request.extensions_mut() = extensions;
        next.run(request)
    };
    let gone = if owner == coordinator.id {
        // Ours by its id, yet not here: it ended and was forgotten.
        return serve_here(request).await;
    } else if forwarded {
        // Relayed here by a gateway or coordinator that found its owner gone.
        match locate_owner(&coordinator.view, &owner).await {
            Ok(base) => OwnerGone::Refused { owner, base, cause: "as the node that relayed it found".into() },
            Err(gone) => gone,
        }
    } else {
        match relay_to_id_owner(&coordinator.forwarder, &coordinator.view, &request, &id).await {
            Ok(response) => return response,
            Err(gone) => gone,
        }
    };
    adoption::serve_orphan(&coordinator, request, &id, gone, serve_here).await
}
