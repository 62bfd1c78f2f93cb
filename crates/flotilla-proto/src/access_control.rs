//! Trino's file-based system access control (`etc/access-control.properties` with
//! `access-control.name=file` and `security.config-file`): who may read and write which
//! catalogs, schemas and tables, view and kill whose queries, impersonate whom, read or
//! change the nodes' state, set which session properties and call which procedures.
//!
//! The rules file is Trino's JSON, and every decision follows Trino's
//! `FileBasedSystemAccessControl`: in each section the **first rule that matches** decides;
//! a section that is absent allows everything, except `impersonation` and
//! `system_information`, which deny everything when absent; when `catalogs` is present the
//! `system` catalog stays readable (as in Trino); tables in `information_schema` are readable
//! in every catalog the user may access. Users have no groups or roles here (there is no
//! group provider): a rule that names a `group` or `role` never matches.
//!
//! Not supported, and refused when the file is loaded: column rules (`columns`), row filters
//! (`filter`) and column masks; `principal`-matching rules; function rules.
//!
//! The file is re-read every `security.refresh-period` when that is set (never otherwise, as
//! Trino); a file that became invalid is logged by the caller and the last good rules stay.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use regex::Regex;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

use crate::{ErrorCode, FlotillaError};

/// The longest rules file read.
const MAX_FILE_SIZE: u64 = 16 << 20;

/// A regular expression that must match a whole name (Java's `Pattern.matches`); it is
/// written and compared as its text.
#[derive(Debug, Clone)]
pub struct Pattern(Regex, String);

impl Pattern {
    pub fn new(text: &str) -> Result<Self, regex::Error> {
        let regex = regex::RegexBuilder::new(&format!("^(?:{text})$")).size_limit(1 << 20).build()?;
        Ok(Pattern(regex, text.to_string()))
    }

    pub fn matches(&self, text: &str) -> bool {
        self.0.is_match(text)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.1 == other.1
    }
}

impl Eq for Pattern {}

impl serde::Serialize for Pattern {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.1)
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Pattern::new(&text).map_err(|e| D::Error::custom(format!("invalid regular expression '{text}': {e}")))
    }
}

/// Whether a rule's `user`, `group` and `role` patterns (all that are given) match `user`.
/// There is no group provider and there are no roles: a rule naming a group or role
/// matches nobody.
fn subject_matches(user: &Option<Pattern>, group: &Option<Pattern>, role: &Option<Pattern>, name: &str) -> bool {
    group.is_none() && role.is_none() && matches(user, name)
}

/// The fields every rule has for whom it is (not `#[serde(flatten)]`ed: that would let
/// unknown fields through `deny_unknown_fields`).
macro_rules! subject {
    ($rule:ty) => {
        impl $rule {
            fn for_user(&self, name: &str) -> bool {
                subject_matches(&self.user, &self.group, &self.role, name)
            }
        }
    };
}

fn matches(pattern: &Option<Pattern>, text: &str) -> bool {
    pattern.as_ref().is_none_or(|p| p.matches(text))
}

/// Catalog access (`allow`: `all`, `read-only` or `none`; `true`/`false` as older Trino).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CatalogAccess {
    None,
    ReadOnly,
    All,
}

impl<'de> Deserialize<'de> for CatalogAccess {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::Bool(true) => Ok(CatalogAccess::All),
            serde_json::Value::Bool(false) => Ok(CatalogAccess::None),
            serde_json::Value::String(text) => match text.to_ascii_lowercase().as_str() {
                "all" => Ok(CatalogAccess::All),
                "read-only" => Ok(CatalogAccess::ReadOnly),
                "none" => Ok(CatalogAccess::None),
                _ => Err(D::Error::custom(format!("unknown catalog access '{text}' (all, read-only or none)"))),
            },
            other => Err(D::Error::custom(format!("catalog access must be a string, not {other}"))),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogRule {
    user: Option<Pattern>,
    group: Option<Pattern>,
    role: Option<Pattern>,
    catalog: Option<Pattern>,
    allow: CatalogAccess,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SchemaRule {
    user: Option<Pattern>,
    group: Option<Pattern>,
    role: Option<Pattern>,
    catalog: Option<Pattern>,
    schema: Option<Pattern>,
    owner: bool,
}

/// A table privilege of Trino's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TablePrivilege {
    Select,
    Insert,
    Delete,
    Update,
    Ownership,
    GrantSelect,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TableRule {
    user: Option<Pattern>,
    group: Option<Pattern>,
    role: Option<Pattern>,
    catalog: Option<Pattern>,
    schema: Option<Pattern>,
    table: Option<Pattern>,
    privileges: Vec<TablePrivilege>,
    /// Refused at load: column rules, row filters and masks are not supported.
    columns: Option<serde_json::Value>,
    filter: Option<serde_json::Value>,
    filter_environment: Option<serde_json::Value>,
}

/// What a query rule allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueryAccess {
    Execute,
    View,
    Kill,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryRule {
    user: Option<Pattern>,
    group: Option<Pattern>,
    role: Option<Pattern>,
    #[serde(rename = "queryOwner")]
    query_owner: Option<Pattern>,
    allow: Vec<QueryAccess>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImpersonationRule {
    original_user: Option<String>,
    original_role: Option<Pattern>,
    new_user: String,
    #[serde(default = "yes")]
    allow: bool,
}

fn yes() -> bool {
    true
}

/// What a system information rule allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SystemInformationAccess {
    Read,
    Write,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SystemInformationRule {
    user: Option<Pattern>,
    group: Option<Pattern>,
    role: Option<Pattern>,
    allow: Vec<SystemInformationAccess>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionPropertyRule {
    user: Option<Pattern>,
    group: Option<Pattern>,
    role: Option<Pattern>,
    property: Option<Pattern>,
    allow: bool,
}

/// Checked for its shape only: Flotilla's catalogs have no session properties.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct CatalogSessionPropertyRule {
    user: Option<Pattern>,
    group: Option<Pattern>,
    role: Option<Pattern>,
    catalog: Option<Pattern>,
    property: Option<Pattern>,
    allow: bool,
}

/// A procedure privilege.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProcedurePrivilege {
    Execute,
    GrantExecute,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProcedureRule {
    user: Option<Pattern>,
    group: Option<Pattern>,
    role: Option<Pattern>,
    catalog: Option<Pattern>,
    schema: Option<Pattern>,
    procedure: Option<Pattern>,
    privileges: Vec<ProcedurePrivilege>,
}

subject!(CatalogRule);
subject!(SchemaRule);
subject!(TableRule);
subject!(QueryRule);
subject!(SystemInformationRule);
subject!(SessionPropertyRule);
subject!(ProcedureRule);

/// The rules file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    catalogs: Option<Vec<CatalogRule>>,
    schemas: Option<Vec<SchemaRule>>,
    tables: Option<Vec<TableRule>>,
    queries: Option<Vec<QueryRule>>,
    impersonation: Option<Vec<ImpersonationRule>>,
    system_information: Option<Vec<SystemInformationRule>>,
    system_session_properties: Option<Vec<SessionPropertyRule>>,
    session_properties: Option<Vec<SessionPropertyRule>>,
    /// Validated only: Flotilla's catalogs have no session properties.
    #[allow(dead_code)]
    catalog_session_properties: Option<Vec<CatalogSessionPropertyRule>>,
    procedures: Option<Vec<ProcedureRule>>,
}

/// The decisions of one version of the rules file.
#[derive(Debug, Clone)]
pub struct AccessRules {
    catalogs: Option<Vec<CatalogRule>>,
    schemas: Option<Vec<SchemaRule>>,
    tables: Option<Vec<TableRule>>,
    queries: Option<Vec<QueryRule>>,
    impersonation: Option<Vec<ImpersonationRule>>,
    system_information: Vec<SystemInformationRule>,
    session_properties: Option<Vec<SessionPropertyRule>>,
    procedures: Option<Vec<ProcedureRule>>,
}

/// Trino's `AccessDeniedException`: `PERMISSION_DENIED`, "Access Denied: ...".
pub fn access_denied(what: impl std::fmt::Display) -> FlotillaError {
    FlotillaError::new(ErrorCode::PermissionDenied, format!("Access Denied: {what}"))
}

impl AccessRules {
    /// Parses a rules file's text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: RulesFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
        for rule in file.tables.iter().flatten() {
            if rule.columns.is_some() || rule.filter.is_some() || rule.filter_environment.is_some() {
                return Err("table rules with `columns`, `filter` or `filter_environment` (column access, masks, row filters) are not supported".into());
            }
        }
        for rule in file.impersonation.iter().flatten() {
            if rule.original_role.is_some() {
                return Err("impersonation rules with `original_role` are not supported (there are no roles)".into());
            }
            Pattern::new(rule.original_user.as_deref().unwrap_or(".*"))
                .map_err(|e| format!("invalid original_user pattern: {e}"))?;
        }
        if file.system_session_properties.is_some() && file.session_properties.is_some() {
            return Err("give `system_session_properties` or its older name `session_properties`, not both".into());
        }
        Ok(Self {
            catalogs: file.catalogs,
            schemas: file.schemas,
            tables: file.tables,
            queries: file.queries,
            impersonation: file.impersonation,
            system_information: file.system_information.unwrap_or_default(),
            session_properties: file.system_session_properties.or(file.session_properties),
            procedures: file.procedures,
        })
    }

    /// The access `user` has to `catalog` (`system` is always readable, as in Trino).
    pub fn catalog_access(&self, user: &str, catalog: &str) -> CatalogAccess {
        let Some(rules) = &self.catalogs else { return CatalogAccess::All };
        let found = rules.iter().find(|r| r.for_user(user) && matches(&r.catalog, catalog)).map(|r| r.allow);
        match found {
            Some(access) => access,
            None if catalog == "system" => CatalogAccess::All,
            None => CatalogAccess::None,
        }
    }

    /// Whether `user` sees `catalog` at all: it may read it and some schema or table rule
    /// gives them something in it.
    pub fn catalog_visible(&self, user: &str, catalog: &str) -> bool {
        if self.catalog_access(user, catalog) < CatalogAccess::ReadOnly {
            return false;
        }
        let schemas = match &self.schemas {
            None => true,
            Some(rules) => rules.iter().any(|r| r.owner && r.for_user(user) && matches(&r.catalog, catalog)),
        };
        let tables = match &self.tables {
            None => true,
            Some(rules) => {
                rules.iter().any(|r| !r.privileges.is_empty() && r.for_user(user) && matches(&r.catalog, catalog))
            }
        };
        schemas || tables || catalog == "system"
    }

    /// Whether `user` sees `catalog.schema` (owns it, or has a privilege on a table in it).
    pub fn schema_visible(&self, user: &str, catalog: &str, schema: &str) -> bool {
        if self.catalog_access(user, catalog) < CatalogAccess::ReadOnly {
            return false;
        }
        if schema == "information_schema" {
            return true;
        }
        let owner = match &self.schemas {
            None => true,
            Some(rules) => rules
                .iter()
                .any(|r| r.owner && r.for_user(user) && matches(&r.catalog, catalog) && matches(&r.schema, schema)),
        };
        let tables = match &self.tables {
            None => true,
            Some(rules) => rules.iter().any(|r| {
                !r.privileges.is_empty()
                    && r.for_user(user)
                    && matches(&r.catalog, catalog)
                    && matches(&r.schema, schema)
            }),
        };
        owner || tables
    }

    /// Whether `user` owns `catalog.schema` (may create and drop it, and create tables in it
    /// when the table rules agree).
    pub fn is_schema_owner(&self, user: &str, catalog: &str, schema: &str) -> bool {
        if self.catalog_access(user, catalog) < CatalogAccess::All {
            return false;
        }
        match &self.schemas {
            None => true,
            Some(rules) => rules
                .iter()
                .find(|r| r.for_user(user) && matches(&r.catalog, catalog) && matches(&r.schema, schema))
                .is_some_and(|r| r.owner),
        }
    }

    /// The privileges of the first table rule that matches, within what the catalog allows.
    fn table_rule_privileges(&self, user: &str, catalog: &str, schema: &str, table: &str) -> Option<&[TablePrivilege]> {
        const ALL: &[TablePrivilege] = &[
            TablePrivilege::Select,
            TablePrivilege::Insert,
            TablePrivilege::Delete,
            TablePrivilege::Update,
            TablePrivilege::Ownership,
            TablePrivilege::GrantSelect,
        ];
        match &self.tables {
            None => Some(ALL),
            Some(rules) => rules
                .iter()
                .find(|r| {
                    r.for_user(user)
                        && matches(&r.catalog, catalog)
                        && matches(&r.schema, schema)
                        && matches(&r.table, table)
                })
                .map(|r| r.privileges.as_slice()),
        }
    }

    /// Whether `user` holds `privilege` on `catalog.schema.table` (`SELECT` needs read
    /// access to the catalog, anything else full access; `information_schema` is readable
    /// wherever the catalog is).
    pub fn has_table_privilege(
        &self,
        user: &str,
        catalog: &str,
        schema: &str,
        table: &str,
        privilege: TablePrivilege,
    ) -> bool {
        let read = matches!(privilege, TablePrivilege::Select | TablePrivilege::GrantSelect);
        let needed = if read { CatalogAccess::ReadOnly } else { CatalogAccess::All };
        if self.catalog_access(user, catalog) < needed {
            return false;
        }
        if schema == "information_schema" {
            return read;
        }
        self.table_rule_privileges(user, catalog, schema, table).is_some_and(|p| p.contains(&privilege))
    }

    /// Whether `user` sees the table (holds any privilege on it).
    pub fn table_visible(&self, user: &str, catalog: &str, schema: &str, table: &str) -> bool {
        if self.catalog_access(user, catalog) < CatalogAccess::ReadOnly {
            return false;
        }
        schema == "information_schema"
            || self.table_rule_privileges(user, catalog, schema, table).is_some_and(|p| !p.is_empty())
    }

    /// Whether `user` may do `access` to queries of `owner` (`None`: executing queries at
    /// all). A user's own queries are always theirs to view and kill; callers check that.
    pub fn query_access(&self, user: &str, owner: Option<&str>, access: QueryAccess) -> bool {
        let Some(rules) = &self.queries else { return true };
        rules
            .iter()
            .find(|r| {
                r.for_user(user)
                    && match (&r.query_owner, owner) {
                        (None, _) => true,
                        (Some(pattern), Some(owner)) => pattern.matches(owner),
                        (Some(_), None) => false,
                    }
            })
            .is_some_and(|r| r.allow.contains(&access))
    }

    /// Whether `principal` may run queries as `user` (Trino denies everything without
    /// impersonation rules). `new_user` may use the capture groups of `original_user`
    /// (`$1`).
    pub fn may_impersonate(&self, principal: &str, user: &str) -> bool {
        for rule in self.impersonation.iter().flatten() {
            let original = rule.original_user.as_deref().unwrap_or(".*");
            let Ok(original) = Pattern::new(original) else { continue };
            let Some(captures) = original.0.captures(principal) else { continue };
            let mut expanded = String::new();
            captures.expand(&rule.new_user, &mut expanded);
            if Pattern::new(&expanded).is_ok_and(|p| p.matches(user)) {
                return rule.allow;
            }
        }
        false
    }

    /// Whether `user` may read (`/v1/node`, the cluster's state) or change (shutdown) the
    /// nodes' state.
    pub fn system_information(&self, user: &str, access: SystemInformationAccess) -> bool {
        self.system_information.iter().find(|r| r.for_user(user)).is_some_and(|r| r.allow.contains(&access))
    }

    /// Whether `user` may set the system session property `property`.
    pub fn may_set_session_property(&self, user: &str, property: &str) -> bool {
        let Some(rules) = &self.session_properties else { return true };
        rules.iter().find(|r| r.for_user(user) && matches(&r.property, property)).is_some_and(|r| r.allow)
    }

    /// Whether `user` may call `catalog.schema.procedure`.
    pub fn may_execute_procedure(&self, user: &str, catalog: &str, schema: &str, procedure: &str) -> bool {
        let Some(rules) = &self.procedures else { return true };
        rules
            .iter()
            .find(|r| {
                r.for_user(user)
                    && matches(&r.catalog, catalog)
                    && matches(&r.schema, schema)
                    && matches(&r.procedure, procedure)
            })
            .is_some_and(|r| r.privileges.contains(&ProcedurePrivilege::Execute))
    }
}

struct Loaded {
    rules: Arc<AccessRules>,
    modified: Option<SystemTime>,
    checked: Instant,
}

/// The rules file of a node, re-read every `refresh` when one is set.
pub struct AccessControl {
    path: PathBuf,
    refresh: Option<Duration>,
    loaded: Mutex<Loaded>,
}

impl std::fmt::Debug for AccessControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessControl").field("path", &self.path).field("refresh", &self.refresh).finish()
    }
}

fn read_rules(path: &Path) -> Result<(AccessRules, Option<SystemTime>), String> {
    let describe = |e: &dyn std::fmt::Display| format!("access control rules {}: {e}", path.display());
    let metadata = std::fs::metadata(path).map_err(|e| describe(&e))?;
    if metadata.len() > MAX_FILE_SIZE {
        return Err(describe(&format!("larger than {MAX_FILE_SIZE} bytes")));
    }
    let text = std::fs::read_to_string(path).map_err(|e| describe(&e))?;
    let rules = AccessRules::parse(&text).map_err(|e| describe(&e))?;
    Ok((rules, metadata.modified().ok()))
}

impl AccessControl {
    /// Loads the rules file; fails with the reason when it cannot be used.
    pub fn load(path: &Path, refresh: Option<Duration>) -> Result<Self, String> {
        let (rules, modified) = read_rules(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            refresh,
            loaded: Mutex::new(Loaded { rules: Arc::new(rules), modified, checked: Instant::now() }),
        })
    }

    /// The current rules (re-read first when the refresh period has passed and the file
    /// changed; a broken new version is logged and the last good one kept).
    pub fn rules(&self) -> Arc<AccessRules> {
        let mut loaded = self.loaded.lock();
        if let Some(refresh) = self.refresh {
            if loaded.checked.elapsed() >= refresh {
                loaded.checked = Instant::now();
                let modified = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
                if modified != loaded.modified {
                    match read_rules(&self.path) {
                        Ok((rules, modified)) => {
                            loaded.rules = Arc::new(rules);
                            loaded.modified = modified;
                        }
                        Err(message) => {
                            // Logged once per change: the next check compares with this time.
                            loaded.modified = modified;
                            tracing::warn!("keeping the previous access control rules: {message}");
                        }
                    }
                }
            }
        }
        loaded.rules.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(json: &str) -> AccessRules {
        AccessRules::parse(json).unwrap()
    }

    #[test]
    fn an_empty_file_allows_data_but_not_impersonation_or_system_information() {
        let r = rules("{}");
        assert!(r.has_table_privilege("a", "tpch", "tiny", "nation", TablePrivilege::Select));
        assert!(r.has_table_privilege("a", "files", "s", "t", TablePrivilege::Ownership));
        assert!(r.query_access("a", Some("b"), QueryAccess::Kill));
        assert!(!r.may_impersonate("a", "b"));
        assert!(!r.system_information("a", SystemInformationAccess::Read));
        assert!(r.may_set_session_property("a", "query_max_run_time"));
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let r = rules(
            r#"{"tables": [
                {"user": "bob", "table": "secret", "privileges": []},
                {"user": "bob|alice", "privileges": ["SELECT"]},
                {"user": "admin", "privileges": ["SELECT", "INSERT", "OWNERSHIP"]}
            ]}"#,
        );
        assert!(!r.has_table_privilege("bob", "c", "s", "secret", TablePrivilege::Select));
        assert!(!r.table_visible("bob", "c", "s", "secret"));
        assert!(r.has_table_privilege("bob", "c", "s", "other", TablePrivilege::Select));
        assert!(r.has_table_privilege("alice", "c", "s", "secret", TablePrivilege::Select));
        assert!(!r.has_table_privilege("alice", "c", "s", "secret", TablePrivilege::Insert));
        assert!(!r.has_table_privilege("carol", "c", "s", "secret", TablePrivilege::Select), "no rule: nothing");
        assert!(r.has_table_privilege("carol", "c", "information_schema", "tables", TablePrivilege::Select));
        // A pattern matches the whole name.
        assert!(!r.has_table_privilege("bobby", "c", "s", "other", TablePrivilege::Select));
    }

    #[test]
    fn catalog_rules_cap_what_tables_allow() {
        let r = rules(
            r#"{"catalogs": [{"user": "ro", "catalog": "files", "allow": "read-only"},
                             {"catalog": "files", "allow": "all"},
                             {"catalog": "hidden", "allow": "none"}]}"#,
        );
        assert!(r.has_table_privilege("ro", "files", "s", "t", TablePrivilege::Select));
        assert!(!r.has_table_privilege("ro", "files", "s", "t", TablePrivilege::Insert));
        assert!(r.has_table_privilege("rw", "files", "s", "t", TablePrivilege::Insert));
        assert!(!r.catalog_visible("rw", "hidden"));
        assert!(!r.catalog_visible("rw", "tpch"), "no rule names it");
        assert!(r.catalog_visible("rw", "system"), "system stays readable");
        assert!(!r.is_schema_owner("ro", "files", "s"));
        assert!(r.is_schema_owner("rw", "files", "s"));
    }

    #[test]
    fn schemas_are_visible_through_table_rules() {
        let r = rules(
            r#"{"schemas": [{"user": "owner", "owner": true}],
                "tables": [{"user": "reader", "schema": "sales", "privileges": ["SELECT"]}]}"#,
        );
        assert!(r.schema_visible("reader", "c", "sales"));
        assert!(!r.schema_visible("reader", "c", "hr"));
        assert!(r.schema_visible("reader", "c", "information_schema"));
        assert!(r.schema_visible("owner", "c", "hr"));
        assert!(!r.is_schema_owner("reader", "c", "sales"));
    }

    #[test]
    fn queries_impersonation_and_system_information() {
        let r = rules(
            r#"{"queries": [{"user": "admin", "allow": ["execute", "view", "kill"]},
                            {"user": "ops", "queryOwner": "etl_.*", "allow": ["view", "kill"]},
                            {"allow": ["execute"]}],
                "impersonation": [{"original_user": "svc_(.*)", "new_user": "$1"},
                                  {"original_user": "proxy", "new_user": "root", "allow": false},
                                  {"original_user": "proxy", "new_user": ".*"}],
                "system_information": [{"user": "admin", "allow": ["read", "write"]}]}"#,
        );
        assert!(r.query_access("admin", Some("x"), QueryAccess::Kill));
        assert!(r.query_access("ops", Some("etl_daily"), QueryAccess::Kill));
        assert!(!r.query_access("ops", Some("bob"), QueryAccess::Kill), "the ops rule names other owners");
        assert!(!r.query_access("bob", Some("x"), QueryAccess::View));
        assert!(r.query_access("bob", None, QueryAccess::Execute));
        assert!(r.may_impersonate("svc_alice", "alice"));
        assert!(!r.may_impersonate("svc_alice", "bob"));
        assert!(!r.may_impersonate("proxy", "root"));
        assert!(r.may_impersonate("proxy", "anyone"));
        assert!(!r.may_impersonate("alice", "bob"));
        assert!(r.system_information("admin", SystemInformationAccess::Write));
        assert!(!r.system_information("bob", SystemInformationAccess::Read));
    }

    #[test]
    fn session_properties_and_procedures() {
        let r = rules(
            r#"{"system_session_properties": [{"user": "admin", "allow": true},
                                              {"property": "query_max_.*", "allow": false},
                                              {"allow": true}],
                "procedures": [{"user": "admin", "privileges": ["EXECUTE"]}]}"#,
        );
        assert!(!r.may_set_session_property("bob", "query_max_run_time"));
        assert!(r.may_set_session_property("bob", "task_concurrency"));
        assert!(r.may_set_session_property("admin", "query_max_run_time"));
        assert!(r.may_execute_procedure("admin", "system", "runtime", "kill_query"));
        assert!(!r.may_execute_procedure("bob", "system", "runtime", "kill_query"));
    }

    #[test]
    fn groups_and_roles_match_nobody() {
        let r = rules(r#"{"tables": [{"group": ".*", "privileges": ["SELECT"]}]}"#);
        assert!(!r.has_table_privilege("bob", "c", "s", "t", TablePrivilege::Select));
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        for (json, expected) in [
            ("5", "invalid type"),
            (r#"{"tabels": []}"#, "unknown field `tabels`"),
            (r#"{"tables": [{"privileges": ["READ"]}]}"#, "unknown variant `READ`"),
            (r#"{"tables": [{"table": "(", "privileges": []}]}"#, "invalid regular expression"),
            (r#"{"tables": [{"privileges": ["SELECT"], "filter": "x > 1"}]}"#, "not supported"),
            (r#"{"catalogs": [{"allow": "sometimes"}]}"#, "unknown catalog access"),
            (r#"{"functions": []}"#, "unknown field `functions`"),
            (r#"{"impersonation": [{"original_user": "(", "new_user": "x"}]}"#, "invalid original_user"),
        ] {
            let error = AccessRules::parse(json).unwrap_err();
            assert!(error.contains(expected), "{json}: {error}");
        }
        // Deeply nested input fails cleanly (serde_json's recursion limit).
        let nested = format!("{{\"tables\": {}{}}}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(AccessRules::parse(&nested).is_err());
    }

    #[test]
    fn rules_are_reloaded_after_the_refresh_period_and_a_broken_file_keeps_the_last() {
        let dir = std::env::temp_dir().join(format!("flotilla-acl-{}", crate::random_hex(8)));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rules.json");
        std::fs::write(&path, r#"{"tables": [{"user": "a", "privileges": ["SELECT"]}]}"#).unwrap();
        let control = AccessControl::load(&path, Some(Duration::ZERO)).unwrap();
        assert!(control.rules().has_table_privilege("a", "c", "s", "t", TablePrivilege::Select));
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&path, r#"{"tables": [{"user": "b", "privileges": ["SELECT"]}]}"#).unwrap();
        let set_later = |path: &Path| {
            let file = std::fs::File::options().write(true).open(path).unwrap();
            file.set_modified(SystemTime::now() + Duration::from_secs(5)).unwrap();
        };
        set_later(&path);
        assert!(control.rules().has_table_privilege("b", "c", "s", "t", TablePrivilege::Select));
        std::fs::write(&path, "{broken").unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(SystemTime::now() + Duration::from_secs(10)).unwrap();
        assert!(control.rules().has_table_privilege("b", "c", "s", "t", TablePrivilege::Select));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
