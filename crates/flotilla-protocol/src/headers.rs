//! The `X-Trino-*` request headers a client sends with every statement, and the response
//! headers through which a statement changes the client's session.

use std::collections::BTreeMap;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

pub const USER: &str = "x-trino-user";
pub const ORIGINAL_USER: &str = "x-trino-original-user";
pub const SOURCE: &str = "x-trino-source";
pub const CATALOG: &str = "x-trino-catalog";
pub const SCHEMA: &str = "x-trino-schema";
pub const TIME_ZONE: &str = "x-trino-time-zone";
pub const LANGUAGE: &str = "x-trino-language";
pub const SESSION: &str = "x-trino-session";
pub const CLIENT_TAGS: &str = "x-trino-client-tags";
pub const ROUTING_GROUP: &str = "x-trino-routing-group";
pub const CLIENT_INFO: &str = "x-trino-client-info";
pub const CLIENT_CAPABILITIES: &str = "x-trino-client-capabilities";
pub const PREPARED_STATEMENT: &str = "x-trino-prepared-statement";
pub const TRANSACTION_ID: &str = "x-trino-transaction-id";
pub const TRACE_TOKEN: &str = "x-trino-trace-token";

// Response headers. Header names are case-insensitive; lowercase is what HTTP/2 requires
// and what `http::HeaderName` stores.
pub const SET_CATALOG: &str = "x-trino-set-catalog";
pub const SET_SCHEMA: &str = "x-trino-set-schema";
pub const SET_SESSION: &str = "x-trino-set-session";
pub const CLEAR_SESSION: &str = "x-trino-clear-session";
pub const ADDED_PREPARE: &str = "x-trino-added-prepare";
pub const DEALLOCATED_PREPARE: &str = "x-trino-deallocated-prepare";
pub const STARTED_TRANSACTION_ID: &str = "x-trino-started-transaction-id";
pub const CLEAR_TRANSACTION_ID: &str = "x-trino-clear-transaction-id";

/// Everything `quote_plus`/`URLEncoder` would escape.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'*');

/// A request header the protocol cannot accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// `X-Trino-User` is absent or empty.
    #[error("user must be set (header X-Trino-User)")]
    MissingUser,
    /// A header's value is not valid text.
    #[error("header {0} is not valid UTF-8")]
    NotUtf8(String),
    /// A value is longer than Flotilla keeps (user names and sources travel in every
    /// heartbeat and listing).
    #[error("header {header} is longer than {limit} characters")]
    TooLong { header: String, limit: usize },
    /// A `name=value` list item lacks its `=` or name.
    #[error("invalid {header} header: '{item}' is not name=value")]
    Malformed { header: String, item: String },
}

/// The client's session, as its headers describe it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientSession {
    pub user: String,
    pub source: Option<String>,
    pub catalog: Option<String>,
    pub schema: Option<String>,
    pub time_zone: Option<String>,
    pub client_info: Option<String>,
    pub client_tags: Vec<String>,
    pub client_capabilities: Vec<String>,
    /// `SET SESSION` properties the client carries.
    pub properties: BTreeMap<String, String>,
    /// Prepared statements the client carries: name to SQL text.
    pub prepared_statements: BTreeMap<String, String>,
    pub transaction_id: Option<String>,
    /// `X-Trino-Routing-Group` (as trino-gateway sends it): the warehouse to run in, when
    /// the session names none.
    pub routing_group: Option<String>,
}

/// Decodes one `application/x-www-form-urlencoded` component (`+` is a space).
pub fn url_decode(text: &str) -> String {
    let spaced = text.replace('+', " ");
    percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}

/// Encodes one component as Trino does in `X-Trino-Set-Session` and friends.
pub fn url_encode(text: &str) -> String {
    utf8_percent_encode(text, COMPONENT).to_string()
}

fn parse_pairs(header: &str, values: &[&str], into: &mut BTreeMap<String, String>) -> Result<(), HeaderError> {
    for item in values.iter().flat_map(|v| v.split(',')).map(str::trim).filter(|i| !i.is_empty()) {
        let Some((name, value)) = item.split_once('=') else {
            return Err(HeaderError::Malformed { header: header.to_string(), item: item.to_string() });
        };
        let name = url_decode(name.trim());
        if name.is_empty() {
            return Err(HeaderError::Malformed { header: header.to_string(), item: item.to_string() });
        }
        into.insert(name, url_decode(value.trim()));
    }
    Ok(())
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

impl ClientSession {
    /// Reads the session from request headers (names compared case-insensitively; a header
    /// may repeat, as several clients send lists that way).
    pub fn from_headers<'a>(
        headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<ClientSession, HeaderError> {
        let mut by_name: BTreeMap<String, Vec<&'a str>> = BTreeMap::new();
        for (name, raw) in headers {
            let lower = name.to_ascii_lowercase();
            if !lower.starts_with("x-trino-") {
                continue;
            }
            let value = std::str::from_utf8(raw).map_err(|_| HeaderError::NotUtf8(name.to_string()))?;
            by_name.entry(lower).or_default().push(value);
        }
        let single = |name: &str| non_empty(by_name.get(name).and_then(|v| v.first()).map(|v| v.trim().to_string()));
        let list = |name: &str| -> Vec<String> {
            by_name
                .get(name)
                .into_iter()
                .flatten()
                .flat_map(|v| v.split(','))
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .collect()
        };

        let user = single(USER).or_else(|| single(ORIGINAL_USER)).ok_or(HeaderError::MissingUser)?;
        let source = single(SOURCE);
        let routing_group = single(ROUTING_GROUP);
        for (header, value, limit) in [
            ("X-Trino-User", Some(&user), flotilla_proto::MAX_USER_LENGTH),
            ("X-Trino-Source", source.as_ref(), flotilla_proto::MAX_SOURCE_LENGTH),
            // A warehouse name: as bounded as a source.
            ("X-Trino-Routing-Group", routing_group.as_ref(), flotilla_proto::MAX_SOURCE_LENGTH),
        ] {
            if value.is_some_and(|v| v.chars().count() > limit) {
                return Err(HeaderError::TooLong { header: header.to_string(), limit });
            }
        }
        let mut session = ClientSession {
            user,
            source,
            catalog: single(CATALOG),
            schema: single(SCHEMA),
            time_zone: single(TIME_ZONE),
            client_info: single(CLIENT_INFO),
            client_tags: list(CLIENT_TAGS),
            client_capabilities: list(CLIENT_CAPABILITIES),
            transaction_id: single(TRANSACTION_ID).filter(|t| !t.eq_ignore_ascii_case("none")),
            routing_group,
            ..Default::default()
        };
        if let Some(values) = by_name.get(SESSION) {
            parse_pairs("X-Trino-Session", values, &mut session.properties)?;
        }
        if let Some(values) = by_name.get(PREPARED_STATEMENT) {
            parse_pairs("X-Trino-Prepared-Statement", values, &mut session.prepared_statements)?;
        }
        Ok(session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(headers: &[(&str, &str)]) -> Result<ClientSession, HeaderError> {
        ClientSession::from_headers(headers.iter().map(|(n, v)| (*n, v.as_bytes())))
    }

    #[test]
    fn reads_the_standard_headers() {
        let session = parse(&[
            ("X-Trino-User", "alice"),
            ("X-Trino-Catalog", "tpch"),
            ("X-Trino-Schema", "tiny"),
            ("X-Trino-Source", "test"),
            ("X-Trino-Time-Zone", "Europe/Berlin"),
            ("X-Trino-Client-Tags", "a, b"),
            ("X-Trino-Client-Capabilities", "PARAMETRIC_DATETIME,SOMETHING_NEW"),
            ("X-Trino-Transaction-Id", "NONE"),
        ])
        .unwrap();
        assert_eq!(session.user, "alice");
        assert_eq!(session.catalog.as_deref(), Some("tpch"));
        assert_eq!(session.schema.as_deref(), Some("tiny"));
        assert_eq!(session.time_zone.as_deref(), Some("Europe/Berlin"));
        assert_eq!(session.client_tags, vec!["a", "b"]);
        assert_eq!(session.client_capabilities.len(), 2);
        assert_eq!(session.transaction_id, None);
    }

    #[test]
    fn session_properties_come_joined_or_repeated() {
        let session = parse(&[
            ("X-Trino-User", "u"),
            ("X-Trino-Session", "a=1,b=x%20y"),
            ("x-trino-session", "c=3"),
            ("X-Trino-Prepared-Statement", "st_1=SELECT+%3F+%2B+1"),
        ])
        .unwrap();
        assert_eq!(session.properties["a"], "1");
        assert_eq!(session.properties["b"], "x y");
        assert_eq!(session.properties["c"], "3");
        assert_eq!(session.prepared_statements["st_1"], "SELECT ? + 1");
    }

    #[test]
    fn bad_headers_are_errors() {
        assert_eq!(parse(&[]), Err(HeaderError::MissingUser));
        assert_eq!(parse(&[("X-Trino-User", " ")]), Err(HeaderError::MissingUser));
        assert!(matches!(
            parse(&[("X-Trino-User", "u"), ("X-Trino-Session", "novalue")]),
            Err(HeaderError::Malformed { .. })
        ));
        let bad = ClientSession::from_headers([("X-Trino-User", &b"\xff"[..])]);
        assert!(matches!(bad, Err(HeaderError::NotUtf8(_))));
    }

    #[test]
    fn huge_users_and_sources_are_refused() {
        let long = "u".repeat(flotilla_proto::MAX_USER_LENGTH + 1);
        assert!(matches!(parse(&[("X-Trino-User", &long)]), Err(HeaderError::TooLong { .. })));
        assert!(matches!(parse(&[("X-Trino-User", "a"), ("X-Trino-Source", &long)]), Err(HeaderError::TooLong { .. })));
        let routed = parse(&[("X-Trino-User", "a"), ("X-Trino-Routing-Group", &long)]);
        assert!(matches!(routed, Err(HeaderError::TooLong { .. })), "{routed:?}");
        assert_eq!(
            parse(&[("X-Trino-User", "a"), ("X-Trino-Routing-Group", " bi ")]).unwrap().routing_group.as_deref(),
            Some("bi")
        );
        let longest = "u".repeat(flotilla_proto::MAX_USER_LENGTH);
        assert_eq!(parse(&[("X-Trino-User", &longest)]).unwrap().user, longest);
    }

    #[test]
    fn url_encoding_round_trips() {
        let text = "SELECT * FROM t WHERE a = 'x,y=z'";
        assert_eq!(url_decode(&url_encode(text)), text);
        assert!(!url_encode(text).contains(','));
    }
}
