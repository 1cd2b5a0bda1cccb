"""Pure builders: cluster configuration, kubeconfigs and each component's command line."""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kubetune_dev import jobset
from kubetune_dev.allocators import POD_NETWORK
from kubetune_dev.layout import Layout, components_of
from kubetune_dev.realnode import NodeNetwork
from kubetune_dev.registry import REGISTRY_BINARY

SERVICE_CIDR = "10.0.0.0/24"
SERVICE_CLUSTER_IP = "10.0.0.1"  # first address of SERVICE_CIDR: the `kubernetes` Service
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
DEFAULT_NODE_NAME = "kubetune-dev"
DEFAULT_GPUS = 4


@dataclass(frozen=True)
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    agent: int
    prometheus: int
    registry: int = 0  # 0: a cluster.json written before the local registry existed
    jobset_webhook: int = 0  # 0 (both): one written before the JobSet controller ran on it
    jobset_health: int = 0


@dataclass(frozen=True)
class ClusterConfig:
    """Everything needed to (re)start one cluster; persisted as cluster.json."""

    cluster_id: str
    home: Path
    bin_dir: Path
    python: Path
    ports: Ports
    node_name: str = DEFAULT_NODE_NAME
    gpus: int = DEFAULT_GPUS
    agent_args: tuple[str, ...] = field(default_factory=tuple)
    # Each cluster on a host gets its own loopback /16, so pods of two clusters never share IP:port.
    pod_network: str = str(POD_NETWORK)
    # "pid:starttime" of a process whose death tears the cluster down (a test session); "" = none.
    owner: str = ""
    # "agent": the node agent runs pods as host processes; "real": kubelet + containerd (realnode.py).
    node_kind: str = "agent"
    # The real node's network (realnode.NodeNetwork), unique among the clusters on this host.
    node_network_index: int = 0

    @property
    def components(self) -> tuple[str, ...]:
        return components_of(self.node_kind)

    @property
    def node_network(self) -> NodeNetwork:
        return NodeNetwork(self.node_network_index, self.cluster_id)

    @property
    def layout(self) -> Layout:
        return Layout(self.home)

    @property
    def apiserver_url(self) -> str:
        return f"https://127.0.0.1:{self.ports.apiserver}"

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.prometheus}"

    @property
    def registry_address(self) -> str:
        """host:port of the local OCI registry (plain HTTP on loopback)."""
        return f"127.0.0.1:{self.ports.registry}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.etcd_client}"

    def to_json(self) -> str:
        data = asdict(self)
        for key in ("home", "bin_dir", "python"):
            data[key] = str(data[key])
        data["agent_args"] = list(self.agent_args)
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ClusterConfig:
        data = json.loads(text)
        return cls(
            cluster_id=data["cluster_id"],
            home=Path(data["home"]),
            bin_dir=Path(data["bin_dir"]),
            python=Path(data["python"]),
            ports=Ports(**data["ports"]),
            node_name=data["node_name"],
            gpus=int(data["gpus"]),
            agent_args=tuple(data.get("agent_args", ())),
            owner=str(data.get("owner", "")),
            pod_network=str(data.get("pod_network", POD_NETWORK)),
            node_kind=str(data.get("node_kind", "agent")),
            node_network_index=int(data.get("node_network_index", 0)),
        )


def build_kubeconfig(*, server: str, ca_pem: bytes, cert_pem: bytes, key_pem: bytes, user: str) -> dict[str, Any]:
    """A self-contained kubeconfig: embedded data, so it works from any working directory."""

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "kubetune-dev", "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)}}
        ],
        "users": [{"name": user, "user": {"client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem)}}],
        "contexts": [{"name": "kubetune-dev", "context": {"cluster": "kubetune-dev", "user": user}}],
        "current-context": "kubetune-dev",
        "preferences": {},
    }


def etcd_command(cfg: ClusterConfig) -> list[str]:
    peer = f"http://127.0.0.1:{cfg.ports.etcd_peer}"
    return [
        str(cfg.bin_dir / "etcd"),
        "--name=default",
        f"--data-dir={cfg.layout.etcd_data_dir}",
        f"--listen-client-urls={cfg.etcd_url}",
        f"--advertise-client-urls={cfg.etcd_url}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=default={peer}",
        "--initial-cluster-state=new",
        # Test data is disposable; fsync dominates etcd latency on slow disks.
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]


def apiserver_command(cfg: ClusterConfig) -> list[str]:
    pki = cfg.layout.pki_dir
    return [
        str(cfg.bin_dir / "kube-apiserver"),
        f"--etcd-servers={cfg.etcd_url}",
        "--bind-address=127.0.0.1",
        f"--secure-port={cfg.ports.apiserver}",
        f"--cert-dir={pki / 'apiserver-generated'}",
        f"--tls-cert-file={pki / 'apiserver.crt'}",
        f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--client-ca-file={pki / 'ca.crt'}",
        # Node: the kubelet's own requests (its pods, secrets, leases) as on any kubeadm cluster.
        "--authorization-mode=Node,RBAC",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        # Default admission plugins stay on, ServiceAccount included: pods get the standard
        # kube-api-access volume, which the node agent mounts so in-cluster clients work.
        "--allow-privileged=true",
        *_service_endpoint_flags(cfg),
        # `kubectl logs` goes API server -> node agent (its kubelet endpoint), verified both ways.
        f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
        f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
        f"--kubelet-certificate-authority={pki / 'ca.crt'}",
        "--kubelet-preferred-address-types=InternalIP,Hostname",
        # Request-header authentication for aggregated APIs; without it the controller manager and
        # scheduler log errors about a missing requestheader CA bundle.
        f"--requestheader-client-ca-file={pki / 'ca.crt'}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
        f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
        "--profiling=false",
        "--v=1",
    ]


def _service_endpoint_flags(cfg: ClusterConfig) -> list[str]:
    """The `kubernetes` Service's endpoint. With the real node: the node IP, where the node's proxy
    carries connections to the API server on host loopback (realnode.py). With the node agent there
    is none: 127.0.0.1 would be the only address, and Endpoints validation rejects loopback. (Without
    an advertise address at all the API server looks for a default route, which sandboxes may lack.)"""
    if cfg.node_kind == "real":
        return [f"--advertise-address={cfg.node_network.node_ip}", "--endpoint-reconciler-type=lease"]
    return ["--advertise-address=127.0.0.1", "--endpoint-reconciler-type=none"]


def controller_manager_command(cfg: ClusterConfig) -> list[str]:
    pki = cfg.layout.pki_dir
    kubeconfig = cfg.layout.component_kubeconfig("kube-controller-manager")
    return [
        str(cfg.bin_dir / "kube-controller-manager"),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--leader-elect=false",
        "--bind-address=127.0.0.1",
        f"--secure-port={cfg.ports.controller_manager}",
        f"--cert-dir={cfg.layout.home / 'kube-controller-manager'}",
        # Default controller set: job, garbagecollector, namespace, serviceaccount(-token),
        # nodelifecycle, replicaset, deployment, cronjob, ... (bootstrap/cloud ones stay off).
        "--controllers=*",
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={pki / 'sa.key'}",
        f"--root-ca-file={pki / 'ca.crt'}",
        f"--cluster-signing-cert-file={pki / 'ca.crt'}",
        f"--cluster-signing-key-file={pki / 'ca.key'}",
        "--profiling=false",
        "--v=1",
    ]


def scheduler_command(cfg: ClusterConfig) -> list[str]:
    kubeconfig = cfg.layout.component_kubeconfig("kube-scheduler")
    return [
        str(cfg.bin_dir / "kube-scheduler"),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--leader-elect=false",
        "--bind-address=127.0.0.1",
        f"--secure-port={cfg.ports.scheduler}",
        "--profiling=false",
        "--v=1",
    ]


def agent_command(cfg: ClusterConfig) -> list[str]:
    pki = cfg.layout.pki_dir
    return [
        str(cfg.python),
        "-m",
        "kubetune_dev.agent",
        f"--kubeconfig={cfg.layout.kubeconfig}",
        f"--node-name={cfg.node_name}",
        f"--gpus={cfg.gpus}",
        f"--pod-network={cfg.pod_network}",
        f"--state-dir={cfg.layout.agent_dir}",
        f"--pods-dir={cfg.layout.pods_dir}",
        f"--listen-port={cfg.ports.agent}",
        f"--tls-cert-file={pki / 'agent.crt'}",
        f"--tls-private-key-file={pki / 'agent.key'}",
        f"--client-ca-file={pki / 'ca.crt'}",
        *([f"--owner={cfg.owner}", f"--cluster-home={cfg.home}"] if cfg.owner else []),
        *cfg.agent_args,
    ]


def jobset_command(cfg: ClusterConfig) -> list[str]:
    return jobset.build_command(
        bin_dir=cfg.bin_dir,
        config_file=cfg.layout.jobset_dir / "config.yaml",
        kubeconfig=cfg.layout.component_kubeconfig("jobset-controller"),
    )


def registry_command(cfg: ClusterConfig) -> list[str]:
    """The CNCF distribution registry (Debian's docker-registry) serving the shared image storage
    that `make images` pushes to (kubetune_dev/images.py)."""
    return [REGISTRY_BINARY, "serve", str(cfg.layout.registry_config)]


def prometheus_command(cfg: ClusterConfig) -> list[str]:
    return [
        str(cfg.bin_dir / "prometheus"),
        f"--config.file={cfg.layout.prometheus_config}",
        f"--storage.tsdb.path={cfg.layout.prometheus_dir / 'data'}",
        f"--web.listen-address=127.0.0.1:{cfg.ports.prometheus}",
        "--web.enable-lifecycle",
        "--storage.tsdb.retention.time=1d",
        "--log.level=warn",
    ]
