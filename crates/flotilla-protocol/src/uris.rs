//! The base URI clients should use for follow-up requests: from `X-Forwarded-Proto/Host/Port`
//! when they are trusted (`http-server.process-forwarded`, as in Trino, or a relay signed by
//! another node of the cluster), else the request's own `Host`, so `nextUri` keeps the client
//! on the address it used (a load balancer, a gateway).

use flotilla_proto::QueryId;
use http::HeaderMap;

/// Set by Flotilla's HTTP server on a request that came over TLS (and removed from any
/// other): the URIs handed back then say `https`.
pub const CLIENT_TLS_HEADER: &str = "x-flotilla-client-tls";

/// Builds `nextUri` and `infoUri` for one request.
#[derive(Debug, Clone)]
pub struct QueryUris {
    base: String,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(',').next().unwrap_or(v).trim())
        .filter(|v| !v.is_empty())
}

/// A host (with optional port) made only of characters hosts can have, so nothing a client
/// sends can inject into the URIs we hand back.
fn valid_host(host: &str) -> bool {
    !host.is_empty() && host.len() <= 255 && host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
}

/// A request header the URIs cannot be built from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {header} '{value}'")]
pub struct InvalidHeader {
    pub header: &'static str,
    pub value: String,
}

impl QueryUris {
    /// From request headers; `fallback_host` is this server's own address. `X-Forwarded-*`
    /// are ignored unless `trust_forwarded`.
    pub fn from_headers(
        headers: &HeaderMap,
        fallback_host: &str,
        trust_forwarded: bool,
    ) -> Result<Self, InvalidHeader> {
        let forwarded = |name: &str| if trust_forwarded { header(headers, name) } else { None };
        let scheme = match forwarded("x-forwarded-proto") {
            Some(proto) if proto.eq_ignore_ascii_case("https") => "https",
            Some(proto) if proto.eq_ignore_ascii_case("http") => "http",
            Some(other) => return Err(InvalidHeader { header: "X-Forwarded-Proto", value: other.to_string() }),
            None if headers.contains_key(CLIENT_TLS_HEADER) => "https",
            None => "http",
        };
        let host = forwarded("x-forwarded-host").or_else(|| header(headers, "host")).unwrap_or(fallback_host);
        if !valid_host(host) {
            return Err(InvalidHeader { header: "host", value: host.to_string() });
        }
        let host = match forwarded("x-forwarded-port") {
            Some(port) => {
                let port: u16 =
                    port.parse().map_err(|_| InvalidHeader { header: "X-Forwarded-Port", value: port.to_string() })?;
                let without_port = match host.rsplit_once(':') {
                    Some((name, maybe_port))
                        if !host.ends_with(']') && maybe_port.bytes().all(|b| b.is_ascii_digit()) =>
                    {
                        name
                    }
                    _ => host,
                };
                format!("{without_port}:{port}")
            }
            None => host.to_string(),
        };
        Ok(Self { base: format!("{scheme}://{host}") })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// `rows`: how many rows the client has received when it follows this URI; carried
    /// (as `?rows=N`, when not 0) so a coordinator that adopts the query after its owner
    /// died knows how many to skip.
    pub fn next_uri(&self, phase: &str, id: &QueryId, slug: &str, token: u64, rows: u64) -> String {
        match rows {
            0 => format!("{}/v1/statement/{phase}/{id}/{slug}/{token}", self.base),
            rows => format!("{}/v1/statement/{phase}/{id}/{slug}/{token}?rows={rows}", self.base),
        }
    }

    pub fn info_uri(&self, id: &QueryId) -> String {
        format!("{}/v1/query/{id}", self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn trusted_forwarded_headers_win_over_host() {
        let forwarded = headers(&[
            ("host", "10.0.0.1:8080"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "trino.example.com"),
            ("x-forwarded-port", "443"),
        ]);
        let uris = QueryUris::from_headers(&forwarded, "127.0.0.1:8080", true).unwrap();
        assert_eq!(uris.base(), "https://trino.example.com:443");
        let uris =
            QueryUris::from_headers(&headers(&[("host", "lb:9000"), ("x-forwarded-port", "8443")]), "x", true).unwrap();
        assert_eq!(uris.base(), "http://lb:8443");
        let uris = QueryUris::from_headers(&headers(&[]), "127.0.0.1:8080", true).unwrap();
        assert_eq!(uris.base(), "http://127.0.0.1:8080");
        // Untrusted (Trino's default): a client cannot point nextUri elsewhere.
        let uris = QueryUris::from_headers(&forwarded, "127.0.0.1:8080", false).unwrap();
        assert_eq!(uris.base(), "http://10.0.0.1:8080");
    }

    #[test]
    fn a_request_that_came_over_tls_gets_https_uris() {
        let uris = QueryUris::from_headers(&headers(&[("host", "db:8443"), (CLIENT_TLS_HEADER, "1")]), "x", false);
        assert_eq!(uris.unwrap().base(), "https://db:8443");
        // A trusted proxy in front says what the client used.
        let behind = headers(&[("host", "db:8443"), (CLIENT_TLS_HEADER, "1"), ("x-forwarded-proto", "http")]);
        assert_eq!(QueryUris::from_headers(&behind, "x", true).unwrap().base(), "http://db:8443");
    }

    #[test]
    fn hostile_hosts_are_rejected() {
        assert!(QueryUris::from_headers(&headers(&[("host", "evil.com/path?x=")]), "x", false).is_err());
        assert!(QueryUris::from_headers(&headers(&[("x-forwarded-proto", "gopher")]), "x", true).is_err());
        assert!(QueryUris::from_headers(&headers(&[("x-forwarded-port", "99999")]), "x", true).is_err());
        assert!(QueryUris::from_headers(&headers(&[("x-forwarded-port", "99999")]), "x", false).is_ok());
    }
}
