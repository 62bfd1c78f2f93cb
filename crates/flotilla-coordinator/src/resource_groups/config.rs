//! Trino's file-based resource group configuration (`resource-groups.json`): the groups,
//! the selectors, and choosing the group of a query.
//!
//! Accepted as Trino has it: `rootGroups` with `name` (templates `${USER}`, `${SOURCE}` and
//! named regex groups of the selector), `maxQueued`, `hardConcurrencyLimit`,
//! `softConcurrencyLimit`, `softMemoryLimit` (bytes or `%` of the cluster's memory),
//! `schedulingPolicy`, `schedulingWeight`, `jmxExport`, `subGroups`; `selectors` with
//! `user`, `userGroup`, `source` (regexes, matched in full), `queryType`, `clientTags` and
//! `group`. CPU quotas (`softCpuLimit`, `hardCpuLimit`, `cpuQuotaPeriod`) are refused: they
//! are not enforced.

use std::collections::BTreeMap;

use flotilla_proto::admission::{GroupLimits, SchedulingPolicy};
use regex::Regex;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileConfig {
    root_groups: Vec<GroupSpec>,
    #[serde(default)]
    selectors: Vec<SelectorSpec>,
    cpu_quota_period: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct GroupSpec {
    name: String,
    soft_memory_limit: String,
    max_queued: u32,
    hard_concurrency_limit: u32,
    soft_concurrency_limit: Option<u32>,
    scheduling_policy: Option<String>,
    scheduling_weight: Option<u32>,
    jmx_export: Option<bool>,
    soft_cpu_limit: Option<serde_json::Value>,
    hard_cpu_limit: Option<serde_json::Value>,
    #[serde(default)]
    sub_groups: Vec<GroupSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SelectorSpec {
    user: Option<String>,
    user_group: Option<String>,
    source: Option<String>,
    query_type: Option<String>,
    client_tags: Option<Vec<String>>,
    group: String,
}

/// `softMemoryLimit`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MemoryLimit {
    Bytes(u64),
    /// A fraction of the cluster's total memory pool.
    Fraction(f64),
}

/// One group of the tree (its name may be a template).
#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    pub hard_concurrency_limit: u32,
    pub soft_concurrency_limit: u32,
    pub max_queued: u32,
    pub soft_memory_limit: MemoryLimit,
    pub scheduling_policy: SchedulingPolicy,
    pub scheduling_weight: u32,
    pub sub_groups: Vec<Group>,
}

pub use flotilla_proto::QUERY_TYPES;

#[derive(Debug, Clone)]
struct Selector {
    user: Option<Regex>,
    user_group: Option<Regex>,
    source: Option<Regex>,
    query_type: Option<String>,
    client_tags: Vec<String>,
    /// The group path's segments (templates unexpanded).
    group: Vec<String>,
}

/// A parsed, validated configuration.
#[derive(Debug, Clone)]
pub struct ResourceGroupsConfig {
    roots: Vec<Group>,
    selectors: Vec<Selector>,
}

/// What selection looks at.
#[derive(Debug, Clone, Default)]
pub struct QueryContext<'a> {
    pub user: &'a str,
    pub source: Option<&'a str>,
    pub client_tags: &'a [String],
    pub query_type: &'a str,
    /// The user's groups (no group provider exists yet: always empty).
    pub user_groups: &'a [String],
}

/// The group a query was placed in: its path, and the limits of it and every ancestor
/// (leaf first), resolved against the cluster's memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Selected {
    pub path: String,
    pub chain: Vec<GroupLimits>,
}

fn parse_policy(text: &str) -> Result<SchedulingPolicy, String> {
    match text.to_ascii_lowercase().as_str() {
        "fair" => Ok(SchedulingPolicy::Fair),
        "weighted" => Ok(SchedulingPolicy::Weighted),
        "weighted_fair" => Ok(SchedulingPolicy::WeightedFair),
        "query_priority" => Ok(SchedulingPolicy::QueryPriority),
        other => Err(format!("unknown schedulingPolicy '{other}' (fair, weighted, weighted_fair, query_priority)")),
    }
}

fn parse_memory(text: &str) -> Result<MemoryLimit, String> {
    let text = text.trim();
    if let Some(percent) = text.strip_suffix('%') {
        let value: f64 = percent.trim().parse().map_err(|_| format!("invalid softMemoryLimit '{text}'"))?;
        if !(0.0..=100.0).contains(&value) {
            return Err(format!("softMemoryLimit '{text}' must be between 0% and 100%"));
        }
        return Ok(MemoryLimit::Fraction(value / 100.0));
    }
    flotilla_proto::parse_data_size(text).map(MemoryLimit::Bytes).map_err(|e| format!("invalid softMemoryLimit: {e}"))
}

fn build_group(spec: GroupSpec, path: &str) -> Result<Group, String> {
    // No ':' either: paths with one are the warehouses' limits (`warehouse:NAME`).
    if spec.name.is_empty() || spec.name.contains(['.', ':']) {
        return Err(format!("group name '{}' under '{path}' must be non-empty and contain no '.' or ':'", spec.name));
    }
    let here = if path.is_empty() { spec.name.clone() } else { format!("{path}.{}", spec.name) };
    if spec.soft_cpu_limit.is_some() || spec.hard_cpu_limit.is_some() {
        return Err(format!(
            "group {here}: softCpuLimit and hardCpuLimit are not supported (CPU quotas are not enforced)"
        ));
    }
    let _ = spec.jmx_export;
    let mut names = std::collections::HashSet::new();
    let mut sub_groups = Vec::with_capacity(spec.sub_groups.len());
    for sub in spec.sub_groups {
        if !names.insert(sub.name.clone()) {
            return Err(format!("group {here} has two subgroups named '{}'", sub.name));
        }
        sub_groups.push(build_group(sub, &here)?);
    }
    let soft = spec.soft_concurrency_limit.unwrap_or(spec.hard_concurrency_limit);
    if soft > spec.hard_concurrency_limit {
        return Err(format!("group {here}: softConcurrencyLimit ({soft}) exceeds hardConcurrencyLimit"));
    }
    Ok(Group {
        name: spec.name,
        hard_concurrency_limit: spec.hard_concurrency_limit,
        soft_concurrency_limit: soft,
        max_queued: spec.max_queued,
        soft_memory_limit: parse_memory(&spec.soft_memory_limit).map_err(|e| format!("group {here}: {e}"))?,
        scheduling_policy: match spec.scheduling_policy {
            Some(text) => parse_policy(&text).map_err(|e| format!("group {here}: {e}"))?,
            None => SchedulingPolicy::Fair,
        },
        scheduling_weight: spec.scheduling_weight.unwrap_or(1).max(1),
        sub_groups,
    })
}

fn full_regex(pattern: &str, field: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{pattern})$"))
        .map_err(|e| format!("selector {field} '{pattern}' is not a valid regex: {e}"))
}

/// The group specs along `segments` (templates matched as they are written).
fn resolve<'a>(roots: &'a [Group], segments: &[String]) -> Option<Vec<&'a Group>> {
    let mut chain = Vec::new();
    let mut level = roots;
    for segment in segments {
        let group = level.iter().find(|g| &g.name == segment)?;
        chain.push(group);
        level = &group.sub_groups;
    }
    Some(chain)
}

impl ResourceGroupsConfig {
    /// Parses and validates `resource-groups.json`; the error says what is wrong and where.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: FileConfig =
            serde_json::from_str(text).map_err(|e| format!("invalid resource group configuration: {e}"))?;
        if file.cpu_quota_period.is_some() {
            return Err("cpuQuotaPeriod is not supported (CPU quotas are not enforced)".into());
        }
        if file.root_groups.is_empty() {
            return Err("rootGroups is empty".into());
        }
        let mut names = std::collections::HashSet::new();
        let mut roots = Vec::new();
        for spec in file.root_groups {
            if !names.insert(spec.name.clone()) {
                return Err(format!("two root groups named '{}'", spec.name));
            }
            roots.push(build_group(spec, "")?);
        }
        let mut selectors = Vec::new();
        for (index, spec) in file.selectors.into_iter().enumerate() {
            let at = |message: String| format!("selector {}: {message}", index + 1);
            let group: Vec<String> = spec.group.split('.').map(str::to_string).collect();
            let chain =
                resolve(&roots, &group).ok_or_else(|| at(format!("group '{}' is not configured", spec.group)))?;
            if chain.last().is_some_and(|g| !g.sub_groups.is_empty()) {
                return Err(at(format!("group '{}' has subgroups; queries can only run in a leaf group", spec.group)));
            }
            let query_type = match spec.query_type {
                Some(kind) => {
                    let upper = kind.to_ascii_uppercase();
                    if !QUERY_TYPES.contains(&upper.as_str()) {
                        return Err(at(format!("unknown queryType '{kind}' ({})", QUERY_TYPES.join(", "))));
                    }
                    Some(upper)
                }
                None => None,
            };
            selectors.push(Selector {
                user: spec.user.as_deref().map(|p| full_regex(p, "user")).transpose().map_err(at)?,
                user_group: spec.user_group.as_deref().map(|p| full_regex(p, "userGroup")).transpose().map_err(at)?,
                source: spec.source.as_deref().map(|p| full_regex(p, "source")).transpose().map_err(at)?,
                query_type,
                client_tags: spec.client_tags.unwrap_or_default(),
                group,
            });
        }
        if selectors.is_empty() {
            return Err("no selectors: every query would be rejected".into());
        }
        Ok(Self { roots, selectors })
    }

    /// The group of a query: the first selector that matches, its template expanded; `None`
    /// when no selector matches (`QUERY_REJECTED`). `cluster_memory` resolves `%` limits.
    pub fn select(&self, query: &QueryContext, cluster_memory: u64) -> Option<Selected> {
        for selector in &self.selectors {
            let mut variables: BTreeMap<String, String> = BTreeMap::new();
            variables.insert("USER".into(), query.user.to_string());
            variables.insert("SOURCE".into(), query.source.unwrap_or_default().to_string());
            if let Some(regex) = &selector.user {
                let Some(captures) = regex.captures(query.user) else { continue };
                capture_names(regex, &captures, &mut variables);
            }
            if let Some(regex) = &selector.source {
                let Some(captures) = query.source.and_then(|s| regex.captures(s)) else { continue };
                capture_names(regex, &captures, &mut variables);
            }
            if let Some(regex) = &selector.user_group {
                if !query.user_groups.iter().any(|g| regex.is_match(g)) {
                    continue;
                }
            }
            if selector.query_type.as_deref().is_some_and(|kind| kind != query.query_type) {
                continue;
            }
            if !selector.client_tags.iter().all(|tag| query.client_tags.contains(tag)) {
                continue;
            }
            let chain = resolve(&self.roots, &selector.group)?;
            let segments: Vec<String> = selector.group.iter().map(|s| expand(s, &variables)).collect();
            let mut limits = Vec::with_capacity(chain.len());
            for (depth, group) in chain.iter().enumerate() {
                let path = segments[..=depth].join(".");
                let soft_memory_limit_bytes = match group.soft_memory_limit {
                    MemoryLimit::Bytes(bytes) => Some(bytes),
                    MemoryLimit::Fraction(f) if f >= 1.0 => None,
                    MemoryLimit::Fraction(f) => Some((cluster_memory as f64 * f) as u64),
                };
                limits.push(GroupLimits {
                    path,
                    hard_concurrency_limit: group.hard_concurrency_limit,
                    soft_concurrency_limit: Some(group.soft_concurrency_limit),
                    max_queued: group.max_queued,
                    soft_memory_limit_bytes,
                    scheduling_weight: group.scheduling_weight,
                    scheduling_policy: group.scheduling_policy,
                });
            }
            limits.reverse();
            return Some(Selected { path: segments.join("."), chain: limits });
        }
        None
    }
}

fn capture_names(regex: &Regex, captures: &regex::Captures, variables: &mut BTreeMap<String, String>) {
    for name in regex.capture_names().flatten() {
        if let Some(value) = captures.name(name) {
            variables.insert(name.to_string(), value.as_str().to_string());
        }
    }
}

/// `${NAME}` replaced by its value; dots in values become `_` (a dot separates groups).
fn expand(template: &str, variables: &BTreeMap<String, String>) -> String {
    let mut out = template.to_string();
    for (name, value) in variables {
        out = out.replace(&format!("${{{name}}}"), &value.replace(['.', ':'], "_"));
    }
    out
}

pub use flotilla_protocol::query_type;

/// Reads the file named by `resource-groups.config-file`.
pub fn load(path: &std::path::Path) -> Result<ResourceGroupsConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("failed to read {}: {e}", path.display()))?;
    ResourceGroupsConfig::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Every group's path (templates unexpanded) and hard limit.
#[cfg(test)]
fn paths(config: &ResourceGroupsConfig) -> std::collections::HashMap<String, u32> {
    fn walk(group: &Group, prefix: &str, out: &mut std::collections::HashMap<String, u32>) {
        let path = if prefix.is_empty() { group.name.clone() } else { format!("{prefix}.{}", group.name) };
        out.insert(path.clone(), group.hard_concurrency_limit);
        for sub in &group.sub_groups {
            walk(sub, &path, out);
        }
    }
    let mut out = std::collections::HashMap::new();
    for root in &config.roots {
        walk(root, "", &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRINO_EXAMPLE: &str = r#"{
      "rootGroups": [
        {"name": "global", "softMemoryLimit": "80%", "hardConcurrencyLimit": 100, "maxQueued": 1000,
         "schedulingPolicy": "weighted", "jmxExport": true,
         "subGroups": [
           {"name": "data_definition", "softMemoryLimit": "10%", "hardConcurrencyLimit": 5, "maxQueued": 100, "schedulingWeight": 1},
           {"name": "adhoc", "softMemoryLimit": "10%", "hardConcurrencyLimit": 50, "maxQueued": 1, "schedulingWeight": 10,
            "subGroups": [
              {"name": "other", "softMemoryLimit": "10%", "hardConcurrencyLimit": 2, "maxQueued": 1, "schedulingWeight": 10,
               "schedulingPolicy": "weighted_fair",
               "subGroups": [{"name": "${USER}", "softMemoryLimit": "10%", "hardConcurrencyLimit": 1, "maxQueued": 100}]},
              {"name": "bi-${toolname}", "softMemoryLimit": "10%", "hardConcurrencyLimit": 10, "maxQueued": 100,
               "schedulingWeight": 10, "schedulingPolicy": "weighted_fair",
               "subGroups": [{"name": "${USER}", "softMemoryLimit": "10%", "hardConcurrencyLimit": 3, "maxQueued": 10}]}
            ]},
           {"name": "pipeline", "softMemoryLimit": "80%", "hardConcurrencyLimit": 45, "maxQueued": 100, "schedulingWeight": 1,
            "jmxExport": true,
            "subGroups": [{"name": "pipeline_${USER}", "softMemoryLimit": "50%", "hardConcurrencyLimit": 5, "maxQueued": 100}]}
         ]},
        {"name": "admin", "softMemoryLimit": "100%", "hardConcurrencyLimit": 50, "maxQueued": 100,
         "schedulingPolicy": "query_priority", "jmxExport": true}
      ],
      "selectors": [
        {"user": "bob", "group": "admin"},
        {"source": ".*pipeline.*", "queryType": "DATA_DEFINITION", "group": "global.data_definition"},
        {"source": ".*pipeline.*", "group": "global.pipeline.pipeline_${USER}"},
        {"source": "jdbc#(?<toolname>.*)", "clientTags": ["hipri"], "group": "global.adhoc.bi-${toolname}.${USER}"},
        {"group": "global.adhoc.other.${USER}"}
      ]
    }"#;

    fn select(
        config: &ResourceGroupsConfig,
        user: &str,
        source: Option<&str>,
        tags: &[&str],
        sql: &str,
    ) -> Option<String> {
        let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
        let context = QueryContext { user, source, client_tags: &tags, query_type: query_type(sql), user_groups: &[] };
        config.select(&context, 1000).map(|s| s.path)
    }

    #[test]
    fn trinos_documented_example_parses_and_selects_as_documented() {
        let config = ResourceGroupsConfig::parse(TRINO_EXAMPLE).unwrap();
        assert_eq!(paths(&config)["global.adhoc.other"], 2);
        assert_eq!(select(&config, "bob", None, &[], "SELECT 1").as_deref(), Some("admin"));
        assert_eq!(
            select(&config, "etl", Some("nightly-pipeline"), &[], "CREATE TABLE t (a int)").as_deref(),
            Some("global.data_definition")
        );
        assert_eq!(
            select(&config, "etl", Some("nightly-pipeline"), &[], "SELECT 1").as_deref(),
            Some("global.pipeline.pipeline_etl")
        );
        assert_eq!(
            select(&config, "alice", Some("jdbc#powerfulbi"), &["hipri"], "SELECT 1").as_deref(),
            Some("global.adhoc.bi-powerfulbi.alice")
        );
        assert_eq!(
            select(&config, "alice", Some("jdbc#powerfulbi"), &[], "SELECT 1").as_deref(),
            Some("global.adhoc.other.alice"),
            "without the tag the catch-all applies"
        );
        // User names with dots cannot nest groups.
        assert_eq!(select(&config, "a.b", None, &[], "SELECT 1").as_deref(), Some("global.adhoc.other.a_b"));
        // Nor a ':' (paths with one are the warehouses' limits).
        assert_eq!(select(&config, "a:b", None, &[], "SELECT 1").as_deref(), Some("global.adhoc.other.a_b"));
    }

    #[test]
    fn selected_limits_run_from_the_leaf_to_the_root_with_memory_resolved() {
        let config = ResourceGroupsConfig::parse(TRINO_EXAMPLE).unwrap();
        let context = QueryContext { user: "carol", query_type: "SELECT", ..Default::default() };
        let selected = config.select(&context, 1000).unwrap();
        let chain: Vec<(&str, u32)> =
            selected.chain.iter().map(|g| (g.path.as_str(), g.hard_concurrency_limit)).collect();
        assert_eq!(
            chain,
            [("global.adhoc.other.carol", 1), ("global.adhoc.other", 2), ("global.adhoc", 50), ("global", 100)]
        );
        assert_eq!(selected.chain[3].soft_memory_limit_bytes, Some(800));
        assert_eq!(selected.chain[1].scheduling_policy, SchedulingPolicy::WeightedFair);
    }

    #[test]
    fn no_matching_selector_rejects() {
        let config = ResourceGroupsConfig::parse(
            r#"{"rootGroups": [{"name": "g", "softMemoryLimit": "1GB", "hardConcurrencyLimit": 1, "maxQueued": 1}],
                "selectors": [{"user": "only-me", "group": "g"}]}"#,
        )
        .unwrap();
        assert!(select(&config, "someone", None, &[], "SELECT 1").is_none());
        assert_eq!(select(&config, "only-me", None, &[], "SELECT 1").as_deref(), Some("g"));
    }

    #[test]
    fn invalid_configurations_say_why() {
        let cases = [
            ("{", "invalid resource group configuration"),
            (r#"{"rootGroups": [], "selectors": []}"#, "rootGroups is empty"),
            (
                r#"{"rootGroups": [{"name": "g", "softMemoryLimit": "1GB", "hardConcurrencyLimit": 1, "maxQueued": 1}],
                   "selectors": [{"group": "missing"}]}"#,
                "'missing' is not configured",
            ),
            (
                r#"{"rootGroups": [{"name": "g", "softMemoryLimit": "1GB", "hardConcurrencyLimit": 1, "maxQueued": 1,
                   "subGroups": [{"name": "s", "softMemoryLimit": "1GB", "hardConcurrencyLimit": 1, "maxQueued": 1}]}],
                   "selectors": [{"group": "g"}]}"#,
                "leaf group",
            ),
            (
                r#"{"rootGroups": [{"name": "g", "softMemoryLimit": "1GB", "hardConcurrencyLimit": 1, "maxQueued": 1,
                   "hardCpuLimit": "1h"}], "selectors": [{"group": "g"}]}"#,
                "not supported",
            ),
            (
                r#"{"rootGroups": [{"name": "g", "softMemoryLimit": "1GB", "hardConcurrencyLimit": 1, "maxQueued": 1}],
                   "selectors": [{"group": "g"}], "cpuQuotaPeriod": "1h"}"#,
                "cpuQuotaPeriod",
            ),
            (
                r#"{"rootGroups": [{"name": "g", "softMemoryLimit": "1GB", "hardConcurrencyLimit": 1, "maxQueued": 1,
                   "schedulingPolicy": "lottery"}], "selectors": [{"group": "g"}]}"#,
                "unknown schedulingPolicy",
            ),
            (
                r#"{"rootGroups": [{"name": "g", "softMemoryLimit": "120%", "hardConcurrencyLimit": 1, "maxQueued": 1}],
                   "selectors": [{"group": "g"}]}"#,
                "between 0% and 100%",
            ),
            (
                r#"{"rootGroups": [{"name": "g", "softMemoryLimit": "1GB", "hardConcurrencyLimit": 1, "maxQueued": 1}],
                   "selectors": [{"user": "(", "group": "g"}]}"#,
                "not a valid regex",
            ),
            (
                r#"{"rootGroups": [{"name": "g", "softMemoryLimit": "1GB", "hardConcurrencyLimit": 1, "maxQueued": 1,
                   "bogus": 1}], "selectors": [{"group": "g"}]}"#,
                "unknown field",
            ),
            (
                r#"{"rootGroups": [{"name": "warehouse:bi", "softMemoryLimit": "1GB", "hardConcurrencyLimit": 1,
                   "maxQueued": 1}], "selectors": [{"group": "warehouse:bi"}]}"#,
                "contain no '.' or ':'",
            ),
        ];
        for (text, expected) in cases {
            let error = ResourceGroupsConfig::parse(text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
