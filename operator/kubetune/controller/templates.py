"""Pure builders of the manifests the operator creates: Trials, trial pods and trial workloads."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from typing import Any

from kubetune.api import (
    API_VERSION,
    ParameterAssignment,
    ParameterValue,
    TuningJob,
    WorkloadKind,
    WorkloadTemplate,
    resolve_path,
)
from kubetune.controller import naming

_PLACEHOLDER = re.compile(r"\$\{params\.([a-z][a-z0-9_]*)\}")

# Pod fields a trial pod gets unless the template says otherwise: no API
# token (trials never need the API server) and the Pod Security Standards'
# `restricted` profile, merged key by key into a template's own securityContext
# so that setting e.g. runAsUser does not silently drop the rest.
_POD_SECURITY_DEFAULTS: dict[str, Any] = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
_CONTAINER_SECURITY_DEFAULTS: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}


def format_value(value: ParameterValue) -> str:
    """How a parameter value is spelled in env vars and args."""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def placeholders(text: str) -> list[str]:
    """Parameter names referenced as ${params.name} in a string."""
    return _PLACEHOLDER.findall(text)


def kube_literal(text: str) -> str:
    """`text` spelled so that the container receives it unchanged.

    The kubelet expands `$(VAR)` in command, args and env values, and `$$` is its escape for one `$`;
    doubling every `$` is the only spelling that no expansion can alter.
    """
    return text.replace("$", "$$")


def substitute(text: str, parameters: ParameterAssignment) -> str:
    """Replace ${params.name} by the value, literally. Absent (conditional) parameters become ''.

    The result goes into an argv entry or env value, never through a shell, so
    a value such as `; rm -rf /` stays inert text; the value's `$` are escaped for the
    kubelet's `$(VAR)` expansion (`kube_literal`), while the template's own text keeps
    Kubernetes' meaning, so a template may still refer to `$(POD_NAME)` on purpose.
    """
    return _PLACEHOLDER.sub(lambda m: kube_literal(format_value(parameters[m[1]])) if m[1] in parameters else "",
                            text)


def template_placeholders(job: TuningJob) -> set[str]:
    """Every parameter name the trial template refers to (with a workload: anywhere in its spec)."""
    template = job.spec.trial_template
    found: set[str] = set()
    if template.workload is not None:
        for text in _strings(template.workload.spec):
            found.update(placeholders(text))
        return found
    assert template.template is not None
    for container in template.template.model_dump()["spec"]["containers"]:
        for text in _container_strings(container):
            found.update(placeholders(text))
    return found


def _strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for value in node.values() for s in _strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in _strings(value)]
    return []


def _substitute_all(node: Any, parameters: ParameterAssignment) -> Any:
    """`node` with ${params.name} substituted in every string (keys stay)."""
    if isinstance(node, str):
        return substitute(node, parameters)
    if isinstance(node, dict):
        return {key: _substitute_all(value, parameters) for key, value in node.items()}
    if isinstance(node, list):
        return [_substitute_all(value, parameters) for value in node]
    return node


def _container_strings(container: dict[str, Any]) -> list[str]:
    strings = [s for s in container.get("command") or [] if isinstance(s, str)]
    strings += [s for s in container.get("args") or [] if isinstance(s, str)]
    strings += [e["value"] for e in container.get("env") or [] if isinstance(e.get("value"), str)]
    return strings


def owner_reference(api_version: str, kind: str, name: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def build_trial(job: TuningJob, index: int, parameters: ParameterAssignment) -> dict[str, Any]:
    """The Trial resource for suggestion number `index` of the job."""
    assert job.metadata.uid, "a job read from the API server has a uid"
    name = naming.trial_name(job.metadata.name, index)
    return {
        "apiVersion": API_VERSION,
        "kind": "Trial",
        "metadata": {
            "name": name,
            "namespace": job.metadata.namespace,
            "labels": {
                naming.LABEL_JOB: job.metadata.name,
                naming.LABEL_TRIAL: name,
                naming.LABEL_MANAGED_BY: naming.MANAGED_BY,
            },
            "ownerReferences": [owner_reference(API_VERSION, "TuningJob", job.metadata.name, job.metadata.uid)],
        },
        "spec": {"index": index, "parameters": dict(parameters)},
    }


@dataclass(frozen=True)
class Resource:
    """The API resource a trial's attempts are made of: pods, or the workload kind of trialTemplate.workload."""

    group: str
    version: str
    plural: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


POD_RESOURCE = Resource("", "v1", "pods")


def parse_resource(text: str) -> Resource:
    """`group/version/plural` (KUBETUNE_WORKLOAD_KINDS) as a Resource."""
    group, version, plural = text.strip().split("/")
    return Resource(group, version, plural)


def trial_resource(job: TuningJob) -> Resource:
    workload = job.spec.trial_template.workload
    if workload is None:
        return POD_RESOURCE
    return Resource(workload.group, workload.version, workload.plural)


def build_trial_attempt(
    job: TuningJob, trial: str, attempt: int, parameters: ParameterAssignment, trial_uid: str | None
) -> dict[str, Any]:
    """What one attempt of a trial runs as: a pod, or the trial template's workload object."""
    if job.spec.trial_template.workload is not None:
        return build_trial_workload(job, trial, attempt, parameters, trial_uid)
    return build_trial_pod(job, trial, attempt, parameters, trial_uid)


def _trial_labels(job: TuningJob, trial: str, attempt: int) -> dict[str, str]:
    return {
        naming.LABEL_JOB: job.metadata.name,
        naming.LABEL_TRIAL: trial,
        naming.LABEL_ATTEMPT: str(attempt),
        naming.LABEL_MANAGED_BY: naming.MANAGED_BY,
    }


def _prepare_pod(job: TuningJob, trial: str, attempt: int, parameters: ParameterAssignment,
                 metadata: dict[str, Any], pod_spec: dict[str, Any], primary: str) -> None:
    """What kubetune adds to a trial's pod (or each pod template of its workload), in place: labels by which
    the operator and Prometheus find it, the restricted security defaults, the parameters in `primary`."""
    template = job.spec.trial_template
    labels = {str(k): str(v) for k, v in (metadata.get("labels") or {}).items()}
    labels.update(_trial_labels(job, trial, attempt))
    labels[naming.LABEL_SCRAPE] = "true"
    annotations = {str(k): str(v) for k, v in (metadata.get("annotations") or {}).items()}
    annotations[naming.ANNOTATION_METRICS_PATH] = template.metrics_path
    metadata["labels"], metadata["annotations"] = labels, annotations
    pod_spec.setdefault("automountServiceAccountToken", False)
    pod_spec["securityContext"] = _with_defaults(pod_spec.get("securityContext"), _POD_SECURITY_DEFAULTS)
    for container in [*(pod_spec.get("initContainers") or []), *(pod_spec.get("containers") or [])]:
        container["securityContext"] = _with_defaults(container.get("securityContext"), _CONTAINER_SECURITY_DEFAULTS)
    containers = pod_spec.get("containers") or []
    chosen = next((c for c in containers if c.get("name") == primary), containers[0] if containers else None)
    if chosen is not None:
        _inject_primary(chosen, job, trial, parameters)


def build_trial_pod(
    job: TuningJob, trial: str, attempt: int, parameters: ParameterAssignment, trial_uid: str | None
) -> dict[str, Any]:
    """The pod for one attempt of a trial, built from the job's trial template.

    `trial_uid` is None when the Trial is being created in the same step; the
    executor fills in the owner reference once the API server answered.
    """
    template = job.spec.trial_template
    assert template.template is not None, "a pod trial has a pod template"
    raw = template.template.model_dump(exclude_none=True)
    metadata: dict[str, Any] = copy.deepcopy(raw.get("metadata") or {})
    pod_spec: dict[str, Any] = copy.deepcopy(raw["spec"])
    for container in pod_spec["containers"]:
        _substitute_container(container, parameters)
    # Trials are retried by the operator (as new attempts), never in place.
    pod_spec["restartPolicy"] = "Never"
    if template.active_deadline_seconds is not None:
        pod_spec["activeDeadlineSeconds"] = template.active_deadline_seconds
    _prepare_pod(job, trial, attempt, parameters, metadata, pod_spec, template.primary_container_name)
    return _owned({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": naming.pod_name(trial, attempt), "namespace": job.metadata.namespace,
                     "labels": metadata["labels"], "annotations": metadata["annotations"]},
        "spec": pod_spec,
    }, trial, trial_uid)


def _owned(manifest: dict[str, Any], trial: str, trial_uid: str | None) -> dict[str, Any]:
    if trial_uid is not None:
        manifest["metadata"]["ownerReferences"] = [owner_reference(API_VERSION, "Trial", trial, trial_uid)]
    return manifest


def build_trial_workload(
    job: TuningJob, trial: str, attempt: int, parameters: ParameterAssignment, trial_uid: str | None
) -> dict[str, Any]:
    """The workload object (Job, JobSet, ...) for one attempt of a trial, named like a trial pod
    (`<trial>-<attempt>`, owned by the Trial): parameters substituted in every string of its spec, and every
    pod template it names prepared like a trial pod, so each of its pods carries the trial's labels."""
    template = job.spec.trial_template
    workload = template.workload
    assert workload is not None, "a workload trial has a workload template"
    spec = _substitute_all(copy.deepcopy(workload.spec), parameters)
    for path in workload.pod_template_paths():
        for pod_template in resolve_path(spec, path.removeprefix("spec.")):
            _prepare_pod(job, trial, attempt, parameters, pod_template.setdefault("metadata", {}),
                         pod_template.setdefault("spec", {}), template.primary_container_name)
    for path in workload.containers or []:
        for container in resolve_path(spec, path.removeprefix("spec.")):
            _inject_primary(container, job, trial, parameters)
    own = workload.metadata.model_dump(exclude_none=True) if workload.metadata is not None else {}
    labels = {str(k): str(v) for k, v in (own.get("labels") or {}).items()} | _trial_labels(job, trial, attempt)
    metadata: dict[str, Any] = {"name": naming.pod_name(trial, attempt), "namespace": job.metadata.namespace,
                                "labels": labels}
    if own.get("annotations"):
        metadata["annotations"] = {str(k): str(v) for k, v in own["annotations"].items()}
    return _owned({"apiVersion": workload.api_version, "kind": workload.kind, "metadata": metadata, "spec": spec},
                  trial, trial_uid)


def trial_pods(job: TuningJob, trial: str, attempt: int, parameters: ParameterAssignment) -> list[dict[str, Any]]:
    """The pods one attempt of a trial makes, as pod manifests: its own pod, or one per pod template of its
    workload (what the workload's controllers will create from them), for checks such as admission dry runs."""
    workload = job.spec.trial_template.workload
    if workload is None:
        return [build_trial_pod(job, trial, attempt, parameters, None)]
    spec = build_trial_workload(job, trial, attempt, parameters, None)["spec"]
    return [
        {"apiVersion": "v1", "kind": "Pod",
         "metadata": {**pod_template.get("metadata", {}), "name": f"{naming.pod_name(trial, attempt)}-{index}",
                      "namespace": job.metadata.namespace},
         "spec": pod_template["spec"]}
        for index, pod_template in enumerate(
            t for path in workload.pod_template_paths() for t in resolve_path(spec, path.removeprefix("spec.")))
    ]


# Labels Kubernetes puts on the pods of an indexed Job and of a JobSet.
JOB_COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
JOBSET_REPLICATED_JOB = "jobset.sigs.k8s.io/replicatedjob-name"
JOBSET_JOB_INDEX = "jobset.sigs.k8s.io/job-index"


def reporting_selector(workload: WorkloadTemplate) -> dict[str, str]:
    """The labels of the workload's pod that reports the trial's result (rank 0); {} matches any pod."""
    if workload.reporting_pod is not None:
        return dict(workload.reporting_pod)
    if not workload.known:
        return {}
    if workload.kind == WorkloadKind.JOB:
        return {JOB_COMPLETION_INDEX: "0"} if workload.spec.get("completionMode") == "Indexed" else {}
    replicated = [r for r in workload.spec.get("replicatedJobs") or [] if isinstance(r, dict)]
    selector = {JOBSET_JOB_INDEX: "0", JOB_COMPLETION_INDEX: "0"}
    if replicated and isinstance(replicated[0].get("name"), str):
        selector[JOBSET_REPLICATED_JOB] = replicated[0]["name"]
    return selector


def _with_defaults(own: Any, defaults: dict[str, Any]) -> Any:
    """`defaults` under the template's own securityContext: every key the template sets wins."""
    if own is None:
        return copy.deepcopy(defaults)
    if not isinstance(own, dict):
        return own  # not an object: the API server rejects the pod and says why
    return {**copy.deepcopy(defaults), **own}


def _substitute_container(container: dict[str, Any], parameters: ParameterAssignment) -> None:
    for key in ("command", "args"):
        if container.get(key):
            container[key] = [substitute(s, parameters) if isinstance(s, str) else s for s in container[key]]
    for env in container.get("env") or []:
        if isinstance(env.get("value"), str):
            env["value"] = substitute(env["value"], parameters)


def _inject_primary(container: dict[str, Any], job: TuningJob, trial: str, parameters: ParameterAssignment) -> None:
    template = job.spec.trial_template
    injected: list[dict[str, Any]] = [
        {"name": naming.param_env_name(name), "value": kube_literal(format_value(value))}
        for name, value in parameters.items()
    ]
    injected += [
        {"name": naming.ENV_PARAMS_JSON, "value": kube_literal(json.dumps(parameters, sort_keys=True))},
        {"name": naming.ENV_TRIAL, "value": trial},
        {"name": naming.ENV_JOB, "value": job.metadata.name},
        {"name": naming.ENV_METRICS_PORT, "value": str(template.metrics_port)},
        # Bind to the pod IP: on the dev cluster every pod has its own loopback IP.
        {"name": naming.ENV_METRICS_ADDRESS, "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {
            "name": naming.ENV_TERMINATION_MESSAGE_PATH,
            "value": kube_literal(container.get("terminationMessagePath", "/dev/termination-log")),
        },
    ]
    # The user's own env wins over what kubetune injects under the same name.
    own = {env["name"] for env in container.get("env") or []}
    container["env"] = [e for e in injected if e["name"] not in own] + list(container.get("env") or [])
    ports = container.setdefault("ports", [])
    if not any(p.get("name") == naming.METRICS_PORT_NAME for p in ports):
        ports.append({"name": naming.METRICS_PORT_NAME, "containerPort": template.metrics_port, "protocol": "TCP"})
