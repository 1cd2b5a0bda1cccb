"""The operator's asynchronous Kubernetes client: JSON in, JSON out, over one aiohttp pool.

The operator only creates, patches, deletes and reads a handful of kinds, so a thin layer over
aiohttp beats a generated client: no model classes to convert, one connection pool. Credentials,
errors and paths are shared with the synchronous client (`k8s.core`, `k8s.sync`).
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from kubetune.k8s.core import (
    AlreadyExists,
    ApiError,
    Conflict,
    Credentials,
    Json,
    NotFound,
    Unauthorized,
    decode,
    resource_path,
)

__all__ = [
    "AlreadyExists", "ApiError", "Conflict", "Credentials", "Json", "KubeClient", "NotFound", "resource_path",
]

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"


class KubeClient:
    """One aiohttp session against one API server."""

    def __init__(self, credentials: Credentials, timeout: float = 30.0) -> None:
        self.credentials = credentials
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self.requests_total = 0  # for the API-calls-per-trial benchmark

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self.credentials.ssl_context() or False, limit=64)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Json:
        try:
            return await self._send(method, path, body, params, content_type)
        except Unauthorized:
            # A rotated or expired token: read the credentials again (exec plugins re-run), try once more.
            self.credentials = self.credentials.reload()
            return await self._send(method, path, body, params, content_type)

    async def _send(
        self, method: str, path: str, body: Any, params: dict[str, str] | None, content_type: str
    ) -> Json:
        headers = {"Accept": "application/json", **self.credentials.headers()}
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body)
        self.requests_total += 1
        session = self._get_session()
        async with session.request(method, self.credentials.server + path, data=data, params=params,
                                   headers=headers) as response:
            return decode(response.status, await response.read())

    async def create(self, path: str, body: Json) -> Json:
        return await self.request("POST", path, body)

    async def merge_patch(self, path: str, body: Json) -> Json:
        return await self.request("PATCH", path, body, content_type=MERGE_PATCH)

    async def delete(
        self, path: str, propagation: str | None = "Background", uid: str | None = None,
        grace_period_seconds: int | None = None,
    ) -> Json:
        options: Json = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if propagation:
            options["propagationPolicy"] = propagation
        if uid:
            options["preconditions"] = {"uid": uid}
        if grace_period_seconds is not None:
            options["gracePeriodSeconds"] = grace_period_seconds
        return await self.request("DELETE", path, options)

