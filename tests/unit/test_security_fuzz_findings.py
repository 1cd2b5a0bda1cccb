"""Regressions for what tests/e2e/test_fuzz_specs.py found, pinned without a cluster.

- a numeric range wider than the largest double, or int bounds beyond 2^53, passed admission and then made
  the search engine raise (TPE: OverflowError) or spin (huge int ranges) inside a reconcile;
- wrong-typed container fields the operator reads (env: "x", args: 7, ...) passed the free-form container
  schema and crashed the planner with a TypeError on every reconcile;
- a trial pod the API server refuses (invalid, or forbidden by Pod Security) made every reconcile raise and
  retry for ever; now the trial fails with reason PodRejected and the API server's message;
- a status patch of a job deleted meanwhile counted as a failed reconcile.
"""

from __future__ import annotations

import asyncio
import copy
import math
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from kubetune.api import Trial, TuningJob, TuningJobSpec
from kubetune.api.models import MAX_INT_BOUND, AlgorithmName
from kubetune.controller.engine import SearchEngine
from kubetune.controller.planner import CreatePod, CreateTrial, Observations, PatchTrialStatus, Plan, plan
from kubetune.controller.templates import build_trial, build_trial_pod
from kubetune.k8s.apply import JobRef, PlanApplier
from kubetune.k8s.client import ApiError, NotFound

NOW = datetime(2026, 11, 29, tzinfo=UTC)
SPEC: dict[str, Any] = {
    "objective": {"metric": "score", "goal": "maximize"},
    "parameters": [{"name": "x", "type": "float", "min": 0.0, "max": 1.0}],
    "budget": {"maxTrials": 3, "parallelism": 3},
    "trialTemplate": {
        "template": {
            "spec": {
                "containers": [
                    {"name": "trial", "image": "python:3.11-slim", "command": ["python", "-c", "pass"],
                     "args": ["${params.x}"], "env": [{"name": "X", "value": "${params.x}"}]}
                ]
            }
        }
    },
}


def spec_with(**changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(SPEC)
    spec.update(changes)
    return spec


def job(spec: dict[str, Any]) -> TuningJob:
    return TuningJob.model_validate(
        {"metadata": {"name": "fz", "namespace": "ml", "uid": "uid-fz", "generation": 1}, "spec": spec}
    )


# --------------------------------------------------------------------------- ranges


@pytest.mark.parametrize(
    "parameter",
    [
        {"name": "x", "type": "float", "min": -1e308, "max": 1e308},
        {"name": "x", "type": "float", "min": -1.7e308, "max": 1e308},
        {"name": "x", "type": "int", "min": -1e154, "max": 1e154},
        {"name": "x", "type": "int", "min": 0, "max": 1e19},
        {"name": "x", "type": "int", "min": 0, "max": MAX_INT_BOUND + 2},
    ],
)
def test_ranges_the_engine_cannot_sample_are_refused(parameter: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="finite|2\\^53"):
        TuningJobSpec.model_validate(spec_with(parameters=[parameter]))


@pytest.mark.parametrize("algorithm", [a.value for a in AlgorithmName])
@pytest.mark.parametrize(
    "parameter",
    [
        {"name": "x", "type": "float", "min": -8e307, "max": 8e307},
        {"name": "x", "type": "float", "min": 1e-300, "max": 1e300, "log": True},
        {"name": "x", "type": "int", "min": -MAX_INT_BOUND, "max": MAX_INT_BOUND},
    ],
    ids=["widest-float", "widest-log", "widest-int"],
)
def test_the_widest_accepted_ranges_plan_finite_suggestions(algorithm: str, parameter: dict[str, Any]) -> None:
    tuning_job = job(spec_with(parameters=[parameter], algorithm={"name": algorithm, "seed": 1}))
    result = plan(tuning_job, [], [], Observations(), NOW, SearchEngine())
    values = [a.trial["spec"]["parameters"]["x"] for a in result.of_type(CreateTrial)]
    assert values, result.status
    assert all(math.isfinite(v) and parameter["min"] <= v <= parameter["max"] for v in values), values


# --------------------------------------------------------------------------- container fields the operator reads


@pytest.mark.parametrize(
    ("where", "value", "field"),
    [
        ("env", "x", "env"),
        ("env", [{"value": "no name"}], "name"),
        ("env", [{"name": "X", "value": 1}], "value"),
        ("args", 7, "args"),
        ("args", [{"nested": True}], "args"),
        ("command", {"a": 1}, "command"),
        ("ports", "8000", "ports"),
        ("securityContext", "root", "securityContext"),
    ],
)
def test_wrong_typed_container_fields_are_refused_naming_the_field(where: str, value: Any, field: str) -> None:
    spec = copy.deepcopy(SPEC)
    spec["trialTemplate"]["template"]["spec"]["containers"][0][where] = value
    with pytest.raises(ValidationError) as caught:
        TuningJobSpec.model_validate(spec)
    assert any(field in map(str, error["loc"]) for error in caught.value.errors()), caught.value


@pytest.mark.parametrize(
    ("where", "value"),
    [("initContainers", "x"), ("securityContext", []), ("automountServiceAccountToken", "maybe")],
)
def test_wrong_typed_pod_fields_are_refused(where: str, value: Any) -> None:
    spec = copy.deepcopy(SPEC)
    spec["trialTemplate"]["template"]["spec"][where] = value
    with pytest.raises(ValidationError, match=where):
        TuningJobSpec.model_validate(spec)


def test_pod_labels_must_be_strings() -> None:
    spec = copy.deepcopy(SPEC)
    spec["trialTemplate"]["template"]["metadata"] = {"labels": ["a"]}
    with pytest.raises(ValidationError, match="labels"):
        TuningJobSpec.model_validate(spec)


# --------------------------------------------------------------------------- refused pods


class RecordingClient:
    """Answers like the API server for the calls PlanApplier makes; pods are refused with `pod_error`."""

    def __init__(self, pod_error: ApiError | None = None, job_gone: bool = False) -> None:
        self.pod_error = pod_error
        self.job_gone = job_gone
        self.patches: list[tuple[str, dict[str, Any]]] = []
        self.created: list[str] = []

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if path.endswith("/pods") and self.pod_error is not None:
            raise self.pod_error
        self.created.append(path)
        return {**body, "metadata": {**body["metadata"], "uid": f"uid-{body['metadata'].get('name')}"}}

    async def merge_patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.job_gone and "/tuningjobs/" in path:
            raise NotFound(404, "NotFound", "tuningjobs.kubetune.io \"fz\" not found")
        self.patches.append((path, body))
        return body

    async def delete(self, path: str, propagation: str | None = None) -> None:
        return None


def _apply(client: RecordingClient, result: Plan) -> Any:
    applier = PlanApplier(client)  # type: ignore[arg-type]
    return asyncio.run(applier.apply(JobRef("ml", "fz", "uid-fz"), result, lambda _: {}, lambda _: None, {}))


def _trial_plan() -> Plan:
    tuning_job = job(SPEC)
    trial = build_trial(tuning_job, 0, {"x": 0.5})
    pod = build_trial_pod(tuning_job, "fz-0", 1, {"x": 0.5}, trial_uid=None)
    return Plan(actions=[CreateTrial(trial=trial, pod=pod),
                         PatchTrialStatus("fz-0", {"phase": "Pending", "attempts": 1})])


@pytest.mark.parametrize(
    "error",
    [
        ApiError(422, "Invalid", 'Pod "fz-0-1" is invalid: metadata.annotations: Too long'),
        ApiError(400, "BadRequest", "quantities must match the regular expression"),
        ApiError(403, "Forbidden", 'pods "fz-0-1" is forbidden: violates PodSecurity "restricted:latest"'),
    ],
    ids=["invalid", "bad-request", "pod-security"],
)
def test_a_refused_pod_fails_its_trial_once_instead_of_failing_every_reconcile(error: ApiError) -> None:
    client = RecordingClient(pod_error=error)
    applied = _apply(client, _trial_plan())
    assert applied.errors == [] and list(applied.rejected) == ["fz-0"] and applied.created_pods == []
    trial_patches = [body["status"] for path, body in client.patches if path.endswith("/trials/fz-0/status")]
    assert trial_patches == [], "the plan's own Pending patch must not go out for a trial whose pod was refused"
    # The next plan fails the trial with the API server's words; it is not retried.
    tuning_job = job(SPEC)
    created = Trial.model_validate({**build_trial(tuning_job, 0, {"x": 0.5}), "status": {}})
    result = plan(tuning_job, [created], [], Observations(), NOW, SearchEngine(), rejected=applied.rejected)
    [status] = [a.status for a in result.of_type(PatchTrialStatus) if a.trial == "fz-0"]
    assert status["phase"] == "Failed" and status["reason"] == "PodRejected"
    assert error.message in status["message"]
    assert not result.of_type(CreatePod)


def test_a_quota_refusal_is_retried() -> None:
    client = RecordingClient(pod_error=ApiError(403, "Forbidden", 'pods "fz-0-1" is forbidden: exceeded quota'))
    applied = _apply(client, _trial_plan())
    assert applied.rejected == {} and len(applied.errors) == 1


def test_a_status_patch_of_a_deleted_job_is_not_an_error() -> None:
    tuning_job = job(SPEC)
    result = plan(tuning_job, [], [], Observations(), NOW, SearchEngine())
    assert result.status is not None
    applied = _apply(RecordingClient(job_gone=True), Plan(status=result.status))
    assert applied.errors == []
