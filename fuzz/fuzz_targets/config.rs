//! The configuration parsers an operator's files go through: properties files into node,
//! coordinator and catalog settings, Trino's resource-group JSON (and selecting a group with
//! it), durations and data sizes. Bad input is an error naming what is wrong, never a crash.
#![no_main]

use std::path::Path;

use flotilla_coordinator::resource_groups::{QueryContext, ResourceGroupsConfig};
use flotilla_coordinator::CoordinatorConfig;
use flotilla_proto::NodeConfig;
use flotilla_sql::catalog::{parse_properties, Catalogs};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    match mode % 3 {
        0 => {
            let _ = flotilla_proto::parse_duration(&text);
            let _ = flotilla_proto::parse_data_size(&text);
            let Ok(properties) = parse_properties(Path::new("etc/config.properties"), &text) else { return };
            let mut node = NodeConfig::default();
            let mut coordinator = CoordinatorConfig::default();
            let _ = node.apply_all("etc/config.properties", &properties, |key, value| {
                coordinator.apply("etc/config.properties", key, value)
            });
            // The same text as a catalog file (a files root must not exist: no I/O is done
            // beyond looking).
            let _ = Catalogs::build(Path::new("etc/catalog/fuzz.properties"), "fuzz", properties);
        }
        _ => {
            let Ok(config) = ResourceGroupsConfig::parse(&text) else { return };
            let user_groups = vec!["analysts".to_string()];
            let tags = vec!["etl".to_string()];
            for user in ["alice", "", "bob.smith"] {
                let query = QueryContext {
                    user,
                    source: Some("dbt"),
                    client_tags: &tags,
                    query_type: "SELECT",
                    user_groups: &user_groups,
                };
                let _ = config.select(&query, 1 << 30);
            }
        }
    }
});
