"""One operator per job: the Lease decisions and manifests (pure), from recorded Leases."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from kubetune.controller.ownership import (
    LEASE_DURATION_SECONDS,
    STANDBY_ANNOTATION,
    STANDBY_TTL_SECONDS,
    Decision,
    build_lease,
    build_standby,
    decide,
    lease_name,
    lease_view,
    needs_standby_entry,
    others_standing_by,
)

NOW = datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)
ME, OTHER = "kubetune/kt-kubetune", "team-a/kt-kubetune"


def lease(holder: str, renewed: datetime, standby: dict[str, datetime] | None = None) -> dict[str, Any]:
    body = build_lease("ml", "digits", "job-uid", holder, renewed, None)
    body["metadata"]["resourceVersion"] = "7"
    if standby:
        body["metadata"]["annotations"][STANDBY_ANNOTATION] = json.dumps(
            {k: v.strftime("%Y-%m-%dT%H:%M:%S.%fZ") for k, v in standby.items()})
    return body


def test_decisions() -> None:
    assert decide(None, ME, NOW) == Decision.CREATE
    assert decide(lease_view(lease(ME, NOW - timedelta(seconds=5))), ME, NOW) == Decision.HOLD
    assert decide(lease_view(lease(ME, NOW - timedelta(seconds=25))), ME, NOW) == Decision.RENEW
    # Ours but expired (a restart after a long pause): renewed, never stood by.
    assert decide(lease_view(lease(ME, NOW - timedelta(hours=1))), ME, NOW) == Decision.RENEW
    assert decide(lease_view(lease(OTHER, NOW - timedelta(seconds=30))), ME, NOW) == Decision.STAND_BY
    expired = NOW - timedelta(seconds=LEASE_DURATION_SECONDS)
    assert decide(lease_view(lease(OTHER, expired)), ME, NOW) == Decision.TAKE_OVER


def test_a_new_lease_is_owned_by_the_job_and_names_the_holder() -> None:
    body = build_lease("ml", "digits", "job-uid", ME, NOW, None)
    assert body["metadata"]["name"] == lease_name("digits") == "digits.tuningjob.kubetune.io"
    assert body["metadata"]["ownerReferences"][0]["uid"] == "job-uid"
    assert body["spec"]["holderIdentity"] == ME and body["spec"]["leaseDurationSeconds"] == LEASE_DURATION_SECONDS
    assert lease_view(body).renew_time == NOW


def test_taking_over_counts_a_transition_and_keeps_the_resource_version() -> None:
    old = lease(OTHER, NOW - timedelta(minutes=5))
    taken = build_lease("ml", "digits", "job-uid", ME, NOW, old)
    assert taken["spec"]["holderIdentity"] == ME and taken["spec"]["leaseTransitions"] == 1
    assert taken["metadata"]["resourceVersion"] == "7"  # a PUT onto the Lease as read, or 409
    renewed = build_lease("ml", "digits", "job-uid", ME, NOW + timedelta(seconds=30), taken)
    assert renewed["spec"]["leaseTransitions"] == 1 and renewed["spec"]["acquireTime"] == taken["spec"]["acquireTime"]


def test_standing_by_is_recorded_and_read_back_by_the_holder_until_it_ages_out() -> None:
    held = lease(OTHER, NOW)
    waiting = build_standby(ME, NOW, held)
    assert waiting["spec"] == held["spec"]  # the holder is untouched
    view = lease_view(waiting)
    assert others_standing_by(view, OTHER, NOW) == [ME]
    assert others_standing_by(view, ME, NOW) == []
    assert not needs_standby_entry(view, ME, NOW + timedelta(seconds=10))
    assert needs_standby_entry(view, ME, NOW + timedelta(seconds=31))
    assert others_standing_by(view, OTHER, NOW + timedelta(seconds=STANDBY_TTL_SECONDS + 1)) == []
    # The holder's renewals carry the entry on; whoever takes over drops its own.
    renewed = build_lease("ml", "digits", "job-uid", OTHER, NOW + timedelta(seconds=20), waiting)
    assert others_standing_by(lease_view(renewed), OTHER, NOW + timedelta(seconds=20)) == [ME]
    taken = build_lease("ml", "digits", "job-uid", ME, NOW + timedelta(minutes=2), waiting)
    assert lease_view(taken).standby == {}


def test_a_garbled_standby_annotation_is_ignored() -> None:
    body = lease(OTHER, NOW)
    body["metadata"]["annotations"][STANDBY_ANNOTATION] = "not json"
    assert lease_view(body).standby == {}
