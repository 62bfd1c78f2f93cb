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
