//! The one cluster harness of the integration tests: starts real Flotilla roles on loopback
//! with free ports, and stops them when the test ends, whether it passed or not.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use flotilla_coordinator::{Coordinator, CoordinatorConfig, RunningCoordinator};
use flotilla_sql::catalog::{parse_properties, Catalogs};

/// Builds a [`TestCluster`].
#[derive(Default)]
pub struct TestClusterBuilder {
    config: CoordinatorConfig,
    catalog_files: Vec<(String, String)>,
}

impl TestClusterBuilder {
    /// Adds `etc/catalog/NAME.properties` with `text`.
    pub fn catalog(mut self, name: &str, text: &str) -> Self {
        self.catalog_files.push((name.to_string(), text.to_string()));
        self
    }

    pub fn config(mut self, edit: impl FnOnce(&mut CoordinatorConfig)) -> Self {
        edit(&mut self.config);
        self
    }

    pub async fn start(self) -> TestCluster {
        let catalogs = if self.catalog_files.is_empty() {
            Catalogs::defaults()
        } else {
            let mut catalogs = Catalogs::default();
            for (name, text) in &self.catalog_files {
                let path = Path::new("etc/catalog").join(format!("{name}.properties"));
                let properties = parse_properties(&path, text).expect("valid test catalog");
                catalogs.insert(Catalogs::build(&path, name, properties).expect("valid test catalog"));
            }
            catalogs
        };
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let coordinator = Coordinator::start(self.config, catalogs, address).await.expect("coordinator starts");
        TestCluster { coordinator: Some(coordinator) }
    }
}

/// Running roles; [`TestCluster::shutdown`] stops them, and dropping the cluster (a failed
/// assertion) signals them to stop too.
pub struct TestCluster {
    coordinator: Option<RunningCoordinator>,
}

impl TestCluster {
    pub fn builder() -> TestClusterBuilder {
        TestClusterBuilder::default()
    }

    pub async fn start_default() -> TestCluster {
        Self::builder().start().await
    }

    pub fn url(&self) -> String {
        self.coordinator.as_ref().expect("running").url()
    }

    pub async fn shutdown(mut self) {
        if let Some(coordinator) = self.coordinator.take() {
            coordinator.shutdown().await;
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if let Some(coordinator) = self.coordinator.take() {
            coordinator.shutdown_token().cancel();
        }
    }
}

/// Builds a [`ProcessCluster`]: real `flotilla` processes (resource managers, coordinators,
/// workers) on loopback, started the way `flotilla up` starts them.
pub struct ProcessClusterBuilder {
    spec: flotilla::local_cluster::LocalClusterSpec,
    log_dir: TempDir,
}

impl ProcessClusterBuilder {
    pub fn resource_managers(mut self, count: usize) -> Self {
        self.spec.resource_managers = count;
        self
    }

    pub fn coordinators(mut self, count: usize) -> Self {
        self.spec.coordinators = count;
        self
    }

    pub fn workers(mut self, count: usize) -> Self {
        self.spec.workers = count;
        self
    }

    /// Gateways in front of the coordinators, routing new queries by `policy`.
    pub fn gateways(mut self, count: usize, policy: flotilla_gateway::RoutingPolicy) -> Self {
        self.spec.gateways = count;
        self.spec.routing_policy = policy;
        self
    }

    /// Every node reads this `etc/` directory.
    pub fn etc_dir(mut self, dir: &Path) -> Self {
        self.spec.etc_dir = Some(dir.to_path_buf());
        self
    }

    /// Node i is configured with resource manager i % N only.
    pub fn one_resource_manager_each(mut self) -> Self {
        self.spec.one_resource_manager_each = true;
        self
    }

    /// (warehouse, worker group) of each worker, in order.
    pub fn worker_labels(mut self, labels: &[(&str, &str)]) -> Self {
        self.spec.worker_labels = labels.iter().map(|(w, g)| (w.to_string(), g.to_string())).collect();
        self
    }

    pub fn start(self) -> ProcessCluster {
        let cluster =
            flotilla::local_cluster::LocalCluster::start(Path::new(env!("CARGO_BIN_EXE_flotilla")), &self.spec)
                .unwrap_or_else(|error| panic!("cluster starts: {error}"));
        ProcessCluster { cluster, _logs: self.log_dir }
    }
}

/// A cluster of processes; dropping it (even on a failed assertion) stops every process.
pub struct ProcessCluster {
    pub cluster: flotilla::local_cluster::LocalCluster,
    _logs: TempDir,
}

impl ProcessCluster {
    pub fn builder() -> ProcessClusterBuilder {
        let logs = TempDir::new("flotilla-cluster");
        let spec = flotilla::local_cluster::LocalClusterSpec {
            resource_managers: 1,
            coordinators: 1,
            workers: 0,
            client_port: 0,
            gateways: 0,
            routing_policy: flotilla_gateway::RoutingPolicy::RoundRobin,
            bind: std::net::IpAddr::V4(Ipv4Addr::LOCALHOST),
            etc_dir: None,
            log_dir: logs.path.clone(),
            one_resource_manager_each: false,
            worker_labels: Vec::new(),
            env: vec![("RUST_LOG".into(), "info".into())],
        };
        ProcessClusterBuilder { spec, log_dir: logs }
    }

    /// A signed client for internal endpoints, holding this cluster's secret.
    pub fn internal_client(&self) -> flotilla_node::InternalClient {
        let auth = flotilla_proto::InternalAuth::new(&self.cluster.secret, "test-harness").unwrap();
        flotilla_node::InternalClient::new(std::sync::Arc::new(auth), std::time::Duration::from_secs(5))
    }

    /// A token of this cluster's internal signature, as another node would send it.
    pub fn internal_token(&self) -> String {
        flotilla_proto::InternalAuth::new(&self.cluster.secret, "test-harness").unwrap().token()
    }

    /// Asks the node at `url` to drain (`PUT /v1/info/state`, signed as a node of the
    /// cluster); returns the answer's status.
    pub async fn drain(&self, url: &str) -> u16 {
        let answer = reqwest::Client::new()
            .put(format!("{url}/v1/info/state"))
            .header(flotilla_proto::INTERNAL_BEARER_HEADER, self.internal_token())
            .json(&"SHUTTING_DOWN")
            .send()
            .await
            .unwrap();
        answer.status().as_u16()
    }

    pub fn coordinator_url(&self) -> String {
        self.cluster.coordinators[0].url.clone()
    }

    pub fn gateway_url(&self) -> String {
        self.cluster.gateways[0].url.clone()
    }
}

/// A directory removed when dropped.
pub struct TempDir {
    pub path: std::path::PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let unique = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
        );
        let path = std::env::temp_dir().join(unique);
        std::fs::create_dir_all(&path).unwrap();
        Self { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept {} for inspection", self.path.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
