//! Hosts of their own on this machine: every node runs in a network namespace of its own
//! (`ip netns`, a veth pair into a bridge, an address each), binds 0.0.0.0 and announces
//! `node.internal-address`. Queries run across the workers, through a gateway too; cutting
//! the link of one worker and one resource manager leaves the cluster answering, and the
//! cut nodes rejoin when their links come back. Skipped, saying why, where namespaces
//! cannot be made (not root, no `ip`).

use std::process::Command;
use std::time::{Duration, Instant};

use flotilla::local_cluster::{NodeProcess, NodeSpec, Role};
use serde_json::Value;

use crate::harness::TempDir;
use crate::Http;

fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip").args(args).output().map_err(|e| format!("ip: {e}"))?;
    match output.status.success() {
        true => Ok(()),
        false => Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim())),
    }
}

/// The namespaces, links and bridge of one test, and the processes in them: all removed when
/// dropped, whether the test passed or not.
struct Hosts {
    tag: String,
    subnet: String,
    count: usize,
    processes: Vec<NodeProcess>,
}

impl Hosts {
    /// `count` hosts `10.X.Y.11..` behind a bridge at `10.X.Y.1` (this process's side).
    fn make(count: usize) -> Result<Self, String> {
        let tag = flotilla_proto::random_hex(3);
        let octet = u8::from_str_radix(&tag[..2], 16).unwrap_or(0);
        let mut hosts = Hosts { subnet: format!("10.213.{octet}"), tag, count: 0, processes: Vec::new() };
        let bridge = hosts.bridge();
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{}.1/24", hosts.subnet), "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        for index in 0..count {
            hosts.count = index + 1;
            let (namespace, outside, inside) = hosts.names(index);
            ip(&["netns", "add", &namespace])?;
            ip(&["link", "add", &outside, "type", "veth", "peer", "name", &inside])?;
            ip(&["link", "set", &outside, "master", &bridge])?;
            ip(&["link", "set", &outside, "up"])?;
            ip(&["link", "set", &inside, "netns", &namespace])?;
            ip(&["-n", &namespace, "addr", "add", &format!("{}/24", hosts.address(index)), "dev", &inside])?;
            ip(&["-n", &namespace, "link", "set", &inside, "up"])?;
            ip(&["-n", &namespace, "link", "set", "lo", "up"])?;
        }
        Ok(hosts)
    }

    fn bridge(&self) -> String {
        format!("flbr{}", self.tag)
    }

    /// (namespace, link end on the bridge, link end in the namespace).
    fn names(&self, index: usize) -> (String, String, String) {
        (format!("fl{}h{index}", self.tag), format!("fl{}o{index}", self.tag), format!("fl{}i{index}", self.tag))
    }

    fn address(&self, index: usize) -> String {
        format!("{}.{}", self.subnet, 11 + index)
    }

    /// Cuts (or restores) host `index`'s link.
    fn link(&self, index: usize, up: bool) {
        let (_, outside, _) = self.names(index);
        ip(&["link", "set", &outside, if up { "up" } else { "down" }]).unwrap();
    }

    /// Starts `role` on host `index`, bound to 0.0.0.0 and announcing the host's address.
    fn start(&mut self, index: usize, role: Role, id: &str, discovery: &[String], logs: &std::path::Path) -> String {
        let mut spec = NodeSpec::new(role, id, std::net::IpAddr::from([0, 0, 0, 0]));
        spec.netns = Some(self.names(index).0);
        spec.discovery = discovery.to_vec();
        spec.settings.push(("node.internal-address".into(), self.address(index)));
        spec.settings.push(("resource-manager.node-status-timeout".into(), "3s".into()));
        spec.env.push(("RUST_LOG".into(), "info".into()));
        if role == Role::Coordinator {
            spec.settings.push(("node-scheduler.include-coordinator".into(), "false".into()));
        }
        let binary = std::path::Path::new(env!("CARGO_BIN_EXE_flotilla"));
        let process = NodeProcess::spawn(binary, &spec, "multi-host-test-secret", logs, Duration::from_secs(60))
            .unwrap_or_else(|error| panic!("{id} starts: {error}"));
        let url = format!("http://{}:{}", self.address(index), process.port());
        self.processes.push(process);
        url
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for process in &mut self.processes {
            process.kill();
        }
        for index in 0..self.count {
            let (namespace, outside, _) = self.names(index);
            let _ = ip(&["link", "del", &outside]);
            let _ = ip(&["netns", "del", &namespace]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}

async fn wait_for_active(http: &Http, count: usize, within: Duration) -> Vec<Value> {
    let deadline = Instant::now() + within;
    loop {
        let nodes: Vec<Value> = match http.client.get(format!("{}/v1/node", http.base)).send().await {
            Ok(response) => response.json().await.unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let active = nodes.iter().filter(|n| n["state"] == "active").count();
        if active == count {
            return nodes;
        }
        assert!(Instant::now() < deadline, "{active} of {count} nodes active: {nodes:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_on_hosts_of_their_own_announce_their_internal_address_and_survive_cut_links() {
    let probe = format!("flprobe{}", flotilla_proto::random_hex(3));
    if let Err(error) = ip(&["netns", "add", &probe]) {
        eprintln!("SKIPPED: network namespaces cannot be made here ({error}); run as root with iproute2");
        return;
    }
    let _ = ip(&["netns", "del", &probe]);
    let logs = TempDir::new("flotilla-multihost");
    // Hosts: 0, 1 resource managers; 2 coordinator; 3, 4 workers; 5 gateway.
    let mut hosts = match Hosts::make(6) {
        Ok(hosts) => hosts,
        Err(error) => {
            eprintln!("SKIPPED: the test's hosts cannot be made here ({error})");
            return;
        }
    };
    let rm1 = hosts.start(0, Role::ResourceManager, "rm-1", &[], &logs.path);
    let rm2 = hosts.start(1, Role::ResourceManager, "rm-2", &[rm1.clone()], &logs.path);
    let discovery = vec![rm1.clone(), rm2.clone()];
    let coordinator = hosts.start(2, Role::Coordinator, "coordinator-1", &discovery, &logs.path);
    hosts.start(3, Role::Worker, "worker-1", &discovery, &logs.path);
    hosts.start(4, Role::Worker, "worker-2", &discovery, &logs.path);
    let gateway = hosts.start(5, Role::Gateway, "gateway-1", &discovery, &logs.path);
    let http = Http::new(&coordinator);
    let nodes = wait_for_active(&http, 5, Duration::from_secs(30)).await;
    // Every announced URL is the node's own host address, none a wildcard.
    for node in &nodes {
        for uri in [node["uri"].as_str(), node["dataUri"].as_str()].into_iter().flatten() {
            assert!(uri.starts_with(&format!("http://{}.", hosts.subnet)), "{node}");
            assert!(!uri.contains("0.0.0.0"), "{node}");
        }
    }
    let count = "SELECT count(*) FROM tpch.tiny.lineitem";
    let responses = http.run(count).await;
    assert_eq!(crate::collect(&responses).1, vec![vec![Value::from(60175)]]);
    let id = responses[0]["id"].as_str().unwrap();
    let info: Value = http.get_json(&format!("{coordinator}/v1/query/{id}")).await;
    let workers: std::collections::BTreeSet<&str> =
        info["tasks"].as_array().unwrap().iter().filter_map(|t| t["nodeId"].as_str()).collect();
    assert_eq!(workers.into_iter().collect::<Vec<_>>(), ["worker-1", "worker-2"], "both hosts' workers ran tasks");
    let through_gateway = Http::new(&gateway);
    assert_eq!(through_gateway.rows(count).await.1, vec![vec![Value::from(60175)]]);

    // worker-1's and rm-1's links cut: the cluster carries on with the others.
    hosts.link(3, false);
    hosts.link(0, false);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let responses = through_gateway.run(count).await;
        let last = responses.last().unwrap();
        if last.get("error").is_none() {
            assert_eq!(crate::collect(&responses).1, vec![vec![Value::from(60175)]]);
            let id = responses[0]["id"].as_str().unwrap();
            let info: Value = through_gateway.get_json(&format!("{gateway}/v1/query/{id}")).await;
            let used: Vec<&str> =
                info["tasks"].as_array().unwrap().iter().filter_map(|t| t["nodeId"].as_str()).collect();
            if used.iter().all(|n| *n == "worker-2") {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the cluster did not carry on without worker-1: {last}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The links come back: the cut nodes rejoin.
    hosts.link(3, true);
    hosts.link(0, true);
    wait_for_active(&http, 5, Duration::from_secs(30)).await;
    drop(hosts);
}
