"""Host side of the real node: its network namespace, veth pair, mounts and cgroups (see realnode.py).

Everything here is created by `dev up` and removed by `dev down`; `leftovers()` lists what of it
still exists, which the e2e test of `down` asserts is nothing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from kubetune_dev.components import SERVICE_CIDR
from kubetune_dev.realnode import KUBELET_KERNEL_TUNABLES, NodeNetwork, NodePaths, cgroup_root, routed_networks

CGROUP_MOUNT = Path("/sys/fs/cgroup")


class NodeHostError(RuntimeError):
    pass


def _run(*argv: str) -> str:
    proc = subprocess.run(list(argv), capture_output=True, text=True)
    if proc.returncode != 0:
        raise NodeHostError(f"`{' '.join(argv)}` failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def host_routes() -> list[str]:
    return [str(net) for net in routed_networks(Path("/proc/net/route").read_text())]


def create_network(network: NodeNetwork) -> None:
    """The node's network namespace, the veth pair to the host, addresses and the two routes."""
    ns = network.netns
    _run("ip", "netns", "add", ns)
    _run("ip", "link", "add", network.host_veth, "type", "veth", "peer", "name", network.node_interface, "netns", ns)
    _run("ip", "addr", "add", f"{network.host_ip}/{network.link.prefixlen}", "dev", network.host_veth)
    _run("ip", "link", "set", network.host_veth, "up")
    _run("ip", "-n", ns, "addr", "add", f"{network.node_ip}/{network.link.prefixlen}", "dev", network.node_interface)
    _run("ip", "-n", ns, "link", "set", network.node_interface, "up")
    _run("ip", "-n", ns, "link", "set", "lo", "up")
    # Host -> pods (Prometheus scrapes pod IPs); node -> Service IPs (kube-proxy DNATs them in OUTPUT,
    # after a route was found). No default route: nothing else is reachable from the node or a pod.
    _run("ip", "route", "add", str(network.pod_cidr), "via", network.node_ip, "dev", network.host_veth)
    _run("ip", "-n", ns, "route", "add", SERVICE_CIDR, "dev", network.node_interface)
    # Forwarding between the pod bridge and the node's own addresses happens inside the namespace only.
    _run("ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")


def delete_network(network: NodeNetwork) -> None:
    """Deleting the namespace takes its veth end (and so the host's), bridge, pod veths and every
    iptables chain with it, once no process is left inside."""
    if network.netns_path.exists():
        _run("ip", "netns", "delete", network.netns)
    with contextlib.suppress(NodeHostError):
        _run("ip", "link", "delete", network.host_veth)


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def holds_own_mount_namespace(holder_pid: int) -> bool:
    """True once the holder runs `sleep` in a mount namespace other than ours (the exec chain
    nsenter -> unshare -> sleep is done)."""
    sleep = shutil.which("sleep")
    try:
        exe = os.readlink(f"/proc/{holder_pid}/exe")
        theirs, ours = os.readlink(f"/proc/{holder_pid}/ns/mnt"), os.readlink("/proc/self/ns/mnt")
    except OSError:
        return False
    return sleep is not None and Path(exe) == Path(sleep).resolve() and theirs != ours


def setup_mounts(paths: NodePaths, holder_pid: int) -> None:
    """Bind the node's state directories over the fixed paths, and the kubelet's kernel tunables
    over /proc/sys, inside the holder's mount namespace only."""
    if not holds_own_mount_namespace(holder_pid):
        raise NodeHostError(f"process {holder_pid} is not (yet) in the node's mount namespace; not mounting")
    enter = ["nsenter", f"--mount=/proc/{holder_pid}/ns/mnt", "--"]
    for target, source in paths.bind_mounts().items():
        source.mkdir(parents=True, exist_ok=True)
        # The mount point must exist on the host; an empty standard directory is all that is left there.
        Path(target).mkdir(parents=True, exist_ok=True)
        _run(*enter, "mount", "--bind", str(source), target)
    # The node resolves no names of the host's: its image pulls go to loopback registries only.
    _run(*enter, "mount", "--bind", "-o", "ro", str(paths.resolv_conf), "/etc/resolv.conf")
    paths.tunables_dir.mkdir(parents=True, exist_ok=True)
    for key, value in KUBELET_KERNEL_TUNABLES.items():
        shown = paths.tunables_dir / key.replace("/", ".")
        shown.write_text(f"{value}\n")
        _run(*enter, "mount", "--bind", "-o", "ro", str(shown), f"/proc/sys/{key}")


def cgroup_hierarchies() -> list[Path]:
    """Every mounted cgroup hierarchy (v1 controllers, name=systemd, and the v2 `unified` one)."""
    hierarchies = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        separator = fields.index("-")
        if fields[separator + 1] in ("cgroup", "cgroup2"):
            hierarchies.append(Path(fields[4]))
    return hierarchies


def create_cgroups(cluster_id: str) -> None:
    """The kubelet requires its cgroup root to exist in every hierarchy it uses."""
    for hierarchy in cgroup_hierarchies():
        (hierarchy / cgroup_root(cluster_id).lstrip("/")).mkdir(exist_ok=True)


def _cgroup_dirs(cluster_id: str) -> list[Path]:
    roots = [h / cgroup_root(cluster_id).lstrip("/") for h in cgroup_hierarchies()]
    found: list[Path] = []
    for root in roots:
        if root.is_dir():
            found.extend(Path(p) for p, _, _ in os.walk(root))
    return found


def cgroup_pids(cluster_id: str) -> set[int]:
    pids: set[int] = set()
    for directory in _cgroup_dirs(cluster_id):
        with contextlib.suppress(OSError):
            pids.update(int(p) for p in (directory / "cgroup.procs").read_text().split())
    return pids


def remove_cgroups(cluster_id: str, timeout: float = 10.0) -> None:
    """SIGKILL what still runs in the node's cgroups (containers), then remove them deepest first."""
    deadline = time.monotonic() + timeout
    while (pids := cgroup_pids(cluster_id)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    for directory in sorted(_cgroup_dirs(cluster_id), key=lambda p: len(p.parts), reverse=True):
        for _ in range(50):
            try:
                directory.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.1)  # the last task is still leaving


def processes_in_netns(network: NodeNetwork) -> Iterator[int]:
    """Pids whose network namespace is the node's (containerd shims and anything else left inside)."""
    try:
        target = os.stat(network.netns_path)
    except OSError:
        return
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            st = os.stat(entry / "ns" / "net")
            if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
                yield int(entry.name)


def kill_netns_processes(network: NodeNetwork) -> None:
    for pid in list(processes_in_netns(network)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def leftovers(network: NodeNetwork, cluster_id: str, home: Path) -> list[str]:
    """What of this node still exists on the host (nothing, after `dev down`)."""
    found: list[str] = []
    if network.netns_path.exists():
        found.append(f"network namespace {network.netns}")
    if link_exists(network.host_veth):
        found.append(f"interface {network.host_veth}")
    if str(network.pod_cidr) in host_routes():
        found.append(f"route to {network.pod_cidr}")
    found += [f"cgroup {d}" for d in _cgroup_dirs(cluster_id)]
    home_prefix = str(home)
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mount_point = line.split()[4]
        if mount_point.startswith(home_prefix):
            found.append(f"mount {mount_point}")
    return found
