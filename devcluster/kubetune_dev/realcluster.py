"""Bring the real node of a dev cluster up and down (the design is in realnode.py).

`DevCluster` calls into `RealNode` for a cluster started with `node_kind="real"`: `prepare()` before
the node's processes start (network namespace, veth, cgroups, configuration files, certificates'
kubeconfigs), `command()` for each process, `after_start()` once one is running (mounts in the
node's mount namespace, images into containerd), `ready()` to wait on each, `install_addons()`
(CoreDNS) at the end, and `teardown()` from `down`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from kubetune.k8s.sync import KubeApi
from kubetune_dev import nodehost, nodeimages, procs, realnode
from kubetune_dev.components import ClusterConfig, build_kubeconfig
from kubetune_dev.realnode import NodePaths
from kubetune_dev.registry import PUBLIC_REGISTRY

CNI_PLUGINS: tuple[str, ...] = ("bridge", "host-local", "portmap", "loopback")
# Where Debian's containernetworking-plugins package puts them (hack/install-system-deps.sh).
CNI_BIN_DIRS: tuple[Path, ...] = (Path("/usr/lib/cni"), Path("/opt/cni/bin"))
BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static: the real node's test image


def cni_bin_dir() -> Path | None:
    for directory in CNI_BIN_DIRS:
        if all((directory / plugin).is_file() for plugin in CNI_PLUGINS):
            return directory
    return None


def find_runc() -> Path | None:
    found = shutil.which("runc") or next((p for p in ("/usr/sbin/runc", "/usr/bin/runc") if Path(p).is_file()), None)
    return Path(found) if found else None


def node_images(bin_dir: Path) -> dict[str, nodeimages.ImageSpec]:
    """What `dev up` imports into the node's containerd: the sandbox, CoreDNS and the test images."""
    specs = {"pause": nodeimages.pause_image(bin_dir), "coredns": nodeimages.coredns_image(bin_dir)}
    if BUSYBOX.is_file():
        specs["busybox"] = nodeimages.busybox_image(BUSYBOX)
        specs["busybox-nonroot"] = nodeimages.busybox_image(BUSYBOX, user=str(nodeimages.NONROOT_UID))
    return specs


class RealNode:
    def __init__(self, cfg: ClusterConfig, log: Callable[[str], None]) -> None:
        self.cfg = cfg
        self.network = cfg.node_network
        self.paths = NodePaths(cfg.layout, cfg.cluster_id)
        self._log = log

    # ------------------------------------------------------------------ start

    def prepare(self) -> None:
        """Host-side state the node's processes need before any of them starts."""
        cfg, paths, network = self.cfg, self.paths, self.network
        nodehost.create_network(network)
        nodehost.create_cgroups(cfg.cluster_id)
        paths.sockets_dir.mkdir(parents=True, exist_ok=True)
        for directory in (paths.cni_conf_dir, paths.kubelet_dir, paths.registry_hosts_dir, paths.images_dir):
            directory.mkdir(parents=True, exist_ok=True)
        runc, cni = find_runc(), cni_bin_dir()
        assert runc is not None and cni is not None, "checked by preflight"
        procs.write_atomic(
            paths.containerd_config,
            realnode.build_containerd_config(
                paths, runc=runc, cni_bin_dir=cni, sandbox_image=nodeimages.pause_image(cfg.bin_dir).name
            ),
        )
        if cfg.ports.registry:  # containerd pulls kubetune's images from the local registry, over the node proxy
            host, hosts = realnode.build_registry_hosts(cfg.registry_address)
            mirror = realnode.build_registry_mirror(PUBLIC_REGISTRY, cfg.registry_address)
            mirrors = {host: hosts, PUBLIC_REGISTRY: mirror}
            for name, text in mirrors.items():
                (paths.registry_hosts_dir / name).mkdir(parents=True, exist_ok=True)
                procs.write_atomic(paths.registry_hosts_dir / name / "hosts.toml", text)
        cni_config = realnode.build_cni_config(network, paths)
        procs.write_atomic(paths.cni_conf_dir / "10-kubetune.conflist", realnode.to_json(cni_config))
        procs.write_atomic(paths.resolv_conf, "")
        kubelet_config = realnode.build_kubelet_config(
            network, paths, cluster_id=cfg.cluster_id, pki_dir=cfg.layout.pki_dir
        )
        procs.write_atomic(paths.kubelet_config, yaml.safe_dump(kubelet_config, sort_keys=False))
        proxy_config = realnode.build_kube_proxy_config(network, paths, node_name=cfg.node_name)
        procs.write_atomic(paths.kube_proxy_config, yaml.safe_dump(proxy_config, sort_keys=False))
        pki = cfg.layout.pki_dir
        # Inside the node, 127.0.0.1:<API server port> is the proxy to the host's API server.
        for component, pair in (("kubelet", "kubelet-client"), ("kube-proxy", "kube-proxy")):
            kubeconfig = build_kubeconfig(
                server=cfg.apiserver_url,
                ca_pem=(pki / "ca.crt").read_bytes(),
                cert_pem=(pki / f"{pair}.crt").read_bytes(),
                key_pem=(pki / f"{pair}.key").read_bytes(),
                user=component,
            )
            path = paths.kubeconfig(component)
            procs.write_atomic(path, yaml.safe_dump(kubeconfig, sort_keys=False))
            path.chmod(0o600)

    def command(self, name: str, holder_pid: int | None) -> list[str]:
        cfg, paths, network = self.cfg, self.paths, self.network
        if name == "node-namespace":
            return realnode.holder_command(network)
        if name == "node-proxy":
            # The API server for the node and its pods; the registry for containerd (node loopback);
            # Prometheus for pods (the operator's queries) on the node's address.
            port, registry, prometheus = cfg.ports.apiserver, cfg.ports.registry, cfg.ports.prometheus
            forwards = [f"127.0.0.1:{port}", f"{network.node_ip}:{port}", f"{network.node_ip}:{prometheus}"]
            forwards += [f"127.0.0.1:{registry}"] if registry else []
            return [
                str(cfg.python), "-m", "kubetune_dev.netns_proxy", f"--netns={network.netns_path}",
                *(f"--forward={listen}=127.0.0.1:{listen.rpartition(':')[2]}" for listen in forwards),
                f"--ready-file={paths.root / 'node-proxy.ready'}",
            ]  # fmt: skip
        if name == "device-plugin":
            owner = [f"--owner={cfg.owner}", f"--cluster-home={cfg.home}"] if cfg.owner else []
            return [
                str(cfg.python), "-m", "kubetune_dev.deviceplugin", f"--plugin-dir={paths.device_plugins_dir}",
                f"--count={cfg.gpus}", *owner,
            ]  # fmt: skip
        if holder_pid is None:
            raise RuntimeError(f"{name} runs inside the node's namespaces, but node-namespace is not running")
        if name == "containerd":
            return realnode.containerd_command(network, paths, cfg.bin_dir, holder_pid)
        if name == "kubelet":
            return realnode.kubelet_command(network, paths, cfg.bin_dir, holder_pid, node_name=cfg.node_name)
        if name == "kube-proxy":
            return realnode.kube_proxy_command(network, paths, cfg.bin_dir, holder_pid)
        raise KeyError(name)

    def env(self) -> dict[str, str]:
        """Extra environment of the node's processes: containerd finds its shim and runc on PATH."""
        runc = find_runc()
        dirs = [str(self.cfg.bin_dir), *([str(runc.parent)] if runc else []), "/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        return {"PATH": ":".join(dict.fromkeys(dirs))}

    def after_ready(self, name: str, holder_pid: int | None) -> None:
        """What follows once `name` is ready: the node's mounts, the images in containerd."""
        if name == "node-namespace" and holder_pid is not None:
            nodehost.setup_mounts(self.paths, holder_pid)
        elif name == "containerd":
            self.import_images()

    def import_images(self) -> None:
        started = time.monotonic()
        ctr = self.cfg.bin_dir / "ctr"
        for spec in node_images(self.cfg.bin_dir).values():
            archive = nodeimages.write_archive(spec, self.paths.images_dir)
            nodeimages.import_archive(ctr, self.paths.containerd_socket, archive)
        self._log(f"node images imported in {time.monotonic() - started:.1f}s")

    def ready(self, name: str, api: KubeApi, holder_pid: int | None) -> bool:
        network = self.network
        if name == "node-namespace":
            # Only once nsenter and unshare have exec'd into `sleep` is its mount namespace the node's;
            # mounting earlier would mount on the host.
            return holder_pid is not None and nodehost.holds_own_mount_namespace(holder_pid)
        if name == "node-proxy":
            return (self.paths.root / "node-proxy.ready").exists()
        if name == "containerd":
            return self.containerd_ready()
        if name == "kube-proxy":
            return _http_ok(f"http://{network.node_ip}:{realnode.KUBE_PROXY_HEALTHZ_PORT}/healthz")
        if name == "device-plugin":
            allocatable = api.get(f"/api/v1/nodes/{self.cfg.node_name}").get("status", {}).get("allocatable", {})
            return str(allocatable.get(realnode.GPU_RESOURCE, "0")) == str(self.cfg.gpus)
        raise KeyError(name)

    def containerd_ready(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            try:
                sock.connect(str(self.paths.containerd_socket))
            except OSError:
                return False
        return True

    def install_addons(self, api: KubeApi, deadline: float) -> None:
        """CoreDNS, applied server-side, and waited for until its Deployment is available."""
        image = nodeimages.coredns_image(self.cfg.bin_dir).name
        for manifest in realnode.build_coredns_manifests(image):
            api.apply(manifest, field_manager="kubetune-dev")
        path = "/apis/apps/v1/namespaces/kube-system/deployments/coredns"
        while not _available(api.get(path)):
            if time.monotonic() > deadline:
                raise TimeoutError("CoreDNS did not become available; see `kubectl -n kube-system describe pods`")
            time.sleep(0.2)

    # ------------------------------------------------------------------ stop

    def teardown(self, stop: Callable[[str], None]) -> None:
        """After the node's processes were stopped by `stop(name)`: end every container (SIGTERM, a short
        grace, SIGKILL), everything left in the node's namespaces, then the namespaces and cgroups."""
        cluster_id = self.cfg.cluster_id
        for pid in nodehost.cgroup_pids(cluster_id):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and nodehost.cgroup_pids(cluster_id):
            time.sleep(0.05)
        nodehost.remove_cgroups(cluster_id)
        nodehost.kill_netns_processes(self.network)
        stop("node-namespace")
        nodehost.delete_network(self.network)
        shutil.rmtree(self.paths.sockets_dir, ignore_errors=True)

    def leftovers(self) -> list[str]:
        found = nodehost.leftovers(self.network, self.cfg.cluster_id, self.cfg.home)
        return found + ([f"directory {self.paths.sockets_dir}"] if self.paths.sockets_dir.exists() else [])


def _available(deployment: dict[str, Any]) -> bool:
    conditions = {c["type"]: c["status"] for c in deployment.get("status", {}).get("conditions", [])}
    return conditions.get("Available") == "True" and int(deployment.get("status", {}).get("readyReplicas", 0)) >= 1


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return 200 <= int(resp.status) < 300
    except (urllib.error.URLError, OSError):
        return False

