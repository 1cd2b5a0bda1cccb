"""Kopf wiring: indices (the watch caches) and thin event handlers that feed the Controller.

No handler here decides anything: each one maps an event to the TuningJob it
concerns and puts that job on the Controller's queue. Kopf holds every
handler back until all indices are fully populated, so the first reconcile
after a start (or a crash) already sees every existing Trial and pod, and
never recreates one.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf
from pydantic import ValidationError

from kubetune.api import GROUP, VERSION, Trial
from kubetune.controller import naming
from kubetune.controller.ledger import FINAL_PHASES
from kubetune.controller.observe import GPU_RESOURCE
from kubetune.controller.templates import Resource, parse_resource
from kubetune.handlers.config import OperatorConfig
from kubetune.handlers.runtime import Controller
from kubetune.k8s.client import ApiError, Credentials, KubeClient, NotFound, resource_path
from kubetune.metrics.operator import OperatorMetrics

FINALIZER = "kubetune.io/finalizer"
CHILD_LABELS = {naming.LABEL_JOB: kopf.PRESENT}
CRD_POLL_SECONDS = 1.0

logger = logging.getLogger(__name__)


def _slim_pod(body: Any) -> dict[str, Any]:
    """Only what the planner reads: keeps memory flat at thousands of pods."""
    metadata = body.get("metadata") or {}
    status = body.get("status") or {}
    spec = body.get("spec") or {}
    return {
        # The GPUs each container asks for (kubetune:gpu_seconds), nothing else of the spec.
        "spec": {key: [_slim_gpus(c) for c in spec.get(key) or []] for key in ("containers", "initContainers")},
        "metadata": {
            "name": metadata.get("name"),
            "labels": dict(metadata.get("labels") or {}),
            "deletionTimestamp": metadata.get("deletionTimestamp"),
            "creationTimestamp": metadata.get("creationTimestamp"),
        },
        "status": {
            "phase": status.get("phase"),
            "reason": status.get("reason"),
            "message": status.get("message"),
            "startTime": status.get("startTime"),
            "containerStatuses": _slim_containers(status.get("containerStatuses")),
            "initContainerStatuses": _slim_containers(status.get("initContainerStatuses")),
            # Whether the scheduler could place it (Unschedulable says why a trial waits).
            "conditions": [dict(c) for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"],
        },
    }


def _slim_gpus(container: Any) -> dict[str, Any]:
    resources = container.get("resources") or {}
    return {"resources": {key: {GPU_RESOURCE: (resources.get(key) or {})[GPU_RESOURCE]}
                          for key in ("limits", "requests") if GPU_RESOURCE in (resources.get(key) or {})}}


def _slim_containers(statuses: Any) -> list[dict[str, Any]]:
    return [{"name": c.get("name"), "state": dict(c.get("state") or {})} for c in statuses or []]


def _plain(body: Any) -> dict[str, Any]:
    # managedFields are half of an object's bytes and nothing reads them.
    metadata = {k: v for k, v in (body.get("metadata") or {}).items() if k != "managedFields"}
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": metadata,
        "spec": dict(body.get("spec") or {}),
        "status": dict(body.get("status") or {}),
    }


# What the operator reads of a Trial's metadata; the rest (owner references, managedFields, ...) is
# not kept for the thousands of Trials in the index.
TRIAL_METADATA = ("name", "namespace", "uid", "resourceVersion", "generation", "labels")


def _trial_model(namespace: str | None, name: str, body: Any) -> Trial | None:
    """A Trial validated once, when the watch delivers it: the index holds every Trial of every job, so
    it keeps the model (not the body as well), and a reconcile reads models without validating again."""
    metadata = body.get("metadata") or {}
    slim = {
        "metadata": {key: metadata[key] for key in TRIAL_METADATA if key in metadata},
        "spec": body.get("spec"),
        "status": body.get("status") or {},
    }
    try:
        return Trial.model_validate(slim)
    except ValidationError as error:
        logger.warning("ignoring malformed Trial %s/%s: %s", namespace, name, error)
        return None


async def _wait_for_crds(client: KubeClient) -> None:
    """Until the API serves tuningjobs and trials: a chart install creates the CRDs and the operator at
    once, and kopf looks for its resources only after the startup handlers (discovery needs no RBAC)."""
    path = f"/apis/{GROUP}/{VERSION}"
    while True:
        try:
            served = {r.get("name") for r in (await client.request("GET", path)).get("resources", [])}
        except NotFound:
            served = set()
        if {"tuningjobs", "trials"} <= served:
            return
        logger.info("waiting for the API to serve tuningjobs and trials (%s): are the kubetune CRDs installed?", path)
        await asyncio.sleep(CRD_POLL_SECONDS)


async def check_workload_kinds(client: KubeClient, config: OperatorConfig) -> dict[str, str]:
    """The configured workload kinds this operator cannot list where it watches, each with the API server's
    answer (a kind not served, or RBAC refusing the list). Kopf runs no handler at all until every watched kind
    has been listed, so one such kind would stall every TuningJob; the caller leaves them out instead."""
    refused: dict[str, str] = {}
    for text in config.workload_kinds:
        resource = parse_resource(text)
        for namespace in config.namespaces or (None,):
            path = resource_path(resource.group, resource.version, resource.plural, namespace)
            try:
                await client.request("GET", path, params={"limit": "1"})
            except NotFound:
                refused[text] = (f"the API server does not serve {resource.plural}.{resource.group} "
                                 f"{resource.version} (is its CRD installed?)")
            except ApiError as error:
                if error.status not in (401, 403):
                    raise
                refused[text] = error.message
            if text in refused:
                logger.error("not watching the workload kind %s, so TuningJobs of that kind fail: %s; "
                             "fix it, then restart the operator", text, refused[text])
                break
    return refused


def build_registry(
    config: OperatorConfig, metrics: OperatorMetrics | None = None
) -> kopf.OperatorRegistry:
    """A fresh registry (tests run several operators; the default registry would leak handlers)."""
    registry = kopf.OperatorRegistry()

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
        settings.persistence.finalizer = FINALIZER
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kubetune.io")
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix="kubetune.io", key="last-handled-configuration"
        )
        settings.posting.level = logging.WARNING  # our own Events say what happens; kopf's would be noise
        settings.batching.batch_window = 0.01  # trial turnover waits on this window
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        # Kopf's watches of CRDs and namespaces need cluster-wide permissions the chart does not grant
        # (its RBAC is exactly what the operator calls): resources are found once, after startup.
        settings.scanning.disabled = True
        client = KubeClient(Credentials.load(config.kubeconfig))
        await _wait_for_crds(client)
        controller = Controller(config, client, metrics)
        memo["controller"] = controller
        await controller.start()

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        # A fresh registry has none of Kopf's default login handlers; use the same
        # credentials as our own client (re-read on 401, so rotated tokens work).
        credentials = Credentials.load(config.kubeconfig)
        return kopf.ConnectionInfo(
            server=credentials.server,
            ca_path=credentials.ca_file,
            insecure=not credentials.verify,
            certificate_path=credentials.cert_file,
            private_key_path=credentials.key_file,
            token=credentials.bearer(),
        )

    @kopf.on.cleanup(registry=registry)
    async def cleanup(memo: Any, **_: Any) -> None:
        controller: Controller | None = memo.get("controller")
        if controller is not None:
            await controller.stop()

    @kopf.index(GROUP, VERSION, "tuningjobs", id="tuningjobs", registry=registry)
    def tuningjobs(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
        return {(namespace, name): _plain(body)}

    @kopf.index(GROUP, VERSION, "trials", labels=CHILD_LABELS, id="trials", registry=registry)
    def trials(
        namespace: str | None, name: str, labels: kopf.Labels, body: kopf.Body, memo: Any, **_: Any
    ) -> dict[Any, Any]:
        """Active Trials stay in Kopf's index; a final one goes to its job's ledger instead (a compact
        record), so a long study's reconcile and memory do not carry thousands of finished models."""
        key = (namespace or "", labels[naming.LABEL_JOB])
        controller: Controller = memo["controller"]
        if (body.get("status") or {}).get("phase") in FINAL_PHASES and controller.is_settled(key, name):
            return {}  # the same final Trial again (a re-listing): nothing new
        trial = _trial_model(namespace, name, body)
        if trial is None:
            return {}
        if trial.status.phase in FINAL_PHASES:
            controller.settled(key, trial)
            return {}
        return {key: trial}

    @kopf.index("", "v1", "pods", labels=CHILD_LABELS, id="pods", registry=registry)
    def pods(namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Any, Any]:
        return {(namespace, labels[naming.LABEL_JOB]): _slim_pod(body)}

    # Workload trials (trialTemplate.workload): one index and one event handler per configured kind, labelled
    # like trial pods; a change of a trial's workload reconciles its job as a pod's change does.
    workload_indices: dict[Resource, str] = {}
    for resource in map(parse_resource, config.workload_kinds):
        index_id = f"workloads-{resource.plural}.{resource.group}"
        workload_indices[resource] = index_id

        @kopf.index(resource.group, resource.version, resource.plural, labels=CHILD_LABELS, id=index_id,
                    registry=registry)
        def workloads(namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Any, Any]:
            return {(namespace, labels[naming.LABEL_JOB]): _plain(body)}

        @kopf.on.event(resource.group, resource.version, resource.plural, labels=CHILD_LABELS,
                       id=f"{index_id}-event", registry=registry)
        def workload_event(namespace: str | None, labels: kopf.Labels, memo: Any, **kwargs: Any) -> None:
            controller_of(memo, kwargs).enqueue((namespace or "", labels[naming.LABEL_JOB]))

    def controller_of(memo: Any, indices: dict[str, Any]) -> Controller:
        controller: Controller = memo["controller"]
        controller.attach(indices["tuningjobs"], indices["trials"], indices["pods"],
                          {resource: indices[index_id] for resource, index_id in workload_indices.items()})
        return controller

    @kopf.on.event(GROUP, VERSION, "tuningjobs", registry=registry)
    def tuningjob_event(namespace: str | None, name: str, memo: Any, **kwargs: Any) -> None:
        controller_of(memo, kwargs).enqueue((namespace or "", name))

    @kopf.on.event(GROUP, VERSION, "trials", labels=CHILD_LABELS, registry=registry)
    def trial_event(
        namespace: str | None, name: str, labels: kopf.Labels, type: str, memo: Any, **kwargs: Any
    ) -> None:
        key = (namespace or "", labels[naming.LABEL_JOB])
        controller = controller_of(memo, kwargs)
        if type == "DELETED":
            controller.trial_deleted(key, name)
        controller.enqueue(key)

    @kopf.on.event("", "v1", "pods", labels=CHILD_LABELS, registry=registry)
    def pod_event(
        namespace: str | None, name: str, labels: kopf.Labels, status: kopf.Status, type: str, body: kopf.Body,
        memo: Any, **kwargs: Any,
    ) -> None:
        deleted = type == "DELETED"
        controller_of(memo, kwargs).pod_event(
            (namespace or "", labels[naming.LABEL_JOB]), name, status.get("phase"), deleted=deleted,
            body=_slim_pod(body) if deleted else None,
        )

    return registry
