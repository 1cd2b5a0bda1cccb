"""The real node, as pure builders: its network, its components' configuration and command lines.

The node lives in a network namespace of its own (`kubetune-<cluster id>`) joined to the host by
one veth pair, and in a mount namespace of its own held open by a `sleep` process:

    host                                   node netns + mount ns
    127.0.0.1:<apiserver port>  <-proxy--  127.0.0.1 / node IP :<apiserver port>   kubelet, kube-proxy, pods
    10.245.N.1 (veth kt<id>)  <-------->  10.245.N.2 eth0 (node IP)                 kubelet :10250
    route 10.244.N.0/24 via 10.245.N.2     bridge cni0 10.244.N.1/24 -> pods 10.244.N.x

Why: kube-proxy's and CNI's iptables chains, the bridge and the pod veths exist only inside the
node's network namespace, so two clusters on one host never see each other's rules, and `dev down`
removes all of them by deleting that namespace. Mounts made by the kubelet and containerd (volumes,
container root filesystems, pod network namespaces) exist only in the node's mount namespace and
vanish with it; the fixed host paths the kubelet and containerd insist on (/var/lib/kubelet/device-plugins,
/var/log/pods, /var/lib/cni, /run/containerd) are bind mounts of directories in the cluster home
there. The API server stays on host loopback; the `node-proxy` component (kubetune_dev.netns_proxy)
carries connections from the node's loopback and node IP to it (the `kubernetes` Service's endpoint
is the node IP). Only
loopback and the cluster's own 10.244.N.0/24 and 10.245.N.0/30 carry traffic; the node has no
default route.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubetune_dev.layout import Layout

POD_NETWORKS = ipaddress.IPv4Network("10.244.0.0/16")  # cluster N takes 10.244.N.0/24
LINK_NETWORKS = ipaddress.IPv4Network("10.245.0.0/16")  # cluster N takes 10.245.N.0/30
CLUSTER_DOMAIN = "cluster.local"
CLUSTER_DNS_IP = "10.0.0.10"  # in SERVICE_CIDR (components.py)
KUBELET_PORT = 10250
KUBELET_HEALTHZ_PORT = 10248
KUBE_PROXY_HEALTHZ_PORT = 10256
KUBE_PROXY_METRICS_PORT = 10249
COREDNS_PORT = 1053  # unprivileged: CoreDNS runs as non-root without capabilities
NODE_KIND_LABEL = "kubetune.io/node-kind"
DEFAULT_REAL_NODE_NAME = "kubetune-node"
GPU_RESOURCE = "nvidia.com/gpu"

# The kubelet sets these kernel tunables on start unless they already have these values
# (protectKernelDefaults: true makes it refuse instead). They are host-wide; the node's mount
# namespace shows the kubelet files with these values instead of changing the host's.
KUBELET_KERNEL_TUNABLES: dict[str, str] = {
    "vm/overcommit_memory": "1",
    "vm/panic_on_oom": "0",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000",
    "kernel/keys/root_maxbytes": "25000000",
}


@dataclass(frozen=True)
class NodeNetwork:
    """Addresses of one cluster's real node; `index` (1..254) is unique among clusters on a host."""

    index: int
    cluster_id: str

    @property
    def netns(self) -> str:
        return f"kubetune-{self.cluster_id}"

    @property
    def netns_path(self) -> Path:
        return Path("/run/netns") / self.netns

    @property
    def host_veth(self) -> str:
        return f"kt{self.cluster_id[:10]}"  # interface names stop at 15 characters

    @property
    def node_interface(self) -> str:
        return "eth0"

    @property
    def bridge(self) -> str:
        return "cni0"

    @property
    def pod_cidr(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network((int(POD_NETWORKS.network_address) + self.index * 256, 24))

    @property
    def pod_gateway(self) -> str:
        return str(self.pod_cidr.network_address + 1)

    @property
    def link(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network((int(LINK_NETWORKS.network_address) + self.index * 256, 30))

    @property
    def host_ip(self) -> str:
        return str(self.link.network_address + 1)

    @property
    def node_ip(self) -> str:
        return str(self.link.network_address + 2)


def routed_networks(proc_net_route: str) -> list[ipaddress.IPv4Network]:
    """Destinations of the host's IPv4 routes, from /proc/net/route (little-endian hex)."""
    networks = []
    for line in proc_net_route.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        destination = ipaddress.IPv4Address(int.from_bytes(bytes.fromhex(fields[1]), "little"))
        mask = ipaddress.IPv4Address(int.from_bytes(bytes.fromhex(fields[7]), "little"))
        if int(mask) == 0:
            continue  # the default route overlaps everything and decides nothing here
        networks.append(ipaddress.IPv4Network(f"{destination}/{mask}", strict=False))
    return networks


def free_network_indices(routes: list[ipaddress.IPv4Network]) -> list[int]:
    """Indices whose pod and link networks no host route overlaps (another cluster's, or anything else)."""
    free = []
    for index in range(1, 255):
        net = NodeNetwork(index, "x")
        if not any(route.overlaps(net.pod_cidr) or route.overlaps(net.link) for route in routes):
            free.append(index)
    return free


# Unix sockets live here, not in the cluster home: a socket path must stay under 104 characters
# (containerd's limit), and a home may be deep (pytest's temporary directories are).
SOCKETS_ROOT = Path("/run/kubetune")


@dataclass(frozen=True)
class NodePaths:
    """Where the real node keeps its state: everything under `<home>/node`, sockets under
    /run/kubetune/<cluster id>."""

    layout: Layout
    cluster_id: str

    @property
    def root(self) -> Path:
        return self.layout.home / "node"

    @property
    def sockets_dir(self) -> Path:
        return SOCKETS_ROOT / self.cluster_id

    @property
    def containerd_dir(self) -> Path:
        return self.root / "containerd"

    @property
    def containerd_config(self) -> Path:
        return self.containerd_dir / "config.toml"

    @property
    def containerd_socket(self) -> Path:
        return self.sockets_dir / "containerd.sock"

    @property
    def registry_hosts_dir(self) -> Path:
        return self.containerd_dir / "certs.d"

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def kubelet_dir(self) -> Path:
        return self.root / "kubelet"

    @property
    def kubelet_config(self) -> Path:
        return self.root / "kubelet-config.yaml"

    @property
    def kube_proxy_config(self) -> Path:
        return self.root / "kube-proxy-config.yaml"

    @property
    def resolv_conf(self) -> Path:
        """Empty: the node's /etc/resolv.conf and the kubelet's base for pods (no host name servers)."""
        return self.root / "resolv.conf"

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    @property
    def tunables_dir(self) -> Path:
        return self.root / "kernel-tunables"

    @property
    def device_plugins_dir(self) -> Path:
        """Bound at /var/lib/kubelet/device-plugins in the node (the kubelet's fixed path)."""
        return self.sockets_dir / "device-plugins"

    def kubeconfig(self, component: str) -> Path:
        return self.root / f"{component}.kubeconfig"

    def bind_mounts(self) -> dict[str, Path]:
        """Fixed host paths the kubelet, containerd and CNI use, and what the node sees there."""
        return {
            "/var/lib/kubelet/device-plugins": self.device_plugins_dir,
            "/var/log/pods": self.root / "log" / "pods",
            "/var/log/containers": self.root / "log" / "containers",
            "/var/lib/cni": self.root / "cni" / "state",
            "/run/containerd": self.sockets_dir / "containerd",  # the shims' sockets
        }


def cgroup_root(cluster_id: str) -> str:
    """The kubelet's cgroup root: one per cluster, so two nodes on a host never share /kubepods."""
    return f"/kubetune-{cluster_id}"


def build_containerd_config(
    paths: NodePaths, *, runc: Path, cni_bin_dir: Path, sandbox_image: str, log_level: str = "info"
) -> str:
    """containerd 2.x configuration (version 3): state under the cluster home, runc with cgroupfs,
    the CRI plugin's CNI from our conf dir, registries from `certs.d` (hosts.toml per registry)."""
    d = paths.containerd_dir
    cri_runtime = "plugins.'io.containerd.cri.v1.runtime'"
    lines = [
        "version = 3",
        f'root = "{d / "root"}"',
        f'state = "{d / "state"}"',
        "imports = []  # not the host's /etc/containerd/conf.d",
        # Plugins that would reach for fixed host paths (/opt/containerd, /var/run/nri) or that we never use.
        "disabled_plugins = [",
        '  "io.containerd.internal.v1.opt",',
        '  "io.containerd.nri.v1.nri",',
        '  "io.containerd.tracing.processor.v1.otlp",',
        '  "io.containerd.internal.v1.tracing",',
        "]",
        "",
        "[grpc]",
        f'  address = "{paths.containerd_socket}"',
        "",
        "[ttrpc]",
        f'  address = "{paths.containerd_socket}.ttrpc"',
        "",
        "[debug]",
        f'  level = "{log_level}"',
        "",
        "[plugins.'io.containerd.cri.v1.images']",
        '  snapshotter = "overlayfs"',
        "  [plugins.'io.containerd.cri.v1.images'.pinned_images]",
        f'    sandbox = "{sandbox_image}"',
        "  [plugins.'io.containerd.cri.v1.images'.registry]",
        f'    config_path = "{paths.registry_hosts_dir}"',
        "",
        f"[{cri_runtime}]",
        "  enable_selinux = false",
        # Pod network namespaces are mounted under the state directory, not /run/netns.
        "  netns_mounts_under_state_dir = true",
        "  cdi_spec_dirs = []",
        # Lowering a process's oom_score_adj needs CAP_SYS_RESOURCE, which this host does not grant
        # (the kubelet asks -998 for sandboxes): never go below containerd's own score.
        "  restrict_oom_score_adj = true",
        "  [" + cri_runtime + ".containerd]",
        '    default_runtime_name = "runc"',
        "    [" + cri_runtime + ".containerd.runtimes.runc]",
        '      runtime_type = "io.containerd.runc.v2"',
        "      [" + cri_runtime + ".containerd.runtimes.runc.options]",
        f'        BinaryName = "{runc}"',
        "        SystemdCgroup = false",
        "  [" + cri_runtime + ".cni]",
        f'    bin_dirs = ["{cni_bin_dir}"]',
        f'    conf_dir = "{paths.cni_conf_dir}"',
        "    max_conf_num = 1",
        "",
        "[plugins.'io.containerd.image-verifier.v1.bindir']",
        f'  bin_dir = "{d / "image-verifier"}"',
        "",
        "[plugins.'io.containerd.transfer.v1.local']",
        f'  config_path = "{paths.registry_hosts_dir}"',
        "",
        "[plugins.'io.containerd.grpc.v1.cri']",
        # `kubectl exec`/`attach`/`port-forward` streams, served inside the node's network namespace.
        '  stream_server_address = "127.0.0.1"',
        '  stream_server_port = "0"',
        "",
    ]
    return "\n".join(lines)


def build_registry_mirror(upstream: str, address: str) -> str:
    """containerd's hosts.toml making the local registry (`host:port`, plain HTTP) the mirror of
    `upstream` (e.g. ghcr.io): the images `make images` pushed are found under their public names,
    so manifests written for a real cluster (`ghcr.io/kubetune/trainer:0.1.0`) run unchanged."""
    return f'server = "https://{upstream}"\n\n[host."http://{address}"]\n  capabilities = ["pull", "resolve"]\n'


def build_registry_hosts(address: str) -> tuple[str, str]:
    """containerd's hosts.toml for a plain-HTTP registry on loopback (`host:port`): the directory name
    under `certs.d` and the file. Inside the node, the node proxy carries `address` to the host's."""
    server = f"http://{address}"
    text = f'server = "{server}"\n\n[host."{server}"]\n  capabilities = ["pull", "resolve"]\n'
    return address, text


def build_cni_config(network: NodeNetwork, paths: NodePaths) -> dict[str, Any]:
    """Bridge + host-local on the cluster's pod /24, portmap for hostPort; containerd adds loopback."""
    return {
        "cniVersion": "1.0.0",
        "name": "kubetune",
        "plugins": [
            {
                "type": "bridge",
                "bridge": network.bridge,
                "isGateway": True,
                # No masquerading: the host reaches pods by their own addresses (Prometheus scrapes them).
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": str(network.pod_cidr), "gateway": network.pod_gateway}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(paths.root / "cni" / "ipam"),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def build_kubelet_config(
    network: NodeNetwork, paths: NodePaths, *, cluster_id: str, pki_dir: Path
) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": network.node_ip,
        "port": KUBELET_PORT,
        "readOnlyPort": 0,
        "healthzBindAddress": network.node_ip,
        "healthzPort": KUBELET_HEALTHZ_PORT,
        "tlsCertFile": str(pki_dir / "kubelet.crt"),
        "tlsPrivateKeyFile": str(pki_dir / "kubelet.key"),
        # The API server's `kubectl logs/exec` client certificate, checked against the cluster CA;
        # what it may do is asked of the API server (SubjectAccessReview), as on any kubeadm node.
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki_dir / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{paths.containerd_socket}",
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": cgroup_root(cluster_id),
        "cgroupsPerQOS": True,
        "failCgroupV1": False,
        "clusterDNS": [CLUSTER_DNS_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        # Empty: no search domains or name servers of the host reach the pods.
        "resolvConf": str(paths.resolv_conf),
        "failSwapOn": False,
        "protectKernelDefaults": True,
        "podLogsDir": "/var/log/pods",
        "maxPods": 110,
        "serializeImagePulls": False,
        # The host disk is shared with everything else on the machine: evict only when it is nearly
        # full, and never garbage-collect the images imported at `dev up` (they cannot be pulled).
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "2%", "imagefs.available": "2%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "enableServer": True,
        "staticPodPath": "",
        "shutdownGracePeriod": "0s",
        "logging": {"verbosity": 1},
    }


def build_kube_proxy_config(network: NodeNetwork, paths: NodePaths, *, node_name: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(paths.kubeconfig("kube-proxy"))},
        "mode": "iptables",
        "hostnameOverride": node_name,
        "bindAddress": network.node_ip,
        "healthzBindAddress": f"{network.node_ip}:{KUBE_PROXY_HEALTHZ_PORT}",
        "metricsBindAddress": f"{network.node_ip}:{KUBE_PROXY_METRICS_PORT}",
        "clusterCIDR": str(network.pod_cidr),
        "detectLocalMode": "ClusterCIDR",
        "nodePortAddresses": [f"{network.node_ip}/32"],
        # Zero: leave the conntrack limits and timeouts alone (nf_conntrack_max is host-wide).
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        "iptables": {"localhostNodePorts": False, "masqueradeAll": False},
    }


def nsenter_prefix(network: NodeNetwork, holder_pid: int) -> list[str]:
    """Run a command in the node: its network namespace and the mount namespace `holder_pid` keeps."""
    return ["nsenter", f"--net={network.netns_path}", f"--mount=/proc/{holder_pid}/ns/mnt", "--"]


def holder_command(network: NodeNetwork) -> list[str]:
    """The process that keeps the node's mount namespace (slave: host mounts reach it, its own stay)."""
    return ["nsenter", f"--net={network.netns_path}", "--", "unshare", "--mount", "--propagation", "slave",
            "sleep", "infinity"]  # fmt: skip


def containerd_command(network: NodeNetwork, paths: NodePaths, bin_dir: Path, holder_pid: int) -> list[str]:
    return [*nsenter_prefix(network, holder_pid), str(bin_dir / "containerd"), f"--config={paths.containerd_config}"]


def kubelet_command(
    network: NodeNetwork, paths: NodePaths, bin_dir: Path, holder_pid: int, *, node_name: str
) -> list[str]:
    return [
        *nsenter_prefix(network, holder_pid),
        str(bin_dir / "kubelet"),
        f"--config={paths.kubelet_config}",
        f"--kubeconfig={paths.kubeconfig('kubelet')}",
        f"--root-dir={paths.kubelet_dir}",
        f"--hostname-override={node_name}",
        f"--node-ip={network.node_ip}",
        f"--node-labels={NODE_KIND_LABEL}=real",
    ]


def kube_proxy_command(network: NodeNetwork, paths: NodePaths, bin_dir: Path, holder_pid: int) -> list[str]:
    return [*nsenter_prefix(network, holder_pid), str(bin_dir / "kube-proxy"), f"--config={paths.kube_proxy_config}"]


def to_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True)


COREFILE = f"""\
.:{COREDNS_PORT} {{
    errors
    health :8080
    ready :8181
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        pods insecure
        ttl 30
    }}
    cache 30
    loadbalance
}}
"""


def build_coredns_manifests(image: str) -> list[dict[str, Any]]:
    """CoreDNS as kubeadm deploys it, answering cluster names only: no `forward`, so no query ever
    leaves the cluster. Listens on an unprivileged port; the kube-dns Service maps 53 to it."""
    labels = {"k8s-app": "kube-dns"}
    meta = {"name": "coredns", "namespace": "kube-system"}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "system:coredns"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:coredns"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:coredns"},
            "subjects": [{"kind": "ServiceAccount", **meta}],
        },
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"Corefile": COREFILE}},
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {**meta, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": "coredns",
                        "priorityClassName": "system-cluster-critical",
                        "dnsPolicy": "Default",
                        "nodeSelector": {NODE_KIND_LABEL: "real"},
                        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                        "containers": [
                            {
                                "name": "coredns",
                                "image": image,
                                "imagePullPolicy": "Never",
                                "args": ["-conf", "/etc/coredns/Corefile"],
                                "ports": [
                                    {"name": "dns", "containerPort": COREDNS_PORT, "protocol": "UDP"},
                                    {"name": "dns-tcp", "containerPort": COREDNS_PORT, "protocol": "TCP"},
                                ],
                                "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181}, "periodSeconds": 2},
                                "livenessProbe": {"httpGet": {"path": "/health", "port": 8080}, "periodSeconds": 10},
                                "resources": {
                                    "requests": {"cpu": "50m", "memory": "70Mi"},
                                    "limits": {"memory": "170Mi"},
                                },
                                "securityContext": {
                                    "allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]},
                                },
                                "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns", "readOnly": True}],
                            }
                        ],
                        "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": labels},
            "spec": {
                "clusterIP": CLUSTER_DNS_IP,
                "selector": labels,
                "ports": [
                    {"name": "dns", "port": 53, "targetPort": COREDNS_PORT, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "targetPort": COREDNS_PORT, "protocol": "TCP"},
                ],
            },
        },
    ]
