//! Authentication of internal calls with the cluster's shared secret
//! (`internal-communication.shared-secret`, Trino's name).
//!
//! As in Trino, the secret itself never travels: the caller sends a short-lived JWT signed
//! with it (HMAC-SHA256) in the `X-Trino-Internal-Bearer` header, naming the calling node
//! in `sub`. Tokens are cached by the caller and renewed well before they expire, so the
//! cost per call is one HMAC on the receiving side.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// The header internal calls carry their token in.
pub const INTERNAL_BEARER_HEADER: &str = "x-trino-internal-bearer";

/// Shortest secret accepted (Trino asks for a long random string too).
pub const MIN_SECRET_LENGTH: usize = 16;

const TOKEN_LIFETIME: Duration = Duration::from_secs(300);
const RENEW_BEFORE: Duration = Duration::from_secs(60);

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
}

/// The header a relayed client request carries its authenticated principal in.
pub const PRINCIPAL_HEADER: &str = "x-flotilla-principal";
const PRINCIPAL_AUDIENCE: &str = "flotilla-principal";

#[derive(Debug, Serialize, Deserialize)]
struct PrincipalClaims {
    sub: String,
    aud: String,
    exp: u64,
}

/// Why an internal call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InternalAuthError {
    /// The request has no `X-Trino-Internal-Bearer` header.
    #[error("internal request without credentials")]
    Missing,
    /// The token is malformed, expired, or signed with another secret.
    #[error("internal request with invalid credentials: {0}")]
    Invalid(String),
}

/// Signs and checks internal tokens for one node.
pub struct InternalAuth {
    node_id: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    cached: Mutex<Option<(String, SystemTime)>>,
}

impl std::fmt::Debug for InternalAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InternalAuth").field("node_id", &self.node_id).finish_non_exhaustive()
    }
}

impl InternalAuth {
    /// Fails when the secret is too short to be one.
    pub fn new(secret: &str, node_id: &str) -> Result<Self, String> {
        if secret.len() < MIN_SECRET_LENGTH {
            return Err(format!("the shared secret must be at least {MIN_SECRET_LENGTH} characters"));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 30;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Ok(Self {
            node_id: node_id.to_string(),
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
            cached: Mutex::new(None),
        })
    }

    /// A fresh random secret (for a local cluster).
    pub fn generate_secret() -> String {
        crate::random_hex(48)
    }

    /// The token to send, renewed when it is close to expiring.
    pub fn token(&self) -> String {
        let now = SystemTime::now();
        let mut cached = self.cached.lock();
        if let Some((token, expires)) = cached.as_ref() {
            if expires.duration_since(now).map(|left| left > RENEW_BEFORE).unwrap_or(false) {
                return token.clone();
            }
        }
        let expires = now + TOKEN_LIFETIME;
        let exp = expires.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let claims = Claims { sub: self.node_id.clone(), exp };
        // Encoding with an HMAC key cannot fail: the claims always serialize.
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing does not fail");
        *cached = Some((token.clone(), expires));
        token
    }

    /// A token naming the authenticated principal of a client request that this node
    /// relays to another ([`PRINCIPAL_HEADER`]): the receiver believes it only with this
    /// cluster's secret, so a client cannot claim a principal.
    pub fn sign_principal(&self, principal: &str) -> String {
        let exp = (SystemTime::now() + TOKEN_LIFETIME).duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let claims = PrincipalClaims { sub: principal.to_string(), aud: PRINCIPAL_AUDIENCE.to_string(), exp };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing does not fail")
    }

    /// The principal a [`PRINCIPAL_HEADER`] token names, if this cluster signed it.
    pub fn verify_principal(&self, token: &str) -> Option<String> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 30;
        validation.set_audience(&[PRINCIPAL_AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "sub", "aud"]);
        jsonwebtoken::decode::<PrincipalClaims>(token, &self.decoding, &validation).ok().map(|data| data.claims.sub)
    }

    /// Checks a request's header value; returns the calling node's id.
    pub fn verify(&self, header: Option<&str>) -> Result<String, InternalAuthError> {
        let token = header.ok_or(InternalAuthError::Missing)?;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims.sub)
            .map_err(|e| InternalAuthError::Invalid(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123";

    #[test]
    fn a_token_is_accepted_with_the_same_secret_only() {
        let caller = InternalAuth::new(SECRET, "w1").unwrap();
        let receiver = InternalAuth::new(SECRET, "rm1").unwrap();
        let token = caller.token();
        assert_eq!(receiver.verify(Some(&token)).unwrap(), "w1");
        assert_eq!(caller.token(), token, "tokens are cached");
        let principal = caller.sign_principal("alice");
        assert_eq!(receiver.verify_principal(&principal).as_deref(), Some("alice"));
        assert!(receiver.verify(Some(&principal)).is_err(), "a principal token is no internal bearer");
        assert!(receiver.verify_principal(&token).is_none(), "an internal bearer names no principal");
        let other = InternalAuth::new("another-secret-of-16+", "x").unwrap();
        assert!(other.verify_principal(&principal).is_none());

        let other = InternalAuth::new("another-secret-of-length", "rm2").unwrap();
        assert!(matches!(other.verify(Some(&token)), Err(InternalAuthError::Invalid(_))));
        assert_eq!(receiver.verify(None), Err(InternalAuthError::Missing));
        assert!(matches!(receiver.verify(Some("garbage")), Err(InternalAuthError::Invalid(_))));
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(InternalAuth::new("short", "n").is_err());
        assert!(InternalAuth::generate_secret().len() >= MIN_SECRET_LENGTH);
    }
}
