//! Settings every role shares: how a setting is declared, how a bad one is reported, and
//! the node-level settings (identity, labels, discovery, internal secret) that every
//! process of a cluster reads from `node.properties` / `config.properties`.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::parse_duration;

/// One setting of `config.properties` / `node.properties`, declared once; the README's
/// configuration table lists the same declarations.
#[derive(Debug)]
pub struct Setting {
    pub name: &'static str,
    pub default: &'static str,
    /// Which roles read it.
    pub roles: &'static str,
    pub doc: &'static str,
}

/// A setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A key no role knows.
    #[error("{file}: unknown property '{key}'")]
    UnknownKey { file: String, key: String },
    /// A value of the wrong form.
    #[error("{file}: invalid value '{value}' for {key}: {message}")]
    InvalidValue { file: String, key: String, value: String, message: String },
    /// Settings that do not work together.
    #[error("invalid configuration: {0}")]
    Inconsistent(String),
}

impl ConfigError {
    pub fn invalid(file: &str, key: &str, value: &str, message: impl Into<String>) -> Self {
        ConfigError::InvalidValue {
            file: file.to_string(),
            key: key.to_string(),
            value: value.to_string(),
            message: message.into(),
        }
    }
}

/// Parses `value` with `FromStr`, reporting the key on failure.
pub fn parse_value<T: std::str::FromStr>(file: &str, key: &str, value: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e: T::Err| ConfigError::invalid(file, key, value, e.to_string()))
}

/// Parses a Trino duration (`500ms`, `5s`, `1m`), reporting the key on failure.
pub fn parse_duration_value(file: &str, key: &str, value: &str) -> Result<Duration, ConfigError> {
    parse_duration(value).map_err(|message| ConfigError::invalid(file, key, value, message))
}

/// A host name, an IPv4 address or an IPv6 address (without brackets).
pub fn valid_host(text: &str) -> bool {
    if text.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    !text.is_empty()
        && text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl NodeConfig {
    /// The URL other nodes reach a server of this node at, bound to `bound`: its port, at
    /// `node.internal-address`, else the bound address unless it is a wildcard (0.0.0.0,
    /// ::), else the host's primary address.
    pub fn announced_url(&self, bound: std::net::SocketAddr) -> String {
        let host = match &self.internal_address {
            Some(host) => host.clone(),
            None if bound.ip().is_unspecified() => primary_address().to_string(),
            None => bound.ip().to_string(),
        };
        match host.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V6(v6)) => format!("http://[{v6}]:{}", bound.port()),
            _ => format!("http://{host}:{}", bound.port()),
        }
    }
}

/// The address this host's traffic leaves from (the interface of its default route), found
/// once; loopback when the host has no route out (then set `node.internal-address`).
pub fn primary_address() -> std::net::IpAddr {
    static PRIMARY: std::sync::OnceLock<std::net::IpAddr> = std::sync::OnceLock::new();
    *PRIMARY.get_or_init(|| {
        // Connecting a UDP socket sends nothing: it only picks the route and its source.
        let found = std::net::UdpSocket::bind(("0.0.0.0", 0))
            .and_then(|socket| socket.connect(("192.0.2.1", 9)).map(|_| socket))
            .and_then(|socket| socket.local_addr())
            .map(|address| address.ip())
            .ok()
            .filter(|ip| !ip.is_unspecified());
        found.unwrap_or_else(|| {
            tracing::warn!("no route out of this host: announcing 127.0.0.1; set node.internal-address");
            std::net::IpAddr::from([127, 0, 0, 1])
        })
    })
}

/// Node-level settings, read by every role.
pub const NODE_SETTINGS: &[Setting] = &[
    Setting {
        name: "coordinator",
        default: "(by subcommand)",
        roles: "all",
        doc: "Accepted for Trino compatibility; the subcommand decides the role, and `coordinator=false` is refused by `flotilla coordinator`",
    },
    Setting {
        name: "http-server.http.port",
        default: "8080",
        roles: "all",
        doc: "Port of the node's HTTP server (client API on coordinators, internal API on every role)",
    },
    Setting {
        name: "node.environment",
        default: "flotilla",
        roles: "all",
        doc: "Environment name; nodes of another environment are refused by the resource managers",
    },
    Setting { name: "node.id", default: "(random)", roles: "all", doc: "Node id, unique in the cluster and kept across restarts" },
    Setting {
        name: "log.format",
        default: "text",
        roles: "all",
        doc: "`text` (one human-readable line per event on stderr) or `json` (one JSON object per event: timestamp, level, target, fields)",
    },
    Setting {
        name: "node.internal-address",
        default: "(the bind address; with 0.0.0.0 or ::, the host's primary address)",
        roles: "all",
        doc: "Host name or IP address other nodes reach this one at: every URL the node announces (HTTP and the worker data port) uses it",
    },
    Setting { name: "node.warehouse", default: "default", roles: "worker", doc: "Warehouse the worker belongs to" },
    Setting {
        name: "node.worker-group",
        default: "default",
        roles: "worker",
        doc: "Worker group (inside its warehouse) the worker belongs to",
    },
    Setting {
        name: "discovery.uri",
        default: "(none)",
        roles: "all",
        doc: "Resource manager URL(s), comma-separated, or one load-balanced URL; a coordinator without it runs its own embedded resource manager",
    },
    Setting {
        name: "discovery.heartbeat-interval",
        default: "1s",
        roles: "all",
        doc: "How often a node heartbeats every resource manager it knows",
    },
    Setting {
        name: "internal-communication.shared-secret",
        default: "(none)",
        roles: "all",
        doc: "Secret every internal call is signed with; required once `discovery.uri` is set",
    },
    Setting {
        name: "internal-communication.https.required",
        default: "false",
        roles: "all",
        doc: "TLS between nodes; not supported yet (true is refused): internal calls are plain HTTP, signed with the shared secret",
    },
    Setting {
        name: "access-control.admin-users",
        default: "(none)",
        roles: "all",
        doc: "Without access-control.name=file: users (comma-separated) who may kill or cancel any query (REST, web UI, system.runtime.kill_query) and drain a node (PUT /v1/info/state); others only their own queries, and nodes only with the internal secret. With it, the rules decide",
    },
    Setting {
        name: "shutdown.grace-period",
        default: "2m",
        roles: "coordinator, worker",
        doc: "Longest a draining node (SIGTERM, PUT /v1/info/state \"SHUTTING_DOWN\") waits for its work: a coordinator for its queries (then leaves them to be adopted by another), a worker for its running tasks",
    },
    Setting {
        name: "memory.allocator-purge-delay",
        default: "1m",
        roles: "all",
        doc: "How long memory the process freed stays with its allocator (mimalloc) for reuse before it is returned to the operating system (at most 1h; 0s: at once). Memory returned is zeroed by the kernel when taken again, which costs a query that needs it anew; kept memory counts in the process's resident size",
    },
    Setting {
        name: "http-server.http.enabled",
        default: "true",
        roles: "all",
        doc: "Serve plain HTTP; it cannot be turned off yet (internal calls use it), so false is refused",
    },
    Setting {
        name: "http-server.https.enabled",
        default: "false",
        roles: "coordinator, gateway",
        doc: "Also serve clients over HTTPS (TLS 1.2/1.3, rustls) on http-server.https.port; nextUri then says https for them",
    },
    Setting {
        name: "http-server.https.port",
        default: "8443",
        roles: "coordinator, gateway",
        doc: "Port of the HTTPS server (0: any free one)",
    },
    Setting {
        name: "http-server.https.keystore.path",
        default: "(none)",
        roles: "coordinator, gateway",
        doc: "PEM file with the server's certificate chain (its own first) and its unencrypted private key; required with https",
    },
    Setting {
        name: "http-server.process-forwarded",
        default: "false",
        roles: "coordinator, gateway",
        doc: "Trust X-Forwarded-Proto/Host/Port from clients (set it behind a proxy that sets them); relays between Flotilla nodes are trusted by their internal signature",
    },
    Setting {
        name: "http-server.authentication.type",
        default: "(none)",
        roles: "coordinator",
        doc: "How clients authenticate, comma-separated and tried in order: PASSWORD (HTTP Basic, checked against the password authenticator) and/or JWT (a Bearer token); none: X-Trino-User is believed",
    },
    Setting {
        name: "http-server.authentication.allow-insecure-over-http",
        default: "false",
        roles: "coordinator",
        doc: "Accept credentials over plain HTTP; without it, an authenticated cluster serves clients only over HTTPS (plain HTTP answers 403)",
    },
    Setting {
        name: "http-server.authentication.jwt.key-file",
        default: "(none)",
        roles: "coordinator",
        doc: "PEM public key (RSA or EC) or JWKS JSON file that JWTs must be signed with; required with JWT",
    },
    Setting {
        name: "http-server.authentication.jwt.required-issuer",
        default: "(none)",
        roles: "coordinator",
        doc: "The `iss` a JWT must carry",
    },
    Setting {
        name: "http-server.authentication.jwt.required-audience",
        default: "(none)",
        roles: "coordinator",
        doc: "The `aud` a JWT must carry",
    },
    Setting {
        name: "http-server.authentication.jwt.principal-field",
        default: "sub",
        roles: "coordinator",
        doc: "The JWT claim that names the principal",
    },
    Setting {
        name: "password-authenticator.name",
        default: "(none)",
        roles: "coordinator",
        doc: "`file` (in etc/password-authenticator.properties, as Trino): passwords from file.password-file",
    },
    Setting {
        name: "file.password-file",
        default: "(none)",
        roles: "coordinator",
        doc: "Trino's password file: `user:hash` lines, bcrypt ($2y$, cost >= 8) or PBKDF2 (iterations:salt:hash, hex)",
    },
    Setting {
        name: "file.refresh-period",
        default: "5s",
        roles: "coordinator",
        doc: "How often the password file is checked for changes",
    },
    Setting {
        name: "file.auth-token-cache.max-size",
        default: "1000",
        roles: "coordinator",
        doc: "Successful password checks remembered (bcrypt is slow on purpose)",
    },
    Setting {
        name: "access-control.name",
        default: "(none)",
        roles: "all",
        doc: "`file` (in etc/access-control.properties, as Trino): Trino's JSON rules in security.config-file decide who reads, writes, sees, kills and impersonates what; none: access-control.admin-users only",
    },
    Setting {
        name: "security.config-file",
        default: "(none)",
        roles: "all",
        doc: "The access control rules file (Trino's file-based system access control JSON)",
    },
    Setting {
        name: "security.refresh-period",
        default: "(none)",
        roles: "all",
        doc: "How often the rules file is re-read; without it, it is read once at start",
    },
];

/// `memory.allocator-purge-delay` by default. mimalloc's own (1 s) returns what a query
/// freed before the next query takes it again; the kernel then zeroes every page anew (2 MB
/// at a time where transparent huge pages are on): up to a fifth of a coordinator's CPU in
/// TPC-H sf1 runs (`clear_page_erms`); the `flotilla` binary's `allocator` module.
pub const DEFAULT_ALLOCATOR_PURGE_DELAY: Duration = Duration::from_secs(60);
/// The longest `memory.allocator-purge-delay` accepted.
pub const MAX_ALLOCATOR_PURGE_DELAY: Duration = Duration::from_secs(3600);

/// The node-level settings.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub http_port: u16,
    /// `node.internal-address`.
    pub internal_address: Option<String>,
    /// `log.format=json`.
    pub json_logs: bool,
    pub environment: String,
    pub node_id: Option<String>,
    pub warehouse: String,
    pub worker_group: String,
    pub discovery_uris: Vec<String>,
    pub heartbeat_interval: Duration,
    pub shared_secret: Option<String>,
    /// `coordinator=` as written, if it was.
    pub coordinator_flag: Option<bool>,
    /// `access-control.admin-users`.
    pub admin_users: Vec<String>,
    /// `http-server.process-forwarded`.
    pub process_forwarded: bool,
    /// `shutdown.grace-period`.
    pub shutdown_grace_period: Duration,
    /// `memory.allocator-purge-delay`.
    pub allocator_purge_delay: Duration,
    /// `http-server.https.enabled`.
    pub https_enabled: bool,
    /// `http-server.https.port`.
    pub https_port: u16,
    /// `http-server.https.keystore.path`.
    pub https_keystore: Option<std::path::PathBuf>,
    /// Client authentication and access control.
    pub security: SecurityConfig,
}

/// A client authentication method (`http-server.authentication.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthenticationType {
    Password,
    Jwt,
}

/// Client authentication and access control settings.
#[derive(Debug, Clone)]
pub struct SecurityConfig {
    pub authentication: Vec<AuthenticationType>,
    pub allow_insecure_over_http: bool,
    pub jwt_key_file: Option<std::path::PathBuf>,
    pub jwt_required_issuer: Option<String>,
    pub jwt_required_audience: Option<String>,
    pub jwt_principal_field: String,
    /// `password-authenticator.name` was `file`.
    pub password_authenticator: bool,
    pub password_file: Option<std::path::PathBuf>,
    pub password_refresh: Duration,
    pub password_cache_size: usize,
    /// `access-control.name` was `file`.
    pub access_control: bool,
    pub access_control_file: Option<std::path::PathBuf>,
    pub access_control_refresh: Option<Duration>,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            authentication: Vec::new(),
            allow_insecure_over_http: false,
            jwt_key_file: None,
            jwt_required_issuer: None,
            jwt_required_audience: None,
            jwt_principal_field: "sub".into(),
            password_authenticator: false,
            password_file: None,
            password_refresh: Duration::from_secs(5),
            password_cache_size: 1000,
            access_control: false,
            access_control_file: None,
            access_control_refresh: None,
        }
    }
}

impl SecurityConfig {
    /// Checks that the settings work together (before anything starts).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let inconsistent = |m: &str| Err(ConfigError::Inconsistent(m.to_string()));
        if self.authentication.contains(&AuthenticationType::Password) {
            if !self.password_authenticator {
                return inconsistent("http-server.authentication.type=PASSWORD needs etc/password-authenticator.properties with password-authenticator.name=file");
            }
            if self.password_file.is_none() {
                return inconsistent("password-authenticator.name=file needs file.password-file");
            }
        }
        if self.authentication.contains(&AuthenticationType::Jwt) && self.jwt_key_file.is_none() {
            return inconsistent("http-server.authentication.type=JWT needs http-server.authentication.jwt.key-file");
        }
        if self.access_control && self.access_control_file.is_none() {
            return inconsistent("access-control.name=file needs security.config-file");
        }
        Ok(())
    }

    /// Applies one property; `Ok(false)` when the key is not a security setting.
    fn apply(&mut self, file: &str, key: &str, value: &str) -> Result<bool, ConfigError> {
        let invalid = |message: &str| ConfigError::invalid(file, key, value, message);
        let path = |value: &str| -> Result<std::path::PathBuf, ConfigError> {
            match value.trim() {
                "" => Err(invalid("give a file's path")),
                path => Ok(path.into()),
            }
        };
        let text = |value: &str| match value.trim() {
            "" => Err(invalid("must not be empty")),
            text => Ok(text.to_string()),
        };
        match key {
            "http-server.authentication.type" => {
                let mut types = Vec::new();
                for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    let kind = match name.to_ascii_uppercase().as_str() {
                        "PASSWORD" => AuthenticationType::Password,
                        "JWT" => AuthenticationType::Jwt,
                        "CERTIFICATE" | "KERBEROS" | "OAUTH2" | "HEADER" => {
                            return Err(invalid(&format!("{name} authentication is not supported (PASSWORD, JWT)")))
                        }
                        _ => return Err(invalid(&format!("unknown authentication type {name} (PASSWORD, JWT)"))),
                    };
                    if !types.contains(&kind) {
                        types.push(kind);
                    }
                }
                self.authentication = types;
            }
            "http-server.authentication.allow-insecure-over-http" => {
                self.allow_insecure_over_http = parse_value(file, key, value)?
            }
            "http-server.authentication.jwt.key-file" => self.jwt_key_file = Some(path(value)?),
            "http-server.authentication.jwt.required-issuer" => self.jwt_required_issuer = Some(text(value)?),
            "http-server.authentication.jwt.required-audience" => self.jwt_required_audience = Some(text(value)?),
            "http-server.authentication.jwt.principal-field" => self.jwt_principal_field = text(value)?,
            "password-authenticator.name" => match value.trim() {
                "file" => self.password_authenticator = true,
                other => return Err(invalid(&format!("unsupported password authenticator {other} (file)"))),
            },
            "file.password-file" => self.password_file = Some(path(value)?),
            "file.refresh-period" => self.password_refresh = parse_duration_value(file, key, value)?,
            "file.auth-token-cache.max-size" => self.password_cache_size = parse_value(file, key, value)?,
            "access-control.name" => match value.trim() {
                "file" => self.access_control = true,
                "default" | "allow-all" => self.access_control = false,
                other => return Err(invalid(&format!("unsupported access control {other} (file)"))),
            },
            "security.config-file" => self.access_control_file = Some(path(value)?),
            "security.refresh-period" => {
                let period = parse_duration_value(file, key, value)?;
                if period.is_zero() {
                    return Err(invalid("must be more than 0"));
                }
                self.access_control_refresh = Some(period);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// The HTTPS server's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpsConfig {
    pub port: u16,
    pub keystore: std::path::PathBuf,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            http_port: 8080,
            environment: "flotilla".into(),
            node_id: None,
            warehouse: "default".into(),
            worker_group: "default".into(),
            internal_address: None,
            json_logs: false,
            discovery_uris: Vec::new(),
            heartbeat_interval: Duration::from_secs(1),
            shared_secret: None,
            coordinator_flag: None,
            admin_users: Vec::new(),
            process_forwarded: false,
            shutdown_grace_period: Duration::from_secs(120),
            allocator_purge_delay: DEFAULT_ALLOCATOR_PURGE_DELAY,
            https_enabled: false,
            https_port: 8443,
            https_keystore: None,
            security: SecurityConfig::default(),
        }
    }
}

/// Whether `value` is a valid node id, warehouse or worker group name.
pub fn valid_label(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// Splits and checks a `discovery.uri` value.
pub fn parse_discovery_uris(value: &str) -> Result<Vec<String>, String> {
    let mut uris = Vec::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some(rest) = part.strip_prefix("http://").or_else(|| part.strip_prefix("https://")) else {
            return Err(format!("'{part}' is not an http:// or https:// URL"));
        };
        if rest.is_empty() || rest.starts_with('/') {
            return Err(format!("'{part}' has no host"));
        }
        uris.push(part.trim_end_matches('/').to_string());
    }
    if uris.is_empty() {
        return Err("no URL given".into());
    }
    Ok(uris)
}

impl NodeConfig {
    /// The HTTPS server to run, if `http-server.https.enabled`.
    pub fn https(&self) -> Result<Option<HttpsConfig>, ConfigError> {
        if !self.https_enabled {
            return Ok(None);
        }
        let Some(keystore) = self.https_keystore.clone() else {
            return Err(ConfigError::Inconsistent(
                "http-server.https.enabled=true needs http-server.https.keystore.path (a PEM file with the certificate and key)"
                    .into(),
            ));
        };
        Ok(Some(HttpsConfig { port: self.https_port, keystore }))
    }

    /// Applies one property; `Ok(false)` when the key is not a node setting.
    pub fn apply(&mut self, file: &str, key: &str, value: &str) -> Result<bool, ConfigError> {
        let invalid = |message: &str| ConfigError::invalid(file, key, value, message);
        match key {
            "coordinator" => self.coordinator_flag = Some(parse_value(file, key, value)?),
            "http-server.http.port" => self.http_port = parse_value(file, key, value)?,
            "node.environment" => {
                let valid = !value.is_empty()
                    && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                if !valid {
                    return Err(invalid("use lowercase letters, digits and '_'"));
                }
                self.environment = value.to_string();
            }
            "log.format" => match value {
                "text" => self.json_logs = false,
                "json" => self.json_logs = true,
                _ => return Err(invalid("`text` or `json`")),
            },
            "node.internal-address" => {
                if !valid_host(value) {
                    return Err(invalid("a host name or an IP address (no scheme, port or path)"));
                }
                self.internal_address = Some(value.to_string());
            }
            "node.id" => {
                if !valid_label(value) {
                    return Err(invalid("use letters, digits, '-', '_' and '.'"));
                }
                self.node_id = Some(value.to_string());
            }
            "node.warehouse" | "node.worker-group" => {
                if !valid_label(value) {
                    return Err(invalid("use letters, digits, '-', '_' and '.'"));
                }
                if key == "node.warehouse" {
                    self.warehouse = value.to_string();
                } else {
                    self.worker_group = value.to_string();
                }
            }
            "discovery.uri" => self.discovery_uris = parse_discovery_uris(value).map_err(|m| invalid(&m))?,
            "discovery.heartbeat-interval" => {
                let interval = parse_duration_value(file, key, value)?;
                if interval < Duration::from_millis(50) || interval > Duration::from_secs(60) {
                    return Err(invalid("must be between 50ms and 60s"));
                }
                self.heartbeat_interval = interval;
            }
            "internal-communication.shared-secret" => {
                if value.len() < crate::internal_auth::MIN_SECRET_LENGTH {
                    return Err(ConfigError::InvalidValue {
                        file: file.to_string(),
                        key: key.to_string(),
                        value: "(hidden)".to_string(),
                        message: format!("must be at least {} characters", crate::internal_auth::MIN_SECRET_LENGTH),
                    });
                }
                self.shared_secret = Some(value.to_string());
            }
            "access-control.admin-users" => {
                let users: Vec<String> =
                    value.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_string).collect();
                if users.iter().any(|u| u.len() > crate::MAX_USER_LENGTH) {
                    return Err(invalid(&format!("user names are at most {} characters", crate::MAX_USER_LENGTH)));
                }
                self.admin_users = users;
            }
            "http-server.process-forwarded" => self.process_forwarded = parse_value(file, key, value)?,
            "internal-communication.https.required" => {
                if parse_value::<bool>(file, key, value)? {
                    return Err(invalid(
                        "TLS between nodes is not supported yet: internal calls are plain HTTP, signed with the shared secret",
                    ));
                }
            }
            "http-server.http.enabled" => {
                if !parse_value::<bool>(file, key, value)? {
                    return Err(invalid("plain HTTP cannot be turned off yet: internal calls use it"));
                }
            }
            "http-server.https.enabled" => self.https_enabled = parse_value(file, key, value)?,
            "http-server.https.port" => self.https_port = parse_value(file, key, value)?,
            "http-server.https.keystore.path" => {
                if value.trim().is_empty() {
                    return Err(invalid("give the PEM file's path"));
                }
                self.https_keystore = Some(value.trim().into());
            }
            "shutdown.grace-period" => self.shutdown_grace_period = parse_duration_value(file, key, value)?,
            "memory.allocator-purge-delay" => {
                let delay = parse_duration_value(file, key, value)?;
                if delay > MAX_ALLOCATOR_PURGE_DELAY {
                    return Err(invalid("at most 1h"));
                }
                self.allocator_purge_delay = delay;
            }
            _ => return self.security.apply(file, key, value),
        }
        Ok(true)
    }

    /// Applies every property of a file, rejecting keys that neither this nor `other`
    /// (the role's own settings) knows.
    pub fn apply_all(
        &mut self,
        file: &str,
        properties: &BTreeMap<String, String>,
        mut other: impl FnMut(&str, &str) -> Result<bool, ConfigError>,
    ) -> Result<(), ConfigError> {
        for (key, value) in properties {
            if !self.apply(file, key, value)? && !other(key, value)? {
                return Err(ConfigError::UnknownKey { file: file.to_string(), key: key.clone() });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announced_urls_use_the_internal_address_else_a_routable_bind_address() {
        let mut config = NodeConfig::default();
        let bound = |text: &str| text.parse::<std::net::SocketAddr>().unwrap();
        assert_eq!(config.announced_url(bound("127.0.0.1:8080")), "http://127.0.0.1:8080");
        assert_eq!(config.announced_url(bound("[::1]:9")), "http://[::1]:9");
        // A wildcard bind announces the host's primary address, never the wildcard.
        let wildcard = config.announced_url(bound("0.0.0.0:8080"));
        assert!(!wildcard.contains("0.0.0.0") && wildcard.ends_with(":8080"), "{wildcard}");
        config
            .apply_all(
                "t",
                &BTreeMap::from([("node.internal-address".into(), "worker-3.flotilla.svc".into())]),
                |_, _| Ok(false),
            )
            .unwrap();
        assert_eq!(config.announced_url(bound("0.0.0.0:8080")), "http://worker-3.flotilla.svc:8080");
        config.internal_address = Some("fd00::7".into());
        assert_eq!(config.announced_url(bound("0.0.0.0:9000")), "http://[fd00::7]:9000");
        for bad in ["", "http://a", "a:80", "a/b", "-a", "a..b", "a b", &"x".repeat(64), "[::1]"] {
            let properties = BTreeMap::from([("node.internal-address".to_string(), bad.to_string())]);
            assert!(NodeConfig::default().apply_all("t", &properties, |_, _| Ok(false)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn discovery_uris_are_split_and_checked() {
        assert_eq!(
            parse_discovery_uris("http://a:1, http://b:2/").unwrap(),
            vec!["http://a:1".to_string(), "http://b:2".to_string()]
        );
        assert!(parse_discovery_uris("a:1").is_err());
        assert!(parse_discovery_uris(" , ").is_err());
        assert!(parse_discovery_uris("http://").is_err());
    }

    #[test]
    fn node_settings_are_validated() {
        let mut config = NodeConfig::default();
        assert!(config.apply("f", "node.warehouse", "etl").unwrap());
        assert_eq!(config.warehouse, "etl");
        assert!(!config.apply("f", "query.max-history", "1").unwrap());
        assert!(config.apply("f", "node.worker-group", "a b").is_err());
        assert!(config.apply("f", "internal-communication.https.required", "false").unwrap());
        let refused = config.apply("f", "internal-communication.https.required", "true").unwrap_err();
        assert!(refused.to_string().contains("not supported"), "{refused}");
        assert!(config.apply("f", "http-server.authentication.type", "PASSWORD, jwt").unwrap());
        assert_eq!(config.security.authentication, [AuthenticationType::Password, AuthenticationType::Jwt]);
        assert!(config
            .apply("f", "http-server.authentication.type", "KERBEROS")
            .unwrap_err()
            .to_string()
            .contains("not supported"));
        assert!(config.apply("f", "security.refresh-period", "0s").is_err());
        assert!(config.security.validate().is_err(), "PASSWORD without a password authenticator");
        assert!(config.apply("f", "password-authenticator.name", "ldap").is_err());
        let error = config.apply("f", "internal-communication.shared-secret", "short").unwrap_err();
        assert!(!error.to_string().contains("short"), "the secret is not echoed: {error}");
        assert!(config.apply("f", "discovery.heartbeat-interval", "10ms").is_err());
        assert!(config.apply("f", "coordinator", "maybe").is_err());
        assert_eq!(config.allocator_purge_delay, Duration::from_secs(60));
        assert!(config.apply("f", "memory.allocator-purge-delay", "0s").unwrap());
        assert_eq!(config.allocator_purge_delay, Duration::ZERO);
        assert!(config.apply("f", "memory.allocator-purge-delay", "5m").unwrap());
        assert_eq!(config.allocator_purge_delay, Duration::from_secs(300));
        for bad in ["2h", "-1s", "soon", "99999999999999999999d"] {
            assert!(config.apply("f", "memory.allocator-purge-delay", bad).is_err(), "{bad}");
        }
        assert_eq!(config.allocator_purge_delay, Duration::from_secs(300), "a refused value changes nothing");
    }

    #[test]
    fn https_needs_a_keystore_and_plain_http_stays_on() {
        let mut config = NodeConfig::default();
        assert_eq!(config.https(), Ok(None));
        config.apply("f", "http-server.https.enabled", "true").unwrap();
        assert!(matches!(config.https(), Err(ConfigError::Inconsistent(_))));
        config.apply("f", "http-server.https.keystore.path", "/etc/flotilla/server.pem").unwrap();
        config.apply("f", "http-server.https.port", "0").unwrap();
        let https = config.https().unwrap().unwrap();
        assert_eq!((https.port, https.keystore.to_str()), (0, Some("/etc/flotilla/server.pem")));
        assert!(config.apply("f", "http-server.https.port", "70000").is_err());
        assert!(config.apply("f", "http-server.http.enabled", "false").is_err());
        assert!(config.apply("f", "http-server.http.enabled", "true").is_ok());
    }
}
