//! Starting a cluster as separate processes on this machine: used by `flotilla up` and by
//! the multi-process test harness, so both start nodes the same way.
//!
//! Every node is a child process of the `flotilla` binary with its role's subcommand. Its
//! stdin is a pipe held by the launcher and the child exits when that pipe closes, so no
//! node outlives the launcher, even one killed with SIGKILL. A node reports readiness
//! with a `ready at URL` line on stderr; the rest of its stderr goes to its log file.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The environment variable a node reads the shared secret from (it overrides
/// `internal-communication.shared-secret`; the environment is not visible to other users,
/// unlike the command line).
pub const SECRET_ENV: &str = "FLOTILLA_SHARED_SECRET";

/// The marker a node prints once it serves: `flotilla <role> <node id> ready at <url>`.
pub const READY_MARKER: &str = " ready at ";

/// A role a node process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    ResourceManager,
    Coordinator,
    Worker,
    Gateway,
}

impl Role {
    pub fn subcommand(self) -> &'static str {
        match self {
            Role::ResourceManager => "resource-manager",
            Role::Coordinator => "coordinator",
            Role::Worker => "worker",
            Role::Gateway => "gateway",
        }
    }
}

/// How to start one node.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub role: Role,
    pub node_id: String,
    /// 0 picks a free port.
    pub port: u16,
    pub bind: IpAddr,
    pub discovery: Vec<String>,
    pub etc_dir: Option<PathBuf>,
    pub warehouse: Option<String>,
    pub worker_group: Option<String>,
    /// Configuration properties set on the command line (`--set KEY=VALUE`).
    pub settings: Vec<(String, String)>,
    /// Extra environment (for example `RUST_LOG`).
    pub env: Vec<(String, String)>,
    /// A network namespace to run the process in (`ip netns exec`), standing for a host of
    /// its own in tests.
    pub netns: Option<String>,
}

impl NodeSpec {
    pub fn new(role: Role, node_id: &str, bind: IpAddr) -> Self {
        Self {
            role,
            node_id: node_id.to_string(),
            port: 0,
            bind,
            discovery: Vec::new(),
            etc_dir: None,
            warehouse: None,
            worker_group: None,
            settings: Vec::new(),
            env: Vec::new(),
            netns: None,
        }
    }
}

/// A running node process.
#[derive(Debug)]
pub struct NodeProcess {
    pub spec: NodeSpec,
    pub url: String,
    pub log_path: PathBuf,
    child: Child,
    /// Closing it asks the node to shut down.
    stdin: Option<ChildStdin>,
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl NodeProcess {
    /// Starts a node and waits until it serves.
    pub fn spawn(
        binary: &Path,
        spec: &NodeSpec,
        secret: &str,
        log_dir: &Path,
        ready_timeout: Duration,
    ) -> Result<Self, String> {
        std::fs::create_dir_all(log_dir).map_err(|e| format!("failed to create {}: {e}", log_dir.display()))?;
        let log_path = log_dir.join(format!("{}.log", spec.node_id));
        let mut log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("failed to open {}: {e}", log_path.display()))?;
        let mut command = match &spec.netns {
            Some(namespace) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", namespace]).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        command
            .arg(spec.role.subcommand())
            .arg("--exit-with-stdin")
            .args(["--bind", &spec.bind.to_string()])
            .args(["--port", &spec.port.to_string()])
            .args(["--node-id", &spec.node_id])
            .env(SECRET_ENV, secret)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if !spec.discovery.is_empty() {
            command.args(["--discovery-uri", &spec.discovery.join(",")]);
        }
        if let Some(etc_dir) = &spec.etc_dir {
            command.arg("--etc-dir").arg(etc_dir);
        }
        if let Some(warehouse) = &spec.warehouse {
            command.args(["--warehouse", warehouse]);
        }
        if let Some(worker_group) = &spec.worker_group {
            command.args(["--worker-group", worker_group]);
        }
        for (key, value) in &spec.settings {
            command.args(["--set", &format!("{key}={value}")]);
        }
        for (key, value) in &spec.env {
            command.env(key, value);
        }
        let _ = writeln!(log, "--- starting {} {}", spec.role.subcommand(), spec.node_id);
        let mut child = command.spawn().map_err(|e| format!("failed to start {}: {e}", binary.display()))?;
        let stdin = child.stdin.take();
        let stderr = child.stderr.take().ok_or("the child has no stderr pipe")?;
        let (ready_sender, ready) = mpsc::channel();
        std::thread::spawn(move || {
            let mut ready_sender = Some(ready_sender);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(log, "{line}");
                if let Some(position) = line.find(READY_MARKER) {
                    if let Some(sender) = ready_sender.take() {
                        let _ = sender.send(line[position + READY_MARKER.len()..].trim().to_string());
                    }
                }
            }
        });
        let deadline = Instant::now() + ready_timeout;
        loop {
            match ready.recv_timeout(Duration::from_millis(50)) {
                Ok(url) => return Ok(Self { spec: spec.clone(), url, log_path, child, stdin }),
                Err(mpsc::RecvTimeoutError::Disconnected) | Err(mpsc::RecvTimeoutError::Timeout)
                    if matches!(child.try_wait(), Ok(Some(_))) =>
                {
                    return Err(format!(
                        "{} {} exited before it was ready:\n{}",
                        spec.role.subcommand(),
                        spec.node_id,
                        tail(&log_path, 20)
                    ));
                }
                Err(_) if Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "{} {} was not ready within {ready_timeout:?}:\n{}",
                        spec.role.subcommand(),
                        spec.node_id,
                        tail(&log_path, 20)
                    ));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => std::thread::sleep(Duration::from_millis(50)),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// The port the node listens on.
    pub fn port(&self) -> u16 {
        self.url.rsplit(':').next().and_then(|p| p.trim_end_matches('/').parse().ok()).unwrap_or(0)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process at once (SIGKILL: no goodbye heartbeat).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks the node to stop (closes its stdin), waits up to `timeout`, then kills it.
    pub fn stop(&mut self, timeout: Duration) {
        self.stdin.take();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !self.is_running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if self.is_running() {
            self.kill();
        }
    }
}

/// The layout of a local cluster.
#[derive(Debug, Clone)]
pub struct LocalClusterSpec {
    pub resource_managers: usize,
    pub coordinators: usize,
    pub workers: usize,
    /// Gateways in front of the coordinators (0: none).
    pub gateways: usize,
    pub routing_policy: flotilla_gateway::RoutingPolicy,
    /// The port clients use (0: any free one): the first gateway's, or without gateways the
    /// first coordinator's. Every other node takes a free port.
    pub client_port: u16,
    pub bind: IpAddr,
    pub etc_dir: Option<PathBuf>,
    pub log_dir: PathBuf,
    /// When true, node i knows only resource manager i % N; otherwise every node knows all.
    pub one_resource_manager_each: bool,
    /// (warehouse, worker group) of each worker, in order; workers past the list keep the
    /// configured labels.
    pub worker_labels: Vec<(String, String)>,
    pub env: Vec<(String, String)>,
}

/// A running local cluster; dropping it stops every process.
#[derive(Debug)]
pub struct LocalCluster {
    pub binary: PathBuf,
    pub secret: String,
    pub log_dir: PathBuf,
    pub resource_managers: Vec<NodeProcess>,
    pub coordinators: Vec<NodeProcess>,
    pub workers: Vec<NodeProcess>,
    pub gateways: Vec<NodeProcess>,
}

const READY_TIMEOUT: Duration = Duration::from_secs(60);

impl LocalCluster {
    /// Starts the resource managers first (each told about the ones before it: they find
    /// each other from there), then coordinators and workers.
    pub fn start(binary: &Path, spec: &LocalClusterSpec) -> Result<Self, String> {
        let secret = flotilla_proto::InternalAuth::generate_secret();
        let mut cluster = LocalCluster {
            binary: binary.to_path_buf(),
            secret,
            log_dir: spec.log_dir.clone(),
            resource_managers: Vec::new(),
            coordinators: Vec::new(),
            workers: Vec::new(),
            gateways: Vec::new(),
        };
        let node = |role: Role, id: String| {
            let mut node = NodeSpec::new(role, &id, spec.bind);
            node.etc_dir = spec.etc_dir.clone();
            node.env = spec.env.clone();
            node
        };
        for i in 0..spec.resource_managers {
            let mut rm = node(Role::ResourceManager, format!("resource-manager-{}", i + 1));
            rm.discovery = cluster.resource_managers.iter().map(|p| p.url.clone()).collect();
            let process = cluster.spawn(&rm)?;
            cluster.resource_managers.push(process);
        }
        let rm_urls: Vec<String> = cluster.resource_managers.iter().map(|p| p.url.clone()).collect();
        let discovery_for = |index: usize| -> Vec<String> {
            if spec.one_resource_manager_each && !rm_urls.is_empty() {
                vec![rm_urls[index % rm_urls.len()].clone()]
            } else {
                rm_urls.clone()
            }
        };
        let mut index = 0;
        for i in 0..spec.coordinators {
            let mut coordinator = node(Role::Coordinator, format!("coordinator-{}", i + 1));
            coordinator.port = if i == 0 && spec.gateways == 0 { spec.client_port } else { 0 };
            coordinator.discovery = discovery_for(index);
            if spec.workers > 0 {
                // Dedicated workers run the tasks; the coordinator only plans and gathers.
                coordinator.settings.push(("node-scheduler.include-coordinator".into(), "false".into()));
            }
            index += 1;
            let process = cluster.spawn(&coordinator)?;
            cluster.coordinators.push(process);
        }
        for i in 0..spec.workers {
            let mut worker = node(Role::Worker, format!("worker-{}", i + 1));
            worker.discovery = discovery_for(index);
            if let Some((warehouse, group)) = spec.worker_labels.get(i) {
                worker.warehouse = Some(warehouse.clone());
                worker.worker_group = Some(group.clone());
            }
            index += 1;
            let process = cluster.spawn(&worker)?;
            cluster.workers.push(process);
        }
        for i in 0..spec.gateways {
            let mut gateway = node(Role::Gateway, format!("gateway-{}", i + 1));
            gateway.port = if i == 0 { spec.client_port } else { 0 };
            gateway.discovery = rm_urls.clone();
            gateway.settings.push(("gateway.routing-policy".into(), spec.routing_policy.to_string()));
            let process = cluster.spawn(&gateway)?;
            cluster.gateways.push(process);
        }
        Ok(cluster)
    }

    /// Where clients connect: the first gateway, else the first coordinator.
    pub fn client_url(&self) -> &str {
        self.gateways.first().or(self.coordinators.first()).map(|p| p.url.as_str()).unwrap_or_default()
    }

    /// Starts one node with this cluster's secret and log directory.
    pub fn spawn(&self, spec: &NodeSpec) -> Result<NodeProcess, String> {
        NodeProcess::spawn(&self.binary, spec, &self.secret, &self.log_dir, READY_TIMEOUT)
    }

    /// Starts `process` again with the same id and port (a restart).
    pub fn restart(&self, process: &mut NodeProcess) -> Result<(), String> {
        process.kill();
        let mut spec = process.spec.clone();
        spec.port = process.port();
        *process = self.spawn(&spec)?;
        Ok(())
    }

    pub fn all(&mut self) -> impl Iterator<Item = &mut NodeProcess> {
        self.gateways
            .iter_mut()
            .chain(self.workers.iter_mut())
            .chain(self.coordinators.iter_mut())
            .chain(self.resource_managers.iter_mut())
    }

    /// Stops everything: gateways, workers and coordinators first, resource managers last.
    pub fn stop(&mut self, timeout: Duration) {
        for process in self.all() {
            process.stdin.take();
        }
        for process in self.all() {
            process.stop(timeout);
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}
