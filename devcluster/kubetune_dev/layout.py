"""Where the dev cluster keeps its binaries, state, logs and pid files.

Everything a cluster writes lives under one home directory so `dev down` can remove it with one
`rm -rf`, and so tests can find logs without asking a running process.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

KUBERNETES_VERSION = "v1.34.4"
# Set in the environment of every process a cluster starts (pods included), so `down` can find
# stragglers that left their process group.
MARKER_ENV = "KUBETUNE_DEV_CLUSTER_ID"
ETCD_VERSION = "v3.6.16"

# Built by hack/build-binaries.sh. Prometheus too: Debian's package lacks Kubernetes discovery.
REQUIRED_BINARIES: tuple[str, ...] = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "prometheus",
    # sigs.k8s.io/jobset, with its CRD beside it (jobset.py): JobSet trials.
    "jobset-controller",
)

# The real node's binaries (same script), besides runc and the CNI plugins from Debian.
REAL_NODE_BINARIES: tuple[str, ...] = (
    "kubelet",
    "kube-proxy",
    "containerd",
    "containerd-shim-runc-v2",
    "ctr",
    "crictl",
    "coredns",
    "pause",
)

NODE_KINDS: tuple[str, ...] = ("agent", "real")
CONTROL_PLANE: tuple[str, ...] = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
# The real node's processes in start order (kubetune_dev/realnode.py): the holder of its mount
# namespace, the proxy to the API server, containerd, kubelet, kube-proxy, the GPU device plugin.
REAL_NODE_COMPONENTS: tuple[str, ...] = (
    "node-namespace",
    "node-proxy",
    "containerd",
    "kubelet",
    "kube-proxy",
    "device-plugin",
)


def components_of(node_kind: str) -> tuple[str, ...]:
    """Start order; `down` stops in reverse so nothing loses its upstream while still running."""
    node = REAL_NODE_COMPONENTS if node_kind == "real" else ("agent",)
    return ("registry", *CONTROL_PLANE, "jobset-controller", *node, "prometheus")


# The node agent's cluster (the default kind of the Python API).
COMPONENTS: tuple[str, ...] = components_of("agent")


def default_cache(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("KUBETUNE_CACHE") or Path.home() / ".cache" / "kubetune")


def default_bin_dir(env: Mapping[str, str] | None = None) -> Path:
    """`$KUBETUNE_DEV_BIN_DIR`, else the links hack/build-binaries.sh maintains."""
    env = os.environ if env is None else env
    explicit = env.get("KUBETUNE_DEV_BIN_DIR")
    return Path(explicit) if explicit else default_cache(env) / "current"


def default_home(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    explicit = env.get("KUBETUNE_DEV_HOME")
    return Path(explicit) if explicit else default_cache(env) / "dev"


@dataclass(frozen=True)
class Layout:
    """Paths inside one cluster's home directory (all absolute)."""

    home: Path

    @property
    def cluster_file(self) -> Path:
        return self.home / "cluster.json"

    @property
    def lock_file(self) -> Path:
        # Outside nothing else: `down` removes the home but keeps holding this lock while it does.
        return self.home.parent / f".{self.home.name}.lock"

    @property
    def pki_dir(self) -> Path:
        return self.home / "pki"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def etcd_data_dir(self) -> Path:
        return self.home / "etcd"

    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig (client certificate in group system:masters)."""
        return self.home / "kubeconfig"

    def component_kubeconfig(self, component: str) -> Path:
        return self.home / f"{component}.kubeconfig"

    @property
    def registry_config(self) -> Path:
        return self.home / "registry.yml"

    @property
    def jobset_dir(self) -> Path:
        """The JobSet controller's configuration and, in certs/, its webhook serving certificate."""
        return self.home / "jobset"

    @property
    def prometheus_dir(self) -> Path:
        return self.home / "prometheus"

    @property
    def prometheus_config(self) -> Path:
        return self.prometheus_dir / "prometheus.yml"

    @property
    def prometheus_targets_dir(self) -> Path:
        """file_sd directory: drop `<name>.json` here to have Prometheus scrape an in-process operator."""
        return self.prometheus_dir / "targets"

    @property
    def agent_dir(self) -> Path:
        return self.home / "agent"

    @property
    def pods_dir(self) -> Path:
        return self.agent_dir / "pods"

    def pid_file(self, component: str) -> Path:
        return self.run_dir / f"{component}.pid"

    def log_file(self, component: str) -> Path:
        return self.logs_dir / f"{component}.log"

    def pod_dir(self, namespace: str, name: str, uid: str) -> Path:
        """Per-pod directory; mirrors the kubelet's /var/log/pods/<namespace>_<name>_<uid>."""
        return self.pods_dir / f"{namespace}_{name}_{uid}"

    def pod_log(self, namespace: str, name: str, uid: str, container: str) -> Path:
        """stdout+stderr of one container of one pod (all starts appended)."""
        return self.pod_dir(namespace, name, uid) / f"{container}.log"
