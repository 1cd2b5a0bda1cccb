"""Which operator reconciles a job: one holder per TuningJob, recorded in a coordination.k8s.io Lease.

Two kubetune installations whose watched namespaces overlap (a cluster-wide release and a namespaced one)
would both reconcile the same jobs. Each job has a Lease in its namespace naming the operator that
reconciles it (its `holderIdentity`, the installation's KUBETUNE_OPERATOR_ID, stable across restarts). An
operator reconciles a job only while it holds that Lease; another one stands by, writes its own identity
and the time into the Lease's `kubetune.io/standby` annotation, and takes over only when the Lease
expires (the holder stopped renewing it). The holder reads the standby entries back when it renews and
says so in the job's `DuplicateOperator` condition.

Pure: decisions and manifests from the Lease as read; `kubetune.k8s.leases` does the I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from kubetune.controller import naming
from kubetune.controller.templates import owner_reference

LEASE_DURATION_SECONDS = 60
# A holder renews its Lease once it is this old, so a Lease of a job being worked on never expires.
RENEW_AFTER_SECONDS = 20.0
# How often an operator that stands by looks again (and refreshes its standby entry).
STANDBY_RECHECK_SECONDS = 30.0
# A standby entry older than this is an operator that went away.
STANDBY_TTL_SECONDS = 2 * LEASE_DURATION_SECONDS
STANDBY_ANNOTATION = "kubetune.io/standby"


class Decision(StrEnum):
    CREATE = "create"  # no Lease yet: create it, holding it
    HOLD = "hold"  # ours and fresh: nothing to write
    RENEW = "renew"  # ours, getting old: renew it
    TAKE_OVER = "take-over"  # another holder stopped renewing: take it
    STAND_BY = "stand-by"  # another operator holds it


@dataclass(frozen=True)
class LeaseView:
    """The part of a Lease the decision needs."""

    holder: str | None
    renew_time: datetime | None
    duration_seconds: int
    standby: dict[str, datetime] = field(default_factory=dict)  # operator identity -> when it last stood by

    def expired(self, now: datetime) -> bool:
        if self.holder is None or self.renew_time is None:
            return True
        return now >= self.renew_time + timedelta(seconds=self.duration_seconds)


def lease_name(job: str) -> str:
    return f"{job}.tuningjob.{naming.MANAGED_BY}.io"


def _micro_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def lease_view(body: Mapping[str, Any]) -> LeaseView:
    spec = body.get("spec") or {}
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    try:
        raw = json.loads(annotations.get(STANDBY_ANNOTATION, "{}"))
    except ValueError:
        raw = {}
    standby = {str(k): t for k, v in (raw.items() if isinstance(raw, dict) else []) if (t := _parse(v)) is not None}
    return LeaseView(
        holder=spec.get("holderIdentity"),
        renew_time=_parse(spec.get("renewTime")),
        duration_seconds=int(spec.get("leaseDurationSeconds") or LEASE_DURATION_SECONDS),
        standby=standby,
    )


def decide(lease: LeaseView | None, me: str, now: datetime) -> Decision:
    if lease is None:
        return Decision.CREATE
    if lease.holder == me:
        fresh = lease.renew_time is not None and now < lease.renew_time + timedelta(seconds=RENEW_AFTER_SECONDS)
        return Decision.HOLD if fresh else Decision.RENEW
    return Decision.TAKE_OVER if lease.expired(now) else Decision.STAND_BY


def others_standing_by(lease: LeaseView, me: str, now: datetime) -> list[str]:
    """Operators other than `me` that stood by for this job recently, sorted."""
    recent = now - timedelta(seconds=STANDBY_TTL_SECONDS)
    return sorted(who for who, when in lease.standby.items() if who != me and when > recent)


def _standby_annotation(standby: Mapping[str, datetime], now: datetime) -> str:
    recent = now - timedelta(seconds=STANDBY_TTL_SECONDS)
    return json.dumps({who: _micro_time(when) for who, when in sorted(standby.items()) if when > recent},
                      sort_keys=True)


def build_lease(
    namespace: str, job: str, job_uid: str, me: str, now: datetime, current: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The Lease `me` writes to hold the job (create, renew or take over); `current`: the Lease as read."""
    view = lease_view(current) if current is not None else None
    spec = dict((current or {}).get("spec") or {})
    taking_over = view is not None and view.holder != me
    if current is None or taking_over:
        spec["acquireTime"] = _micro_time(now)
    if taking_over:
        spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
    spec.update({"holderIdentity": me, "leaseDurationSeconds": LEASE_DURATION_SECONDS,
                 "renewTime": _micro_time(now)})
    metadata: dict[str, Any] = dict((current or {}).get("metadata") or {})
    metadata.update({"name": lease_name(job), "namespace": namespace})
    metadata.setdefault("labels", {naming.LABEL_JOB: job, naming.LABEL_MANAGED_BY: naming.MANAGED_BY})
    # Owned by the job: deleting the job removes its Lease.
    metadata.setdefault("ownerReferences", [owner_reference("kubetune.io/v1alpha1", "TuningJob", job, job_uid)])
    annotations = dict(metadata.get("annotations") or {})
    annotations[STANDBY_ANNOTATION] = _standby_annotation({k: v for k, v in (view.standby if view else {}).items()
                                                           if k != me}, now)
    metadata["annotations"] = annotations
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec}


def build_standby(me: str, now: datetime, current: Mapping[str, Any]) -> dict[str, Any]:
    """The Lease as read, with `me` recorded as standing by (the holder is untouched)."""
    view = lease_view(current)
    metadata = dict(current.get("metadata") or {})
    annotations = dict(metadata.get("annotations") or {})
    annotations[STANDBY_ANNOTATION] = _standby_annotation({**view.standby, me: now}, now)
    metadata["annotations"] = annotations
    return {**current, "metadata": metadata}


def needs_standby_entry(lease: LeaseView, me: str, now: datetime) -> bool:
    """Whether `me`'s standby entry is missing or old enough to refresh."""
    seen = lease.standby.get(me)
    return seen is None or now - seen >= timedelta(seconds=STANDBY_RECHECK_SECONDS)
