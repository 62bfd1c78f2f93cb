//! Where a `files` catalog keeps its objects: a local directory (every node sees it at the
//! same path) or an S3 bucket (AWS, or an S3-compatible store such as MinIO), both through
//! the `object_store` crate, so the catalog's metadata, DataFusion's scans and Flotilla's
//! writers use one interface and one set of guarantees:
//!
//! - `put` with [`PutMode::Create`] fails when the object exists (S3's `If-None-Match: *`,
//!   a hard link locally): the one commit point of every change (see `files_table`);
//! - an object appears whole or not at all (uploads complete or are dropped);
//! - listings are consistent (S3 is strongly consistent since 2020).
//!
//! The catalog addresses objects by paths relative to its root; DataFusion addresses them
//! by URL (`file:///dir/...`, `s3://bucket/prefix/...`) through the store each node registers
//! for that URL ([`Root::object_store`]), so every node needs the catalog's properties —
//! as in Trino, where every node has `etc/catalog/`.
//!
//! Every request to the store is asynchronous: nothing here blocks a thread (DataFusion's
//! synchronous listing methods answer from the last listing; see `catalog::listing`).

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnv;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{
    ClientOptions, ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{CatalogError, Properties};

/// The properties of an `s3://` root (Trino's names for its native S3 file system).
const S3_PROPERTIES: [&str; 5] =
    ["s3.endpoint", "s3.region", "s3.aws-access-key", "s3.aws-secret-key", "s3.path-style-access"];

/// A catalog's root.
#[derive(Debug)]
pub struct Root {
    /// The catalog's objects, by path relative to the root.
    store: Arc<dyn ObjectStore>,
    /// The URL DataFusion reads the root's objects by, ending in `/`.
    base: String,
    /// The store DataFusion finds for `base`, and what configures it (two catalogs on one
    /// bucket must configure it alike).
    registered: (ObjectStoreUrl, Arc<dyn ObjectStore>, String),
    /// The directory, for a local root.
    local: Option<PathBuf>,
    /// A runtime with only the root's store, for reading plain files' schemas.
    runtime: Arc<RuntimeEnv>,
}

impl Root {
    /// The same root with its store wrapped (a test's slow store, say).
    #[cfg(test)]
    pub(crate) fn with_store_wrapped(
        mut self,
        wrap: impl FnOnce(Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore>,
    ) -> Self {
        self.store = wrap(self.store);
        self
    }

    /// `root`: the `files.root` property; `properties`: the catalog's other properties, of
    /// which the S3 ones are taken.
    pub fn new(root: &str, properties: &mut Properties) -> Result<Self, CatalogError> {
        let invalid = |key: &str, message: String| CatalogError::InvalidProperty { key: key.into(), message };
        match root.split_once("://") {
            Some(("s3", rest)) => Self::s3(root, rest, properties),
            Some(("file", _)) | None => {
                if let Some(key) = S3_PROPERTIES.iter().find(|key| properties.contains_key(**key)) {
                    return Err(invalid(key, format!("only for s3:// roots, and files.root is '{root}'")));
                }
                let path = PathBuf::from(root.trim_start_matches("file://"));
                if !path.is_absolute() {
                    return Err(invalid(
                        "files.root",
                        format!("'{root}' must be an absolute path (every node resolves it alike)"),
                    ));
                }
                if !path.is_dir() {
                    return Err(invalid("files.root", format!("'{root}' is not a directory")));
                }
                let dir = std::fs::canonicalize(&path).map_err(|e| invalid("files.root", format!("'{root}': {e}")))?;
                let store = LocalFileSystem::new_with_prefix(&dir).map_err(|e| invalid("files.root", e.to_string()))?;
                let shown = dir.to_string_lossy().trim_end_matches('/').to_string();
                let registered: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new());
                let registered = (ObjectStoreUrl::local_filesystem(), registered, "local".to_string());
                Ok(Self::assemble(Arc::new(store), format!("file://{shown}/"), registered, Some(dir)))
            }
            Some((scheme, _)) => Err(invalid(
                "files.root",
                format!("{scheme}:// is not supported: use an absolute directory, file:// or s3://"),
            )),
        }
    }

    fn s3(root: &str, rest: &str, properties: &mut Properties) -> Result<Self, CatalogError> {
        let invalid = |key: &str, message: String| CatalogError::InvalidProperty { key: key.into(), message };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_matches('/');
        if bucket.is_empty() {
            return Err(invalid("files.root", format!("'{root}' names no bucket (s3://BUCKET[/PREFIX])")));
        }
        // Credentials and region from the environment (AWS_ACCESS_KEY_ID, AWS_REGION, ...)
        // unless the catalog gives them.
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        let mut settings = format!("s3://{bucket}");
        let mut allow_http = false;
        if let Some(endpoint) = properties.remove("s3.endpoint") {
            let url = url::Url::parse(&endpoint).map_err(|e| invalid("s3.endpoint", format!("'{endpoint}': {e}")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(invalid("s3.endpoint", format!("'{endpoint}' must be an http:// or https:// URL")));
            }
            builder = builder.with_endpoint(endpoint.trim_end_matches('/'));
            allow_http = url.scheme() == "http";
            settings.push_str(&format!(" endpoint={endpoint}"));
        }
        if let Some(region) = properties.remove("s3.region") {
            builder = builder.with_region(&region);
            settings.push_str(&format!(" region={region}"));
        }
        match (properties.remove("s3.aws-access-key"), properties.remove("s3.aws-secret-key")) {
            (Some(key), Some(secret)) => {
                settings.push_str(&format!(" key={key}"));
                builder = builder.with_access_key_id(key).with_secret_access_key(secret);
            }
            (None, None) => {}
            (Some(_), None) => return Err(invalid("s3.aws-secret-key", "required with s3.aws-access-key".into())),
            (None, Some(_)) => return Err(invalid("s3.aws-access-key", "required with s3.aws-secret-key".into())),
        }
        // Path-style requests (`endpoint/bucket/key`) unless told otherwise: what MinIO and
        // most S3-compatible stores need, and AWS still serves.
        let path_style = match properties.remove("s3.path-style-access").as_deref() {
            None | Some("true") => true,
            Some("false") => false,
            Some(other) => return Err(invalid("s3.path-style-access", format!("'{other}' is not true or false"))),
        };
        settings.push_str(&format!(" path-style={path_style}"));
        // Every request has a deadline; plain http only when the endpoint says so.
        let client = ClientOptions::new()
            .with_timeout(Duration::from_secs(30))
            .with_connect_timeout(Duration::from_secs(5))
            .with_allow_http(allow_http);
        // A store that does not answer fails the statement within about a minute, not the
        // crate's default of three.
        let retry = RetryConfig { max_retries: 3, retry_timeout: Duration::from_secs(30), ..RetryConfig::default() };
        let bucket_store = builder
            .with_virtual_hosted_style_request(!path_style)
            .with_client_options(client)
            .with_retry(retry)
            .build()
            .map_err(|e| invalid("files.root", format!("'{root}': {e}")))?;
        let bucket_store: Arc<dyn ObjectStore> = Arc::new(bucket_store);
        let store: Arc<dyn ObjectStore> = match prefix {
            "" => bucket_store.clone(),
            prefix => Arc::new(PrefixStore::new(bucket_store.clone(), prefix)),
        };
        let url = ObjectStoreUrl::parse(format!("s3://{bucket}")).map_err(|e| invalid("files.root", e.to_string()))?;
        let base = match prefix {
            "" => format!("s3://{bucket}/"),
            prefix => format!("s3://{bucket}/{prefix}/"),
        };
        Ok(Self::assemble(store, base, (url, bucket_store, settings), None))
    }

    fn assemble(
        store: Arc<dyn ObjectStore>,
        base: String,
        registered: (ObjectStoreUrl, Arc<dyn ObjectStore>, String),
        local: Option<PathBuf>,
    ) -> Self {
        let runtime = Arc::new(RuntimeEnv::default());
        runtime.register_object_store(registered.0.as_ref(), registered.1.clone());
        Self { store, base, registered, local, runtime }
    }

    /// A runtime whose only object store is the root's.
    pub fn runtime(&self) -> &Arc<RuntimeEnv> {
        &self.runtime
    }

    /// The catalog's objects, by path relative to the root.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The URL of `path` (relative to the root), as DataFusion reads it.
    pub fn url_of(&self, path: &Path) -> String {
        format!("{}{path}", self.base)
    }

    /// The store every node registers for the root's URL, and a description of its
    /// configuration.
    pub fn object_store(&self) -> &(ObjectStoreUrl, Arc<dyn ObjectStore>, String) {
        &self.registered
    }

    /// Removes the empty directories left under `path` (and `path` itself when empty) on a
    /// local root, once its objects are deleted; object stores have no directories.
    pub fn prune(&self, path: &Path) {
        fn prune_dir(dir: &std::path::Path) {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for entry in entries.flatten() {
                    if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        prune_dir(&entry.path());
                    }
                }
            }
            let _ = std::fs::remove_dir(dir);
        }
        if let Some(dir) = self.local_dir(path) {
            prune_dir(&dir);
        }
    }

    /// Removes what is left under `path` on a local root once its objects are deleted: the
    /// staging files of uploads that never finished (a killed worker's), which listings do
    /// not show. (On S3 those are incomplete multipart uploads: a bucket lifecycle rule
    /// aborts them.)
    pub fn remove_remains(&self, path: &Path) {
        if let Some(dir) = self.local_dir(path) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    /// Where `path` is on a local root (never the root itself).
    fn local_dir(&self, path: &Path) -> Option<PathBuf> {
        let local = self.local.as_ref()?;
        let mut dir = local.clone();
        dir.extend(path.parts().map(|part| part.as_ref().to_string()));
        (dir != *local).then_some(dir)
    }
}

/// When what a failed write left is swept again: writers on other nodes that were cancelled
/// with the query may still finish an upload already in flight, or remove its staging file,
/// just after the first sweep (found in `writes_racing_drops_lose_nothing_acknowledged`:
/// empty directories of a dropped schema stayed behind and listed it again).
const STRAGGLER_SWEEPS: [Duration; 3] = [Duration::ZERO, Duration::from_secs(2), Duration::from_secs(10)];

/// Runs `sweep` (the clean-up of what a write that did not commit left) in the background,
/// at once and again after each of [`STRAGGLER_SWEEPS`].
pub fn sweep_later<F, Fut>(sweep: F)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    spawn(async move {
        for delay in STRAGGLER_SWEEPS {
            tokio::time::sleep(delay).await;
            sweep().await;
        }
    });
}

/// Starts `future` on the runtime of the caller without waiting (clean-ups from `Drop`);
/// outside any runtime (a process shutting down) it is left undone, with a warning: what it
/// would have deleted is what a failed write leaves, which no reader sees.
pub fn spawn<F>(future: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn(future)),
        Err(_) => tracing::warn!("a clean-up of a files catalog was skipped: no runtime is running"),
    }
}

/// The names of the "directories" right under `dir`, and the objects right in it.
pub async fn list_dir(store: &dyn ObjectStore, dir: &Path) -> object_store::Result<(Vec<String>, Vec<ObjectMeta>)> {
    let prefix = (!dir.as_ref().is_empty()).then_some(dir);
    let listed = store.list_with_delimiter(prefix).await?;
    let mut dirs: Vec<String> =
        listed.common_prefixes.iter().filter_map(|p| p.filename().map(str::to_string)).collect();
    dirs.sort();
    Ok((dirs, listed.objects))
}

/// Every object under `dir`, at any depth.
pub async fn list_all(store: &dyn ObjectStore, dir: &Path) -> object_store::Result<Vec<ObjectMeta>> {
    store.list(Some(dir)).try_collect().await
}

/// Deletes `paths` (already absent ones too), a few at a time.
pub async fn delete_all(store: &Arc<dyn ObjectStore>, paths: Vec<Path>) -> object_store::Result<()> {
    let store = store.clone();
    futures::stream::iter(paths)
        .map(move |path| {
            let store = store.clone();
            async move {
                match store.delete(&path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(error) => Err(error),
                }
            }
        })
        .buffer_unordered(16)
        .try_collect()
        .await
}

/// Reads a JSON object; `None` when it does not exist.
pub async fn read_json<T: DeserializeOwned>(store: &dyn ObjectStore, path: &Path) -> object_store::Result<Option<T>> {
    let bytes = match store.get(path).await {
        Ok(result) => result.bytes().await?,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(error) => return Err(error),
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| object_store::Error::Generic {
        store: "flotilla",
        source: format!("{path} is unreadable (written by an older Flotilla, or damaged): {e}").into(),
    })
}

/// Writes a JSON object; with [`PutMode::Create`], fails with `AlreadyExists` when it exists.
pub async fn write_json<T: Serialize>(
    store: &dyn ObjectStore,
    path: &Path,
    value: &T,
    mode: PutMode,
) -> object_store::Result<()> {
    let text = serde_json::to_vec_pretty(value)
        .map_err(|e| object_store::Error::Generic { store: "flotilla", source: e.to_string().into() })?;
    store.put_opts(path, PutPayload::from(text), PutOptions::from(mode)).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_and_their_properties() {
        let mut none = Properties::new();
        for bad in ["relative/path", "/definitely/not/here", "gs://bucket", "s3://", "s3:///x"] {
            assert!(Root::new(bad, &mut none).is_err(), "{bad}");
        }
        let dir = std::env::temp_dir();
        let local = Root::new(&format!("file://{}", dir.display()), &mut none).unwrap();
        assert!(local.url_of(&Path::from("a/b")).starts_with("file:///"));
        let mut s3 = Properties::from([("s3.endpoint".to_string(), "http://127.0.0.1:9000".to_string())]);
        assert!(Root::new(dir.to_str().unwrap(), &mut s3).is_err(), "S3 settings on a local root");
        let root = Root::new("s3://lake/warehouse/", &mut s3).unwrap();
        assert!(s3.is_empty(), "the S3 properties are taken");
        assert_eq!(root.url_of(&Path::from("sales/orders")), "s3://lake/warehouse/sales/orders");
        assert_eq!(root.object_store().0.as_str(), "s3://lake/");
        let mut half = Properties::from([("s3.aws-access-key".to_string(), "a".to_string())]);
        assert!(Root::new("s3://lake", &mut half).is_err(), "a key without its secret");
        let mut bad = Properties::from([("s3.endpoint".to_string(), "ftp://x".to_string())]);
        assert!(Root::new("s3://lake", &mut bad).is_err());
    }
}
