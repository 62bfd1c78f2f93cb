//! `/v1/statement`: submit a query, then page through it at `nextUri`.
//!
//! Tokens: the `POST` response is token 0 and points at token 1. Asking for token `n+1`
//! acknowledges page `n` and produces the next response; asking for `n` again returns the
//! identical cached response (client retries are idempotent); asking for anything older
//! gets 410 Gone.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query as UrlQuery, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use flotilla_proto::{ErrorCode, QueryId};
use flotilla_protocol::headers::{self, url_encode};
use flotilla_protocol::ClientSession;
use flotilla_sql::SessionChanges;
use tokio::sync::mpsc::error::TryRecvError;

use super::HttpError;
use crate::query::{CachedResponse, Page, Query, QueryState, ResultCursor};
use crate::Coordinator;
use flotilla_protocol::uris::QueryUris;

const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(1);
const LONGEST_MAX_WAIT: Duration = Duration::from_secs(10);
/// The longest a new query's first response waits for its registration.
const REGISTRATION_WAIT: Duration = Duration::from_secs(1);

fn uris(coordinator: &Coordinator, request_headers: &HeaderMap) -> Result<QueryUris, HttpError> {
    coordinator.client_uris(request_headers).map_err(|e| HttpError::bad_request(e.to_string()))
}

pub async fn submit(
    State(coordinator): State<Arc<Coordinator>>,
    request_headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HttpError> {
    // Before anything is registered: a 503 promises the gateway that this query does not
    // exist here, so it may send it to another coordinator.
    if coordinator.shutting_down() {
        return Err(HttpError::new(StatusCode::SERVICE_UNAVAILABLE, "Server is shutting down"));
    }
    let uris = uris(&coordinator, &request_headers)?;
    let session =
        ClientSession::from_headers(request_headers.iter().map(|(name, value)| (name.as_str(), value.as_bytes())))
            .map_err(|e| HttpError::bad_request(e.to_string()))?;
    let sql =
        String::from_utf8(body.to_vec()).map_err(|_| HttpError::bad_request("SQL statement is not valid UTF-8"))?;
    if sql.trim().is_empty() {
        return Err(HttpError::bad_request("SQL statement is empty"));
    }
    let query = coordinator.manager.create(session, crate::adoption::session_headers(&request_headers), sql);
    // The document describes the query as submitted (queued, as Trino's first response
    // does); it is sent once the query is registered, so a follow-up after this
    // coordinator's death can be adopted elsewhere (bounded: the registration gives up on
    // its own).
    let response = {
        let mut cursor = query.cursor.lock().await;
        let response = build_response(&query, &uris, Some(1), None, 0);
        cursor.last_token = 0;
        cursor.last_response = response.clone();
        response
    };
    let _ = tokio::time::timeout(REGISTRATION_WAIT, query.wait_registered()).await;
    Ok(respond(&response))
}

/// Looks a query up from URL parts, with every mismatch a 404.
fn find_query(coordinator: &Coordinator, phase: &str, query_id: &str, slug: &str) -> Result<Arc<Query>, HttpError> {
    if phase != "queued" && phase != "executing" {
        return Err(HttpError::not_found("Not found"));
    }
    let id: QueryId = query_id.parse().map_err(|_| HttpError::not_found(format!("Query not found: {query_id}")))?;
    let query =
        coordinator.manager.get(&id).ok_or_else(|| HttpError::not_found(format!("Query not found: {query_id}")))?;
    if query.slug != slug {
        return Err(HttpError::not_found(format!("Query not found: {query_id}")));
    }
    Ok(query)
}

pub async fn fetch(
    State(coordinator): State<Arc<Coordinator>>,
    Path((phase, query_id, slug, token)): Path<(String, String, String, String)>,
    UrlQuery(parameters): UrlQuery<HashMap<String, String>>,
    request_headers: HeaderMap,
) -> Result<Response, HttpError> {
    let query = find_query(&coordinator, &phase, &query_id, &slug)?;
    let token: u64 = token.parse().map_err(|_| HttpError::not_found(format!("Invalid token: {token}")))?;
    let uris = uris(&coordinator, &request_headers)?;
    let max_wait = match parameters.get("maxWait") {
        Some(text) => flotilla_proto::parse_duration(text).map_err(HttpError::bad_request)?.min(LONGEST_MAX_WAIT),
        None => DEFAULT_MAX_WAIT,
    };
    query.touch();
    let mut cursor = query.cursor.lock().await;
    if token == cursor.last_token {
        return Ok(respond(&cursor.last_response));
    }
    if token < cursor.last_token {
        return Err(HttpError::new(
            StatusCode::GONE,
            format!("Page {token} of query {query_id} is gone (current token is {})", cursor.last_token),
        ));
    }
    if token > cursor.last_token + 1 {
        return Err(HttpError::not_found(format!("Invalid token {token} for query {query_id}")));
    }
    let response = next_response(&query, &uris, &mut cursor, token, max_wait).await;
    cursor.last_token = token;
    cursor.last_response = response.clone();
    Ok(respond(&response))
}

/// `DELETE` on a `nextUri`: the query's URI is the capability (as in Trino); with
/// authentication configured, the authenticated user must also be one who may cancel it
/// (its own user, or as the access control rules allow).
pub async fn cancel(
    State(coordinator): State<Arc<Coordinator>>,
    Path((phase, query_id, slug, _token)): Path<(String, String, String, String)>,
    request_headers: HeaderMap,
) -> Result<StatusCode, HttpError> {
    let query = find_query(&coordinator, &phase, &query_id, &slug)?;
    let user = coordinator.access.user(&request_headers);
    if coordinator.security.is_some() && !coordinator.access.may_act_on_query(user, &query.session.user) {
        let user = user.unwrap_or("(anonymous)");
        return Err(HttpError::new(
            StatusCode::FORBIDDEN,
            format!("Access Denied: User {user} cannot kill query {query_id} owned by {}", query.session.user),
        ));
    }
    coordinator.manager.cancel(&query.id, ErrorCode::UserCanceled, "Query was canceled");
    Ok(StatusCode::NO_CONTENT)
}

/// Produces the response for token `token` (one past the last served), waiting up to
/// `max_wait` for data or the end of the query.
async fn next_response(
    query: &Query,
    uris: &QueryUris,
    cursor: &mut ResultCursor,
    token: u64,
    max_wait: Duration,
) -> Arc<CachedResponse> {
    let deadline = tokio::time::Instant::now() + max_wait;
    let next = Some(token + 1);
    let mut changes = query.watch();
    loop {
        changes.borrow_and_update();
        if query.state() == QueryState::Failed {
            return build_response(query, uris, None, None, cursor.rows_served);
        }
        if let Some(page) = cursor.pending.take() {
            return page_response(query, uris, cursor, token, page);
        }
        if !cursor.exhausted {
            match tokio::time::timeout_at(deadline, cursor.pages.recv()).await {
                Ok(Some(page)) => return page_response(query, uris, cursor, token, page),
                Ok(None) => {
                    cursor.exhausted = true;
                    continue;
                }
                Err(_) => return build_response(query, uris, next, None, cursor.rows_served),
            }
        }
        if query.state() == QueryState::Finished {
            return build_response(query, uris, None, None, cursor.rows_served);
        }
        // Data is exhausted but the task has not recorded its outcome yet.
        if tokio::time::timeout_at(deadline, changes.changed()).await.is_err() {
            return build_response(query, uris, next, None, cursor.rows_served);
        }
    }
}

/// A response carrying `page`; when it is the last one, it is also the final response, which
/// saves the client a round trip.
fn page_response(
    query: &Query,
    uris: &QueryUris,
    cursor: &mut ResultCursor,
    token: u64,
    page: Page,
) -> Arc<CachedResponse> {
    match cursor.pages.try_recv() {
        Ok(following) => cursor.pending = Some(following),
        Err(TryRecvError::Disconnected) => cursor.exhausted = true,
        Err(TryRecvError::Empty) => {}
    }
    let last = cursor.exhausted && cursor.pending.is_none() && query.state() == QueryState::Finished;
    cursor.rows_served += page.row_count as u64;
    build_response(query, uris, if last { None } else { Some(token + 1) }, Some(page), cursor.rows_served)
}

fn build_response(
    query: &Query,
    uris: &QueryUris,
    next_token: Option<u64>,
    page: Option<Page>,
    rows: u64,
) -> Arc<CachedResponse> {
    let results = query.results(uris, next_token, page, rows);
    // Plain structs, string-keyed maps and already-valid raw JSON: serialising cannot fail.
    let body = serde_json::to_vec(&results).expect("query results serialize");
    let changes = query.status().changes.clone();
    if next_token.is_none() {
        query.mark_delivered();
    }
    Arc::new(CachedResponse { body: body.into(), changes })
}

fn add_header(response_headers: &mut HeaderMap, name: &'static str, value: &str) {
    // Values come from identifiers and URL-encoded text; one that is still not a valid header
    // value is left out rather than failing the response.
    if let Ok(value) = HeaderValue::from_str(value) {
        response_headers.append(HeaderName::from_static(name), value);
    }
}

fn session_headers(changes: &SessionChanges) -> HeaderMap {
    let mut map = HeaderMap::new();
    if let Some(catalog) = &changes.set_catalog {
        add_header(&mut map, headers::SET_CATALOG, catalog);
    }
    if let Some(schema) = &changes.set_schema {
        add_header(&mut map, headers::SET_SCHEMA, schema);
    }
    for (name, value) in &changes.set_session {
        add_header(&mut map, headers::SET_SESSION, &format!("{name}={}", url_encode(value)));
    }
    for name in &changes.clear_session {
        add_header(&mut map, headers::CLEAR_SESSION, name);
    }
    for (name, sql) in &changes.added_prepare {
        add_header(&mut map, headers::ADDED_PREPARE, &format!("{}={}", url_encode(name), url_encode(sql)));
    }
    for name in &changes.deallocated_prepare {
        add_header(&mut map, headers::DEALLOCATED_PREPARE, &url_encode(name));
    }
    if let Some(id) = &changes.started_transaction_id {
        add_header(&mut map, headers::STARTED_TRANSACTION_ID, id);
    }
    if changes.clear_transaction_id {
        add_header(&mut map, headers::CLEAR_TRANSACTION_ID, "true");
    }
    map
}

fn respond(response: &CachedResponse) -> Response {
    let mut http = (StatusCode::OK, [("content-type", "application/json")], response.body.clone()).into_response();
    http.headers_mut().extend(session_headers(&response.changes));
    http
}
