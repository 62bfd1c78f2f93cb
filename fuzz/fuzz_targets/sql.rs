//! Whole statements through the engine, over a small catalog: a `files` catalog with two
//! tiny tables (and room to create more), plus `system`. Each statement is planned and run
//! for at most a second, reading at most a few thousand rows. A panic inside DataFusion is
//! tolerated (a coordinator turns one into GENERIC_INTERNAL_ERROR); anything that kills the
//! process (a stack overflow, an abort) is a crash.
#![no_main]

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use flotilla_sql::catalog::{parse_properties, Catalogs, NodeRow, QueryRow, RuntimeSource};
use flotilla_sql::{Engine, SqlSession};
use futures::StreamExt;
use libfuzzer_sys::fuzz_target;

#[derive(Debug)]
struct NoCluster;

#[async_trait::async_trait]
impl RuntimeSource for NoCluster {
    fn nodes(&self) -> Vec<NodeRow> {
        Vec::new()
    }

    fn queries(&self) -> Vec<QueryRow> {
        Vec::new()
    }

    async fn kill_query(&self, _: &str, query_id: &str, _: Option<&str>) -> Result<(), flotilla_proto::FlotillaError> {
        Err(flotilla_proto::FlotillaError::new(flotilla_proto::ErrorCode::NotFound, format!("no query {query_id}")))
    }
}

struct Harness {
    runtime: tokio::runtime::Runtime,
    engine: Engine,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        // Panics are reported as errors by a coordinator; only what kills the process counts.
        std::panic::set_hook(Box::new(|_| {}));
        let root = std::env::temp_dir().join(format!("flotilla-fuzz-sql-{}", std::process::id()));
        std::fs::create_dir_all(root.join("s")).unwrap();
        std::fs::write(root.join("s/t.csv"), "a,b,c\n1,x,2.5\n2,y,\n3,,-1\n").unwrap();
        std::fs::write(root.join("s/u.json"), "{\"a\":1,\"d\":\"2024-01-01\"}\n{\"a\":5,\"d\":null}\n").unwrap();
        let text = format!("connector.name=files\nfiles.root={}\n", root.display());
        let path = Path::new("etc/catalog/lake.properties");
        let mut catalogs = Catalogs::default();
        catalogs.insert(Catalogs::build(path, "lake", parse_properties(path, &text).unwrap()).unwrap());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_stack_size(16 << 20)
            .enable_all()
            .build()
            .unwrap();
        let engine = runtime.block_on(async { Engine::new(&catalogs, Arc::new(NoCluster)) });
        Harness { runtime, engine }
    })
}

fuzz_target!(|data: &[u8]| {
    let sql = String::from_utf8_lossy(data).into_owned();
    let harness = harness();
    let session = SqlSession {
        user: "fuzz".into(),
        catalog: Some("lake".into()),
        schema: Some("s".into()),
        ..Default::default()
    };
    let engine = harness.engine.clone();
    let run = harness.runtime.spawn(async move {
        let work = async {
            let Ok(mut result) = engine.execute(&session, &sql).await else { return };
            let mut rows = 0;
            while let Some(Ok(batch)) = result.stream.next().await {
                rows += batch.num_rows();
                if rows > 10_000 {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), work).await;
    });
    // A panic in the task is the engine's error, not a crash.
    let _ = harness.runtime.block_on(run);
});
