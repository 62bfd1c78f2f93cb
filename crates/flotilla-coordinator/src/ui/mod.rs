//! The web UI, served by every coordinator at `/ui/` (and through the gateway): the
//! cluster's overview, its queries, a query's details, the workers and the resource groups,
//! from any coordinator.
//!
//! - **Data**: the pages poll `/ui/api/*` once a second. The cluster-wide parts come from the
//!   cluster view (`/ui/api/stats`, `/ui/api/cluster`, `/ui/api/resourceGroups`) and the
//!   query list from `/v1/query`'s listing (this coordinator's queries as they are, the others'
//!   from the view). `/ui/api/query/{id}` and its kill are follow-ups of the query: the
//!   coordinator middleware (and the gateway) relay them to the owning coordinator, which has
//!   the details (stages, tasks, plan), like every other follow-up.
//! - **Access**: a login form, which checks the password when password authentication is
//!   configured (Trino's form authentication), else Trino's insecure mode (any user name);
//!   then a session cookie (`Trino-UI-Token`, a JWT signed with `web-ui.shared-secret`,
//!   by default derived from the cluster's internal shared secret), so every coordinator
//!   accepts the cookie another one issued. Pages without it go to the login form; the API
//!   answers 401. Kill needs the query's user, or one the access control rules (else
//!   `access-control.admin-users`) allow.
//!   Every UI response forbids framing (`X-Frame-Options`, CSP `frame-ancestors`), so the
//!   Kill button cannot be clickjacked.
//! - **Assets**: plain HTML, CSS and JavaScript in `src/ui/assets`, embedded in the binary
//!   with `include_str!`: no front-end build step.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Form, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use flotilla_proto::cluster::NodeRole;
use flotilla_proto::QueryId;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::http::{info, query_api, HttpError};
use crate::manager::KillOutcome;
use crate::Coordinator;

/// The session cookie's name (Trino's).
pub const COOKIE: &str = "Trino-UI-Token";

/// How long a login lasts.
const SESSION_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The audience of UI session tokens (they are not internal-call tokens, which are signed
/// with the same secret when the UI secret is derived from it).
const AUDIENCE: &str = "flotilla-web-ui";

const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
const LOGIN_HTML: &str = include_str!("assets/login.html");
const PAGE_HTML: &str = include_str!("assets/page.html");

/// Who may use the UI and how sessions are signed.
pub struct UiAuth {
    encoding: EncodingKey,
    decoding: DecodingKey,
    passwords: bool,
}

impl std::fmt::Debug for UiAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UiAuth").finish_non_exhaustive()
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    aud: String,
    exp: u64,
    /// The login checked a password (a session of insecure mode does not count once
    /// passwords are required).
    #[serde(default)]
    pwd: bool,
}

/// The logged-in user of a request.
#[derive(Debug, Clone)]
pub struct UiUser(pub String);

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

impl UiAuth {
    /// `secret`: `web-ui.shared-secret`, or one derived from the internal shared secret;
    /// `passwords`: logins check passwords (only sessions of such logins are valid).
    pub fn new(secret: &str, passwords: bool) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            passwords,
        }
    }

    fn issue(&self, user: &str) -> jsonwebtoken::errors::Result<String> {
        let exp = now_secs() + SESSION_LIFETIME.as_secs();
        let claims = Claims { sub: user.to_string(), aud: AUDIENCE.into(), exp, pwd: self.passwords };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    /// The user of a valid session cookie among `headers`.
    fn user(&self, headers: &HeaderMap) -> Option<String> {
        let token = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == COOKIE)
            .map(|(_, value)| value.to_string())?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[AUDIENCE]);
        let claims = jsonwebtoken::decode::<Claims>(&token, &self.decoding, &validation).ok()?.claims;
        (claims.pwd || !self.passwords).then_some(claims.sub)
    }
}

/// The UI's routes (merged into the coordinator's router, inside its relay-to-owner layer).
pub fn routes() -> Router<Arc<Coordinator>> {
    let pages = Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(|user: Extension<UiUser>| page(user, "overview")))
        .route("/ui/index.html", get(|user: Extension<UiUser>| page(user, "overview")))
        .route("/ui/queries.html", get(|user: Extension<UiUser>| page(user, "queries")))
        .route("/ui/query.html", get(|user: Extension<UiUser>| page(user, "query")))
        .route("/ui/workers.html", get(|user: Extension<UiUser>| page(user, "workers")))
        .route("/ui/groups.html", get(|user: Extension<UiUser>| page(user, "groups")))
        .route("/ui/api/stats", get(stats))
        .route("/ui/api/cluster", get(cluster))
        .route("/ui/api/resourceGroups", get(resource_groups))
        .route("/ui/api/query", get(query_api::list))
        .route("/ui/api/query/{query_id}", get(query_api::info))
        .route("/ui/api/query/{query_id}/killed", put(kill));
    let open = Router::new()
        .route("/ui/login.html", get(login_page))
        .route("/ui/login", post(login))
        .route("/ui/logout", get(logout))
        .route("/ui/assets/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/ui/assets/app.css", get(|| async { asset("text/css; charset=utf-8", APP_CSS) }));
    pages.route_layer(middleware::from_fn(require_login)).merge(open).layer(middleware::from_fn(no_framing))
}

/// Headers every UI response carries: no framing by other sites (clickjacking), no MIME
/// sniffing, no referrer outside the UI.
async fn no_framing(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("frame-ancestors 'none'; object-src 'none'; base-uri 'self'; form-action 'self'"),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    response
}

fn html(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], body).into_response()
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// Sends requests without a valid session to the login form (pages) or answers 401 (API).
async fn require_login(request: Request, next: Next) -> Response {
    let auth = request.extensions().get::<Arc<UiAuth>>().cloned();
    let user = auth.and_then(|auth| auth.user(request.headers()));
    match user {
        Some(user) => {
            let mut request = request;
            request.extensions_mut().insert(UiUser(user));
            next.run(request).await
        }
        None if request.uri().path().starts_with("/ui/api/") => {
            (StatusCode::UNAUTHORIZED, Json(json!({"error": "Not logged in to the web UI: POST /ui/login first"})))
                .into_response()
        }
        None => {
            let back = request.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/ui/");
            let target = format!("/ui/login.html?redirect={}", urlencoding(back));
            Redirect::to(&target).into_response()
        }
    }
}

/// Only a path of the UI on this site may be a login's target: no open redirect, and
/// nothing that cannot go in a `Location` header (control characters, CR/LF).
fn safe_redirect(target: &str) -> bool {
    target.starts_with("/ui/")
        && !target.contains("//")
        && !target.contains('\\')
        && target.bytes().all(|b| b.is_ascii_graphic())
        && HeaderValue::from_str(target).is_ok()
}

/// Percent-encodes everything but unreserved characters.
fn urlencoding(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn page(Extension(UiUser(user)): Extension<UiUser>, name: &str) -> Response {
    let title = match name {
        "overview" => "Cluster overview",
        "queries" => "Queries",
        "query" => "Query details",
        "workers" => "Workers",
        _ => "Resource groups",
    };
    let escaped = user.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;");
    html(PAGE_HTML.replace("{{page}}", name).replace("{{title}}", title).replace("{{user}}", &escaped))
}

/// The login form, saying whether a password is checked.
async fn login_page(State(coordinator): State<Arc<Coordinator>>) -> Response {
    let (note, password) = match &coordinator.security {
        None => (
            "Password authentication is not configured: any user name is accepted (Trino's insecure mode).",
            "placeholder=\"not configured\" disabled",
        ),
        Some(security) if security.has_passwords() => ("Log in with your user name and password.", "required"),
        Some(_) => ("The web UI needs password authentication, which is not configured.", "disabled"),
    };
    html(LOGIN_HTML.replace("{{note}}", note).replace("{{password}}", password))
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    username: String,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    redirect: Option<String>,
}

/// The login form: with password authentication configured, Trino's form authentication
/// (the password is checked; over HTTPS only, unless insecure authentication is allowed);
/// without any authentication, Trino's insecure login (any user name, no password). A
/// cluster that authenticates clients only with JWTs has no UI login.
async fn login(
    State(coordinator): State<Arc<Coordinator>>,
    Extension(auth): Extension<Arc<UiAuth>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let user = form.username.trim();
    if user.is_empty() || user.len() > 256 || user.chars().any(char::is_control) {
        return (StatusCode::BAD_REQUEST, "A user name is required").into_response();
    }
    let password = form.password.as_deref().unwrap_or_default();
    let secure = coordinator.client_is_secure(&headers);
    match &coordinator.security {
        None if !password.is_empty() => {
            return (StatusCode::BAD_REQUEST, "Password authentication is not configured: leave the password empty")
                .into_response();
        }
        None => {}
        Some(security) if !security.has_passwords() => {
            return (
                StatusCode::FORBIDDEN,
                "The web UI needs password authentication (http-server.authentication.type=PASSWORD)",
            )
                .into_response();
        }
        Some(security) => {
            if let Err(refusal) = security.transport_allowed(secure) {
                return refusal.into_response();
            }
            if security.check_password(user, password).await.is_err() {
                tracing::info!(%user, "web UI login refused");
                let target = format!(
                    "/ui/login.html?failed=1{}",
                    match form.redirect.as_deref().filter(|r| safe_redirect(r)) {
                        Some(back) => format!("&redirect={}", urlencoding(back)),
                        None => String::new(),
                    }
                );
                return Redirect::to(&target).into_response();
            }
        }
    }
    let token = match auth.issue(user) {
        Ok(token) => token,
        Err(error) => return (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    };
    let target = form.redirect.filter(|r| safe_redirect(r)).unwrap_or_else(|| "/ui/".to_string());
    let secure_flag = if secure { "; Secure" } else { "" };
    let cookie = format!(
        "{COOKIE}={token}; Path=/ui; HttpOnly; SameSite=Lax; Max-Age={}{secure_flag}",
        SESSION_LIFETIME.as_secs()
    );
    let mut response = Redirect::to(&target).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn logout() -> Response {
    let mut response = Redirect::to("/ui/login.html").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("Trino-UI-Token=; Path=/ui; HttpOnly; SameSite=Lax; Max-Age=0"),
    );
    response
}

/// Trino's `/ui/api/stats`, from the cluster view.
async fn stats(State(coordinator): State<Arc<Coordinator>>) -> Json<Value> {
    let mut stats = crate::http::info::cluster_stats(&coordinator);
    if let Some(snapshot) = coordinator.view.snapshot() {
        let now = chrono::Utc::now().timestamp_millis();
        let view = &snapshot.view;
        let finished = view.queries.iter().filter(|q| q.progress.is_done()).count();
        let last_minute =
            view.queries.iter().filter(|q| q.progress.end_time_ms.is_some_and(|end| now - end <= 60_000)).count();
        let workers: Vec<_> = view.live_with_role(NodeRole::Worker).filter_map(|n| n.worker.as_ref()).collect();
        let cpu = match workers.len() {
            0 => 0.0,
            n => workers.iter().map(|w| w.process_cpu_load).sum::<f64>() / n as f64,
        };
        stats["finishedQueries"] = finished.into();
        stats["queriesPerMinute"] = last_minute.into();
        stats["workerCpuLoad"] = cpu.into();
    }
    Json(stats)
}

/// Every node of the view, live or not, as `/v1/node` lists them (with each worker's load),
/// and the warehouse definitions (for the shared worker groups).
async fn cluster(State(coordinator): State<Arc<Coordinator>>) -> Json<Value> {
    let Some(snapshot) = coordinator.view.snapshot() else {
        return Json(json!({"nodes": [], "warehouses": [], "viewError": coordinator.view.last_error()}));
    };
    let nodes: Vec<Value> = snapshot.view.nodes.iter().map(info::node_json).collect();
    Json(json!({
        "nodes": nodes,
        "warehouses": snapshot.view.warehouses,
        "viewAgeMillis": snapshot.age().as_millis() as u64,
    }))
}

/// Every resource group with unfinished queries in the view, as `/v1/resourceGroupState`
/// reports it (the admission leader's cluster-wide counts and limits).
async fn resource_groups(State(coordinator): State<Arc<Coordinator>>) -> Result<Json<Vec<Value>>, HttpError> {
    let paths: BTreeSet<String> = match coordinator.view.snapshot() {
        Some(snapshot) => snapshot
            .view
            .queries
            .iter()
            .filter(|q| !q.progress.is_done())
            .map(|q| q.identity.resource_group.clone())
            .collect(),
        None => BTreeSet::new(),
    };
    let admission = coordinator.manager.admission();
    let states = futures::future::join_all(paths.iter().map(|path| admission.cluster_state(path))).await;
    let groups = states
        .into_iter()
        .map(|state| {
            state
                .map(|state| query_api::group_state_json(&state, admission.enabled()))
                .map_err(|e| HttpError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(groups))
}

/// `PUT /ui/api/query/{id}/killed` on the owning coordinator (relayed there): kills the query
/// when the session's user ran it or is an admin. 202 killed, 403 not allowed, 409 ended,
/// 410 unknown.
async fn kill(
    State(coordinator): State<Arc<Coordinator>>,
    Extension(UiUser(user)): Extension<UiUser>,
    Path(query_id): Path<String>,
    message: String,
) -> Response {
    let Some(query) = query_id.parse::<QueryId>().ok().and_then(|id| coordinator.manager.get(&id)) else {
        return (StatusCode::GONE, format!("Query not found: {query_id}")).into_response();
    };
    if !coordinator.access.may_act_on_query(Some(&user), &query.session.user) {
        return (
            StatusCode::FORBIDDEN,
            format!("Access Denied: User {user} cannot kill query {query_id} owned by {}", query.session.user),
        )
            .into_response();
    }
    let message = message.trim();
    let message = if message.is_empty() { format!("Killed from the web UI by {user}") } else { message.to_string() };
    match coordinator.manager.registry().kill(&query.id, Some(&message)) {
        KillOutcome::Killed => StatusCode::ACCEPTED.into_response(),
        KillOutcome::NotRunning => (StatusCode::CONFLICT, "Query is not running").into_response(),
        KillOutcome::NotFound => StatusCode::GONE.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cookie(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_str(&format!("other=1; {COOKIE}={token}")).unwrap());
        headers
    }

    #[test]
    fn a_session_signed_with_the_shared_secret_is_accepted_by_any_coordinator() {
        let a = UiAuth::new("a-web-ui-secret-of-some-length", false);
        let b = UiAuth::new("a-web-ui-secret-of-some-length", false);
        let token = a.issue("alice").unwrap();
        assert_eq!(b.user(&cookie(&token)).as_deref(), Some("alice"));
        let checked = UiAuth::new("a-web-ui-secret-of-some-length", true);
        assert_eq!(checked.user(&cookie(&token)), None, "an insecure-mode session once passwords are required");
        assert_eq!(checked.user(&cookie(&checked.issue("alice").unwrap())).as_deref(), Some("alice"));
        let other = UiAuth::new("another-secret-entirely-here", false);
        assert_eq!(other.user(&cookie(&token)), None, "another cluster's cookie");
        assert_eq!(b.user(&cookie("not.a.token")), None);
        assert_eq!(b.user(&HeaderMap::new()), None);
    }

    #[test]
    fn login_redirects_only_to_the_ui() {
        assert_eq!(urlencoding("/ui/query.html?x y"), "/ui/query.html%3Fx%20y");
        assert!(safe_redirect("/ui/query.html?20261122_101010_00001_abcde"));
        for bad in [
            "https://evil.example/",
            "//evil.example/ui/",
            "/ui//evil",
            "/ui/\\evil",
            "/ui/x\r\nSet-Cookie: a=b",
            "/ui/\u{7f}",
            "/other",
        ] {
            assert!(!safe_redirect(bad), "{bad:?}");
        }
    }
}
