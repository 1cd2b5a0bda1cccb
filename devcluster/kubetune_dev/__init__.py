"""A real local Kubernetes control plane for development and end-to-end tests.

`kubetune dev up` runs etcd, kube-apiserver, kube-controller-manager and kube-scheduler built from
source (hack/build-binaries.sh), a node agent of our own that runs pods as host processes
(`kubetune_dev.agent`), and Prometheus. See README.md next to this file.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ClusterInfo", "DevCluster", "DevClusterError"]


def __getattr__(name: str) -> Any:
    # Lazy, so `python -m kubetune_dev.agent` does not drag in the cluster code (and its imports).
    if name in __all__:
        from kubetune_dev import cluster

        return getattr(cluster, name)
    raise AttributeError(name)
