"""Claiming a TuningJob's Lease (see `kubetune.controller.ownership` for the rules)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kubetune.controller.ownership import (
    Decision,
    build_lease,
    build_standby,
    decide,
    lease_name,
    lease_view,
    needs_standby_entry,
    others_standing_by,
)
from kubetune.k8s.client import AlreadyExists, Conflict, Json, KubeClient, NotFound, resource_path

Key = tuple[str, str]  # (namespace, job name)
# Attempts at one claim when another writer keeps changing the Lease in between.
CLAIM_ATTEMPTS = 3


@dataclass(frozen=True)
class Claim:
    held: bool
    holder: str | None
    others: list[str] = field(default_factory=list)  # operators standing by, when held


class LeaseContention(Exception):
    """The Lease changed under every attempt: retried with the reconcile."""


def leases_path(namespace: str, name: str | None = None) -> str:
    return resource_path("coordination.k8s.io", "v1", "leases", namespace, name)


class JobLeases:
    """The Leases of the jobs this operator (`identity`) reconciles; a fresh one it holds costs no request."""

    def __init__(self, client: KubeClient, identity: str) -> None:
        self.client = client
        self.identity = identity
        self._held: dict[Key, Json] = {}  # the Lease as last written by us

    def forget(self, key: Key) -> None:
        self._held.pop(key, None)

    async def claim(self, key: Key, job_uid: str, now: datetime) -> Claim:
        namespace, job = key
        held = self._held.get(key)
        if held is not None and decide(lease_view(held), self.identity, now) == Decision.HOLD:
            return Claim(True, self.identity, others_standing_by(lease_view(held), self.identity, now))
        current = await self._get(key)  # anything else is decided on the Lease as it is now
        for _ in range(CLAIM_ATTEMPTS):
            view = lease_view(current) if current is not None else None
            decision = decide(view, self.identity, now)
            try:
                if decision == Decision.STAND_BY:
                    assert current is not None and view is not None
                    self._held.pop(key, None)
                    if needs_standby_entry(view, self.identity, now):
                        await self._replace(key, build_standby(self.identity, now, current))
                    return Claim(False, view.holder)
                lease = build_lease(namespace, job, job_uid, self.identity, now, current)
                if decision == Decision.CREATE:
                    written = await self.client.create(leases_path(namespace), lease)
                elif decision == Decision.HOLD:
                    written = current or lease
                else:
                    written = await self._replace(key, lease)
            except (Conflict, AlreadyExists):
                current = await self._get(key)  # someone else wrote it meanwhile: decide again
                continue
            self._held[key] = written
            return Claim(True, self.identity, others_standing_by(lease_view(written), self.identity, now))
        raise LeaseContention(f"the Lease {namespace}/{lease_name(job)} kept changing")

    async def _get(self, key: Key) -> Json | None:
        try:
            return await self.client.request("GET", leases_path(key[0], lease_name(key[1])))
        except NotFound:
            return None

    async def _replace(self, key: Key, lease: dict[str, Any]) -> Json:
        """PUT with the resourceVersion read: a Lease someone else changed since is answered 409."""
        try:
            return await self.client.request("PUT", leases_path(key[0], lease_name(key[1])), lease)
        except NotFound as error:  # deleted meanwhile (its job is going away): a conflict like any other
            raise Conflict(409, "Conflict", str(error)) from error
