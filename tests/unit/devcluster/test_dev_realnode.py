"""The real node's pure builders: addresses, component configuration, command lines, certificates."""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kubetune.k8s.sync import object_path
from kubetune_dev import realnode
from kubetune_dev.components import ClusterConfig, Ports, apiserver_command
from kubetune_dev.layout import Layout, components_of
from kubetune_dev.pki import NodeIdentity, build_cluster_pki
from kubetune_dev.realnode import NodeNetwork, NodePaths

# /proc/net/route of a host with a default route, its own /24 and one real-node cluster (index 33).
PROC_NET_ROUTE = """\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
ktafb138c719\t0021F40A\t0221F50A\t0003\t0\t0\t0\t00FFFFFF\t0\t0\t0
ktafb138c719\t0021F50A\t00000000\t0001\t0\t0\t0\tFCFFFFFF\t0\t0\t0
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
"""


def config(tmp_path: Path, **overrides: object) -> ClusterConfig:
    values: dict[str, object] = dict(
        cluster_id="0123456789ab",
        home=tmp_path,
        bin_dir=tmp_path / "bin",
        python=Path("/usr/bin/python3"),
        ports=Ports(1, 2, 3, 4, 5, 6, 7, 8),
        node_kind="real",
        node_network_index=33,
    )
    values.update(overrides)
    return ClusterConfig(**values)  # type: ignore[arg-type]


def test_node_network_addresses_are_the_clusters_own() -> None:
    net = NodeNetwork(33, "0123456789ab")
    assert net.pod_cidr == ipaddress.IPv4Network("10.244.33.0/24")
    assert net.pod_gateway == "10.244.33.1"
    assert net.link == ipaddress.IPv4Network("10.245.33.0/30")
    assert (net.host_ip, net.node_ip) == ("10.245.33.1", "10.245.33.2")
    assert net.netns == "kubetune-0123456789ab"
    assert len(net.host_veth) <= 15  # the kernel's limit on interface names


def test_host_routes_are_parsed_and_taken_networks_skipped() -> None:
    routes = realnode.routed_networks(PROC_NET_ROUTE)
    assert ipaddress.IPv4Network("10.244.33.0/24") in routes
    assert ipaddress.IPv4Network("10.245.33.0/30") in routes
    assert ipaddress.IPv4Network("192.0.2.0/24") in routes
    assert ipaddress.IPv4Network("0.0.0.0/0") not in routes  # a default route decides nothing
    free = realnode.free_network_indices(routes)
    assert 33 not in free and 34 in free and len(free) == 253
    assert realnode.free_network_indices([ipaddress.IPv4Network("10.0.0.0/8")]) == []


def test_config_round_trips_the_node_kind_and_network(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    again = ClusterConfig.from_json(cfg.to_json())
    assert again == cfg
    assert again.node_network == NodeNetwork(33, "0123456789ab")
    assert again.components == components_of("real")
    assert "kubelet" in again.components and "agent" not in again.components
    assert config(tmp_path, node_kind="agent").components[-2:] == ("agent", "prometheus")


def test_api_server_advertises_the_node_ip_as_the_kubernetes_services_endpoint(tmp_path: Path) -> None:
    real = apiserver_command(config(tmp_path))
    assert "--advertise-address=10.245.33.2" in real and "--endpoint-reconciler-type=lease" in real
    assert "--authorization-mode=Node,RBAC" in real
    agent = apiserver_command(config(tmp_path, node_kind="agent"))
    assert "--endpoint-reconciler-type=none" in agent


def test_containerd_config_keeps_state_in_the_cluster_and_runs_runc_with_cgroupfs(tmp_path: Path) -> None:
    paths = NodePaths(Layout(tmp_path), "0123456789ab")
    text = realnode.build_containerd_config(
        paths, runc=Path("/usr/sbin/runc"), cni_bin_dir=Path("/usr/lib/cni"), sandbox_image="kubetune.local/pause:x"
    )
    cfg = tomllib.loads(text)
    assert cfg["version"] == 3 and cfg["imports"] == []
    assert cfg["root"].startswith(str(tmp_path)) and cfg["state"].startswith(str(tmp_path))
    assert cfg["grpc"]["address"] == "/run/kubetune/0123456789ab/containerd.sock"
    assert "io.containerd.nri.v1.nri" in cfg["disabled_plugins"]
    runtime = cfg["plugins"]["io.containerd.cri.v1.runtime"]
    runc = runtime["containerd"]["runtimes"]["runc"]
    assert runc["options"] == {"BinaryName": "/usr/sbin/runc", "SystemdCgroup": False}
    assert runtime["restrict_oom_score_adj"] is True and runtime["netns_mounts_under_state_dir"] is True
    assert runtime["cni"]["bin_dirs"] == ["/usr/lib/cni"]
    assert runtime["cni"]["conf_dir"] == str(paths.cni_conf_dir)
    images = cfg["plugins"]["io.containerd.cri.v1.images"]
    assert images["pinned_images"]["sandbox"] == "kubetune.local/pause:x"
    assert images["registry"]["config_path"] == str(paths.registry_hosts_dir)


def test_kubelet_config_cgroupfs_own_cgroup_root_webhook_auth_and_untouched_host_tunables(tmp_path: Path) -> None:
    net = NodeNetwork(33, "0123456789ab")
    cfg = realnode.build_kubelet_config(
        net, NodePaths(Layout(tmp_path), "0123456789ab"), cluster_id="0123456789ab", pki_dir=tmp_path / "pki"
    )
    assert cfg["cgroupDriver"] == "cgroupfs" and cfg["cgroupRoot"] == "/kubetune-0123456789ab"
    assert cfg["address"] == "10.245.33.2"
    assert cfg["authentication"]["anonymous"] == {"enabled": False}
    assert cfg["authentication"]["x509"]["clientCAFile"] == str(tmp_path / "pki" / "ca.crt")
    assert cfg["authorization"] == {"mode": "Webhook"}
    assert cfg["clusterDNS"] == [realnode.CLUSTER_DNS_IP]
    # The kubelet refuses rather than rewrites host-wide sysctls; its namespace shows it these values.
    assert cfg["protectKernelDefaults"] is True
    assert set(realnode.KUBELET_KERNEL_TUNABLES) >= {"vm/overcommit_memory", "kernel/panic"}


def test_kube_proxy_iptables_mode_leaves_host_wide_conntrack_settings_alone(tmp_path: Path) -> None:
    net = NodeNetwork(33, "0123456789ab")
    cfg = realnode.build_kube_proxy_config(net, NodePaths(Layout(tmp_path), "x"), node_name="n")
    assert cfg["mode"] == "iptables" and cfg["clusterCIDR"] == "10.244.33.0/24"
    assert cfg["conntrack"]["maxPerCore"] == 0 and cfg["conntrack"]["tcpEstablishedTimeout"] == "0s"
    assert cfg["iptables"]["localhostNodePorts"] is False


def test_cni_bridge_hands_out_the_pod_network_without_masquerading(tmp_path: Path) -> None:
    net = NodeNetwork(33, "x")
    bridge, portmap = realnode.build_cni_config(net, NodePaths(Layout(tmp_path), "x"))["plugins"]
    assert bridge["type"] == "bridge" and bridge["isGateway"] is True and bridge["ipMasq"] is False
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.244.33.0/24", "gateway": "10.244.33.1"}]]
    assert portmap["type"] == "portmap"


def test_coredns_answers_cluster_names_only() -> None:
    manifests = realnode.build_coredns_manifests("kubetune.local/coredns:v1")
    kinds = [m["kind"] for m in manifests]
    assert kinds == ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment", "Service"]
    corefile = manifests[3]["data"]["Corefile"]
    assert "kubernetes cluster.local" in corefile and "forward" not in corefile
    service = manifests[-1]["spec"]
    assert service["clusterIP"] == realnode.CLUSTER_DNS_IP
    assert {p["port"] for p in service["ports"]} == {53}
    assert {p["targetPort"] for p in service["ports"]} == {realnode.COREDNS_PORT}
    container = manifests[4]["spec"]["template"]["spec"]["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_node_processes_enter_the_nodes_namespaces() -> None:
    net = NodeNetwork(33, "0123456789ab")
    assert realnode.nsenter_prefix(net, 42) == [
        "nsenter",
        "--net=/run/netns/kubetune-0123456789ab",
        "--mount=/proc/42/ns/mnt",
        "--",
    ]
    holder = realnode.holder_command(net)
    assert holder[-2:] == ["sleep", "infinity"] and "--propagation" in holder and "slave" in holder


def test_object_paths_of_applied_manifests() -> None:
    manifests = realnode.build_coredns_manifests("img")
    assert [object_path(m) for m in manifests] == [
        "/api/v1/namespaces/kube-system/serviceaccounts/coredns",
        "/apis/rbac.authorization.k8s.io/v1/clusterroles/system:coredns",
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/system:coredns",
        "/api/v1/namespaces/kube-system/configmaps/coredns",
        "/apis/apps/v1/namespaces/kube-system/deployments/coredns",
        "/api/v1/namespaces/kube-system/services/kube-dns",
    ]


def test_node_certificates_name_the_node_for_the_node_authorizer() -> None:
    pki = build_cluster_pki(service_cluster_ip="10.0.0.1", node=NodeIdentity("kubetune-node", "10.245.33.2"))
    client = x509.load_pem_x509_certificate(pki.node["kubelet-client"].cert_pem)
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:node:kubetune-node"
    assert client.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:nodes"
    serving = x509.load_pem_x509_certificate(pki.node["kubelet"].cert_pem)
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("10.245.33.2") in sans.get_values_for_type(x509.IPAddress)
    usages = serving.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usages
    assert "kube-proxy" in pki.pairs() and "kubelet" in pki.pairs()
    assert build_cluster_pki(service_cluster_ip="10.0.0.1").node == {}


def test_a_loopback_registry_is_pulled_from_over_plain_http() -> None:
    directory, text = realnode.build_registry_hosts("127.0.0.1:40123")
    assert directory == "127.0.0.1:40123"
    hosts = tomllib.loads(text)
    assert hosts["server"] == "http://127.0.0.1:40123"
    assert hosts["host"]["http://127.0.0.1:40123"]["capabilities"] == ["pull", "resolve"]


def test_the_local_registry_mirrors_the_public_one() -> None:
    hosts = tomllib.loads(realnode.build_registry_mirror("ghcr.io", "127.0.0.1:40123"))
    assert hosts["server"] == "https://ghcr.io"  # the upstream, asked only when the mirror lacks an image
    assert hosts["host"]["http://127.0.0.1:40123"]["capabilities"] == ["pull", "resolve"]
