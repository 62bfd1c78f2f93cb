//! Client authentication on a coordinator (`http-server.authentication.type`, Trino's
//! names): `PASSWORD` (HTTP Basic, checked against Trino's password file) and `JWT` (a
//! Bearer token signed with the key in `http-server.authentication.jwt.key-file`), tried in
//! the order configured.
//!
//! [`Security::admit`] runs before every route of a coordinator, and decides who a request
//! is:
//!
//! - **Another node's call** (signed with the cluster's secret, not a relayed client
//!   request): trusted, as before.
//! - **A client request relayed by another coordinator**: that coordinator authenticated it
//!   and says who in a signed [`PRINCIPAL_HEADER`]; believed only with the cluster's
//!   signature, so a client cannot name a principal.
//! - **A client request** (directly, or relayed by a gateway, which passes credentials
//!   through without checking them): authenticated here. Credentials over plain HTTP are
//!   refused (403) unless `http-server.authentication.allow-insecure-over-http=true`; a
//!   relayed request is as secure as the client's own connection (the relay's signed
//!   `X-Forwarded-Proto`).
//!
//! The principal becomes the user. An `X-Trino-User` that names someone else is
//! impersonation, allowed only when the access control's `impersonation` rules allow it
//! (403 otherwise, as Trino's default). The request then goes on with `X-Trino-User` set to
//! the user it runs as (everything after this reads that header) and the signed principal
//! added, so a relay to the query's owner keeps both.
//!
//! The web UI (`/ui/`) has its own login, which checks the password
//! ([`Security::check_password`]); `/v1/info` is public, as in Trino.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use flotilla_proto::access_control::AccessControl;
use flotilla_proto::{AuthenticationType, InternalAuth, SecurityConfig, INTERNAL_BEARER_HEADER, PRINCIPAL_HEADER};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use parking_lot::Mutex;
use tokio::sync::Semaphore;

use crate::password_file::PasswordFile;
use crate::FORWARDED_BY;

/// The longest `Authorization` header read (a JWT with many claims is a few KB).
const MAX_CREDENTIALS: usize = 16 << 10;

/// The keys JWTs may be signed with.
enum JwtKeys {
    /// One PEM public key.
    Single(DecodingKey),
    /// A JWKS file: the token's `kid` picks the key.
    Set(JwkSet),
}

/// Checks Bearer tokens.
struct JwtAuthenticator {
    keys: JwtKeys,
    issuer: Option<String>,
    audience: Option<String>,
    principal_field: String,
    /// Tokens verified already (SHA-256 of the token → principal, and until when it may be
    /// believed without checking again: its `exp`, at most [`JWT_CACHE_TIME`]): a client
    /// sends the same token with every request of every query.
    verified: Mutex<HashMap<Vec<u8>, (String, SystemTime)>>,
}

/// The longest a verified token is believed without checking it again.
const JWT_CACHE_TIME: Duration = Duration::from_secs(60);
/// The most tokens remembered.
const JWT_CACHE_SIZE: usize = 1000;

impl JwtAuthenticator {
    fn load(config: &SecurityConfig, path: &Path) -> Result<Self, String> {
        let describe = |e: &dyn std::fmt::Display| format!("JWT key file {}: {e}", path.display());
        let bytes = std::fs::read(path).map_err(|e| describe(&e))?;
        let text = String::from_utf8_lossy(&bytes);
        let keys = if text.trim_start().starts_with('{') {
            let set: JwkSet = serde_json::from_str(&text).map_err(|e| describe(&e))?;
            if set.keys.is_empty() {
                return Err(describe(&"the JWKS has no keys"));
            }
            for jwk in &set.keys {
                DecodingKey::from_jwk(jwk).map_err(|e| describe(&e))?;
            }
            JwtKeys::Set(set)
        } else if text.contains("-----BEGIN") {
            let key = DecodingKey::from_rsa_pem(&bytes)
                .or_else(|_| DecodingKey::from_ec_pem(&bytes))
                .or_else(|_| DecodingKey::from_ed_pem(&bytes))
                .map_err(|_| describe(&"not an RSA, EC or Ed25519 public key in PEM"))?;
            JwtKeys::Single(key)
        } else {
            return Err(describe(&"neither a PEM public key nor a JWKS (JSON with \"keys\")"));
        };
        Ok(Self {
            keys,
            issuer: config.jwt_required_issuer.clone(),
            audience: config.jwt_required_audience.clone(),
            principal_field: config.jwt_principal_field.clone(),
            verified: Mutex::new(HashMap::new()),
        })
    }

    fn authenticate(&self, token: &str) -> Result<String, String> {
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref().to_vec();
        let now = SystemTime::now();
        if let Some((principal, until)) = self.verified.lock().get(&digest) {
            if now < *until {
                return Ok(principal.clone());
            }
        }
        let (principal, expires) = self.verify(token)?;
        let until = expires.map_or(now + JWT_CACHE_TIME, |exp| exp.min(now + JWT_CACHE_TIME));
        let mut verified = self.verified.lock();
        if verified.len() >= JWT_CACHE_SIZE {
            verified.retain(|_, (_, until)| now < *until);
            if verified.len() >= JWT_CACHE_SIZE {
                verified.clear();
            }
        }
        verified.insert(digest, (principal.clone(), until));
        Ok(principal)
    }

    /// Verifies a token: its principal, and when it expires (`exp`).
    fn verify(&self, token: &str) -> Result<(String, Option<SystemTime>), String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("invalid JWT: {e}"))?;
        let owned;
        let key = match &self.keys {
            JwtKeys::Single(key) => key,
            JwtKeys::Set(set) => {
                let jwk = match (&header.kid, set.keys.as_slice()) {
                    (Some(kid), _) => set.find(kid).ok_or_else(|| format!("unknown JWT key id {kid}"))?,
                    (None, [only]) => only,
                    (None, _) => return Err("the JWT names no key id (kid)".into()),
                };
                owned = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
                &owned
            }
        };
        // Only the algorithms of the key's own family: no HMAC with a public key.
        if header.alg.family() != key.family()
            || matches!(header.alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
        {
            return Err(format!("JWT algorithm {:?} does not fit the configured key", header.alg));
        }
        let mut validation = Validation::new(header.alg);
        validation.set_required_spec_claims::<&str>(&[]);
        validation.leeway = 30;
        validation.validate_nbf = true;
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                validation.required_spec_claims.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            validation.required_spec_claims.insert("iss".into());
        }
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, key, &validation)
            .map_err(|e| format!("invalid JWT: {e}"))?;
        let expires =
            data.claims.get("exp").and_then(serde_json::Value::as_u64).map(|exp| UNIX_EPOCH + Duration::from_secs(exp));
        match data.claims.get(&self.principal_field) {
            Some(serde_json::Value::String(principal)) if valid_user(principal) => Ok((principal.clone(), expires)),
            _ => Err(format!("the JWT has no usable '{}' claim", self.principal_field)),
        }
    }
}

fn valid_user(user: &str) -> bool {
    !user.trim().is_empty() && user.len() <= flotilla_proto::MAX_USER_LENGTH && !user.chars().any(char::is_control)
}

/// A coordinator's client authentication and the access control it consults for
/// impersonation.
pub struct Security {
    methods: Vec<AuthenticationType>,
    passwords: Option<Arc<PasswordFile>>,
    jwt: Option<JwtAuthenticator>,
    allow_insecure: bool,
    internal: Arc<InternalAuth>,
    access_control: Option<Arc<AccessControl>>,
    /// Password checks running at once (bcrypt is slow on purpose; a flood of wrong
    /// passwords waits here instead of taking every blocking thread).
    checks: Semaphore,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security").field("methods", &self.methods).finish_non_exhaustive()
    }
}

/// Why a request was not admitted.
#[derive(Debug)]
pub struct Refusal {
    status: StatusCode,
    message: String,
    challenge: bool,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], self.message).into_response();
        if self.challenge {
            // Trino's challenges; clients send credentials after them.
            let headers = response.headers_mut();
            headers.append(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"Trino\""));
            headers.append(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"Trino\""));
        }
        response
    }
}

impl Refusal {
    fn unauthorized(message: impl Into<String>) -> Self {
        Self { status: StatusCode::UNAUTHORIZED, message: message.into(), challenge: true }
    }

    fn forbidden(message: impl Into<String>) -> Self {
        Self { status: StatusCode::FORBIDDEN, message: message.into(), challenge: false }
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

/// The requested user (`X-Trino-User`, else Presto's header).
fn requested_user(headers: &HeaderMap) -> Option<String> {
    crate::request_user(headers).map(str::to_string)
}

impl Security {
    /// The authentication a coordinator's configuration asks for; `None` without any.
    pub fn from_config(
        config: &SecurityConfig,
        internal: Arc<InternalAuth>,
        access_control: Option<Arc<AccessControl>>,
    ) -> Result<Option<Arc<Self>>, String> {
        if config.authentication.is_empty() {
            return Ok(None);
        }
        config.validate().map_err(|e| e.to_string())?;
        let passwords = match (&config.password_file, config.authentication.contains(&AuthenticationType::Password)) {
            (Some(path), true) => Some(Arc::new(
                PasswordFile::load(path, config.password_refresh, config.password_cache_size)
                    .map_err(|e| e.to_string())?,
            )),
            _ => None,
        };
        let jwt = match (&config.jwt_key_file, config.authentication.contains(&AuthenticationType::Jwt)) {
            (Some(path), true) => Some(JwtAuthenticator::load(config, path)?),
            _ => None,
        };
        let parallel = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).max(2);
        Ok(Some(Arc::new(Self {
            methods: config.authentication.clone(),
            passwords,
            jwt,
            allow_insecure: config.allow_insecure_over_http,
            internal,
            access_control,
            checks: Semaphore::new(parallel),
        })))
    }

    /// Whether the web UI's login checks passwords (a password authenticator exists).
    pub fn has_passwords(&self) -> bool {
        self.passwords.is_some()
    }

    /// Whether credentials may be taken over a connection that is (`secure`) or is not TLS.
    pub fn transport_allowed(&self, secure: bool) -> Result<(), Refusal> {
        if secure || self.allow_insecure {
            return Ok(());
        }
        Err(Refusal::forbidden(
            "Authentication over plain HTTP is not allowed: use HTTPS (or set http-server.authentication.allow-insecure-over-http=true)",
        ))
    }

    /// Checks a user's password (the web UI's login form, HTTP Basic).
    pub async fn check_password(&self, user: &str, password: &str) -> Result<(), Refusal> {
        let Some(passwords) = self.passwords.clone() else {
            return Err(Refusal::unauthorized("Password authentication is not configured"));
        };
        if !valid_user(user) || password.len() > MAX_CREDENTIALS {
            return Err(Refusal::unauthorized("Access Denied: Invalid credentials"));
        }
        if passwords.accepted_before(user, password) {
            return Ok(());
        }
        let _permit = self.checks.acquire().await.map_err(|_| Refusal::unauthorized("shutting down"))?;
        let (user, password) = (user.to_string(), password.to_string());
        let checked = tokio::task::spawn_blocking(move || passwords.authenticate(&user, &password)).await;
        match checked {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(Refusal::unauthorized(error.to_string())),
            Err(_) => Err(Refusal::unauthorized("Access Denied: the password check failed")),
        }
    }

    /// Authenticates the credentials of a client request: the principal.
    async fn authenticate(&self, headers: &HeaderMap) -> Result<String, Refusal> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(Refusal::unauthorized("Unauthorized: credentials are required (HTTP Basic or a Bearer token)"));
        };
        if value.len() > MAX_CREDENTIALS {
            return Err(Refusal::unauthorized("Unauthorized: credentials too long"));
        }
        let value = value.to_str().map_err(|_| Refusal::unauthorized("Unauthorized: malformed credentials"))?;
        let (scheme, credentials) = value.trim().split_once(' ').unwrap_or((value, ""));
        let credentials = credentials.trim();
        let mut failures = Vec::new();
        for method in &self.methods {
            match method {
                AuthenticationType::Password if scheme.eq_ignore_ascii_case("basic") => {
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(credentials)
                        .ok()
                        .and_then(|bytes| String::from_utf8(bytes).ok());
                    let Some((user, password)) = decoded.as_deref().and_then(|text| text.split_once(':')) else {
                        failures.push("malformed Basic credentials".to_string());
                        continue;
                    };
                    match self.check_password(user, password).await {
                        Ok(()) => return Ok(user.to_string()),
                        Err(refusal) => failures.push(refusal.message),
                    }
                }
                AuthenticationType::Jwt if scheme.eq_ignore_ascii_case("bearer") => {
                    let Some(jwt) = &self.jwt else { continue };
                    match jwt.authenticate(credentials) {
                        Ok(principal) => return Ok(principal),
                        Err(message) => failures.push(message),
                    }
                }
                _ => {}
            }
        }
        if failures.is_empty() {
            failures.push(format!("{scheme} credentials are not accepted here"));
        }
        Err(Refusal::unauthorized(format!("Unauthorized: {}", failures.join("; "))))
    }

    /// Decides who a request is (see the module's documentation), and rewrites its headers
    /// to say so; `secure`: the client's connection is TLS.
    pub async fn admit(
        &self,
        method: &Method,
        path: &str,
        headers: &mut HeaderMap,
        secure: bool,
    ) -> Result<(), Refusal> {
        let signed = self.internal.verify(headers.get(INTERNAL_BEARER_HEADER).and_then(|v| v.to_str().ok())).is_ok();
        let vouched = headers
            .get(PRINCIPAL_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|_| signed)
            .and_then(|token| self.internal.verify_principal(token));
        headers.remove(PRINCIPAL_HEADER);
        let principal = match vouched {
            Some(principal) => principal,
            // Another node's own call.
            None if signed && !headers.contains_key(FORWARDED_BY) => return Ok(()),
            None if public(method, path) => return Ok(()),
            None => {
                self.transport_allowed(secure)?;
                self.authenticate(headers).await?
            }
        };
        let user = requested_user(headers).unwrap_or_else(|| principal.clone());
        if user != principal {
            let allowed =
                self.access_control.as_ref().is_some_and(|control| control.rules().may_impersonate(&principal, &user));
            if !allowed {
                return Err(Refusal::forbidden(format!(
                    "Access Denied: User {principal} cannot impersonate user {user}"
                )));
            }
        }
        let user_value = HeaderValue::from_str(&user).map_err(|_| Refusal::forbidden("invalid user name"))?;
        headers.remove("x-presto-user");
        headers.insert("x-trino-user", user_value);
        if let Ok(token) = HeaderValue::from_str(&self.internal.sign_principal(&principal)) {
            headers.insert(PRINCIPAL_HEADER, token);
        }
        Ok(())
    }
}

/// Paths any client may read without credentials: `/v1/info` (as Trino) and the web UI,
/// whose own login checks passwords. Decided on the path as received: one a URL parser
/// could rewrite (`/ui/../v1/statement`) is never public.
fn public(method: &Method, path: &str) -> bool {
    if crate::relay::check_path(path).is_err() {
        return false;
    }
    path == "/v1/info"
        || (path == "/v1/info/state" && method == Method::GET)
        || path == "/ui"
        || path.starts_with("/ui/")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123";

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn temp_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("flotilla-authn-{}", flotilla_proto::random_hex(8)));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn basic(user: &str, password: &str) -> HeaderValue {
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        HeaderValue::from_str(&format!("Basic {encoded}")).unwrap()
    }

    fn security(dir: &Path, rules: Option<&str>, allow_insecure: bool) -> Arc<Security> {
        let hash = bcrypt::hash("secret", 8).unwrap().replacen("$2b$", "$2y$", 1);
        let passwords = write(dir, "password.db", &format!("alice:{hash}\nproxy:{hash}\n"));
        let control = rules.map(|text| {
            let path = write(dir, "rules.json", text);
            Arc::new(AccessControl::load(&path, None).unwrap())
        });
        let config = SecurityConfig {
            authentication: vec![AuthenticationType::Password],
            password_authenticator: true,
            password_file: Some(passwords),
            allow_insecure_over_http: allow_insecure,
            ..Default::default()
        };
        let internal = Arc::new(InternalAuth::new(SECRET, "c1").unwrap());
        Security::from_config(&config, internal, control).unwrap().unwrap()
    }

    #[tokio::test]
    async fn passwords_users_and_impersonation() {
        let dir = temp_dir();
        let security =
            security(&dir, Some(r#"{"impersonation": [{"original_user": "proxy", "new_user": "bob"}]}"#), false);
        let post = Method::POST;
        let mut headers = HeaderMap::new();
        let refused = security.admit(&post, "/v1/statement", &mut headers, true).await.unwrap_err();
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "no credentials");
        headers.insert(header::AUTHORIZATION, basic("alice", "wrong"));
        let refused = security.admit(&post, "/v1/statement", &mut headers, true).await.unwrap_err();
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.message);
        headers.insert(header::AUTHORIZATION, basic("alice", "secret"));
        let refused = security.admit(&post, "/v1/statement", &mut headers.clone(), false).await.unwrap_err();
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "plain HTTP");
        headers.insert("x-trino-user", HeaderValue::from_static("mallory"));
        headers.insert(PRINCIPAL_HEADER, HeaderValue::from_static("forged"));
        let refused = security.admit(&post, "/v1/statement", &mut headers.clone(), true).await.unwrap_err();
        assert_eq!(refused.message, "Access Denied: User alice cannot impersonate user mallory");
        headers.remove("x-trino-user");
        let mut admitted = headers.clone();
        security.admit(&post, "/v1/statement", &mut admitted, true).await.unwrap();
        assert_eq!(admitted.get("x-trino-user").unwrap(), "alice");
        let vouched = admitted.get(PRINCIPAL_HEADER).unwrap().to_str().unwrap();
        assert_eq!(security.internal.verify_principal(vouched).as_deref(), Some("alice"));
        // The proxy may act as bob, as the rule says.
        let mut proxied = HeaderMap::new();
        proxied.insert(header::AUTHORIZATION, basic("proxy", "secret"));
        proxied.insert("x-presto-user", HeaderValue::from_static("bob"));
        security.admit(&post, "/v1/statement", &mut proxied, true).await.unwrap();
        assert_eq!(proxied.get("x-trino-user").unwrap(), "bob");
        assert!(proxied.get("x-presto-user").is_none());
        // Public paths and malformed credentials.
        security.admit(&Method::GET, "/v1/info", &mut HeaderMap::new(), false).await.unwrap();
        security.admit(&Method::GET, "/ui/login.html", &mut HeaderMap::new(), false).await.unwrap();
        for sneaky in ["/ui/../v1/statement", "/ui/%2e%2e/v1/query", "/ui//v1/query"] {
            assert!(security.admit(&post, sneaky, &mut HeaderMap::new(), true).await.is_err(), "{sneaky}");
        }
        let refused = security.admit(&Method::PUT, "/v1/info/state", &mut HeaderMap::new(), true).await.unwrap_err();
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
        let huge_password = basic("alice", &"x".repeat(MAX_CREDENTIALS));
        let huge_token = format!("Bearer {}", "a".repeat(1 << 20));
        let bad = ["Basic !!!", "Basic", "Bearer x.y.z", "Digest abc", "Basic YWxpY2U=", "Basic Og==", &huge_token];
        for bad in bad.into_iter().map(|b| HeaderValue::from_str(b).unwrap()).chain([huge_password]) {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, bad.clone());
            let refused = security.admit(&post, "/v1/statement", &mut headers, true).await.unwrap_err();
            assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{bad:?}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_relayed_principal_is_believed_only_with_the_clusters_signature() {
        let dir = temp_dir();
        let security = security(&dir, None, true);
        let peer = InternalAuth::new(SECRET, "c2").unwrap();
        let stranger = InternalAuth::new("another-secret-16-chars", "x").unwrap();
        let relayed = |auth: &InternalAuth| {
            let mut headers = HeaderMap::new();
            headers.insert(INTERNAL_BEARER_HEADER, HeaderValue::from_str(&auth.token()).unwrap());
            headers.insert(FORWARDED_BY, HeaderValue::from_static("c2"));
            headers.insert(PRINCIPAL_HEADER, HeaderValue::from_str(&auth.sign_principal("alice")).unwrap());
            headers
        };
        let mut headers = relayed(&peer);
        security.admit(&Method::GET, "/v1/query", &mut headers, false).await.unwrap();
        assert_eq!(headers.get("x-trino-user").unwrap(), "alice");
        let mut forged = relayed(&stranger);
        let refused = security.admit(&Method::GET, "/v1/query", &mut forged, false).await.unwrap_err();
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
        // A gateway's relay (signed, no principal) still needs the client's credentials.
        let mut gateway = relayed(&peer);
        gateway.remove(PRINCIPAL_HEADER);
        assert!(security.admit(&Method::GET, "/v1/query", &mut gateway, false).await.is_err());
        // A node's own call (signed, not a relay) passes as before.
        let mut call = HeaderMap::new();
        call.insert(INTERNAL_BEARER_HEADER, HeaderValue::from_str(&peer.token()).unwrap());
        security.admit(&Method::GET, "/v1/query", &mut call, false).await.unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn jwts_signed_with_a_jwks_key() {
        use jsonwebtoken::{EncodingKey, Header};
        use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        let point = pair.public_key().as_ref();
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let jwks = serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256",
            "x": b64(&point[1..33]), "y": b64(&point[33..65])}]});
        let dir = temp_dir();
        let config = SecurityConfig {
            authentication: vec![AuthenticationType::Jwt],
            jwt_key_file: Some(write(&dir, "jwks.json", &jwks.to_string())),
            jwt_required_issuer: Some("issuer".into()),
            jwt_required_audience: Some("flotilla".into()),
            ..Default::default()
        };
        let internal = Arc::new(InternalAuth::new(SECRET, "c1").unwrap());
        let security = Security::from_config(&config, internal, None).unwrap().unwrap();
        let key = EncodingKey::from_ec_der(pkcs8.as_ref());
        let sign = |claims: serde_json::Value, kid: Option<&str>| {
            let mut header = Header::new(Algorithm::ES256);
            header.kid = kid.map(str::to_string);
            jsonwebtoken::encode(&header, &claims, &key).unwrap()
        };
        let exp = jsonwebtoken::get_current_timestamp() + 300;
        let good = serde_json::json!({"sub": "carol", "iss": "issuer", "aud": "flotilla", "exp": exp});
        let admit = |token: String| {
            let security = security.clone();
            async move {
                let mut headers = HeaderMap::new();
                headers.insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
                security.admit(&Method::POST, "/v1/statement", &mut headers, true).await.map(|()| headers)
            }
        };
        let token = sign(good.clone(), Some("k1"));
        for _ in 0..2 {
            // The second time from the cache of verified tokens.
            let headers = admit(token.clone()).await.unwrap();
            assert_eq!(headers.get("x-trino-user").unwrap(), "carol");
        }
        for (claims, kid) in [
            (serde_json::json!({"sub": "carol", "iss": "other", "aud": "flotilla", "exp": exp}), Some("k1")),
            (serde_json::json!({"sub": "carol", "iss": "issuer", "aud": "else", "exp": exp}), Some("k1")),
            (serde_json::json!({"sub": "carol", "iss": "issuer", "aud": "flotilla", "exp": 1000}), Some("k1")),
            (serde_json::json!({"iss": "issuer", "aud": "flotilla", "exp": exp}), Some("k1")),
            (good.clone(), Some("unknown")),
        ] {
            assert!(admit(sign(claims.clone(), kid)).await.is_err(), "{claims} {kid:?}");
        }
        // Another key, and an HMAC token made with the public key's text, are refused.
        let hmac = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &good,
            &EncodingKey::from_secret(jwks.to_string().as_bytes()),
        )
        .unwrap();
        assert!(admit(hmac).await.is_err());
        let token = sign(good, Some("k1"));
        let tampered = format!("{}x", &token[..token.len() - 1]);
        assert!(admit(tampered).await.is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
