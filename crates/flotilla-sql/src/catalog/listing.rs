//! Listing a catalog's schemas and tables without blocking a thread. DataFusion's listing
//! methods are synchronous, and a `files` catalog cannot answer them without asking its
//! store (a directory listing, an S3 request): so Flotilla's own code (`SHOW`, `USE`,
//! `information_schema`, `system.jdbc`, naming what is missing in an error) lists through
//! these functions, which ask a `files` catalog asynchronously and every other catalog (in
//! memory) directly. Planning needs none of this: DataFusion resolves the tables a statement
//! names through the asynchronous `SchemaProvider::table` before it plans.
//!
//! A store that cannot be listed lists nothing, with a warning (a client reading a table
//! gets the store's error); a schema whose existence the store cannot confirm is taken as
//! existing, for the same reason.

use std::sync::Arc;

use datafusion::catalog::{CatalogProvider, SchemaProvider};

use super::files::{FilesCatalog, FilesSchema};
use super::WithInformationSchema;
use crate::access::{SecuredCatalog, SecuredSchema};

/// The schemas of `catalog`, sorted.
pub async fn schema_names(catalog: &dyn CatalogProvider) -> Vec<String> {
    let any: &dyn std::any::Any = catalog;
    let mut names = if let Some(wrapped) = any.downcast_ref::<WithInformationSchema>() {
        let mut names = Box::pin(schema_names(wrapped.inner().as_ref())).await;
        names.push(super::information_schema::INFORMATION_SCHEMA.to_string());
        names
    } else if let Some(secured) = any.downcast_ref::<SecuredCatalog>() {
        let names = Box::pin(schema_names(secured.inner().as_ref())).await;
        names.into_iter().filter(|schema| crate::access::schema_visible(secured.name(), schema)).collect()
    } else if let Some(files) = any.downcast_ref::<FilesCatalog>() {
        files.list_schemas().await.unwrap_or_else(|error| {
            tracing::warn!(%error, "cannot list the schemas of a files catalog");
            Vec::new()
        })
    } else {
        catalog.schema_names()
    };
    names.sort();
    names
}

/// Schema `name` of `catalog`, when it exists.
pub async fn schema(catalog: &dyn CatalogProvider, name: &str) -> Option<Arc<dyn SchemaProvider>> {
    let any: &dyn std::any::Any = catalog;
    let exists = if let Some(wrapped) = any.downcast_ref::<WithInformationSchema>() {
        name == super::information_schema::INFORMATION_SCHEMA
            || Box::pin(schema(wrapped.inner().as_ref(), name)).await.is_some()
    } else if let Some(secured) = any.downcast_ref::<SecuredCatalog>() {
        Box::pin(schema(secured.inner().as_ref(), name)).await.is_some()
    } else if let Some(files) = any.downcast_ref::<FilesCatalog>() {
        files.has_schema(name).await.unwrap_or_else(|error| {
            tracing::warn!(%error, schema = name, "cannot tell whether a files schema exists");
            true
        })
    } else {
        true
    };
    exists.then(|| catalog.schema(name)).flatten()
}

/// The tables and views of `schema`, sorted.
pub async fn table_names(schema: &dyn SchemaProvider) -> Vec<String> {
    let any: &dyn std::any::Any = schema;
    if let Some(secured) = any.downcast_ref::<SecuredSchema>() {
        let names = Box::pin(table_names(secured.inner().as_ref())).await;
        return secured.visible(names);
    }
    let mut names = match any.downcast_ref::<FilesSchema>() {
        Some(files) => files.list_tables().await.unwrap_or_else(|error| {
            tracing::warn!(%error, "cannot list the tables of a files schema");
            Vec::new()
        }),
        None => schema.table_names(),
    };
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use object_store::throttle::{ThrottleConfig, ThrottledStore};
    use object_store::ObjectStoreExt;

    use super::*;
    use crate::catalog::Properties;

    /// A files catalog whose store answers every listing a second late: listing and looking
    /// up its tables leaves the thread free for other work meanwhile (on a runtime of one
    /// thread, another task keeps running), where a blocking listing would stall it.
    #[tokio::test(flavor = "current_thread")]
    async fn a_slow_store_does_not_block_the_thread_that_lists_it() {
        let dir = std::env::temp_dir().join(format!("flotilla-slow-{}-{}", std::process::id(), rand::random::<u32>()));
        std::fs::create_dir_all(dir.join("sales")).unwrap();
        std::fs::write(dir.join("sales/regions.csv"), "id,name\n1,north\n").unwrap();
        // The catalog's own requests go to a slow copy of the directory (a file's schema is
        // read through DataFusion's store for the directory, as on a real node).
        let copy = object_store::memory::InMemory::new();
        copy.put(&object_store::path::Path::from("sales/regions.csv"), "id,name\n1,north\n".into()).await.unwrap();
        let slow = ThrottleConfig {
            wait_list_per_call: Duration::from_secs(1),
            wait_list_with_delimiter_per_call: Duration::from_secs(1),
            ..ThrottleConfig::default()
        };
        let catalog = FilesCatalog::new("lake", dir.to_str().unwrap(), &mut Properties::new())
            .unwrap()
            .with_store_wrapped(|_| Arc::new(ThrottledStore::new(copy, slow)));
        let catalog = WithInformationSchema::new("lake".into(), Arc::new(catalog));

        let ticks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let ticker = tokio::spawn({
            let ticks = ticks.clone();
            async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    ticks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
        assert_eq!(schema_names(&catalog).await, vec!["information_schema", "sales"]);
        let sales = schema(&catalog, "sales").await.expect("the schema exists");
        assert!(schema(&catalog, "missing").await.is_none());
        assert_eq!(table_names(sales.as_ref()).await, vec!["regions"]);
        assert!(sales.table("regions").await.unwrap().is_some());
        // DataFusion's synchronous methods answer from those listings, without the store.
        assert_eq!(catalog.schema_names(), vec!["information_schema", "sales"]);
        assert!(sales.table_exist("regions"));
        let ticked = ticks.load(std::sync::atomic::Ordering::Relaxed);
        ticker.abort();
        // Several seconds of listings: a blocked thread would have let the ticker run never.
        assert!(ticked >= 10, "the other task ran {ticked} times while the store was listed");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
