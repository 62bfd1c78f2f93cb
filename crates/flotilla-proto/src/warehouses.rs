//! Warehouse definitions (`etc/warehouses.json` on the resource managers, after ByConity's
//! virtual warehouses): each warehouse has a type (`read`, ByConity's default VW, or
//! `write`) and its worker groups. A worker group is **physical** (the workers that announce
//! it with `node.warehouse` / `node.worker-group`) or **shared**: a name of its own in this
//! warehouse that references a physical group of another warehouse, whose workers then also
//! run this warehouse's queries (and whose load it reports).
//!
//! ```json
//! {"warehouses": [
//!   {"name": "etl", "type": "write", "workerGroups": [{"name": "g1"}], "maxConcurrentQueries": 4, "maxQueued": 100},
//!   {"name": "bi", "type": "read", "workerGroups": [{"name": "g1"}, {"name": "borrowed", "sharedFrom": "etl.g1"}]}
//! ]}
//! ```
//!
//! Workers that announce a warehouse or group no definition names still work: they form an
//! implicit physical group (so a cluster without the file behaves as before). The resource
//! managers carry the definitions in the cluster view, so every coordinator schedules by the
//! same ones, and keeps the last it got when no resource manager answers.

use serde::{Deserialize, Serialize};

use crate::access_control::Pattern;
use crate::config::valid_label;
use crate::QUERY_TYPES;

/// The longest definitions file read.
pub const MAX_FILE_SIZE: u64 = 4 << 20;

/// What a warehouse is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WarehouseType {
    Read,
    Write,
}

impl WarehouseType {
    pub fn as_str(self) -> &'static str {
        match self {
            WarehouseType::Read => "read",
            WarehouseType::Write => "write",
        }
    }
}

/// A physical group of some warehouse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupRef {
    pub warehouse: String,
    pub worker_group: String,
}

impl std::fmt::Display for GroupRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.warehouse, self.worker_group)
    }
}

/// One worker group of a warehouse: physical, or shared from another warehouse's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerGroupDefinition {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_from: Option<GroupRef>,
    /// A shared group the admission leader added for a while ([`Loan`]), not the file.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lent: bool,
}

/// A physical group the admission leader lends to a busy read warehouse while its own
/// warehouse leaves it idle (`warehouse.lending-enabled`): for the loan, the borrower has a
/// shared group `lent.WAREHOUSE.GROUP` referencing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Loan {
    /// The warehouse that borrows the group.
    pub borrower: String,
    pub group: GroupRef,
    /// How long ago it was lent (an age, so no two clocks need to agree).
    pub lent_for_ms: u64,
}

impl Loan {
    /// The name of the borrower's shared group for the loan.
    pub fn group_name(&self) -> String {
        format!("lent.{}.{}", self.group.warehouse, self.group.worker_group)
    }
}

/// The definitions with each loan as a shared group of its borrower.
pub fn with_loans(definitions: &[WarehouseDefinition], loans: &[Loan]) -> Vec<WarehouseDefinition> {
    let mut definitions = definitions.to_vec();
    for loan in loans {
        if let Some(borrower) = definitions.iter_mut().find(|w| w.name == loan.borrower) {
            borrower.worker_groups.push(WorkerGroupDefinition {
                name: loan.group_name(),
                shared_from: Some(loan.group.clone()),
                lent: true,
            });
        }
    }
    definitions
}

/// One warehouse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WarehouseDefinition {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: WarehouseType,
    pub worker_groups: Vec<WorkerGroupDefinition>,
    /// Queries of the warehouse that run at once across the cluster (`maxConcurrentQueries`;
    /// unlimited when absent); more wait in its queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_queries: Option<u32>,
    /// Queries that may wait for the warehouse across the cluster (`maxQueued`; unlimited
    /// when absent); more fail with `QUERY_QUEUE_FULL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queued: Option<u32>,
}

impl WarehouseDefinition {
    /// Whether the warehouse limits its queries.
    pub fn limited(&self) -> bool {
        self.max_concurrent_queries.is_some() || self.max_queued.is_some()
    }
}

/// Picks the warehouse of a query that names none (no `warehouse` session property, no
/// `X-Trino-Routing-Group`): every selector given must match (`user` and `source` are
/// whole-name regular expressions, `clientTags` must all be among the query's, `queryType`
/// is Trino's); the first rule that matches decides, as resource group selectors do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RoutingRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Pattern>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Pattern>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_type: Option<String>,
    pub warehouse: String,
}

impl RoutingRule {
    pub fn matches(&self, user: &str, source: Option<&str>, client_tags: &[String], query_type: &str) -> bool {
        self.user.as_ref().is_none_or(|p| p.matches(user))
            && self.source.as_ref().is_none_or(|p| source.is_some_and(|s| p.matches(s)))
            && self.client_tags.iter().all(|tag| client_tags.contains(tag))
            && self.query_type.as_deref().is_none_or(|kind| kind == query_type)
    }
}

/// The warehouse the first matching rule picks.
pub fn route<'a>(
    rules: &'a [RoutingRule],
    user: &str,
    source: Option<&str>,
    client_tags: &[String],
    query_type: &str,
) -> Option<&'a str> {
    rules.iter().find(|r| r.matches(user, source, client_tags, query_type)).map(|r| r.warehouse.as_str())
}

/// The file as written: `sharedFrom` is `"warehouse.group"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct File {
    warehouses: Vec<FileWarehouse>,
    #[serde(default)]
    routing_rules: Vec<RoutingRule>,
}

/// Everything the file defines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Definitions {
    pub warehouses: Vec<WarehouseDefinition>,
    pub routing_rules: Vec<RoutingRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FileWarehouse {
    name: String,
    #[serde(rename = "type")]
    kind: WarehouseType,
    #[serde(default)]
    worker_groups: Vec<FileGroup>,
    max_concurrent_queries: Option<u32>,
    max_queued: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FileGroup {
    name: String,
    shared_from: Option<String>,
}

/// Parses and checks a definitions file: valid names, each warehouse and group once, every
/// shared group referencing a physical group of another defined warehouse, and routing
/// rules naming valid warehouses and Trino's query types.
pub fn parse_file(text: &str) -> Result<Definitions, String> {
    let file: File = serde_json::from_str(text).map_err(|e| e.to_string())?;
    for rule in &file.routing_rules {
        if !valid_label(&rule.warehouse) {
            return Err(format!("invalid warehouse name '{}' in a routing rule", rule.warehouse));
        }
        if let Some(kind) = &rule.query_type {
            if !QUERY_TYPES.contains(&kind.as_str()) {
                return Err(format!("unknown queryType '{kind}' (one of {})", QUERY_TYPES.join(", ")));
            }
        }
    }
    let warehouses = parse_warehouses(file.warehouses)?;
    Ok(Definitions { warehouses, routing_rules: file.routing_rules })
}

/// The warehouses of a definitions file ([`parse_file`]).
pub fn parse(text: &str) -> Result<Vec<WarehouseDefinition>, String> {
    parse_file(text).map(|d| d.warehouses)
}

fn parse_warehouses(file_warehouses: Vec<FileWarehouse>) -> Result<Vec<WarehouseDefinition>, String> {
    let mut warehouses = Vec::new();
    for warehouse in file_warehouses {
        if !valid_label(&warehouse.name) {
            return Err(format!("invalid warehouse name '{}'", warehouse.name));
        }
        if warehouses.iter().any(|w: &WarehouseDefinition| w.name == warehouse.name) {
            return Err(format!("warehouse '{}' is defined twice", warehouse.name));
        }
        let mut groups: Vec<WorkerGroupDefinition> = Vec::new();
        for group in warehouse.worker_groups {
            if !valid_label(&group.name) {
                return Err(format!("invalid worker group name '{}' in warehouse '{}'", group.name, warehouse.name));
            }
            if groups.iter().any(|g| g.name == group.name) {
                return Err(format!(
                    "worker group '{}' is defined twice in warehouse '{}'",
                    group.name, warehouse.name
                ));
            }
            let shared_from = match group.shared_from {
                None => None,
                Some(text) => {
                    let Some((from_warehouse, from_group)) = text.split_once('.') else {
                        return Err(format!("sharedFrom '{text}' must be 'warehouse.group'"));
                    };
                    if from_warehouse == warehouse.name {
                        return Err(format!("shared group '{}' must reference another warehouse's group", group.name));
                    }
                    Some(GroupRef { warehouse: from_warehouse.to_string(), worker_group: from_group.to_string() })
                }
            };
            groups.push(WorkerGroupDefinition { name: group.name, shared_from, lent: false });
        }
        if warehouse.max_concurrent_queries == Some(0) {
            return Err(format!("maxConcurrentQueries of warehouse '{}' must be at least 1", warehouse.name));
        }
        warehouses.push(WarehouseDefinition {
            name: warehouse.name,
            kind: warehouse.kind,
            worker_groups: groups,
            max_concurrent_queries: warehouse.max_concurrent_queries,
            max_queued: warehouse.max_queued,
        });
    }
    for warehouse in &warehouses {
        for group in &warehouse.worker_groups {
            let Some(from) = &group.shared_from else { continue };
            let physical = warehouses
                .iter()
                .find(|w| w.name == from.warehouse)
                .and_then(|w| w.worker_groups.iter().find(|g| g.name == from.worker_group))
                .is_some_and(|g| g.shared_from.is_none());
            if !physical {
                return Err(format!(
                    "shared group '{}.{}' references {from}, which is not a defined physical group",
                    warehouse.name, group.name
                ));
            }
        }
    }
    Ok(warehouses)
}

/// The groups a query of `warehouse` may run on: (group name, physical group whose workers
/// run it). Its own physical groups are the workers' labels (found by the caller); this
/// adds the shared ones.
pub fn shared_groups<'a>(
    definitions: &'a [WarehouseDefinition],
    warehouse: &'a str,
) -> impl Iterator<Item = (&'a str, &'a GroupRef)> {
    definitions
        .iter()
        .filter(move |w| w.name == warehouse)
        .flat_map(|w| w.worker_groups.iter())
        .filter_map(|g| g.shared_from.as_ref().map(|from| (g.name.as_str(), from)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_with_shared_groups_parses() {
        let definitions = parse(
            r#"{"warehouses": [
                {"name": "etl", "type": "write", "workerGroups": [{"name": "g1"}]},
                {"name": "bi", "type": "read", "workerGroups": [{"name": "g1"}, {"name": "lent", "sharedFrom": "etl.g1"}]}
            ]}"#,
        )
        .unwrap();
        assert_eq!(definitions.len(), 2);
        assert_eq!(definitions[0].kind, WarehouseType::Write);
        let shared: Vec<_> = shared_groups(&definitions, "bi").collect();
        assert_eq!(shared.len(), 1);
        assert_eq!(shared[0].0, "lent");
        assert_eq!(shared[0].1.to_string(), "etl.g1");
        assert_eq!(shared_groups(&definitions, "etl").count(), 0);
    }

    #[test]
    fn routing_rules_pick_the_first_matching_warehouse() {
        let definitions = parse_file(
            r#"{"warehouses": [], "routingRules": [
                {"user": "etl_.*", "queryType": "INSERT", "warehouse": "etl"},
                {"source": "superset", "clientTags": ["dashboards"], "warehouse": "bi"},
                {"user": "etl_.*", "warehouse": "adhoc"}
            ]}"#,
        )
        .unwrap();
        let rules = &definitions.routing_rules;
        let tags = vec!["dashboards".to_string(), "x".to_string()];
        assert_eq!(route(rules, "etl_nightly", None, &[], "INSERT"), Some("etl"));
        assert_eq!(route(rules, "etl_nightly", None, &[], "SELECT"), Some("adhoc"));
        assert_eq!(route(rules, "alice", Some("superset"), &tags, "SELECT"), Some("bi"));
        assert_eq!(route(rules, "alice", Some("superset"), &[], "SELECT"), None, "the tag is missing");
        assert_eq!(route(rules, "alice", None, &tags, "SELECT"), None, "no source");
        // The rules travel in the cluster view as they were written.
        let json = serde_json::to_string(rules).unwrap();
        assert_eq!(&serde_json::from_str::<Vec<RoutingRule>>(&json).unwrap(), rules);
        for bad in [
            r#"{"warehouses": [], "routingRules": [{"warehouse": "a b"}]}"#,
            r#"{"warehouses": [], "routingRules": [{"queryType": "SELCT", "warehouse": "a"}]}"#,
            r#"{"warehouses": [], "routingRules": [{"user": "(", "warehouse": "a"}]}"#,
            r#"{"warehouses": [], "routingRules": [{"group": "x", "warehouse": "a"}]}"#,
        ] {
            assert!(parse_file(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_files_say_why() {
        for (text, expected) in [
            (r#"{"warehouses": [{"name": "a", "type": "fast"}]}"#, "unknown variant"),
            (r#"{"warehouses": [{"name": "a b", "type": "read"}]}"#, "invalid warehouse name"),
            (r#"{"warehouses": [{"name": "a", "type": "read"}, {"name": "a", "type": "read"}]}"#, "twice"),
            (
                r#"{"warehouses": [{"name": "a", "type": "read", "workerGroups": [{"name": "x", "sharedFrom": "b"}]}]}"#,
                "must be",
            ),
            (
                r#"{"warehouses": [{"name": "a", "type": "read", "workerGroups": [{"name": "x", "sharedFrom": "b.g"}]}]}"#,
                "not a defined physical group",
            ),
            (
                r#"{"warehouses": [{"name": "a", "type": "read", "workerGroups": [{"name": "x", "sharedFrom": "a.y"}]}]}"#,
                "another warehouse",
            ),
            (r#"{"warehouses": [{"name": "a", "type": "read", "maxQueue": 3}]}"#, "unknown field"),
            (r#"{"warehouses": [{"name": "a", "type": "read", "maxConcurrentQueries": 0}]}"#, "at least 1"),
            (r#"{"warehouses": [{"name": "a", "type": "read", "maxQueued": -1}]}"#, "invalid value"),
            (
                r#"{"warehouses": [
                {"name": "a", "type": "read", "workerGroups": [{"name": "p"}]},
                {"name": "b", "type": "read", "workerGroups": [{"name": "s", "sharedFrom": "a.p"}]},
                {"name": "c", "type": "read", "workerGroups": [{"name": "t", "sharedFrom": "b.s"}]}]}"#,
                "not a defined physical group",
            ),
        ] {
            let error = parse(text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
