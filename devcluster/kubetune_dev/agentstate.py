"""The node agent's memory of each pod: what it started, with which resources, how it ended.

Records are persisted (one `pod.json` per pod directory) before a process starts and after every
change, so a restarted agent re-adopts live processes and never starts a pod twice. Building the
pod status from a record is pure and lives here too.
"""

from __future__ import annotations

import datetime
import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from kubetune_dev.procs import ProcessHandle, write_atomic

JSON = dict[str, Any]
RECORD_FILE = "pod.json"
TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})
RUNTIME = "kubetune-dev"
START_ERROR_EXIT_CODE = 128  # what containerd reports when exec fails
UNKNOWN_EXIT_CODE = 137  # the kubelet's code for a container whose end it did not see


def rfc3339(epoch: float | None = None) -> str:
    moment = datetime.datetime.fromtimestamp(time.time() if epoch is None else epoch, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class ContainerRecord:
    name: str
    image: str = ""
    gpus: list[int] = field(default_factory=list)
    state: str = "waiting"  # waiting | running | terminated
    wait_reason: str = "ContainerCreating"
    wait_message: str = ""
    pid: int | None = None
    pid_start: int | None = None
    boot_id: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    exit_code: int | None = None
    reason: str = ""
    message: str = ""
    restart_count: int = 0
    last_terminated: JSON | None = None
    next_start: float | None = None  # epoch seconds; None: not scheduled to (re)start
    container_id: str = ""

    @property
    def handle(self) -> ProcessHandle | None:
        if self.pid is None or self.pid_start is None:
            return None
        return ProcessHandle(self.pid, self.pid_start, self.boot_id)

    def set_running(self, handle: ProcessHandle, container_id: str) -> None:
        self.state = "running"
        self.pid, self.pid_start, self.boot_id = handle.pid, handle.start_time, handle.boot_id
        self.started_at = rfc3339()
        self.finished_at = None
        self.exit_code = None
        self.reason = self.message = self.wait_reason = self.wait_message = ""
        self.next_start = None
        self.container_id = container_id

    def set_terminated(self, exit_code: int, reason: str, message: str = "", *, started_at: str | None = None) -> None:
        self.state = "terminated"
        self.exit_code = exit_code
        self.reason = reason
        self.message = message
        self.started_at = self.started_at or started_at or rfc3339()
        self.finished_at = rfc3339()
        self.next_start = None

    def terminated_state(self) -> JSON:
        state: JSON = {
            "exitCode": self.exit_code if self.exit_code is not None else UNKNOWN_EXIT_CODE,
            "reason": self.reason or ("Completed" if self.exit_code == 0 else "Error"),
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
        }
        if self.message:
            state["message"] = self.message
        if self.container_id:
            state["containerID"] = self.container_id
        return state

    def status(self) -> JSON:
        state: JSON
        if self.state == "running":
            state = {"running": {"startedAt": self.started_at}}
        elif self.state == "terminated":
            state = {"terminated": self.terminated_state()}
        else:
            waiting: JSON = {"reason": self.wait_reason or "ContainerCreating"}
            if self.wait_message:
                waiting["message"] = self.wait_message
            state = {"waiting": waiting}
        out: JSON = {
            "name": self.name,
            "image": self.image,
            "imageID": f"{RUNTIME}://{self.image}" if self.image else "",
            "ready": self.state == "running",
            "started": self.state == "running",
            "restartCount": self.restart_count,
            "state": state,
            "lastState": {"terminated": self.last_terminated} if self.last_terminated else {},
        }
        if self.container_id:
            out["containerID"] = self.container_id
        return out


@dataclass
class PodRecord:
    uid: str
    namespace: str
    name: str
    restart_policy: str = "Never"
    containers: list[ContainerRecord] = field(default_factory=list)
    ip: str | None = None
    phase: str = "Pending"
    reason: str = ""
    message: str = ""
    start_time: str | None = None
    start_epoch: float | None = None
    active_deadline: float | None = None  # epoch seconds (spec.activeDeadlineSeconds)
    terminating: bool = False
    terminate_reason: str = ""
    terminate_message: str = ""
    kill_at: float | None = None
    conditions: dict[str, list[str]] = field(default_factory=dict)  # type -> [status, lastTransitionTime]
    reported: bool = False
    deleted: bool = False

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL_PHASES

    def container(self, name: str) -> ContainerRecord | None:
        return next((c for c in self.containers if c.name == name), None)

    def running(self) -> list[ContainerRecord]:
        return [c for c in self.containers if c.state == "running"]

    def wants_restart(self, exit_code: int) -> bool:
        if self.terminating:
            return False
        if self.restart_policy == "Always":
            return True
        return self.restart_policy == "OnFailure" and exit_code != 0

    def compute_phase(self) -> str:
        """Pod phase from container states; terminal phases are final."""
        if self.terminal:
            return self.phase
        states = [c.state for c in self.containers]
        # As the kubelet's getPhase: a container that has never run (waiting, no earlier termination) keeps the
        # pod Pending, whatever the others do; one waiting to restart counts as stopped.
        if not self.terminating and any(c.state == "waiting" and c.last_terminated is None for c in self.containers):
            return "Pending"
        if "running" in states:
            return "Running"
        started = "Running" if self.start_time else "Pending"
        if not self.terminating and any(c.next_start is not None for c in self.containers):
            return started  # a container waits to be (re)started
        if states and all(s == "terminated" for s in states):
            succeeded = all(c.exit_code == 0 for c in self.containers) and not self.terminate_reason
            return "Succeeded" if succeeded else "Failed"
        # Killed (deleted, deadline) before every container ran: that is a failure.
        return "Failed" if self.terminating else started

    def set_condition(self, kind: str, status: bool, now: str) -> None:
        value = "True" if status else "False"
        current = self.conditions.get(kind)
        if current is None or current[0] != value:
            self.conditions[kind] = [value, now]

    def refresh_conditions(self, now: str | None = None) -> None:
        now = now or rfc3339()
        ready = bool(self.containers) and all(c.state == "running" for c in self.containers)
        self.set_condition("PodReadyToStartContainers", self.ip is not None and not self.terminal, now)
        self.set_condition("Initialized", True, now)
        self.set_condition("ContainersReady", ready and not self.terminal, now)
        self.set_condition("Ready", ready and not self.terminal, now)

    def to_dict(self) -> JSON:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: JSON) -> PodRecord:
        known = {f.name for f in fields(ContainerRecord)}
        containers = [ContainerRecord(**{k: v for k, v in c.items() if k in known}) for c in data.get("containers", [])]
        pod_fields = {f.name for f in fields(cls)} - {"containers"}
        return cls(containers=containers, **{k: v for k, v in data.items() if k in pod_fields})


def build_status_patch(rec: PodRecord, *, host_ip: str) -> JSON:
    """A strategic-merge patch for pods/<name>/status describing `rec` completely."""
    status: JSON = {
        "phase": rec.phase,
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "conditions": [
            {
                "type": kind,
                "status": value,
                "lastTransitionTime": since,
                "lastProbeTime": None,
                **(_condition_reason(rec, kind, value)),
            }
            for kind, (value, since) in sorted(rec.conditions.items())
        ],
        "containerStatuses": [c.status() for c in rec.containers],
    }
    if rec.ip:
        status["podIP"] = rec.ip
        status["podIPs"] = [{"ip": rec.ip}]
    if rec.start_time:
        status["startTime"] = rec.start_time
    if rec.reason:
        status["reason"] = rec.reason
    if rec.message:
        status["message"] = rec.message
    return {"status": status}


def _condition_reason(rec: PodRecord, kind: str, value: str) -> JSON:
    if value == "True" or kind not in ("Ready", "ContainersReady"):
        return {}
    if rec.terminal:
        return {"reason": "PodCompleted"}
    waiting = [c.name for c in rec.containers if c.state != "running"]
    return {"reason": "ContainersNotReady", "message": f"containers with unready status: [{' '.join(waiting)}]"}


def save_record(rec: PodRecord, pod_dir: Path) -> None:
    write_atomic(pod_dir / RECORD_FILE, json.dumps(rec.to_dict(), indent=1, sort_keys=True))


def load_records(pods_dir: Path) -> list[PodRecord]:
    records: list[PodRecord] = []
    if not pods_dir.is_dir():
        return records
    for path in sorted(pods_dir.glob(f"*/{RECORD_FILE}")):
        try:
            records.append(PodRecord.from_dict(json.loads(path.read_text())))
        except (OSError, ValueError, TypeError, KeyError):
            continue
    return records
