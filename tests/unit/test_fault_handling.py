"""What the fault suite (tests/e2e/test_faults.py) relies on, at unit level: job status writes that never drop
another writer's update, Events that never hold a reconcile up nor repeat, pods missing from the watch."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

from kubetune.api import Trial, TuningJobStatus
from kubetune.controller.planner import CreateTrial, Event, Plan
from kubetune.handlers.config import OperatorConfig
from kubetune.handlers.runtime import Controller
from kubetune.k8s.apply import JobRef, PlanApplier, event_name
from kubetune.k8s.client import AlreadyExists, ApiError, Conflict, NotFound

KEY = ("ml", "digits")


def slim_pod(name: str, phase: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"kubetune.io/job": "digits", "kubetune.io/trial": "digits-0"}},
            "status": {"phase": phase, "containerStatuses": []}}


class StatusClient:
    """Records merge patches; answers 409 like an API server whose object moved on."""

    def __init__(self, conflict: bool) -> None:
        self.conflict = conflict
        self.patches: list[tuple[str, dict[str, Any]]] = []

    async def merge_patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.patches.append((path, body))
        if self.conflict:
            raise Conflict(409, "Conflict", "the object has been modified; please apply your changes to the latest")
        return {}


def test_job_status_is_written_only_onto_the_version_it_was_planned_from() -> None:
    status = TuningJobStatus.model_validate({"phase": "Running", "progress": "1/4"})
    for conflict in (False, True):
        client = StatusClient(conflict)
        applier = PlanApplier(client)  # type: ignore[arg-type]
        job = JobRef(namespace="ml", name="digits", uid="job-uid", resource_version="42")
        result = asyncio.run(applier.apply(job, Plan(status=status), lambda _: {}, lambda _: None, {}))
        [(path, body)] = client.patches
        assert path.endswith("/tuningjobs/digits/status")
        assert body["metadata"] == {"resourceVersion": "42"} and body["status"]["progress"] == "1/4"
        # A 409 is no failure: the newer job's watch event brings the next reconcile.
        assert result.errors == []


class GoneNamespaceClient:
    """Answers every create like an API server whose namespace is terminating or already deleted."""

    def __init__(self, error: ApiError) -> None:
        self.error = error
        self.creates = 0

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.creates += 1
        raise self.error


def test_writes_into_a_namespace_going_away_are_not_reconcile_errors() -> None:
    action = CreateTrial(
        trial={"metadata": {"name": "digits-0", "labels": {}}},
        pod={"metadata": {"name": "digits-0-1", "labels": {"kubetune.io/trial": "digits-0"}}},
    )
    job = JobRef(namespace="ml", name="digits", uid="job-uid")
    going_away = [
        NotFound(404, "NotFound", 'namespaces "ml" not found'),
        ApiError(403, "Forbidden", 'trials.kubetune.io "digits-0" is forbidden: unable to create new content in '
                                   "namespace ml because it is being terminated"),
    ]
    for error in going_away:
        client = GoneNamespaceClient(error)
        result = asyncio.run(PlanApplier(client).apply(  # type: ignore[arg-type]
            job, Plan(actions=[action]), lambda _: {}, lambda _: None, {}))
        assert client.creates == 1 and result.errors == []
    # Any other refusal still counts (and is retried).
    other = ApiError(403, "Forbidden", 'trials.kubetune.io is forbidden: User "x" cannot create resource "trials"')
    result = asyncio.run(PlanApplier(GoneNamespaceClient(other)).apply(  # type: ignore[arg-type]
        job, Plan(actions=[action]), lambda _: {}, lambda _: None, {}))
    assert len(result.errors) == 1


class PodsClient:
    """Answers pod GETs from a set of pods that exist on the API server; counts the requests."""

    def __init__(self, existing: set[str]) -> None:
        self.existing = existing
        self.gets: list[str] = []

    async def request(self, method: str, path: str) -> dict[str, Any]:
        name = path.rsplit("/", 1)[-1]
        self.gets.append(name)
        if name not in self.existing:
            raise NotFound(404, "NotFound", f'pods "{name}" not found')
        return {"metadata": {"name": name}}


def test_a_pod_missing_from_the_watch_is_lost_only_if_the_api_server_agrees() -> None:
    """Another replica (rolling update) created digits-0-1 and recorded attempt 1; this replica's pod
    watch lags. digits-1-1 is gone for real. Only active trials are passed: digits-2 is final."""
    trials = [
        Trial.model_validate({"metadata": {"name": name, "uid": f"uid-{name}"},
                              "spec": {"index": int(name[-1]), "parameters": {}},
                              "status": {"phase": phase, "attempts": 1}})
        for name, phase in (("digits-0", "Pending"), ("digits-1", "Running"), ("digits-2", "Succeeded"))
    ]
    client = PodsClient(existing={"digits-0-1"})
    controller = Controller(OperatorConfig(), client)  # type: ignore[arg-type]
    active = [t for t in trials if t.status.phase != "Succeeded"]
    found = asyncio.run(controller._behind_the_watch(KEY, active, present=set()))
    assert found == {"digits-0-1"} and sorted(client.gets) == ["digits-0-1", "digits-1-1"]
    # Found once, it is expected like a pod created here: no second GET while the watch catches up.
    client.gets.clear()
    assert asyncio.run(controller._behind_the_watch(KEY, active, present=set())) == frozenset()
    assert client.gets == ["digits-1-1"]
    assert controller.state(KEY).expected(set(), time.monotonic()) == {"digits-0-1"}
    # Pods the watch shows are never asked for.
    client.gets.clear()
    asyncio.run(controller._behind_the_watch(KEY, active, present={"digits-0-1", "digits-1-1"}))
    assert client.gets == []


def test_the_trial_index_holds_models_validated_once_and_skips_malformed_trials(caplog: Any) -> None:
    from kubetune.handlers.registry import _trial_model

    body = {"apiVersion": "kubetune.io/v1alpha1", "kind": "Trial",
            "metadata": {"name": "digits-0", "uid": "u0", "managedFields": [{"manager": "kubetune"}]},
            "spec": {"index": 0, "parameters": {"lr": 0.1}}, "status": {"phase": "Running", "attempts": 1}}
    model = _trial_model("ml", "digits-0", body)
    assert isinstance(model, Trial) and model.status.phase == "Running" and model.metadata.uid == "u0"
    malformed = {"metadata": {"name": "digits-1"}, "spec": {"index": "one"}}
    assert _trial_model("ml", "digits-1", malformed) is None
    assert "ignoring malformed Trial ml/digits-1" in caplog.text


class SlowEventsClient:
    """Events take a while and the first is refused; everything else answers at once."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.release = asyncio.Event()

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        assert path.endswith("/events")
        await self.release.wait()
        if not self.events:
            self.events.append("refused")
            raise ApiError(403, "Forbidden", 'events is forbidden: User "x" cannot create resource "events"')
        self.events.append(body["reason"])
        return body

    async def merge_patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return {}


def test_events_are_posted_in_the_background_and_a_refused_one_is_no_reconcile_error() -> None:
    async def scenario() -> tuple[Any, list[str], list[str]]:
        client = SlowEventsClient()
        applier = PlanApplier(client)  # type: ignore[arg-type]
        plan = Plan(actions=[Event("TuningJob", "digits", "Normal", reason, "m") for reason in ("A", "B", "C")])
        result = await asyncio.wait_for(
            applier.apply(JobRef("ml", "digits", "uid"), plan, lambda _: {}, lambda _: None, {}), timeout=5)
        before = list(client.events)  # apply returned while the API server still held every Event
        client.release.set()
        await asyncio.wait_for(applier.events.flush(), timeout=5)
        await applier.events.close()
        return result, before, client.events

    result, before, posted = asyncio.run(scenario())
    assert result.errors == [] and before == []
    assert posted.count("refused") == 1 and len(set(posted) - {"refused"}) == 2  # the others all posted


def test_an_event_already_posted_is_not_posted_again_nor_an_error(caplog: Any) -> None:
    """Events of one transition share a name: a repeat is answered 409 and dropped quietly. The operator's log
    has one line per decision, as the Events do."""
    caplog.set_level(logging.INFO, logger="kubetune.k8s.apply")

    class NamedEventsClient:
        requests_total = 0

        def __init__(self) -> None:
            self.names: list[str] = []

        async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
            name = body["metadata"]["name"]
            if name in self.names:
                raise AlreadyExists(409, "AlreadyExists", f'events "{name}" already exists')
            self.names.append(name)
            return body

    async def scenario() -> list[str]:
        client = NamedEventsClient()
        applier = PlanApplier(client)  # type: ignore[arg-type]
        succeeded = Event("Trial", "digits-0", "Normal", "TrialSucceeded", "m", key="uid-0/TrialSucceeded")
        for _ in range(3):
            result = await applier.apply(JobRef("ml", "digits", "uid"), Plan(actions=[succeeded]),
                                         lambda _: {}, lambda _: None, {})
            assert result.errors == []
        await applier.events.flush()
        await applier.events.close()
        return client.names

    names = asyncio.run(scenario())
    assert names == [event_name("digits-0", "uid-0/TrialSucceeded")]
    assert [r.getMessage() for r in caplog.records] == ["ml/Trial digits-0 TrialSucceeded: m"]
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", names[0]) and len(names[0]) <= 253
