"""Checks run before `dev up` starts anything, each failure with the command that fixes it."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from kubetune_dev import realcluster, realnode
from kubetune_dev.layout import KUBERNETES_VERSION, REAL_NODE_BINARIES, REQUIRED_BINARIES
from kubetune_dev.registry import REGISTRY_BINARY

BUILD_HINT = "run hack/build-binaries.sh (builds them into ~/.cache/kubetune; ~30 min the first time)"
SYSTEM_DEPS_HINT = (
    "run hack/install-system-deps.sh (apt-get install util-linux mount; for the real node also runc iptables "
    "containernetworking-plugins busybox-static)"
)


@dataclass(frozen=True)
class Problem:
    what: str
    fix: str

    def __str__(self) -> str:
        return f"{self.what}\n    fix: {self.fix}"


def format_problems(problems: list[Problem]) -> str:
    return "cannot start the dev cluster:\n  " + "\n  ".join(str(p) for p in problems)


def check_binaries(bin_dir: Path, *, real_node: bool = False) -> list[Problem]:
    problems = []
    for name in (*REQUIRED_BINARIES, *(REAL_NODE_BINARIES if real_node else ())):
        path = bin_dir / name
        if not (path.is_file() and os.access(path, os.X_OK)):
            problems.append(
                Problem(
                    f"{name} not found at {path}",
                    f"{BUILD_HINT}, or point KUBETUNE_DEV_BIN_DIR at a directory holding "
                    f"{', '.join(REQUIRED_BINARIES)} (Kubernetes {KUBERNETES_VERSION}, "
                    "Prometheus with Kubernetes discovery)",
                )
            )
    return problems


def check_host_tools() -> list[Problem]:
    problems = []
    missing = [tool for tool in ("unshare", "mount") if shutil.which(tool) is None]
    if missing:
        problems.append(Problem(f"{', '.join(missing)} not found on PATH (needed by the node agent)", SYSTEM_DEPS_HINT))
    if not os.access(REGISTRY_BINARY, os.X_OK):
        problems.append(Problem(f"{REGISTRY_BINARY} not found (the local image registry)", SYSTEM_DEPS_HINT))
    return problems


def check_real_node_host() -> list[Problem]:
    """What the real node needs of the host: root, cgroup controllers, runc, the CNI plugins,
    iproute2/iptables/nsenter."""
    problems = []
    if os.geteuid() != 0:
        problems.append(Problem("the real node needs root (namespaces, mounts, cgroups)", "run as root"))
    missing = [tool for tool in ("ip", "iptables", "nsenter", "sysctl") if shutil.which(tool) is None]
    if realcluster.find_runc() is None:
        missing.append("runc")
    if missing:
        problems.append(Problem(f"{', '.join(missing)} not found (needed by the real node)", SYSTEM_DEPS_HINT))
    if realcluster.cni_bin_dir() is None:
        problems.append(
            Problem(
                f"CNI plugins {', '.join(realcluster.CNI_PLUGINS)} not found in "
                f"{' or '.join(map(str, realcluster.CNI_BIN_DIRS))}",
                SYSTEM_DEPS_HINT,
            )
        )
    if not Path("/sys/fs/cgroup/memory").is_dir() and not Path("/sys/fs/cgroup/cgroup.controllers").exists():
        problems.append(Problem("no cgroup memory controller under /sys/fs/cgroup", "mount the cgroup hierarchies"))
    return problems


def free_node_network_index(rng: random.Random | None = None) -> int:
    """A real node network (10.244.N.0/24 pods, 10.245.N.0/30 link) no host route touches yet."""
    free = realnode.free_network_indices(realnode.routed_networks(Path("/proc/net/route").read_text()))
    if not free:
        raise RuntimeError("no free 10.244.N.0/24 pod network left on this host")
    return (rng or random.Random()).choice(free)


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Same option the servers use, so a port in TIME_WAIT is not reported as busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def listener_pid(port: int) -> int | None:
    """Best effort: the pid listening on TCP `port` (via /proc/net/tcp socket inodes)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    if not inodes:
        return None
    targets = {f"socket:[{inode}]" for inode in inodes}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in targets:
                        return int(proc.name)
    return None


def _describe_pid(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return f"pid {pid}"
    return f"pid {pid} ({cmd[:80]})"


def check_ports(requested: Mapping[str, int]) -> list[Problem]:
    """Ports the user pinned (e.g. `--apiserver-port 6443`) must be free on 127.0.0.1."""
    problems = []
    for component, port in requested.items():
        if not port_in_use(port):
            continue
        pid = listener_pid(port)
        holder = f" by {_describe_pid(pid)}" if pid else ""
        flag = f"--{component}-port"
        problems.append(
            Problem(
                f"port {port} on 127.0.0.1 (wanted for {component}) is already in use{holder}",
                f"stop that process, pass another {flag}, or leave {flag} out to pick a free port",
            )
        )
    return problems


def bound_loopback_octets() -> set[int]:
    """N of every 127.N.x.y address a TCP or UDP socket on this host is bound to."""
    octets: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/udp"):
        with contextlib.suppress(OSError), open(table) as lines:
            for line in list(lines)[1:]:
                address = int(line.split()[1].split(":")[0], 16)  # little-endian IPv4
                if address & 0xFF == 127:
                    octets.add((address >> 8) & 0xFF)
    return octets


def free_pod_network(rng: random.Random | None = None, busy: set[int] | None = None) -> str:
    """A loopback /16 (127.N.0.0/16, N in 10..250) in which nothing is bound yet: each dev cluster on
    a host takes its own, so trial pods of two clusters never collide on IP:port. Random among the
    free ones, so two clusters starting at the same moment rarely pick the same."""
    busy = bound_loopback_octets() if busy is None else busy
    candidates = [octet for octet in range(10, 251) if octet not in busy]
    return f"127.{(rng or random.Random()).choice(candidates)}.0.0/16"


def free_ports(count: int, *, exclude: set[int] | None = None) -> list[int]:
    """`count` distinct free ports; all sockets stay bound until every port is chosen."""
    exclude = exclude or set()
    sockets: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
            if port not in exclude:
                ports.append(port)
    finally:
        for sock in sockets:
            sock.close()
    return ports
