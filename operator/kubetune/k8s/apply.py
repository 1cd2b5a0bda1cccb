"""Carry out a plan against the API server, idempotently.

Order matters for crash safety: pods are created before the Trial status that
counts them is written (a crash in between is recovered from the pod itself),
and a trial is marked stopped before its pod is deleted (a crash in between
leaves a final trial whose pod the next reconcile deletes). The job's status is
derived from the trials, so it is written alongside their statuses; Events are
posted in the background, so no reconcile (and no trial turnover) waits on them.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubetune.api import API_VERSION, GROUP, VERSION
from kubetune.controller import naming
from kubetune.controller.planner import CreatePod, CreateTrial, DeletePod, Event, PatchTrialStatus, Plan
from kubetune.controller.templates import Resource, owner_reference
from kubetune.k8s.client import AlreadyExists, ApiError, Conflict, Json, KubeClient, NotFound, resource_path

logger = logging.getLogger(__name__)

# Trials of one wave are created concurrently, but not all 1,000 at once.
MAX_CONCURRENT_WRITES = 16
# Events waiting to be posted, and the tasks posting them.
EVENT_BACKLOG = 2000
EVENT_POSTERS = 4


def merge_patch(old: Any, new: Any) -> Any:
    """The RFC 7386 merge patch turning `old` into `new` (None where a key goes away)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return copy.deepcopy(new)
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        if key not in old:
            patch[key] = copy.deepcopy(value)
        elif old[key] != value:
            patch[key] = merge_patch(old[key], value)
    return patch


@dataclass
class JobRef:
    namespace: str
    name: str
    uid: str
    resource_version: str = ""  # of the job the plan was made from; "" writes its status unconditionally


@dataclass
class ApplyResult:
    created_pods: list[str] = field(default_factory=list)
    created_trials: int = 0
    errors: list[str] = field(default_factory=list)
    # Trials whose pod the API server refused for good, and its words: the next plan fails them (PodRejected).
    rejected: dict[str, str] = field(default_factory=dict)


def rejected_for_good(error: ApiError) -> bool:
    """The API server refused the pod itself (invalid, or forbidden by Pod Security): retrying cannot help.

    Other refusals (an exceeded quota, a terminating namespace) may pass later and are retried.
    """
    return error.status in (400, 422) or (error.status == 403 and "violates PodSecurity" in error.message)


def namespace_going_away(error: ApiError, namespace: str) -> bool:
    """A write into a namespace that is gone or terminating: the job goes with it, nothing to retry."""
    gone = isinstance(error, NotFound) and f'namespaces "{namespace}" not found' in error.message
    return gone or (error.status == 403 and "because it is being terminated" in error.message)


def event_name(involved: str, key: str) -> str:
    """The name of the Event reporting transition `key` of object `involved`: the same transition always
    gets the same name, so the API server keeps one Event per transition however often it is posted."""
    return f"{involved}.{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def trials_path(namespace: str, name: str | None = None, subresource: str | None = None) -> str:
    return resource_path(GROUP, VERSION, "trials", namespace, name, subresource)


def tuningjobs_path(namespace: str, name: str | None = None, subresource: str | None = None) -> str:
    return resource_path(GROUP, VERSION, "tuningjobs", namespace, name, subresource)


def pods_path(namespace: str, name: str | None = None) -> str:
    return resource_path("", "v1", "pods", namespace, name)


def attempt_path(resource: Resource, namespace: str, name: str | None = None) -> str:
    """Where a trial's attempt lives: a pod, or its workload object."""
    return resource_path(resource.group, resource.version, resource.plural, namespace, name)


class EventRecorder:
    """Posts Events in the background, like client-go's event broadcaster.

    Events are for people, not for correctness: a reconcile hands them over and goes on, a refused
    one is logged and not retried, and beyond EVENT_BACKLOG waiting ones new ones are dropped
    (counted in `dropped`) rather than slowing the operator down.
    """

    def __init__(self, client: KubeClient) -> None:
        self.client = client
        self.dropped = 0
        self._queue: asyncio.Queue[tuple[str, Json]] | None = None
        self._posters: list[asyncio.Task[None]] = []

    def record(self, namespace: str, body: Json) -> None:
        if self._queue is None:  # started on first use, inside the operator's event loop
            self._queue = asyncio.Queue(EVENT_BACKLOG)
            self._posters = [asyncio.create_task(self._post(), name=f"kubetune-events-{n}")
                             for n in range(EVENT_POSTERS)]
        try:
            self._queue.put_nowait((namespace, body))
        except asyncio.QueueFull:
            self.dropped += 1
            logger.warning("%d Events waiting; dropped %s %s", EVENT_BACKLOG, body["reason"], body["message"][:200])

    async def _post(self) -> None:
        assert self._queue is not None
        while True:
            namespace, body = await self._queue.get()
            try:
                await self.client.create(resource_path("", "v1", "events", namespace), body)
                # The operator's log says each decision once, as its Event does: what on-call reads first.
                involved = body["involvedObject"]
                logger.log(logging.WARNING if body["type"] == "Warning" else logging.INFO, "%s/%s %s %s: %s",
                           namespace, involved["kind"], involved["name"], body["reason"], body["message"])
            except AlreadyExists:
                pass  # the same transition, posted before (a stale cache or an earlier run of the operator)
            except ApiError as error:
                if not namespace_going_away(error, namespace):
                    logger.warning("%s/%s: Event %s not recorded: %s", namespace,
                                   body["involvedObject"]["name"], body["reason"], error)
            except Exception:  # a connection error must not end the poster
                logger.exception("%s: Event %s not recorded", namespace, body["reason"])
            finally:
                self._queue.task_done()

    async def flush(self) -> None:
        """Until every Event handed over so far is posted (or refused)."""
        if self._queue is not None:
            await self._queue.join()

    async def close(self) -> None:
        for task in self._posters:
            task.cancel()
        await asyncio.gather(*self._posters, return_exceptions=True)
        self._posters = []
        self._queue = None


class PlanApplier:
    """Applies plans with one client; `trial_uids` resolves Trial names for events and owner references."""

    def __init__(self, client: KubeClient, component: str = "kubetune-operator") -> None:
        self.client = client
        self.component = component
        self.instance = socket.gethostname()
        self.events = EventRecorder(client)
        self._writes = asyncio.Semaphore(MAX_CONCURRENT_WRITES)

    async def apply(
        self,
        job: JobRef,
        plan: Plan,
        old_trial_status: Callable[[str], Json],
        trial_uid: Callable[[str], str | None],
        old_job_status: Json,
    ) -> ApplyResult:
        result = ApplyResult()
        uids: dict[str, str] = {}

        async def guarded(coroutine: Any) -> None:
            async with self._writes:
                try:
                    await coroutine
                except ApiError as error:
                    if namespace_going_away(error, job.namespace):
                        logger.debug("%s/%s: namespace going away: %s", job.namespace, job.name, error)
                        return
                    result.errors.append(str(error))
                    logger.warning("%s/%s: %s", job.namespace, job.name, error)

        # 1. New trials and their first pods, then retries' pods.
        await asyncio.gather(*(guarded(self._create_trial(job, a, uids, result)) for a in plan.of_type(CreateTrial)))
        await asyncio.gather(*(guarded(self._create_pod(job, a.pod, result, a.resource))
                               for a in plan.of_type(CreatePod)))
        # 2. Trial statuses (after the pods they count exist), except of trials whose pod was just rejected (the
        #    next plan fails them); the job's status with them.
        patches = [a for a in plan.of_type(PatchTrialStatus) if a.trial not in result.rejected]
        writes = [guarded(self._patch_trial(job, a, old_trial_status(a.trial))) for a in patches]
        job_patch = merge_patch(old_job_status, plan.status.to_wire()) if plan.status is not None else None
        if job_patch:
            writes.append(guarded(self._patch_job_status(job, job_patch)))
        await asyncio.gather(*writes)
        # 3. Pods of stopped trials (after their trials are marked stopped).
        await asyncio.gather(*(guarded(self._delete_pod(job, a)) for a in plan.of_type(DeletePod)))
        # 4. Events, in the background.
        for event in plan.of_type(Event):
            uid = uids.get(event.name) or trial_uid(event.name)
            self.events.record(job.namespace, self.event_body(job, event, uid))
        return result

    async def _create_trial(self, job: JobRef, action: CreateTrial, uids: dict[str, str], result: ApplyResult) -> None:
        name = action.trial["metadata"]["name"]
        try:
            created = await self.client.create(trials_path(job.namespace), action.trial)
        except AlreadyExists:
            # A stale cache or a restart: this index exists already. Keep it, never duplicate;
            # the next reconcile sees it in the cache and gives it a pod if it has none.
            return
        result.created_trials += 1
        uid = created["metadata"]["uid"]
        uids[name] = uid
        pod = copy.deepcopy(action.pod)
        pod["metadata"]["ownerReferences"] = [owner_reference(API_VERSION, "Trial", name, uid)]
        if await self._create_pod(job, pod, result, action.resource):
            await self.client.merge_patch(
                trials_path(job.namespace, name, "status"), {"status": {"phase": "Pending", "attempts": 1}}
            )

    async def _create_pod(self, job: JobRef, pod: Json, result: ApplyResult, resource: Resource) -> bool:
        """Create a trial's pod (or workload); False when the API server refused it for good (recorded)."""
        try:
            await self.client.create(attempt_path(resource, job.namespace), pod)
        except AlreadyExists:
            pass
        except ApiError as error:
            if not rejected_for_good(error):
                raise
            trial = pod["metadata"]["labels"][naming.LABEL_TRIAL]
            logger.warning("%s/%s: pod of trial %s rejected: %s", job.namespace, job.name, trial, error)
            result.rejected[trial] = f"the API server rejected pod {pod['metadata']['name']}: {error}"
            return False
        result.created_pods.append(pod["metadata"]["name"])
        return True

    async def _patch_job_status(self, job: JobRef, patch: Json) -> None:
        """Only onto the status the plan was made from: a list in the patch (conditions) replaces the
        stored one whole, and would drop what another writer added since. A 409 means our cache is
        behind; the watch event that brings the newer job also brings a new reconcile."""
        body: Json = {"status": patch}
        if job.resource_version:
            body["metadata"] = {"resourceVersion": job.resource_version}
        try:
            await self.client.merge_patch(tuningjobs_path(job.namespace, job.name, "status"), body)
        except Conflict:
            logger.debug("%s/%s: status changed meanwhile; the next reconcile writes it", job.namespace, job.name)
        except NotFound:
            pass  # the job was deleted meanwhile; its watch event ends the reconciles

    async def _patch_trial(self, job: JobRef, action: PatchTrialStatus, old: Json) -> None:
        patch = merge_patch(old, action.status)
        if patch:
            try:
                await self.client.merge_patch(trials_path(job.namespace, action.trial, "status"), {"status": patch})
            except NotFound:
                pass  # deleted meanwhile

    async def _delete_pod(self, job: JobRef, action: DeletePod) -> None:
        try:
            # Background: a workload goes at once, the garbage collector deletes its Jobs and pods after it.
            await self.client.delete(attempt_path(action.resource, job.namespace, action.name),
                                     propagation="Background")
        except NotFound:
            pass

    def event_body(self, job: JobRef, action: Event, trial_uid: str | None) -> Json:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        if action.kind == "Trial":
            involved = {"apiVersion": API_VERSION, "kind": "Trial", "name": action.name, "namespace": job.namespace}
            if trial_uid:
                involved["uid"] = trial_uid
        else:
            involved = {"apiVersion": API_VERSION, "kind": "TuningJob", "name": job.name,
                        "namespace": job.namespace, "uid": job.uid}
        metadata = {"namespace": job.namespace}
        if action.key:
            metadata["name"] = event_name(involved["name"], action.key)
        else:
            metadata["generateName"] = f"{involved['name']}."
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": metadata,
            "involvedObject": involved,
            "reason": action.reason,
            "message": action.message[:1024],
            "type": action.type,
            "source": {"component": self.component},
            "reportingComponent": self.component,
            "reportingInstance": self.instance,
            "firstTimestamp": now[:19] + "Z",
            "lastTimestamp": now[:19] + "Z",
            "count": 1,
        }
        return body
