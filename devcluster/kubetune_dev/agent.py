"""The dev cluster's node agent: a small kubelet that runs pods as host processes.

    python -m kubetune_dev.agent --kubeconfig K --node-name N --gpus 4 --state-dir D

It registers Node N (with `nvidia.com/gpu` capacity), renews its Lease, watches the pods bound to
N and runs every container of each as a local process (images are ignored): own process group,
own loopback pod IP, GPU indices from an allocator, termination-message file via a private mount
namespace. It reports status by PATCHing pods/status, and survives its own restart by persisting
what it started (see agentstate.py). Behaviour and limits: README.md next to this file.

Concurrency: one watch thread, one heartbeat thread, one waiter thread per process and an
optional log server feed a single worker thread through a queue; only the worker changes state.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import ipaddress
import json
import logging
import os
import platform
import queue
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubetune.k8s.sync import JSON, AlreadyExists, ApiError, Conflict, Gone, KubeApi, NotFound
from kubetune_dev import podspec, runtime
from kubetune_dev.agentstate import (
    RUNTIME,
    START_ERROR_EXIT_CODE,
    UNKNOWN_EXIT_CODE,
    ContainerRecord,
    PodRecord,
    build_status_patch,
    load_records,
    rfc3339,
    save_record,
)
from kubetune_dev.allocators import POD_NETWORK, AllocationError, GpuAllocator, IpAllocator
from kubetune_dev.layout import MARKER_ENV
from kubetune_dev.procs import ProcessHandle, signal_group, watch_owner

log = logging.getLogger("kubetune_dev.agent")

HOST_IP = "127.0.0.1"
AGENT_VERSION = "v1.34.4-kubetune-dev"
LEASE_NAMESPACE = "kube-node-lease"
TICK_SECONDS = 1.0
CONFIG_RETRY_SECONDS = 2.0
BACKOFF_BASE_SECONDS = 10.0  # the kubelet's crash-loop back-off: 10s doubling up to 5 min
BACKOFF_MAX_SECONDS = 300.0
DEFAULT_GRACE_SECONDS = 30
POLL_SECONDS = 0.5
# Fast mode for control-plane benchmarks: a pod with this annotation runs no process; each container
# ends at once with the annotation's exit code and, as termination message, its env var below.
SIMULATE_ANNOTATION = "dev.kubetune.io/simulate-exit-code"
SIMULATED_MESSAGE_ENV = "KUBETUNE_DEV_TERMINATION_MESSAGE"


@dataclass(frozen=True)
class AgentOptions:
    kubeconfig: Path
    node_name: str
    gpus: int
    state_dir: Path
    pods_dir: Path
    cpu: str = "32"
    memory: str = "64Gi"
    max_pods: int = 110
    python_bin_dir: Path = Path(sys.executable).parent
    listen_port: int = 0
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    client_ca_file: Path | None = None
    owner: str = ""  # "pid:starttime": when that process is gone, tear the whole cluster down
    cluster_home: Path | None = None
    lease_duration_seconds: int = 40
    renew_interval_seconds: float = 10.0
    node_status_interval_seconds: float = 60.0
    pod_network: str = str(POD_NETWORK)


def micro_time(epoch: float | None = None) -> str:
    moment = time.time() if epoch is None else epoch
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment)) + f".{int(moment % 1 * 1e6):06d}Z"


def pod_path(namespace: str, name: str, sub: str = "") -> str:
    return f"/api/v1/namespaces/{namespace}/pods/{name}{sub}"


class Agent:
    def __init__(self, opts: AgentOptions, api: KubeApi) -> None:
        self.opts = opts
        self.api = api
        self.events: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self.records: dict[str, PodRecord] = {}
        self.pods: dict[str, JSON] = {}
        self.ips = IpAllocator(ipaddress.IPv4Network(opts.pod_network))
        self.gpus = GpuAllocator(opts.gpus)
        self.children: dict[tuple[str, str], subprocess.Popen[bytes]] = {}
        self.last_patch: dict[str, str] = {}
        self.stop = threading.Event()
        self.synced = False  # True once a full list has been seen since start
        self.lock = threading.Lock()  # guards records for the log server's reads
        self.api_port = urllib.parse.urlparse(api.server).port or 443
        self.use_namespaces = runtime.can_unshare()
        self.node_uid = ""
        self.started = rfc3339()
        if not self.use_namespaces:
            log.warning(
                "cannot create mount namespaces (not root?): termination-message files and volumes are not mounted"
            )

    # ------------------------------------------------------------------ lifecycle

    def run(self) -> None:
        self.opts.pods_dir.mkdir(parents=True, exist_ok=True)
        self.restore()
        self.register_node()
        threads = [
            threading.Thread(target=self.watch_pods, name="watch", daemon=True),
            threading.Thread(target=self.heartbeat, name="heartbeat", daemon=True),
        ]
        if self.opts.listen_port and self.opts.tls_cert_file and self.opts.tls_key_file:
            threads.append(threading.Thread(target=self.serve_logs, name="logs", daemon=True))
        if self.opts.owner and self.opts.cluster_home:
            threads.append(threading.Thread(target=self.watch_owner, name="owner", daemon=True))
        for thread in threads:
            thread.start()
        log.info(
            "agent for node %s ready (%d GPUs, mount namespaces: %s)",
            self.opts.node_name,
            self.opts.gpus,
            self.use_namespaces,
        )
        next_tick = 0.0
        while not self.stop.is_set():
            try:
                event = self.events.get(timeout=TICK_SECONDS)
            except queue.Empty:
                event = None
            try:
                if event is not None:
                    self.handle(event)
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + TICK_SECONDS
                    self.tick()
            except Exception:  # never let one bad pod take the node down
                log.exception("error while handling %s", event[0] if event else "tick")
        log.info("agent stopping; pods keep running and are re-adopted on the next start")

    def restore(self) -> None:
        """Re-adopt what a previous agent started; settle what ended while nobody watched."""
        for rec in load_records(self.opts.pods_dir):
            self.records[rec.uid] = rec
            if rec.terminal:
                continue
            if rec.ip and rec.ip != HOST_IP:
                self.ips.reserve(rec.uid, rec.ip)
            for c in rec.containers:
                self.gpus.reserve(rec.uid, c.gpus)
                if c.state == "running":
                    handle = c.handle
                    if handle is not None and handle.alive():
                        log.info("re-adopting %s/%s (pid %d)", rec.key, c.name, handle.pid)
                        self.watch_adopted(rec, c, handle)
                    else:
                        code = runtime.read_exit_code(self.exit_file(rec, c.name))
                        self.events.put(("exited", rec.uid, c.name, c.pid, code))
                elif c.wait_reason == "Launching":
                    # Crashed between recording the launch and recording the pid. The wrapper's
                    # command line names its exit file, which identifies it; never start it again.
                    exit_file = self.exit_file(rec, c.name)
                    pid = runtime.find_wrapper(exit_file)
                    handle = ProcessHandle.of(pid) if pid else None
                    c.state = "running"
                    if handle is not None:
                        c.set_running(handle, f"{RUNTIME}://{rec.uid}/{c.name}/{c.restart_count}")
                        self.watch_adopted(rec, c, handle)
                    else:
                        self.events.put(("exited", rec.uid, c.name, c.pid, runtime.read_exit_code(exit_file)))

    def watch_owner(self) -> None:
        """A test session started this cluster; when it dies without `down`, do the `down` for it."""
        if self.opts.cluster_home is not None:
            watch_owner(self.opts.owner, self.opts.cluster_home, self.stop)

    # ------------------------------------------------------------------ node, lease

    def node_status(self) -> JSON:
        resources = {
            "cpu": self.opts.cpu,
            "memory": self.opts.memory,
            "pods": str(self.opts.max_pods),
            "ephemeral-storage": "100Gi",
            podspec.GPU_RESOURCE: str(self.opts.gpus),
        }
        now = rfc3339()

        def condition(kind: str, status: str, reason: str, message: str) -> JSON:
            return {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": now,
                "lastTransitionTime": self.started,
            }

        return {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                condition("Ready", "True", "KubeletReady", "kubetune dev agent is posting ready status"),
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "not checked by the dev agent"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "not checked by the dev agent"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "not checked by the dev agent"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": HOST_IP},
                {"type": "Hostname", "address": self.opts.node_name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.opts.listen_port}},
            "nodeInfo": {
                "machineID": _read("/etc/machine-id"),
                "systemUUID": _read("/etc/machine-id"),
                "bootID": _read("/proc/sys/kernel/random/boot_id"),
                "kernelVersion": platform.release(),
                "osImage": _os_image(),
                "containerRuntimeVersion": f"{RUNTIME}://0.1.0",
                "kubeletVersion": AGENT_VERSION,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine()),
            },
        }

    def register_node(self) -> None:
        name = self.opts.node_name
        labels = {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": str(self.node_status()["nodeInfo"]["architecture"]),
            "kubetune.io/dev-node": "true",
            "nvidia.com/gpu.present": "true" if self.opts.gpus else "false",
        }
        body: JSON = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": labels},
            "spec": {},
            "status": self.node_status(),
        }
        for delay in _backoff():
            if self.stop.is_set():
                return
            try:
                try:
                    node = self.api.create("/api/v1/nodes", body)
                except (AlreadyExists, Conflict):
                    node = self.api.patch(f"/api/v1/nodes/{name}", {"metadata": {"labels": labels}})
                self.node_uid = str(node["metadata"]["uid"])
                self.post_node_status()
                self.renew_lease()
                return
            except ApiError as exc:
                log.warning("registering node %s failed (%s); retrying in %.0fs", name, exc, delay)
                self.stop.wait(delay)

    def post_node_status(self) -> None:
        self.api.patch(f"/api/v1/nodes/{self.opts.node_name}/status", {"status": self.node_status()})

    def renew_lease(self) -> None:
        name = self.opts.node_name
        path = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/{name}"
        spec = {
            "holderIdentity": name,
            "leaseDurationSeconds": self.opts.lease_duration_seconds,
            "renewTime": micro_time(),
        }
        try:
            self.api.patch(path, {"spec": spec}, patch_type="merge")
        except NotFound:
            owner = [{"apiVersion": "v1", "kind": "Node", "name": name, "uid": self.node_uid}] if self.node_uid else []
            self.api.create(
                f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases",
                {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": name, "namespace": LEASE_NAMESPACE, "ownerReferences": owner},
                    "spec": spec,
                },
            )

    def heartbeat(self) -> None:
        """Lease every ~10 s; node status every minute, or at once when it is not Ready (or gone)."""
        last_status = time.monotonic()
        while not self.stop.wait(self.opts.renew_interval_seconds):
            try:
                self.renew_lease()
                node = self.api.get(f"/api/v1/nodes/{self.opts.node_name}")
                ready: JSON = next(
                    (c for c in node.get("status", {}).get("conditions", []) if c.get("type") == "Ready"), {}
                )
                if (
                    ready.get("status") != "True"
                    or time.monotonic() - last_status > self.opts.node_status_interval_seconds
                ):
                    self.post_node_status()
                    last_status = time.monotonic()
            except NotFound:
                log.warning("node %s is gone; registering it again", self.opts.node_name)
                self.register_node()
            except ApiError as exc:
                log.warning("heartbeat failed: %s", exc)
            except Exception:
                log.exception("heartbeat failed")

    # ------------------------------------------------------------------ pod watch

    def watch_pods(self) -> None:
        """List then watch pods bound to this node; relist on 410 Gone or any failure."""
        selector = f"spec.nodeName={self.opts.node_name}"
        delays = _backoff()
        while not self.stop.is_set():
            try:
                listing = self.api.get("/api/v1/pods", fieldSelector=selector)
                self.events.put(("relist", listing.get("items", [])))
                version = str(listing["metadata"]["resourceVersion"])
                delays = _backoff()
                while not self.stop.is_set():
                    for event in self.api.watch("/api/v1/pods", fieldSelector=selector, resourceVersion=version):
                        obj = event.get("object") or {}
                        version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                        if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                            self.events.put(("pod", event["type"], obj))
            except Gone:
                log.info("watch expired (410); relisting")
                continue
            except ApiError as exc:
                delay = next(delays)
                log.warning("pod watch failed (%s); relisting in %.0fs", exc, delay)
                self.stop.wait(delay)
            except Exception:
                delay = next(delays)
                log.exception("pod watch failed; relisting in %.0fs", delay)
                self.stop.wait(delay)

    def handle(self, event: tuple[Any, ...]) -> None:
        kind = event[0]
        if kind == "relist":
            listed = {p["metadata"]["uid"]: p for p in event[1]}
            self.pods = listed
            self.synced = True
            for uid in sorted(set(listed) | set(self.records)):
                self.sync(uid)
        elif kind == "pod":
            _, change, pod = event
            uid = pod["metadata"]["uid"]
            if change == "DELETED":
                self.pods.pop(uid, None)
            else:
                self.pods[uid] = pod
            self.sync(uid)
        elif kind == "exited":
            _, uid, name, pid, code = event
            self.on_exit(uid, name, pid, code)

    # ------------------------------------------------------------------ reconcile one pod

    def sync(self, uid: str) -> None:
        pod = self.pods.get(uid)
        rec = self.records.get(uid)
        if pod is None:
            if rec is not None and self.synced:
                self.forget(rec)
            return
        meta, status = pod["metadata"], pod.get("status") or {}
        deleting = meta.get("deletionTimestamp") is not None
        if rec is None:
            if status.get("phase") in ("Succeeded", "Failed"):
                if deleting:
                    self.delete_pod(meta["namespace"], meta["name"], uid)
                return
            if deleting:  # deleted before it ever started here
                self.delete_pod(meta["namespace"], meta["name"], uid)
                return
            if status.get("startTime"):
                # We reported it started, but have no record: the state dir was lost. Never rerun.
                self.admit_lost(pod)
                return
            self.admit(pod)
            return
        if rec.terminal:
            self.report(rec)
            if deleting and rec.reported and not rec.deleted:
                rec.deleted = self.delete_pod(rec.namespace, rec.name, uid)
                self.save(rec)
            return
        if deleting:
            grace = meta.get("deletionGracePeriodSeconds")
            self.terminate(rec, DEFAULT_GRACE_SECONDS if grace is None else int(grace))
        self.report(rec)

    def admit(self, pod: JSON) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        rec = PodRecord(
            uid=meta["uid"],
            namespace=meta["namespace"],
            name=meta["name"],
            restart_policy=spec.get("restartPolicy", "Always"),
            containers=[ContainerRecord(name=c["name"], image=c.get("image", "")) for c in spec["containers"]],
        )
        rec.start_epoch = time.time()
        rec.start_time = rfc3339(rec.start_epoch)
        if spec.get("activeDeadlineSeconds") is not None:
            rec.active_deadline = rec.start_epoch + int(spec["activeDeadlineSeconds"])
        self.pod_dir(rec).mkdir(parents=True, exist_ok=True)
        with self.lock:
            self.records[rec.uid] = rec
        try:
            # hostNetwork pods share the node's address, as on a real node.
            rec.ip = HOST_IP if spec.get("hostNetwork") else self.ips.allocate(rec.uid)
            for c, c_spec in zip(rec.containers, spec["containers"], strict=True):
                c.gpus = self.gpus.allocate(rec.uid, podspec.gpu_count(c_spec))
        except AllocationError as exc:
            self.fail_pod(rec, "UnexpectedAdmissionError", str(exc))
            return
        if spec.get("initContainers"):
            self.fail_pod(rec, "UnsupportedByDevAgent", "init containers are not supported by the kubetune dev agent")
            return
        self.save(rec)
        for c in rec.containers:
            self.start_container(rec, c, pod)
        self.update_phase(rec)

    def admit_lost(self, pod: JSON) -> None:
        meta = pod["metadata"]
        rec = PodRecord(uid=meta["uid"], namespace=meta["namespace"], name=meta["name"])
        rec.start_time = (pod.get("status") or {}).get("startTime")
        rec.containers = [ContainerRecord(name=c["name"], image=c.get("image", "")) for c in pod["spec"]["containers"]]
        for c in rec.containers:
            c.set_terminated(UNKNOWN_EXIT_CODE, "ContainerStatusUnknown", "the node agent lost track of this container")
        self.pod_dir(rec).mkdir(parents=True, exist_ok=True)
        with self.lock:
            self.records[rec.uid] = rec
        self.update_phase(rec)

    def fail_pod(self, rec: PodRecord, reason: str, message: str) -> None:
        log.warning("pod %s failed: %s: %s", rec.key, reason, message)
        rec.reason, rec.message = reason, message
        for c in rec.containers:
            if c.state != "terminated":
                c.set_terminated(START_ERROR_EXIT_CODE, "StartError", message)
        rec.phase = "Failed"
        self.finish(rec)

    # ------------------------------------------------------------------ containers

    def start_container(self, rec: PodRecord, c: ContainerRecord, pod: JSON) -> None:
        spec = next(s for s in pod["spec"]["containers"] if s["name"] == c.name)
        pod_dir = self.pod_dir(rec)
        try:
            mounts = self.prepare_mounts(rec, pod, spec)
            env = podspec.build_env(
                pod,
                spec,
                base_env=self.base_env(rec),
                pod_ip=rec.ip or "",
                host_ip=HOST_IP,
                lookup=self.lookup,
                device_env=podspec.gpu_env(c.gpus),
            )
            argv = podspec.build_argv(spec, env)
            simulated = (pod["metadata"].get("annotations") or {}).get(SIMULATE_ANNOTATION)
            if simulated is not None:
                c.set_terminated(int(simulated), "Completed" if int(simulated) == 0 else "Error",
                                 env.get(SIMULATED_MESSAGE_ENV, ""))
                self.save(rec)
                return
        except podspec.ContainerConfigError as exc:
            c.state, c.wait_reason, c.wait_message = "waiting", "CreateContainerConfigError", str(exc)
            c.next_start = time.time() + CONFIG_RETRY_SECONDS
            self.save(rec)
            return
        except (podspec.UnsupportedSpecError, ApiError, OSError, ValueError) as exc:
            c.set_terminated(START_ERROR_EXIT_CODE, "StartError", str(exc))
            return
        cwd = spec.get("workingDir") or str(pod_dir)
        if not os.path.isdir(cwd):
            c.set_terminated(
                START_ERROR_EXIT_CODE,
                "StartError",
                f"workingDir {cwd!r} does not exist on the host (the dev agent runs containers as host processes)",
            )
            return
        executable = podspec.resolve_executable(argv[0], env.get("PATH", ""), cwd)
        if executable is None:
            where = "no such file or directory" if "/" in argv[0] else "executable file not found in $PATH"
            c.set_terminated(
                START_ERROR_EXIT_CODE,
                "StartError",
                f'failed to create containerd task: exec: "{argv[0]}": {where}',
            )
            return
        argv[0] = executable
        termination_file = pod_dir / f"{c.name}.termination-log"
        termination_file.write_bytes(b"")
        termination_file.chmod(0o666)
        mounts.append(runtime.Mount(str(termination_file), podspec.termination_message_path(spec)))
        c.state, c.wait_reason = "waiting", "Launching"
        self.save(rec)  # before the process exists: a crash from here on never leads to a second start
        try:
            proc = runtime.launch(
                argv,
                env=env,
                cwd=Path(cwd),
                log_path=self.log_path(rec, c.name),
                exit_file=self.exit_file(rec, c.name),
                error_file=pod_dir / f"{c.name}.start-error",
                mounts=mounts,
                use_namespace=self.use_namespaces,
            )
        except OSError as exc:
            c.set_terminated(START_ERROR_EXIT_CODE, "StartError", f"failed to start: {exc}")
            self.save(rec)
            return
        handle = ProcessHandle.of(proc.pid) or ProcessHandle(proc.pid, -1, "")
        c.set_running(handle, f"{RUNTIME}://{rec.uid}/{c.name}/{c.restart_count}")
        self.save(rec)
        self.children[(rec.uid, c.name)] = proc
        threading.Thread(
            target=self.wait_child, args=(rec.uid, c.name, proc), name=f"wait-{rec.name}", daemon=True
        ).start()
        log.info("started %s/%s pid %d ip %s gpus %s", rec.key, c.name, proc.pid, rec.ip, c.gpus)

    def wait_child(self, uid: str, name: str, proc: subprocess.Popen[bytes]) -> None:
        code = proc.wait()
        self.events.put(("exited", uid, name, proc.pid, 128 - code if code < 0 else code))

    def watch_adopted(self, rec: PodRecord, c: ContainerRecord, handle: ProcessHandle) -> None:
        exit_file = self.exit_file(rec, c.name)

        def poll() -> None:
            while handle.alive():
                time.sleep(POLL_SECONDS)
            self.events.put(("exited", rec.uid, c.name, handle.pid, runtime.read_exit_code(exit_file)))

        threading.Thread(target=poll, name=f"adopted-{rec.name}", daemon=True).start()

    def on_exit(self, uid: str, name: str, pid: int | None, code: int | None) -> None:
        rec = self.records.get(uid)
        c = rec.container(name) if rec else None
        if rec is None or c is None or c.state != "running" or c.pid != pid:
            return
        self.children.pop((uid, name), None)
        pod_dir = self.pod_dir(rec)
        error_file = pod_dir / f"{name}.start-error"
        if code is None:
            c.set_terminated(
                UNKNOWN_EXIT_CODE,
                "ContainerStatusUnknown",
                "the process ended while the node agent was not running and left no exit code",
            )
        elif code == START_ERROR_EXIT_CODE and error_file.exists():
            c.set_terminated(code, "StartError", error_file.read_text(errors="replace").strip())
        else:
            spec = self.container_spec(uid, name)
            message = podspec.termination_message(
                file_content=runtime.tail(pod_dir / f"{name}.termination-log", podspec.MAX_TERMINATION_MESSAGE_BYTES),
                log_tail=runtime.tail(self.log_path(rec, name), 64 * 1024),
                policy=str((spec or {}).get("terminationMessagePolicy") or "File"),
                exit_code=code,
            )
            c.set_terminated(code, "Completed" if code == 0 else "Error", message)
        log.info("%s/%s exited with %s", rec.key, name, c.exit_code)
        if code is not None and rec.wants_restart(code):
            c.last_terminated = c.terminated_state()
            delay = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** min(c.restart_count, 10))
            c.state, c.wait_reason = "waiting", "CrashLoopBackOff"
            c.wait_message = f"back-off {delay:.0f}s restarting failed container={name} pod={rec.name}"
            c.next_start = time.time() + delay
        self.update_phase(rec)

    def container_spec(self, uid: str, name: str) -> JSON | None:
        pod = self.pods.get(uid)
        containers = (pod or {}).get("spec", {}).get("containers", [])
        return next((s for s in containers if s.get("name") == name), None)

    # ------------------------------------------------------------------ termination

    def terminate(self, rec: PodRecord, grace: int, reason: str = "", message: str = "") -> None:
        """SIGTERM every container's process group now, SIGKILL once `grace` seconds have passed."""
        kill_at = time.time() + max(0, grace)
        if rec.terminating and rec.kill_at is not None and rec.kill_at <= kill_at:
            return
        first = not rec.terminating
        rec.terminating, rec.kill_at = True, kill_at
        if reason and not rec.terminate_reason:
            rec.terminate_reason, rec.reason, rec.message = reason, reason, message
        for c in rec.containers:
            c.next_start = None
            handle = c.handle
            if c.state == "running" and handle is not None and first:
                signal_group(handle, signal.SIGTERM if grace > 0 else signal.SIGKILL)
        log.info("terminating %s (grace %ds%s)", rec.key, grace, f", {reason}" if reason else "")
        self.update_phase(rec)

    def kill_now(self, rec: PodRecord) -> None:
        for c in rec.running():
            handle = c.handle
            if handle is not None:
                signal_group(handle, signal.SIGKILL)

    def update_phase(self, rec: PodRecord) -> None:
        was_terminal = rec.terminal
        rec.phase = rec.compute_phase()
        rec.reported = False
        if rec.terminal and not was_terminal:
            self.finish(rec)
        else:
            self.save(rec)
            self.report(rec)

    def finish(self, rec: PodRecord) -> None:
        """Terminal: give back IP and GPUs (the scheduler already counts them free) and report."""
        self.ips.release(rec.uid)
        self.gpus.release(rec.uid)
        rec.kill_at = None
        rec.reported = False
        self.save(rec)
        self.report(rec)
        pod = self.pods.get(rec.uid)
        if pod and pod["metadata"].get("deletionTimestamp") and rec.reported and not rec.deleted:
            rec.deleted = self.delete_pod(rec.namespace, rec.name, rec.uid)
            self.save(rec)

    def forget(self, rec: PodRecord) -> None:
        """The pod object is gone (force-deleted, or deleted after we finished): drop it, keep logs."""
        if rec.running():
            log.info("pod %s vanished from the API; killing its processes", rec.key)
            self.kill_now(rec)
        self.ips.release(rec.uid)
        self.gpus.release(rec.uid)
        with self.lock:
            self.records.pop(rec.uid, None)
        self.last_patch.pop(rec.uid, None)
        with contextlib.suppress(OSError):
            (self.pod_dir(rec) / "pod.json").unlink()

    def delete_pod(self, namespace: str, name: str, uid: str) -> bool:
        """DELETE with grace 0 and a UID precondition: a newer pod with the same name is untouched."""
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0, "preconditions": {"uid": uid}}
        try:
            self.api.delete(pod_path(namespace, name), body)
        except ApiError as exc:
            if exc.status not in (404, 409):
                log.warning("deleting %s/%s failed: %s", namespace, name, exc)
                return False
        return True

    # ------------------------------------------------------------------ periodic work

    def tick(self) -> None:
        now = time.time()
        for rec in list(self.records.values()):
            pod = self.pods.get(rec.uid)
            if rec.terminal:
                if not rec.reported:
                    self.report(rec)
                if pod and pod["metadata"].get("deletionTimestamp") and rec.reported and not rec.deleted:
                    rec.deleted = self.delete_pod(rec.namespace, rec.name, rec.uid)
                    self.save(rec)
                continue
            if rec.active_deadline is not None and now >= rec.active_deadline and not rec.terminating:
                grace = int((pod or {}).get("spec", {}).get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS))
                self.terminate(
                    rec, grace, "DeadlineExceeded", "Pod was active on the node longer than the specified deadline"
                )
            if rec.terminating and rec.kill_at is not None and now >= rec.kill_at:
                self.kill_now(rec)
                rec.kill_at = None
                self.save(rec)
            if pod is not None and not rec.terminating:
                for c in rec.containers:
                    if c.state == "waiting" and c.next_start is not None and now >= c.next_start:
                        if c.wait_reason == "CrashLoopBackOff":
                            c.restart_count += 1
                        self.start_container(rec, c, pod)
                        self.update_phase(rec)
            if not rec.reported:
                self.report(rec)

    def report(self, rec: PodRecord) -> None:
        if rec.reported:
            return
        rec.refresh_conditions()
        patch = build_status_patch(rec, host_ip=HOST_IP)
        # Identical patches (a config retry that failed the same way again) are not resent.
        fingerprint = json.dumps(patch, sort_keys=True)
        if self.last_patch.get(rec.uid) != fingerprint:
            try:
                self.api.patch(pod_path(rec.namespace, rec.name, "/status"), patch)
            except ApiError as exc:
                if exc.status in (0, 409, 429) or exc.status >= 500:
                    return  # transient: the next tick retries
                log.error("status of %s rejected: %s", rec.key, exc)
            self.last_patch[rec.uid] = fingerprint
        rec.reported = True
        self.save(rec)

    # ------------------------------------------------------------------ environment and volumes

    def base_env(self, rec: PodRecord) -> dict[str, str]:
        """What every container starts from: the project's interpreter first on PATH, service vars."""
        port = str(self.api_port)
        env = {
            "PATH": f"{self.opts.python_bin_dir}:{os.environ.get('PATH', '/usr/local/bin:/usr/bin:/bin')}",
            "HOME": os.environ.get("HOME", "/root"),
            "HOSTNAME": rec.name,
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "PYTHONUNBUFFERED": "1",
            "KUBERNETES_SERVICE_HOST": HOST_IP,
            "KUBERNETES_SERVICE_PORT": port,
            "KUBERNETES_SERVICE_PORT_HTTPS": port,
            "KUBERNETES_PORT": f"tcp://{HOST_IP}:{port}",
        }
        marker = os.environ.get(MARKER_ENV)
        if marker:
            env[MARKER_ENV] = marker  # lets `dev down` find pod processes that left their group
        return env

    def lookup(self, kind: str, namespace: str, name: str) -> Mapping[str, str] | None:
        resource = "configmaps" if kind == "ConfigMap" else "secrets"
        try:
            obj = self.api.get(f"/api/v1/namespaces/{namespace}/{resource}/{name}")
        except NotFound:
            return None
        except ApiError as exc:
            raise podspec.ContainerConfigError(f"reading {kind} {name}: {exc}") from exc
        if kind == "Secret":
            return podspec.secret_data(obj)
        return dict(obj.get("data") or {})

    def prepare_mounts(self, rec: PodRecord, pod: JSON, spec: JSON) -> list[runtime.Mount]:
        volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        mounts = []
        for vm in spec.get("volumeMounts") or []:
            volume = volumes.get(vm["name"])
            if volume is None:
                raise podspec.UnsupportedSpecError(f"volumeMount {vm['name']!r} has no volume")
            target = str(vm["mountPath"])
            if not podspec.mount_target_is_safe(target):
                raise podspec.UnsupportedSpecError(f"mountPath {target!r} is not allowed on the dev node")
            source = self.materialize_volume(rec, pod, volume)
            if vm.get("subPath"):
                source = source / str(vm["subPath"])
                if not source.exists():
                    source.mkdir(parents=True)
            mounts.append(runtime.Mount(str(source), target, bool(vm.get("readOnly"))))
        return mounts

    def materialize_volume(self, rec: PodRecord, pod: JSON, volume: JSON) -> Path:
        """A host directory holding the volume's content (a snapshot, refreshed at each start)."""
        name = str(volume["name"])
        if "hostPath" in volume:
            host = volume["hostPath"]
            path = Path(str(host["path"]))
            if not path.exists():
                if host.get("type") == "DirectoryOrCreate":
                    path.mkdir(parents=True)
                elif host.get("type") == "FileOrCreate":
                    path.touch()
                else:
                    raise podspec.ContainerConfigError(f"hostPath {path} does not exist")
            return path
        target = self.pod_dir(rec) / "volumes" / name
        target.mkdir(parents=True, exist_ok=True)
        if "emptyDir" in volume:
            return target
        files: dict[str, bytes] = {}
        mode = 0o644
        if "configMap" in volume or "secret" in volume:
            files, mode = self.object_files(
                rec, volume.get("configMap") or volume.get("secret") or {}, "secret" in volume
            )
        elif "downwardAPI" in volume:
            files = self.downward_files(pod, volume["downwardAPI"].get("items") or [], rec)
            mode = int(volume["downwardAPI"].get("defaultMode", 0o644))
        elif "projected" in volume:
            mode = int(volume["projected"].get("defaultMode", 0o644))
            for source in volume["projected"].get("sources") or []:
                if "serviceAccountToken" in source:
                    token = source["serviceAccountToken"]
                    files[token["path"]] = self.request_token(rec, pod, token).encode()
                elif "configMap" in source or "secret" in source:
                    files.update(
                        self.object_files(
                            rec, source.get("configMap") or source.get("secret") or {}, "secret" in source
                        )[0]
                    )
                elif "downwardAPI" in source:
                    files.update(self.downward_files(pod, source["downwardAPI"].get("items") or [], rec))
                elif "clusterTrustBundle" in source or "podCertificate" in source:
                    raise podspec.UnsupportedSpecError(
                        f"projected volume {name!r}: source {sorted(source)} unsupported"
                    )
        else:
            kinds = sorted(set(volume) - {"name"})
            raise podspec.UnsupportedSpecError(f"volume {name!r} of type {kinds} is not supported by the dev agent")
        for rel, data in files.items():
            path = target / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            path.chmod(mode)
        return target

    def object_files(self, rec: PodRecord, ref: JSON, secret: bool) -> tuple[dict[str, bytes], int]:
        name = ref.get("name") or ref.get("secretName") or ""
        data = self.lookup("Secret" if secret else "ConfigMap", rec.namespace, name)
        if data is None:
            if ref.get("optional"):
                return {}, 0o644
            raise podspec.ContainerConfigError(f'{"secret" if secret else "configmap"} "{name}" not found')
        items = ref.get("items")
        files = (
            {i["path"]: data[i["key"]].encode() for i in items if i["key"] in data}
            if items
            else {k: v.encode() for k, v in data.items()}
        )
        return files, int(ref.get("defaultMode", 0o644))

    def downward_files(self, pod: JSON, items: list[JSON], rec: PodRecord) -> dict[str, bytes]:
        files = {}
        for item in items:
            if "fieldRef" in item:
                value = podspec.field_ref_value(
                    pod, item["fieldRef"]["fieldPath"], pod_ip=rec.ip or "", host_ip=HOST_IP
                )
            else:
                ref = item.get("resourceFieldRef") or {}
                container = self.container_spec(rec.uid, ref.get("containerName", "")) or pod["spec"]["containers"][0]
                value = podspec.resource_field_value(pod, container, ref)
            files[item["path"]] = value.encode()
        return files

    def request_token(self, rec: PodRecord, pod: JSON, source: JSON) -> str:
        account = pod["spec"].get("serviceAccountName") or "default"
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [source["audience"]] if source.get("audience") else [],
                "expirationSeconds": int(source.get("expirationSeconds", 3607)),
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": rec.name, "uid": rec.uid},
            },
        }
        try:
            answer = self.api.create(f"/api/v1/namespaces/{rec.namespace}/serviceaccounts/{account}/token", body)
        except ApiError as exc:
            raise podspec.ContainerConfigError(f"service account token for {account}: {exc}") from exc
        return str(answer["status"]["token"])

    # ------------------------------------------------------------------ paths and persistence

    def pod_dir(self, rec: PodRecord) -> Path:
        return self.opts.pods_dir / f"{rec.namespace}_{rec.name}_{rec.uid}"

    def log_path(self, rec: PodRecord, container: str) -> Path:
        return self.pod_dir(rec) / f"{container}.log"

    def exit_file(self, rec: PodRecord, container: str) -> Path:
        return self.pod_dir(rec) / f"{container}.exit"

    def save(self, rec: PodRecord) -> None:
        if rec.uid in self.records:
            save_record(rec, self.pod_dir(rec))

    # ------------------------------------------------------------------ kubelet endpoint: logs

    def find_log(self, namespace: str, name: str, container: str) -> tuple[Path, Callable[[], bool]] | None:
        with self.lock:
            matches = [r for r in self.records.values() if r.namespace == namespace and r.name == name]
        if not matches:
            return None
        rec = max(matches, key=lambda r: r.start_epoch or 0)
        c = rec.container(container) or (rec.containers[0] if rec.containers else None)
        if c is None:
            return None
        return self.log_path(rec, c.name), lambda: c.state != "terminated" and not rec.terminal

    def serve_logs(self) -> None:
        agent = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                log.debug("logs: " + format, *args)

            def do_GET(self) -> None:  # noqa: N802 - stdlib naming
                url = urllib.parse.urlparse(self.path)
                query = urllib.parse.parse_qs(url.query)
                parts = url.path.strip("/").split("/")
                if url.path in ("/healthz", "/readyz"):
                    self._reply(200, b"ok")
                    return
                if len(parts) != 4 or parts[0] != "containerLogs":
                    self._reply(404, b"the kubetune dev agent serves only /containerLogs and /healthz\n")
                    return
                found = agent.find_log(parts[1], parts[2], parts[3])
                if found is None:
                    self._reply(404, f"no such pod {parts[1]}/{parts[2]} on this node\n".encode())
                    return
                path, running = found
                follow = query.get("follow", ["false"])[0] == "true"
                data = runtime.tail(path, 64 * 1024 * 1024)
                if "tailLines" in query:
                    lines = data.splitlines(keepends=True)
                    data = b"".join(lines[-int(query["tailLines"][0]) :]) if int(query["tailLines"][0]) else b""
                if "limitBytes" in query:
                    data = data[: int(query["limitBytes"][0])]
                    follow = False
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                try:
                    self.wfile.write(data)
                    if follow:
                        self._follow(path, running)
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                    return

            def _follow(self, path: Path, running: Callable[[], bool]) -> None:
                with open(path, "rb") as handle:
                    handle.seek(0, os.SEEK_END)
                    while True:
                        chunk = handle.read(65536)
                        if chunk:
                            self.wfile.write(chunk)
                            self.wfile.flush()
                        elif not running() or agent.stop.is_set():
                            return
                        else:
                            time.sleep(0.3)

            def _reply(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(self.opts.tls_cert_file), str(self.opts.tls_key_file))
        if self.opts.client_ca_file:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(str(self.opts.client_ca_file))
        server = http.server.ThreadingHTTPServer((HOST_IP, self.opts.listen_port), Handler)
        server.daemon_threads = True
        server.socket = context.wrap_socket(server.socket, server_side=True)
        server.serve_forever(poll_interval=1.0)


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _os_image() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return platform.platform()


def _backoff(first: float = 1.0, cap: float = 30.0) -> Iterator[float]:
    delay = first
    while True:
        yield delay
        delay = min(cap, delay * 2)


def parse_args(argv: list[str] | None = None) -> AgentOptions:
    parser = argparse.ArgumentParser(prog="python -m kubetune_dev.agent", description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--node-name", required=True)
    parser.add_argument("--gpus", type=int, default=4, help="nvidia.com/gpu capacity (default 4)")
    parser.add_argument("--state-dir", type=Path, required=True, help="where the agent keeps its records")
    parser.add_argument("--pods-dir", type=Path, help="per-pod directories and logs (default STATE_DIR/pods)")
    parser.add_argument("--cpu", default="32", help="advertised cpu capacity (not enforced)")
    parser.add_argument("--memory", default="64Gi", help="advertised memory capacity (not enforced)")
    parser.add_argument("--max-pods", type=int, default=110)
    parser.add_argument(
        "--python-bin-dir",
        type=Path,
        default=Path(sys.executable).parent,
        help="put first on every pod's PATH (default: this interpreter's bin dir)",
    )
    parser.add_argument("--listen-port", type=int, default=0, help="kubelet endpoint for `kubectl logs` (0: off)")
    parser.add_argument("--tls-cert-file", type=Path)
    parser.add_argument("--tls-private-key-file", type=Path)
    parser.add_argument("--client-ca-file", type=Path)
    parser.add_argument("--owner", default="", help="pid:starttime; tear the cluster down when it exits")
    parser.add_argument("--cluster-home", type=Path, help="the cluster to tear down (with --owner)")
    parser.add_argument("--pod-network", default=str(POD_NETWORK), help="loopback /16 of pod IPs")
    args = parser.parse_args(argv)
    return AgentOptions(
        kubeconfig=args.kubeconfig,
        node_name=args.node_name,
        gpus=args.gpus,
        state_dir=args.state_dir,
        pods_dir=args.pods_dir or args.state_dir / "pods",
        cpu=args.cpu,
        memory=args.memory,
        max_pods=args.max_pods,
        python_bin_dir=args.python_bin_dir,
        listen_port=args.listen_port,
        tls_cert_file=args.tls_cert_file,
        tls_key_file=args.tls_private_key_file,
        client_ca_file=args.client_ca_file,
        owner=args.owner,
        cluster_home=args.cluster_home,
        pod_network=args.pod_network,
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(threadName)s %(message)s", stream=sys.stderr
    )
    opts = parse_args(argv)
    opts.state_dir.mkdir(parents=True, exist_ok=True)
    api = KubeApi.from_kubeconfig(opts.kubeconfig, temp_dir=opts.state_dir / "credentials", pool_size=32)
    agent = Agent(opts, api)

    def on_signal(signum: int, frame: object) -> None:
        agent.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    socket.setdefaulttimeout(60)
    agent.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
