"""Bring the dev cluster up and down: the Python API behind `kubetune dev` and the test fixtures.

cluster = DevCluster()          # home: $KUBETUNE_DEV_HOME or ~/.cache/kubetune/dev
info = cluster.up()             # idempotent; cleans up after a crashed cluster first
info.kubeconfig, info.prometheus_url
cluster.down()                  # stops every process it started, removes the home
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import signal
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from kubetune.k8s.sync import KubeApi, NotFound
from kubetune_dev import components, images, jobset, preflight, procs
from kubetune_dev.agentstate import load_records
from kubetune_dev.components import ClusterConfig, Ports
from kubetune_dev.layout import (
    COMPONENTS,
    MARKER_ENV,
    NODE_KINDS,
    REAL_NODE_COMPONENTS,
    Layout,
    default_bin_dir,
    default_home,
)
from kubetune_dev.pki import NodeIdentity, build_cluster_pki
from kubetune_dev.prometheus import build_prometheus_config
from kubetune_dev.realcluster import RealNode
from kubetune_dev.realnode import DEFAULT_REAL_NODE_NAME
from kubetune_dev.registry import default_storage, registry_config, registry_ready

DEFAULT_TIMEOUT = 300.0
# Any of these in a home means a cluster (perhaps half-started or crashed) lives there.
CLUSTER_HOME_ENTRIES: tuple[str, ...] = ("cluster.json", "run", "pki", "etcd", "agent")
COMMANDS: dict[str, Callable[[ClusterConfig], list[str]]] = {
    "etcd": components.etcd_command,
    "kube-apiserver": components.apiserver_command,
    "kube-controller-manager": components.controller_manager_command,
    "kube-scheduler": components.scheduler_command,
    "agent": components.agent_command,
    "prometheus": components.prometheus_command,
    "registry": components.registry_command,
    "jobset-controller": components.jobset_command,
}
# Log lines that explain a component that would not start, with what to do about them.
LOG_HINTS: tuple[tuple[str, str], ...] = (
    ("address already in use", "a port is taken: stop the process using it or pick other ports"),
    ("permission denied", "check that the state directory is writable"),
)


class DevClusterError(RuntimeError):
    pass


@dataclass(frozen=True)
class ClusterInfo:
    home: Path
    kubeconfig: Path
    apiserver_url: str
    prometheus_url: str
    node_name: str
    bin_dir: Path
    reused: bool
    node_kind: str = "agent"
    registry: str = ""  # host:port of the local OCI registry
    # Prometheus as pods reach it: the node proxy's address on a real node, loopback under the agent.
    pod_prometheus_url: str = ""

    @property
    def layout(self) -> Layout:
        return Layout(self.home)

    def pod_log(self, namespace: str, name: str, uid: str, container: str) -> Path:
        """stdout+stderr of a container: `<home>/agent/pods/<namespace>_<name>_<uid>/<container>.log`."""
        return self.layout.pod_log(namespace, name, uid, container)

    def env(self) -> dict[str, str]:
        env = {
            "KUBECONFIG": str(self.kubeconfig),
            "KUBETUNE_PROMETHEUS_URL": self.prometheus_url,
            "KUBETUNE_DEV_HOME": str(self.home),
        }
        if self.pod_prometheus_url:
            env["KUBETUNE_POD_PROMETHEUS_URL"] = self.pod_prometheus_url
        if self.registry:
            env["KUBETUNE_REGISTRY"] = self.registry
            # The images of the last `make images`, by digest in this cluster's registry.
            for name in ("operator", "trainer"):
                if (image := images.reference(name, self.registry)) is not None:
                    env[f"KUBETUNE_{name.upper()}_IMAGE"] = image
        return env

    def exports(self) -> str:
        lines = [f"export {key}={value}" for key, value in self.env().items()]
        # helm (and the control-plane binaries) live here; kubectl is expected on PATH already.
        lines.append(f'export PATH="{self.bin_dir}:$PATH"')
        return "\n".join(lines)


class DevCluster:
    def __init__(
        self,
        home: Path | None = None,
        *,
        bin_dir: Path | None = None,
        gpus: int = components.DEFAULT_GPUS,
        node_name: str | None = None,
        node_kind: str = "agent",
        pinned_ports: Mapping[str, int] | None = None,
        python: Path | None = None,
        agent_args: tuple[str, ...] = (),
        owner_pid: int | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        """`owner_pid`: tear the cluster down when that process dies (test sessions pass their own
        pid, so a killed pytest leaves nothing running). `node_kind`: "agent" (the node agent runs pods
        as host processes) or "real" (kubelet, containerd, runc, CNI, kube-proxy, CoreDNS, the GPU
        device plugin: realnode.py)."""
        if node_kind not in NODE_KINDS:
            raise DevClusterError(f"unknown node kind {node_kind!r}; known: {', '.join(NODE_KINDS)}")
        self.layout = Layout((home or default_home()).absolute())
        self.bin_dir = (bin_dir or default_bin_dir()).absolute()
        self.gpus = gpus
        self.node_kind = node_kind
        self.node_name = node_name or (DEFAULT_REAL_NODE_NAME if node_kind == "real" else components.DEFAULT_NODE_NAME)
        self.pinned_ports = dict(pinned_ports or {})
        # Not resolved: a venv's python is a symlink, and resolving it would leave the venv.
        self.python = python or Path(sys.executable)
        self.agent_args = agent_args
        self.owner_pid = owner_pid
        self._log = log or (lambda message: print(message, file=sys.stderr, flush=True))
        self._api_client: KubeApi | None = None  # for the cluster in the home right now

    # ------------------------------------------------------------------ public API

    @property
    def kubeconfig(self) -> Path:
        return self.layout.kubeconfig

    @property
    def config(self) -> ClusterConfig | None:
        try:
            return ClusterConfig.from_json(self.layout.cluster_file.read_text())
        except (OSError, ValueError, KeyError):
            return None

    @property
    def prometheus_url(self) -> str:
        cfg = self.config
        if cfg is None:
            raise DevClusterError(f"no dev cluster in {self.layout.home}; run `kubetune dev up`")
        return cfg.prometheus_url

    def info(self, *, reused: bool = False) -> ClusterInfo:
        cfg = self.config
        if cfg is None:
            raise DevClusterError(f"no dev cluster in {self.layout.home}; run `kubetune dev up`")
        return ClusterInfo(
            home=self.layout.home,
            kubeconfig=self.layout.kubeconfig,
            apiserver_url=cfg.apiserver_url,
            prometheus_url=cfg.prometheus_url,
            node_name=cfg.node_name,
            bin_dir=cfg.bin_dir,
            reused=reused,
            node_kind=cfg.node_kind,
            registry=cfg.registry_address if cfg.ports.registry else "",
            pod_prometheus_url=(f"http://{cfg.node_network.node_ip}:{cfg.ports.prometheus}" if cfg.node_kind == "real"
                                else cfg.prometheus_url),
        )

    def status(self) -> dict[str, bool]:
        """Component -> running (pid file present and that exact process alive)."""
        cfg = self.config
        return {name: self._handle(name) is not None for name in (cfg.components if cfg else COMPONENTS)}

    def is_running(self) -> bool:
        cfg = self.config
        return cfg is not None and all(self.status().values()) and self._apiserver_ready(cfg)

    def up(self, timeout: float = DEFAULT_TIMEOUT) -> ClusterInfo:
        with self._locked():
            if self._looks_like_cluster_home():
                running = self.config
                if running is not None and self.is_running():
                    if running.node_kind != self.node_kind:
                        raise DevClusterError(
                            f"a dev cluster with a {running.node_kind} node runs in {self.layout.home}; "
                            f"`kubetune dev down` it first, or use another home for a {self.node_kind} node"
                        )
                    self._log(f"dev cluster already running in {self.layout.home}")
                    return self.info(reused=True)
                self._log(f"found a stopped or crashed dev cluster in {self.layout.home}; cleaning it up")
                self._teardown()
            problems = self._preflight()
            if problems:
                raise DevClusterError(preflight.format_problems(problems))
            cfg = self._new_config()
            try:
                self._start(cfg, time.monotonic() + timeout)
            except BaseException as exc:
                self._log(f"dev cluster failed to start; logs are in {self.layout.logs_dir}")
                self._stop_processes(cfg)
                if isinstance(exc, Exception) and not isinstance(exc, DevClusterError):
                    # The real node's steps fail with OS and subprocess errors: one error type for callers.
                    raise DevClusterError(f"{type(exc).__name__}: {exc} (logs: {self.layout.logs_dir})") from exc
                raise
            return self.info()

    def down(self) -> None:
        with self._locked():
            self._teardown()

    def stop_component(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal one component's process group (tests kill the agent to check re-adoption)."""
        handle = self._handle(name)
        if handle is None:
            return
        procs.signal_group(handle, sig)
        for _ in range(500):
            procs.reap(handle.pid)
            if not handle.alive():
                return
            time.sleep(0.02)
        raise DevClusterError(f"{name} (pid {handle.pid}) did not stop")

    def start_component(self, name: str, timeout: float = 120.0, extra_args: tuple[str, ...] = ()) -> None:
        """(Re)start one stopped component of a running cluster and wait until it is healthy.

        `extra_args` are appended to its usual flags (a repeated flag's last value wins), e.g. fault
        tests restart the controller manager with a short node-monitor grace period.
        """
        cfg = self._require_config()
        if self._handle(name) is not None:
            return
        self._spawn(cfg, name, [*self._command(cfg, name), *extra_args])
        self._wait_ready(cfg, name, time.monotonic() + timeout)

    def restart_component(self, name: str, timeout: float = 120.0, extra_args: tuple[str, ...] = ()) -> None:
        """Kill one component and start it again, with `extra_args` if given."""
        self.stop_component(name)
        self.start_component(name, timeout, extra_args)

    def start_agent(self, timeout: float = 120.0) -> None:
        self.start_component("agent", timeout)

    def pod_dir(self, namespace: str, name: str, uid: str) -> Path:
        return self.layout.pod_dir(namespace, name, uid)

    def pod_log(self, namespace: str, name: str, uid: str, container: str) -> Path:
        """stdout+stderr of a container: `<home>/agent/pods/<namespace>_<name>_<uid>/<container>.log`."""
        return self.layout.pod_log(namespace, name, uid, container)

    # ------------------------------------------------------------------ steps

    def _preflight(self) -> list[preflight.Problem]:
        real = self.node_kind == "real"
        return [
            *preflight.check_binaries(self.bin_dir, real_node=real),
            *preflight.check_host_tools(),
            *(preflight.check_real_node_host() if real else []),
            *preflight.check_ports(self.pinned_ports),
        ]

    def _new_config(self) -> ClusterConfig:
        names = ("etcd_client", "etcd_peer", "apiserver", "controller_manager", "scheduler", "agent", "prometheus",
                 "registry", "jobset_webhook", "jobset_health")
        pinned = {key.replace("-", "_"): port for key, port in self.pinned_ports.items()}
        unknown = set(pinned) - set(names)
        if unknown:
            raise DevClusterError(f"unknown port names {sorted(unknown)}; known: {', '.join(names)}")
        free = iter(preflight.free_ports(len(names), exclude=set(pinned.values())))
        ports = Ports(**{name: pinned.get(name) or next(free) for name in names})
        return ClusterConfig(
            cluster_id=secrets.token_hex(6),
            home=self.layout.home,
            bin_dir=self.bin_dir,
            python=self.python,
            ports=ports,
            node_name=self.node_name,
            gpus=self.gpus,
            agent_args=self.agent_args,
            owner=self._owner(),
            pod_network=preflight.free_pod_network(),
            node_kind=self.node_kind,
            node_network_index=preflight.free_node_network_index() if self.node_kind == "real" else 0,
        )

    def _owner(self) -> str:
        if self.owner_pid is None:
            return ""
        handle = procs.ProcessHandle.of(self.owner_pid)
        if handle is None:
            raise DevClusterError(f"owner process {self.owner_pid} does not exist")
        return f"{handle.pid}:{handle.start_time}"

    def _start(self, cfg: ClusterConfig, deadline: float) -> None:
        lay = cfg.layout
        started = time.monotonic()
        for directory in (lay.home, lay.run_dir, lay.logs_dir, lay.pki_dir, lay.prometheus_targets_dir, lay.pods_dir,
                          lay.jobset_dir):
            directory.mkdir(parents=True, exist_ok=True)
        # First, so a crash from here on leaves a cluster `down`/`up` can recognise and clean.
        procs.write_atomic(lay.cluster_file, cfg.to_json())
        self._write_credentials(cfg)
        procs.write_atomic(lay.registry_config, registry_config(default_storage(), cfg.ports.registry))
        procs.write_atomic(
            lay.prometheus_config,
            yaml.safe_dump(
                build_prometheus_config(kubeconfig=lay.kubeconfig, targets_dir=lay.prometheus_targets_dir),
                sort_keys=False,
            ),
        )

        procs.write_atomic(
            lay.jobset_dir / "config.yaml",
            yaml.safe_dump(jobset.build_config(webhook_port=cfg.ports.jobset_webhook,
                                               health_port=cfg.ports.jobset_health, cert_dir=lay.jobset_dir / "certs")),
        )

        real = RealNode(cfg, self._log) if cfg.node_kind == "real" else None
        for group in _start_groups(cfg):
            if real is not None and group[0] == REAL_NODE_COMPONENTS[0]:
                real.prepare()
            if "jobset-controller" in group:
                jobset.install(self._api(), bin_dir=cfg.bin_dir, webhook_port=cfg.ports.jobset_webhook,
                               ca_pem=(lay.pki_dir / "ca.crt").read_bytes(), deadline=deadline)
            for name in group:
                self._spawn(cfg, name, self._command(cfg, name))
            for name in group:
                self._wait_ready(cfg, name, deadline)
                if real is not None and name in REAL_NODE_COMPONENTS:
                    real.after_ready(name, self._holder_pid())
        # Pods in `default` need its ServiceAccount (admission rejects them until it exists).
        api = self._api()
        if real is not None:
            real.install_addons(api, deadline)
        self._wait(
            "kube-controller-manager",
            deadline,
            lambda: _exists(api, "/api/v1/namespaces/default/serviceaccounts/default"),
        )
        self._log(f"dev cluster up in {time.monotonic() - started:.1f}s ({lay.home})")

    def _write_credentials(self, cfg: ClusterConfig) -> None:
        lay = cfg.layout
        node = NodeIdentity(cfg.node_name, cfg.node_network.node_ip) if cfg.node_kind == "real" else None
        pki = build_cluster_pki(service_cluster_ip=components.SERVICE_CLUSTER_IP, node=node)
        pki.write(lay.pki_dir)
        for path, pair, user in (
            (lay.kubeconfig, pki.admin, "kubetune-admin"),
            (lay.component_kubeconfig("kube-controller-manager"), pki.controller_manager, "kube-controller-manager"),
            (lay.component_kubeconfig("kube-scheduler"), pki.scheduler, "kube-scheduler"),
            (lay.component_kubeconfig("jobset-controller"), pki.jobset_controller, "jobset-controller"),
        ):
            kubeconfig = components.build_kubeconfig(
                server=cfg.apiserver_url,
                ca_pem=pki.ca.cert_pem,
                cert_pem=pair.cert_pem,
                key_pem=pair.key_pem,
                user=user,
            )
            procs.write_atomic(path, yaml.safe_dump(kubeconfig, sort_keys=False))
            path.chmod(0o600)
        # controller-runtime's webhook server reads tls.crt and tls.key from its certDir.
        certs = lay.jobset_dir / "certs"
        certs.mkdir(parents=True, exist_ok=True)
        procs.write_atomic(certs / "tls.crt", pki.jobset_webhook.cert_pem.decode())
        procs.write_atomic(certs / "tls.key", pki.jobset_webhook.key_pem.decode())
        (certs / "tls.key").chmod(0o600)

    def _command(self, cfg: ClusterConfig, name: str) -> list[str]:
        if name in REAL_NODE_COMPONENTS:
            return RealNode(cfg, self._log).command(name, self._holder_pid())
        return COMMANDS[name](cfg)

    def _holder_pid(self) -> int | None:
        """The process keeping the real node's mount namespace (node-namespace), if it runs."""
        handle = self._handle(REAL_NODE_COMPONENTS[0])
        return handle.pid if handle else None

    def _spawn(self, cfg: ClusterConfig, name: str, argv: list[str]) -> None:
        env = dict(os.environ)
        env[MARKER_ENV] = cfg.cluster_id
        env.pop("KUBECONFIG", None)  # components get explicit kubeconfigs; never the user's
        if name in REAL_NODE_COMPONENTS:
            env.update(RealNode(cfg, self._log).env())
        handle = procs.spawn(argv, log_file=cfg.layout.log_file(name), env=env, cwd=cfg.layout.home)
        handle.write(cfg.layout.pid_file(name))

    def _wait(self, name: str, deadline: float, ready: Callable[[], bool]) -> None:
        while True:
            if self._handle(name) is None:
                raise DevClusterError(self._explain_exit(name))
            try:
                if ready():
                    return
            except Exception:  # not ready yet: connection refused, TLS not up, ...
                pass
            if time.monotonic() > deadline:
                raise DevClusterError(
                    f"{name} did not become ready in time; see {self.layout.log_file(name)}\n{self._log_tail(name)}"
                )
            time.sleep(0.2)

    def _wait_ready(self, cfg: ClusterConfig, name: str, deadline: float) -> None:
        self._wait(name, deadline, lambda: self._ready(cfg, name))

    def _ready(self, cfg: ClusterConfig, name: str) -> bool:
        if name == "etcd":
            return _http_ok(f"{cfg.etcd_url}/health")
        if name == "kube-apiserver":
            return self._apiserver_ready(cfg)
        if name in ("kube-controller-manager", "kube-scheduler"):
            port = cfg.ports.controller_manager if name == "kube-controller-manager" else cfg.ports.scheduler
            insecure = ssl.create_default_context()
            insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE  # self-signed serving certs
            return _http_ok(f"https://127.0.0.1:{port}/healthz", insecure)
        if name == "prometheus":
            return _http_ok(f"{cfg.prometheus_url}/-/ready")
        if name == "registry":
            return registry_ready(cfg.registry_address)
        if name == "jobset-controller":  # ready once its webhook server serves
            return _http_ok(f"http://127.0.0.1:{cfg.ports.jobset_health}/readyz")
        if name in REAL_NODE_COMPONENTS and name != "kubelet":
            return RealNode(cfg, self._log).ready(name, self._api(), self._holder_pid())
        node = self._api().get(f"/api/v1/nodes/{cfg.node_name}")
        conditions = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
        # The node-lifecycle controller lifts the not-ready taint shortly after Ready=True.
        tainted = any(t.get("key") == "node.kubernetes.io/not-ready" for t in node["spec"].get("taints") or [])
        return conditions.get("Ready") == "True" and not tainted

    def _explain_exit(self, name: str) -> str:
        tail = self._log_tail(name)
        hints = [hint for needle, hint in LOG_HINTS if needle in tail.lower()]
        text = f"{name} exited during startup; last lines of {self.layout.log_file(name)}:\n{tail}"
        return text + ("\nhint: " + "; ".join(hints) if hints else "")

    def _log_tail(self, name: str, lines: int = 15) -> str:
        try:
            content = self.layout.log_file(name).read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join("    " + line for line in content[-lines:])

    def _apiserver_ready(self, cfg: ClusterConfig) -> bool:
        context = ssl.create_default_context(cafile=str(cfg.layout.pki_dir / "ca.crt"))
        context.load_cert_chain(str(cfg.layout.pki_dir / "admin.crt"), str(cfg.layout.pki_dir / "admin.key"))
        try:
            return _http_ok(f"{cfg.apiserver_url}/readyz", context)
        except (OSError, ssl.SSLError):
            return False

    def _api(self) -> KubeApi:
        if self._api_client is None:
            self._api_client = KubeApi.from_kubeconfig(
                self.layout.kubeconfig, temp_dir=self.layout.run_dir / "credentials", timeout=10.0
            )
        return self._api_client

    def _require_config(self) -> ClusterConfig:
        cfg = self.config
        if cfg is None:
            raise DevClusterError(f"no dev cluster in {self.layout.home}; run `kubetune dev up`")
        return cfg

    def _handle(self, name: str) -> procs.ProcessHandle | None:
        handle = procs.ProcessHandle.read(self.layout.pid_file(name))
        if handle is None:
            return None
        procs.reap(handle.pid)  # our own child that died is a zombie until reaped
        return handle if handle.alive() else None

    # ------------------------------------------------------------------ teardown

    def _stop_processes(self, cfg: ClusterConfig | None) -> None:
        names = cfg.components if cfg else COMPONENTS
        if cfg is not None and cfg.node_kind == "real":
            # Node first (its processes, containers, namespaces), then the control plane it talks to.
            for name in reversed(REAL_NODE_COMPONENTS[1:]):
                self._stop_component_process(name)
            RealNode(cfg, self._log).teardown(self._stop_component_process)
        for name in reversed(names):
            self._stop_component_process(name)
        # Pods the agent started run in their own process groups and outlive it, as with a kubelet.
        # All get SIGTERM at once, then a short shared grace period, then SIGKILL.
        pods = [
            handle
            for rec in load_records(self.layout.pods_dir)
            for container in rec.containers
            if (handle := container.handle) is not None and handle.alive()
        ]
        for handle in pods:
            procs.signal_group(handle, signal.SIGTERM)
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and any(h.alive() for h in pods):
            time.sleep(0.05)
        for handle in pods:
            procs.stop(handle, grace=0.0)
        if cfg is not None:
            procs.sweep(MARKER_ENV, cfg.cluster_id)

    def _stop_component_process(self, name: str) -> None:
        handle = procs.ProcessHandle.read(self.layout.pid_file(name))
        if handle is not None:
            procs.stop(handle, grace=10.0)
        self.layout.pid_file(name).unlink(missing_ok=True)

    def _looks_like_cluster_home(self) -> bool:
        return any((self.layout.home / entry).exists() for entry in CLUSTER_HOME_ENTRIES)

    def _teardown(self) -> None:
        self._api_client = None
        cfg = self.config
        self._stop_processes(cfg)
        if not self.layout.home.exists():
            return
        if not any(self.layout.home.iterdir()):
            self.layout.home.rmdir()
            return
        if not self._looks_like_cluster_home():
            # Never rm -rf a directory we did not create (e.g. `--home ~` by mistake).
            raise DevClusterError(f"{self.layout.home} does not look like a dev cluster home; not deleting it")
        if self.layout.home.exists():
            shutil.rmtree(self.layout.home, ignore_errors=True)
        if self.layout.home.exists():  # e.g. a file busy in a stale mount: one retry, then report
            time.sleep(0.5)
            shutil.rmtree(self.layout.home)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.layout.lock_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.layout.lock_file, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _start_groups(cfg: ClusterConfig) -> list[tuple[str, ...]]:
    """Components started together (then waited on together), group by group."""
    control_plane = [("registry", "etcd"), ("kube-apiserver",),
                     ("kube-controller-manager", "kube-scheduler", "jobset-controller")]
    if cfg.node_kind == "real":
        node = [(name,) for name in REAL_NODE_COMPONENTS[:-2]] + [REAL_NODE_COMPONENTS[-2:], ("prometheus",)]
        return [*control_plane, *node]
    return [*control_plane, ("agent", "prometheus")]


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as resp:
            return 200 <= int(resp.status) < 300
    except urllib.error.HTTPError:
        return False


def _exists(api: KubeApi, path: str) -> bool:
    try:
        api.get(path)
    except NotFound:
        return False
    return True
