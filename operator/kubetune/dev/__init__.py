"""A real local Kubernetes control plane for development and end-to-end tests.

`kubetune dev up` runs etcd, kube-apiserver, kube-controller-manager and kube-scheduler built from
source (hack/build-binaries.sh), a node agent of our own that runs pods as host processes
(`kubetune.dev.agent`), and Prometheus. See README.md next to this file.
"""

from kubetune.dev.cluster import ClusterInfo, DevCluster, DevClusterError

__all__ = ["ClusterInfo", "DevCluster", "DevClusterError"]
