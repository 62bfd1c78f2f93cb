"""The deployment files validate: every document of deploy/kubernetes/*.yaml and
deploy/compose.yml parses, and the references between them hold — the configuration keys
they set exist (the README's configuration table, itself checked against the code), the
roles they start exist, ports agree with http-server.http.port and worker.data-port,
Services and PodDisruptionBudgets select pods that exist, the Secret and ConfigMap they use
are defined, probes call `flotilla health-check` on the node's port; and the Dockerfile
builds the binary the manifests run. Building the image needs a Docker engine (not here):
`docker build -t flotilla:dev .`."""
import pathlib
import re
import shlex

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
ROLES = {"coordinator", "worker", "resource-manager", "gateway"}


def settings():
    readme = (ROOT / "README.md").read_text()
    return set(re.findall(r"^\| `([a-z0-9.\-]+)` \|", readme, re.MULTILINE))


def properties(text):
    pairs = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "!")):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def set_flags(args):
    """The KEY=VALUE of each --set in a command line."""
    return [args[i + 1] for i, arg in enumerate(args) if arg == "--set"]


def kubernetes_documents():
    documents = []
    for path in sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                assert {"apiVersion", "kind", "metadata"} <= document.keys(), f"{path}: {document}"
                documents.append(document)
    return documents


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def test_kubernetes_manifests_reference_what_exists():
    known = settings()
    assert "node.internal-address" in known and "http-server.http.port" in known
    documents = kubernetes_documents()
    by_kind = {}
    for document in documents:
        by_kind.setdefault(document["kind"], {})[document["metadata"]["name"]] = document
    assert {"Secret", "ConfigMap", "Service", "Deployment", "StatefulSet", "PodDisruptionBudget"} <= by_kind.keys()
    config = properties(by_kind["ConfigMap"]["flotilla-etc"]["data"]["config.properties"])
    assert set(config) <= known, set(config) - known
    assert properties(by_kind["ConfigMap"]["flotilla-etc"]["data"]["tpch.properties"])["connector.name"] == "tpch"
    http_port = int(config["http-server.http.port"])
    data_port = int(config["worker.data-port"])
    # The secret reaches the nodes through ${ENV:...}, from the Secret.
    assert config["internal-communication.shared-secret"] == "${ENV:FLOTILLA_SHARED_SECRET}"
    workloads = [*by_kind["Deployment"].values(), *by_kind["StatefulSet"].values()]
    roles = set()
    for workload in workloads:
        name = workload["metadata"]["name"]
        template = workload["spec"]["template"]
        assert matches(workload["spec"]["selector"]["matchLabels"], template["metadata"]["labels"]), name
        if workload["kind"] == "StatefulSet":
            assert workload["spec"]["serviceName"] in by_kind["Service"], name
        for container in template["spec"]["containers"]:
            args = container["args"]
            assert args[0] in ROLES, f"{name}: {args}"
            roles.add(args[0])
            for flag in set_flags(args):
                assert flag.split("=", 1)[0] in known, f"{name}: --set {flag}"
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            assert ports["http"] == http_port, name
            if args[0] == "worker":
                assert ports["data"] == data_port, name
                labels = template["metadata"]["labels"]
                env = {e["name"]: e for e in container["env"]}
                for flag, variable in (("--warehouse", "FLOTILLA_WAREHOUSE"), ("--worker-group", "FLOTILLA_WORKER_GROUP")):
                    assert args[args.index(flag) + 1] == f"$({variable})", name
                    path = env[variable]["valueFrom"]["fieldRef"]["fieldPath"]
                    label = re.fullmatch(r"metadata\.labels\['(.+)'\]", path).group(1)
                    assert label in labels, f"{name}: {label}"
            env = {e["name"]: e for e in container["env"]}
            secret = env["FLOTILLA_SHARED_SECRET"]["valueFrom"]["secretKeyRef"]
            assert secret["key"] in by_kind["Secret"][secret["name"]]["stringData"], name
            assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP", name
            mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
            assert args[args.index("--etc-dir") + 1] == mounts["etc"], name
            for probe in ("readinessProbe", "livenessProbe"):
                check = container[probe]
                if "exec" in check:
                    command = check["exec"]["command"]
                    assert command[:2] == ["flotilla", "health-check"], f"{name}: {command}"
                    assert command[command.index("--url") + 1] == f"http://127.0.0.1:{http_port}", name
                else:
                    assert check["tcpSocket"]["port"] in ports, name
            if args[0] in ("coordinator", "worker"):
                # Drained before they stop, within the pod's grace period.
                hook = container["lifecycle"]["preStop"]["exec"]["command"]
                assert hook[:2] == ["flotilla", "drain"] and "--wait" in hook, f"{name}: {hook}"
                assert hook[hook.index("--url") + 1] == f"http://127.0.0.1:{http_port}", name
                waits = int(hook[hook.index("--timeout") + 1].removesuffix("s"))
                assert waits < template["spec"]["terminationGracePeriodSeconds"], name
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        config_map = volumes["etc"]["configMap"]
        assert config_map["name"] in by_kind["ConfigMap"], name
        for item in config_map["items"]:
            assert item["key"] in by_kind["ConfigMap"][config_map["name"]]["data"], name
    assert roles == ROLES
    pod_labels = [w["spec"]["template"]["metadata"]["labels"] for w in workloads]
    for kind in ("Service", "PodDisruptionBudget"):
        for name, document in by_kind[kind].items():
            selector = document["spec"]["selector"]
            selector = selector.get("matchLabels", selector)
            selected = [labels for labels in pod_labels if matches(selector, labels)]
            assert selected, f"{kind} {name} selects no pod"
            if kind == "Service":
                named_ports = {
                    p["name"]
                    for w in workloads
                    if matches(selector, w["spec"]["template"]["metadata"]["labels"])
                    for c in w["spec"]["template"]["spec"]["containers"]
                    for p in c["ports"]
                }
                for port in document["spec"]["ports"]:
                    assert port["targetPort"] in named_ports, f"Service {name}: {port}"
    # discovery.uri names the resource managers' Service, on the HTTP port.
    assert config["discovery.uri"] == f"http://flotilla-resource-manager:{http_port}"
    assert "flotilla-resource-manager" in by_kind["Service"]


def test_compose_file_references_what_exists():
    known = settings()
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yml").read_text())
    services = compose["services"]
    assert {"gateway", "coordinator-1", "worker-1", "resource-manager-1"} <= services.keys()
    for name, service in services.items():
        # As compose passes it: `$$` is its escape for a literal `$`.
        command = [str(arg).replace("$$", "$") for arg in service["command"]]
        assert command[0] in ROLES, f"{name}: {command}"
        for flag in set_flags(command):
            key, _, value = flag.partition("=")
            assert key in known, f"{name}: --set {flag}"
            if key == "node.internal-address":
                assert value == name, f"{name} announces {value}"
        assert command[command.index("--port") + 1] == "8080", name
        for dependency in service.get("depends_on", []):
            assert dependency in services, f"{name} depends on {dependency}"
        if "--discovery-uri" in command:
            for uri in command[command.index("--discovery-uri") + 1].split(","):
                host, port = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", uri).groups()
                assert host in services and services[host]["command"][0] == "resource-manager", f"{name}: {uri}"
                assert port == "8080"
        # The secret comes from the environment through ${ENV:...} ($$ escapes compose's own $).
        assert "internal-communication.shared-secret=${ENV:FLOTILLA_SHARED_SECRET}" in set_flags(command), name
        assert "FLOTILLA_SHARED_SECRET" in service["environment"]
    assert services["gateway"]["ports"] == ["8080:8080"]


def test_the_dockerfile_builds_the_binary_the_manifests_run():
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)(?: AS (\S+))?", dockerfile, re.MULTILINE)
    assert len(stages) == 2 and stages[0][1] == "build", stages
    assert "cargo build --release --locked --bin flotilla" in dockerfile
    assert "COPY --from=build /usr/local/bin/flotilla /usr/local/bin/flotilla" in dockerfile
    entrypoint = re.search(r"^ENTRYPOINT (.+)$", dockerfile, re.MULTILINE).group(1)
    assert yaml.safe_load(entrypoint) == ["flotilla"]
    health = re.search(r"^HEALTHCHECK .* CMD (.+)$", dockerfile, re.MULTILINE).group(1)
    assert yaml.safe_load(health)[:2] == ["flotilla", "health-check"]
    assert "USER flotilla" in dockerfile
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "target" in ignored and ".venv" in ignored
    # The workspace's toolchain is the builder's.
    version = re.search(r'^rust-version = "([0-9.]+)"', (ROOT / "Cargo.toml").read_text(), re.MULTILINE).group(1)
    builder = stages[0][0]
    assert builder.startswith("rust:"), builder
    assert tuple(map(int, builder.removeprefix("rust:").split("-")[0].split("."))) >= tuple(map(int, version.split("."))), builder
    assert shlex.split("docker build -t flotilla:dev .")  # the documented command
